variable "name" {
  description = "Name of the deployment: prefix of every resource name (lowercase letters, digits and -, 1-32 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$", var.name))
    error_message = "name must be 1-32 lowercase letters, digits or '-', starting with a letter and not ending with '-'."
  }
}

variable "region" {
  description = "AWS region to deploy into, e.g. us-east-1, eu-central-1, ap-southeast-1. Required: nothing is read from the environment."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$", var.region))
    error_message = "region must be an AWS region code such as us-east-1 or eu-central-1."
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
  description = "Login user of the image (ubuntu for the default Ubuntu image)."
  type        = string
  default     = "ubuntu"

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
  description = "EC2 instance type of hosts that set none. c6i.xlarge (4 vCPU, 8 GiB) runs a mainnet node and the pool on one host."
  type        = string
  default     = "c6i.xlarge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as c6i.xlarge."
  }
}

variable "root_volume_size_gb" {
  description = "Root volume (GB) of hosts that set none."
  type        = number
  default     = 30

  validation {
    condition     = var.root_volume_size_gb >= 20 && var.root_volume_size_gb <= 2048
    error_message = "root_volume_size_gb must be between 20 and 2048."
  }
}

variable "node_data_volume_size_gb" {
  description = "Data volume (GB) of ckb_node hosts that set none; null = by network (mainnet 300, testnet 150, dev 20). At least 250 on mainnet, 60 on testnet (the btcpool role's preflight)."
  type        = number
  default     = null

  validation {
    condition     = var.node_data_volume_size_gb == null || try(var.node_data_volume_size_gb >= 20 && var.node_data_volume_size_gb <= 16384, false)
    error_message = "node_data_volume_size_gb must be between 20 and 16384."
  }
}

variable "service_data_volume_size_gb" {
  description = "Data volume (GB) of hosts without ckb_node (Kafka, Redis, Prometheus, pool block store)."
  type        = number
  default     = 50

  validation {
    condition     = var.service_data_volume_size_gb >= 20 && var.service_data_volume_size_gb <= 16384
    error_message = "service_data_volume_size_gb must be between 20 and 16384."
  }
}

variable "volume_type" {
  description = "EBS volume type of root and data volumes."
  type        = string
  default     = "gp3"

  validation {
    condition     = contains(["gp3", "gp2", "io1", "io2"], var.volume_type)
    error_message = "volume_type must be gp3, gp2, io1 or io2 (SSD: a ckb node on HDD cannot keep up)."
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

variable "availability_zone" {
  description = "Availability zone of the subnet; null = the region's first available zone."
  type        = string
  default     = null

  validation {
    condition     = var.availability_zone == null || can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}[a-z]$", coalesce(var.availability_zone, "x")))
    error_message = "availability_zone must be a zone name such as us-east-1a."
  }
}

variable "ami_id" {
  description = "AMI of every host; null = the newest Ubuntu 24.04 LTS amd64 image published by Canonical (ami_owners / ami_name_filter)."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", coalesce(var.ami_id, "x")))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "ami_owners" {
  description = "Owners searched for the image when ami_id is null (099720109477 = Canonical)."
  type        = list(string)
  default     = ["099720109477"]

  validation {
    condition     = length(var.ami_owners) >= 1
    error_message = "ami_owners needs at least one owner."
  }
}

variable "ami_name_filter" {
  description = "Image name pattern searched when ami_id is null."
  type        = string
  default     = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"

  validation {
    condition     = length(var.ami_name_filter) > 0
    error_message = "ami_name_filter must not be empty."
  }
}

variable "detailed_monitoring" {
  description = "Enable EC2 detailed (1-minute) CloudWatch monitoring of the instances."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource (besides Name, ckbpool and ckbpool-network)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.tags) : length(k) <= 128 && !startswith(lower(k), "aws:")])
    error_message = "tags keys must be at most 128 characters and must not start with aws:."
  }
}

# ------------------------------------------------------------------------------------ managed services (managed.tf)

variable "managed_kafka" {
  description = "Run the bus on Amazon MSK (SASL/SCRAM over TLS) instead of a kafka host."
  type        = bool
  default     = false
}

variable "managed_redis" {
  description = "Keep the books in ElastiCache for Redis (TLS + AUTH token) instead of a redis host."
  type        = bool
  default     = false
}

variable "managed_postgres" {
  description = "Keep the payouts ledger in RDS PostgreSQL (encrypted, private, password kept by RDS in Secrets Manager) instead of the stack's PostgreSQL."
  type        = bool
  default     = false
}

