# tflint with its built-in terraform ruleset only: the provider rulesets (aws, alicloud) are plugins that cannot
# be installed here (not served by any registry we reach), so only the language rules run.
plugin "terraform" {
  enabled = true
  preset  = "all"
}
