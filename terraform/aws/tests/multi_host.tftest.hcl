mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-central-1" }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-central-1a"] }
  }
}

variables {
  name              = "ckb"
  region            = "eu-central-1"
  network           = "mainnet"
  allowed_ssh_cidrs = ["198.51.100.7/32"]
  ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
  ami_id            = "ami-0123456789abcdef0"
  hosts = [
    { name = "node", roles = ["ckb_node"], instance_type = "m6i.xlarge", data_volume_size_gb = 500 },
    { name = "core", roles = ["jobmaker", "blockmaker", "accounting", "redis", "kafka"] },
    { name = "stratum", roles = ["stratum"], count = 2, instance_type = "c6i.large" },
    { name = "proxy", roles = ["proxy"] },
    { name = "mon", roles = ["monitoring"], instance_type = "t3.medium" },
  ]
  # Terraform 1.11's test harness hands an unset ephemeral variable to apply runs and then refuses it ("was not set
  # during the plan phase"): give the managed Kafka password a value, unused while managed_kafka is false
  managed_kafka_password = "UnusedWhileKafkaIsNotManaged0000"
}

run "instances_per_role" {
  command = apply

  assert {
    condition     = length(aws_instance.host) == 6
    error_message = "node + core + 2 stratum + proxy + monitoring = 6 instances"
  }
  assert {
    condition     = output.role_counts == { ckb_node = 1, pool = 3, jobmaker = 1, stratum = 2, blockmaker = 1, accounting = 1, redis = 1, kafka = 1, proxy = 1, monitoring = 1 }
    error_message = "instance count per role"
  }
  assert {
    condition     = aws_instance.host["node"].instance_type == "m6i.xlarge" && aws_instance.host["stratum-2"].instance_type == "c6i.large" && aws_instance.host["core"].instance_type == "c6i.xlarge"
    error_message = "per-host instance types, default for the rest"
  }
  assert {
    condition     = one([for d in aws_instance.host["node"].ebs_block_device : d.volume_size]) == 500 && one([for d in aws_instance.host["core"].ebs_block_device : d.volume_size]) == 50
    error_message = "node data volume as configured, service hosts 50 GB"
  }
}

run "exposure_per_role" {
  command = apply

  assert {
    condition     = toset(keys(aws_security_group.public)) == toset(["stratum", "proxy", "web", "node_p2p"])
    error_message = "public groups: stratum, proxy, web (the miners page), node_p2p"
  }
  assert {
    condition = alltrue([for k in ["stratum-1", "stratum-2"] : contains(aws_instance.host[k].vpc_security_group_ids, aws_security_group.public["stratum"].id)]) && !contains(
    aws_instance.host["node"].vpc_security_group_ids, aws_security_group.public["stratum"].id)
    error_message = "stratum is public on the stratum hosts only"
  }
  assert {
    condition     = length(aws_instance.host["core"].vpc_security_group_ids) == 3 && contains(aws_instance.host["core"].vpc_security_group_ids, aws_security_group.public["web"].id) && length(aws_instance.host["mon"].vpc_security_group_ids) == 2
    error_message = "the Kafka/Redis/accounting host is in the ssh and internal groups and the miners' page's; the monitoring host in ssh and internal only"
  }
  assert {
    condition     = contains(aws_instance.host["proxy"].vpc_security_group_ids, aws_security_group.public["proxy"].id) && one(one(aws_security_group.public["proxy"].ingress).cidr_blocks[*]) == "0.0.0.0/0" && one(aws_security_group.public["proxy"].ingress).from_port == 3333
    error_message = "the V1 proxy port is public on the proxy host"
  }
  assert {
    condition = alltrue(flatten([for p in [8114, 18114, 8100, 8180, 6379, 9092, 9093, 9090, 3000, 9100, 9121, 9308] : [
      for sg in concat([aws_security_group.ssh, aws_security_group.internal], values(aws_security_group.public)) : [for r in sg.ingress :
    length(coalesce(r.cidr_blocks, [])) == 0 || !(r.protocol == "-1" || (r.from_port <= p && p <= r.to_port))]]]))
    error_message = "a private port (node RPC, Kafka, Redis, metrics) is reachable from an address range"
  }
}

run "inventory_groups" {
  command = apply

  assert {
    condition     = keys(output.inventory.all.children.stratum.hosts) == ["stratum-1", "stratum-2"] && keys(output.inventory.all.children.kafka.hosts) == ["core"] && keys(output.inventory.all.children.ckb_node.hosts) == ["node"]
    error_message = "hosts in their role groups"
  }
  assert {
    condition     = toset(keys(output.inventory.all.children.pool.hosts)) == toset(["core", "stratum-1", "stratum-2"]) && keys(output.inventory.all.children.monitoring.hosts) == ["mon"] && keys(output.inventory.all.children.proxy.hosts) == ["proxy"]
    error_message = "pool holds every pool-role host; proxy and monitoring hosts in their groups"
  }
  assert {
    condition     = output.inventory.all.vars.btcpool_kafka_bootstrap == "${aws_instance.host["core"].private_ip}:9092" && output.inventory.all.vars.btcpool_redis_host == aws_instance.host["core"].private_ip
    error_message = "services are addressed privately"
  }
  assert {
    condition     = length(output.stratum_endpoints) == 2 && length(output.inventory.all.hosts) == 6
    error_message = "two stratum endpoints, six inventory hosts"
  }
}
