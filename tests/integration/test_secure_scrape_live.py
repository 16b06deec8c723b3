"""Issue 18's ledger and scrape hops, with real servers and the settings the hosts target renders:

* a real PostgreSQL started with the rendered TLS settings (the ``-c`` arguments of the postgres service's
  command, the rendered pg_hba.conf, the keystore the deploy issued, copied 0600 for the server's uid as the
  container does) refuses a plaintext client, refuses verify-full against an address its certificate does not
  name, and accepts verify-full for the private address -- through the pool's own ledger URL too;
* the scrape gateway in front of a real node exporter (Debian's prometheus-node-exporter) refuses a scrape
  without the token or with a wrong one, and plain HTTP; a real Prometheus running the rendered remote job
  (https, the CA, the token file) scrapes it, and its samples keep the ``job`` label the alerts use.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shlex
import shutil
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import sqlalchemy as sa
import yaml

from ckbpool.deploy import pki
from ckbpool.deploy.config import DeployConfig, parse_config
from ckbpool.deploy.hostfiles import (
    POSTGRES_HBA,
    SCRAPE_GATEWAY_TOML,
    HostPlan,
    Placement,
    ensure_host_secrets,
    host_plan,
)
from ckbpool.deploy.secrets import POSTGRES_PASSWORD, SCRAPE_TOKEN, generate_secrets
from ckbpool.payouts.ledger import create_ledger_engine
from ckbpool.pool.config import load_pool_config
from ckbpool.scrapegw import ScrapeGateway, load_gateway_config
from support.kafka import child_guard, free_port
from support.postgres import PostgresServer, PostgresUnavailable

pytestmark = pytest.mark.integration

ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
INVENTORY = {"ckb_node": ["data"], "redis": ["data"], "postgres": ["data"], "pool": ["core"], "monitoring": ["core"]}
ADDRESSES = {"data": "10.9.0.2", "core": "10.9.0.5"}
#: where the postgres container keeps its copy of the keystore / reads pg_hba.conf (compose.yaml.j2)
CONTAINER_KEYSTORE = "/var/run/postgresql/server.pem"
CONTAINER_HBA = "/etc/postgresql/pg_hba.conf"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> tuple[DeployConfig, Path, dict[str, HostPlan]]:
    cfg = parse_config({
        "name": "live", "network": "dev", "payout_address": ADDRESS, "services": {"redis": True},
        "payouts": {"enabled": True, "database": "postgres"}, "monitoring": {"enabled": True},
    })  # fmt: skip
    secrets_dir = tmp_path_factory.mktemp("deploy") / "secrets"
    generate_secrets(cfg, secrets_dir)
    placement = Placement.from_inventory(cfg, INVENTORY, ADDRESSES)
    ensure_host_secrets(cfg, placement, secrets_dir)
    plans = {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/live", controller_secrets_dir=secrets_dir)
        for h in ADDRESSES
    }
    return cfg, secrets_dir, plans


def _postgres_settings(plan: HostPlan) -> dict[str, str]:
    """The ``-c name=value`` settings of the rendered postgres service's command."""
    compose = yaml.safe_load(plan.files["compose/compose.yaml"])
    script = compose["services"]["postgres"]["command"][0]
    args = shlex.split(script.rsplit("exec docker-entrypoint.sh postgres", 1)[1])
    assert args[0::2] == ["-c"] * (len(args) // 2)
    return dict(a.split("=", 1) for a in args[1::2])


@pytest.fixture
def tls_postgres(deployment: tuple[DeployConfig, Path, dict[str, HostPlan]]) -> Iterator[PostgresServer]:
    _cfg, secrets_dir, plans = deployment
    try:
        server = PostgresServer(database="postgres")
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    # what the container does as root before the image's entrypoint: a 0600 copy owned by the server's uid
    keystore = server.dir / "server.pem"
    shutil.copyfile(secrets_dir / pki.server_keystore_file("postgres"), keystore)
    keystore.chmod(0o600)
    hba = server.dir / "pg_hba.conf"
    hba.write_text(plans["data"].files[POSTGRES_HBA])
    for path in (keystore, hba):
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    paths = {CONTAINER_KEYSTORE: str(keystore), CONTAINER_HBA: str(hba)}
    rendered = _postgres_settings(plans["data"])
    server.settings = {
        k: paths.get(v, v) for k, v in rendered.items() if k not in ("shared_buffers", "max_connections")
    }
    assert server.settings["ssl"] == "on" and server.settings["hba_file"] == str(hba)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


def _connect(server: PostgresServer, **params: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=params.pop("host", server.HOST), port=server.port, user=server.USER, password=server.password,
        dbname="postgres", connect_timeout=5, **params,
    )  # fmt: skip


def test_rendered_postgres_takes_tls_only_and_clients_verify_it(
    tls_postgres: PostgresServer,
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _cfg, secrets_dir, plans = deployment
    ca = str(secrets_dir / pki.KAFKA_CA_CERT)
    # a plaintext client: refused by pg_hba.conf whatever its password
    with pytest.raises(psycopg.OperationalError, match=r"rejects connection.*no encryption"):
        _connect(tls_postgres, sslmode="disable").close()
    # verify-full for an address the certificate does not name: the client refuses the server
    with pytest.raises(psycopg.OperationalError, match=r"does not match|certificate"):
        _connect(tls_postgres, host="10.9.0.77", hostaddr="127.0.0.1", sslmode="verify-full", sslrootcert=ca).close()
    # verify-full for the private address the deploy issued it for (dialled on loopback here): TLS, accepted
    with _connect(tls_postgres, host="10.9.0.2", hostaddr="127.0.0.1", sslmode="verify-full", sslrootcert=ca) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None and row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")
    # the exporter's way: the service name, which the certificate names too
    with _connect(tls_postgres, host="postgres", hostaddr="127.0.0.1", sslmode="verify-full", sslrootcert=ca):
        pass
    # and the pool's own ledger URL from the rendered pool.toml (files mapped to this machine's)
    payouts = tomllib.loads(plans["core"].files["compose/pool/pool.toml"])["payouts"]
    password = tmp_path / POSTGRES_PASSWORD
    password.write_text(tls_postgres.password + "\n")
    settings = load_pool_config(data={"payouts": {
        **{k: payouts[k] for k in ("db_host", "db_name", "db_user", "db_sslmode")},
        "db_port": tls_postgres.port, "db_password_file": str(password), "db_sslrootcert": ca, "db_name": "postgres",
    }}).payouts  # fmt: skip
    assert (settings.db_host, settings.db_sslmode) == ("10.9.0.2", "verify-full")
    url = settings.database()
    assert url is not None and "sslmode=verify-full" in url
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")  # libpq dials here, and verifies db_host's name
    engine = create_ledger_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar() is True
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------ scrapes


@pytest.fixture
def node_exporter() -> Iterator[int]:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if binary is None:
        pytest.skip("prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)")
    port = free_port()
    args = [binary, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
            "--collector.loadavg", "--collector.meminfo"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=child_guard())
    try:
        _wait_tcp(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


async def _get(url: str, ca: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=ca)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(url, headers=headers or {}, ssl=context) as response,
    ):
        return response.status, await response.text()


async def test_the_gateway_refuses_unauthenticated_scrapes_and_prometheus_scrapes_it(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]], node_exporter: int, tmp_path: Path
) -> None:
    _cfg, secrets_dir, plans = deployment
    ca = str(secrets_dir / pki.KAFKA_CA_CERT)
    token = (secrets_dir / SCRAPE_TOKEN).read_text().strip()
    # the deploy's CA signs the gateway's certificate; here for the loopback address it listens on
    pki.ensure_server_keystore(secrets_dir, "scrape-live-test", ["127.0.0.1"])
    keystore = secrets_dir / pki.server_keystore_file("scrape-live-test")
    rendered = load_gateway_config(data=tomllib.loads(plans["data"].files[SCRAPE_GATEWAY_TOML]))
    assert set(rendered.targets) == {"node", "ckb", "redis", "postgres"}
    config = rendered.model_copy(update={
        "listen_host": "127.0.0.1", "listen_port": 0, "tls_cert_file": keystore, "tls_key_file": keystore,
        "token_file": secrets_dir / SCRAPE_TOKEN, "targets": {"node": f"http://127.0.0.1:{node_exporter}/metrics"},
    })  # fmt: skip
    async with ScrapeGateway(config) as gateway:
        base = f"https://127.0.0.1:{gateway.port}/scrape"
        assert (await _get(f"{base}/node", ca))[0] == 401
        assert (await _get(f"{base}/node", ca, {"Authorization": "Bearer not-the-token-0123456789"}))[0] == 401
        assert (await _get(f"{base}/node", ca, {"Authorization": f"Basic {token}"}))[0] == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert (await _get(f"{base}/ckb", ca, bearer))[0] == 404  # not a job of this gateway
        status, body = await _get(f"{base}/node", ca, bearer)
        assert status == 200 and "node_load1 " in body
        # TLS only: a plain HTTP request gets no metrics
        plain = f"http://127.0.0.1:{gateway.port}/scrape/node"
        with pytest.raises(aiohttp.ClientError):
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.get(plain, headers=bearer) as r,
            ):
                assert r.status != 200
        refused = gateway.refused_total.labels(reason="unauthorized")._value.get()
        assert refused == 3

        # a real Prometheus with the rendered remote job: only its files and target are this machine's
        prom = yaml.safe_load(plans["core"].files["compose/prometheus/prometheus.yml"])
        job = next(j for j in prom["scrape_configs"] if j["job_name"] == "node-gateway")
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{gateway.port}"]
        job["tls_config"]["ca_file"] = ca
        job["authorization"]["credentials_file"] = str(secrets_dir / SCRAPE_TOKEN)
        wrong = tmp_path / "wrong.token"
        wrong.write_text("a-token-the-gateway-does-not-know\n")
        impostor = yaml.safe_load(yaml.safe_dump(job))
        impostor["job_name"] = "impostor"
        impostor["static_configs"][0]["labels"] = {"job": "impostor"}
        impostor["authorization"]["credentials_file"] = str(wrong)
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                                               "scrape_configs": [job, impostor]}))  # fmt: skip
        port = free_port()
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"), preexec_fn=child_guard(),
        )  # fmt: skip
        try:
            up = await _wait_up(port, proc, tmp_path / "prometheus.log")
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    assert up["node"]["metric"]["instance"] == f"127.0.0.1:{gateway.port}"
    assert up["node"]["value"][1] == "1"  # scraped over TLS with the token, under the alerts' job label
    assert up["impostor"]["value"][1] == "0"  # the wrong token: refused
    assert gateway.scrapes_total.labels(job="node", outcome="ok")._value.get() >= 2


