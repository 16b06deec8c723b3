# ckbpool on Alibaba Cloud: its own VPC and vSwitch, security groups by exposure, one key pair, and the hosts of the
# topology (one by default). Nothing is typed in by hand: every ID comes from a resource created here.
# Ansible deploys the stack on the hosts from the `inventory` output.

locals {
  tags  = merge(var.tags, { ckbpool = var.name, ckbpool-network = var.network })
  zone  = var.zone_id != null ? var.zone_id : data.alicloud_zones.available[0].zones[0].id
  image = var.image_id != null ? var.image_id : data.alicloud_images.ubuntu[0].images[0].id
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

# The region is a required input of this module. The alicloud provider does not prompt for one and would otherwise
# fall back to ALICLOUD_REGION: the caller's provider block must use var.region, and the module checks it does.
data "alicloud_regions" "current" {
  current = true
}

data "alicloud_zones" "available" {
  count                       = var.zone_id == null ? 1 : 0
  available_resource_creation = "VSwitch"
  available_instance_type     = var.instance_type
  available_disk_category     = var.disk_category
}

data "alicloud_images" "ubuntu" {
  count       = var.image_id == null ? 1 : 0
  owners      = "system"
  name_regex  = var.image_name_regex
  most_recent = true
}

# ------------------------------------------------------------------------------------------------------ network

resource "alicloud_vpc" "this" {
  vpc_name   = var.name
  cidr_block = var.vpc_cidr
  tags       = merge(local.tags, { Name = var.name })

  lifecycle {
    precondition {
      condition     = data.alicloud_regions.current.regions[0].id == var.region
      error_message = "The alicloud provider is configured for region ${data.alicloud_regions.current.regions[0].id} but region = ${var.region}: configure it with provider \"alicloud\" { region = var.region }."
    }
  }
}

resource "alicloud_vswitch" "hosts" {
  vswitch_name = "${var.name}-hosts"
  vpc_id       = alicloud_vpc.this.id
  cidr_block   = cidrsubnet(var.vpc_cidr, 24 - tonumber(split("/", var.vpc_cidr)[1]), 1)
  zone_id      = local.zone
  tags         = merge(local.tags, { Name = "${var.name}-hosts" })
}

# ----------------------------------------------------------------------------------------------- security groups
# inner_access_policy = Drop everywhere: members of a group reach each other only through the rules below.

resource "alicloud_security_group" "ssh" {
  security_group_name = "${var.name}-ssh"
  description         = "SSH from the admin networks only"
  vpc_id              = alicloud_vpc.this.id
  inner_access_policy = "Drop"
  tags                = merge(local.tags, { Name = "${var.name}-ssh" })
}

resource "alicloud_security_group_rule" "ssh" {
  for_each = toset(var.allowed_ssh_cidrs)

  security_group_id = alicloud_security_group.ssh.id
  description       = "SSH from the admin network ${each.value}"
  type              = "ingress"
  ip_protocol       = "tcp"
  nic_type          = "intranet"
  policy            = "accept"
  priority          = 1
  port_range        = "22/22"
  cidr_ip           = each.value
}

# Every service port between the deployment's own hosts: node RPC, Kafka, Redis, metrics, Prometheus scrapes.
resource "alicloud_security_group" "internal" {
  security_group_name = "${var.name}-internal"
  description         = "Traffic between the hosts of this deployment"
  vpc_id              = alicloud_vpc.this.id
  inner_access_policy = "Drop"
  tags                = merge(local.tags, { Name = "${var.name}-internal" })
}

resource "alicloud_security_group_rule" "internal" {
  security_group_id        = alicloud_security_group.internal.id
  description              = "Any port from the hosts of this deployment"
  type                     = "ingress"
  ip_protocol              = "all"
  nic_type                 = "intranet"
  policy                   = "accept"
  priority                 = 1
  port_range               = "-1/-1"
  source_security_group_id = alicloud_security_group.internal.id
}

# One group per public service (stratum, proxy, web, node_p2p), attached only to the hosts that run it.
resource "alicloud_security_group" "public" {
  for_each = module.topology.public_services

  security_group_name = "${var.name}-${replace(each.key, "_", "-")}"
  description         = "${each.value.description} from anywhere"
  vpc_id              = alicloud_vpc.this.id
  inner_access_policy = "Drop"
  tags                = merge(local.tags, { Name = "${var.name}-${replace(each.key, "_", "-")}" })
}

resource "alicloud_security_group_rule" "public" {
  for_each = module.topology.public_services

  security_group_id = alicloud_security_group.public[each.key].id
  description       = "${each.value.description} from anywhere"
  type              = "ingress"
  ip_protocol       = "tcp"
  nic_type          = "intranet"
  policy            = "accept"
  priority          = 1
  port_range        = "${each.value.port}/${each.value.port}"
  cidr_ip           = "0.0.0.0/0"
}

# ------------------------------------------------------------------------------------------------------- hosts

resource "alicloud_ecs_key_pair" "admin" {
  key_pair_name = "${var.name}-admin"
  public_key    = trimspace(var.ssh_public_key)
  tags          = merge(local.tags, { Name = "${var.name}-admin" })
}

resource "alicloud_instance" "host" {
  for_each = module.topology.hosts

  instance_name = each.value.name
  host_name     = each.value.name
  description   = "ckbpool ${var.name}: ${join(", ", each.value.roles)}"
  image_id      = local.image
  instance_type = each.value.instance_type
  vswitch_id    = alicloud_vswitch.hosts.id
  security_groups = concat(
    [alicloud_security_group.ssh.id, alicloud_security_group.internal.id],
    [for s in each.value.public_services : alicloud_security_group.public[s].id],
  )
  key_name                      = alicloud_ecs_key_pair.admin.key_pair_name
  internet_charge_type          = "PayByTraffic"
  internet_max_bandwidth_out    = var.internet_max_bandwidth_out
  instance_charge_type          = "PostPaid"
  security_enhancement_strategy = "Active"
  http_tokens                   = "required"
  user_data                     = base64encode(module.topology.user_data)

  system_disk_category  = var.disk_category
  system_disk_size      = each.value.root_volume_size_gb
  system_disk_encrypted = true

  data_disks {
    name                 = "${each.value.name}-data"
    size                 = each.value.data_volume_size_gb
    category             = var.disk_category
    encrypted            = true
    delete_with_instance = true
    description          = "ckbpool data (${module.topology.data_mount_point})"
  }

  tags = merge(local.tags, {
    Name          = each.value.name
    ckbpool-roles = join(" ", each.value.roles)
  })

  lifecycle {
    ignore_changes = [image_id] # a newer image must not replace a synced node; change image_id to rebuild on purpose
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
      public_ip  = alicloud_instance.host[k].public_ip
      private_ip = alicloud_instance.host[k].private_ip
    }
  }
}
