variable "hosts" {
  description = "Map of host key => { roles, public_ip, private_ip } of the instances the cloud module created."
  type = map(object({
    roles      = list(string)
    public_ip  = string
    private_ip = string
  }))

  validation {
    condition     = length(var.hosts) >= 1
    error_message = "hosts must hold at least one host."
  }
}

variable "groups" {
  description = "Map of inventory group => host keys (the topology module's `groups` output). Every group appears in the inventory, empty ones too."
  type        = map(list(string))
}

variable "ssh_user" {
  description = "User Ansible logs in as (the image's default user)."
  type        = string

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "ssh_user must be a Unix user name."
  }
}

variable "kafka_port" {
  description = "Kafka listener port, for the btcpool_kafka_bootstrap variable."
  type        = number
  default     = 9092

  validation {
    condition     = var.kafka_port >= 1 && var.kafka_port <= 65535
    error_message = "kafka_port must be a TCP port."
  }
}
