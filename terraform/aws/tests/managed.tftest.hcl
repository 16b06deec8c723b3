# Managed Kafka (MSK), Redis (ElastiCache) and PostgreSQL (RDS), each on its own switch, with a mocked provider.
# What matters: encryption in transit and at rest, credentials in Secrets Manager (never an output), the services
# reachable from the hosts' internal group on their port only, and the hosts running none of them.

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["us-east-1a", "us-east-1b", "us-east-1c"] }
  }
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_resource "aws_msk_cluster" {
    defaults = {
      arn                          = "arn:aws:kafka:us-east-1:123456789012:cluster/pool-kafka/0000"
      bootstrap_brokers_sasl_scram = "b-1.pool-kafka.example.kafka.us-east-1.amazonaws.com:9096,b-2.pool-kafka.example.kafka.us-east-1.amazonaws.com:9096"
    }
  }
  mock_resource "aws_elasticache_replication_group" {
    defaults = { primary_endpoint_address = "master.pool-redis.example.use1.cache.amazonaws.com" }
  }
  mock_resource "aws_db_instance" {
    defaults = {
      address            = "pool-ledger.example.us-east-1.rds.amazonaws.com"
      port               = 5432
      master_user_secret = [{ secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-0000", kms_key_id = "k", secret_status = "active" }]
    }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000", key_id = "00000000-0000-0000-0000-000000000000" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:AmazonMSK_pool-kafka-0000" }
  }
}

variables {
  name              = "pool"
  region            = "us-east-1"
  allowed_ssh_cidrs = ["198.51.100.7/32"]
  ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
  hosts = [
    { name = "node", roles = ["ckb_node", "monitoring"] },
    { name = "jobs", roles = ["jobmaker", "blockmaker", "accounting"] },
    { name = "stratum", roles = ["stratum"], count = 2 },
  ]
}

run "nothing_managed_by_default" {
  command = plan

  variables {
    hosts = null
  }

  assert {
    condition = (length(aws_msk_cluster.kafka) + length(aws_elasticache_replication_group.redis) + length(aws_db_instance.postgres) +
    length(aws_subnet.managed) + length(aws_security_group.managed) + length(aws_kms_key.managed)) == 0
    error_message = "no managed service (nor its subnets, groups or key) unless asked for"
  }
  assert {
    condition     = output.role_counts.redis == 1
    error_message = "without managed_redis the single host runs Redis"
  }
}

