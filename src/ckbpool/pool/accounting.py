"""Share accounting in Redis: per user/worker counters, per-minute hashrate buckets, a share log for PPLNS.

Shares arrive from the bus; writes are pipelined in small batches so one Redis round trip serves many shares.
Keys (prefix ``ckbpool:``):
- ``worker:{user}.{worker}`` / ``user:{user}`` hashes: accepted, rejected, difficulty (sum), work (hashes), last_share
- ``hashrate:{minute}`` hash: field ``{user}.{worker}`` -> expected hashes in that minute (expires after 2 h)
- ``sharelog`` stream: one entry per accepted share (user, worker, difficulty, height, ts), capped (MAXLEN ~)
- ``blocks`` list: the latest block outcomes as JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterable, Iterable
from typing import Any

import redis.asyncio as aioredis

from ..bus.events import BlockOutcome, Share

log = logging.getLogger(__name__)
PREFIX = "ckbpool:"
HASHRATE_BUCKET_TTL_S = 2 * 3600


def share_work(share_target: int) -> float:
    """Expected hashes behind one share at this target."""
    return float((1 << 256) // max(1, share_target))


class ShareAccounting:
    def __init__(self, client: aioredis.Redis, *, share_log_maxlen: int = 1_000_000, batch: int = 256) -> None:
        self.redis = client
        self.share_log_maxlen = share_log_maxlen
        self.batch = batch
        self.written = 0

    async def record(self, shares: Iterable[Share]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for share in shares:
            count += 1
            identity = f"{share.user}.{share.worker}"
            worker_key = f"{PREFIX}worker:{identity}"
            user_key = f"{PREFIX}user:{share.user}"
            if share.accepted:
                work = share_work(share.share_target)
                minute = int(share.timestamp // 60)
                bucket = f"{PREFIX}hashrate:{minute}"
                for key in (worker_key, user_key):
                    pipe.hincrby(key, "accepted", 1)
                    pipe.hincrbyfloat(key, "difficulty", share.share_difficulty)
                    pipe.hincrbyfloat(key, "work", work)
                    pipe.hset(key, "last_share", str(share.timestamp))
                pipe.hincrbyfloat(bucket, identity, work)
                pipe.expire(bucket, HASHRATE_BUCKET_TTL_S)
                pipe.xadd(
                    f"{PREFIX}sharelog",
                    {
                        "user": share.user,
                        "worker": share.worker,
                        "difficulty": repr(share.share_difficulty),
                        "height": share.height,
                        "ts": repr(share.timestamp),
                    },
                    maxlen=self.share_log_maxlen,
                    approximate=True,
                )
            else:
                for key in (worker_key, user_key):
                    pipe.hincrby(key, "rejected", 1)
                    pipe.hincrby(key, f"rejected:{share.reason or 'unknown'}", 1)
            pipe.sadd(f"{PREFIX}users", share.user)
            pipe.sadd(f"{PREFIX}workers", identity)
        if count:
            await pipe.execute()
            self.written += count

    async def record_block(self, outcome: BlockOutcome) -> None:
        entry = {
            "block_hash": outcome.block_hash.hex(),
            "height": outcome.height,
            "status": outcome.status,
            "reason": outcome.reason,
            "user": outcome.user,
            "worker": outcome.worker,
            "submitted_at": outcome.submitted_at,
        }
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(f"{PREFIX}blocks", json.dumps(entry))
        pipe.ltrim(f"{PREFIX}blocks", 0, 999)
        await pipe.execute()

    async def run(self, shares: AsyncIterable[Any]) -> None:
        """Consume Share events until cancelled. Whatever queued up during one Redis round trip is written in
        the next one, so batches grow exactly when the share rate needs them to."""
        queue: asyncio.Queue[Share] = asyncio.Queue()

        async def read() -> None:
            async for event in shares:
                if isinstance(event, Share):
                    queue.put_nowait(event)

        reader = asyncio.create_task(read())
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < self.batch:
                    batch.append(queue.get_nowait())
                await self.record(batch)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def worker_stats(self, user: str, worker: str) -> dict[str, str]:
        raw = await self.redis.hgetall(f"{PREFIX}worker:{user}.{worker}")
        return {_s(k): _s(v) for k, v in raw.items()}

    async def user_stats(self, user: str) -> dict[str, str]:
        raw = await self.redis.hgetall(f"{PREFIX}user:{user}")
        return {_s(k): _s(v) for k, v in raw.items()}

    async def hashrate(self, minutes: int = 10, identity: str | None = None, now: float | None = None) -> float:
        """Hashes per second over the last ``minutes`` complete-or-current minutes."""
        now = time.time() if now is None else now
        current = int(now // 60)
        pipe = self.redis.pipeline(transaction=False)
        for minute in range(current - minutes + 1, current + 1):
            key = f"{PREFIX}hashrate:{minute}"
            if identity is None:
                pipe.hvals(key)
            else:
                pipe.hget(key, identity)
        total = 0.0
        for result in await pipe.execute():
            if result is None:
                continue
            values = result if isinstance(result, list) else [result]
            total += sum(float(v) for v in values)
        return total / (minutes * 60)

    async def share_log(self, count: int = 100) -> list[dict[str, str]]:
        entries = await self.redis.xrevrange(f"{PREFIX}sharelog", count=count) or []
        return [{_s(k): _s(v) for k, v in (fields or {}).items()} for _id, fields in entries]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
