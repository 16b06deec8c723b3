"""The bus interface every pool service talks through; ``create_bus`` (in ``ckbpool.bus``) picks the backend.

Semantics shared by the backends:

- ``publish(topic, event)`` hands one event to the bus. It returns once the event is safe: handed to every
  in-process group queue, or acknowledged by Kafka (acks=all), or appended to the local disk spool when Kafka
  cannot take it within a bounded wait. It never takes long, and it never drops an event it returned for.
  Found blocks and block outcomes never queue behind other events (Kafka: a lane and spool of their own).
- ``subscribe(topic, group)`` gives an async iterator of events. Consumer-group semantics: every group receives
  every event once; subscribers that share a group share the stream (each event goes to one of them).
  Events of one topic reach a single subscriber in publish order (Kafka: per partition, see ``kafka.py``).
- ``close()`` flushes what it can within a bounded time; subscriptions then end.
- By default an event counts as processed (Kafka: its offset may be committed) once the subscriber asks for
  the next one. ``subscribe(..., manual_ack=True)`` is for consumers that write events elsewhere in batches
  (share accounting): events count as processed only when the subscriber calls ``ack()``, which covers every
  event handed out so far -- so a position never moves past an event that is not yet safely written.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

from .events import BlockOutcome, Event, EventDecodeError, FoundBlock, JobTemplate, Share

__all__ = [
    "EVENT_TYPES",
    "Bus",
    "BusClosed",
    "BusError",
    "BusUnavailable",
    "Event",
    "EventDecodeError",
    "SpoolError",
    "Subscription",
    "Topic",
]


class BusError(Exception):
    """Base class of the errors raised by ``ckbpool.bus``."""


class BusClosed(BusError):
    """publish/subscribe on a bus (or subscription) that was closed."""


class BusUnavailable(BusError):
    """The backend could not take the event and there is nowhere to keep it (Kafka down and no spool)."""


class SpoolError(BusError):
    """The local disk spool cannot be opened or written (held by another process, disk full, ...)."""


class Topic(enum.StrEnum):
    """Bus topics; the value is the Kafka topic name (before any configured prefix)."""

    TEMPLATES = "ckbpool.templates"
    SHARES = "ckbpool.shares"
    FOUND_BLOCKS = "ckbpool.found_blocks"
    BLOCK_OUTCOMES = "ckbpool.block_outcomes"


EVENT_TYPES: dict[Topic, type[Event]] = {
    Topic.TEMPLATES: JobTemplate,
    Topic.SHARES: Share,
    Topic.FOUND_BLOCKS: FoundBlock,
    Topic.BLOCK_OUTCOMES: BlockOutcome,
}


def check_event(topic: Topic, event: Event) -> None:
    """Raise TypeError unless ``event`` is the type that travels on ``topic``."""
    expected = EVENT_TYPES[topic]
    if type(event) is not expected:
        raise TypeError(f"{topic.value} carries {expected.__name__}, not {type(event).__name__}")


class Subscription(abc.ABC):
    """An async iterator of the events of one topic for one consumer group; ``close()`` ends it."""

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> Event: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def next_batch(self, max_events: int, timeout: float) -> list[Event] | None:
        """Up to ``max_events`` events: waits at most ``timeout`` s for the first, then takes only what is
        already there. ``[]`` when nothing came in time, ``None`` once the subscription has ended.

        Batching consumers use it instead of ``async for`` so that they read no further ahead than the batch
        they are about to write (backends override it to take many events at once)."""
        try:
            async with asyncio.timeout(timeout):
                return [await self.__anext__()]
        except TimeoutError:
            return []
        except StopAsyncIteration:
            return None

    async def ack(self) -> None:
        """With ``manual_ack``: every event handed out so far is processed (its position may be committed)."""
        return None

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once the subscription is attached (Kafka: joined its group and got partitions).

        Not needed for correctness (a new group starts from the earliest event); tests and the group-sharing
        case use it to know that a subscriber takes part before events are published.
        """
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Bus(abc.ABC):
    """One event bus: in-process (``memory://``) or Kafka (``kafka://``). Use ``async with bus:`` or start/close."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what can be flushed (bounded in time) and release clients; open subscriptions end."""

    @abc.abstractmethod
    async def publish(self, topic: Topic, event: Event) -> None:
        """Hand ``event`` to the bus; see the module docstring for the guarantee. TypeError on the wrong type."""

    async def publish_many(self, topic: Topic, events: Sequence[Event]) -> None:
        """``publish`` each of ``events``, in order (the stratum server's share queue hands its batch over at once).

        This default publishes one after the other, with ``publish``'s guarantee for each. Backends override it
        where a batch is cheaper as a whole (in-process: one append per group; IPC: one frame). A failure part way
        leaves it unknown how many were taken: handing the same list again duplicates those, which accounting
        drops by the shares' stable ids."""
        for event in events:
            await self.publish(topic, event)

    @abc.abstractmethod
    def subscribe(self, topic: Topic, group: str, *, manual_ack: bool = False) -> Subscription:
        """Events of ``topic`` for consumer group ``group``; ``manual_ack``: see the module docstring."""

    def stats(self) -> dict[str, int]:
        """Counters for metrics: published, spooled, replayed, spool_depth, ... (backend-specific keys)."""
        return {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
