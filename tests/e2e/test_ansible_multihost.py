"""The btcpool role on three hosts: the ckb node | Kafka + Redis | the pool + monitoring, each on its own machine.

Each test host is a container that behaves like a Debian 12 server (ansible/testing/testhost-systemd.Dockerfile):
systemd as PID 1, its own network namespace and address on a network the test creates, **its own Docker engine**
(installed but not enabled: the role's install phase starts it), nftables. So the role runs as on real servers:
the install path with ``btcpool_docker_install: true``, the nftables table loaded by its systemd unit, services
published on each host's private address and found by their peers there, Kafka advertising a cross-host address.
No image registry is reachable, so the test loads into each engine the locally built images that host runs.

The scenario, through the operator's CLI (``ckbpool deploy --target hosts -i INVENTORY``):

1. converge on the three hosts; each runs exactly its services;
2. idempotence: a second run changes nothing;
3. a CPU miner on the controller gets shares accepted and a block that the node (on another host) accepts; the
   pool's events crossed to Kafka and its accounting to Redis (on the third host); Prometheus on the pool host
   scrapes every target on every host;
4. the firewall: the node host may not reach Redis or Kafka, the pool host may;
5. destroy: no container of the pool on any host, the firewall table gone.

The danielqsj/kafka-exporter image has no stand-in here (its Go module is not served by this machine's Go proxy),
so this deployment sets ``monitoring.kafka_exporter: false``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml

from ckbpool.deploy.config import load_config
from ckbpool.deploy.hosts import HostsTarget
from ckbpool.deploy.secrets import authority_public_key
from ckbpool.deploy.target import Paths
from ckbpool.miner.sv2 import Sv2Miner

from .images import IMAGES as IMAGE_VARS
from .images import build, build_testing_image, redis_for_hosts
from .mining import mine_until_block
from .test_ansible_role import ROOT, cli, engine  # noqa: F401  (engine is a fixture)

pytestmark = pytest.mark.e2e
ACCEPTED = 'ckbpool_shares_total{result="accepted"}'
IMAGE = "local/ckbpool-testhost-systemd:e2e"
#: host -> its inventory groups
GROUPS = {"node-1": ["ckb_node"], "data-1": ["kafka", "redis"], "pool-1": ["pool", "monitoring"]}
#: host -> the compose services it must run
SERVICES = {
    "node-1": {"ckb", "node-exporter"},
    "data-1": {"kafka", "redis", "node-exporter", "redis-exporter"},
    "pool-1": {"pool", "prometheus", "node-exporter"},
}
#: host -> images (tests/e2e/images.py names) its engine needs
IMAGES = {
    "node-1": ["ckb", "node-exporter"],
    "data-1": ["kafka", "redis", "node-exporter", "redis-exporter"],
    "pool-1": ["pool", "prometheus", "node-exporter"],
}
#: config key of images: -> tests/e2e/images.py name
CONFIG_IMAGES = {"ckb": "ckb", "pool": "pool", "redis": "redis", "kafka": "kafka", "prometheus": "prometheus",
                 "node_exporter": "node-exporter", "redis_exporter": "redis-exporter"}  # fmt: skip
# what a nested engine needs, short of --privileged (this machine withholds CAP_SYS_RESOURCE, which
# --privileged would ask for)
NESTED = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
          "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
          "--device-cgroup-rule", "a *:* rwm", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--cgroupns", "host",
          "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/var/lib/docker"]  # fmt: skip


@dataclass
class LabHost:
    name: str  # inventory name
    container: str
    address: str


@dataclass
class Lab:
    hosts: dict[str, LabHost]
    controller: str  # the machine's address on the hosts' network
    key: Path
    engine: str

    def run(self, host: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.engine, "exec", self.hosts[host].container, *argv], capture_output=True, text=True, timeout=timeout
        )  # fmt: skip

    def http_get(self, host: str, port: int, path: str) -> str:
        """GET on the host's own loopback (ports only an operator reads are published there, not on the network)."""
        out = self.run(host, "curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{port}{path}")
        assert out.returncode == 0, (host, port, path, out.stderr)
        return out.stdout

    def containers(self, host: str) -> list[str]:
        out = self.run(host, "docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.service"}}')
        return sorted(line for line in out.stdout.split() if line)


