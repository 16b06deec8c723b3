# ckbpool on AWS: its own VPC, subnet and internet gateway, security groups by exposure, one key pair, and the
# hosts of the topology (one by default). Ansible deploys the stack on them from the `inventory` output.

locals {
  # Tags of every resource this module creates.
  tags = merge(var.tags, { ckbpool = var.name, ckbpool-network = var.network })
  az   = var.availability_zone != null ? var.availability_zone : data.aws_availability_zones.available[0].names[0]
  ami  = var.ami_id != null ? var.ami_id : data.aws_ami.ubuntu[0].id
}

module "topology" {
  source = "../modules/topology"

  name                        = var.name
  network                     = var.network
  hosts                       = var.hosts
  default_instance_type       = var.instance_type
  root_volume_size_gb         = var.root_volume_size_gb
  node_data_volume_size_gb    = var.node_data_volume_size_gb
  service_data_volume_size_gb = var.service_data_volume_size_gb
  stratum_port                = var.stratum_port
  proxy_port                  = var.proxy_port
  web_port                    = var.web_port
  open_web                    = var.open_web
  node_p2p_port               = var.node_p2p_port
  open_node_p2p               = var.open_node_p2p
  private_ports               = var.private_ports
  managed_kafka               = var.managed_kafka
  managed_redis               = var.managed_redis
}

# The region is a required input of this module. The caller's provider block must use it, and the module checks
# that it does (see examples/: provider "aws" { region = var.region }).
data "aws_region" "current" {}

data "aws_availability_zones" "available" {
  count = var.availability_zone == null || (local.managed_any && var.managed_availability_zones == null) ? 1 : 0
  state = "available"
}

data "aws_ami" "ubuntu" {
  count       = var.ami_id == null ? 1 : 0
  most_recent = true
  owners      = var.ami_owners

  filter {
    name   = "name"
    values = [var.ami_name_filter]
  }
  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

# ------------------------------------------------------------------------------------------------------ network

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:flow logs are billed per GB and need a log destination the operator chooses; attach an aws_flow_log to the vpc_id output to enable them
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = var.name })

  lifecycle {
    precondition {
      condition     = data.aws_region.current.name == var.region
      error_message = "The aws provider is configured for region ${data.aws_region.current.name} but region = ${var.region}: configure it with provider \"aws\" { region = var.region }."
    }
  }
}

# The VPC's default security group keeps no rule: nothing may fall back to it.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-default-unused" }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = var.name })
}

resource "aws_subnet" "hosts" {
  vpc_id                  = aws_vpc.this.id
  cidr_block              = cidrsubnet(var.vpc_cidr, 24 - tonumber(split("/", var.vpc_cidr)[1]), 1)
  availability_zone       = local.az
  map_public_ip_on_launch = false # each instance asks for its address explicitly
  tags                    = { Name = "${var.name}-hosts" }
}

resource "aws_route_table" "hosts" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-hosts" }

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table_association" "hosts" {
  subnet_id      = aws_subnet.hosts.id
  route_table_id = aws_route_table.hosts.id
}

# ----------------------------------------------------------------------------------------------- security groups

resource "aws_security_group" "ssh" {
  #checkov:skip=CKV_AWS_24:cidr_blocks is var.allowed_ssh_cidrs: required, and its validation refuses 0.0.0.0/0 and any prefix shorter than /8 (tests/bad_input.tftest.hcl)
  name        = "${var.name}-ssh"
  description = "SSH from the admin networks only"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-ssh" }

  ingress {
    description = "SSH from the admin networks (allowed_ssh_cidrs)"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = var.allowed_ssh_cidrs
  }
}

# Every service port between the deployment's own hosts: node RPC, Kafka, Redis, metrics, Prometheus scrapes.
# No address outside this group reaches them.
resource "aws_security_group" "internal" {
  name        = "${var.name}-internal"
  description = "Traffic between the hosts of this deployment, and their outbound traffic"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-internal" }

  ingress {
    description = "Any port from the hosts of this deployment"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    self        = true
  }

  #checkov:skip=CKV_AWS_382:the hosts need any outbound port: CKB peers listen on arbitrary ports, plus apt, image registries and NTP
  egress {
    description = "Outbound: CKB peers, package and image downloads, NTP"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# One group per public service (stratum, proxy, web, node_p2p), attached only to the hosts that run it.
resource "aws_security_group" "public" {
  for_each = module.topology.public_services

  name        = "${var.name}-${replace(each.key, "_", "-")}"
  description = "${each.value.description} from anywhere"
  vpc_id      = aws_vpc.this.id
  tags        = { Name = "${var.name}-${replace(each.key, "_", "-")}" }

  ingress {
    description = "${each.value.description} from anywhere"
    from_port   = each.value.port
    to_port     = each.value.port
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# ------------------------------------------------------------------------------------------------------- hosts

resource "aws_key_pair" "admin" {
  key_name   = "${var.name}-admin"
  public_key = trimspace(var.ssh_public_key)
  tags       = { Name = "${var.name}-admin" }
}

resource "aws_instance" "host" {
  for_each = module.topology.hosts

  #checkov:skip=CKV2_AWS_41:the hosts call no AWS API, so they get no IAM instance profile (least privilege)
  #checkov:skip=CKV_AWS_88:miners and Ansible reach the hosts on public addresses; security groups limit what is open
  ami                         = local.ami
  instance_type               = each.value.instance_type
  subnet_id                   = aws_subnet.hosts.id
  associate_public_ip_address = true
  key_name                    = aws_key_pair.admin.key_name
  monitoring                  = var.detailed_monitoring
  ebs_optimized               = true
  user_data                   = module.topology.user_data
  vpc_security_group_ids = concat(
    [aws_security_group.ssh.id, aws_security_group.internal.id],
    [for s in each.value.public_services : aws_security_group.public[s].id],
  )

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type           = var.volume_type
    volume_size           = each.value.root_volume_size_gb
    encrypted             = true
    delete_on_termination = true
    tags                  = { Name = "${each.value.name}-root" }
  }

  ebs_block_device {
    device_name           = "/dev/sdf"
    volume_type           = var.volume_type
    volume_size           = each.value.data_volume_size_gb
    encrypted             = true
    delete_on_termination = true
    tags                  = { Name = "${each.value.name}-data" }
  }

  tags = merge(local.tags, {
    Name          = each.value.name
    ckbpool-roles = join(" ", each.value.roles)
  })

  lifecycle {
    ignore_changes = [ami] # a newer image must not replace a synced node; change ami_id to rebuild on purpose
  }
}

module "inventory" {
  source = "../modules/inventory"

  ssh_user   = var.ssh_user
  groups     = module.topology.groups
  kafka_port = lookup(var.private_ports, "kafka", 9092)
  hosts = {
    for k, h in module.topology.hosts : k => {
      roles      = h.roles
      public_ip  = aws_instance.host[k].public_ip
      private_ip = aws_instance.host[k].private_ip
    }
  }
}
