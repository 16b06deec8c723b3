# One host runs everything: ckb mainnet node, the pool (job maker, stratum, block maker, accounting), Redis and
# Prometheus. `terraform apply`, then deploy the stack with the inventory output (or let `ckbpool deploy --target
# alicloud` do both).
module "ckbpool" {
  source = "../../"

  name              = var.name
  region            = var.region
  network           = "mainnet"
  allowed_ssh_cidrs = var.allowed_ssh_cidrs
  ssh_public_key    = file(pathexpand(var.ssh_public_key_file))
}

# The region is a module input; the provider must use the same one (the module checks). Credentials:
# ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY.
provider "alicloud" {
  region = var.region
}
