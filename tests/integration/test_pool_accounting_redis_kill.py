"""The pool's own path, miners to books, while Redis is SIGKILLed and restarted (AOF): shares answered Success to
the miners == shares in the books, exactly, per user and in total.

No ckb node is needed: the process runs the stratum and accounting roles on the in-process bus, and the job comes
as a JobTemplate event (the RFC 0031 template), as a stratum-only process gets it. Two encrypted SV2 CPU miners
mine at an easy share target; Redis is killed twice mid-stream; /health turns false while it is gone; then the
pool shuts down in order (stratum stops reading, publishes its last shares and sends their Successes, accounting
drains) while the miners are still connected, so every Success they got is counted and vice versa.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pool_e2e import pool_keys

from ckbpool.bus import JobTemplate, Topic
from ckbpool.miner.sv2 import MinerError, Sv2Miner
from ckbpool.payouts.pplns import read_shares
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.service import Pool
from support.redis import RedisServer

pytestmark = pytest.mark.integration

VECTOR = Path(__file__).resolve().parents[1] / "data" / "rfc0031_vector.json"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_success_answers_equal_the_books_through_redis_kills(redis_server: RedisServer, tmp_path: Path) -> None:
    credentials, authority = pool_keys()
    config = PoolConfig.model_validate(
        {
            "network": "dev",
            "roles": ["stratum", "accounting"],
            "stratum": {"listen_host": "127.0.0.1", "listen_port": 0},
            "vardiff": {"share_interval_s": 0.05, "retarget_interval_s": 1.0, "initial_hashrate": 1e5},
            "blocks": {"data_dir": str(tmp_path / "blocks")},
            "http": {"listen_host": "127.0.0.1", "listen_port": 0},
            "redis": {"url": redis_server.url, "timeout_s": 1.0, "max_lag_s": 1.0},
            "success_batch_ms": 20,
        }
    )
    template = json.dumps(json.loads(VECTOR.read_text())["template"]).encode()
    pool = Pool(config, credentials=credentials)
    await pool.start()
    closed = False
    try:
        await pool.bus.publish(Topic.TEMPLATES, JobTemplate(1, template, time.time()))
        assert pool.server is not None and pool.accounting is not None
        for _ in range(100):
            if pool.server.jobs.current is not None:
                break
            await asyncio.sleep(0.05)
        host, port = pool.server.address
        miners = [
            Sv2Miner(host, port, "alice.rig1", authority_public_key=authority),
            Sv2Miner(host, port, "bob.rig2", authority_public_key=authority, extended=True),
        ]
        tasks = [asyncio.create_task(m.run(duration=60)) for m in miners]
        health: list[bool] = []

        async def watch(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                health.append(pool.healthy())
                await asyncio.sleep(0.1)

        await watch(3)
        for _ in range(2):
            redis_server.kill()
            await watch(2.5)  # longer than max_lag_s: /health must go false
            redis_server.start()
            await watch(3)
        assert False in health and health[-1] is True, "health never went false, or did not come back"
        assert all(m.stats.accepted > 20 for m in miners), [m.stats for m in miners]
        assert pool.accounting.errors > 0

        await pool.close()  # the order under test: stratum flush + Successes, accounting drain, close
        closed = True
        for task in tasks:
            with contextlib.suppress(MinerError, ConnectionError, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)

        books = pool.accounting
        client = books.redis = type(books.redis).from_url(redis_server.url)
        try:
            total = 0
            for miner, user in zip(miners, ("alice", "bob"), strict=True):
                recorded = int((await books.user_stats(user))["accepted"])
                assert recorded == miner.stats.accepted, f"{user}: {recorded} in the books, {miner.stats}"
                total += recorded
            assert total == sum(m.stats.accepted for m in miners)
            print(f"answered Success {total}, in the books {total}, redis errors retried {books.errors}")
            assert len(await read_shares(client)) == total
        finally:
            await client.aclose()
    finally:
        if not closed:
            await pool.close()
