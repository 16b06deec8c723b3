# Managed services instead of the hosts' own (issue 20): ApsaraMQ for Kafka (alikafka) for the bus, ApsaraDB for
# Redis (KVStore) for the books, ApsaraDB RDS for PostgreSQL for the payouts ledger. Each is off unless its
# managed_* variable is true.
#
# Access: each service's allow-list names the deployment's hosts only (their private addresses; for Kafka's SSL
# endpoint, their public ones). Alibaba's managed Kafka serves SASL only with TLS on its SSL endpoint (port 9093,
# reached over the internet: ApsaraMQ for Kafka's VPC endpoints are plaintext), so that endpoint is what the pool
# uses, SCRAM-SHA-256, allow-listed to the hosts' public addresses.
#
# Credentials: the provider has no write-only password attributes and RDS-managed credentials are not exposed to
# Terraform here, so the three passwords come from the deploy (secrets_dir, mode 0600) as TF_VAR_* environment
# variables -- never a tfvars file -- and are held in the state as sensitive values (keep the state encrypted, e.g.
# an OSS backend with server-side encryption). Outputs carry endpoints and user names only.

locals {
  # the hosts' private addresses: the Redis and RDS allow-lists
  managed_clients = [for k in sort(keys(module.topology.hosts)) : "${alicloud_instance.host[k].private_ip}/32"]
  # the pool hosts' public addresses: the allow-list of Kafka's SSL endpoint (the only one with SASL over TLS)
  kafka_clients  = [for k in sort(keys(module.topology.hosts)) : "${alicloud_instance.host[k].public_ip}/32"]
  kafka_username = "ckbpool"
}

# ------------------------------------------------------------------------------------------------ keys

resource "alicloud_kms_key" "managed" {
  count = var.managed_redis || var.managed_postgres ? 1 : 0

  description            = "${var.name}: managed Redis / PostgreSQL storage"
  pending_window_in_days = 30
  automatic_rotation     = "Enabled"
  rotation_interval      = "365d"
  status                 = "Enabled"
  tags                   = merge(local.tags, { Name = "${var.name}-managed" })
}

# ------------------------------------------------------------------------------------------------ Kafka

resource "alicloud_alikafka_instance" "kafka" {
  count = var.managed_kafka ? 1 : 0

  name           = "${var.name}-kafka"
  deploy_type    = 5 # VPC and internet: the SSL endpoint (SASL_SSL, 9093) exists only on these
  spec_type      = "normal"
  io_max_spec    = var.managed_kafka_io_max_spec
  eip_max        = var.managed_kafka_eip_max
  partition_num  = var.managed_kafka_partitions
  disk_type      = 1 # SSD
  disk_size      = var.managed_kafka_disk_size_gb
  paid_type      = "PostPaid"
  vswitch_id     = alicloud_vswitch.hosts.id
  security_group = alicloud_security_group.internal.id
  # SASL users are checked against ACLs (alicloud_alikafka_sasl_acl below)
  config = jsonencode({ "enable.acl" = "true" })
  tags   = merge(local.tags, { Name = "${var.name}-kafka" })

  lifecycle {
    precondition {
      condition     = var.managed_kafka_password != null
      error_message = "managed_kafka needs managed_kafka_password (the SCRAM password; the ckbpool deploy passes the one in secrets/ as TF_VAR_managed_kafka_password)."
    }
  }
}

resource "alicloud_alikafka_sasl_user" "ckbpool" {
  count = var.managed_kafka ? 1 : 0

  instance_id = alicloud_alikafka_instance.kafka[0].id
  username    = local.kafka_username
  password    = var.managed_kafka_password
  type        = "scram"
}

# The pool's user reads and writes every topic and consumer group of its own instance.
resource "alicloud_alikafka_sasl_acl" "ckbpool" {
  for_each = var.managed_kafka ? {
    topic_read  = { type = "Topic", operation = "Read" }
    topic_write = { type = "Topic", operation = "Write" }
    group_read  = { type = "Group", operation = "Read" }
  } : {}

  instance_id               = alicloud_alikafka_instance.kafka[0].id
  username                  = alicloud_alikafka_sasl_user.ckbpool[0].username
  acl_resource_type         = each.value.type
  acl_resource_name         = "*"
  acl_resource_pattern_type = "LITERAL"
  acl_operation_type        = each.value.operation
}

