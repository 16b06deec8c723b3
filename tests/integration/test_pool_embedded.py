"""Embedded mode, the way `ckbpool pool run` runs by default: one process, in-process bus, real Redis.

Two CPU miners over encrypted Stratum V2 mine at least ten blocks that the real node accepts, and every accepted
share and block shows up in Redis, the status endpoint and the Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (module-scoped node fixture)

from ckbpool.ckb.node import CkbNode
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.service import Pool
from support.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_two_miners_mine_ten_blocks_and_accounting_matches(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    credentials, authority = pool_keys()
    config = pool_config(pool_node, tmp_path, redis={"url": redis_server.url})
    async with Pool(config, credentials=credentials) as pool:
        assert pool.server is not None and pool.accounting is not None and pool.status_server is not None
        host, port = pool.server.address
        miners = [
            Sv2Miner(host, port, "alice.rig1", authority_public_key=authority),
            Sv2Miner(host, port, "bob.rig2", authority_public_key=authority, extended=True),
        ]
        tasks = [asyncio.create_task(m.run(duration=120)) for m in miners]
        deadline = time.monotonic() + 110
        try:
            while sum(b.status == "accepted" for b in pool.recent_blocks) < 10:
                assert time.monotonic() < deadline, f"only {len(pool.recent_blocks)} blocks in time"
                for task in tasks:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.1)
        finally:
            for miner in miners:
                miner.stop()
            stats = [await t for t in tasks]

        accepted_blocks = [b for b in pool.recent_blocks if b.status == "accepted"]
        async with pool_node.client() as client:
            for block in accepted_blocks:
                header = await client.call("get_header_by_number", [hex(block.height)])
                assert header["hash"] == "0x" + block.block_hash.hex()
        assert {b.user for b in accepted_blocks} <= {"alice", "bob"}

        # every share the pool accepted reaches Redis (wait for the accounting consumer to drain)
        pool_accepted = pool.metrics.shares_total.labels(result="accepted")._value.get()
        for _ in range(100):
            alice = await pool.accounting.user_stats("alice")
            bob = await pool.accounting.user_stats("bob")
            in_redis = int(alice.get("accepted", 0)) + int(bob.get("accepted", 0))
            if in_redis == pool_accepted:
                break
            await asyncio.sleep(0.05)
        assert in_redis == pool_accepted
        for miner_stats, user in zip(stats, ("alice", "bob"), strict=True):
            assert miner_stats.accepted > 0
            # the miner counts acknowledgements it received; the last batch may still have been in flight
            recorded = int((await pool.accounting.user_stats(user))["accepted"])
            assert miner_stats.accepted <= recorded
        assert await pool.accounting.hashrate(minutes=1) > 0
        log = await pool.accounting.share_log(count=5)
        assert log and {"user", "worker", "ts", "work"} <= log[0].keys()
        blocks_in_redis = await pool.accounting.redis.lrange("ckbpool:blocks", 0, -1)
        assert len(blocks_in_redis) >= 10

        base = f"http://127.0.0.1:{pool.status_server.port}"
        async with httpx.AsyncClient() as http:
            status = (await http.get(f"{base}/status")).json()
            metrics = (await http.get(f"{base}/metrics")).text
        assert len(status["last_blocks"]) == 10 and status["hashrate_hps"] > 0
        assert 'ckbpool_blocks_total{status="accepted"}' in metrics
        accepted_line = next(
            line for line in metrics.splitlines() if line.startswith('ckbpool_blocks_total{status="accepted"}')
        )
        assert float(accepted_line.split()[-1]) >= 10
