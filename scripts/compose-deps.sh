#!/usr/bin/env bash
# The Docker Compose v2+ CLI plugin (`docker compose`), so the compose e2e runs on it as well as on docker-compose v1
# (Debian's /usr/bin/docker-compose). No release download is reachable here; the Go module proxy serves its source:
#
#   $CKBPOOL_CACHE/bin/docker-compose-v5    (github.com/docker/compose/v5/cmd at CKBPOOL_COMPOSE_VERSION, v5.6.0)
#   ~/.docker/cli-plugins/docker-compose    a symlink to it, where the docker CLI looks for plugins
#                                           ($DOCKER_CONFIG/cli-plugins when DOCKER_CONFIG is set)
#
# v5.6.0 is the newest release this machine's Go (1.26.8) builds; v5.7.x needs a newer Go toolchain.
# The plugin link makes `docker compose` work for the docker CLI: ckbpool's compose_command() prefers it over
# docker-compose v1 when it answers, and CKBPOOL_COMPOSE=docker-compose still picks v1 (the tests pick each
# explicitly). CKBPOOL_COMPOSE_PLUGIN_LINK=0 builds the binary without linking it as a plugin.
#
# Idempotent: a binary whose `version --short` names the pinned version is kept (well under a second). One package at
# a time (-p 1) under nice: two cores, shared with the ckb build in `make deps`. Without a Go toolchain the step
# says so and succeeds; the plugin half of the compose e2e then skips and says why.
set -euo pipefail
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
VERSION="${CKBPOOL_COMPOSE_VERSION:-v5.6.0}"
MODULE="github.com/docker/compose/v5"
BIN="$CACHE/bin/docker-compose-v5"
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
LOG="$CACHE/logs/compose-build.log"
mkdir -p "$CACHE/bin" "$CACHE/logs"
start=$SECONDS

say() { echo "compose-deps: $*"; }

link_plugin() {
  [ "${CKBPOOL_COMPOSE_PLUGIN_LINK:-1}" = 1 ] || return 0
  mkdir -p "$PLUGIN_DIR"
  if [ "$(readlink "$PLUGIN_DIR/docker-compose" 2>/dev/null)" != "$BIN" ]; then
    ln -sfn "$BIN" "$PLUGIN_DIR/docker-compose"
  fi
  say "CLI plugin $PLUGIN_DIR/docker-compose -> $BIN"
}

if [ -x "$BIN" ] && [ "$("$BIN" version --short 2>/dev/null)" = "${VERSION#v}" ]; then
  say "Compose $VERSION present ($((SECONDS - start))s): $BIN"
  link_plugin
  exit 0
fi
if ! command -v go >/dev/null; then
  say "Compose plugin MISSING: no Go toolchain (the compose e2e runs on docker-compose v1 only)"
  exit 0
fi
dir=$(go mod download -json "$MODULE@$VERSION" 2>"$LOG" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])' 2>>"$LOG") || {
  say "Compose $VERSION: the Go module proxy did not serve its source after $((SECONDS - start))s; see $LOG"
  exit 1
}
say "Compose $VERSION source in $dir ($((SECONDS - start))s); building"
tmp="$BIN.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# the release's ldflag: `docker compose version` prints v5.6.0 rather than "dev"
if (cd "$dir" && GOFLAGS="-mod=mod -buildvcs=false" nice go build -p 1 -trimpath \
    -ldflags "-s -w -X $MODULE/internal.Version=$VERSION" -o "$tmp" ./cmd) >>"$LOG" 2>&1; then
  mv -f "$tmp" "$BIN"
  say "Compose $VERSION built in $((SECONDS - start))s: $BIN ($("$BIN" version | head -n1))"
else
  say "Compose $VERSION build FAILED after $((SECONDS - start))s; last lines of $LOG:"
  tail -n 20 "$LOG"
  exit 1
fi
link_plugin
