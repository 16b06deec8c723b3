output "hosts" {
  description = "Map of host key => { name, roles (expanded, with \"pool\" on every pool host), instance_type, root_volume_size_gb, data_volume_size_gb, public_services }."
  value       = local.hosts

  precondition {
    condition     = local.role_counts.ckb_node >= 1
    error_message = "hosts: no host has the ckb_node role (the pool needs a node)."
  }
  precondition {
    condition     = local.role_counts.stratum >= 1
    error_message = "hosts: no host has the stratum (or pool) role: miners would have nothing to connect to."
  }
  precondition {
    condition     = local.role_counts.jobmaker == 1 && local.role_counts.blockmaker == 1
    error_message = "hosts: exactly one host must run jobmaker and exactly one blockmaker (found ${local.role_counts.jobmaker} and ${local.role_counts.blockmaker})."
  }
  precondition {
    condition     = local.role_counts.ckb_node <= 1 && local.role_counts.redis <= 1 && local.role_counts.kafka <= 1 && local.role_counts.monitoring <= 1
    error_message = "hosts: ckb_node, redis, kafka and monitoring run on one host each in this version (the btcpool role's limit); found ${local.role_counts.ckb_node}, ${local.role_counts.redis}, ${local.role_counts.kafka}, ${local.role_counts.monitoring}."
  }
  precondition {
    condition     = local.role_counts.accounting <= 1
    error_message = "hosts: at most one host may run accounting (found ${local.role_counts.accounting})."
  }
  precondition {
    condition     = !local.needs_kafka || local.role_counts.kafka >= 1 || var.managed_kafka
    error_message = "hosts: pool roles are spread over ${length(local.pool_hosts)} hosts (${join(", ", local.pool_hosts)}): give one host the kafka role (or use the cloud's managed Kafka)."
  }
  precondition {
    condition     = !var.managed_kafka || local.role_counts.kafka == 0
    error_message = "hosts: the Kafka is managed by the cloud (managed_kafka), so no host may carry the kafka role."
  }
  precondition {
    condition     = !var.managed_redis || local.role_counts.redis == 0
    error_message = "hosts: the Redis is managed by the cloud (managed_redis), so no host may carry the redis role."
  }
  precondition {
    condition     = alltrue([for h in values(local.hosts) : h.data_volume_size_gb >= local.node_data_minimum if contains(h.roles, "ckb_node")])
    error_message = "hosts: a ${var.network} ckb_node host needs a data disk of at least ${local.node_data_minimum} GB (the btcpool role's preflight minimum; the CKB documentation asks for 150 GB free for mainnet)."
  }
  precondition {
    condition     = length(local.exposed_privates) == 0
    error_message = "private_ports ${join(", ", local.exposed_privates)} collide with a public port (stratum, proxy, web or node p2p)."
  }
}

output "groups" {
  description = "Map of inventory group (ckb_node, pool, jobmaker, stratum, blockmaker, accounting, redis, kafka, proxy, monitoring) => sorted host keys."
  value       = local.groups
}

output "role_counts" {
  description = "Map of inventory group => number of hosts in it."
  value       = local.role_counts
}

output "public_services" {
  description = "Services open to the internet that at least one host runs: key => { port, description }. Nothing else is public."
  value       = local.public_services
}

output "private_ports" {
  description = "Ports only the deployment's own hosts may reach (node RPC, Kafka, Redis, metrics, ...)."
  value       = var.private_ports
}

output "needs_kafka" {
  description = "True when pool roles run on more than one host (they then talk through Kafka)."
  value       = local.needs_kafka
}

output "user_data" {
  description = "Boot script for every host: formats the data disk on first boot and mounts it at data_mount_point."
  value       = templatefile("${path.module}/user_data.sh.tftpl", { mount_point = var.data_mount_point, bind_paths = var.data_bind_paths })
}

output "data_mount_point" {
  description = "Where the data disk is mounted on every host."
  value       = var.data_mount_point
}
