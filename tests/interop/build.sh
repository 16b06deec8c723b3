#!/usr/bin/env bash
# Build the SRI interop harness (tests/interop) once into a cache outside the repository.
# Idempotent: cargo only rebuilds what changed. Prints the binary's path on the last line.
# Used by `make deps`; tests/interop/test_sri_interop.py finds the binary at the same path
# (or at $SV2_INTEROP_BIN).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CARGO_TARGET_DIR="${SV2_INTEROP_TARGET_DIR:-$HOME/.cache/ckbpool/interop-target}"
mkdir -p "$CARGO_TARGET_DIR"
if ! command -v cargo >/dev/null 2>&1; then
    echo "build.sh: cargo not found (install a Rust toolchain)" >&2
    exit 1
fi
# --locked: build exactly the committed Cargo.lock, never re-resolve.
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
echo "$CARGO_TARGET_DIR/release/sv2-interop"
