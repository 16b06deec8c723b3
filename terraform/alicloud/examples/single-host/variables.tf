variable "name" {
  description = "Deployment name (prefix of every resource)."
  type        = string
  default     = "ckbpool"
}

variable "region" {
  description = "Alibaba Cloud region ID, e.g. cn-hangzhou or ap-southeast-1."
  type        = string
}

variable "allowed_ssh_cidrs" {
  description = "Your admin network(s), e.g. [\"198.51.100.7/32\"]. SSH is open to nothing else."
  type        = list(string)
}

variable "ssh_public_key_file" {
  description = "Path of the OpenSSH public key installed on the hosts."
  type        = string
  default     = "~/.ssh/id_ed25519.pub"
}
