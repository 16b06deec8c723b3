terraform {
  # Terraform >= 1.7 (OpenTofu >= 1.8) for mock providers in `terraform test`.
  required_version = ">= 1.7.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}