resource "alicloud_alikafka_instance_allowed_ip_attachment" "kafka" {
  for_each = var.managed_kafka ? toset(local.kafka_clients) : toset([])

  instance_id  = alicloud_alikafka_instance.kafka[0].id
  allowed_type = "internet"
  port_range   = "9093/9093"
  allowed_ip   = each.value
}

# ------------------------------------------------------------------------------------------------ Redis

resource "alicloud_kvstore_instance" "redis" {
  count = var.managed_redis ? 1 : 0

  db_instance_name  = "${var.name}-redis"
  instance_type     = "Redis"
  engine_version    = var.managed_redis_version
  instance_class    = var.managed_redis_instance_class
  payment_type      = "PostPaid"
  zone_id           = local.zone
  vswitch_id        = alicloud_vswitch.hosts.id
  security_group_id = alicloud_security_group.internal.id
  security_ips      = local.managed_clients
  vpc_auth_mode     = "Open" # password required inside the VPC too
  password          = var.managed_redis_auth_token
  ssl_enable        = "Enable"
  tde_status        = "Enabled"
  encryption_key    = alicloud_kms_key.managed[0].id
  # the books are never evicted: a full Redis refuses writes and the accounting alert fires
  config = { "maxmemory-policy" = "noeviction" }
  tags   = merge(local.tags, { Name = "${var.name}-redis" })

  lifecycle {
    precondition {
      condition     = var.managed_redis_auth_token != null
      error_message = "managed_redis needs managed_redis_auth_token (the ckbpool deploy passes the one in secrets/ as TF_VAR_managed_redis_auth_token)."
    }
  }
}

# --------------------------------------------------------------------------------------------- PostgreSQL

resource "alicloud_db_instance" "postgres" {
  count = var.managed_postgres ? 1 : 0

  instance_name            = "${var.name}-ledger"
  engine                   = "PostgreSQL"
  engine_version           = var.managed_postgres_version
  instance_type            = var.managed_postgres_instance_type
  instance_storage         = var.managed_postgres_storage_gb
  db_instance_storage_type = "cloud_essd"
  instance_charge_type     = "Postpaid"
  zone_id                  = local.zone
  vswitch_id               = alicloud_vswitch.hosts.id
  security_group_ids       = [alicloud_security_group.internal.id]
  security_ips             = local.managed_clients
  ssl_action               = "Open"
  ca_type                  = "aliyun"
  encryption_key           = alicloud_kms_key.managed[0].id
  deletion_protection      = var.managed_deletion_protection
  tags                     = merge(local.tags, { Name = "${var.name}-ledger" })

  lifecycle {
    precondition {
      condition     = var.managed_postgres_password != null
      error_message = "managed_postgres needs managed_postgres_password (the ckbpool deploy passes the one in secrets/ as TF_VAR_managed_postgres_password)."
    }
  }
}

resource "alicloud_rds_account" "ckbpool" {
  count = var.managed_postgres ? 1 : 0

  db_instance_id   = alicloud_db_instance.postgres[0].id
  account_name     = "ckbpool"
  account_password = var.managed_postgres_password
  account_type     = "Normal"
}

resource "alicloud_db_database" "ckbpool" {
  count = var.managed_postgres ? 1 : 0

  instance_id   = alicloud_db_instance.postgres[0].id
  name          = "ckbpool"
  character_set = "UTF8"
}

resource "alicloud_db_account_privilege" "ckbpool" {
  count = var.managed_postgres ? 1 : 0

  instance_id  = alicloud_db_instance.postgres[0].id
  account_name = alicloud_rds_account.ckbpool[0].account_name
  privilege    = "DBOwner"
  db_names     = [alicloud_db_database.ckbpool[0].name]
}
