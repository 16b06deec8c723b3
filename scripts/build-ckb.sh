#!/usr/bin/env bash
# Build the pinned ckb binary from crates.io into ~/.cache/ckbpool (idempotent).
# Why from source: CI and these machines reach crates.io but not GitHub release archives.
# Profile overrides cut the cold build on 2 cores (no LTO, many codegen units, no debug info).
set -euo pipefail
CKB_VERSION="${CKB_VERSION:-0.210.0}"
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
ROOT="$CACHE/ckb-$CKB_VERSION"
if [ -x "$ROOT/bin/ckb" ] && "$ROOT/bin/ckb" --version >/dev/null 2>&1; then
  echo "ckb $CKB_VERSION already built: $ROOT/bin/ckb"
  exit 0
fi
mkdir -p "$CACHE"
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256
export CARGO_PROFILE_RELEASE_DEBUG=0
export CARGO_PROFILE_RELEASE_INCREMENTAL=false
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CKB_OPT_LEVEL:-2}"
export CARGO_TARGET_DIR="$CACHE/ckb-target-$CKB_VERSION"
start=$(date +%s)
echo "building ckb $CKB_VERSION with cargo install (cold build takes a while on 2 cores)..."
cargo install ckb --version "$CKB_VERSION" --locked --root "$ROOT" --jobs "$(nproc)"
echo "ckb $CKB_VERSION built in $(( $(date +%s) - start ))s: $ROOT/bin/ckb"
