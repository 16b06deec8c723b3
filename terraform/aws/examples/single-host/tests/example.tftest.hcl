mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["us-east-1a"] }
  }
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
  }
}

variables {
  region              = "us-east-1"
  allowed_ssh_cidrs   = ["198.51.100.7/32"]
  ssh_public_key_file = "tests/admin.pub"
}

run "example_plans_one_host" {
  command = apply

  assert {
    condition     = length(output.hosts) == 1 && length(output.stratum_endpoints) == 1
    error_message = "one host, one stratum endpoint"
  }
  assert {
    condition     = length(output.inventory.all.children.ckb_node.hosts) == 1 && length(output.inventory.all.children.pool.hosts) == 1
    error_message = "the host is in the ckb_node and pool groups"
  }
}
