"""A CPU miner from outside a deployed stack, until the pool reports a block the node has accepted.

Shared by the compose and Ansible e2e scenarios: they differ only in how the pool's /status is read (a published
port, or a host's own loopback) and where the node's RPC answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from ckbpool.miner.sv2 import Sv2Miner


def mine_until_block(
    miner: Sv2Miner,
    pool_status: Callable[[], dict[str, Any]],
    node_rpc_url: str,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    verify: Any = True,
) -> dict[str, Any]:
    """Run ``miner`` until ``pool_status()`` lists an accepted block (at most ``timeout`` s), check that the node's
    main chain has that block at that height, and return the pool's entry for it. ``headers`` / ``verify``: for
    a node reached through its RPC filter (a bearer token, the deployment CA)."""

    async def mine() -> None:
        task = asyncio.create_task(miner.run(duration=timeout))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                status = await asyncio.to_thread(pool_status)
                if any(b["status"] == "accepted" for b in status["last_blocks"]):
                    return
                await asyncio.sleep(0.5)
            raise AssertionError(f"no block accepted within {timeout:.0f} s")
        finally:
            miner.stop()
            await task

    asyncio.run(mine())
    block: dict[str, Any] = next(b for b in pool_status()["last_blocks"] if b["status"] == "accepted")
    header = httpx.post(
        node_rpc_url,
        json={"id": 1, "jsonrpc": "2.0", "method": "get_header_by_number", "params": [hex(block["height"])]},
        headers=headers,
        verify=verify,
        timeout=5,
    ).json()["result"]
    assert header["hash"] == block["hash"], (header, block)
    return block


def eventually(read: Callable[[], Any], ok: Callable[[Any], bool], *, timeout: float = 15.0) -> Any:
    """``read()`` until ``ok`` holds (bounded), returning the last reading either way for the caller's assertion.

    Why: a pool with stratum worker processes sums their counters in the parent from reports sent once a second,
    so a counter read right after the block that ended ``mine_until_block`` may not include its share yet.
    """
    deadline = time.monotonic() + timeout
    value = read()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value
