variable "name" {
  description = "Name of the pool deployment: prefix of every host name (lowercase letters, digits and -, 1-32 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.name))
    error_message = "name must be 1-32 lowercase letters, digits or '-', starting with a letter and not ending with '-'."
  }
}

variable "network" {
  description = "CKB chain the node follows: dev, testnet or mainnet. Picks the default data disk size of ckb_node hosts."
  type        = string

  validation {
    condition     = contains(["dev", "testnet", "mainnet"], var.network)
    error_message = "network must be one of dev, testnet, mainnet."
  }
}

variable "hosts" {
  description = <<-EOT
    Hosts by role. null (the default) means one host named after `name` that runs ckb_node, pool, redis and
    monitoring. Each entry is a host (or `count` identical hosts named <name>-<entry>-<n>) with its roles and
    optional sizes; null sizes fall back to default_instance_type / root_volume_size_gb / the data disk default.
    Roles: ckb_node, pool (= jobmaker, stratum, blockmaker, accounting), jobmaker, stratum, blockmaker,
    accounting, redis, kafka, proxy, monitoring.
  EOT
  type = list(object({
    name                = string
    roles               = list(string)
    count               = optional(number, 1)
    instance_type       = optional(string)
    root_volume_size_gb = optional(number)
    data_volume_size_gb = optional(number)
  }))
  default = null

  validation {
    condition     = var.hosts == null || try(length(var.hosts) >= 1, false)
    error_message = "hosts must list at least one host (or be null for a single host)."
  }
  validation {
    condition     = var.hosts == null || alltrue([for h in coalesce(var.hosts, []) : can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", h.name))])
    error_message = "every hosts[*].name must be 1-32 lowercase letters, digits or '-', starting with a letter."
  }
  validation {
    condition     = var.hosts == null || length(distinct([for h in coalesce(var.hosts, []) : h.name])) == length(coalesce(var.hosts, []))
    error_message = "hosts[*].name must be unique."
  }
  validation {
    condition = var.hosts == null || alltrue(flatten([for h in coalesce(var.hosts, []) : [
      for r in h.roles : contains(["ckb_node", "pool", "jobmaker", "stratum", "blockmaker", "accounting", "redis", "kafka", "proxy", "monitoring"], r)
    ]]))
    error_message = "hosts[*].roles may only contain ckb_node, pool, jobmaker, stratum, blockmaker, accounting, redis, kafka, proxy, monitoring."
  }
  validation {
    condition     = var.hosts == null || alltrue([for h in coalesce(var.hosts, []) : length(h.roles) >= 1])
    error_message = "every host needs at least one role."
  }
  validation {
    condition     = var.hosts == null || alltrue([for h in coalesce(var.hosts, []) : h.count >= 1 && h.count <= 20 && floor(h.count) == h.count])
    error_message = "hosts[*].count must be a whole number from 1 to 20."
  }
  validation {
    condition = var.hosts == null || alltrue([for h in coalesce(var.hosts, []) :
    h.root_volume_size_gb == null || try(h.root_volume_size_gb >= 20 && h.root_volume_size_gb <= 2048, false)])
    error_message = "hosts[*].root_volume_size_gb must be between 20 and 2048 GB."
  }
  validation {
    condition = var.hosts == null || alltrue([for h in coalesce(var.hosts, []) :
    h.data_volume_size_gb == null || try(h.data_volume_size_gb >= 20 && h.data_volume_size_gb <= 16384, false)])
    error_message = "hosts[*].data_volume_size_gb must be between 20 and 16384 GB."
  }
}

variable "default_instance_type" {
  description = "Instance type of every host whose entry in `hosts` sets none."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]*[a-z0-9]$", var.default_instance_type))
    error_message = "default_instance_type must look like an instance type (c6i.xlarge, ecs.c7.xlarge)."
  }
}

variable "root_volume_size_gb" {
  description = "System disk size (GB) of every host whose entry sets none."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size_gb >= 20 && var.root_volume_size_gb <= 2048
    error_message = "root_volume_size_gb must be between 20 and 2048."
  }
}

variable "node_data_volume_size_gb" {
  description = <<-EOT
    Data disk (GB) of hosts running ckb_node. null picks by network: mainnet 300 (the CKB docs ask for at least
    150 GB free for a mainnet node; twice that leaves room for growth, the indexer and RocksDB compaction),
    testnet 150, dev 20. At least 250 (mainnet) / 60 (testnet): the btcpool role's preflight minimum.
  EOT
  type        = number
  default     = null

  validation {
    condition     = var.node_data_volume_size_gb == null || try(var.node_data_volume_size_gb >= 20 && var.node_data_volume_size_gb <= 16384, false)
    error_message = "node_data_volume_size_gb must be between 20 and 16384."
  }
}

