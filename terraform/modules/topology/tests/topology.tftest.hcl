# Provider-free: these run wherever terraform runs, for the logic both cloud modules share.

variables {
  name                  = "pool"
  network               = "mainnet"
  default_instance_type = "c6i.xlarge"
}

run "single_host_by_default" {
  command = plan

  assert {
    condition     = toset(keys(output.hosts)) == toset(["pool"])
    error_message = "the default topology is one host named after the deployment"
  }
  assert {
    condition     = output.hosts["pool"].roles == tolist(["accounting", "blockmaker", "ckb_node", "jobmaker", "monitoring", "pool", "redis", "stratum"])
    error_message = "the single host runs the node, the pool (all four roles), redis and monitoring"
  }
  assert {
    condition     = alltrue([for g in ["ckb_node", "pool", "stratum", "redis", "monitoring"] : output.role_counts[g] == 1]) && output.role_counts.kafka == 0 && output.role_counts.proxy == 0
    error_message = "one host in each used group, none in kafka or proxy"
  }
  assert {
    condition     = output.hosts["pool"].data_volume_size_gb == 300 && output.hosts["pool"].root_volume_size_gb == 30
    error_message = "mainnet node disk defaults to 300 GB data + 30 GB system"
  }
  assert {
    condition     = output.hosts["pool"].public_services == tolist(["node_p2p", "stratum", "web"])
    error_message = "only stratum, the miners' page and the node's p2p port face the internet on a single host without proxy"
  }
  assert {
    condition     = !output.needs_kafka
    error_message = "a single host needs no Kafka"
  }
}

run "network_picks_the_node_disk" {
  command = plan
  variables {
    network = "testnet"
  }
  assert {
    condition     = output.hosts["pool"].data_volume_size_gb == 150
    error_message = "testnet node data disk defaults to 150 GB"
  }
}

run "multi_host_counts_per_role" {
  command = plan
  variables {
    hosts = [
      { name = "node", roles = ["ckb_node"], data_volume_size_gb = 500, instance_type = "m6i.xlarge" },
      { name = "core", roles = ["jobmaker", "blockmaker", "accounting", "redis", "kafka"] },
      { name = "stratum", roles = ["stratum"], count = 3 },
      { name = "proxy", roles = ["proxy"], count = 2 },
      { name = "mon", roles = ["monitoring"] },
    ]
  }

  assert {
    condition     = length(output.hosts) == 8
    error_message = "1 node + 1 core + 3 stratum + 2 proxy + 1 monitoring = 8 hosts"
  }
  assert {
    condition     = output.role_counts == { ckb_node = 1, pool = 4, jobmaker = 1, stratum = 3, blockmaker = 1, accounting = 1, redis = 1, kafka = 1, proxy = 2, monitoring = 1 }
    error_message = "instance count per role"
  }
  assert {
    condition     = output.groups.stratum == tolist(["stratum-1", "stratum-2", "stratum-3"]) && output.groups.pool == tolist(["core", "stratum-1", "stratum-2", "stratum-3"])
    error_message = "count expands to <entry>-<n>; every pool-role host is in the pool group"
  }
  assert {
    condition     = output.hosts["node"].instance_type == "m6i.xlarge" && output.hosts["node"].data_volume_size_gb == 500 && output.hosts["core"].instance_type == "c6i.xlarge"
    error_message = "per-host sizes override the defaults"
  }
  assert {
    condition     = output.hosts["core"].data_volume_size_gb == 50 && output.hosts["core"].public_services == tolist(["web"])
    error_message = "service hosts get the service disk; the accounting host exposes the miners' page only"
  }
  assert {
    condition     = output.hosts["stratum-2"].public_services == tolist(["stratum"]) && output.hosts["proxy-1"].public_services == tolist(["proxy"]) && output.hosts["node"].public_services == tolist(["node_p2p"])
    error_message = "each host exposes only the public port of its own role"
  }
  assert {
    condition     = output.hosts["stratum-1"].name == "pool-stratum-1"
    error_message = "cloud names are prefixed with the deployment name"
  }
  assert {
    condition     = output.needs_kafka && toset(keys(output.public_services)) == toset(["node_p2p", "proxy", "stratum", "web"])
    error_message = "split pool roles need Kafka; public services are stratum, proxy, the page and node p2p only"
  }
}

