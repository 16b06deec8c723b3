terraform {
  # Terraform >= 1.7 (OpenTofu >= 1.8) for mock providers in `terraform test`.
  required_version = ">= 1.7.0"

  required_providers {
    alicloud = {
      source = "aliyun/alicloud"
      # security_group_name (1.239.0) and http_tokens on instances (1.192.0)
      version = "~> 1.239"
    }
  }
}