variable "service_data_volume_size_gb" {
  description = "Data disk (GB) of hosts without ckb_node (Kafka log, Redis AOF, Prometheus TSDB, pool block store)."
  type        = number
  default     = 50

  validation {
    condition     = var.service_data_volume_size_gb >= 20 && var.service_data_volume_size_gb <= 16384
    error_message = "service_data_volume_size_gb must be between 20 and 16384."
  }
}

variable "stratum_port" {
  description = "TCP port of the Stratum V2 server: open to the internet on hosts with the stratum (or pool) role."
  type        = number
  default     = 34255

  validation {
    condition     = var.stratum_port >= 1 && var.stratum_port <= 65535 && floor(var.stratum_port) == var.stratum_port
    error_message = "stratum_port must be a TCP port (1-65535)."
  }
}

variable "proxy_port" {
  description = "TCP port of the CKB Stratum V1 proxy: open to the internet on hosts with the proxy role."
  type        = number
  default     = 3333

  validation {
    condition     = var.proxy_port >= 1 && var.proxy_port <= 65535 && floor(var.proxy_port) == var.proxy_port
    error_message = "proxy_port must be a TCP port (1-65535)."
  }
}

variable "web_port" {
  description = "TCP port of the miners' web page and public API: open to the internet on hosts with the accounting (or pool) role."
  type        = number
  default     = 8080

  validation {
    condition     = var.web_port >= 1 && var.web_port <= 65535 && floor(var.web_port) == var.web_port
    error_message = "web_port must be a TCP port (1-65535)."
  }
}

variable "open_web" {
  description = "Serve the miners' web page to the internet (ckbpool.yaml web.enabled) on web_port."
  type        = bool
  default     = true
}

variable "node_p2p_port" {
  description = "TCP port of the ckb node's peer-to-peer listener (not its RPC)."
  type        = number
  default     = 8115

  validation {
    condition     = var.node_p2p_port >= 1 && var.node_p2p_port <= 65535 && floor(var.node_p2p_port) == var.node_p2p_port
    error_message = "node_p2p_port must be a TCP port (1-65535)."
  }
}

variable "open_node_p2p" {
  description = "Accept inbound CKB peers on node_p2p_port (better block propagation). The node syncs without it."
  type        = bool
  default     = true
}

variable "private_ports" {
  description = <<-EOT
    Ports that must never be reachable from the internet (node RPC and TCP RPC, Kafka, Redis, metrics, Prometheus,
    Grafana, pool HTTP status): only other hosts of this deployment reach them. Checked against the public ports.
  EOT
  type        = map(number)
  default = {
    node_rpc          = 8114
    node_tcp_rpc      = 18114
    node_metrics      = 8100
    pool_http         = 8180
    redis             = 6379
    kafka             = 9092
    kafka_controller  = 9093
    prometheus        = 9090
    grafana           = 3000
    node_exporter     = 9100
    redis_exporter    = 9121
    kafka_exporter    = 9308
    postgres          = 5432
    postgres_exporter = 9187
    payouts_metrics   = 8190
  }

  validation {
    condition     = alltrue([for p in values(var.private_ports) : p >= 1 && p <= 65535])
    error_message = "private_ports values must be TCP ports (1-65535)."
  }
}

variable "data_mount_point" {
  description = "Where the data disk is mounted on every host (ckb chain, Kafka log, Redis, Prometheus live below it)."
  type        = string
  default     = "/var/lib/ckbpool"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.data_mount_point)) && var.data_mount_point != "/"
    error_message = "data_mount_point must be an absolute path other than /."
  }
}

variable "data_bind_paths" {
  description = "Directories bind-mounted from the data disk at boot, before anything is installed: Docker's data (the chain, Kafka and Redis volumes) and the btcpool role's install dir."
  type        = list(string)
  default     = ["/var/lib/docker", "/opt/ckbpool"]

  validation {
    condition     = alltrue([for p in var.data_bind_paths : can(regex("^/[A-Za-z0-9._/-]+$", p)) && p != "/"])
    error_message = "data_bind_paths must be absolute paths other than /."
  }
}

variable "managed_kafka" {
  description = "The cloud runs Kafka (Amazon MSK / Alibaba's managed Kafka): pool roles on several hosts need no kafka host, and none may have one."
  type        = bool
  default     = false
}

variable "managed_redis" {
  description = "The cloud runs Redis (ElastiCache / ApsaraDB for Redis): no host may carry the redis role."
  type        = bool
  default     = false
}
