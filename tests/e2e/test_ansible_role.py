"""The btcpool role on a test host, driven like an operator: ``ckbpool deploy --target hosts -i INVENTORY``.

The test host is a container from the local debootstrap base (Debian 12, sshd, python3, the docker and
docker-compose clients), reached over SSH on a loopback port. It shares the machine's network namespace and
its Docker socket is the machine's: the role runs its **"engine already present" path**
(``btcpool_docker_install: false``, checked by preflight) and the stack's containers run on the machine's engine,
so the install directory is bind-mounted at the same path (compose's relative bind mounts resolve on the engine's
side). ``btcpool_firewall: none`` (a test must not change this machine's firewall; the nftables table is tested
in namespaces by tests/unit/test_ansible_hostfiles.py). The engine install path and the firewall on real
hosts are the three-host scenario's (test_ansible_multihost.py: test hosts with systemd and engines of their own).

1. converge: deploy through ansible-runner (progress view, summary table), the stack healthy;
2. idempotence: a second run of the role changes nothing (changed=0 on every host);
3. verify: every service healthy (``status`` over Ansible too), a CPU miner outside the stack gets shares
   accepted and the node accepts a block it found;
4. destroy runs the role's removal tasks: no container of the pool is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from ckbpool.ckb.node import free_port
from ckbpool.cli.app import app
from ckbpool.deploy.config import load_config
from ckbpool.deploy.hosts import HostsTarget
from ckbpool.deploy.probe import probe_pool
from ckbpool.deploy.secrets import authority_public_key
from ckbpool.deploy.target import Paths
from ckbpool.miner.sv2 import Sv2Miner
from support.ports import port_flags

from .images import build, build_testing_image, docker
from .mining import eventually, mine_until_block

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TESTHOST_IMAGE = "local/ckbpool-testhost:e2e"
LABEL = "ckbpool.inputs"


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def engine() -> str:
    if shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("ansible-core is not installed (scripts/ansible-deps.sh)")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-deps.sh")], capture_output=True, text=True, timeout=1200
    )
    if result.returncode != 0:
        pytest.skip("docker engine unavailable: " + " / ".join((result.stderr or result.stdout).splitlines()[-5:]))
    return docker()


@pytest.fixture(scope="module")
def images(engine: str) -> dict[str, str]:
    start = time.monotonic()
    built = build(["ckb", "pool", "redis", "prometheus", "node-exporter", "redis-exporter"])
    build_testing_image(TESTHOST_IMAGE, ROOT / "ansible" / "testing" / "testhost.Dockerfile")
    print(f"images ready in {time.monotonic() - start:.0f}s")
    return built


@pytest.fixture
def testhost(engine: str, images: dict[str, str], tmp_path: Path) -> Iterator[dict[str, object]]:
    """A Debian 12 test host on 127.0.0.1:<port> over SSH, with the machine's Docker socket."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    hostdir = tmp_path / "host"
    hostdir.mkdir()
    port = free_port()
    name = f"ckbpool-testhost-{os.getpid()}-{port}"
    subprocess.run(
        [engine, "run", "-d", "--rm", "--name", name, "--network", "host",
         "-v", "/var/run/docker.sock:/var/run/docker.sock",
         "-v", f"{hostdir}:{hostdir}",
         "-v", f"{key}.pub:/root/.ssh/authorized_keys:ro",
         TESTHOST_IMAGE, "/usr/sbin/sshd", "-D", "-e", "-p", str(port), "-o", "ListenAddress=127.0.0.1"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["ssh", "-i", str(key), "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes",
                 "-o", "UserKnownHostsFile=/dev/null", "root@127.0.0.1", "true"],
                capture_output=True, timeout=15,
            )  # fmt: skip
            if probe.returncode == 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail("sshd in the test host did not answer")
        yield {"name": name, "port": port, "key": key, "dir": hostdir}
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=120)


