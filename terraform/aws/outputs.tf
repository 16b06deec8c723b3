output "region" {
  description = "Region the deployment is in."
  value       = var.region
}

output "vpc_id" {
  description = "ID of the VPC created for the deployment."
  value       = aws_vpc.this.id
}

output "subnet_id" {
  description = "ID of the hosts' subnet."
  value       = aws_subnet.hosts.id
}

output "security_group_ids" {
  description = "Security group IDs: ssh (admin CIDRs), internal (between hosts), and one per public service (stratum, proxy, node_p2p)."
  value = merge(
    { ssh = aws_security_group.ssh.id, internal = aws_security_group.internal.id },
    { for k, sg in aws_security_group.public : k => sg.id },
  )
}

output "key_pair_name" {
  description = "Name of the EC2 key pair holding ssh_public_key."
  value       = aws_key_pair.admin.key_name
}

output "ami_id" {
  description = "AMI the hosts were created from."
  value       = local.ami
}

output "hosts" {
  description = "Map of host key => { id, name, roles, instance_type, public_ip, private_ip, availability_zone, data_volume_size_gb }."
  value = {
    for k, h in module.topology.hosts : k => {
      id                  = aws_instance.host[k].id
      name                = h.name
      roles               = h.roles
      instance_type       = h.instance_type
      public_ip           = aws_instance.host[k].public_ip
      private_ip          = aws_instance.host[k].private_ip
      availability_zone   = aws_instance.host[k].availability_zone
      data_volume_size_gb = h.data_volume_size_gb
    }
  }
}

output "role_counts" {
  description = "Number of hosts per inventory group."
  value       = module.topology.role_counts
}

output "ssh_user" {
  description = "User to log in as."
  value       = var.ssh_user
}

output "stratum_endpoints" {
  description = "host:port of every Stratum V2 endpoint, for miners."
  value       = [for k in module.topology.groups.stratum : "${aws_instance.host[k].public_ip}:${var.stratum_port}"]
}

output "data_mount_point" {
  description = "Where every host mounts its data volume."
  value       = module.topology.data_mount_point
}

output "inventory" {
  description = "Ansible inventory (YAML/JSON form) with groups ckb_node, pool, jobmaker, stratum, blockmaker, accounting, redis, kafka, proxy, monitoring."
  value       = module.inventory.inventory
}

output "inventory_ini" {
  description = "The same inventory in INI form."
  value       = module.inventory.inventory_ini
}

output "managed" {
  description = "Endpoints of the managed services (issue 20) and the Secrets Manager ARNs of their credentials, never a password: { kafka_bootstrap (SASL/SCRAM over TLS, host:port,...), kafka_username, kafka_secret_arn, redis (host:port, TLS + AUTH), postgres (host:port), postgres_user, postgres_db, postgres_secret_arn }; empty strings for what is not managed."
  value = {
    kafka_bootstrap     = var.managed_kafka ? aws_msk_cluster.kafka[0].bootstrap_brokers_sasl_scram : ""
    kafka_username      = var.managed_kafka ? local.kafka_username : ""
    kafka_secret_arn    = var.managed_kafka ? aws_secretsmanager_secret.kafka[0].arn : ""
    redis               = var.managed_redis ? "${aws_elasticache_replication_group.redis[0].primary_endpoint_address}:${local.managed_ports.redis.port}" : ""
    postgres            = var.managed_postgres ? "${aws_db_instance.postgres[0].address}:${aws_db_instance.postgres[0].port}" : ""
    postgres_user       = var.managed_postgres ? aws_db_instance.postgres[0].username : ""
    postgres_db         = var.managed_postgres ? aws_db_instance.postgres[0].db_name : ""
    postgres_secret_arn = var.managed_postgres ? aws_db_instance.postgres[0].master_user_secret[0].secret_arn : ""
  }
}
