"""The Kafka bus against a real Kafka 4.x broker (KRaft, single node, loopback), including a broker outage.

Each test uses its own topic prefix, so tests never see each other's events on the shared broker. Two Bus
instances with their own clients stand for two pool processes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ckbpool.bus import (
    BlockOutcome,
    Bus,
    BusUnavailable,
    Event,
    FoundBlock,
    JobTemplate,
    Share,
    Subscription,
    Topic,
    create_bus,
)
from ckbpool.bus.kafka import KafkaBus, KafkaSubscription
from support.kafka import KafkaBroker, running_broker

pytestmark = pytest.mark.integration

PUBLISH_TIMEOUT = 0.3


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    yield from running_broker(tmp_path_factory)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


def bus_url(kafka: KafkaBroker, prefix: str, client_id: str, spool: Path | None = None, **extra: str) -> str:
    params = {
        "client_id": client_id,
        "topic_prefix": prefix,
        "spool_dir": str(spool) if spool else "none",
        "publish_timeout": str(PUBLISH_TIMEOUT),
        "partitions": "4",
        "connect_timeout": "3",
        "close_timeout": "3",
        **extra,
    }
    return kafka.url(**params)


@pytest.fixture
async def two_buses(kafka: KafkaBroker, prefix: str, tmp_path: Path) -> AsyncIterator[tuple[Bus, Bus]]:
    """Two "processes": a stratum-ish publisher with a spool and an accounting-ish consumer."""
    a = create_bus(bus_url(kafka, prefix, "proc-a", tmp_path / "spool-a"))
    b = create_bus(bus_url(kafka, prefix, "proc-b", tmp_path / "spool-b"))
    async with a, b:
        yield a, b


def share(n: int, worker: str = "rig0", user: str = "ckb1qalice") -> Share:
    return Share(
        server_id="stratum-1", channel_id=n % 7, user=user, worker=worker, job_id=n // 10, height=1000 + n,
        nonce=(1 << 128) - 1 - n, share_target=(1 << 256) - 1 - n, share_difficulty=512.0, accepted=True,
        reason="", is_block=False, block_hash=b"", timestamp=time.time(),
    )  # fmt: skip


async def take(sub: Subscription, n: int, timeout: float = 30.0) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await anext(sub))
    return out


async def test_every_topic_between_two_processes(two_buses: tuple[Bus, Bus]) -> None:
    a, b = two_buses
    block_hash = bytes(range(32))
    events: dict[Topic, Event] = {
        Topic.TEMPLATES: JobTemplate(42, b'{"number":"0x10","transactions":[]}', time.time()),
        Topic.SHARES: share(1),
        Topic.FOUND_BLOCKS: FoundBlock("stratum-1", 42, 16, block_hash, 7, b'{"header":{}}', "u", "w", time.time()),
        Topic.BLOCK_OUTCOMES: BlockOutcome(block_hash, 16, "accepted", "", time.time(), 12.5, "u", "w"),
    }
    subs = {topic: b.subscribe(topic, "consumer") for topic in Topic}
    for topic, event in events.items():
        await a.publish(topic, event)
    for topic, event in events.items():
        assert await take(subs[topic], 1) == [event]
    # and the other way round: b publishes, a consumes
    outcome = BlockOutcome(block_hash, 16, "stale", "orphaned by tip 17", time.time(), 30.0, "u", "w")
    back = a.subscribe(Topic.BLOCK_OUTCOMES, "block-watch")
    await b.publish(Topic.BLOCK_OUTCOMES, outcome)
    assert await take(back, 2) == [events[Topic.BLOCK_OUTCOMES], outcome]  # a new group starts at the earliest
    assert a.stats()["published"] == 4 and b.stats()["published"] == 1
    for sub in [*subs.values(), back]:
        await sub.close()


async def test_consumer_groups(two_buses: tuple[Bus, Bus]) -> None:
    a, b = two_buses
    accounting = [b.subscribe(Topic.SHARES, "accounting") for _ in range(2)]
    audit = a.subscribe(Topic.SHARES, "audit")
    for sub in [*accounting, audit]:
        await sub.wait_ready(30)
    await asyncio.sleep(1.0)  # let the second join's rebalance settle on both members
    n = 200
    for i in range(n):
        await a.publish(Topic.SHARES, share(i, worker=f"rig{i % 16}"))
    # every group gets every event once ...
    assert sorted(e.nonce for e in await take(audit, n) if isinstance(e, Share)) == sorted(
        share(i).nonce for i in range(n)
    )
    # ... and the two members of one group share the stream between them
    got: list[list[int]] = [[], []]

    async def drain(i: int) -> None:
        async for event in accounting[i]:
            assert isinstance(event, Share)
            got[i].append(event.nonce)

    tasks = [asyncio.create_task(drain(i)) for i in range(2)]
    async with asyncio.timeout(30):
        while len(got[0]) + len(got[1]) < n:
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # nothing more may arrive
    for task in tasks:
        task.cancel()
    assert len(got[0]) + len(got[1]) == n
    assert set(got[0]) | set(got[1]) == {share(i).nonce for i in range(n)}
    assert got[0] and got[1], "one member of the group got nothing: partitions not shared"
    # per worker (one record key), order is kept
    by_worker: dict[int, list[int]] = {}
    for nonces in got:
        for nonce in nonces:
            i = (1 << 128) - 1 - nonce
            by_worker.setdefault(i % 16, []).append(i)
    assert all(seq == sorted(seq) for seq in by_worker.values())
    for sub in [*accounting, audit]:
        await sub.close()


async def test_a_group_resumes_from_its_committed_offset(two_buses: tuple[Bus, Bus]) -> None:
    a, b = two_buses
    for i in range(10):
        await a.publish(Topic.SHARES, share(i, worker="one-key"))  # one key: one partition, one order
    first = b.subscribe(Topic.SHARES, "resume")
    assert [e.nonce for e in await take(first, 5) if isinstance(e, Share)] == [share(i).nonce for i in range(5)]
    assert isinstance(first, KafkaSubscription)
    await first.commit()  # the 5th counts as processed
    await first.close()
    second = b.subscribe(Topic.SHARES, "resume")
    assert [e.nonce for e in await take(second, 3) if isinstance(e, Share)] == [share(i).nonce for i in range(5, 8)]
    await second.close()  # without commit(): the last one handed out (7) is not counted as processed
    third = b.subscribe(Topic.SHARES, "resume")
    assert [e.nonce for e in await take(third, 3) if isinstance(e, Share)] == [share(i).nonce for i in range(7, 10)]
    await third.close()


async def test_broker_outage_loses_and_duplicates_no_share(kafka: KafkaBroker, prefix: str, tmp_path: Path) -> None:
    """Stop the broker, publish N shares (each publish returns quickly, into the spool), restart it on the same
    ports: every share arrives exactly once."""
    stratum = create_bus(bus_url(kafka, prefix, "stratum", tmp_path / "spool"))
    accounting = create_bus(bus_url(kafka, prefix, "accounting"))
    assert isinstance(stratum, KafkaBus)
    async with stratum, accounting:
        sub = accounting.subscribe(Topic.SHARES, "accounting")
        await sub.wait_ready(30)
        received: list[int] = []

        async def consume() -> None:
            async for event in sub:
                assert isinstance(event, Share)
                received.append(event.nonce)

        consumer = asyncio.create_task(consume())
        warmup = 10
        for i in range(warmup):
            await stratum.publish(Topic.SHARES, share(i, worker=f"rig{i % 5}"))
        async with asyncio.timeout(30):
            while len(received) < warmup:
                await asyncio.sleep(0.05)
        assert isinstance(sub, KafkaSubscription)

        n = 300
        await asyncio.to_thread(kafka.stop, keep_data=True)
        try:
            latencies = []
            for i in range(warmup, warmup + n):
                start = time.perf_counter()
                await stratum.publish(Topic.SHARES, share(i, worker=f"rig{i % 5}"))
                latencies.append(time.perf_counter() - start)
            stats = stratum.stats()
            assert stats["spool_depth"] == n, stats
            assert stats["spooled"] == n
            assert max(latencies) < PUBLISH_TIMEOUT + 0.25, f"slowest publish while down: {max(latencies):.3f}s"
            assert sorted(latencies)[-2] < 0.05, "only the first publish may wait for the timeout"
            await asyncio.sleep(2)  # clients notice the outage and keep retrying
        finally:
            await asyncio.to_thread(kafka.start)

        async with asyncio.timeout(60):
            while len(received) < warmup + n or stratum.stats()["spool_depth"]:
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)  # any duplicate would show up by now
        consumer.cancel()
        await sub.close()
        expected = {share(i).nonce for i in range(warmup, warmup + n)}
        outage = [nonce for nonce in received if nonce in expected]
        assert len(outage) == n and set(outage) == expected, f"{len(outage)} received, {len(set(outage))} distinct"
        assert len(received) == warmup + n, "warm-up shares were delivered twice"
        stats = stratum.stats()
        assert stats["replayed"] == n and stats["spool_depth"] == 0 and stats["in_doubt"] == 0, stats


async def test_spool_outlives_the_process(kafka: KafkaBroker, prefix: str, tmp_path: Path) -> None:
    """Kafka down when the stratum process starts and when it exits: the next run of the process delivers."""
    spool = tmp_path / "spool"
    await asyncio.to_thread(kafka.stop, keep_data=True)
    try:
        first_run = create_bus(bus_url(kafka, prefix, "stratum", spool))
        start = time.perf_counter()
        await first_run.start()  # does not fail: spools until Kafka is there
        for i in range(50):
            await first_run.publish(Topic.SHARES, share(i))
        assert first_run.stats()["spool_depth"] == 50
        await first_run.close()
        assert time.perf_counter() - start < 15
        with pytest.raises(BusUnavailable):  # without a spool there is nowhere to go
            await create_bus(bus_url(kafka, prefix, "nospool")).start()
    finally:
        await asyncio.to_thread(kafka.start)
    async with (
        create_bus(bus_url(kafka, prefix, "stratum", spool)) as second_run,
        create_bus(bus_url(kafka, prefix, "accounting")) as accounting,
    ):
        sub = accounting.subscribe(Topic.SHARES, "accounting")
        got = await take(sub, 50, timeout=60)
        assert [e.nonce for e in got if isinstance(e, Share)] == [share(i).nonce for i in range(50)]
        async with asyncio.timeout(10):
            while second_run.stats()["spool_depth"]:
                await asyncio.sleep(0.05)
        assert second_run.stats()["replayed"] == 50
        await sub.close()


async def test_close_ends_a_waiting_subscriber_and_types_are_checked(two_buses: tuple[Bus, Bus]) -> None:
    a, b = two_buses
    sub = b.subscribe(Topic.FOUND_BLOCKS, "block-maker")
    await sub.wait_ready(30)
    waiting = asyncio.create_task(take(sub, 1))
    await asyncio.sleep(0.5)
    await sub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 10)
    with pytest.raises(TypeError):
        await a.publish(Topic.FOUND_BLOCKS, share(1))


async def test_acks_slower_than_publish_timeout_neither_lose_nor_duplicate(
    kafka: KafkaBroker, prefix: str, tmp_path: Path
) -> None:
    """A burst whose acks take longer than publish_timeout: the late ones are spooled "in doubt", and the
    replay must not send again what the original send delivered."""
    stratum = create_bus(bus_url(kafka, prefix, "stratum", tmp_path / "spool"))
    accounting = create_bus(bus_url(kafka, prefix, "accounting"))
    assert isinstance(stratum, KafkaBus)
    n = 3000
    async with stratum, accounting:
        for worker in range(8):  # the producer learns every partition's leader in time
            await stratum.publish(Topic.SHARES, share(worker, worker=f"rig{worker}"))
        assert stratum.stats()["published"] == 8
        stratum.config.publish_timeout = 0.02  # then acks of a burst cannot all come back in time
        await asyncio.gather(*(stratum.publish(Topic.SHARES, share(i, worker=f"rig{i % 8}")) for i in range(8, n)))
        stats = stratum.stats()
        assert stats["ack_timeouts"] > 0, "the burst was acknowledged in time: nothing tested"
        assert stats["published"] + stats["spooled"] == n
        sub = accounting.subscribe(Topic.SHARES, "accounting")
        got = await take(sub, n, timeout=60)
        with pytest.raises(TimeoutError):
            await take(sub, 1, timeout=2)  # no duplicate after the n
        assert {e.nonce for e in got if isinstance(e, Share)} == {share(i).nonce for i in range(n)}
        async with asyncio.timeout(30):
            while stratum.stats()["spool_depth"]:
                await asyncio.sleep(0.05)
        stats = stratum.stats()
        assert stats["published"] + stats["replayed"] == n and stats["in_doubt"] == 0, stats
        print(f"burst of {n}: {stats}")
        await sub.close()
