"""Waits the chain tests share: a condition with a deadline, and the node's indexer caught up with its tip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ckbpool.ckb.indexer import indexer_tip
from ckbpool.ckb.rpc import CkbRpcClient


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def indexed(client: CkbRpcClient) -> None:
    """Until the node's indexer has the current tip (bounded: 30 s)."""
    tip = await client.get_tip_block_number()
    for _ in range(300):
        at = await indexer_tip(client)
        if at is not None and at >= tip:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"indexer behind tip {tip}")
