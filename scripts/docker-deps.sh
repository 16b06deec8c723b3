#!/usr/bin/env bash
# Docker for the compose target's tests, on a machine with no image registry. Idempotent and cached:
#   1. Debian's docker.io (engine), docker-compose (v1.29) and debootstrap, when missing (needs root)
#   2. dockerd started in the background when its socket does not answer (log: $CACHE/logs/dockerd.log)
#   3. the base image local/debian:bookworm from `debootstrap --variant=minbase` -> `docker import`
#      (rootfs tarball cached in $CACHE/docker/, so a restarted engine re-imports it in seconds)
# The images of the stack itself (pool, ckb, redis, ...) are built FROM that base by
# `python -m tests.e2e.images` (the compose e2e test does it), with wheels built on the host.
# Usage: scripts/docker-deps.sh [--no-start]   (--no-start: install packages only)
set -euo pipefail
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
BASE_IMAGE="${CKBPOOL_BASE_IMAGE:-local/debian:bookworm}"
SUITE="${CKBPOOL_BASE_SUITE:-bookworm}"
MIRROR="${CKBPOOL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$CACHE/logs" "$CACHE/docker"
start=$SECONDS

# 1. packages -----------------------------------------------------------------------------------------
want=(docker.io docker-compose debootstrap iptables)
missing=()
for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "docker-deps: need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "docker-deps: packages present: ${want[*]}"
[ "${1:-}" = "--no-start" ] && exit 0

# Debian's engine client is /usr/bin/docker; prefer it over any other docker CLI on PATH.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER="$(command -v docker)"

# 2. engine -------------------------------------------------------------------------------------------
if ! "$DOCKER" info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then echo "docker-deps: dockerd is not running and we are not root" >&2; exit 1; fi
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker || true
  fi
  if ! "$DOCKER" info >/dev/null 2>&1; then
    # no systemd here: run dockerd ourselves, detached, logging into the cache
    if command -v update-alternatives >/dev/null && [ -x /usr/sbin/iptables-legacy ] \
        && ! iptables -L >/dev/null 2>&1; then
      update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
    fi
    nohup setsid dockerd >"$CACHE/logs/dockerd.log" 2>&1 </dev/null &
    echo $! >"$CACHE/docker/dockerd.pid"
    for _ in $(seq 1 120); do
      "$DOCKER" info >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  "$DOCKER" info >/dev/null 2>&1 || {
    echo "docker-deps: dockerd did not come up; last lines of $CACHE/logs/dockerd.log:" >&2
    tail -n 30 "$CACHE/logs/dockerd.log" >&2
    exit 1
  }
fi
echo "docker-deps: engine $("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null) up" \
  "(storage driver $("$DOCKER" info --format '{{.Driver}}' 2>/dev/null))"

# 3. base image ---------------------------------------------------------------------------------------
# A debootstrap killed mid-run (an interrupted `make deps`) leaves its chroot's /proc (and maybe /sys) mounted:
# a plain rm -rf of the old root would then walk into the host's /proc. Unmount what is under it, deepest first,
# and never let rm cross into another file system.
clear_root() {
  local dir=$1 mnt
  [ -e "$dir" ] || return 0
  for mnt in $(awk -v d="$(realpath "$dir")" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  done
  rm -rf --one-file-system "$dir"
}
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  tarball="$CACHE/docker/debian-$SUITE-minbase.tar"
  if [ ! -s "$tarball" ]; then
    root="$CACHE/docker/rootfs-$SUITE"
    clear_root "$root"
    echo "docker-deps: debootstrap --variant=minbase $SUITE (log: $CACHE/logs/debootstrap.log)"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$CACHE/logs/debootstrap.log" 2>&1 || {
      tail -n 30 "$CACHE/logs/debootstrap.log" >&2; exit 1; }
    # point apt inside images at the same mirror, and keep images small
    echo "deb $MIRROR $SUITE main" >"$root/etc/apt/sources.list"
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    clear_root "$root"
  fi
  "$DOCKER" import "$tarball" "$BASE_IMAGE" >/dev/null
fi
echo "docker-deps: base image $BASE_IMAGE present; done in $((SECONDS - start))s"
