terraform {
  # `terraform test` with mock providers and optional object attributes with defaults: Terraform >= 1.7 /
  # OpenTofu >= 1.8. This module uses no provider at all.
  required_version = ">= 1.7.0"
}
