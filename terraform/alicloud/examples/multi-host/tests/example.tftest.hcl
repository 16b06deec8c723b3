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
  region              = "cn-hangzhou"
  allowed_ssh_cidrs   = ["198.51.100.7/32"]
  ssh_public_key_file = "tests/admin.pub"
}

run "example_plans" {
  command = apply

  assert {
    condition     = length(output.hosts) == 6
    error_message = "the example creates 6 host(s)"
  }
  assert {
    condition     = length(output.inventory.all.children.ckb_node.hosts) == 1
    error_message = "one ckb node"
  }
}
