# No cloud account: the alicloud provider is mocked (it still needs the provider binary for its schema).

mock_provider "alicloud" {
  mock_data "alicloud_regions" {
    defaults = { regions = [{ id = "cn-hangzhou", local_name = "China (Hangzhou)" }] }
  }
  mock_data "alicloud_zones" {
    defaults = { zones = [{ id = "cn-hangzhou-k" }], ids = ["cn-hangzhou-k"] }
  }
  mock_data "alicloud_images" {
    defaults = { images = [{ id = "ubuntu_24_04_x64_20G_alibase_20240812.vhd" }], ids = ["ubuntu_24_04_x64_20G_alibase_20240812.vhd"] }
  }
}

variables {
  name              = "pool"
  region            = "cn-hangzhou"
  allowed_ssh_cidrs = ["198.51.100.7/32", "203.0.113.0/24"]
  ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
}

run "security_rules" {
  command = apply

  assert {
    condition = toset(keys(alicloud_security_group_rule.ssh)) == toset(var.allowed_ssh_cidrs) && alltrue([for r in values(alicloud_security_group_rule.ssh) :
    r.port_range == "22/22" && r.type == "ingress" && r.ip_protocol == "tcp" && r.security_group_id == alicloud_security_group.ssh.id])
    error_message = "SSH must be open to the admin CIDRs only"
  }
  assert {
    condition     = toset(keys(alicloud_security_group_rule.public)) == toset(["stratum", "web", "node_p2p"])
    error_message = "public rules: stratum, web and node_p2p on a single host without the proxy"
  }
  assert {
    condition = alltrue([for r in values(alicloud_security_group_rule.public) : r.cidr_ip == "0.0.0.0/0" && r.ip_protocol == "tcp" &&
    contains(["34255/34255", "8080/8080", "8115/8115"], r.port_range)])
    error_message = "public rules open exactly stratum (34255), the miners page (8080) or p2p (8115)"
  }
  # node RPC, Kafka, Redis, metrics, Prometheus, Grafana, pool HTTP: no rule with an address range covers them
  assert {
    condition = alltrue(flatten([for p in [8114, 18114, 8100, 8180, 6379, 9092, 9093, 9090, 3000, 9100, 9121, 9308] : [
      for r in concat(values(alicloud_security_group_rule.ssh), values(alicloud_security_group_rule.public), [alicloud_security_group_rule.internal]) :
      r.cidr_ip == null || r.cidr_ip == "" || !(r.ip_protocol == "all" || (tonumber(split("/", r.port_range)[0]) <= p && p <= tonumber(split("/", r.port_range)[1])))
    ]]))
    error_message = "a private port (node RPC, Kafka, Redis, metrics) is reachable from an address range"
  }
  assert {
    condition     = alicloud_security_group_rule.internal.source_security_group_id == alicloud_security_group.internal.id && (alicloud_security_group_rule.internal.cidr_ip == null || alicloud_security_group_rule.internal.cidr_ip == "")
    error_message = "the internal group admits only the deployment's own hosts"
  }
}

run "one_host_with_every_role" {
  command = apply

  assert {
    condition     = length(alicloud_instance.host) == 1 && output.role_counts == { ckb_node = 1, pool = 1, jobmaker = 1, stratum = 1, blockmaker = 1, accounting = 1, redis = 1, kafka = 0, proxy = 0, monitoring = 1 }
    error_message = "single host carrying ckb_node, pool, redis and monitoring"
  }
  assert {
    condition     = toset(alicloud_instance.host["pool"].security_groups) == toset([alicloud_security_group.ssh.id, alicloud_security_group.internal.id, alicloud_security_group.public["stratum"].id, alicloud_security_group.public["web"].id, alicloud_security_group.public["node_p2p"].id])
    error_message = "the host is in the ssh, internal, stratum, web and p2p groups"
  }
  assert {
    condition     = one(alicloud_instance.host["pool"].data_disks).size == 300 && one(alicloud_instance.host["pool"].data_disks).encrypted && alicloud_instance.host["pool"].system_disk_size == 30
    error_message = "a mainnet node gets an encrypted 300 GB data disk"
  }
  assert {
    condition     = alicloud_vswitch.hosts.zone_id == "cn-hangzhou-k" && alicloud_instance.host["pool"].internet_max_bandwidth_out > 0
    error_message = "vSwitch in the looked-up zone; the host has a public address"
  }
  assert {
    condition     = toset(keys(output.inventory.all.children)) == toset(["ckb_node", "pool", "jobmaker", "stratum", "blockmaker", "accounting", "redis", "kafka", "proxy", "monitoring"])
    error_message = "inventory groups as in the btcpool role"
  }
  assert {
    condition     = output.inventory.all.hosts["pool"].ansible_host == alicloud_instance.host["pool"].public_ip && output.inventory.all.hosts["pool"].ansible_user == "root"
    error_message = "Ansible connects to the public address as root"
  }
}
