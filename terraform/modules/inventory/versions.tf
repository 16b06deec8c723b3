terraform {
  # Pure logic, no provider.
  required_version = ">= 1.7.0"
}
