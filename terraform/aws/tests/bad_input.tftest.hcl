# Bad input stops at validation: nothing is planned, nothing is created.
mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
}

variables {
  name              = "pool"
  region            = "us-east-1"
  allowed_ssh_cidrs = ["198.51.100.7/32"]
  ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
  ami_id            = "ami-0123456789abcdef0"
  availability_zone = "us-east-1a"
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

run "not_a_cidr_is_refused" {
  command = plan
  variables {
    allowed_ssh_cidrs = ["my-laptop"]
  }
  expect_failures = [var.allowed_ssh_cidrs]
}

run "bad_region_is_refused" {
  command = plan
  variables {
    region = "mars-north"
  }
  expect_failures = [var.region]
}

run "bad_key_is_refused" {
  command = plan
  variables {
    ssh_public_key = "-----BEGIN OPENSSH PRIVATE KEY-----"
  }
  expect_failures = [var.ssh_public_key]
}

# The topology's own checks (disk sizes, role requirements) live in ../modules/topology/tests; a child module's
# output precondition cannot be an expect_failures target here. tests/integration/test_terraform_modules.py
# checks that a plan with a too small mainnet disk stops with that message.

run "provider_in_another_region_is_refused" {
  command = plan
  variables {
    region = "ap-southeast-1"
  }
  expect_failures = [aws_vpc.this]
}
