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

# The region is this module's required input, not an environment variable or a prompt. Credentials come from the
# usual AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, SSO, instance role).
provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
