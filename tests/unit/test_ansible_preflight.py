"""The btcpool role fails early, with one clear message, before any host changes: the role's preflight tasks
(``site.yml --tags btcpool_preflight``) run against this machine over the local connection, with the facts the
checks read overridden by extra vars (``btcpool__os_name``, ``btcpool__memtotal_mb``, ...), and a real socket
holding a port. Bad variables (a wrong type, a missing required one) fail in argument validation, naming the
variable, when the whole role runs: nothing after it runs and nothing is created.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckbpool.cli.app import app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
MAINNET_ADDRESS = "ckb1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw7qkdnnclfkg59uzn8umtfd2kwxceqxwquc4"
# a supported platform, whatever this machine runs
SUPPORTED = {"btcpool__os_name": "Debian", "btcpool__os_version": "12"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-core is not installed (scripts/ansible-deps.sh)")
    base = tmp_path_factory.mktemp("preflight")
    # --kafka: the secured bus's CA and passwords (tests turn btcpool_kafka_enabled on across hosts)
    result = CliRunner().invoke(
        app, ["init", "-c", str(base / "ckbpool.yaml"), "-y", "--name", "pf", "--no-miner", "--kafka"]
    )
    assert result.exit_code == 0, result.stderr
    (base / "inventory.ini").write_text(
        f"[all]\ntesthost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
        + "".join(f"[{g}]\ntesthost\n" for g in ("ckb_node", "pool", "redis", "monitoring"))
    )
    return base


def base_vars(workdir: Path) -> dict[str, Any]:
    return {
        "btcpool_pool_name": "pf",
        "btcpool_network": "dev",
        "btcpool_payout_address": TESTNET_ADDRESS,
        "btcpool_secrets_dir": str(workdir / "secrets"),
        "btcpool_install_dir": str(workdir / "install"),
        "btcpool_bind_public": "127.0.0.1",
        "btcpool_grafana_enabled": False,
        "btcpool_ports": {k: free_port() for k in ("stratum", "pool_http", "node_rpc", "prometheus")},
        "btcpool_preflight_min_disk_gb": {"mainnet": 1},  # whatever this machine has free
        **SUPPORTED,
    }


def run_role(workdir: Path, extra: dict[str, Any], *, tags: str | None = "btcpool_preflight",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    vars_file = workdir / f"vars-{time.monotonic_ns()}.json"
    vars_file.write_text(json.dumps(extra))
    cmd = [str(BIN / "ansible-playbook"), "-i", str(workdir / "inventory.ini"), str(ANSIBLE / "site.yml"),
           "-e", f"@{vars_file}"]  # fmt: skip
    if tags:
        cmd += ["--tags", tags]
    environ = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1"}
    environ.update(ANSIBLE_HOST_PATTERN_MISMATCH="ignore", ANSIBLE_RETRY_FILES_ENABLED="0", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=environ)


def failure(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    return " ".join((result.stdout + result.stderr).split())  # one line: messages wrap in the output


def test_good_variables_pass_every_check(workdir: Path) -> None:
    start = time.monotonic()
    result = run_role(workdir, base_vars(workdir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed=0" in result.stdout
    assert not (workdir / "install").exists()  # preflight changes nothing
    print(f"preflight passes in {time.monotonic() - start:.1f}s")


def test_old_ansible_core(workdir: Path) -> None:
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool__ansible_version": "2.14.3"}))
    assert "ansible-core 2.14.3 is older than 2.17.0, the oldest the btcpool role supports" in out


def test_unsupported_os(workdir: Path) -> None:
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool__os_name": "CentOS", "btcpool__os_version": "9"}))
    assert "testhost runs CentOS 9; the btcpool role supports Debian 12 and Ubuntu 22.04 / 24.04" in out
    out = failure(
        run_role(workdir, {**base_vars(workdir), "btcpool__os_name": "Ubuntu", "btcpool__os_version": "20.04"})
    )
    assert "testhost runs Ubuntu 20.04;" in out


def test_too_little_memory(workdir: Path) -> None:
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool__memtotal_mb": 512}))
    assert "testhost has 512 MB of memory; the stack needs at least 1800 MB (btcpool_preflight_min_memory_mb)" in out


def test_too_little_disk(workdir: Path) -> None:
    mounts = [{"mount": "/", "size_available": 3 * 1024**3}, {"mount": "/boot", "size_available": 10**12}]
    variables = {**base_vars(workdir), "btcpool_network": "testnet", "btcpool__mounts": mounts}
    out = failure(run_role(workdir, {**variables, "btcpool_preflight_min_disk_gb": {}}))
    assert "testhost has 3.0 GB free on /; a testnet pool needs at least 60 GB there" in out
    assert "(btcpool_preflight_min_disk_gb.testnet)" in out


def test_payout_address_empty_or_of_another_network(workdir: Path) -> None:
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_payout_address": "  "}))
    assert "btcpool_payout_address is empty: set it to the ckt1... address that receives the block rewards" in out
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_network": "mainnet"}))
    assert f"btcpool_payout_address {TESTNET_ADDRESS} is not a mainnet address (those start with ckb1)" in out
    # a mainnet-looking address that does not decode: the config schema's check, with the variable's name
    broken = MAINNET_ADDRESS[:-4] + "qqqq"
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_network": "mainnet",
                                     "btcpool_payout_address": broken}))  # fmt: skip
    assert "btcpool_payout_address: not a valid CKB address" in out


def test_root_as_the_stacks_user_is_refused(workdir: Path) -> None:
    """The containers that read secrets run as btcpool_uid (CKBPOOL_UID): never root (issue 18, item 5)."""
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_uid": 0}))
    assert "btcpool_uid:btcpool_gid is 0:10001; the containers that read secrets" in out
    assert "must not be root: set an unprivileged uid and gid" in out
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_gid": 0}))
    assert "btcpool_uid:btcpool_gid is 10001:0;" in out


def test_port_taken_by_another_program(workdir: Path) -> None:
    variables = base_vars(workdir)
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        variables["btcpool_ports"] = {**variables["btcpool_ports"], "stratum": port}
        out = failure(run_role(workdir, variables))
    assert f"port {port} (pool) on 127.0.0.1 is already in use on testhost" in out
    assert "choose another port in btcpool_ports" in out


def test_inventory_and_secrets_problems(workdir: Path) -> None:
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_redis_enabled": False}))
    assert "inventory group redis: testhost is in it but btcpool_redis_enabled is false" in out
    empty = workdir / "no-secrets"
    empty.mkdir(exist_ok=True)
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_secrets_dir": str(empty)}))
    assert f"btcpool_secrets_dir: {empty}/authority.pub is missing (run `ckbpool init`)" in out


def test_docker_engine_expected_but_absent(workdir: Path) -> None:
    out = failure(run_role(workdir, {**base_vars(workdir), "btcpool_docker_install": False},
                           env={"DOCKER_HOST": f"unix://{workdir}/no-docker.sock"}))  # fmt: skip
    assert "btcpool_docker_install is false but the Docker engine on testhost does not answer" in out


def _validation_only(result: subprocess.CompletedProcess[str], workdir: Path) -> str:
    out = failure(result)
    assert "Validating arguments against arg spec 'main'" in out
    assert "Preflight |" not in out  # nothing after the validation ran
    assert not (workdir / "install").exists()
    return out


def test_wrong_type_fails_in_argument_validation_naming_the_variable(workdir: Path) -> None:
    variables = base_vars(workdir)
    variables["btcpool_ports"] = {**variables["btcpool_ports"], "stratum": "many"}
    out = _validation_only(run_role(workdir, variables, tags=None), workdir)
    assert "btcpool_ports" in out and "stratum" in out and "int" in out
    out = _validation_only(run_role(workdir, {**base_vars(workdir), "btcpool_firewall": "ufw"}, tags=None), workdir)
    assert "btcpool_firewall" in out and "nftables, none" in out


def test_missing_required_variable_fails_in_argument_validation(workdir: Path) -> None:
    variables = base_vars(workdir)
    del variables["btcpool_payout_address"]
    out = _validation_only(run_role(workdir, variables, tags=None), workdir)
    assert "missing required arguments: btcpool_payout_address" in out


@pytest.fixture(autouse=True)
def _no_stray_install(workdir: Path) -> Iterator[None]:
    yield
    assert not (workdir / "install").exists()


def _plan_three_hosts(workdir: Path, tmp_path: Path, host_vars: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Only the role's preflight over three inventory hosts on the local connection (``host_vars``: each host's
    extra inventory variables); each host's plan is written to ``tmp_path/<host>.json``."""
    inventory = tmp_path / "three.ini"
    local = f"ansible_connection=local ansible_python_interpreter={sys.executable}"
    inventory.write_text(
        "[all]\n"
        + "".join(f"{host} {extra} {local}\n" for host, extra in host_vars.items())
        + "[ckb_node]\nnode-1\n[kafka]\ndata-1\n[redis]\ndata-1\n[pool]\npool-1\n[monitoring]\npool-1\n"
    )
    playbook = tmp_path / "plan.yml"
    playbook.write_text(
        "- name: Plan\n  hosts: all\n  gather_facts: true\n  tasks:\n"
        "    - name: Preflight\n      ansible.builtin.include_role:\n        name: btcpool\n"
        "        tasks_from: preflight\n"
        "    - name: Write the plan\n      ansible.builtin.copy:\n"
        '        content: "{{ btcpool__plan | to_json }}"\n'
        f'        dest: "{tmp_path}/{{{{ inventory_hostname }}}}.json"\n'
        "        mode: '0644'\n      delegate_to: localhost\n"
    )
    variables = {**base_vars(workdir), "btcpool_kafka_enabled": True, "btcpool_network": "mainnet",
                 "btcpool_payout_address": MAINNET_ADDRESS}  # fmt: skip
    variables["btcpool_ports"] = {}  # the defaults: nothing listens on 10.231.0.x here
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(variables))
    environ = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1"}
    environ["ANSIBLE_ROLES_PATH"] = str(ANSIBLE / "roles")
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "-e", f"@{vars_file}"],
        capture_output=True, text=True, timeout=300, env=environ,
    )  # fmt: skip