def _project_containers(engine: str, project: str) -> list[str]:
    out = subprocess.run(
        [engine, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return out.stdout.split()


def _container_names(engine: str, ids: list[str]) -> list[str]:
    """``name (created, image)`` of each container, for a message that says which one changed."""
    fmt = "{{.Name}} ({{.Created}}, {{.Image}})"
    out = subprocess.run([engine, "inspect", "--format", fmt, *ids], capture_output=True, text=True, timeout=60)
    return out.stdout.split("\n")


@pytest.fixture
def deployment(testhost: dict[str, object], images: dict[str, str], engine: str, tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "ckbpool.yaml"
    ports = port_flags("stratum", "pool_http", "node_rpc", "prometheus", "web")  # loopback of the machine: free ones
    result = cli(
        "init", "-c", str(config), "-y", "--name", f"ans{os.getpid() % 10000}", "--bind-public", "127.0.0.1",
        "--no-grafana", "--no-miner", "--share-interval", "0.5", *ports,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(config.read_text())
    # the stand-ins, and the pool image the product builds (on the test base: images.pool_base)
    names = {"CKBPOOL_IMAGE_CKB": "ckb", "CKBPOOL_IMAGE_POOL": "pool", "CKBPOOL_IMAGE_POOL_BASE": "pool_base",
             "CKBPOOL_IMAGE_REDIS": "redis",
             "CKBPOOL_IMAGE_PROMETHEUS": "prometheus", "CKBPOOL_IMAGE_NODE_EXPORTER": "node_exporter",
             "CKBPOOL_IMAGE_REDIS_EXPORTER": "redis_exporter"}  # fmt: skip
    data["images"] = {**data.get("images", {}), **{names[k]: v for k, v in images.items()}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    hostdir = testhost["dir"]
    (tmp_path / "inventory.ini").write_text(
        "[all]\n"
        f"testhost ansible_host=127.0.0.1 ansible_port={testhost['port']} ansible_user=root "
        f"ansible_ssh_private_key_file={testhost['key']} ansible_python_interpreter=/usr/bin/python3 "
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null' "
        f"btcpool_docker_install=false btcpool_firewall=none btcpool_install_dir={hostdir}/opt/ckbpool\n"
        + "".join(f"[{group}]\ntesthost\n" for group in ("ckb_node", "pool", "redis", "monitoring"))
    )
    cfg = load_config(config)
    project = f"ckbpool-{cfg.name}"
    try:
        yield config
    finally:
        leftover = _project_containers(engine, project)
        if leftover:
            subprocess.run([engine, "rm", "-f", *leftover], capture_output=True, timeout=120)
        for kind in ("network", "volume"):
            ids = subprocess.run(
                [engine, kind, "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                capture_output=True, text=True, timeout=60,
            ).stdout.split()  # fmt: skip
            if ids:
                subprocess.run([engine, kind, "rm", *ids], capture_output=True, timeout=120)


def mine_a_block(target: HostsTarget) -> dict[str, float]:
    cfg = target.config
    miner = Sv2Miner(
        "127.0.0.1", cfg.ports.stratum, f"{cfg.payout_address}.ansible",
        authority_public_key=authority_public_key(target.paths.secrets_dir),
    )  # fmt: skip
    pool_http = f"http://127.0.0.1:{cfg.ports.pool_http}"

    block = mine_until_block(
        miner, lambda: httpx.get(f"{pool_http}/status", timeout=3).json(), f"http://127.0.0.1:{cfg.ports.node_rpc}",
        timeout=150,
    )  # fmt: skip
    assert block["worker"].endswith(".ansible")
    probe = eventually(lambda: probe_pool(pool_http), lambda p: p.shares.get("accepted", 0) >= 1)
    assert probe.shares.get("accepted", 0) >= 1, probe.shares
    return probe.shares


def test_converge_idempotence_verify_destroy(deployment: Path, engine: str, tmp_path: Path) -> None:
    config = deployment
    inventory = tmp_path / "inventory.ini"
    timings: dict[str, float] = {}

    # 1. converge, through the CLI and ansible-runner
    start = time.monotonic()
    result = cli("deploy", "-c", str(config), "--target", "hosts", "-i", str(inventory), "--timeout", "900")
    timings["converge"] = time.monotonic() - start
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "is up" in result.stdout and "testhost" in result.stdout  # the summary table
    cfg = load_config(config)
    paths = Paths.of(config, cfg)
    project = f"ckbpool-{cfg.name}"
    containers = _project_containers(engine, project)
    assert len(containers) == 6, containers  # ckb, pool, redis, prometheus, node-exporter, redis-exporter

    # 2. idempotence: the second run changes nothing
    target = HostsTarget(cfg, paths)  # the inventory of the last deploy
    assert target.inventory == inventory.resolve()
    start = time.monotonic()
    target.deploy(timeout=900)
    timings["idempotence"] = time.monotonic() - start
    view = target.last_view
    assert view is not None and view.stats, "no play recap"
    assert view.changed() == 0, {h: (s, view.hosts[h].changed_tasks) for h, s in view.stats.items()}
    after = _project_containers(engine, project)
    assert after == containers, _container_names(engine, sorted(set(after) ^ set(containers)))  # nothing recreated

    # 3. verify: healthy (status over Ansible too) and a miner's shares and a block accepted
    health = target.health()
    assert health and all(h.healthy for h in health), health
    status = cli("status", "-c", str(config))
    assert status.exit_code == 0, status.stdout + status.stderr
    start = time.monotonic()
    shares = mine_a_block(target)
    timings["block"] = time.monotonic() - start

    # 4. destroy: the role's removal tasks
    start = time.monotonic()
    destroyed = cli("destroy", "-c", str(config), "--purge", "--yes")
    timings["destroy"] = time.monotonic() - start
    assert destroyed.exit_code == 0, destroyed.stdout + destroyed.stderr
    assert _project_containers(engine, project) == []
    print("timings " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + f"; shares {shares}")


def test_unhealthy_service_fails_verify_naming_it_with_its_log(
    deployment: Path, images: dict[str, str], tmp_path: Path
) -> None:
    """The pool's image swapped for the node's (its command cannot run there): the pool never gets healthy, the
    run fails in verify naming the host, the service and its last log lines, and the CLI prints the summary."""
    data = yaml.safe_load(deployment.read_text())
    data["images"]["pool"] = images["CKBPOOL_IMAGE_CKB"]
    deployment.write_text(yaml.safe_dump(data, sort_keys=False))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        inventory.read_text().replace("btcpool_firewall=none", "btcpool_firewall=none btcpool_health_timeout_s=30")
    )
    start = time.monotonic()
    result = cli("deploy", "-c", str(deployment), "--target", "hosts", "-i", str(inventory), "--timeout", "600")
    assert result.exit_code == 1, result.stdout
    text = " ".join((result.stdout + result.stderr).split())
    assert "site.yml failed: testhost: Verify | Name the services that are not healthy" in text, text[-1500:]
    assert "not healthy after 30s on testhost: pool|" in text
    assert "last log lines:" in text and "pool_1" in text
    assert "│ testhost │ failed │" in result.stdout + result.stderr
    print(f"unhealthy pool reported in {time.monotonic() - start:.0f}s")
    with contextlib.suppress(Exception):
        cli("destroy", "-c", str(deployment), "--purge", "--yes")
