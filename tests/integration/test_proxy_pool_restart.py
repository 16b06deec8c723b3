"""The pool goes away mid-run and comes back: the proxy reconnects, the V1 miners never notice a disconnect.

Real dev ckb node, a real Pool, the Proxy, and 10 V1 CPU miners in their own process. The Pool object is stopped
(its listening socket and every SV2 connection close), and a new Pool is started on the same port with the same
keys. Meanwhile (within v1.upstream_loss_grace_s) the proxy keeps every V1 connection, sends no new work, and
answers shares with 21 (stale); once the new pool is up it reconnects (backoff), and the miners mine on with the
new pool's jobs on the same connections. Nothing is lost: the miners' accepted shares equal old pool + new pool
for the proxy's channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)

from ckbpool.ckb.node import CkbNode
from ckbpool.pool.service import Pool
from ckbpool.pool.stratum import ChannelState
from ckbpool.proxy import Proxy, load_proxy_config

pytestmark = pytest.mark.integration

ACCOUNT = "ckt1qrestartaccount"
MINERS = 10
MINING_S = 30.0


def proxy_channel(pool: Pool) -> ChannelState | None:
    assert pool.server is not None
    channels = [c for s in pool.server.sessions for c in s.channels.values() if c.user == ACCOUNT]
    return channels[0] if channels else None


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_pool_restart_mid_run_miners_keep_their_connections(
    pool_node: CkbNode,  # noqa: F811
    tmp_path: Path,
) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    credentials, authority = pool_keys()
    vardiff = {"share_interval_s": 0.05, "retarget_interval_s": 1.0}
    first = Pool(pool_config(pool_node, tmp_path / "pool1", vardiff=vardiff), credentials=credentials)
    await first.start()
    second: Pool | None = None
    first_closed = False
    assert first.server is not None
    host, port = first.server.address
    proxy_config = load_proxy_config(
        data={
            "identity": "aggregated",  # account names here are not addresses
            "http": {"listen_port": 0},  # /metrics on a free port
            "upstream": {
                "host": host,
                "port": port,
                "authority_public_key": authority,
                "user_identity": f"{ACCOUNT}.farm",
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
            },
            "v1": {
                "listen_host": "127.0.0.1",
                "listen_port": 0,
                "vardiff": {"initial_difficulty": 2e5, "share_interval_s": 1.0, "retarget_interval_s": 3.0},
                # the outage here (3 s + a pool start + the backoff) must stay within the grace: this test is about
                # the miners that are held; the ones closed after it are test_proxy_upstream_loss.py's
                "upstream_loss_grace_s": 60.0,
            },
        }
    )
    proxy = Proxy(proxy_config)
    await proxy.start()
    process: asyncio.subprocess.Process | None = None
    try:
        await proxy.wait_upstream(30)
        v1 = proxy.v1
        assert v1 is not None
        v1_host, v1_port = v1.address
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ckbpool.miner.v1",
            f"{v1_host}:{v1_port}",
            "--user",
            ACCOUNT,
            "--count",
            str(MINERS),
            "--duration",
            str(MINING_S),
            "--chunk",
            "10000",
            stdout=asyncio.subprocess.PIPE,
        )
        old_channel = proxy_channel(first)
        assert old_channel is not None
        await _wait(lambda: len(v1.connections) == MINERS and old_channel.accepted >= 20, 20, "shares on the old pool")
        miner_connections = set(v1.connections)
        old_blocks = {b.block_hash for b in first.recent_blocks}

        # the pool goes away
        await first.close()
        first_closed = True
        await _wait(lambda: not v1.upstream.connected, 10, "the proxy to notice")
        stale_before = v1.rejected.get(21, 0)
        await asyncio.sleep(3.0)  # miners keep mining the last job; their shares are answered 21
        assert set(v1.connections) == miner_connections, "the proxy must keep its miners connected"
        assert v1.rejected.get(21, 0) > stale_before, "shares during the outage are answered as stale"
        old_accepted = old_channel.accepted

        # a new pool on the same port with the same keys
        second = Pool(
            pool_config(
                pool_node,
                tmp_path / "pool2",
                vardiff=vardiff,
                stratum={"listen_host": "127.0.0.1", "listen_port": port},
            ),
            credentials=credentials,
        )
        await second.start()
        restarted_at = time.monotonic()
        await _wait(lambda: v1.upstream.connected, 20, "the proxy to reconnect")
        reconnect_s = time.monotonic() - restarted_at
        new_pool = second
        await _wait(lambda: (c := proxy_channel(new_pool)) is not None and c.accepted >= 20, 30, "new shares")
        await _wait(
            lambda: any(b.status == "accepted" for b in new_pool.recent_blocks), 30, "a block after the restart"
        )
        assert set(v1.connections) == miner_connections, "same miner connections after the restart"

        out, _ = await asyncio.wait_for(process.communicate(), MINING_S + 60)
        assert process.returncode == 0
        results = [SimpleNamespace(**r) for r in json.loads(out)]
        new_channel = proxy_channel(new_pool)
        assert new_channel is not None and new_channel is not old_channel
        miners_accepted = sum(r.accepted for r in results)
        codes = {c: sum(r.rejected_codes.get(c, 0) for r in results) for c in ("21", "22", "23")}
        print(
            f"\nreconnected in {reconnect_s:.2f}s; accepted {miners_accepted} = old pool {old_accepted} + new pool "
            f"{new_channel.accepted}; rejected {codes}; proxy {v1.stats()['rejected']}, "
            f"verdicts lost {v1.verdicts_lost}"
        )
        assert all(r.connects == 1 and r.unanswered == 0 for r in results), "a miner lost its connection"
        assert v1.upstream.connections == 2 and v1.prefix_changes == 0
        assert miners_accepted == v1.accepted
        # shares in flight when the old pool closed heard "stale"; the old pool may have credited them before it
        # went (its acknowledgements are batched): that is the only slack, and the proxy counts it
        assert miners_accepted <= old_accepted + new_channel.accepted <= miners_accepted + v1.verdicts_lost
        assert set().union(*(r.rejected_codes for r in results)) <= {"21", "23"}, codes
        assert codes["23"] <= max(5, miners_accepted // 20), codes

        new_blocks = [b for b in new_pool.recent_blocks if b.status == "accepted" and b.block_hash not in old_blocks]
        async with pool_node.client() as client:
            for block in new_blocks:
                header = await client.call("get_header_by_number", [hex(block.height)])
                assert header["hash"] == "0x" + block.block_hash.hex()
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await proxy.close()
        if second is not None:
            await second.close()
        if not first_closed:
            await first.close()
