variable "name" {
  description = "Name of the deployment: prefix of every resource name (lowercase letters, digits and -, 1-32 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.name))
    error_message = "name must be 1-32 lowercase letters, digits or '-', starting with a letter and not ending with '-'."
  }
}

variable "region" {
  description = "Alibaba Cloud region to deploy into, e.g. cn-hangzhou, cn-hongkong, ap-southeast-1, eu-central-1. Required: the module never falls back to ALICLOUD_REGION or a provider default, and checks that the provider uses this region."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}-[a-z]+(-[a-z0-9]+)*$", var.region))
    error_message = "region must be an Alibaba Cloud region ID such as cn-hangzhou or ap-southeast-1."
  }
}

variable "network" {
  description = "CKB chain: dev, testnet or mainnet. Sets the default data disk of ckb_node hosts (mainnet 300 GB, testnet 150 GB, dev 20 GB)."
  type        = string
  default     = "mainnet"

  validation {
    condition     = contains(["dev", "testnet", "mainnet"], var.network)
    error_message = "network must be one of dev, testnet, mainnet."
  }
}

variable "allowed_ssh_cidrs" {
  description = "Required. IPv4 CIDR blocks allowed to reach SSH (22/tcp), e.g. [\"198.51.100.7/32\"]: your admin network. 0.0.0.0/0 is refused."
  type        = list(string)

  validation {
    condition     = length(var.allowed_ssh_cidrs) >= 1
    error_message = "allowed_ssh_cidrs needs at least one admin CIDR (e.g. your address as a.b.c.d/32)."
  }
  validation {
    condition     = alltrue([for c in var.allowed_ssh_cidrs : can(cidrhost(c, 0)) && can(regex("^[0-9.]+/[0-9]+$", c))])
    error_message = "allowed_ssh_cidrs entries must be IPv4 CIDR blocks such as 198.51.100.7/32."
  }
  validation {
    condition     = alltrue([for c in var.allowed_ssh_cidrs : try(tonumber(split("/", c)[1]) >= 8, false)])
    error_message = "allowed_ssh_cidrs must not open SSH to the internet: 0.0.0.0/0 (or any prefix shorter than /8) is refused."
  }
}

variable "ssh_public_key" {
  description = "Required. OpenSSH public key (the text of ~/.ssh/id_ed25519.pub) installed for ssh_user on every host."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com) [A-Za-z0-9+/]+=*( [^\\n]*)?$", trimspace(var.ssh_public_key)))
    error_message = "ssh_public_key must be an OpenSSH public key line (ssh-ed25519 AAAA... comment)."
  }
}

variable "ssh_user" {
  description = "Login user of the image (root for Alibaba Cloud's Ubuntu system images, which take the key pair for root)."
  type        = string
  default     = "root"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "ssh_user must be a Unix user name."
  }
}

variable "hosts" {
  description = <<-EOT
    Hosts by role; null (default) = a single host running ckb_node, pool, redis and monitoring. Each entry:
    { name, roles, count = 1, instance_type = null, root_volume_size_gb = null, data_volume_size_gb = null }.
    Roles: ckb_node, pool (= jobmaker + stratum + blockmaker + accounting), jobmaker, stratum, blockmaker,
    accounting, redis, kafka, proxy, monitoring. See examples/multi-host.
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
  # validated in ../modules/topology (names, roles, counts, sizes, role requirements)
}

