"""The pool end to end: real ckb node -> template watcher -> encrypted SV2 server -> CPU miners -> blocks the
node accepts. No mocks: the same Pool object `ckbpool pool run` starts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from ckbpool.ckb.devwallet import DevKey
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.target import target_to_compact
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.service import Pool
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.keys import Keypair
from ckbpool.sv2.noise import ResponderCredentials

pytestmark = pytest.mark.integration

# ~2^20 hashes a block: a few blocks a second from one CPU miner, several shares per block
POOL_TEST_COMPACT_TARGET = target_to_compact(1 << 236)


@pytest.fixture(scope="module")
def pool_node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey) -> Iterator[CkbNode]:
    from conftest import start_dev_node

    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb-pool"), dev_key, genesis_compact_target=POOL_TEST_COMPACT_TARGET
    )
    try:
        yield node
    finally:
        node.stop()


def pool_keys() -> tuple[ResponderCredentials, str]:
    authority, static = Keypair.generate(), Keypair.generate()
    now = int(time.time())
    cert = Certificate.issue(authority, static.xonly_public, now - 60, now + 3600)
    return ResponderCredentials.from_certificate(static.secret, cert), authority.authority_public_key


def pool_config(node: CkbNode, data_dir: Path, **overrides: object) -> PoolConfig:
    data = {
        "network": "dev",
        "node": {
            "rpc_url": node.config.rpc_url,
            "subscribe_address": f"127.0.0.1:{node.config.tcp_rpc_port}",
            "poll_interval_ms": 200,
        },
        "stratum": {"listen_host": "127.0.0.1", "listen_port": 0},
        "vardiff": {"share_interval_s": 0.05, "retarget_interval_s": 1.0, "initial_hashrate": 1e6},
        "blocks": {"data_dir": str(data_dir / "blocks")},
        "http": {"listen_host": "127.0.0.1", "listen_port": 0},
        "success_batch_ms": 20,
    }
    data.update(overrides)
    return PoolConfig.model_validate(data)


@pytest.fixture
async def running_pool(pool_node: CkbNode, tmp_path: Path) -> AsyncIterator[tuple[Pool, str]]:
    credentials, authority = pool_keys()
    pool = Pool(pool_config(pool_node, tmp_path), credentials=credentials)
    await pool.start()
    try:
        for _ in range(100):
            if pool.watcher is not None and pool.watcher.current is not None:
                break
            await asyncio.sleep(0.05)
        yield pool, authority
    finally:
        await pool.close()


async def _wait_for(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("extended", [False, True], ids=["standard", "extended"])
async def test_cpu_miner_over_encrypted_sv2_gets_blocks_accepted_by_the_node(
    running_pool: tuple[Pool, str], pool_node: CkbNode, extended: bool
) -> None:
    pool, authority = running_pool
    assert pool.server is not None
    host, port = pool.server.address
    async with pool_node.client() as client:
        start_tip = await client.get_tip_block_number()
        miner = Sv2Miner(host, port, "ckt1qtestaddress.rig1", authority_public_key=authority, extended=extended)
        task = asyncio.create_task(miner.run(duration=60))
        try:
            await _wait_for(lambda: sum(b.status == "accepted" for b in pool.recent_blocks) >= 3, 50)
        finally:
            miner.stop()
            stats = await task
        accepted_blocks = [b for b in pool.recent_blocks if b.status == "accepted"]
        for block in accepted_blocks:
            header = await client.call("get_header_by_number", [hex(block.height)])
            assert header["hash"] == "0x" + block.block_hash.hex(), "pool says accepted but the node disagrees"
        assert await client.get_tip_block_number() >= start_tip + 3
    assert stats.accepted > 0
    assert stats.rejected_reasons.keys() <= {"stale-share"}, stats.rejected_reasons
    assert pool.metrics.shares_total.labels(result="accepted")._value.get() >= stats.accepted


async def test_status_and_metrics_endpoints_report_the_pool(running_pool: tuple[Pool, str]) -> None:
    pool, _ = running_pool
    assert pool.status_server is not None
    base = f"http://127.0.0.1:{pool.status_server.port}"
    async with httpx.AsyncClient() as http:
        status = (await http.get(f"{base}/status")).json()
        metrics = (await http.get(f"{base}/metrics")).text
        health = await http.get(f"{base}/health")
    assert status["job"]["height"] >= 1
    assert status["network"] == "dev"
    assert "ckbpool_shares_total" in metrics and "ckbpool_template_age_seconds" in metrics
    for name in (
        "ckbpool_bus_published_total",
        "ckbpool_job_age_seconds",
        "ckbpool_template_fetch_errors_total",
        "ckbpool_template_stale 0.0",
        "ckbpool_blocks_pending",
        "ckbpool_hashrate_hashes_per_second",
    ):
        assert name in metrics, name
    assert health.status_code == 200
    json.dumps(status)


async def test_found_blocks_are_persisted_before_and_after_submission(
    running_pool: tuple[Pool, str], tmp_path: Path
) -> None:
    pool, authority = running_pool
    assert pool.server is not None
    host, port = pool.server.address
    miner = Sv2Miner(host, port, "ckt1qtestaddress.rig2", authority_public_key=authority)
    task = asyncio.create_task(miner.run(duration=60))
    try:
        await _wait_for(lambda: any(b.status == "accepted" for b in pool.recent_blocks), 50)
    finally:
        miner.stop()
        await task
    assert pool.block_maker is not None
    await _wait_for(lambda: pool.block_maker.pending_count == 0, 30)  # submissions still in flight finish
    records = [json.loads(p.read_text()) for p in (tmp_path / "blocks").glob("*.json")]
    assert records and all(r["status"] in ("accepted", "stale") for r in records)
    assert all(r["block"]["header"]["nonce"].startswith("0x") for r in records)
