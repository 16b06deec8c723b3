#!/usr/bin/env bash
# make deps: the heavy, cached parts. Idempotent: a warm cache makes this a few seconds.
# Prints each step's duration. Steps that only need the network/CPU run in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
mkdir -p "$CACHE/logs"

step() {  # step NAME CMD... : run, time, and keep the log in the cache
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$CACHE/logs/$name.log" 2>&1; then
    echo "deps: $name ok in $((SECONDS - start))s"
  else
    echo "deps: $name FAILED after $((SECONDS - start))s; last lines of $CACHE/logs/$name.log:" >&2
    tail -n 40 "$CACHE/logs/$name.log" >&2
    return 1
  fi
}

apt_packages() {
  local want=(clang libclang-dev libssl-dev pkg-config redis-server prometheus prometheus-node-exporter prometheus-redis-exporter etcd-server)
  local missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  command -v java >/dev/null || missing+=(default-jdk-headless)  # Kafka 4.x needs Java >= 17
  command -v mvn >/dev/null || missing+=(maven)                  # fetches the Kafka jars
  # the payouts ledger's real database in tests (tests/support/postgres.py: initdb + pg_ctl of a throwaway server)
  dpkg -s postgresql-15 >/dev/null 2>&1 || missing+=(postgresql-15)
  # the miners' page tested in a real browser (tests/integration/test_web_browser.py): Debian's Chromium, headless,
  # driven by Selenium through Debian's chromedriver (a test tool's own browser download cannot work here)
  for pkg in chromium chromium-driver; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install ${missing[*]}" >&2; return 1; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  echo "apt packages present: ${want[*]}"
}

total=$SECONDS
step apt apt_packages
pids=()
step ckb bash scripts/build-ckb.sh & pids+=($!)
step kafka bash scripts/kafka-deps.sh & pids+=($!)
step docker bash scripts/docker-deps.sh & pids+=($!)
step terraform bash scripts/terraform-deps.sh & pids+=($!)
step registry bash scripts/registry-deps.sh & pids+=($!)   # OCI registry for the images.registry e2e test
step k8s bash scripts/k8s-deps.sh & pids+=($!)   # helm + kube-apiserver (Go builds) for the k8s chart/target tests
step tofu bash scripts/tofu-deps.sh & pids+=($!)           # OpenTofu: the Terraform tests run on tofu as well
step compose bash scripts/compose-deps.sh & pids+=($!)     # the Compose v2+ plugin: the compose e2e on it and v1
step kafka-exporter bash scripts/kafka-exporter-deps.sh & pids+=($!)  # the exporter binary: its secret-not-in-argv test
if [ -f tests/interop/build.sh ]; then
  step sri-interop bash tests/interop/build.sh & pids+=($!)
fi
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
step ansible bash scripts/ansible-deps.sh || rc=1   # after the parallel block: it installs into .venv
echo "deps: all done in $((SECONDS - total))s (rc=$rc)"
exit $rc
