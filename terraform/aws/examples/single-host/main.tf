# One host runs everything: ckb mainnet node, the pool (job maker, stratum, block maker, accounting), Redis and
# Prometheus. `terraform apply`, then deploy the stack with the inventory output (or let `ckbpool deploy --target
# aws` do both).
module "ckbpool" {
  source = "../../"

  name              = var.name
  region            = var.region
  network           = "mainnet"
  allowed_ssh_cidrs = var.allowed_ssh_cidrs
  ssh_public_key    = file(pathexpand(var.ssh_public_key_file))
}

# The module takes the region as an input and checks that the provider uses the same one.
provider "aws" {
  region = var.region
}
