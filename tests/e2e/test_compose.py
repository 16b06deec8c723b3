"""The compose target on a real Docker engine (Debian docker.io, started here by scripts/docker-deps.sh), with
images built locally FROM a debootstrap base (no registry is reachable):

* the rendered compose.yaml passes ``docker compose config`` / ``docker-compose config`` (every profile);
* ``deploy --target compose`` brings the stack up healthy (ckb, pool, redis; prometheus, node-exporter and
  redis-exporter under the monitoring profile), a miner outside the stack connects to the published stratum
  port on 127.0.0.1 and the node accepts a block; ``status`` shows it;
* a service that cannot start is named with its last log lines;
* ``destroy`` removes the containers and networks.
* with payouts on, the ``postgres`` service (and postgres_exporter) comes up healthy, the pool's container opens the
  ledger through its rendered ``[payouts]`` (the password read from its secret) and migrates it to head, and
  Prometheus scrapes ``pg_up`` 1; the ``payouts`` service (the payout engine) is healthy (a pass completed) and
  Prometheus scrapes it (job ``payouts``);
* the miners' page answers on its published port (``ports.web``): over HTTP in the default stack (the page, the
  pool API with the block just mined, while /status stays off that port), and over HTTPS with a self-signed
  certificate in the payouts stack (``web.tls``).

Skipped only when the Docker engine cannot be started on this machine (the reason is printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from ckbpool.cli.app import app
from ckbpool.deploy.compose import ComposeTarget, compose_command
from ckbpool.deploy.config import load_config
from ckbpool.deploy.errors import TargetError, TargetUnavailable
from ckbpool.deploy.secrets import authority_public_key
from ckbpool.deploy.target import Paths
from ckbpool.miner.sv2 import Sv2Miner
from support.ports import port_flags

from .images import build, docker
from .mining import mine_until_block

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def ports() -> list[str]:
    return port_flags("stratum", "pool_http", "node_rpc", "prometheus", "web", "payouts_metrics")


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """Start (or find) the engine and the base image; skip with the script's own words when impossible."""
    if shutil.which("docker-compose") is None and shutil.which("docker") is None and os.geteuid() != 0:
        pytest.skip("docker is not installed and we are not root to install it")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-deps.sh")], capture_output=True, text=True, timeout=1200
    )
    if result.returncode != 0:
        pytest.skip("docker engine unavailable: " + " / ".join((result.stderr or result.stdout).splitlines()[-5:]))
    return docker()


@pytest.fixture(scope="session")
def images(docker_engine: str) -> dict[str, str]:
    """The stand-ins, and the pool image as a deploy builds it -- or, with ``CKBPOOL_E2E_POOL_IMAGE`` (CI on a
    tag: the pushed ``name@sha256:...``, pulled beforehand), exactly that image."""
    pushed = os.environ.get("CKBPOOL_E2E_POOL_IMAGE")
    names = ["ckb", "redis", "prometheus", "node-exporter", "redis-exporter", "kafka", "postgres", "postgres-exporter"]
    env = build(names if pushed else ["pool", *names])
    if pushed:
        env["CKBPOOL_IMAGE_POOL"] = pushed
    return env


def secrets_to_an_operator(config: Path) -> None:
    """As root (CI), hand the secrets to an unprivileged uid, as an operator's own ``ckbpool init`` leaves them:
    the compose services that read them run as their owner and refuse root."""
    if os.geteuid() != 0:
        return
    secrets = config.parent / "secrets"
    for path in [secrets, *secrets.rglob("*")]:
        os.lchown(path, 10001, 10001)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "-y", "--name", f"e2e{os.getpid() % 10000}", "--bind-public", "127.0.0.1",
        "--no-grafana", "--no-miner", "--share-interval", "0.5", *ports(),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    secrets_to_an_operator(config)
    assert cli("render", "-c", str(config), "--no-diff").exit_code == 0
    return config


