"""The V1 proxy's abuse limits against real sockets, while an honest V1 miner keeps mining through it.

Real dev ckb node -> real Pool (encrypted SV2) -> Proxy -> one honest V1Miner, then, from other loopback addresses:
silent sockets (over the per-IP cap, then timed out before subscribing), sockets that subscribe and never
authorize until every miner id is held (the rest refused with error 30), sockets that authorize and fall silent,
and a line flood. Each limit must fire with its reason, the ids must all come back, and the honest miner must keep
its one connection and its accepted shares throughout. The pool's prefix is 7 bytes and extranonce2 8, so the
channel has 256 miner ids -- small enough to exhaust here; the 60k-socket run is benchmarks/abuse_proxy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)

from ckbpool.ckb.node import CkbNode
from ckbpool.miner.v1 import V1Miner
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy, load_proxy_config
from ckbpool.proxy.downstream import V1Server
from ckbpool.proxy.limits import Refusal
from ckbpool.v1.errors import StratumErrorCode

pytestmark = pytest.mark.integration

ACCOUNT = "ckt1qproxyabuseaccount"
PER_IP = 120
IDS = 256  # 16 - 7-byte prefix - extranonce2_size 8 = 1 id byte


@dataclass
class Stack:
    pool: Pool
    proxy: Proxy
    v1: V1Server
    address: tuple[str, int]


@pytest.fixture
async def stack(pool_node: CkbNode, tmp_path: Path) -> AsyncIterator[Stack]:  # noqa: F811
    credentials, authority = pool_keys()
    config = pool_config(
        pool_node,
        tmp_path,
        stratum={"listen_host": "127.0.0.1", "listen_port": 0, "extended_prefix_bytes": 7},
        vardiff={"share_interval_s": 0.05, "retarget_interval_s": 1.0, "initial_hashrate": 1e6},
    )
    async with Pool(config, credentials=credentials) as pool:
        assert pool.server is not None
        host, port = pool.server.address
        proxy_config = load_proxy_config(
            data={
                "identity": "aggregated",
                "http": {"enabled": False},
                "upstream": {"host": host, "port": port, "authority_public_key": authority, "user_identity": ACCOUNT},
                "v1": {
                    "listen_host": "127.0.0.1",
                    "listen_port": 0,
                    "extranonce2_size": 8,
                    "max_connections_per_ip": PER_IP,
                    "subscribe_timeout_s": 1.0,
                    "authorize_timeout_s": 5.0,  # long enough to open all 300 squatters first
                    "idle_timeout_s": 4.0,  # the honest miner shares every ~0.3 s: it never gets near this
                    "max_messages_per_second": 100.0,
                    "message_burst": 200,
                    "vardiff": {"initial_difficulty": 2e4, "share_interval_s": 0.3, "retarget_interval_s": 2.0},
                },
            }
        )
        async with Proxy(proxy_config) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            yield Stack(pool, proxy, proxy.v1, proxy.v1.address)


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _open(address: tuple[str, int], source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(*address, local_addr=(source, 0)), 10)


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float = 20.0) -> bytes:
    """Everything the server sent until it closed the connection (EOF or reset)."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(1 << 16), timeout):
            data += chunk
    return data


def _line(request_id: int, method: str, params: list[object]) -> bytes:
    return json.dumps({"id": request_id, "method": method, "params": params}).encode() + b"\n"


async def test_abuse_limits_fire_by_reason_return_every_id_and_spare_the_honest_miner(stack: Stack) -> None:
    v1 = stack.v1
    miner = V1Miner(*stack.address, f"{ACCOUNT}.honest", chunk=5_000)
    mining = asyncio.create_task(miner.run())
    try:
        await asyncio.wait_for(miner.ready.wait(), 30)
        await _wait(lambda: miner.stats.accepted >= 3, 60, "the honest miner's first shares")
        assert v1.ids.in_use == 1

        # 1. silent sockets from one address: PER_IP are taken, the rest refused at accept; then the subscribe
        #    timeout ends the silent ones
        silent = [await _open(stack.address, "127.0.0.2") for _ in range(PER_IP + 30)]
        await _wait(lambda: v1.refusals[Refusal.PER_IP] == 30, 20, "30 per-IP refusals")
        await _wait(lambda: v1.refusals[Refusal.SUBSCRIBE_TIMEOUT] == PER_IP, 20, "the subscribe timeouts")
        for reader, writer in silent:
            assert await _closed_by_server(reader) == b""
            writer.close()
        assert v1.per_ip["127.0.0.2"] == 0

        # 2. subscribe and never authorize, from three addresses, until every id is held: the rest are told
        #    "no free extranonce1" (error 30) and closed; the holders time out and every id comes back
        accepted_before = miner.stats.accepted
        holders: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
            for _ in range(100):
                reader, writer = await _open(stack.address, source)
                writer.write(_line(1, "mining.subscribe", ["squatter/1.0"]))
                holders.append((reader, writer))
        answers = [await _closed_by_server(reader) for reader, _ in holders]
        refused = [a for a in answers if b'"error":[30,' in a]
        assert len(refused) == 300 - (IDS - 1), "the honest miner holds one id, the squatters get the rest"
        assert all(b"no free extranonce1" in a for a in refused)
        assert v1.refusals[Refusal.NO_MINER_ID] == len(refused)
        assert v1.refusals[Refusal.AUTHORIZE_TIMEOUT] == IDS - 1
        for _, writer in holders:
            writer.close()
        await _wait(lambda: v1.ids.in_use == 1 and len(v1.connections) == 1, 10, "every squatted id back")

        # a newcomer gets an id again (the squatters' are reused)
        reader, writer = await _open(stack.address, "127.0.0.6")
        writer.write(_line(1, "mining.subscribe", []) + _line(2, "mining.authorize", [f"{ACCOUNT}.late", "x"]))
        first = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert first["id"] == 1 and first["error"] is None
        assert v1.ids.in_use == 2

        # 3. ... which then falls silent: the idle timeout ends it after authorize
        idle_answer = await _closed_by_server(reader)
        assert b'"id":2,"result":true' in idle_answer
        assert v1.refusals[Refusal.IDLE_TIMEOUT] == 1
        writer.close()

        # 4. a flood of lines: closed by the rate limit (the burst is 200 lines)
        reader, writer = await _open(stack.address, "127.0.0.7")
        writer.write(_line(1, "mining.subscribe", []) + _line(2, "mining.extranonce.subscribe", []) * 2000)
        await _closed_by_server(reader)
        assert v1.refusals[Refusal.RATE_LIMIT] == 1
        writer.close()

        # the honest miner never noticed: same connection, shares accepted all along, nothing it was refused
        await _wait(lambda: miner.stats.accepted > accepted_before + 3, 60, "honest shares after the attack")
        assert not mining.done()
        assert v1.ids.in_use == 1 and len(v1.connections) == 1
        assert v1.refusals[Refusal.SLOW_READER] == 0 and v1.refusals[Refusal.MAX_CONNECTIONS] == 0
    finally:
        miner.stop()
        stats = await asyncio.wait_for(mining, 30)
    assert stats.connects == 1 and stats.accepted > 0
    assert StratumErrorCode.INTERNAL_ERROR not in stats.rejected_codes
    assert stats.rejected_codes.get(StratumErrorCode.LOW_DIFFICULTY, 0) == 0