variable "instance_type" {
  description = "ECS instance type of hosts that set none. ecs.c7.xlarge (4 vCPU, 8 GiB) runs a mainnet node and the pool on one host."
  type        = string
  default     = "ecs.c7.xlarge"

  validation {
    condition     = can(regex("^ecs\\.[a-z0-9-]+\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an ECS instance type such as ecs.c7.xlarge."
  }
}

variable "root_volume_size_gb" {
  description = "System disk (GB) of hosts that set none."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size_gb >= 20 && var.root_volume_size_gb <= 500
    error_message = "root_volume_size_gb must be between 20 and 500 (ECS system disk limits)."
  }
}

variable "node_data_volume_size_gb" {
  description = "Data disk (GB) of ckb_node hosts that set none; null = by network (mainnet 300, testnet 150, dev 20). At least 250 on mainnet, 60 on testnet (the btcpool role's preflight)."
  type        = number
  default     = null

  validation {
    condition     = var.node_data_volume_size_gb == null || try(var.node_data_volume_size_gb >= 20 && var.node_data_volume_size_gb <= 16384, false)
    error_message = "node_data_volume_size_gb must be between 20 and 16384."
  }
}

variable "service_data_volume_size_gb" {
  description = "Data disk (GB) of hosts without ckb_node (Kafka, Redis, Prometheus, pool block store)."
  type        = number
  default     = 50

  validation {
    condition     = var.service_data_volume_size_gb >= 20 && var.service_data_volume_size_gb <= 16384
    error_message = "service_data_volume_size_gb must be between 20 and 16384."
  }
}

variable "disk_category" {
  description = "Category of system and data disks."
  type        = string
  default     = "cloud_essd"

  validation {
    condition     = contains(["cloud_essd", "cloud_ssd", "cloud_efficiency", "cloud_auto"], var.disk_category)
    error_message = "disk_category must be cloud_essd, cloud_ssd, cloud_efficiency or cloud_auto."
  }
}

variable "stratum_port" {
  description = "Stratum V2 port, open to the internet on stratum hosts."
  type        = number
  default     = 34255

  validation {
    condition     = var.stratum_port >= 1 && var.stratum_port <= 65535 && var.stratum_port != 22
    error_message = "stratum_port must be a TCP port other than 22."
  }
}

variable "proxy_port" {
  description = "CKB Stratum V1 proxy port, open to the internet on proxy hosts."
  type        = number
  default     = 3333

  validation {
    condition     = var.proxy_port >= 1 && var.proxy_port <= 65535 && var.proxy_port != 22
    error_message = "proxy_port must be a TCP port other than 22."
  }
}

variable "web_port" {
  description = "Port of the miners' web page and public API, open to the internet on the hosts that run accounting (with open_web)."
  type        = number
  default     = 8080

  validation {
    condition     = var.web_port >= 1 && var.web_port <= 65535 && var.web_port != 22
    error_message = "web_port must be a TCP port other than 22."
  }
}

variable "open_web" {
  description = "Open web_port to the internet on the hosts that run accounting (ckbpool.yaml web.enabled)."
  type        = bool
  default     = true
}

variable "node_p2p_port" {
  description = "CKB peer-to-peer port of ckb_node hosts."
  type        = number
  default     = 8115

  validation {
    condition     = var.node_p2p_port >= 1 && var.node_p2p_port <= 65535 && var.node_p2p_port != 22
    error_message = "node_p2p_port must be a TCP port other than 22."
  }
}

variable "open_node_p2p" {
  description = "Accept inbound CKB peers on node_p2p_port. The node syncs through outbound peers either way."
  type        = bool
  default     = true
}

variable "private_ports" {
  description = "Ports reachable only from the deployment's own hosts (node RPC, Kafka, Redis, metrics, ...): name => port. Never public."
  type        = map(number)
  default = {
    node_rpc          = 8114
    node_tcp_rpc      = 18114
    node_metrics      = 8100
    pool_http         = 8180
    proxy_http        = 8181
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

variable "vpc_cidr" {
  description = "CIDR of the VPC this module creates; the hosts' subnet is its x.x.1.0/24-sized block."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 24, false)
    error_message = "vpc_cidr must be an IPv4 CIDR with a prefix between /16 and /24."
  }
}

variable "zone_id" {
  description = "Zone of the vSwitch; null = the first zone of the region that offers the instance type and disk category."
  type        = string
  default     = null

  validation {
    condition     = var.zone_id == null || can(regex("^[a-z]{2}-[a-z0-9-]+$", coalesce(var.zone_id, "x")))
    error_message = "zone_id must be a zone ID such as cn-hangzhou-k."
  }
}

variable "image_id" {
  description = "Image of every host; null = the newest Alibaba Cloud system image matching image_name_regex."
  type        = string
  default     = null

  validation {
    condition     = var.image_id == null || length(coalesce(var.image_id, "x")) >= 3
    error_message = "image_id must be an image ID such as ubuntu_24_04_x64_20G_alibase_20240812.vhd."
  }
}

variable "image_name_regex" {
  description = "Regex of the system image looked up when image_id is null (Ubuntu 24.04 amd64)."
  type        = string
  default     = "^ubuntu_24_04_x64"

  validation {
    condition     = length(var.image_name_regex) > 0
    error_message = "image_name_regex must be a non-empty regular expression."
  }
}

variable "internet_max_bandwidth_out" {
  description = "Outbound public bandwidth cap per host in Mbit/s (pay by traffic). Above 0, so each host gets a public address."
  type        = number
  default     = 100

  validation {
    condition     = var.internet_max_bandwidth_out >= 1 && var.internet_max_bandwidth_out <= 100
    error_message = "internet_max_bandwidth_out must be between 1 and 100."
  }
}

variable "tags" {
  description = "Tags added to every resource (besides Name, ckbpool and ckbpool-network)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.tags) : length(k) <= 64 && !startswith(lower(k), "aliyun") && !startswith(lower(k), "acs:")])
    error_message = "tags keys must be at most 64 characters and must not start with aliyun or acs:."
  }
}

# ------------------------------------------------------------------------------------ managed services (managed.tf)

variable "managed_kafka" {
  description = "Run the bus on ApsaraMQ for Kafka (SASL/SCRAM over TLS on its SSL endpoint) instead of a kafka host."
  type        = bool
  default     = false
}

variable "managed_redis" {
  description = "Keep the books in ApsaraDB for Redis (TLS + password) instead of a redis host."
  type        = bool
  default     = false
}

