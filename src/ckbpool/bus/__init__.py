"""The pool's event bus: one interface, two backends. Only this package knows which one is in use.

    bus = create_bus(None)                                    # embedded: in-process, objects passed as they are
    bus = create_bus("kafka://10.0.0.5:9092?client_id=stratum-1&spool_dir=/var/lib/ckbpool/spool")

    async with bus:
        await bus.publish(Topic.SHARES, share)
        async for share in bus.subscribe(Topic.SHARES, group="accounting"):
            ...

Events (``events.py``): JobTemplate, Share, FoundBlock, BlockOutcome; ``EVENT_TYPES`` maps each topic to its event
class. Errors derive from :class:`BusError`.
"""

from __future__ import annotations

from .base import (
    EVENT_TYPES,
    Bus,
    BusClosed,
    BusError,
    BusUnavailable,
    Event,
    EventDecodeError,
    SpoolError,
    Subscription,
    Topic,
)
from .events import BlockOutcome, FoundBlock, JobTemplate, Share
from .inproc import InProcBus

__all__ = [
    "EVENT_TYPES",
    "BlockOutcome",
    "Bus",
    "BusClosed",
    "BusError",
    "BusUnavailable",
    "Event",
    "EventDecodeError",
    "FoundBlock",
    "InProcBus",
    "JobTemplate",
    "Share",
    "SpoolError",
    "Subscription",
    "Topic",
    "create_bus",
]


def create_bus(url: str | None) -> Bus:
    """``None`` or ``"memory://"`` -> in-process bus; ``"kafka://host:port[,host:port]?..."`` -> Kafka bus.

    Kafka URL parameters are listed in :meth:`ckbpool.bus.kafka.KafkaBusConfig.from_url`. Raises ValueError for
    any other URL. The Kafka backend (and aiokafka) is imported only when asked for.
    """
    if url is None or url in ("memory://", "memory:"):
        return InProcBus()
    if url.startswith("kafka://"):
        from .kafka import KafkaBus, KafkaBusConfig

        return KafkaBus(KafkaBusConfig.from_url(url))
    raise ValueError(f"unsupported bus URL {url!r}: use memory:// or kafka://host:port[,host:port]?...")
