mock_provider "alicloud" {
  mock_data "alicloud_regions" {
    defaults = { regions = [{ id = "ap-southeast-1", local_name = "Singapore" }] }
  }
}

variables {
  name              = "ckb"
  region            = "ap-southeast-1"
  allowed_ssh_cidrs = ["198.51.100.7/32"]
  ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
  image_id          = "ubuntu_24_04_x64_20G_alibase_20240812.vhd"
  zone_id           = "ap-southeast-1a"
  hosts = [
    { name = "node", roles = ["ckb_node"], instance_type = "ecs.g7.xlarge", data_volume_size_gb = 500 },
    { name = "core", roles = ["jobmaker", "blockmaker", "accounting", "redis", "kafka"] },
    { name = "stratum", roles = ["stratum"], count = 2, instance_type = "ecs.c7.large" },
    { name = "proxy", roles = ["proxy"] },
    { name = "mon", roles = ["monitoring"] },
  ]
}

run "instances_and_exposure_per_role" {
  command = apply

  assert {
    condition     = length(alicloud_instance.host) == 6 && output.role_counts == { ckb_node = 1, pool = 3, jobmaker = 1, stratum = 2, blockmaker = 1, accounting = 1, redis = 1, kafka = 1, proxy = 1, monitoring = 1 }
    error_message = "instance count per role"
  }
  assert {
    condition     = alicloud_instance.host["node"].instance_type == "ecs.g7.xlarge" && one(alicloud_instance.host["node"].data_disks).size == 500 && one(alicloud_instance.host["core"].data_disks).size == 50
    error_message = "per-host sizes"
  }
  assert {
    condition     = alltrue([for k in ["stratum-1", "stratum-2"] : contains(alicloud_instance.host[k].security_groups, alicloud_security_group.public["stratum"].id)]) && length(alicloud_instance.host["core"].security_groups) == 3 && contains(alicloud_instance.host["core"].security_groups, alicloud_security_group.public["web"].id) && length(alicloud_instance.host["mon"].security_groups) == 2
    error_message = "stratum public on stratum hosts only; the core (accounting) host exposes the miners page only, monitoring nothing"
  }
  assert {
    condition     = keys(output.inventory.all.children.stratum.hosts) == ["stratum-1", "stratum-2"] && keys(output.inventory.all.children.kafka.hosts) == ["core"] && output.inventory.all.vars.btcpool_kafka_bootstrap == "${alicloud_instance.host["core"].private_ip}:9092"
    error_message = "inventory groups and private service addresses"
  }
}