run "every_service_managed" {
  command = apply

  variables {
    managed_kafka            = true
    managed_redis            = true
    managed_postgres         = true
    managed_redis_auth_token = "Tok3n-for-the-managed-redis-0123456789"
    managed_kafka_password   = "Kafk4PasswordForTheScramUser0123456789"
  }

  # the hosts run none of them: pool roles on three hosts talk through MSK, no host has the kafka or redis role
  assert {
    condition     = output.role_counts.kafka == 0 && output.role_counts.redis == 0 && length(output.inventory.all.children.kafka.hosts) == 0
    error_message = "with managed Kafka and Redis no host carries either role"
  }
  # subnets in two zones, private (no public address, a route table without the internet gateway)
  assert {
    condition     = length(aws_subnet.managed) == 2 && toset(aws_subnet.managed[*].availability_zone) == toset(["us-east-1a", "us-east-1b"]) && alltrue([for s in aws_subnet.managed : !s.map_public_ip_on_launch])
    error_message = "the managed services get one private subnet in each of two zones"
  }
  assert {
    condition     = length(aws_route_table.managed[0].route) == 0
    error_message = "the managed subnets have no route to the internet"
  }
  # each group: exactly its port, from the hosts' internal group only, never from an address range
  assert {
    condition = toset(keys(aws_security_group.managed)) == toset(["kafka", "redis", "postgres"]) && alltrue([for k, sg in aws_security_group.managed :
      length(sg.ingress) == 1 && alltrue([for r in sg.ingress : r.protocol == "tcp" && r.from_port == r.to_port &&
        r.from_port == { kafka = 9096, redis = 6379, postgres = 5432 }[k] && toset(r.security_groups) == toset([aws_security_group.internal.id]) &&
    length(coalesce(r.cidr_blocks, [])) == 0 && length(coalesce(r.ipv6_cidr_blocks, [])) == 0])])
    error_message = "a managed service is reachable from somewhere else than the hosts, or on another port"
  }
  # MSK: SCRAM only, TLS between clients and brokers and inside the cluster, storage under our key, no public access
  assert {
    condition     = one(aws_msk_cluster.kafka[0].client_authentication).unauthenticated == false && one(one(aws_msk_cluster.kafka[0].client_authentication).sasl).scram == true
    error_message = "MSK must take SASL/SCRAM clients only"
  }
  assert {
    condition     = one(one(aws_msk_cluster.kafka[0].encryption_info).encryption_in_transit).client_broker == "TLS" && one(one(aws_msk_cluster.kafka[0].encryption_info).encryption_in_transit).in_cluster == true && one(aws_msk_cluster.kafka[0].encryption_info).encryption_at_rest_kms_key_arn == aws_kms_key.managed[0].arn
    error_message = "MSK must encrypt in transit (TLS only) and at rest with the deployment's key"
  }
  assert {
    condition     = one(one(one(aws_msk_cluster.kafka[0].broker_node_group_info).connectivity_info).public_access).type == "DISABLED" && toset(one(aws_msk_cluster.kafka[0].broker_node_group_info).client_subnets) == toset(aws_subnet.managed[*].id)
    error_message = "MSK brokers live in the managed subnets, without public access"
  }
  # the SCRAM secret: AmazonMSK_ prefix, our key, associated with the cluster; its value is write-only
  assert {
    condition     = startswith(aws_secretsmanager_secret.kafka[0].name, "AmazonMSK_") && aws_secretsmanager_secret.kafka[0].kms_key_id == aws_kms_key.managed[0].arn && aws_msk_scram_secret_association.kafka[0].secret_arn_list == toset([aws_secretsmanager_secret.kafka[0].arn])
    error_message = "the SCRAM secret must be an AmazonMSK_ secret under the deployment's key, associated with the cluster"
  }
  assert {
    condition     = aws_secretsmanager_secret_version.kafka[0].secret_string_wo == null && aws_secretsmanager_secret_version.kafka[0].secret_string_wo_version == 1
    error_message = "the SCRAM password is written write-only (secret_string_wo): the state keeps nothing of it"
  }
  # ElastiCache: TLS, AUTH, encrypted at rest, no eviction, failover across zones
  assert {
    condition     = aws_elasticache_replication_group.redis[0].transit_encryption_enabled && aws_elasticache_replication_group.redis[0].at_rest_encryption_enabled && aws_elasticache_replication_group.redis[0].kms_key_id == aws_kms_key.managed[0].arn && aws_elasticache_replication_group.redis[0].auth_token == var.managed_redis_auth_token
    error_message = "ElastiCache must use TLS, the AUTH token and encryption at rest with the deployment's key"
  }
  assert {
    condition     = one(aws_elasticache_parameter_group.redis[0].parameter).name == "maxmemory-policy" && one(aws_elasticache_parameter_group.redis[0].parameter).value == "noeviction" && aws_elasticache_parameter_group.redis[0].family == "redis7"
    error_message = "the books are never evicted (maxmemory-policy noeviction)"
  }
  assert {
    condition     = aws_elasticache_replication_group.redis[0].automatic_failover_enabled && aws_elasticache_replication_group.redis[0].num_cache_clusters == 2
    error_message = "a primary and a replica with automatic failover by default"
  }
  # RDS: encrypted, private, password kept by RDS in Secrets Manager under our key
  assert {
    condition     = aws_db_instance.postgres[0].storage_encrypted && aws_db_instance.postgres[0].kms_key_id == aws_kms_key.managed[0].arn && !aws_db_instance.postgres[0].publicly_accessible && aws_db_instance.postgres[0].manage_master_user_password && aws_db_instance.postgres[0].password == null
    error_message = "RDS must be encrypted, not public, with its password managed by RDS (no password in Terraform)"
  }
  assert {
    condition     = aws_db_instance.postgres[0].deletion_protection && aws_db_instance.postgres[0].final_snapshot_identifier == "pool-ledger-final"
    error_message = "the ledger is protected from deletion, with a final snapshot, by default"
  }
  # outputs: endpoints and secret ARNs, never a password
  assert {
    condition     = output.managed.kafka_bootstrap == "b-1.pool-kafka.example.kafka.us-east-1.amazonaws.com:9096,b-2.pool-kafka.example.kafka.us-east-1.amazonaws.com:9096" && output.managed.kafka_username == "ckbpool" && output.managed.redis == "master.pool-redis.example.use1.cache.amazonaws.com:6379" && output.managed.postgres == "pool-ledger.example.us-east-1.rds.amazonaws.com:5432" && output.managed.postgres_user == "ckbpool" && output.managed.postgres_db == "ckbpool"
    error_message = "the managed output carries each service's endpoint"
  }
  assert {
    condition     = startswith(output.managed.kafka_secret_arn, "arn:aws:secretsmanager:") && startswith(output.managed.postgres_secret_arn, "arn:aws:secretsmanager:") && !strcontains(jsonencode(output.managed), "Tok3n") && !strcontains(jsonencode(output.managed), "Kafk4")
    error_message = "the managed output names secrets by ARN and holds no password"
  }
}

run "a_single_managed_service" {
  command = plan

  variables {
    hosts            = null
    managed_postgres = true
  }

  assert {
    condition     = length(aws_db_instance.postgres) == 1 && length(aws_msk_cluster.kafka) == 0 && length(aws_elasticache_replication_group.redis) == 0 && toset(keys(aws_security_group.managed)) == toset(["postgres"])
    error_message = "only the managed service asked for is created"
  }
}

run "throwaway_ledger_without_deletion_protection" {
  command = plan

  variables {
    hosts                       = null
    managed_postgres            = true
    managed_deletion_protection = false
  }

  assert {
    condition     = !aws_db_instance.postgres[0].deletion_protection && aws_db_instance.postgres[0].skip_final_snapshot
    error_message = "managed_deletion_protection = false makes the ledger destroyable without a snapshot"
  }
}

# (the topology's own refusals -- a kafka host beside managed Kafka, spread pool roles without any Kafka -- are in
# ../modules/topology/tests: a module's output precondition cannot be an expected failure of this root)

run "managed_redis_without_a_token_is_refused" {
  command = plan

  variables {
    hosts         = null
    managed_redis = true
  }
  expect_failures = [aws_elasticache_replication_group.redis]
}

run "a_bad_token_is_refused" {
  command = plan

  variables {
    hosts                    = null
    managed_redis            = true
    managed_redis_auth_token = "short"
  }
  expect_failures = [var.managed_redis_auth_token]
}

run "managed_kafka_without_a_password_is_refused" {
  command = plan

  variables {
    hosts         = null
    managed_kafka = true
  }
  expect_failures = [aws_msk_cluster.kafka]
}

run "brokers_must_fill_the_zones_evenly" {
  command = plan

  variables {
    hosts                      = null
    managed_kafka              = true
    managed_kafka_password     = "Kafk4PasswordForTheScramUser0123456789"
    managed_kafka_brokers      = 3
    managed_availability_zones = ["us-east-1a", "us-east-1b"]
  }
  expect_failures = [aws_msk_cluster.kafka]
}
