#!/usr/bin/env bash
# An OCI image registry (CNCF distribution, the `registry` program) for the e2e tests of `images.registry`: the
# hosts target pushes the pool image there and the test hosts pull it by digest. No registry is reachable from our
# machines, and the official registry image cannot be pulled, so it is built from its Go module instead:
#
#   $CKBPOOL_CACHE/bin/registry      (go install github.com/distribution/distribution/v3/cmd/registry@VERSION)
#
# Idempotent: a binary built from the pinned module version (read back with `go version -m`) is kept, so a warm
# cache costs well under a second. CKBPOOL_REGISTRY_VERSION picks another version. Without a Go toolchain the
# step says so and succeeds: the registry e2e test then skips.
set -euo pipefail
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
VERSION="${CKBPOOL_REGISTRY_VERSION:-v3.0.0}"
MODULE="github.com/distribution/distribution/v3"
BIN="$CACHE/bin/registry"
mkdir -p "$CACHE/bin" "$CACHE/logs"
start=$SECONDS

say() { echo "registry-deps: $*"; }

if [ -x "$BIN" ] && command -v go >/dev/null &&
    go version -m "$BIN" 2>/dev/null | grep -E "^\s+mod\s+$MODULE\s+$VERSION(\s|$)" >/dev/null; then
  say "registry $VERSION present ($((SECONDS - start))s)"
  exit 0
fi
if ! command -v go >/dev/null; then
  say "registry MISSING: no Go toolchain (the registry e2e test will skip)"
  exit 0
fi
# one package at a time (-p 1): the machines have two cores, shared with whatever else `make deps` builds
if GOBIN="$CACHE/bin" nice go install -p 1 "$MODULE/cmd/registry@$VERSION"; then
  say "registry $VERSION built in $((SECONDS - start))s: $BIN"
else
  say "registry build FAILED after $((SECONDS - start))s"
  exit 1
fi
