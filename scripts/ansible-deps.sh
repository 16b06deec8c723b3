#!/usr/bin/env bash
# Ansible toolchain for the btcpool role and the `hosts` target. Idempotent: a second run takes a second.
#   - pinned ansible-core, ansible-runner and ansible-lint from PyPI into the project venv (the CLI's
#     `deploy --target hosts` imports ansible_runner, and the role's render lookup imports ckbpool, so both
#     must live in the Python that runs ansible-playbook)
#   - Debian's nftables (`nft -c` checks the rendered firewall rulesets in the unit tests)
# The role itself needs no collection (ansible.builtin only), so nothing is fetched from Galaxy; see
# ansible/requirements.yml for how operators install the role by path or by name.
# Usage: scripts/ansible-deps.sh            (VENV=/path/to/venv to use another venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
CACHE="${CKBPOOL_CACHE:-$HOME/.cache/ckbpool}"
mkdir -p "$CACHE/logs"
start=$SECONDS
# keep these in step with ansible/README.md (minimum and tested versions) and the role's meta
PINS=(ansible-core==2.19.14 ansible-runner==2.4.3 ansible-lint==26.10.1)

[ -x "$VENV/bin/python" ] || { echo "ansible-deps: no venv at $VENV (run make venv first)" >&2; exit 1; }
need=()
for pin in "${PINS[@]}"; do
  name=${pin%%==*}; want=${pin##*==}
  have=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  [ "$have" = "$want" ] || need+=("$pin")
done
if [ ${#need[@]} -gt 0 ]; then
  "$VENV/bin/pip" install -q "${need[@]}" >"$CACHE/logs/ansible-deps.log" 2>&1 || {
    tail -n 30 "$CACHE/logs/ansible-deps.log" >&2; exit 1; }
fi
echo "ansible-deps: ${PINS[*]} present in $VENV"

if ! command -v nft >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null 2>&1 || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables; }
  else
    echo "ansible-deps: nft missing and not root: firewall ruleset checks will be skipped" >&2
  fi
fi
command -v nft >/dev/null && echo "ansible-deps: $(nft --version)"
echo "ansible-deps: done in $((SECONDS - start))s"