run "no_p2p_when_closed" {
  command = plan
  variables {
    open_node_p2p = false
    open_web      = false
  }
  assert {
    condition     = toset(keys(output.public_services)) == toset(["stratum"])
    error_message = "with open_node_p2p = false and open_web = false only stratum is public"
  }
}

run "web_port_is_checked_against_private_ports" {
  command = plan
  variables {
    web_port = 8180
  }
  expect_failures = [output.hosts]
}

run "split_pool_without_kafka_fails" {
  command = plan
  variables {
    hosts = [
      { name = "a", roles = ["ckb_node", "jobmaker", "blockmaker", "accounting"] },
      { name = "b", roles = ["stratum"] },
    ]
  }
  expect_failures = [output.hosts]
}

run "mainnet_node_disk_too_small_fails" {
  command = plan
  variables {
    node_data_volume_size_gb = 100
  }
  expect_failures = [output.hosts]
}

run "unknown_role_fails" {
  command = plan
  variables {
    hosts = [{ name = "a", roles = ["ckb_node", "pool", "bitcoind"] }]
  }
  expect_failures = [var.hosts]
}

run "two_blockmakers_fail" {
  command = plan
  variables {
    hosts = [
      { name = "a", roles = ["ckb_node", "pool", "kafka"] },
      { name = "b", roles = ["blockmaker"] },
    ]
  }
  expect_failures = [output.hosts]
}

run "private_port_on_a_public_port_fails" {
  command = plan
  variables {
    stratum_port = 6379
  }
  expect_failures = [output.hosts]
}

run "two_ckb_nodes_fail" {
  command = plan
  variables {
    hosts = [
      { name = "a", roles = ["ckb_node", "pool"] },
      { name = "b", roles = ["ckb_node"], count = 2 },
    ]
  }
  expect_failures = [output.hosts]
}

run "user_data_mounts_the_data_disk_under_docker_and_the_install_dir" {
  command = plan
  assert {
    condition     = strcontains(output.user_data, "/var/lib/ckbpool/binds/var/lib/docker /var/lib/docker none bind") && strcontains(output.user_data, "/var/lib/ckbpool/binds/opt/ckbpool /opt/ckbpool none bind") && strcontains(output.user_data, "LABEL=ckbpool-data /var/lib/ckbpool ext4")
    error_message = "the data disk holds Docker's data and the role's install dir"
  }
}

run "testnet_node_disk_below_the_role_minimum_fails" {
  command = plan
  variables {
    network                  = "testnet"
    node_data_volume_size_gb = 40
  }
  expect_failures = [output.hosts]
}

run "split_pool_with_managed_kafka_needs_no_kafka_host" {
  command = plan
  variables {
    managed_kafka = true
    managed_redis = true
    hosts = [
      { name = "a", roles = ["ckb_node", "jobmaker", "blockmaker", "accounting"] },
      { name = "b", roles = ["stratum"], count = 2 },
    ]
  }
  assert {
    condition     = output.role_counts.kafka == 0 && output.role_counts.redis == 0 && output.role_counts.stratum == 2
    error_message = "with the cloud's Kafka and Redis, pool roles spread over hosts without a kafka or redis host"
  }
}

run "managed_redis_leaves_it_off_the_single_host" {
  command = plan
  variables {
    managed_redis = true
  }
  assert {
    condition     = !contains(output.hosts["pool"].roles, "redis") && contains(output.hosts["pool"].roles, "ckb_node")
    error_message = "with managed Redis the default single host runs no Redis"
  }
}

run "managed_kafka_with_a_kafka_host_fails" {
  command = plan
  variables {
    managed_kafka = true
    hosts         = [{ name = "a", roles = ["ckb_node", "pool", "kafka"] }]
  }
  expect_failures = [output.hosts]
}

run "managed_redis_with_a_redis_host_fails" {
  command = plan
  variables {
    managed_redis = true
    hosts         = [{ name = "a", roles = ["ckb_node", "pool", "redis"] }]
  }
  expect_failures = [output.hosts]
}