def test_three_hosts_are_planned_through_ansible(workdir: Path, tmp_path: Path) -> None:
    """The multi-host plumbing of the role itself (inventory groups and every host's private address gathered
    from hostvars, the render lookup per host)."""
    result = _plan_three_hosts(
        workdir,
        tmp_path,
        {"node-1": "private_ip=10.231.0.1", "data-1": "private_ip=10.231.0.2", "pool-1": "private_ip=10.231.0.3"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    plans = {h: json.loads((tmp_path / f"{h}.json").read_text()) for h in ("node-1", "data-1", "pool-1")}
    # the node's RPC reaches pool-1 through its filter; the pool's Kafka and Redis across hosts are secured
    # (and the monitoring host on pool-1 scrapes the other two through their scrape gateways: HTTPS + token)
    assert plans["node-1"]["services"] == ["ckb", "rpc-filter", "node-exporter", "scrape-gateway"]
    assert plans["data-1"]["services"] == [
        "redis", "kafka", "node-exporter", "redis-exporter", "kafka-exporter", "scrape-gateway"
    ]  # fmt: skip
    assert plans["pool-1"]["services"] == ["pool", "prometheus", "node-exporter"]
    pool_toml = plans["pool-1"]["files"]["compose/pool/pool.toml"]
    assert 'rpc_url = "https://10.231.0.1:8124"' in pool_toml and 'url = "rediss://10.231.0.2:6379/0"' in pool_toml
    assert "security_protocol=SASL_SSL" in pool_toml
    assert plans["data-1"]["kafka_admin"] == {
        "bootstrap": "10.231.0.2:9092",
        "processes": [["jobmaker", "stratum", "blockmaker", "accounting"]],
        "exporter": True,
    }
    assert "ip saddr { 10.231.0.3 } tcp dport 6379 accept" in plans["data-1"]["firewall"]
    assert "ip saddr { 10.231.0.3 } tcp dport 8124 accept" in plans["node-1"]["firewall"]
    assert "tcp dport 8114 accept" not in plans["node-1"]["firewall"]  # the node's own RPC: this host only


def test_three_hosts_without_private_addresses_are_refused_never_planned_on_ansible_host(
    workdir: Path, tmp_path: Path
) -> None:
    """Two hosts reached by SSH on a public address with no private_ip: the preflight fails with one line naming
    both; nothing falls back to ansible_host (no plan is written)."""
    result = _plan_three_hosts(
        workdir,
        tmp_path,
        {
            "node-1": "private_ip=10.231.0.1",
            "data-1": "ansible_host=203.0.113.12",
            "pool-1": "ansible_host=203.0.113.13",
        },
    )
    assert result.returncode != 0
    assert "data-1, pool-1 have none: set private_ip" in result.stdout, result.stdout[-3000:]
    assert not list(tmp_path.glob("*-1.json"))
