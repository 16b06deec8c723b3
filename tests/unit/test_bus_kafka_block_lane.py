"""The Kafka bus's block lane, with a stand-in producer: a found block never waits behind spooled shares.

A stratum server that rode out a Kafka outage may hold a large share spool; the found block published during or
after it must not be replayed after all of them (issue 15, item 2). The real-broker version of this is in
tests/integration/test_bus_kafka.py; here the producer is a fake so the ordering is exact.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from ckbpool.bus import FoundBlock, Share, Topic
from ckbpool.bus.kafka import BLOCK_SPOOL_SUBDIR, KafkaBus, KafkaBusConfig
from ckbpool.bus.spool import Spool

pytestmark = pytest.mark.unit


class FakeProducer:
    """Acknowledges block events at once; share sends are queued but never acknowledged while ``hold_shares``
    (a broker that is slow to take the backlog)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.hold_shares = True

    async def send(self, topic: str, value: bytes, **_: Any) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if topic.endswith("shares") and self.hold_shares:
            return future  # queued, never acknowledged
        self.sent.append(topic)
        future.set_result(None)
        return future

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def share(n: int) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user="alice", worker="rig", job_id=1, height=10, nonce=n,
        share_target=(1 << 255), share_difficulty=1.0, accepted=True, reason="", is_block=False, block_hash=b"",
        timestamp=time.time(), source="s", seq=n,
    )  # fmt: skip


def found(n: int) -> FoundBlock:
    return FoundBlock(
        server_id="stratum-1", job_id=1, height=10, block_hash=bytes([n]) * 32, work_id=1, block_json=b"{}",
        user="alice", worker="rig", found_at=time.time(),
    )  # fmt: skip


def offline_bus(spool_dir: Path) -> KafkaBus:
    """A KafkaBus as ``start()`` leaves it when Kafka is unreachable, without trying to connect."""
    bus = KafkaBus(KafkaBusConfig(bootstrap_servers=["127.0.0.1:1"], spool_dir=spool_dir, close_timeout=0.2))
    bus._main.spool = Spool(spool_dir)
    bus._blocks.spool = Spool(spool_dir / BLOCK_SPOOL_SUBDIR, fsync="always")
    bus._started = True
    return bus


async def test_a_found_block_overtakes_the_spooled_shares(tmp_path: Path) -> None:
    bus = offline_bus(tmp_path / "spool")
    # Kafka down: shares and a found block are spooled, each in its own lane
    for n in range(1000):
        await bus.publish(Topic.SHARES, share(n))
    await bus.publish(Topic.FOUND_BLOCKS, found(1))
    stats = bus.stats()
    assert (stats["spool_depth"], stats["block_spool_depth"], stats["block_spooled"]) == (1000, 1, 1)
    assert bus._blocks.spool is not None and bus._blocks.spool.fsync == "always"

    # Kafka back, but slow with the share backlog: the block lane replays on its own
    producer = FakeProducer()
    bus._producer = producer
    bus._block_replayer = asyncio.create_task(bus._run_block_lane())
    bus._blocks.wake.set()
    async with asyncio.timeout(5):
        while bus.stats()["block_spool_depth"]:
            await asyncio.sleep(0.01)
    assert producer.sent == ["ckbpool.found_blocks"]
    assert bus.stats()["spool_depth"] == 1000

    # a block found while the share spool still holds its backlog goes straight out, not behind it
    await bus.publish(Topic.FOUND_BLOCKS, found(2))
    await bus.publish(Topic.SHARES, share(1000))
    assert producer.sent == ["ckbpool.found_blocks", "ckbpool.found_blocks"]
    stats = bus.stats()
    assert (stats["spool_depth"], stats["block_spool_depth"], stats["block_spooled"]) == (1001, 0, 1)
    await bus.close()


async def test_the_block_spool_outlives_the_process(tmp_path: Path) -> None:
    bus = offline_bus(tmp_path / "spool")
    await bus.publish(Topic.FOUND_BLOCKS, found(3))
    await bus.close()
    reopened = Spool(tmp_path / "spool" / BLOCK_SPOOL_SUBDIR)
    try:
        assert reopened.depth == 1
    finally:
        reopened.close()
    # the share spool's directory scan ignores the block lane's subdirectory
    shares = Spool(tmp_path / "spool")
    try:
        assert shares.depth == 0
    finally:
        shares.close()