variable "managed_postgres" {
  description = "Keep the payouts ledger in ApsaraDB RDS for PostgreSQL (encrypted, TLS, allow-listed to the hosts) instead of the stack's PostgreSQL."
  type        = bool
  default     = false
}

variable "managed_kafka_password" {
  description = "SCRAM password of the Kafka user (24-128 letters and digits). The ckbpool deploy generates it into secrets/ and passes it as TF_VAR_managed_kafka_password, never in a tfvars file; the state holds it (sensitive)."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.managed_kafka_password == null || can(regex("^[A-Za-z0-9]{24,128}$", coalesce(var.managed_kafka_password, "x")))
    error_message = "managed_kafka_password must be 24-128 letters and digits."
  }
}

variable "managed_redis_auth_token" {
  description = "Password of the managed Redis (16-128 printable ASCII characters, no @, \" or /). The ckbpool deploy generates it into secrets/ and passes it as TF_VAR_managed_redis_auth_token, never in a tfvars file; the state holds it (sensitive)."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.managed_redis_auth_token == null || can(regex("^[!#-.0-?A-~]{16,128}$", coalesce(var.managed_redis_auth_token, "x")))
    error_message = "managed_redis_auth_token must be 16-128 printable ASCII characters without spaces, @, \" or /."
  }
}

variable "managed_redis_version" {
  description = "Redis engine version of the managed Redis."
  type        = string
  default     = "7.0"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9x]+$", var.managed_redis_version))
    error_message = "managed_redis_version must look like 7.0."
  }
}

variable "managed_postgres_version" {
  description = "PostgreSQL version of the managed ledger."
  type        = string
  default     = "16.0"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?$", var.managed_postgres_version))
    error_message = "managed_postgres_version must be a PostgreSQL version such as 16.0."
  }
}

variable "managed_postgres_storage_gb" {
  description = "Storage (GB) of the managed ledger."
  type        = number
  default     = 20

  validation {
    condition     = var.managed_postgres_storage_gb >= 20 && var.managed_postgres_storage_gb <= 16384
    error_message = "managed_postgres_storage_gb must be between 20 and 16384."
  }
}

variable "managed_deletion_protection" {
  description = "Deletion protection of the managed ledger. Turn off only for throwaway deployments."
  type        = bool
  default     = true
}

variable "managed_postgres_password" {
  description = "Password of the ledger's account (24-128 letters and digits). The ckbpool deploy generates it into secrets/ and passes it as TF_VAR_managed_postgres_password, never in a tfvars file; the state holds it (sensitive)."
  type        = string
  default     = null
  sensitive   = true

  validation {
    condition     = var.managed_postgres_password == null || can(regex("^[A-Za-z0-9]{24,128}$", coalesce(var.managed_postgres_password, "x")))
    error_message = "managed_postgres_password must be 24-128 letters and digits."
  }
}

variable "managed_kafka_io_max_spec" {
  description = "Traffic specification of the managed Kafka instance (e.g. alikafka.hw.2xlarge)."
  type        = string
  default     = "alikafka.hw.2xlarge"

  validation {
    condition     = can(regex("^alikafka\\.[a-z0-9]+\\.[a-z0-9]+$", var.managed_kafka_io_max_spec))
    error_message = "managed_kafka_io_max_spec must look like alikafka.hw.2xlarge."
  }
}

variable "managed_kafka_eip_max" {
  description = "Internet bandwidth (MB/s) of the managed Kafka's SSL endpoint."
  type        = number
  default     = 3

  validation {
    condition     = var.managed_kafka_eip_max >= 1 && var.managed_kafka_eip_max <= 1000
    error_message = "managed_kafka_eip_max must be between 1 and 1000."
  }
}

variable "managed_kafka_partitions" {
  description = "Partitions of the managed Kafka instance."
  type        = number
  default     = 50

  validation {
    condition     = var.managed_kafka_partitions >= 50 && var.managed_kafka_partitions <= 3000
    error_message = "managed_kafka_partitions must be between 50 and 3000."
  }
}

variable "managed_kafka_disk_size_gb" {
  description = "Disk (GB) of the managed Kafka instance."
  type        = number
  default     = 500

  validation {
    condition     = var.managed_kafka_disk_size_gb >= 500 && var.managed_kafka_disk_size_gb <= 96000
    error_message = "managed_kafka_disk_size_gb must be between 500 and 96000."
  }
}

variable "managed_redis_instance_class" {
  description = "ApsaraDB for Redis instance class."
  type        = string
  default     = "redis.master.small.default"

  validation {
    condition     = can(regex("^redis\\.[a-z0-9.]+$", var.managed_redis_instance_class))
    error_message = "managed_redis_instance_class must look like redis.master.small.default."
  }
}

variable "managed_postgres_instance_type" {
  description = "ApsaraDB RDS for PostgreSQL instance type."
  type        = string
  default     = "pg.n2.2c.1m"

  validation {
    condition     = can(regex("^pg\\.[a-z0-9.]+$", var.managed_postgres_instance_type))
    error_message = "managed_postgres_instance_type must look like pg.n2.2c.1m."
  }
}
