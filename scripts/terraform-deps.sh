#!/usr/bin/env bash
# Terraform providers for the terraform/ modules, in a local filesystem mirror outside the clone, plus the CLI
# configuration that points Terraform/OpenTofu at it (no registry is reachable from our machines).
#
#   mirror:  ${CKBPOOL_CACHE:-~/.cache/ckbpool}/tf-plugins/registry.terraform.io/<ns>/<type>/<ver>/linux_amd64/
#   config:  ${CKBPOOL_CACHE:-~/.cache/ckbpool}/terraformrc     (export TF_CLI_CONFIG_FILE=<that> to use it by hand;
#            ckbpool's runner and tests set it themselves)
#
# Idempotent: a warm cache costs well under a second. Prints what it did and how long each step took.
#   hashicorp/aws       from $TF_PLUGINS_SRC (default /opt/tf-plugins) when that mirror has it; linked, not copied
#   aliyun/alicloud     from the cache when present; otherwise built from its Go module when the Go module proxy
#                       serves it. It refuses that module's source ("403 ... This module version is not available"),
#                       so on our machines the alicloud provider is reported missing and its tests skip.
# tflint (optional):    `go install` from the Go module proxy into the cache (its built-in terraform ruleset works
#                       offline; the AWS ruleset plugin is not served).
# checkov (optional):   its own venv in the cache (its pinned boto3/botocore conflict with ours).
set -euo pipefail
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
MIRROR="$CACHE/tf-plugins"
SRC="${TF_PLUGINS_SRC:-/opt/tf-plugins}"
AWS_VERSION="${CKBPOOL_TF_AWS_VERSION:-5.100.0}"
ALICLOUD_VERSION="${CKBPOOL_TF_ALICLOUD_VERSION:-1.239.0}"
TFLINT_VERSION="${CKBPOOL_TFLINT_VERSION:-v0.64.0}"
CHECKOV_VERSION="${CKBPOOL_CHECKOV_VERSION:-3.3.30}"
PLATFORM="linux_amd64"
mkdir -p "$MIRROR" "$CACHE/logs" "$CACHE/bin"
total=$SECONDS

say() { echo "terraform-deps: $*"; }

provider_aws() {
  local start=$SECONDS
  local rel="registry.terraform.io/hashicorp/aws/$AWS_VERSION/$PLATFORM"
  local want="$MIRROR/$rel/terraform-provider-aws_v${AWS_VERSION}_x5"
  if [ -x "$want" ]; then
    say "hashicorp/aws $AWS_VERSION present ($((SECONDS - start))s)"
    return 0
  fi
  if [ -x "$SRC/$rel/terraform-provider-aws_v${AWS_VERSION}_x5" ]; then
    mkdir -p "$MIRROR/$rel"
    # hard link when on the same filesystem (no 675 MB copy), else a symlink; Terraform follows both
    ln -f "$SRC/$rel/terraform-provider-aws_v${AWS_VERSION}_x5" "$want" 2>/dev/null ||
      ln -sf "$SRC/$rel/terraform-provider-aws_v${AWS_VERSION}_x5" "$want"
    # OpenTofu looks providers up under registry.opentofu.org: the same binary serves both
    mkdir -p "$MIRROR/${rel/registry.terraform.io/registry.opentofu.org}"
    ln -f "$want" "$MIRROR/${rel/registry.terraform.io/registry.opentofu.org}/" 2>/dev/null ||
      ln -sf "$want" "$MIRROR/${rel/registry.terraform.io/registry.opentofu.org}/"
    say "hashicorp/aws $AWS_VERSION linked from $SRC ($((SECONDS - start))s)"
    return 0
  fi
  say "hashicorp/aws $AWS_VERSION MISSING: not in $SRC, and the Go module proxy refuses its source (403 for v5.x)," \
    "so it cannot be built here; terraform/aws validate/test and the moto test will skip ($((SECONDS - start))s)"
}

