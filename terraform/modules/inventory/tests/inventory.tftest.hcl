variables {
  ssh_user = "ubuntu"
  hosts = {
    node    = { roles = ["ckb_node"], public_ip = "203.0.113.10", private_ip = "10.42.1.10" }
    core    = { roles = ["accounting", "blockmaker", "jobmaker", "kafka", "pool", "redis"], public_ip = "203.0.113.11", private_ip = "10.42.1.11" }
    stratum = { roles = ["pool", "stratum"], public_ip = "203.0.113.12", private_ip = "10.42.1.12" }
  }
  groups = {
    ckb_node   = ["node"]
    pool       = ["core", "stratum"]
    jobmaker   = ["core"]
    stratum    = ["stratum"]
    blockmaker = ["core"]
    accounting = ["core"]
    redis      = ["core"]
    kafka      = ["core"]
    proxy      = []
    monitoring = []
  }
}

run "groups_hosts_and_addresses" {
  command = plan

  assert {
    condition     = toset(keys(output.inventory.all.children)) == toset(["ckb_node", "pool", "jobmaker", "stratum", "blockmaker", "accounting", "redis", "kafka", "proxy", "monitoring"])
    error_message = "every role group is present, empty ones too"
  }
  assert {
    condition     = toset(keys(output.inventory.all.children.pool.hosts)) == toset(["core", "stratum"]) && length(output.inventory.all.children.proxy.hosts) == 0
    error_message = "group membership follows the groups input"
  }
  assert {
    condition     = output.inventory.all.hosts.stratum.ansible_host == "203.0.113.12" && output.inventory.all.hosts.stratum.private_ip == "10.42.1.12" && output.inventory.all.hosts.node.ansible_user == "ubuntu"
    error_message = "Ansible reaches hosts on their public address as the image user"
  }
  assert {
    condition     = output.inventory.all.vars == { btcpool_ckb_rpc_host = "10.42.1.10", btcpool_redis_host = "10.42.1.11", btcpool_kafka_bootstrap = "10.42.1.11:9092" }
    error_message = "services find each other on private addresses"
  }
  assert {
    condition     = strcontains(output.inventory_ini, "[stratum]\nstratum\n") && strcontains(output.inventory_ini, "node ansible_host=203.0.113.10 ansible_user=ubuntu private_ip=10.42.1.10")
    error_message = "the INI form carries the same hosts and groups"
  }
}

run "unknown_host_in_a_group_fails" {
  command = plan
  variables {
    groups = { ckb_node = ["ghost"] }
  }
  expect_failures = [output.inventory]
}
