"""The in-process bus: order, once per group, every group, shared groups, closing, and the factory."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ckbpool.bus import (
    Bus,
    BusClosed,
    Event,
    FoundBlock,
    InProcBus,
    JobTemplate,
    Share,
    Subscription,
    Topic,
    create_bus,
)

pytestmark = pytest.mark.unit


def share(n: int, user: str = "alice") -> Share:
    return Share("s1", 1, user, "rig", 1, 100, n, 1 << 200, 1.0, True, "", False, b"", float(n))


async def take(sub: Subscription, n: int, timeout: float = 2.0) -> list[Event]:
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in sub:
            out.append(event)
            if len(out) == n:
                break
    return out


async def test_in_order_once_per_group_to_every_group() -> None:
    async with InProcBus() as bus:
        accounting = bus.subscribe(Topic.SHARES, "accounting")
        audit = bus.subscribe(Topic.SHARES, "audit")
        events = [share(i) for i in range(1000)]
        for event in events:
            await bus.publish(Topic.SHARES, event)
        assert await take(accounting, 1000) == events
        assert await take(audit, 1000) == events
        assert bus.backlog(Topic.SHARES, "accounting") == 0


async def test_objects_are_passed_not_copied() -> None:
    async with InProcBus() as bus:
        sub = bus.subscribe(Topic.SHARES, "g")
        event = share(1)
        await bus.publish(Topic.SHARES, event)
        (got,) = await take(sub, 1)
        assert got is event


async def test_subscribers_in_one_group_share_the_stream() -> None:
    async with InProcBus() as bus:
        a = bus.subscribe(Topic.SHARES, "accounting")
        b = bus.subscribe(Topic.SHARES, "accounting")
        got: dict[str, list[int]] = {"a": [], "b": []}

        async def consume(name: str, sub: Subscription) -> None:
            async for event in sub:
                assert isinstance(event, Share)
                got[name].append(event.nonce)
                await asyncio.sleep(0)  # let the other one take its turn

        tasks = [asyncio.create_task(consume("a", a)), asyncio.create_task(consume("b", b))]
        await asyncio.sleep(0)
        for i in range(200):
            await bus.publish(Topic.SHARES, share(i))
        async with asyncio.timeout(2):
            while len(got["a"]) + len(got["b"]) < 200:
                await asyncio.sleep(0.01)
        await a.close()
        await b.close()
        await asyncio.gather(*tasks)
        assert sorted(got["a"] + got["b"]) == list(range(200))
        assert got["a"] and got["b"]
        assert got["a"] == sorted(got["a"]) and got["b"] == sorted(got["b"])


async def test_topics_are_separate_and_types_checked() -> None:
    async with InProcBus() as bus:
        templates = bus.subscribe(Topic.TEMPLATES, "stratum-1")
        template = JobTemplate(1, b'{"number":"0x1"}', 1.0)
        await bus.publish(Topic.SHARES, share(1))  # nobody listens to shares: dropped, no error
        await bus.publish(Topic.TEMPLATES, template)
        assert await take(templates, 1) == [template]
        with pytest.raises(TypeError, match=r"ckbpool\.templates carries JobTemplate"):
            await bus.publish(Topic.TEMPLATES, share(2))
        with pytest.raises(TypeError):
            await bus.publish(Topic.FOUND_BLOCKS, template)


async def test_only_events_published_after_subscribing_arrive() -> None:
    async with InProcBus() as bus:
        await bus.publish(Topic.SHARES, share(0))
        sub = bus.subscribe(Topic.SHARES, "late")
        await bus.publish(Topic.SHARES, share(1))
        assert [e.nonce for e in await take(sub, 1) if isinstance(e, Share)] == [1]


async def test_close_delivers_what_is_queued_then_ends() -> None:
    bus = InProcBus()
    await bus.start()
    sub = bus.subscribe(Topic.SHARES, "g")
    for i in range(3):
        await bus.publish(Topic.SHARES, share(i))
    await bus.close()
    assert [e.nonce async for e in sub if isinstance(e, Share)] == [0, 1, 2]
    with pytest.raises(BusClosed):
        await bus.publish(Topic.SHARES, share(4))
    with pytest.raises(BusClosed):
        bus.subscribe(Topic.SHARES, "g")


async def test_closing_a_subscription_wakes_its_waiting_reader() -> None:
    async with InProcBus() as bus:
        sub = bus.subscribe(Topic.SHARES, "g")
        other = bus.subscribe(Topic.SHARES, "g")
        reader = asyncio.create_task(take(sub, 1))
        await asyncio.sleep(0.01)
        await sub.close()
        assert await asyncio.wait_for(reader, 1) == []
        await bus.publish(Topic.SHARES, share(7))  # the group lives on in `other`
        assert [e.nonce for e in await take(other, 1) if isinstance(e, Share)] == [7]


async def test_high_water_mark_warns(caplog: pytest.LogCaptureFixture) -> None:
    async with InProcBus(high_water=10) as bus:
        bus.subscribe(Topic.FOUND_BLOCKS, "stuck")
        block = FoundBlock("s", 1, 1, b"\x01" * 32, 1, b"{}", "u", "w", 0.0)
        with caplog.at_level(logging.WARNING, logger="ckbpool.bus.inproc"):
            for _ in range(25):
                await bus.publish(Topic.FOUND_BLOCKS, block)
        warnings = [r for r in caplog.records if "undelivered" in r.getMessage()]
        assert len(warnings) == 2  # at 10 and at 20
        assert bus.stats()["backlog"] == 25


def test_create_bus_picks_the_backend(tmp_path: object) -> None:
    assert isinstance(create_bus(None), InProcBus)
    assert isinstance(create_bus("memory://"), InProcBus)
    kafka = create_bus("kafka://127.0.0.1:1,127.0.0.1:2?client_id=x&spool_dir=none&partitions=4&publish_timeout=0.2")
    assert isinstance(kafka, Bus) and not isinstance(kafka, InProcBus)
    config = kafka.config  # type: ignore[attr-defined]
    assert config.bootstrap_servers == ["127.0.0.1:1", "127.0.0.1:2"]
    assert config.client_id == "x" and config.spool_dir is None
    assert config.partitions == {Topic.SHARES: 4} and config.publish_timeout == 0.2
    with pytest.raises(ValueError, match="unknown"):
        create_bus("kafka://h:1?clientid=x")
    with pytest.raises(ValueError, match="unsupported"):
        create_bus("redis://h:1")


async def test_publish_many_queues_the_list_in_order_for_every_group_all_or_nothing() -> None:
    """``publish_many`` is ``publish`` of each event in order (every group gets the whole list, the subscribers
    of one group share it), and a list with one event of the wrong type queues none of it."""
    async with InProcBus() as bus:
        accounting = bus.subscribe(Topic.SHARES, "accounting")
        audit = bus.subscribe(Topic.SHARES, "audit")
        first, second = [share(i) for i in range(500)], [share(i) for i in range(500, 700)]
        await bus.publish_many(Topic.SHARES, first)
        await bus.publish(Topic.SHARES, share(499_999))
        await bus.publish_many(Topic.SHARES, tuple(second))  # any sequence
        await bus.publish_many(Topic.SHARES, [])
        expected = [*first, share(499_999), *second]
        assert await take(accounting, len(expected)) == expected
        assert await take(audit, len(expected)) == expected
        assert bus.published == len(expected)
        block = FoundBlock("s1", 1, 1, b"\x00" * 32, 1, b"{}", "u", "w", 1.0)
        with pytest.raises(TypeError):
            await bus.publish_many(Topic.SHARES, [share(1), block, share(2)])  # type: ignore[list-item]
        assert bus.backlog(Topic.SHARES, "accounting") == 0 and bus.published == len(expected)


async def test_publish_many_wakes_a_waiting_reader_and_warns_past_the_high_water_mark(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with InProcBus(high_water=100) as bus:
        sub = bus.subscribe(Topic.SHARES, "g")
        waiting = asyncio.ensure_future(sub.next_batch(1000, 2.0))
        await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING, logger="ckbpool.bus.inproc"):
            await bus.publish_many(Topic.SHARES, [share(i) for i in range(450)])
        assert await waiting == [share(i) for i in range(450)]  # woken, and took what was queued
        assert [r.getMessage() for r in caplog.records if "undelivered" in r.getMessage()]


async def test_the_default_publish_many_publishes_one_after_the_other() -> None:
    """A backend without its own batch (Kafka) publishes a list as that many ``publish`` calls, in order."""

    class Recording(InProcBus):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[Event] = []

        async def publish(self, topic: Topic, event: Event) -> None:
            self.calls.append(event)

    bus = Recording()
    events = [share(i) for i in range(5)]
    await Bus.publish_many(bus, Topic.SHARES, events)
    assert bus.calls == events