def test_rendered_compose_file_passes_compose_config(project: Path) -> None:
    try:
        command = compose_command()
    except TargetUnavailable as exc:
        pytest.skip(f"no compose CLI: {exc}")
    compose_dir = project.parent / "workspace" / "compose"
    for profiles in (["core"], ["core", "monitoring", "testnet"]):
        flags = [f for p in profiles for f in ("--profile", p)]
        result = subprocess.run(
            [*command, "-f", "compose.yaml", *flags, "config", "-q"],
            cwd=compose_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    # what is published, and where
    full = subprocess.run(
        [*command, "-f", "compose.yaml", "--profile", "core", "--profile", "monitoring", "config"],
        cwd=compose_dir, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip

    doc = yaml.safe_load(full)
    for name, service in doc["services"].items():
        assert "healthcheck" in service, name
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)  # the test binds even stratum to loopback
        for dep in (service.get("depends_on") or {}).values():
            assert dep["condition"] == "service_healthy"
    assert doc["networks"]["backend"]["internal"] is True
    for name in ("redis", "node-exporter", "redis-exporter"):
        assert doc["services"][name]["networks"] == {"backend": None} or list(doc["services"][name]["networks"]) == [
            "backend"
        ]


def _containers(project_name: str) -> list[str]:
    out = subprocess.run(
        [docker(), "ps", "-aq", "--filter", f"label=com.docker.compose.project={project_name}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return out.stdout.split()


def _networks(project_name: str) -> list[str]:
    out = subprocess.run(
        [docker(), "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project_name}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return out.stdout.split()


@pytest.fixture
def compose_env(images: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in images.items():
        monkeypatch.setenv(key, value)
    return images


@pytest.fixture
def stack(project: Path, compose_env: dict[str, str]) -> Iterator[tuple[Path, ComposeTarget]]:
    cfg = load_config(project)
    target = ComposeTarget(cfg, Paths.of(project, cfg))
    try:
        yield project, target
    finally:
        with contextlib.suppress(TargetError):
            target.destroy(purge=True)


def mine_a_block_from_outside(target: ComposeTarget) -> dict[str, object]:
    """A miner outside the stack, on the published stratum port (127.0.0.1 only), until the node accepts a block."""
    cfg = target.config
    miner = Sv2Miner(
        "127.0.0.1",
        cfg.ports.stratum,
        f"{cfg.payout_address}.outside",
        authority_public_key=authority_public_key(target.paths.secrets_dir),
    )

    block = mine_until_block(
        miner, lambda: httpx.get(f"{target.pool_http}/status", timeout=3).json(), target.rpc_url, timeout=120
    )
    assert block["worker"].endswith(".outside")
    return block


def test_stack_healthy_outside_miner_gets_a_block_accepted_destroy_cleans_up(
    stack: tuple[Path, ComposeTarget],
) -> None:
    config, target = stack
    start = time.monotonic()
    result = cli("deploy", "-c", str(config), "--target", "compose", "--timeout", "300")
    assert result.exit_code == 0, result.stdout + result.stderr
    up_s = time.monotonic() - start
    health = {h.name: h for h in target.health()}
    assert set(health) == {"ckb", "pool", "redis", "prometheus", "node-exporter", "redis-exporter"}
    assert all(h.healthy for h in health.values()), health

    mine_a_block_from_outside(target)
    cfg = target.config

    # Prometheus (inside the stack) scrapes the pool and the node
    prom = f"http://127.0.0.1:{cfg.ports.prometheus}"
    deadline = time.monotonic() + 60
    up: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{prom}/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
        up = {t["labels"]["job"]: t["health"] for t in targets}
        if up.get("ckbpool") == "up" and up.get("ckb") == "up" and up.get("redis") == "up":
            break
        time.sleep(2)
    assert up.get("ckbpool") == "up" and up.get("ckb") == "up" and up.get("redis") == "up", up

    table = cli("status", "-c", str(config), "--target", "compose")
    assert table.exit_code == 0, table.stdout
    assert "accepted" in table.stdout and "healthy" in table.stdout
    as_json = json.loads(cli("status", "-c", str(config), "--json").stdout)
    assert as_json["target"] == "compose" and as_json["pool"]["blocks"].get("accepted", 0) >= 1
    assert as_json["prometheus_targets"]["ckbpool"] == "up"

    assert cli("logs", "pool", "-c", str(config), "-n", "5").exit_code == 0

    # the miners' page on its published port: the page, the public API with the block just mined, nothing private
    page = f"http://127.0.0.1:{cfg.ports.web}"
    assert as_json["pool"]["web"] == f"{page}/"  # `ckbpool status` points to it
    index = httpx.get(f"{page}/", timeout=5)
    assert index.status_code == 200 and "<html" in index.text.lower()
    overview = httpx.get(f"{page}/api/pool", timeout=5)
    assert overview.status_code == 200, overview.text
    assert overview.json()["blocks"], overview.json()
    for private in ("/status", "/metrics", "/health"):
        assert httpx.get(f"{page}{private}", timeout=5).status_code == 404, private

    # destroy: containers and networks gone
    project_name = target.project
    assert _containers(project_name) and _networks(project_name)
    destroyed = cli("destroy", "-c", str(config))
    assert destroyed.exit_code == 0, destroyed.stderr
    assert _containers(project_name) == []
    assert _networks(project_name) == []
    print(f"compose stack healthy in {up_s:.0f}s")


def test_unhealthy_service_is_named_with_its_logs(stack: tuple[Path, ComposeTarget]) -> None:
    """Break the pool's config: deploy fails naming the pool and showing why, from its log."""
    config, target = stack
    pool_toml = target.dir / "pool" / "pool.toml"
    # a render writes it back; the compose target uses what is on disk, so break it after render
    assert cli("render", "-c", str(config), "--no-diff").exit_code == 0
    target_cli = ComposeTarget(target.config, target.paths)
    pool_toml.write_text(pool_toml.read_text().replace('network = "dev"', 'network = "moonnet"'))
    with pytest.raises(TargetError) as failure:
        target_cli.deploy(timeout=120)
    message = str(failure.value)
    assert "service pool is unhealthy" in message
    assert "network" in message  # the pool's own config error, from its log


def test_kafka_stack_pool_on_the_kafka_bus(tmp_path: Path, compose_env: dict[str, str]) -> None:
    """services.kafka: a single-node KRaft broker in the stack; the pool's events go through it."""
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "-y", "--name", f"k{os.getpid() % 10000}", "--bind-public", "127.0.0.1",
        "--kafka", "--no-monitoring", "--no-miner", "--share-interval", "0.5", *ports(),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    secrets_to_an_operator(config)
    cfg = load_config(config)
    target = ComposeTarget(cfg, Paths.of(config, cfg))
    try:
        deployed = cli("deploy", "-c", str(config), "--target", "compose", "--timeout", "300")
        assert deployed.exit_code == 0, deployed.stdout + deployed.stderr
        assert {h.name: h.healthy for h in target.health()} == {"ckb": True, "pool": True, "redis": True, "kafka": True}
        mine_a_block_from_outside(target)
        bus = httpx.get(f"{target.pool_http}/status", timeout=3).json()["bus"]
        assert bus["connected"] == 1 and bus["published"] > 0 and bus["consumed"] > 0, bus
    finally:
        assert cli("destroy", "-c", str(config), "--purge", "--yes").exit_code == 0
    assert _containers(target.project) == [] and _networks(target.project) == []


def _self_signed_certificate(secrets: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 as the page's ``web-tls.crt`` / ``web-tls.key`` (mode 0600)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ckbpool e2e page")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    for file, data in (("web-tls.crt", cert.public_bytes(serialization.Encoding.PEM)), ("web-tls.key", pem)):
        (secrets / file).write_bytes(data)
        (secrets / file).chmod(0o600)
    return secrets / "web-tls.crt"


def test_payouts_stack_postgres_healthy_ledger_migrated(tmp_path: Path, compose_env: dict[str, str]) -> None:
    """payouts.enabled: PostgreSQL in the stack, reached from the pool's container with what render gave it; the
    payout engine as its own healthy service; the page over HTTPS with the operator's (self-signed) certificate."""
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "-y", "--name", f"e2epg{os.getpid() % 10000}", "--bind-public", "127.0.0.1",
        "--no-grafana", "--no-miner", "--payouts", *ports(),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = yaml.safe_load(config.read_text())
    doc["web"] = {**doc.get("web", {}), "tls": True}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    certificate = _self_signed_certificate(config.parent / "secrets")
    secrets_to_an_operator(config)
    assert cli("render", "-c", str(config), "--no-diff").exit_code == 0
    cfg = load_config(config)
    target = ComposeTarget(cfg, Paths.of(config, cfg))
    try:
        start = time.monotonic()
        deployed = cli("deploy", "-c", str(config), "--target", "compose", "--timeout", "300")
        assert deployed.exit_code == 0, deployed.stdout + deployed.stderr
        up_s = time.monotonic() - start
        health = {h.name: h for h in target.health()}
        assert {"postgres", "postgres-exporter", "payouts"} <= set(health), health
        assert all(h.healthy for h in health.values()), health

        # the pool's container: its pool.toml's [payouts] and /run/secrets/postgres_password reach the database
        script = (
            "from pathlib import Path; from ckbpool.pool.config import load_pool_config; "
            "from ckbpool.payouts.ledger import Ledger, current_revision; "
            "url = load_pool_config(Path('/etc/ckbpool/pool.toml')).payouts.database(); "
            "ledger = Ledger.open(url); print('revision', current_revision(ledger.engine)); ledger.close()"
        )
        migrated = target.run("exec", "-T", "pool", "python", "-c", script, timeout=120)
        from ckbpool.payouts.ledger import head_revision

        assert f"revision {head_revision()}" in migrated.stdout, migrated.stdout + migrated.stderr
        # and the server holds it: the migration table and the ledger's tables, seen from the postgres service
        tables = target.run(
            "exec", "-T", "postgres", "psql", "-U", "ckbpool", "-d", "ckbpool", "-tAc",
            "select version_num from alembic_version", timeout=60,
        ).stdout.split()  # fmt: skip
        assert tables == [head_revision()]
        password = (target.paths.secrets_dir / "postgres.password").read_text().strip()
        env_dump = target.run("exec", "-T", "pool", "env", timeout=60).stdout
        assert password not in env_dump and password not in migrated.stdout + migrated.stderr

        # Prometheus scrapes postgres_exporter, which reports the database up
        prom = f"http://127.0.0.1:{cfg.ports.prometheus}"
        deadline = time.monotonic() + 90
        value = None
        while time.monotonic() < deadline:
            data = httpx.get(f"{prom}/api/v1/query", params={"query": 'pg_up{job="postgres"}'}, timeout=3).json()
            results = data["data"]["result"]
            if results:
                value = results[0]["value"][1]
                if value == "1":
                    break
            time.sleep(2)
        assert value == "1", value

        # the payout engine: its own container, healthy (a pass completed), scraped by Prometheus (job payouts)
        deadline = time.monotonic() + 90
        passes = None
        while time.monotonic() < deadline:
            query = {"query": 'ckbpool_payouts_last_pass_timestamp_seconds{job="payouts"}'}
            results = httpx.get(f"{prom}/api/v1/query", params=query, timeout=3).json()["data"]["result"]
            if results and float(results[0]["value"][1]) > 0:
                passes = results[0]["value"][1]
                break
            time.sleep(2)
        assert passes is not None, "Prometheus never saw a completed payouts pass"
        env_dump = target.run("exec", "-T", "payouts", "env", timeout=60).stdout
        assert password not in env_dump

        # the page over HTTPS on the published port, with the operator's certificate
        import ssl

        trust = ssl.create_default_context(cafile=str(certificate))
        page = f"https://127.0.0.1:{cfg.ports.web}/"
        index = httpx.get(page, verify=trust, timeout=5)
        assert index.status_code == 200 and "<html" in index.text.lower()
        overview = httpx.get(f"{page}api/pool", verify=trust, timeout=5)
        assert overview.status_code == 200, overview.text
        with pytest.raises(httpx.ConnectError):
            httpx.get(page, timeout=5)  # not trusted without the operator's certificate
        print(f"payouts stack healthy in {up_s:.0f}s")
    finally:
        with contextlib.suppress(TargetError):
            target.destroy(purge=True)
