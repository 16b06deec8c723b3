# The Ansible inventory of a cloud deployment, built from the instances Terraform created: hosts are reached on
# their public address, services find each other on private addresses inside the network.

locals {
  first_private = {
    for g, keys in var.groups : g => length(keys) > 0 ? try(var.hosts[keys[0]].private_ip, null) : null
  }

  host_vars = {
    for k, h in var.hosts : k => {
      ansible_host = coalesce(h.public_ip, h.private_ip)
      ansible_user = var.ssh_user
      private_ip   = h.private_ip
      public_ip    = h.public_ip
    }
  }

  # Where each service is, for the btcpool role: private addresses only.
  all_vars = {
    btcpool_ckb_rpc_host    = lookup(local.first_private, "ckb_node", null)
    btcpool_redis_host      = lookup(local.first_private, "redis", null)
    btcpool_kafka_bootstrap = lookup(local.first_private, "kafka", null) == null ? null : "${local.first_private["kafka"]}:${var.kafka_port}"
  }

  inventory = {
    all = {
      hosts    = local.host_vars
      vars     = { for k, v in local.all_vars : k => v if v != null }
      children = { for g, keys in var.groups : g => { hosts = { for k in keys : k => {} } } }
    }
  }

  ini_lines = concat(
    ["# Ansible inventory written by the ckbpool Terraform module: one group per role.", "[all]"],
    [for k in sort(keys(local.host_vars)) : "${k} ansible_host=${local.host_vars[k].ansible_host} ansible_user=${var.ssh_user} private_ip=${local.host_vars[k].private_ip}"],
    ["", "[all:vars]"],
    [for k, v in local.inventory.all.vars : "${k}=${v}"],
    flatten([for g in sort(keys(var.groups)) : concat(["", "[${g}]"], var.groups[g])]),
    [""],
  )
}
