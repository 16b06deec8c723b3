"""The btcpool role on three hosts: the ckb node | Kafka + Redis + PostgreSQL | the pool, payouts and monitoring,
each on its own machine.

Each test host is a container that behaves like a Debian 12 server (ansible/testing/testhost-systemd.Dockerfile):
systemd as PID 1, its own network namespace and address on a network the test creates, **its own Docker engine**
(installed but not enabled: the role's install phase starts it), nftables. So the role runs as on real servers:
the install path with ``btcpool_docker_install: true``, the nftables table loaded by its systemd unit, services
published on each host's private address and found by their peers there, Kafka advertising a cross-host address.

Images: the pool image takes the product's path. The controller builds it (``ckbpool.deploy.image``, on the test
base image) and the role copies its ``docker save`` archive to the host that runs the pool and loads it there; a
second converge transfers nothing. With ``images.registry`` (the second test) the controller pushes it to a real
OCI registry that the test runs (CNCF distribution, built by scripts/registry-deps.sh, TLS with a test CA the
engines trust) and the hosts pull it by digest. Only the stand-ins of the official images (ckb, Kafka, Redis,
Prometheus, exporters), which no registry here serves, are loaded into each host's engine by the test itself.

The scenario, through the operator's CLI (``ckbpool deploy --target hosts -i INVENTORY``):

1. converge on the three hosts; each runs exactly its services;
2. idempotence: a second run changes nothing and transfers no image;
3. a CPU miner on the controller gets shares accepted and a block that the node (on another host) accepts; the
   pool's events crossed to Kafka and its accounting to Redis (on the third host), the payout engine reads its
   ledger there; Prometheus on the pool host scrapes every target on every host (through their scrape gateways);
4. the firewall: the node host may not reach Redis or Kafka, the pool host may;
5. secured internal traffic (issue 18): a raw-socket capture on the Kafka/Redis/PostgreSQL host and on the node
   host during mining shows no plaintext bus, Redis, ledger, RPC or metrics payload, only TLS records (and does
   show a cleartext probe the controller sends to a watched port, so it sees cleartext where there is some);
   PostgreSQL refuses a plaintext login and a scrape gateway a scrape without the token; a Kafka principal without
   ACLs is refused a template; Redis's exporter user is refused a write and the default user everything; the RPC
   filter refuses set_ban and a missing token; no secret appears in the rendered files, in `docker inspect`, in
   any process's arguments or in the services' logs on any host;
6. destroy: no container of the pool on any host, the firewall table gone.

The danielqsj/kafka-exporter image has no stand-in here (its Go module is not served by this machine's Go proxy),
so this deployment sets ``monitoring.kafka_exporter: false``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import yaml

from ckbpool.deploy.config import load_config
from ckbpool.deploy.hosts import IMAGES_SUBDIR, HostsTarget
from ckbpool.deploy.image import DEFAULT_POOL_IMAGE, image_id
from ckbpool.deploy.secrets import authority_public_key
from ckbpool.deploy.target import Paths
from ckbpool.miner.sv2 import Sv2Miner

from .images import BASE_IMAGE, build, build_testing_image, cache_dir
from .images import IMAGES as IMAGE_VARS
from .mining import eventually, mine_until_block
from .test_ansible_role import ROOT, cli, engine  # noqa: F401  (engine is a fixture)

pytestmark = pytest.mark.e2e
ACCEPTED = 'ckbpool_shares_total{result="accepted"}'
IMAGE = "local/ckbpool-testhost-systemd:e2e"
#: host -> its inventory groups
GROUPS = {"node-1": ["ckb_node"], "data-1": ["kafka", "redis", "postgres"], "pool-1": ["pool", "monitoring"]}
#: host -> the compose services it must run (the scrape gateway on each host Prometheus scrapes from pool-1)
SERVICES = {
    "node-1": {"ckb", "rpc-filter", "node-exporter", "scrape-gateway"},  # the node's RPC: through its filter
    "data-1": {"kafka", "redis", "postgres", "node-exporter", "redis-exporter", "postgres-exporter", "scrape-gateway"},
    "pool-1": {"pool", "payouts", "prometheus", "node-exporter"},
}
#: host -> images (tests/e2e/images.py names) its engine needs
IMAGES = {
    "node-1": ["ckb", "node-exporter"],
    "data-1": ["kafka", "redis", "postgres", "node-exporter", "redis-exporter", "postgres-exporter"],
    "pool-1": ["pool", "prometheus", "node-exporter"],
}
#: config key of images: -> tests/e2e/images.py name (the stand-ins; the pool image is the product's own)
CONFIG_IMAGES = {"ckb": "ckb", "redis": "redis", "kafka": "kafka", "prometheus": "prometheus",
                 "node_exporter": "node-exporter", "redis_exporter": "redis-exporter", "postgres": "postgres",
                 "postgres_exporter": "postgres-exporter"}  # fmt: skip
#: hosts whose services run the pool image -> one such service (node-1: the RPC filter, data-1: the gateway)
POOL_IMAGE_SERVICE = {"pool-1": "pool", "node-1": "rpc-filter", "data-1": "scrape-gateway"}
POOL_HOSTS = set(POOL_IMAGE_SERVICE)
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


#: A capture on a test host's eth0 (its own network namespace), run there with its python3 (no tcpdump in the
#: image): every TCP payload to or from the given ports, per port, for a bounded time, written as JSON (base64).
SNIFFER = r"""
import base64, json, socket, struct, sys, time
ports, seconds, out = {int(p) for p in sys.argv[1].split(",")}, float(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind(("eth0", 0))
s.settimeout(0.5)
open(out + ".ready", "w").close()  # capturing from here: the test sends its cleartext probe after this
seen = {p: bytearray() for p in ports}
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        continue
    ihl = (frame[14] & 15) * 4
    tcp = frame[14 + ihl:]
    sport, dport = struct.unpack("!HH", tcp[:4])
    payload = tcp[(tcp[12] >> 4) * 4:]
    for port in (sport, dport):
        if port in seen and payload and len(seen[port]) < 8 << 20:
            seen[port] += payload
with open(out + ".tmp", "w") as fh:
    json.dump({p: base64.b64encode(bytes(b)).decode() for p, b in seen.items()}, fh)
import os; os.replace(out + ".tmp", out)
"""
#: what a plaintext bus, Redis or node RPC would show on the wire (topic names, Redis keys and commands, JSON-RPC)
#: ... the ledger (SQL, the login's user and SCRAM exchange) and the metrics scrapes (request and exposition)
PLAINTEXT_MARKERS = (b"ckbpool.templates", b"ckbpool.shares", b"ckbpool.found_blocks", b"ckbpool:", b"XADD",
                     b"EVALSHA", b"get_block_template", b"submit_block", b"new_tip_header", b"jsonrpc",
                     b"SELECT", b"INSERT", b"user\x00ckbpool", b"SCRAM-SHA-256", b"User-Agent: Prometheus",
                     b"Authorization: Bearer", b"# HELP", b"# TYPE")  # fmt: skip


def _secret_values(secrets_dir: Path) -> dict[str, str]:
    """file -> each secret value a leak would show: passwords and tokens whole, the salted SCRAM passwords, the
    base64 body of every private key (its first line of 64 characters is enough to recognise it)."""
    import re

    found: dict[str, str] = {}
    for path in sorted(secrets_dir.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name in ("authority.pub", "kafka-ca.pem"):
            continue
        text = path.read_text(errors="replace")
        if path.suffix in (".password", ".token") or path.name == "rpc-filter.token":
            found[path.name] = text.strip()
        elif path.name == "kafka-scram.args":
            for i, value in enumerate(re.findall(r'saltedpassword="([^"]+)"', text)):
                found[f"{path.name}#{i}"] = value
        elif "PRIVATE KEY" in text:
            body = text.split("PRIVATE KEY-----", 1)[1].split()[0]
            found[path.name] = body[:64]
        elif path.suffix == ".key":
            found[path.name] = text.strip()
    return {name: value for name, value in found.items() if len(value) >= 16}


@pytest.fixture(scope="module")
def images(engine: str) -> dict[str, str]:  # noqa: F811
    """tests/e2e/images.py name -> local image of each official image's stand-in (its /etc/redis is 0755 like the
    official image's bind-mounted one). Not the pool image: the deploy builds that itself."""
    names = sorted({n for host in IMAGES.values() for n in host} - {"pool"})
    built = build(names)
    by_name = {name: built[var] for name, var in IMAGE_VARS.items() if var in built}
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
            # the test's own shortcut, for the official images' stand-ins only (no registry here serves them): the
            # engine starts now to take the ones this host runs. The pool image is left to the product.
            deadline = time.monotonic() + 60
            while lab.run(name, "systemctl", "is-system-running").stdout.strip() not in ("running", "degraded"):
                assert time.monotonic() < deadline, f"systemd on {name} did not come up"
                time.sleep(0.5)
            assert lab.run(name, "systemctl", "start", "docker").returncode == 0
            stand_ins = [images[n] for n in IMAGES[name] if n != "pool"]
            save = subprocess.Popen([engine, "save", *stand_ins], stdout=subprocess.PIPE)
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


def _deployment(lab: Lab, images: dict[str, str], tmp_path: Path, **image_keys: str) -> tuple[Path, Path]:
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "-y", "--name", f"mh{os.getpid() % 10000}", "--kafka", "--no-grafana",
        "--no-miner", "--share-interval", "0.5", "--bind-public", "0.0.0.0", "--payouts",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(config.read_text())
    # the stand-ins by name; the pool image keeps its default name and is built on the test base image
    data["images"] = {**data.get("images", {}), **{key: images[name] for key, name in CONFIG_IMAGES.items()},
                      "pool_base": BASE_IMAGE, **image_keys}  # fmt: skip
    data.setdefault("monitoring", {}).update({"kafka_exporter": False, "scrape_interval": "2s"})
    # the payout engine on pool-1, its ledger on data-1 (PostgreSQL reached across hosts: TLS only)
    data.setdefault("payouts", {}).update({"enabled": True, "database": "postgres"})
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
    # the lab network is private (10.213.N.0/24): it is both the SSH and the private address
    hostvars = {name: {"ansible_host": host.address, "private_ip": host.address} for name, host in lab.hosts.items()}
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
    # ... the pool image the controller built runs on the pool host, by the same id, and only there
    built = image_id(DEFAULT_POOL_IMAGE)
    assert built is not None
    archives = sorted((target.paths.workspace / IMAGES_SUBDIR).glob("*.tar"))
    assert [a.name for a in archives] == [built.removeprefix("sha256:") + ".tar"], archives
    for name in GROUPS:
        here = lab.run(name, "docker", "image", "inspect", "--format", "{{.Id}}", DEFAULT_POOL_IMAGE).stdout.strip()
        assert here == (built if name in POOL_HOSTS else ""), (name, here)

    # 2. idempotence: nothing changes, no image is copied or loaded again
    start = time.monotonic()
    target.deploy(timeout=900)
    timings["idempotence"] = time.monotonic() - start
    view = target.last_view
    assert view is not None and set(view.stats) == set(GROUPS)
    assert view.changed() == 0, {h: (s, view.hosts[h].changed_tasks) for h, s in view.stats.items()}
    for name in POOL_HOSTS:  # the archive copied there was removed once loaded
        found = lab.run(name, "find", f"/opt/ckbpool/{cfg.name}/images", "-name", "*.tar").stdout.strip()
        assert found == "", (name, found)
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

    # the node's RPC is on node-1's loopback only; from here (an admin source) it is reached like the pool does:
    # through the RPC filter, over TLS with the deployment CA and the token
    secrets_dir = target.paths.secrets_dir
    ca = ssl.create_default_context(cafile=str(secrets_dir / "kafka-ca.pem"))
    token = (secrets_dir / "rpc-filter.token").read_text().strip()
    filter_url = f"https://{node}:{ports.node_rpc_filter}"
    # a raw capture on the two hosts the pool's internal traffic goes to, while it mines
    capture_ports = {"data-1": [ports.kafka, ports.redis, ports.postgres, ports.scrape_gateway],
                     "node-1": [ports.node_rpc_filter, ports.node_tcp_rpc_filter, ports.scrape_gateway]}  # fmt: skip
    capture_s = 45.0
    for host, watched in capture_ports.items():
        lab.run(host, "rm", "-f", "/tmp/capture.json", "/tmp/capture.json.ready")
        started = subprocess.run(
            [lab.engine, "exec", "-d", lab.hosts[host].container, "python3", "-c", SNIFFER,
             ",".join(map(str, watched)), str(capture_s), "/tmp/capture.json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
    capture_start = time.monotonic()
    for host in capture_ports:  # the probe only once each sniffer's raw socket is open (a CI run sent it before)
        while lab.run(host, "test", "-e", "/tmp/capture.json.ready").returncode != 0:
            assert time.monotonic() - capture_start < 30, f"the capture on {host} did not start"
            time.sleep(0.2)
    _send_cleartext_probe(lab, capture_ports)
    # ledger traffic inside the capture (the engine's own passes are a minute apart): the pool's container on
    # pool-1 opens the ledger exactly as its pool.toml says (verify-full, the CA) and asks whether it is TLS
    ledger_tls = lab.run(
        "pool-1", "sh", "-c",
        "docker exec $(docker ps -q --filter label=com.docker.compose.service=pool) python -c "
        + shlex.quote(LEDGER_TLS_PROBE),
    )  # fmt: skip
    assert ledger_tls.stdout.split()[-1:] == ["True"], ledger_tls.stdout + ledger_tls.stderr
    block = mine_until_block(
        miner, pool_status, filter_url, timeout=240, headers={"Authorization": f"Bearer {token}"}, verify=ca
    )
    timings["block"] = time.monotonic() - start
    assert block["worker"].endswith(".multihost")

    # ... the pool's events went through Kafka on data-1, and its accounting into Redis there
    def read_metrics() -> dict[str, float]:
        exposition = lab.http_get("pool-1", ports.pool_http, "/metrics")
        return {
            line.split()[0]: float(line.split()[1]) for line in exposition.splitlines() if line.startswith("ckbpool_")
        }

    metrics = eventually(read_metrics, lambda m: m.get(ACCEPTED, 0) >= 1)
    assert metrics.get(ACCEPTED, 0) >= 1, metrics
    # ckbpool_bus_connected exists only on the Kafka bus; everything published was consumed back
    assert metrics.get("ckbpool_bus_connected") == 1.0, metrics
    assert metrics["ckbpool_bus_published_total"] > 0 and metrics["ckbpool_bus_consumed_total"] > 0, metrics
    password = (target.paths.secrets_dir / "redis.password").read_text().strip()
    # Redis from another host: TLS (its certificate names data-1's private address), the ACL user "pool"
    tls = {"ssl": True, "ssl_ca_certs": str(secrets_dir / "kafka-ca.pem"), "ssl_check_hostname": True}
    # accounting is asynchronous (and a found block takes its own, faster lane): wait, bounded, for the shares
    deadline = time.monotonic() + 90
    with redis.Redis(host=data, port=ports.redis, username="pool", password=password, socket_timeout=5, **tls) as r:
        while True:
            keys = [k.decode() for k in r.scan_iter(count=1000)]
            if any("multihost" in k for k in keys) or time.monotonic() > deadline:
                break
            time.sleep(2)
    if not any("multihost" in k for k in keys):
        logs = lab.run(
            "pool-1",
            "sh",
            "-c",
            "docker logs $(docker ps -q --filter label=com.docker.compose.service=pool) 2>&1"
            " | grep -v 'httpx: HTTP Request' | tail -60",
        )
        exposition = lab.http_get("pool-1", ports.pool_http, "/metrics")
        books = [line for line in exposition.splitlines() if "accounting" in line or "ckbpool_bus_" in line]
        raise AssertionError(
            f"no share accounted in Redis on {data}: keys {keys[:50]}; pool metrics:\n"
            + "\n".join(books)
            + f"\npool log (no RPC lines):\n{logs.stdout}"
        )

    # ... and Prometheus on pool-1 scrapes every target on every host
    deadline = time.monotonic() + 90
    while True:
        active = json.loads(lab.http_get("pool-1", ports.prometheus, "/api/v1/targets"))["data"]["activeTargets"]
        health_of = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}
        if active and all(h == "up" for h in health_of.values()):
            break
        assert time.monotonic() < deadline, f"Prometheus targets not all up: {health_of}"
        time.sleep(2)
    # the other hosts' targets: their scrape gateways (https + the token), under the jobs the alerts use
    gw = ports.scrape_gateway
    assert {("ckb", f"{node}:{gw}"), ("node", f"{node}:{gw}"), ("node", f"{data}:{gw}"), ("redis", f"{data}:{gw}"),
            ("postgres", f"{data}:{gw}"), ("payouts", "payouts:8190")} <= set(health_of), health_of  # fmt: skip
    assert not any(i.endswith((f":{ports.node_exporter}", f":{ports.node_metrics}")) and not i.startswith(
        ("node-exporter", "ckb")) for _, i in health_of), health_of  # fmt: skip

    # 4. firewall: only the hosts that use Redis / Kafka may reach them
    def reaches(host: str, address: str, port: int) -> bool:
        probe = lab.run(host, "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}")
        return probe.returncode == 0

    assert reaches("pool-1", data, ports.redis) and reaches("pool-1", data, ports.kafka)
    assert not reaches("node-1", data, ports.redis) and not reaches("node-1", data, ports.kafka)
    assert reaches("pool-1", data, ports.postgres) and not reaches("node-1", data, ports.postgres)
    assert reaches("pool-1", data, ports.scrape_gateway) and not reaches("node-1", data, ports.scrape_gateway)
    assert not reaches("pool-1", data, ports.node_exporter)  # exporters: the gateway relays them, unpublished
    assert not reaches("data-1", node, ports.node_rpc_filter)
    assert reaches("pool-1", node, ports.node_rpc_filter)
    assert not reaches("pool-1", node, ports.node_rpc)  # the node's own RPC: node-1's loopback only

    # 5. secured internal traffic
    start = time.monotonic()
    _check_capture(lab, capture_ports, capture_s - (time.monotonic() - capture_start))
    _check_refusals(lab, target.paths.secrets_dir, data, node, ports, filter_url, token, ca)
    _check_no_secret_leaks(lab, target.paths.secrets_dir, target.paths.workspace)
    timings["security checks"] = time.monotonic() - start

    # 6. destroy
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


#: run in the pool's container: the ledger URL of its pool.toml, and whether the server sees that session as TLS
LEDGER_TLS_PROBE = (
    "from pathlib import Path; import sqlalchemy as sa; from ckbpool.pool.config import load_pool_config; "
    "from ckbpool.payouts.ledger import create_ledger_engine; "
    "e = create_ledger_engine(load_pool_config(Path('/etc/ckbpool/pool.toml')).payouts.database()); "
    "c = e.connect(); print(c.execute(sa.text('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()'))"
    ".scalar()); c.close(); e.dispose()"
)
#: the cleartext the controller sends to each host's last watched port (the scrape gateway, which refuses it: it
#: is not a TLS handshake): the control that the capture sees cleartext where there is some
CLEARTEXT_PROBE = b"GET /ckbpool-capture-control HTTP/1.1\r\nHost: capture\r\n\r\n"


def _send_cleartext_probe(lab: Lab, watched: dict[str, list[int]]) -> None:
    for host, ports in watched.items():
        with socket.create_connection((lab.hosts[host].address, ports[-1]), timeout=10) as sock:
            sock.sendall(CLEARTEXT_PROBE)
            sock.settimeout(5)
            with contextlib.suppress(OSError):
                sock.recv(4096)  # the TLS server's alert, or the close


def _check_capture(lab: Lab, watched: dict[str, list[int]], remaining: float) -> None:
    """The capture of each host (it ends by itself): every watched port -- the bus, Redis, the ledger, the RPC
    filter, the scrape gateway -- carried TLS records and no plaintext marker (no topic, key, command, SQL, JSON-RPC
    or metrics text, no bearer token); the controller's cleartext probe to the gateway is in the capture."""
    import base64

    time.sleep(max(0.0, remaining) + 2)
    for host, ports in watched.items():
        deadline = time.monotonic() + 30
        while (out := lab.run(host, "cat", "/tmp/capture.json")).returncode != 0:
            assert time.monotonic() < deadline, f"no capture from {host}"
            time.sleep(1)
        payloads = {int(p): base64.b64decode(b) for p, b in json.loads(out.stdout).items()}
        assert CLEARTEXT_PROBE in payloads[ports[-1]], (host, ports[-1], payloads[ports[-1]][:200])
        for port in ports:
            data = payloads[port].replace(CLEARTEXT_PROBE, b"")
            assert data, (host, port, "nothing captured")  # mining, payouts and scrapes used every one of them
            for marker in PLAINTEXT_MARKERS:
                assert marker not in data, (host, port, marker)
            assert b"\x17\x03\x03" in data or b"\x16\x03" in data, (host, port, data[:64])  # TLS records


def _check_refusals(
    lab: Lab, secrets_dir: Path, data: str, node: str, ports: Any, filter_url: str, token: str, ca: ssl.SSLContext
) -> None:
    """What the ACLs and the filter refuse, asked from the controller (an admin source the firewall admits: the node
    host itself may not even open a connection to Kafka or Redis, asserted above)."""
    import asyncio

    import httpx
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
    from aiokafka.errors import TopicAuthorizationFailedError  # type: ignore[import-untyped]

    from ckbpool.bus.kafka import KafkaBusConfig
    from ckbpool.deploy.kafka_security import client_url

    # Kafka: "stratum" is a SCRAM user of this deployment with a valid password, but this placement gives ACLs
    # only to pool-1's principal (jobmaker-stratum-blockmaker-accounting): publishing a template is refused
    def url(principal: str) -> str:
        password_file = str(secrets_dir / f"kafka-{principal}.password")
        return client_url(f"{data}:{ports.kafka}", principal, password_file=password_file,
                          ca_file=str(secrets_dir / "kafka-ca.pem"))  # fmt: skip

    async def publish(principal: str) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=f"{data}:{ports.kafka}", request_timeout_ms=10_000,
            **KafkaBusConfig.from_url(url(principal)).client_security(),
        )  # fmt: skip
        await producer.start()
        try:
            await asyncio.wait_for(producer.send_and_wait("ckbpool.templates", b"forged template"), 30)
        finally:
            await producer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(publish("stratum"))
    # Redis: the exporter's user may read but not write; the default user is off
    tls = {"ssl": True, "ssl_ca_certs": str(secrets_dir / "kafka-ca.pem"), "ssl_check_hostname": True}
    exporter_password = (secrets_dir / "redis-exporter.password").read_text().strip()
    with redis.Redis(host=data, port=ports.redis, username="exporter", password=exporter_password,
                     socket_timeout=5, **tls) as r:  # fmt: skip
        assert r.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.set("ckbpool:forged", "1")
    anonymous = redis.Redis(host=data, port=ports.redis, socket_timeout=5, **tls)
    with anonymous as r, pytest.raises(redis.exceptions.AuthenticationError):  # NOAUTH: the default user is off
        r.get("ckbpool:anything")

    # the RPC filter: set_ban is not on the allowlist, a request without the token is refused
    def call(method: str, params: list[Any], auth: bool = True) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        body = {"id": 1, "jsonrpc": "2.0", "method": method, "params": params}
        return httpx.post(filter_url, json=body, headers=headers, verify=ca, timeout=10)

    assert "result" in call("get_tip_block_number", []).json()
    banned = call("set_ban", ["192.0.2.1", "insert", None, True, "e2e"]).json()
    assert "result" not in banned and "not allowed" in banned["error"]["message"], banned
    assert call("get_tip_block_number", [], auth=False).status_code == 401

    # the ledger: a plaintext login is rejected even with the password; verify-full with the CA is accepted
    import psycopg

    ledger = {"host": data, "port": ports.postgres, "user": "ckbpool", "dbname": "ckbpool", "connect_timeout": 10,
              "password": (secrets_dir / "postgres.password").read_text().strip()}  # fmt: skip
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(**ledger, sslmode="disable").close()
    with psycopg.connect(**ledger, sslmode="verify-full", sslrootcert=str(secrets_dir / "kafka-ca.pem")) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    # the scrape gateway: nothing without the token, the relayed exporter with it
    scrape_token = (secrets_dir / "scrape.token").read_text().strip()
    gateway = f"https://{data}:{ports.scrape_gateway}/scrape/postgres"
    assert httpx.get(gateway, verify=ca, timeout=10).status_code == 401
    relayed = httpx.get(gateway, verify=ca, timeout=10, headers={"Authorization": f"Bearer {scrape_token}"})
    assert relayed.status_code == 200 and "pg_up 1" in relayed.text, relayed.text[:500]


def _check_no_secret_leaks(lab: Lab, secrets_dir: Path, workspace: Path) -> None:
    """No secret value in the rendered workspace, nor on any host in `docker inspect` (environment, command,
    arguments), the process list, the services' logs or the installed configuration files."""
    values = _secret_values(secrets_dir)
    assert any(name.startswith("kafka-scram.args#") for name in values) and "rpc-filter.token" in values, values.keys()
    rendered = "".join(
        p.read_text(errors="replace") for p in workspace.rglob("*") if p.is_file() and p.suffix != ".tar"
    )
    for name, value in values.items():
        assert value not in rendered, f"{name} is in a rendered file of {workspace}"
    script = (
        'ids=$(docker ps -aq); [ -n "$ids" ] && docker inspect $ids; ps -eo args; '
        "for c in $ids; do docker logs --tail 3000 $c 2>&1; done; "
        "find /opt/ckbpool -path '*/secrets' -prune -o -path '*/data' -prune -o -type f -name '*.*' -print0"
        " | xargs -0 -r cat"
    )
    for host in lab.hosts:
        seen = lab.run(host, "bash", "-c", script, timeout=180)
        assert seen.returncode == 0 and len(seen.stdout) > 1000, (host, seen.stderr[-2000:])
        for name, value in values.items():
            assert value not in seen.stdout, f"{name} appears on {host} (inspect, process list, logs or configs)"


# ------------------------------------------------------------------------------------------- registry


def _openssl(*argv: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *argv], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def registry(lab: Lab, tmp_path: Path) -> Iterator[str]:
    """A real OCI registry (CNCF distribution) on this machine's address on the hosts' network, serving TLS with a
    test CA. The engines trust it the way an operator's would trust a private registry: the CA in
    /etc/docker/certs.d/<address>/ca.crt, which Docker reads on each connection (no engine restart), here on
    the controller's engine (which pushes) and on each test host's (which pull). Yields ``address:port``."""
    binary = cache_dir() / "bin" / "registry"
    if not binary.is_file():
        pytest.skip(f"no OCI registry at {binary}: run scripts/registry-deps.sh (make deps does)")
    with socket.socket() as probe:
        probe.bind((lab.controller, 0))
        port = probe.getsockname()[1]
    address = f"{lab.controller}:{port}"
    tls = tmp_path / "registry-tls"
    tls.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ckbpool e2e registry CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=tls)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={lab.controller}", "-keyout", "server.key",
             "-out", "server.csr", cwd=tls)  # fmt: skip
    (tls / "san.ext").write_text(f"subjectAltName=IP:{lab.controller}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days",
             "1", "-extfile", "san.ext", "-out", "server.crt", cwd=tls)  # fmt: skip
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "log": {"level": "warn"},
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry-data")}},
                "http": {
                    "addr": address,
                    "tls": {"certificate": str(tls / "server.crt"), "key": str(tls / "server.key")},
                },
            }
        )
    )
    trusted = Path("/etc/docker/certs.d") / address
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen([str(binary), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"https://{address}/v2/", context=context, timeout=2) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "registry.log").read_text()
                assert time.monotonic() < deadline, "the registry did not answer"
                time.sleep(0.3)
        trusted.mkdir(parents=True, exist_ok=True)
        shutil.copy(tls / "ca.crt", trusted / "ca.crt")
        for host in lab.hosts.values():
            assert lab.run(host.name, "mkdir", "-p", f"/etc/docker/certs.d/{address}").returncode == 0
            copied = subprocess.run(
                [lab.engine, "cp", str(tls / "ca.crt"), f"{host.container}:/etc/docker/certs.d/{address}/ca.crt"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert copied.returncode == 0, copied.stderr
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(trusted, ignore_errors=True)


def test_pool_image_through_a_registry_is_pulled_by_digest_on_every_pool_host(
    lab: Lab, images: dict[str, str], registry: str, tmp_path: Path
) -> None:
    repository = f"{registry}/ckbpool/pool"
    config, inventory = _deployment(lab, images, tmp_path, registry=repository)

    result = cli("deploy", "-c", str(config), "--target", "hosts", "-i", str(inventory), "--timeout", "1200")
    assert result.exit_code == 0, result.stdout[-4000:] + result.stderr[-4000:]
    cfg = load_config(config)
    target = HostsTarget(cfg, Paths.of(config, cfg))
    built = image_id(DEFAULT_POOL_IMAGE)
    assert built is not None
    for name in GROUPS:
        assert set(lab.containers(name)) == SERVICES[name], (name, lab.containers(name))
    for name in POOL_HOSTS:
        service = POOL_IMAGE_SERVICE[name]
        container = lab.run(
            name, "docker", "ps", "-q", "--filter", f"label=com.docker.compose.service={service}"
        ).stdout.strip()
        # the reference the container was created from (`docker ps` shows a digest reference without its digest)
        running, here = lab.run(
            name, "docker", "inspect", "--format", "{{.Config.Image}} {{.Image}}", container
        ).stdout.split()
        assert running.startswith(f"{repository}@sha256:"), running
        assert here == built, (name, here, built)  # pulled by digest: the very image the controller built
    assert not list((target.paths.workspace / IMAGES_SUBDIR).glob("*.tar"))  # nothing saved for a transfer

    target.deploy(timeout=900)
    view = target.last_view
    assert view is not None and view.changed() == 0, {h: view.hosts[h].changed_tasks for h in view.stats}

    destroyed = cli("destroy", "-c", str(config), "--purge", "--yes")
    assert destroyed.exit_code == 0, destroyed.stdout[-3000:] + destroyed.stderr[-3000:]
