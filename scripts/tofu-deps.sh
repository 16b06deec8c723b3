#!/usr/bin/env bash
# OpenTofu (`tofu`), so the Terraform tests and the moto e2e also run on OpenTofu, not only on `terraform`.
# No release download is reachable from our machines; the Go module proxy serves OpenTofu's source, so it is built:
#
#   $CKBPOOL_CACHE/bin/tofu      (github.com/opentofu/opentofu/cmd/tofu at CKBPOOL_TOFU_VERSION, default v1.12.6)
#
# `go install mod@version` refuses OpenTofu (its go.mod has a replace directive for hcl/v2), so the module source is
# downloaded and built inside it, with the release's ldflag (version.dev=no: `tofu version` prints v1.12.6, not -dev).
# Providers: scripts/terraform-deps.sh links each mirrored provider under registry.opentofu.org as well, and both
# binaries read the same CLI configuration (terraformrc), so no registry is contacted.
#
# Idempotent: a binary whose `tofu version` names the pinned version is kept (well under a second). One package at
# a time (-p 1) under nice: the machines have two cores, shared with the ckb build in `make deps`. Without a Go
# toolchain the step says so and succeeds; the tofu half of the Terraform tests then skips and says why.
set -euo pipefail
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
VERSION="${CKBPOOL_TOFU_VERSION:-v1.12.6}"
MODULE="github.com/opentofu/opentofu"
BIN="$CACHE/bin/tofu"
LOG="$CACHE/logs/tofu-build.log"
mkdir -p "$CACHE/bin" "$CACHE/logs"
start=$SECONDS

say() { echo "tofu-deps: $*"; }

# (any line: tofu prints CLI-configuration warnings first when TF_CLI_CONFIG_FILE names a missing file)
installed() { "$1" version 2>/dev/null | grep -m1 -o '^OpenTofu v[^ ]*' || true; }
if [ -x "$BIN" ] && [ "$(installed "$BIN")" = "OpenTofu $VERSION" ]; then
  say "OpenTofu $VERSION present ($((SECONDS - start))s): $BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  say "tofu MISSING: no Go toolchain (the Terraform tests run on terraform only and say tofu is missing)"
  exit 0
fi
dir=$(go mod download -json "$MODULE@$VERSION" 2>"$LOG" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])' 2>>"$LOG") || {
  say "OpenTofu $VERSION: the Go module proxy did not serve its source after $((SECONDS - start))s; see $LOG"
  exit 1
}
say "OpenTofu $VERSION source in $dir ($((SECONDS - start))s); building"
tmp="$BIN.tmp.$$"
trap 'rm -f "$tmp"' EXIT
if (cd "$dir" && GOFLAGS="-mod=mod -buildvcs=false" nice go build -p 1 -trimpath \
    -ldflags "-s -w -X $MODULE/version.dev=no" -o "$tmp" ./cmd/tofu) >>"$LOG" 2>&1; then
  mv -f "$tmp" "$BIN"
  say "OpenTofu $VERSION built in $((SECONDS - start))s: $BIN ($(installed "$BIN"))"
else
  say "OpenTofu $VERSION build FAILED after $((SECONDS - start))s; last lines of $LOG:"
  tail -n 20 "$LOG"
  exit 1
fi