provider_alicloud() {
  local start=$SECONDS
  local rel="registry.terraform.io/aliyun/alicloud/$ALICLOUD_VERSION/$PLATFORM"
  local want="$MIRROR/$rel/terraform-provider-alicloud_v${ALICLOUD_VERSION}"
  if [ -x "$want" ]; then
    say "aliyun/alicloud $ALICLOUD_VERSION present ($((SECONDS - start))s)"
    return 0
  fi
  if ! command -v go >/dev/null; then
    say "aliyun/alicloud MISSING: no Go toolchain to build it ($((SECONDS - start))s)"
    return 0
  fi
  # go install refuses modules with replace directives: download the module source, then build inside it.
  local log="$CACHE/logs/tf-alicloud.log" dir
  if ! dir=$(go mod download -json "github.com/aliyun/terraform-provider-alicloud@v$ALICLOUD_VERSION" 2>"$log" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d.get("Error")) if d.get("Error") else print(d["Dir"])' 2>>"$log"); then
    say "aliyun/alicloud $ALICLOUD_VERSION MISSING: the Go module proxy does not serve its source:" \
      "$(grep -m1 -o '[0-9]\{3\} [A-Za-z]*' "$log")$(grep -m1 -o 'server response: .*' "$log" | sed 's/server response: /: /' | head -c 120) ($((SECONDS - start))s);" \
      "terraform/alicloud is checked by fmt, checkov and the provider-free topology tests only"
    return 0
  fi
  mkdir -p "$MIRROR/$rel"
  (cd "$dir" && GOFLAGS=-mod=mod nice go build -trimpath -ldflags "-s -w" -o "$want" .) >>"$log" 2>&1 || {
    say "aliyun/alicloud $ALICLOUD_VERSION build FAILED after $((SECONDS - start))s; see $log"
    rm -f "$want"
    return 0
  }
  say "aliyun/alicloud $ALICLOUD_VERSION built in $((SECONDS - start))s ($(du -h "$want" | cut -f1))"
}

tflint_bin() {
  local start=$SECONDS
  if [ -x "$CACHE/bin/tflint" ]; then
    say "tflint present ($((SECONDS - start))s)"
    return 0
  fi
  command -v go >/dev/null || { say "tflint MISSING: no Go toolchain"; return 0; }
  if GOBIN="$CACHE/bin" nice go install "github.com/terraform-linters/tflint@$TFLINT_VERSION" \
    >"$CACHE/logs/tflint.log" 2>&1; then
    say "tflint $TFLINT_VERSION built in $((SECONDS - start))s"
  else
    say "tflint build FAILED after $((SECONDS - start))s; see $CACHE/logs/tflint.log"
  fi
}

checkov_venv() {
  local start=$SECONDS venv="$CACHE/checkov-venv"
  if [ -x "$venv/bin/checkov" ] && "$venv/bin/pip" show checkov 2>/dev/null | grep "^Version: $CHECKOV_VERSION$" >/dev/null; then
    say "checkov $CHECKOV_VERSION present ($((SECONDS - start))s)"
    return 0
  fi
  if python3 -m venv "$venv" >"$CACHE/logs/checkov.log" 2>&1 &&
    nice "$venv/bin/pip" install -q "checkov==$CHECKOV_VERSION" >>"$CACHE/logs/checkov.log" 2>&1; then
    say "checkov $CHECKOV_VERSION installed in $((SECONDS - start))s"
  else
    say "checkov install FAILED after $((SECONDS - start))s; see $CACHE/logs/checkov.log"
  fi
}

cli_config() {
  # Providers come only from the mirror: no registry is contacted, so nothing waits on an unreachable network.
  local rc="$CACHE/terraformrc" tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# written by scripts/terraform-deps.sh: providers from the local filesystem mirror only
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["registry.terraform.io/*/*", "registry.opentofu.org/*/*"]
  }
}
disable_checkpoint = true
EOF
  if cmp -s "$tmp" "$rc" 2>/dev/null; then rm -f "$tmp"; else mv "$tmp" "$rc"; fi
  say "CLI configuration $rc"
}

provider_aws
provider_alicloud
tflint_bin
checkov_venv
cli_config
say "done in $((SECONDS - total))s"
