"""Redis with the deployment's ACL file and TLS (issue 18 item 2), against a real ``redis-server``:

- the pool's accounting works as the ``pool`` user over ``rediss://`` verified against the CA;
- the ``exporter`` user reads (INFO, GET) and is refused any write;
- the ``default`` user is off: an unauthenticated client runs nothing, AUTH as default fails;
- the pool user cannot run dangerous commands nor touch keys outside ``ckbpool:``;
- plaintext to the TLS port gets no answer, and a server certificate from another CA is refused.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rexc

from ckbpool.bus import Share
from ckbpool.payouts.pplns import read_shares
from ckbpool.pool.accounting import PREFIX, ShareAccounting
from ckbpool.pool.config import RedisSettings
from ckbpool.pool.redis_conn import EXPORTER_USER, POOL_USER, connect_redis, redis_from_settings, render_acl
from ckbpool.retry import Backoff
from support.kafka import child_guard, free_port
from support.tls import TestCA

pytestmark = pytest.mark.integration


@dataclass
class AclRedis:
    port: int
    ca: TestCA
    pool_password_file: Path
    exporter_password: str

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


def _ready(port: int, ca_file: Path, password: str, timeout: float = 15.0) -> None:
    import redis as syncredis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client = syncredis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca_file), username=POOL_USER,
            password=password, socket_timeout=1.0, socket_connect_timeout=1.0,
        )  # fmt: skip
        try:
            if client.ping():
                return
        except (rexc.ConnectionError, rexc.TimeoutError, OSError):
            time.sleep(0.1)
        finally:
            client.close()
    raise TimeoutError(f"redis-server with TLS on {port} did not answer within {timeout}s")


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("redis")
    pool_password, exporter_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    acl = tmp_path / "users.acl"
    acl.write_text(render_acl(pool_password, exporter_password))
    acl.chmod(0o600)
    pool_password_file = tmp_path / "redis.pool.password"
    pool_password_file.write_text(pool_password + "\n")
    port = free_port()
    args = [
        binary,
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
        "--tls-ca-cert-file", str(ca.ca_file), "--tls-auth-clients", "no",
        "--aclfile", str(acl), "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
        "--logfile", str(tmp_path / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=child_guard(),
    )  # fmt: skip
    try:
        _ready(port, ca.ca_file, pool_password)
        yield AclRedis(port, ca, pool_password_file, exporter_password)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def share(seq: int) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user="alice", worker="rig1", job_id=1, height=100, nonce=seq,
        share_target=1 << 240, share_difficulty=1.0, accepted=True, reason="", is_block=False, block_hash=b"",
        timestamp=time.time(), source="stratum-1-acl", seq=seq,
    )  # fmt: skip


async def test_pool_accounting_works_as_its_acl_user_over_tls(acl_redis: AclRedis) -> None:
    settings = RedisSettings(
        url=acl_redis.url, username=POOL_USER, password_file=acl_redis.pool_password_file,
        tls_ca_file=acl_redis.ca.ca_file, timeout_s=2.0,
    )  # fmt: skip
    client = redis_from_settings(settings)
    try:
        accounting = ShareAccounting(client, policy=Backoff(initial=0.05, maximum=0.3, jitter=0.05), max_lag_s=2.0)
        assert await accounting.apply([share(n) for n in range(1, 21)]) == (20, 0)
        assert await accounting.apply([share(n) for n in range(1, 21)]) == (0, 20)
        assert int((await accounting.worker_stats("alice", "rig1"))["accepted"]) == 20
        assert len(await read_shares(client)) == 20
        # nothing outside its keys, nothing dangerous
        with pytest.raises(rexc.NoPermissionError):
            await client.set("other:key", "1")
        with pytest.raises(rexc.NoPermissionError):
            await client.flushall()
        with pytest.raises(rexc.NoPermissionError):
            await client.config_set("appendonly", "no")
    finally:
        await client.aclose()


async def test_exporter_reads_and_is_refused_writes(acl_redis: AclRedis) -> None:
    writer = connect_redis(
        acl_redis.url, acl_redis.pool_password_file.read_text().strip(), username=POOL_USER,
        ca_file=acl_redis.ca.ca_file, timeout_s=2.0,
    )  # fmt: skip
    exporter = connect_redis(
        acl_redis.url, acl_redis.exporter_password, username=EXPORTER_USER, ca_file=acl_redis.ca.ca_file,
        timeout_s=2.0,
    )  # fmt: skip
    try:
        await writer.set(f"{PREFIX}probe", "42")
        info = await exporter.info("server")
        assert "redis_version" in info
        assert await exporter.get(f"{PREFIX}probe") == b"42"
        for write in (
            exporter.set(f"{PREFIX}probe", "0"),
            exporter.delete(f"{PREFIX}probe"),
            exporter.xadd(f"{PREFIX}sharelog", {"x": "1"}),
            exporter.config_set("maxmemory", "1"),
            exporter.eval("return redis.call('SET', KEYS[1], 'x')", 1, f"{PREFIX}probe"),
        ):
            with pytest.raises(rexc.NoPermissionError):
                await write
        assert await writer.get(f"{PREFIX}probe") == b"42"
    finally:
        await writer.aclose()
        await exporter.aclose()


async def test_default_user_is_disabled(acl_redis: AclRedis) -> None:
    anonymous = connect_redis(acl_redis.url, ca_file=acl_redis.ca.ca_file, timeout_s=2.0)
    as_default = connect_redis(
        acl_redis.url, acl_redis.exporter_password, username="default", ca_file=acl_redis.ca.ca_file, timeout_s=2.0
    )
    try:
        with pytest.raises((rexc.AuthenticationError, rexc.NoPermissionError, rexc.ResponseError)):
            await anonymous.ping()
        with pytest.raises(rexc.AuthenticationError):
            await as_default.ping()
    finally:
        await anonymous.aclose()
        await as_default.aclose()


async def test_plaintext_and_a_foreign_ca_are_refused(acl_redis: AclRedis, tmp_path: Path) -> None:
    password = acl_redis.pool_password_file.read_text().strip()
    plain = aioredis.Redis(
        host="127.0.0.1", port=acl_redis.port, username=POOL_USER, password=password, socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )  # fmt: skip
    try:
        with pytest.raises((rexc.ConnectionError, rexc.TimeoutError)):
            await plain.ping()
    finally:
        with contextlib.suppress(Exception):
            await plain.aclose()
    foreign = TestCA(tmp_path / "other-ca", name="someone else's CA")
    client = connect_redis(acl_redis.url, password, username=POOL_USER, ca_file=foreign.ca_file, timeout_s=2.0)
    try:
        with pytest.raises(rexc.ConnectionError, match=r"(?i)certificate"):
            await client.ping()
    finally:
        await client.aclose()
    with pytest.raises(ValueError, match="rediss://"):
        connect_redis(f"redis://127.0.0.1:{acl_redis.port}/0", ca_file=acl_redis.ca.ca_file)
    with pytest.raises(ValueError, match="rediss://"):
        RedisSettings(url=f"redis://127.0.0.1:{acl_redis.port}/0", tls_ca_file=acl_redis.ca.ca_file)


def test_acl_lines_refuse_unsafe_names_and_passwords() -> None:
    with pytest.raises(ValueError):
        render_acl("has space", "ok")
    with pytest.raises(ValueError):
        render_acl("", "ok")
    with pytest.raises(ValueError):
        render_acl("ok", ">injected")
    text = render_acl("p1", "p2", extra={"reader": ("p3", "-@all +get ~ckbpool:*")})
    assert "user default off" in text and "nopass" not in text
    assert [line.split()[1] for line in text.splitlines()] == ["default", "pool", "exporter", "reader"]
