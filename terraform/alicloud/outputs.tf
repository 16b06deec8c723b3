output "region" {
  description = "Region the deployment is in."
  value       = var.region
}

output "vpc_id" {
  description = "ID of the VPC created for the deployment."
  value       = alicloud_vpc.this.id
}

output "vswitch_id" {
  description = "ID of the hosts' vSwitch."
  value       = alicloud_vswitch.hosts.id
}

output "security_group_ids" {
  description = "Security group IDs: ssh (admin CIDRs), internal (between hosts), and one per public service (stratum, proxy, node_p2p)."
  value = merge(
    { ssh = alicloud_security_group.ssh.id, internal = alicloud_security_group.internal.id },
    { for k, sg in alicloud_security_group.public : k => sg.id },
  )
}

output "key_pair_name" {
  description = "Name of the ECS key pair holding ssh_public_key."
  value       = alicloud_ecs_key_pair.admin.key_pair_name
}

output "image_id" {
  description = "Image the hosts were created from."
  value       = local.image
}

output "hosts" {
  description = "Map of host key => { id, name, roles, instance_type, public_ip, private_ip, zone_id, data_volume_size_gb }."
  value = {
    for k, h in module.topology.hosts : k => {
      id                  = alicloud_instance.host[k].id
      name                = h.name
      roles               = h.roles
      instance_type       = h.instance_type
      public_ip           = alicloud_instance.host[k].public_ip
      private_ip          = alicloud_instance.host[k].private_ip
      zone_id             = alicloud_instance.host[k].availability_zone
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
  value       = [for k in module.topology.groups.stratum : "${alicloud_instance.host[k].public_ip}:${var.stratum_port}"]
}

output "data_mount_point" {
  description = "Where every host mounts its data disk."
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
  description = "Endpoints of the managed services (issue 20), never a password: { kafka_bootstrap (SASL_SSL endpoint, host:port,...), kafka_username, kafka_secret_arn (empty: the password is in secrets/), redis (host:port, TLS + password), postgres (host:port), postgres_user, postgres_db, postgres_secret_arn (empty) }; empty strings for what is not managed."
  value = {
    kafka_bootstrap     = var.managed_kafka ? coalesce(alicloud_alikafka_instance.kafka[0].ssl_domain_endpoint, alicloud_alikafka_instance.kafka[0].ssl_endpoint) : ""
    kafka_username      = var.managed_kafka ? local.kafka_username : ""
    kafka_secret_arn    = ""
    redis               = var.managed_redis ? "${alicloud_kvstore_instance.redis[0].connection_domain}:${alicloud_kvstore_instance.redis[0].port}" : ""
    postgres            = var.managed_postgres ? "${alicloud_db_instance.postgres[0].connection_string}:${alicloud_db_instance.postgres[0].port}" : ""
    postgres_user       = var.managed_postgres ? alicloud_rds_account.ckbpool[0].account_name : ""
    postgres_db         = var.managed_postgres ? alicloud_db_database.ckbpool[0].name : ""
    postgres_secret_arn = ""
  }
}
