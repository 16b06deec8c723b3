output "inventory" {
  description = "Ansible YAML/JSON inventory: all.hosts (ansible_host, ansible_user, private_ip, public_ip), all.vars (service addresses), all.children.<group>.hosts."
  value       = local.inventory

  precondition {
    condition     = alltrue(flatten([for g, keys in var.groups : [for k in keys : contains(keys(var.hosts), k)]]))
    error_message = "groups name a host that is not in hosts."
  }
}

output "inventory_ini" {
  description = "The same inventory in INI form (ansible-playbook -i inventory.ini)."
  value       = join("\n", local.ini_lines)
}
