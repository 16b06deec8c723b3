"""Distributed mode: the pool's roles as separate processes connected only by real Kafka (KRaft).

Processes (each `ckbpool pool run -c <toml>`): the job maker (template watcher; jobs are built from templates
by each stratum server), two stratum servers, the block maker, and accounting (Redis). Two CPU miners mine
through the two stratum servers. Then Kafka stops for 30 s: shares keep being accepted (spooled), and after
Kafka returns the accounting count equals the stratum servers' accepted-share count.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from test_pool_e2e import pool_node  # noqa: F401  (module-scoped node fixture)

from ckbpool.ckb.node import CkbNode, free_port
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.config import IDS_PER_STRATUM_HOST
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.keys import Keypair, encode_secret_key
from support.kafka import KafkaBroker, running_broker
from support.redis import RedisServer

pytestmark = pytest.mark.integration
CKBPOOL = str(Path(sys.executable).parent / "ckbpool")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    yield from running_broker(tmp_path_factory)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Proc:
    def __init__(self, name: str, config: Path, log: Path, http_port: int, stratum_port: int | None) -> None:
        self.name = name
        self.http_port = http_port
        self.stratum_port = stratum_port
        self.log = log
        self.popen = subprocess.Popen(
            [CKBPOOL, "pool", "run", "-c", str(config), "--log-level", "info"],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, object]) -> Path:
    lines = [f"{k} = {_toml(v)}" for k, v in sections.items() if not isinstance(v, dict)]
    for name, table in sections.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def _metric(http: httpx.AsyncClient, port: int, line_prefix: str) -> float:
    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.split()[-1])
    return 0.0


async def _wait(predicate: object, timeout: float, what: str, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        for proc in procs:
            if proc.popen.poll() is not None:
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in procs)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        await asyncio.sleep(0.2)


async def test_roles_as_separate_processes_over_kafka_mine_blocks_and_survive_a_kafka_outage(
    pool_node: CkbNode,  # noqa: F811
    kafka: KafkaBroker,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    authority, static = Keypair.generate(), Keypair.generate()
    now = int(time.time())
    key_file = tmp_path / "pool-static.key"
    key_file.write_text(encode_secret_key(static.secret))
    cert_file = tmp_path / "pool-certificate.hex"
    cert_file.write_text(Certificate.issue(authority, static.xonly_public, now - 60, now + 3600).to_bytes().hex())
    redis_password = tmp_path / "redis.pass"
    redis_password.write_text(redis_server.password)

    def config(name: str, roles: list[str], server_id: int = 1) -> tuple[Path, int, int | None]:
        http_port = free_port()
        stratum_port = free_port() if "stratum" in roles else None
        bus = kafka.url(client_id=name, spool_dir=str(tmp_path / f"spool-{name}"), connect_timeout="3")
        sections: dict[str, object] = {
            "network": "dev",
            "roles": roles,
            "node": {
                "rpc_url": pool_node.config.rpc_url,
                "subscribe_address": f"127.0.0.1:{pool_node.config.tcp_rpc_port}",
                "poll_interval_ms": 200,
            },
            "stratum": {
                "listen_host": "127.0.0.1",
                "listen_port": stratum_port or 0,
                "server_id": server_id,
                "static_key_file": str(key_file),
                "certificate_file": str(cert_file),
            },
            "vardiff": {"share_interval_s": 0.1, "retarget_interval_s": 1.0, "initial_hashrate": 1e6},
            "blocks": {"data_dir": str(tmp_path / f"blocks-{name}")},
            "bus": {"url": bus},
            "redis": {
                "url": redis_server.url.replace(f":{redis_server.password}@", ""),
                "password_file": str(redis_password),
            },
            "http": {"listen_host": "127.0.0.1", "listen_port": http_port},
            "success_batch_ms": 20,
        }
        return write_config(tmp_path / f"{name}.toml", sections), http_port, stratum_port

    specs = [
        ("jobmaker", ["jobmaker"], 1),
        ("stratum-1", ["stratum"], 1),
        # each stratum process takes server_ids server_id .. server_id + workers - 1 (its worker processes; template
        # consumer groups and extranonce prefixes follow them): ranges apart, as deploys place them
        ("stratum-2", ["stratum"], 1 + IDS_PER_STRATUM_HOST),
        ("blockmaker", ["blockmaker"], 1),
        ("accounting", ["accounting"], 1),
    ]
    procs: list[Proc] = []
    miners: list[Sv2Miner] = []
    tasks: list[asyncio.Task[object]] = []
    try:
        for name, roles, server_id in specs:
            path, http_port, stratum_port = config(name, roles, server_id)
            procs.append(Proc(name, path, tmp_path / f"{name}.log", http_port, stratum_port))
        by_name = {p.name: p for p in procs}
        async with httpx.AsyncClient(timeout=2) as http:

            async def all_healthy() -> bool:
                for proc in procs:
                    try:
                        if (await http.get(f"http://127.0.0.1:{proc.http_port}/health")).status_code != 200:
                            return False
                    except httpx.HTTPError:
                        return False
                return True

            await _wait(all_healthy, 60, "every process to be healthy", procs)
            stratum = [by_name["stratum-1"], by_name["stratum-2"]]
            await _wait(lambda: all(s.popen.poll() is None for s in stratum), 5, "stratum servers", procs)
            for i, (server, user) in enumerate(zip(stratum, ("alice", "bob"), strict=True)):
                assert server.stratum_port is not None
                miner = Sv2Miner(
                    "127.0.0.1",
                    server.stratum_port,
                    f"{user}.rig{i}",
                    authority_public_key=authority.authority_public_key,
                )
                miners.append(miner)
                tasks.append(asyncio.create_task(miner.run(duration=240)))

            async with pool_node.client() as client:
                start_tip = await client.get_tip_block_number()

                async def blocks_accepted() -> bool:
                    return await client.get_tip_block_number() >= start_tip + 5

                await _wait(blocks_accepted, 90, "5 blocks accepted by the node", procs)

            async def accepted_by_stratum() -> float:
                return sum(
                    [await _metric(http, s.http_port, 'ckbpool_shares_total{result="accepted"}') for s in stratum]
                )

            rds = redis.Redis.from_url(redis_server.url)

            async def accepted_in_redis() -> int:
                return sum(int(rds.hget(f"ckbpool:user:{user}", "accepted") or 0) for user in ("alice", "bob"))

            await _wait(lambda: rds.llen("ckbpool:blocks") >= 1, 30, "block outcomes in Redis", procs)

            # Kafka goes away for 30 s: the stratum servers keep accepting shares (spooled on disk)
            kafka.stop(keep_data=True)
            before = await accepted_by_stratum()
            await asyncio.sleep(30)
            during = await accepted_by_stratum()
            assert during > before, "shares stopped being accepted while Kafka was down"
            kafka.start()

            for miner in miners:
                miner.stop()
            for task in tasks:
                await task
            # last acknowledgements and publishes; with stratum worker processes the parent sums their
            # counters from once-a-second reports, so the figure is read until it stops moving (bounded)
            final = await accepted_by_stratum()
            for _ in range(20):
                await asyncio.sleep(1.5)
                latest = await accepted_by_stratum()
                if latest == final:
                    break
                final = latest

            async def accounting_caught_up() -> bool:
                return await accepted_in_redis() >= final

            await _wait(accounting_caught_up, 90, "accounting to count every accepted share", procs)
            # at-least-once delivery may replay a share across a crash; here nothing crashed: exactly equal
            assert await accepted_in_redis() == final
            for miner in miners:
                assert miner.stats.accepted > 0
    finally:
        for miner in miners:
            miner.stop()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        for proc in procs:
            proc.stop()
