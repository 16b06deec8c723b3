mock_provider "alicloud" {
  mock_data "alicloud_regions" {
    defaults = { regions = [{ id = "cn-hangzhou", local_name = "China (Hangzhou)" }] }
  }
}

variables {
  name              = "pool"
  region            = "cn-hangzhou"
  allowed_ssh_cidrs = ["198.51.100.7/32"]
  ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
  image_id          = "ubuntu_24_04_x64_20G_alibase_20240812.vhd"
  zone_id           = "cn-hangzhou-k"
}

run "ssh_open_to_the_world_is_refused" {
  command = plan
  variables {
    allowed_ssh_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.allowed_ssh_cidrs]
}

run "no_admin_cidr_is_refused" {
  command = plan
  variables {
    allowed_ssh_cidrs = []
  }
  expect_failures = [var.allowed_ssh_cidrs]
}

run "bad_region_is_refused" {
  command = plan
  variables {
    region = "Hangzhou"
  }
  expect_failures = [var.region]
}

run "provider_in_another_region_is_refused" {
  command = plan
  variables {
    region = "cn-shanghai"
  }
  expect_failures = [alicloud_vpc.this]
}