async def _wait_up(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> dict[str, Any]:
    """``up`` per job once Prometheus has scraped both jobs (bounded)."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"}) as r:
                    result = (await r.json())["data"]["result"] if r.status == 200 else []
            except aiohttp.ClientError:
                result = []
            by_job = {s["metric"]["job"]: s for s in result}
            if {"node", "impostor"} <= set(by_job):
                return by_job
            await asyncio.sleep(0.5)
    raise TimeoutError(f"prometheus scraped nothing in {timeout}s: {log.read_text()[-2000:]}")


async def test_the_gateway_relays_a_streamed_body_whole_and_cuts_an_oversized_one(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
) -> None:
    """An exporter that answers in many small writes gets relayed byte for byte; one over ``max_response_bytes``
    is a 502, never a truncated exposition Prometheus would take for a complete one."""
    from aiohttp import web

    _cfg, secrets_dir, _plans = deployment
    ca = str(secrets_dir / pki.KAFKA_CA_CERT)
    line = b'ckbpool_test_metric{n="%d"} 1\n'
    small = b"".join(line % i for i in range(20_000))  # ~600 kB
    big = small * 3

    async def exposition(request: web.Request) -> web.StreamResponse:
        body = big if request.match_info["size"] == "big" else small
        response = web.StreamResponse(headers={"Content-Type": "text/plain; version=0.0.4"})
        await response.prepare(request)
        for i in range(0, len(body), 4096):  # many writes, with pauses: chunks arrive one by one
            await response.write(body[i : i + 4096])
            if i % (64 * 4096) == 0:
                await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{size}", exposition)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream = int(runner.addresses[0][1])
    pki.ensure_server_keystore(secrets_dir, "scrape-live-test", ["127.0.0.1"])
    keystore = secrets_dir / pki.server_keystore_file("scrape-live-test")
    config = load_gateway_config(data={
        "listen_host": "127.0.0.1", "listen_port": 0, "tls_cert_file": str(keystore), "tls_key_file": str(keystore),
        "token_file": str(secrets_dir / SCRAPE_TOKEN), "max_response_bytes": 1 << 20,
        "targets": {"small": f"http://127.0.0.1:{upstream}/small", "big": f"http://127.0.0.1:{upstream}/big"},
    })  # fmt: skip
    bearer = {"Authorization": f"Bearer {(secrets_dir / SCRAPE_TOKEN).read_text().strip()}"}
    try:
        async with ScrapeGateway(config) as gateway:
            status, text = await _get(f"https://127.0.0.1:{gateway.port}/scrape/small", ca, bearer)
            assert status == 200 and text.encode() == small
            status, text = await _get(f"https://127.0.0.1:{gateway.port}/scrape/big", ca, bearer)
            assert status == 502 and "exceeds" in text
            assert gateway.refused_total.labels(reason="too_large")._value.get() == 1
    finally:
        await runner.cleanup()