variable "managed_kafka_password" {
  description = "SCRAM password of the MSK user (24-128 letters and digits). The ckbpool deploy generates it into secrets/ and passes it as TF_VAR_managed_kafka_password; ephemeral: written write-only into Secrets Manager, never into the plan or the state."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.managed_kafka_password == null || can(regex("^[A-Za-z0-9]{24,128}$", coalesce(var.managed_kafka_password, "x")))
    error_message = "managed_kafka_password must be 24-128 letters and digits."
  }
}

variable "managed_redis_auth_token" {
  description = "AUTH token of the managed Redis (16-128 printable ASCII characters, no @, \" or /). The ckbpool deploy generates it into secrets/ and passes it as TF_VAR_managed_redis_auth_token, never in a tfvars file; the provider has no write-only form, so the state holds it (sensitive)."
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
  default     = "7.1"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9x]+$", var.managed_redis_version))
    error_message = "managed_redis_version must look like 7.1."
  }
}

variable "managed_postgres_version" {
  description = "PostgreSQL version of the managed ledger."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?$", var.managed_postgres_version))
    error_message = "managed_postgres_version must be a PostgreSQL version such as 16."
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

variable "managed_availability_zones" {
  description = "Two or more zones for the managed services' subnets; null = the region's first two available zones."
  type        = list(string)
  default     = null

  validation {
    condition     = var.managed_availability_zones == null || try(length(var.managed_availability_zones) >= 2 && alltrue([for z in var.managed_availability_zones : can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}[a-z]$", z))]), false)
    error_message = "managed_availability_zones must list at least two zone names such as us-east-1a (MSK, ElastiCache and RDS subnet groups span two zones)."
  }
}

variable "managed_kafka_version" {
  description = "Apache Kafka version of the MSK cluster."
  type        = string
  default     = "3.8.x"

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.([0-9]+|x)(\\.tiered)?$", var.managed_kafka_version))
    error_message = "managed_kafka_version must be an MSK Kafka version such as 3.8.x or 3.6.0."
  }
}

variable "managed_kafka_instance_type" {
  description = "MSK broker instance type."
  type        = string
  default     = "kafka.t3.small"

  validation {
    condition     = can(regex("^kafka\\.[a-z0-9]+\\.[a-z0-9]+$", var.managed_kafka_instance_type))
    error_message = "managed_kafka_instance_type must be an MSK broker type such as kafka.t3.small or kafka.m7g.large."
  }
}

variable "managed_kafka_brokers" {
  description = "Number of MSK brokers: a multiple of the number of managed zones (two by default)."
  type        = number
  default     = 2

  validation {
    condition     = var.managed_kafka_brokers >= 2 && var.managed_kafka_brokers <= 30 && floor(var.managed_kafka_brokers) == var.managed_kafka_brokers
    error_message = "managed_kafka_brokers must be a whole number between 2 and 30."
  }
}

variable "managed_kafka_volume_size_gb" {
  description = "EBS storage (GB) of each MSK broker."
  type        = number
  default     = 100

  validation {
    condition     = var.managed_kafka_volume_size_gb >= 1 && var.managed_kafka_volume_size_gb <= 16384
    error_message = "managed_kafka_volume_size_gb must be between 1 and 16384."
  }
}

variable "managed_kafka_password_version" {
  description = "Bump after changing managed_kafka_password: the write-only secret value is sent again only when this changes."
  type        = number
  default     = 1

  validation {
    condition     = var.managed_kafka_password_version >= 1 && floor(var.managed_kafka_password_version) == var.managed_kafka_password_version
    error_message = "managed_kafka_password_version must be a whole number >= 1."
  }
}

variable "managed_redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.managed_redis_node_type))
    error_message = "managed_redis_node_type must be an ElastiCache node type such as cache.t4g.small."
  }
}

variable "managed_redis_nodes" {
  description = "Nodes of the replication group: 1 = a primary alone; 2 or more = a primary and replicas with automatic failover across zones."
  type        = number
  default     = 2

  validation {
    condition     = var.managed_redis_nodes >= 1 && var.managed_redis_nodes <= 6
    error_message = "managed_redis_nodes must be between 1 and 6."
  }
}

variable "managed_redis_parameter_group" {
  description = "An existing ElastiCache parameter group (with maxmemory-policy noeviction); null = the module creates one."
  type        = string
  default     = null

  validation {
    condition     = var.managed_redis_parameter_group == null || can(regex("^[A-Za-z][A-Za-z0-9.-]{0,254}$", coalesce(var.managed_redis_parameter_group, "x")))
    error_message = "managed_redis_parameter_group must be an ElastiCache parameter group name."
  }
}

variable "managed_postgres_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.small"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.managed_postgres_instance_class))
    error_message = "managed_postgres_instance_class must be an RDS class such as db.t4g.small."
  }
}

variable "managed_postgres_multi_az" {
  description = "A standby RDS instance in a second zone."
  type        = bool
  default     = true
}
