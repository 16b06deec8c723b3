"""The in-process bus: the embedded default (``memory://``). Events are passed as objects, never serialized.

Each (topic, group) has one FIFO queue; ``publish`` appends the same (immutable) event object to the queue of
every group of the topic, and the subscribers of a group pull from its queue (competing consumers). A group
exists while it has at least one open subscription: subscribers created before a publish receive everything
published after; a group whose last subscriber closed is forgotten (unlike Kafka, which keeps its offsets).

There are no positions to commit, so ``manual_ack`` changes nothing here: what a subscriber took from its queue
is gone from the bus (a crash of the process loses it together with the process's memory).

Queues are unbounded, so a slow consumer never slows the stratum server down; a warning is logged each time a
group's backlog crosses ``high_water`` (and again at every doubling), so a stuck consumer shows up in the logs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

from .base import EVENT_TYPES, Bus, BusClosed, Event, Subscription, Topic, check_event

log = logging.getLogger(__name__)

DEFAULT_HIGH_WATER = 100_000


class _GroupQueue:
    """FIFO of one consumer group, shared by the group's subscriptions."""

    __slots__ = ("_next_warning", "closed", "high_water", "items", "name", "subscribers", "waiters")

    def __init__(self, name: str, high_water: int) -> None:
        self.name = name
        self.items: collections.deque[Event] = collections.deque()
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.subscribers = 0
        self.closed = False
        self.high_water = high_water
        self._next_warning = high_water

    def put(self, event: Event) -> None:
        items = self.items
        items.append(event)
        if len(items) >= self._next_warning:
            log.warning(
                "bus group %s has %d undelivered events (high-water mark %d)", self.name, len(items), self.high_water
            )
            self._next_warning *= 2
        self._wake_one()

    def put_many(self, events: list[Event]) -> None:
        """``put`` for a list: one extend, one high-water check, one wake-up (the woken subscriber wakes the next
        while items remain, see ``get``)."""
        items = self.items
        items.extend(events)
        if len(items) >= self._next_warning:
            log.warning(
                "bus group %s has %d undelivered events (high-water mark %d)", self.name, len(items), self.high_water
            )
            while self._next_warning <= len(items):
                self._next_warning *= 2
        self._wake_one()

    def _wake_one(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def take_ready(self, count: int) -> list[Event]:
        """Up to ``count`` queued events, without waiting."""
        items = self.items
        taken = [items.popleft() for _ in range(min(count, len(items)))]
        if len(items) < self.high_water // 2:
            self._next_warning = self.high_water
        return taken

    async def get(self, subscription: InProcSubscription) -> Event:
        while True:
            if subscription.closed:
                if self.items:
                    self._wake_one()  # hand the wake-up we may have consumed to another subscriber
                raise StopAsyncIteration
            if self.items:
                break
            if self.closed:
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and self.items:
                    self._wake_one()  # we were woken and cancelled at once: pass the wake-up on
                raise
        event = self.items.popleft()
        if len(self.items) < self.high_water // 2:
            self._next_warning = self.high_water
        if self.items:
            self._wake_one()  # another subscriber of the group may be waiting as well
        return event


class InProcSubscription(Subscription):
    def __init__(self, bus: InProcBus, topic: Topic, group: str, queue: _GroupQueue) -> None:
        self._bus = bus
        self.topic = topic
        self.group = group
        self._queue = queue
        self.closed = False

    async def __anext__(self) -> Event:
        if self.closed:
            raise StopAsyncIteration
        return await self._queue.get(self)

    async def next_batch(self, max_events: int, timeout: float) -> list[Event] | None:
        if self.closed:
            return None
        queue = self._queue
        try:
            async with asyncio.timeout(timeout):
                first = await queue.get(self)
        except TimeoutError:
            return []
        except StopAsyncIteration:
            return None
        return [first, *queue.take_ready(max_events - 1)]

    async def close(self) -> None:
        """Detach from the group; an ``__anext__`` waiting in another task ends (StopAsyncIteration)."""
        if not self.closed:
            self.closed = True
            self._bus._detach(self.topic, self.group)
            self._queue.wake_all()  # the others go back to waiting; ours sees closed


class InProcBus(Bus):
    """Bus inside one process. ``publish`` never waits: it appends to the group queues and returns."""

    def __init__(self, *, high_water: int = DEFAULT_HIGH_WATER) -> None:
        self.high_water = high_water
        self._groups: dict[Topic, dict[str, _GroupQueue]] = {topic: {} for topic in Topic}
        self._closed = False
        self.published = 0

    async def start(self) -> None:
        if self._closed:
            raise BusClosed("bus was closed")

    async def close(self) -> None:
        """Subscriptions still get the events already queued, then end."""
        self._closed = True
        for groups in self._groups.values():
            for queue in groups.values():
                queue.closed = True
                queue.wake_all()

    async def publish(self, topic: Topic, event: Event) -> None:
        if self._closed:
            raise BusClosed("publish on a closed bus")
        check_event(topic, event)
        for queue in self._groups[topic].values():
            queue.put(event)
        self.published += 1

    async def publish_many(self, topic: Topic, events: Sequence[Event]) -> None:
        """Every event's type is checked first, then the whole list goes onto each group's queue at once: all of
        it or none (a wrong type raises before anything is queued). Issue 19: per share, ``publish``'s await, type
        check and wake-up were a third of the in-process bus's cost in the share path."""
        if self._closed:
            raise BusClosed("publish on a closed bus")
        expected = EVENT_TYPES[topic]
        for event in events:
            if type(event) is not expected:
                check_event(topic, event)  # raises, naming the type
        if not events:
            return
        batch = events if isinstance(events, list) else list(events)
        for queue in self._groups[topic].values():
            queue.put_many(batch)
        self.published += len(batch)

    def subscribe(self, topic: Topic, group: str, *, manual_ack: bool = False) -> Subscription:
        if self._closed:
            raise BusClosed("subscribe on a closed bus")
        topic = Topic(topic)
        groups = self._groups[topic]
        queue = groups.get(group)
        if queue is None:
            queue = groups[group] = _GroupQueue(f"{topic.value}/{group}", self.high_water)
        queue.subscribers += 1
        return InProcSubscription(self, topic, group, queue)

    def _detach(self, topic: Topic, group: str) -> None:
        queue = self._groups[topic].get(group)
        if queue is None:
            return
        queue.subscribers -= 1
        if queue.subscribers <= 0:
            del self._groups[topic][group]
            queue.closed = True
            queue.wake_all()

    def backlog(self, topic: Topic, group: str) -> int:
        """Events queued for ``group`` and not yet taken by a subscriber."""
        queue = self._groups[topic].get(group)
        return len(queue.items) if queue else 0

    def stats(self) -> dict[str, int]:
        backlog = sum(len(q.items) for groups in self._groups.values() for q in groups.values())
        groups = sum(len(groups) for groups in self._groups.values())
        return {"published": self.published, "groups": groups, "backlog": backlog}