def _network(docker_cli: str, name: str) -> str:
    """A /24 of the test's own for the hosts; returns its prefix ("10.213.N")."""
    for n in range(os.getpid() % 200 + 20, 256):
        prefix = f"10.213.{n}"
        result = subprocess.run(
            [docker_cli, "network", "create", "--subnet", f"{prefix}.0/24", "--gateway", f"{prefix}.1", name],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if result.returncode == 0:
            return prefix
        assert "overlap" in result.stderr.lower(), result.stderr
    pytest.fail("no free 10.213.N.0/24 for the test hosts' network")


@pytest.fixture(scope="module")
def images(engine: str) -> dict[str, str]:  # noqa: F811
    """tests/e2e/images.py name -> local image (the redis stand-in with /etc/redis opened, as in the one-host test)."""
    names = sorted({n for host in IMAGES.values() for n in host})
    built = build(names)
    by_name = {name: built[var] for name, var in IMAGE_VARS.items() if var in built}
    by_name["redis"] = redis_for_hosts(by_name["redis"])
    build_testing_image(IMAGE, ROOT / "ansible" / "testing" / "testhost-systemd.Dockerfile")
    return by_name


@pytest.fixture
def lab(engine: str, images: dict[str, str], tmp_path: Path) -> Iterator[Lab]:  # noqa: F811
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    network = f"ckbpool-mh-{os.getpid()}"
    prefix = _network(engine, network)
    hosts: dict[str, LabHost] = {}
    try:
        for i, name in enumerate(GROUPS, start=2):
            container = f"ckbpool-mh-{os.getpid()}-{name}"
            address = f"{prefix}.{i}"
            subprocess.run(
                [engine, "run", "-d", "--name", container, "--hostname", name, "--network", network, "--ip", address,
                 *NESTED, "-v", f"{key}.pub:/root/.ssh/authorized_keys:ro", IMAGE],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            hosts[name] = LabHost(name, container, address)
        lab = Lab(hosts, f"{prefix}.1", key, engine)

        def prepare(name: str) -> None:
            # the test's own shortcut: no registry, so the engine starts now to take the images this host runs
            deadline = time.monotonic() + 60
            while lab.run(name, "systemctl", "is-system-running").stdout.strip() not in ("running", "degraded"):
                assert time.monotonic() < deadline, f"systemd on {name} did not come up"
                time.sleep(0.5)
            assert lab.run(name, "systemctl", "start", "docker").returncode == 0
            save = subprocess.Popen([engine, "save", *(images[n] for n in IMAGES[name])], stdout=subprocess.PIPE)
            assert save.stdout is not None
            load = subprocess.run(
                [engine, "exec", "-i", hosts[name].container, "docker", "load", "-q"],
                stdin=save.stdout, capture_output=True, timeout=600,
            )  # fmt: skip
            save.wait(timeout=60)
            assert load.returncode == 0 and save.returncode == 0, load.stderr
            # stop it again: starting and enabling the engine is the role's job
            assert lab.run(name, "systemctl", "stop", "docker", "docker.socket").returncode == 0

        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(prepare, hosts))
        print(f"test hosts ready in {time.monotonic() - start:.0f}s")
        yield lab
    finally:
        for host in hosts.values():
            subprocess.run([engine, "rm", "-f", "-v", host.container], capture_output=True, timeout=300)
        subprocess.run([engine, "network", "rm", network], capture_output=True, timeout=60)


def _deployment(lab: Lab, images: dict[str, str], tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "-y", "--name", f"mh{os.getpid() % 10000}", "--kafka", "--no-grafana",
        "--no-miner", "--share-interval", "0.5", "--bind-public", "0.0.0.0",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(config.read_text())
    data["images"] = {**data.get("images", {}), **{key: images[name] for key, name in CONFIG_IMAGES.items()}}
    data.setdefault("monitoring", {}).update({"kafka_exporter": False, "scrape_interval": "2s"})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    inventory = tmp_path / "inventory.yml"
    common = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(lab.key),
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "btcpool_firewall": "nftables",
        "btcpool_firewall_admin_sources": [f"{lab.controller}/32"],  # the controller checks private ports
    }
    groups: dict[str, dict[str, object]] = {}
    for name, host_groups in GROUPS.items():
        for group in host_groups:
            groups.setdefault(group, {"hosts": {}})["hosts"][name] = {}  # type: ignore[index]
    hostvars = {name: {"ansible_host": host.address} for name, host in lab.hosts.items()}
    inventory.write_text(yaml.safe_dump({"all": {"vars": common, "hosts": hostvars, "children": groups}}))
    return config, inventory


def test_three_hosts_node_data_pool_mine_a_block_across_hosts(lab: Lab, images: dict[str, str], tmp_path: Path) -> None:
    config, inventory = _deployment(lab, images, tmp_path)
    timings: dict[str, float] = {}
    node, data, pool = (lab.hosts[h].address for h in GROUPS)

    # 1. converge
    start = time.monotonic()
    result = cli("deploy", "-c", str(config), "--target", "hosts", "-i", str(inventory), "--timeout", "1200")
    timings["converge"] = time.monotonic() - start
    assert result.exit_code == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for name in GROUPS:
        assert name in result.stdout  # the summary table
        assert set(lab.containers(name)) == SERVICES[name], (name, lab.containers(name))
        assert lab.run(name, "systemctl", "is-enabled", "docker").stdout.strip() == "enabled"
    cfg = load_config(config)
    ports = cfg.ports
    target = HostsTarget(cfg, Paths.of(config, cfg))

    # 2. idempotence
    start = time.monotonic()
    target.deploy(timeout=900)
    timings["idempotence"] = time.monotonic() - start
    view = target.last_view
    assert view is not None and set(view.stats) == set(GROUPS)
    assert view.changed() == 0, {h: (s, view.hosts[h].changed_tasks) for h, s in view.stats.items()}
    health = target.health()
    assert health and all(h.healthy for h in health), health

    # 3. a miner on the controller: shares, and a block the node on node-1 accepts
    start = time.monotonic()
    miner = Sv2Miner(
        pool, ports.stratum, f"{cfg.payout_address}.multihost",
        authority_public_key=authority_public_key(target.paths.secrets_dir),
    )  # fmt: skip

    def pool_status() -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(lab.http_get("pool-1", ports.pool_http, "/status")))

    block = mine_until_block(miner, pool_status, f"http://{node}:{ports.node_rpc}", timeout=240)
    timings["block"] = time.monotonic() - start
    assert block["worker"].endswith(".multihost")

    # ... the pool's events went through Kafka on data-1, and its accounting into Redis there
    exposition = lab.http_get("pool-1", ports.pool_http, "/metrics")
    metrics = {
        line.split()[0]: float(line.split()[1]) for line in exposition.splitlines() if line.startswith("ckbpool_")
    }
    assert metrics.get(ACCEPTED, 0) >= 1, metrics
    # ckbpool_bus_connected exists only on the Kafka bus; everything published was consumed back
    assert metrics.get("ckbpool_bus_connected") == 1.0, metrics
    assert metrics["ckbpool_bus_published_total"] > 0 and metrics["ckbpool_bus_consumed_total"] > 0, metrics
    password = (target.paths.secrets_dir / "redis.password").read_text().strip()
    with redis.Redis(host=data, port=ports.redis, password=password, socket_timeout=5) as r:
        keys = [k.decode() for k in r.scan_iter(count=1000)]
    assert any("multihost" in k for k in keys), keys[:50]

    # ... and Prometheus on pool-1 scrapes every target on every host
    deadline = time.monotonic() + 90
    while True:
        active = json.loads(lab.http_get("pool-1", ports.prometheus, "/api/v1/targets"))["data"]["activeTargets"]
        health_of = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}
        if active and all(h == "up" for h in health_of.values()):
            break
        assert time.monotonic() < deadline, f"Prometheus targets not all up: {health_of}"
        time.sleep(2)
    instances = {instance for _, instance in health_of}
    assert {f"{node}:{ports.node_metrics}", f"{data}:{ports.redis_exporter}", f"{node}:{ports.node_exporter}",
            f"{data}:{ports.node_exporter}"} <= instances, instances  # fmt: skip

    # 4. firewall: only the hosts that use Redis / Kafka may reach them
    def reaches(host: str, address: str, port: int) -> bool:
        probe = lab.run(host, "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}")
        return probe.returncode == 0

    assert reaches("pool-1", data, ports.redis) and reaches("pool-1", data, ports.kafka)
    assert not reaches("node-1", data, ports.redis) and not reaches("node-1", data, ports.kafka)
    assert not reaches("data-1", node, ports.node_rpc)
    assert reaches("pool-1", node, ports.node_rpc)

    # 5. destroy
    start = time.monotonic()
    destroyed = cli("destroy", "-c", str(config), "--purge", "--yes")
    timings["destroy"] = time.monotonic() - start
    assert destroyed.exit_code == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
    for name in GROUPS:
        assert lab.containers(name) == [], name
        tables = lab.run(name, "nft", "list", "tables").stdout
        assert f"ckbpool_{cfg.name}" not in tables, tables
    print(
        "timings "
        + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())
        + f"; accepted shares {metrics[ACCEPTED]:.0f}"
    )
