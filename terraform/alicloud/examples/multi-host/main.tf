# Roles on separate hosts: a node, a core host (job maker, block maker, accounting, Redis, Kafka), two stratum
# servers, a V1 proxy and a monitoring host. Pool processes talk through Kafka on private addresses; only stratum,
# the proxy and the node's p2p port face the internet.
module "ckbpool" {
  source = "../../"

  name              = var.name
  region            = var.region
  network           = "mainnet"
  allowed_ssh_cidrs = var.allowed_ssh_cidrs
  ssh_public_key    = file(pathexpand(var.ssh_public_key_file))

  hosts = [
    { name = "node", roles = ["ckb_node"], instance_type = "ecs.g7.xlarge", data_volume_size_gb = 400 },
    { name = "core", roles = ["jobmaker", "blockmaker", "accounting", "redis", "kafka"], instance_type = "ecs.g7.large" },
    { name = "stratum", roles = ["stratum"], count = 2, instance_type = "ecs.c7.large" },
    { name = "proxy", roles = ["proxy"], instance_type = "ecs.c7.large" },
    { name = "mon", roles = ["monitoring"], instance_type = "ecs.g7.large" },
  ]
}

# The region is a module input; the provider must use the same one (the module checks). Credentials:
# ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY.
provider "alicloud" {
  region = var.region
}
