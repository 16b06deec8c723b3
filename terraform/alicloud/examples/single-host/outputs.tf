output "hosts" {
  description = "Created hosts with their roles and addresses."
  value       = module.ckbpool.hosts
}

output "stratum_endpoints" {
  description = "Where miners connect."
  value       = module.ckbpool.stratum_endpoints
}

output "inventory" {
  description = "Ansible inventory (YAML/JSON form)."
  value       = module.ckbpool.inventory
}

output "inventory_ini" {
  description = "Ansible inventory (INI form)."
  value       = module.ckbpool.inventory_ini
}
