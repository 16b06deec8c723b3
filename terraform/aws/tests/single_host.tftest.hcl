# No cloud account: the AWS provider is mocked (it still needs the provider binary for its schema).

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["us-east-1a", "us-east-1b"] }
  }
  mock_data "aws_ami" {
    defaults = { id = "ami-0123456789abcdef0" }
  }
}

variables {
  name              = "pool"
  region            = "us-east-1"
  allowed_ssh_cidrs = ["198.51.100.7/32", "203.0.113.0/24"]
  ssh_public_key    = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
  # Terraform 1.11's test harness hands an unset ephemeral variable to apply runs and then refuses it ("was not set
  # during the plan phase"): give the managed Kafka password a value, unused while managed_kafka is false
  managed_kafka_password = "UnusedWhileKafkaIsNotManaged0000"
}

run "security_rules" {
  command = plan

  # SSH: one rule, port 22, exactly the admin CIDRs
  assert {
    condition = length(aws_security_group.ssh.ingress) == 1 && alltrue([for r in aws_security_group.ssh.ingress :
    r.from_port == 22 && r.to_port == 22 && r.protocol == "tcp" && toset(r.cidr_blocks) == toset(var.allowed_ssh_cidrs) && r.self != true])
    error_message = "SSH must be open to the admin CIDRs only"
  }
  # no other group lets port 22 in from an address range
  assert {
    condition = alltrue(flatten([for sg in concat([aws_security_group.internal], values(aws_security_group.public)) : [for r in sg.ingress :
    length(coalesce(r.cidr_blocks, [])) == 0 || !(r.protocol == "-1" || (r.from_port <= 22 && 22 <= r.to_port))]]))
    error_message = "only the ssh group may open port 22"
  }
  # stratum and the miners page are public, and so is the node's p2p port; nothing else
  assert {
    condition     = toset(keys(aws_security_group.public)) == toset(["stratum", "web", "node_p2p"])
    error_message = "public groups: stratum, web and node_p2p on a single host without the proxy"
  }
  assert {
    condition = alltrue(flatten([for sg in values(aws_security_group.public) : [for r in sg.ingress :
    r.protocol == "tcp" && r.from_port == r.to_port && contains([34255, 8080, 8115], r.from_port) && toset(r.cidr_blocks) == toset(["0.0.0.0/0"])]]))
    error_message = "public groups open exactly one TCP port each: 34255 (stratum), 8080 (the miners page) or 8115 (p2p)"
  }
  # node RPC, Kafka, Redis, metrics, Prometheus, Grafana, pool HTTP: never reachable from an address range
  assert {
    condition = alltrue(flatten([for p in [8114, 18114, 8100, 8180, 6379, 9092, 9093, 9090, 3000, 9100, 9121, 9308] : [
      for sg in concat([aws_security_group.ssh, aws_security_group.internal], values(aws_security_group.public)) : [for r in sg.ingress :
    length(coalesce(r.cidr_blocks, [])) == 0 || !(r.protocol == "-1" || (r.from_port <= p && p <= r.to_port))]]]))
    error_message = "a private port (node RPC, Kafka, Redis, metrics) is reachable from an address range"
  }
  assert {
    condition = alltrue([for r in aws_security_group.internal.ingress : r.self == true && length(coalesce(r.cidr_blocks, [])) == 0 &&
    length(coalesce(r.ipv6_cidr_blocks, [])) == 0])
    error_message = "the internal group admits only the deployment's own hosts"
  }
  assert {
    condition     = aws_subnet.hosts.map_public_ip_on_launch == false && aws_subnet.hosts.availability_zone == "us-east-1a"
    error_message = "the subnet is in the first zone and hands out no public address by itself"
  }
}

run "one_host_with_every_role" {
  command = apply

  assert {
    condition     = length(aws_instance.host) == 1 && toset(keys(aws_instance.host)) == toset(["pool"])
    error_message = "single host by default"
  }
  assert {
    condition     = output.role_counts == { ckb_node = 1, pool = 1, jobmaker = 1, stratum = 1, blockmaker = 1, accounting = 1, redis = 1, kafka = 0, proxy = 0, monitoring = 1 }
    error_message = "the single host carries ckb_node, pool, redis and monitoring"
  }
  assert {
    condition = toset(aws_instance.host["pool"].vpc_security_group_ids) == toset([aws_security_group.ssh.id, aws_security_group.internal.id,
    aws_security_group.public["stratum"].id, aws_security_group.public["web"].id, aws_security_group.public["node_p2p"].id])
    error_message = "the host is in the ssh, internal, stratum, web and p2p groups"
  }
  assert {
    condition = one([for d in aws_instance.host["pool"].ebs_block_device : d.volume_size]) == 300 && aws_instance.host["pool"].root_block_device[0].volume_size == 30 && alltrue([
    for d in aws_instance.host["pool"].ebs_block_device : d.encrypted])
    error_message = "a mainnet node gets an encrypted 300 GB data volume and a 30 GB root volume"
  }
  assert {
    condition     = aws_instance.host["pool"].metadata_options[0].http_tokens == "required" && aws_instance.host["pool"].key_name == "pool-admin"
    error_message = "IMDSv2 only; the admin key pair is installed"
  }
  # the inventory: every role group, the host in each of its groups, reached on its public address
  assert {
    condition     = toset(keys(output.inventory.all.children)) == toset(["ckb_node", "pool", "jobmaker", "stratum", "blockmaker", "accounting", "redis", "kafka", "proxy", "monitoring"])
    error_message = "inventory groups as in the btcpool role"
  }
  assert {
    condition = alltrue([for g in ["ckb_node", "pool", "redis", "monitoring"] : keys(output.inventory.all.children[g].hosts) == ["pool"]]) && length(output.inventory.all.children.kafka.hosts) == 0 && length(
    output.inventory.all.children.proxy.hosts) == 0
    error_message = "the host is in ckb_node, pool, redis and monitoring; kafka and proxy are empty"
  }
  assert {
    condition     = output.inventory.all.hosts["pool"].ansible_host == aws_instance.host["pool"].public_ip && output.inventory.all.hosts["pool"].ansible_user == "ubuntu" && output.inventory.all.vars.btcpool_ckb_rpc_host == aws_instance.host["pool"].private_ip
    error_message = "Ansible connects to the public address; services use the private one"
  }
  assert {
    condition     = output.stratum_endpoints == ["${aws_instance.host["pool"].public_ip}:34255"]
    error_message = "one stratum endpoint"
  }
}
