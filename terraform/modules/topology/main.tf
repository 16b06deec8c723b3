# Pure logic, no provider: which hosts exist, which roles each runs, how big each one is and which of its ports
# face the internet. The aws and alicloud modules turn this into instances and security groups, so both clouds
# share one tested definition of the topology and of the exposure rules.

locals {
  pool_roles = ["jobmaker", "stratum", "blockmaker", "accounting"]
  # Inventory groups, in the order the btcpool role documents them. "pool" holds every host with a pool role.
  inventory_groups = ["ckb_node", "pool", "jobmaker", "stratum", "blockmaker", "accounting", "redis", "kafka", "proxy", "monitoring"]

  single_host = [{
    name                = var.name
    roles               = var.managed_redis ? ["ckb_node", "pool", "monitoring"] : ["ckb_node", "pool", "redis", "monitoring"]
    count               = 1
    instance_type       = null
    root_volume_size_gb = null
    data_volume_size_gb = null
  }]
  entries = var.hosts == null ? local.single_host : var.hosts

  node_data_default = coalesce(var.node_data_volume_size_gb, { mainnet = 300, testnet = 150, dev = 20 }[var.network])
  # The btcpool role's preflight asks for this much free space where Docker's data and its install dir live.
  node_data_minimum = { mainnet = 250, testnet = 60, dev = 20 }[var.network]

  # One element per instance: an entry with count = 3 becomes <entry>-1, <entry>-2, <entry>-3.
  expanded = flatten([
    for entry in local.entries : [
      for i in range(entry.count) : {
        key   = entry.count == 1 ? entry.name : "${entry.name}-${i + 1}"
        entry = entry
        roles = distinct(concat(
          flatten([for r in entry.roles : r == "pool" ? local.pool_roles : [r]]),
          length(setintersection(toset(entry.roles), toset(concat(["pool"], local.pool_roles)))) > 0 ? ["pool"] : [],
        ))
      }
    ]
  ])

  hosts = {
    for h in local.expanded : h.key => {
      # Name in the cloud console; the single default host is just `name`.
      name                = h.key == var.name ? var.name : "${var.name}-${h.key}"
      roles               = sort(h.roles)
      instance_type       = coalesce(h.entry.instance_type, var.default_instance_type)
      root_volume_size_gb = coalesce(h.entry.root_volume_size_gb, var.root_volume_size_gb)
      data_volume_size_gb = contains(h.roles, "ckb_node") ? coalesce(h.entry.data_volume_size_gb, local.node_data_default) : coalesce(h.entry.data_volume_size_gb, var.service_data_volume_size_gb)
      public_services = sort(compact([
        contains(h.roles, "stratum") ? "stratum" : "",
        contains(h.roles, "proxy") ? "proxy" : "",
        # the miners' page is served by the pool where the books are read (ckbpool.deploy.render.WEB_ROLES)
        contains(h.roles, "accounting") && var.open_web ? "web" : "",
        contains(h.roles, "ckb_node") && var.open_node_p2p ? "node_p2p" : "",
      ]))
    }
  }

  groups      = { for g in local.inventory_groups : g => sort([for k, h in local.hosts : k if contains(h.roles, g)]) }
  role_counts = { for g, keys in local.groups : g => length(keys) }

  # Services reachable from anywhere, and the only ones: each gets its own security group on the hosts that run it.
  all_public_services = {
    stratum  = { port = var.stratum_port, description = "Stratum V2 (miners)" }
    proxy    = { port = var.proxy_port, description = "CKB Stratum V1 proxy (V1 miners)" }
    web      = { port = var.web_port, description = "Miners web page and public API" }
    node_p2p = { port = var.node_p2p_port, description = "CKB peer-to-peer" }
  }
  public_services = {
    for k, v in local.all_public_services : k => v if anytrue([for h in values(local.hosts) : contains(h.public_services, k)])
  }

  # Pool roles on more than one host talk through Kafka.
  pool_hosts       = [for k, h in local.hosts : k if length(setintersection(toset(h.roles), toset(local.pool_roles))) > 0]
  needs_kafka      = length(local.pool_hosts) > 1
  exposed_privates = [for k, p in var.private_ports : k if contains(values(local.all_public_services)[*].port, p)]
}
