"""Exactly-once share accounting against a real Redis (and, for Kafka mode, a real broker).

- the idempotent write: the same batch applied twice counts once; overlapping redeliveries count each share once;
- atomicity: Redis SIGKILLed while batches are written (AOF, fsync always) never leaves a half-applied batch;
- a stream through the in-process bus while Redis is SIGKILLed and restarted: shares published == shares in the
  books, exactly, and /health's accounting part goes false during the outage and true after;
- Kafka: a consumer that wrote a batch to Redis and "crashed" before acking it: the group's next consumer gets
  the records again and the books still count each share once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ckbpool.bus import InProcBus, Share, Topic, create_bus
from ckbpool.payouts.pplns import read_shares
from ckbpool.pool.accounting import ShareAccounting, connect_redis
from ckbpool.retry import Backoff
from support.kafka import KafkaBroker, running_broker
from support.redis import RedisServer

pytestmark = pytest.mark.integration

FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.05)
USERS = [("alice", "rig1"), ("alice", "rig2"), ("bob", "r"), ("carol", "x")]


def share(seq: int, source: str = "stratum-1-test", *, accepted: bool = True, ts: float | None = None) -> Share:
    user, worker = USERS[seq % len(USERS)]
    return Share(
        server_id="stratum-1", channel_id=1, user=user, worker=worker, job_id=1, height=100, nonce=seq,
        share_target=1 << 240, share_difficulty=1.0, accepted=accepted, reason="" if accepted else "stale-share",
        is_block=False, block_hash=b"", timestamp=time.time() if ts is None else ts, source=source, seq=seq,
    )  # fmt: skip


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def accounting(redis_server: RedisServer) -> AsyncIterator[ShareAccounting]:
    client = connect_redis(redis_server.url, timeout_s=1.0)
    try:
        yield ShareAccounting(client, policy=FAST, max_lag_s=1.0)
    finally:
        await client.aclose()


async def books(acc: ShareAccounting) -> dict[str, int]:
    """accepted (+ rejected) per user.worker, and the totals, as Redis has them."""
    out: dict[str, int] = {}
    for user, worker in USERS:
        stats = await acc.worker_stats(user, worker)
        out[f"{user}.{worker}"] = int(stats.get("accepted", 0))
        out[f"{user}.{worker}/rejected"] = int(stats.get("rejected", 0))
    out["total"] = sum(v for k, v in out.items() if "/" not in k)
    out["sharelog"] = len(await read_shares(acc.redis))  # shares, whatever an entry holds
    return out


def expected(seqs: list[int]) -> dict[str, int]:
    out = {f"{u}.{w}": 0 for u, w in USERS} | {f"{u}.{w}/rejected": 0 for u, w in USERS}
    for seq in seqs:
        user, worker = USERS[seq % len(USERS)]
        out[f"{user}.{worker}"] += 1
    out["total"] = len(seqs)
    out["sharelog"] = len(seqs)
    return out


async def test_the_same_batch_applied_twice_counts_once(accounting: ShareAccounting) -> None:
    batch = [share(n) for n in range(1, 101)]
    assert await accounting.apply(batch) == (100, 0)
    assert await accounting.apply(batch) == (0, 100)
    assert await books(accounting) == expected(list(range(1, 101)))
    user = await accounting.user_stats("alice")
    assert int(user["accepted"]) == 50 and float(user["difficulty"]) == 50.0


async def test_overlapping_redeliveries_count_each_share_once(accounting: ShareAccounting) -> None:
    await accounting.record([share(n) for n in range(1, 51)])
    counted, duplicates = await accounting.record([share(n) for n in range(30, 81)])  # 30..50 again, 51..80 new
    assert (counted, duplicates) == (30, 21)
    # another stratum run (source) with the same seqs is other shares, not duplicates
    assert await accounting.record([share(n, source="stratum-2-test") for n in range(1, 11)]) == (10, 0)
    assert (await books(accounting))["total"] == 80 + 10
    # rejected shares are deduplicated too; shares without an id are counted as they come
    assert await accounting.record([share(200, accepted=False)] * 2) == (1, 1)
    no_id = share(0, source="")
    assert await accounting.record([no_id, no_id]) == (2, 0)


async def test_a_batch_is_never_half_applied_when_redis_is_killed_mid_write(
    redis_server: RedisServer, accounting: ShareAccounting
) -> None:
    """SIGKILL at random moments while big batches are written; after each restart (AOF replay) the books hold
    whole batches only, and re-applying every batch (what the retry does) makes them exact."""
    size = 2000
    seqs: list[int] = []
    for round_ in range(5):
        batch = [share(round_ * size + n) for n in range(1, size + 1)]
        write = asyncio.create_task(accounting.apply(batch))
        await asyncio.sleep(0.002 * (round_ + 1))
        redis_server.kill()
        with contextlib.suppress(Exception):  # the connection died: in doubt, which is what the dedup is for
            await write
        redis_server.start()
        total = (await books(accounting))["total"]
        assert total in (len(seqs), len(seqs) + size), f"round {round_}: {total} is not whole batches"
        await accounting.record(batch)  # the retry of an in-doubt write
        seqs += [s.seq for s in batch]
        assert await books(accounting) == expected(seqs)


async def test_redis_killed_and_restarted_mid_stream_books_equal_published(
    redis_server: RedisServer, accounting: ShareAccounting
) -> None:
    bus = InProcBus()
    await bus.start()
    subscription = bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
    consumer = asyncio.create_task(accounting.run(subscription, poll_s=0.05))
    published: list[int] = []
    health: list[bool] = []

    async def produce(duration: float) -> None:
        seq = 0
        end = time.monotonic() + duration
        while time.monotonic() < end:
            for _ in range(20):
                seq += 1
                await bus.publish(Topic.SHARES, share(seq))
                published.append(seq)
            health.append(accounting.healthy())
            await asyncio.sleep(0.01)

    producer = asyncio.create_task(produce(12.0))
    for _ in range(3):
        await asyncio.sleep(2.0)
        redis_server.kill()
        await asyncio.sleep(1.5)  # down longer than max_lag_s: health must turn false
        assert not accounting.healthy()
        redis_server.start()
    await producer
    deadline = time.monotonic() + 30
    # a batch whose reply was lost with the killed Redis, but whose write survived in the AOF, comes back as
    # duplicates on the retry: counted once either way
    while accounting.written + accounting.duplicates < len(published):
        assert time.monotonic() < deadline, f"{accounting.written} of {len(published)} written"
        await asyncio.sleep(0.1)
    accounting.drain()
    await asyncio.wait_for(consumer, 10)
    await bus.close()
    assert accounting.errors > 0  # the outages were seen, and retried
    assert await books(accounting) == expected(published)
    assert False in health and health[-1] is True


# ------------------------------------------------------------------------------------------------- Kafka mode
@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    yield from running_broker(tmp_path_factory)


async def test_kafka_consumer_crash_after_the_redis_write_before_the_offset_commit_counts_once(
    kafka: KafkaBroker, accounting: ShareAccounting, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."

    def url(client_id: str) -> str:
        return kafka.url(
            client_id=client_id, topic_prefix=prefix, spool_dir=str(tmp_path / client_id), partitions="3",
            connect_timeout="5", close_timeout="3", commit_interval="0.2",
        )  # fmt: skip

    count = 600
    async with create_bus(url("stratum")) as producer:
        for seq in range(1, count + 1):
            await producer.publish(Topic.SHARES, share(seq))

    # consumer 1 takes batches and writes them to Redis, then dies before ack(): nothing of it is committed
    async with create_bus(url("accounting-1")) as bus:
        subscription = bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
        taken = 0
        deadline = time.monotonic() + 60
        while taken < 300:
            assert time.monotonic() < deadline
            events = await subscription.next_batch(100, 1.0)
            assert events is not None
            batch = [e for e in events if isinstance(e, Share)]
            await accounting.record(batch)
            taken += len(batch)
        written_before_crash = accounting.written
        assert written_before_crash == taken
        await subscription.close()  # "crash": what was only written, never acked, is not committed

    # consumer 2 of the same group gets everything again; the books count each share once
    async with create_bus(url("accounting-2")) as bus:
        subscription = bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
        run = asyncio.create_task(accounting.run(subscription, poll_s=0.2))
        deadline = time.monotonic() + 60
        while accounting.written < count or accounting.duplicates < written_before_crash:
            assert time.monotonic() < deadline, (accounting.written, accounting.duplicates)
            await asyncio.sleep(0.1)
        accounting.drain()
        await asyncio.wait_for(run, 10)
        await subscription.close()
    assert accounting.written == count
    assert accounting.duplicates == written_before_crash
    assert await books(accounting) == expected(list(range(1, count + 1)))

    # and after a clean ack, a third consumer gets nothing more
    async with create_bus(url("accounting-3")) as bus:
        subscription = bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
        await subscription.wait_ready()
        events = await subscription.next_batch(100, 3.0)
        assert events == []
        await subscription.close()
