"""How the accounting consumer sizes its batches (no Redis: the write itself is measured in
tests/integration/test_accounting_batch_equivalence.py and benchmarks/bench_accounting.py).

``ShareAccounting.run`` waits for the first event, then takes everything already queued up to ``batch``
(``redis.max_batch``), topping up backends that hand out one fetch at a time (Kafka: ~500 records), and acks
only after the write of what it took. Here the write is recorded instead of sent, the subscription is a real
in-process bus queue, optionally wrapped to hand out at most 500 events per call as Kafka does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from ckbpool.bus import InProcBus, Share, Topic
from ckbpool.bus.base import Event, Subscription
from ckbpool.pool.accounting import DEFAULT_BATCH, DEFAULT_WRITE_INTERVAL_S, ShareAccounting
from ckbpool.pool.config import RedisSettings

pytestmark = pytest.mark.unit


def share(seq: int) -> Share:
    return Share(
        server_id="s", channel_id=1, user="alice", worker="rig", job_id=1, height=1, nonce=seq, share_target=1 << 240,
        share_difficulty=1.0, accepted=True, reason="", is_block=False, block_hash=b"", timestamp=1.0e9 + seq,
        source="src", seq=seq,
    )  # fmt: skip


class Recording(ShareAccounting):
    """The consumer with its Redis write replaced by a record of the batch (and of the acks seen before it)."""

    def __init__(self, batch: int, log: list[str], write_interval_s: float = DEFAULT_WRITE_INTERVAL_S) -> None:
        # never connects: record() is overridden
        super().__init__(aioredis.Redis(), batch=batch, write_interval_s=write_interval_s)
        self.batches: list[int] = []
        self.started: list[float] = []  # each write's start (loop time)
        self.log = log

    async def record(self, shares: Iterable[Share]) -> tuple[int, int]:
        batch = list(shares)
        self.started.append(asyncio.get_running_loop().time())
        self.batches.append(len(batch))
        self.log.append(f"write {len(batch)}")
        self.written += len(batch)
        return len(batch), 0


class KafkaSized(Subscription):
    """A subscription that hands out at most ``per_call`` events per ``next_batch`` (one Kafka fetch)."""

    def __init__(self, inner: Subscription, log: list[str], per_call: int = 500) -> None:
        self.inner, self.log, self.per_call = inner, log, per_call

    async def __anext__(self) -> Event:
        return await self.inner.__anext__()

    async def next_batch(self, max_events: int, timeout: float) -> list[Event] | None:
        return await self.inner.next_batch(min(max_events, self.per_call), timeout)

    async def ack(self) -> None:
        self.log.append("ack")

    async def close(self) -> None:
        await self.inner.close()


async def consume(total: int, batch: int, *, kafka_sized: bool) -> tuple[Recording, list[str]]:
    bus = InProcBus()
    await bus.start()
    subscription: Subscription = bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
    log: list[str] = []
    if kafka_sized:
        subscription = KafkaSized(subscription, log)
    for seq in range(1, total + 1):
        await bus.publish(Topic.SHARES, share(seq))
    acc = Recording(batch, log)
    acc.drain()  # take what is queued, then return
    await asyncio.wait_for(acc.run(subscription, poll_s=0.1), 10)
    await bus.close()
    return acc, log


async def test_a_backlog_is_taken_in_batches_up_to_the_cap() -> None:
    acc, _ = await consume(20_000, 8192, kafka_sized=False)
    assert acc.batches == [8192, 8192, 20_000 - 2 * 8192]


async def test_kafka_sized_hand_outs_are_topped_up_and_acked_only_after_their_write() -> None:
    acc, log = await consume(3_000, 8192, kafka_sized=True)
    assert acc.batches == [3_000]  # six fetches of 500, one write
    assert log == ["write 3000", "ack"]


async def test_a_small_cap_still_bounds_each_write() -> None:
    acc, log = await consume(1_000, 300, kafka_sized=True)
    assert acc.batches == [300, 300, 300, 100]
    assert log == ["write 300", "ack", "write 300", "ack", "write 300", "ack", "write 100", "ack"]


def test_the_cap_is_a_setting_and_pool_wires_it() -> None:
    assert RedisSettings().max_batch == DEFAULT_BATCH == 8192
    acc = ShareAccounting.from_settings(aioredis.Redis(), RedisSettings(max_batch=1000))
    assert acc.batch == 1000
    with pytest.raises(ValidationError, match="max_batch"):
        RedisSettings(max_batch=0)


async def test_a_steady_stream_is_written_once_per_interval_and_a_lone_share_at_once() -> None:
    """Shares trickling in (one per ms) are not written back to back as each arrives: a write starts no sooner
    than the interval after the previous one, so the batches hold what came meanwhile; the first share of a quiet
    pool is written at once (the interval counts from the previous write), and a full batch does not wait."""
    bus = InProcBus()
    await bus.start()
    subscription = bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
    acc = Recording(8192, [], write_interval_s=0.5)
    task = asyncio.ensure_future(acc.run(subscription, poll_s=0.05))
    loop = asyncio.get_running_loop()
    first = loop.time()
    await bus.publish(Topic.SHARES, share(1))
    for _ in range(200):  # bounded: the lone share's write
        if acc.batches:
            break
        await asyncio.sleep(0.005)
    assert acc.batches == [1] and acc.started[0] - first < 0.4  # not held for the interval
    seq = 1
    end = loop.time() + 1.2
    while loop.time() < end:  # ~1 share per ms for 1.2 s
        seq += 1
        await bus.publish(Topic.SHARES, share(seq))
        await asyncio.sleep(0.001)
    for _ in range(300):  # bounded: the last batch's write
        if acc.written == seq:
            break
        await asyncio.sleep(0.01)
    assert acc.written == seq
    gaps = [b - a for a, b in zip(acc.started, acc.started[1:], strict=False)]
    assert all(gap >= 0.5 - 0.005 for gap in gaps), gaps
    assert len(acc.batches) <= 1 + 1.2 / 0.5 + 2  # without the interval: a write per share or so
    task.cancel()
    # a backlog of full batches is written without waiting for the interval (60 s here)
    backlog = bus.subscribe(Topic.SHARES, "backlog", manual_ack=True)
    for n in range(3 * 100):
        await bus.publish(Topic.SHARES, share(seq + 1 + n))
    full = Recording(100, [], write_interval_s=60.0)
    task = asyncio.ensure_future(full.run(backlog, poll_s=0.05))
    for _ in range(500):  # bounded: ~5 s, far below the interval
        if full.written == 300:
            break
        await asyncio.sleep(0.01)
    assert full.batches == [100, 100, 100]
    task.cancel()
    await bus.close()


def test_the_write_interval_is_a_setting_and_pool_wires_it() -> None:
    assert RedisSettings().write_interval_ms == 100 and DEFAULT_WRITE_INTERVAL_S == 0.1
    acc = ShareAccounting.from_settings(aioredis.Redis(), RedisSettings(write_interval_ms=0))
    assert acc.write_interval_s == 0.0
    with pytest.raises(ValidationError, match="write_interval_ms"):
        RedisSettings(write_interval_ms=-1)
