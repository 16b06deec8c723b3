"""The local IPC bus: stratum worker processes talk to their parent over one Unix domain socket each.

``ckbpool pool run`` with ``stratum.workers > 1`` runs N stratum processes on one port (``SO_REUSEPORT``) and
keeps the job maker, block maker and accounting in the parent (``ckbpool.pool.procs``). The parent's bus is an
:class:`IpcHub`: a :class:`Bus` wrapping the configured one (in-process, or Kafka) that also listens on a Unix
socket; each worker's bus is an :class:`IpcBus` connected to it. Everything else in the pool sees the ordinary
``Bus`` interface, so a worker is the stratum-only role of the distributed topology, with the parent as its bus.

Wire format: frames of ``u32 length (big-endian) | u8 kind | payload``; events travel as their ``to_proto()``
bytes (``ckbpool.bus.events``), so a share's stable id (``source``, ``seq``) crosses unchanged -- each worker
is its own ``source``. :meth:`IpcBus.publish_many` (the stratum server's share queue, issue 19) sends a list of
events as one frame and one write: per share, the frame, the syscall and the await were most of the link's cost.
Shares go in a codec of their own (:func:`encode_shares`): fixed-size records and a table of the batch's
distinct strings (server, source, user, worker, reason repeat from share to share); the protobuf round trip
(message object, per-field reads, length checks) was half of the parent's CPU per share.

Guarantees, per worker connection:

- Order: one stream socket, read by the hub in order and handed to the wrapped bus one event after the other.
- ``publish`` returns once the frame is in the kernel, i.e. on the hub's receive queue: a worker killed with
  SIGKILL a microsecond later loses nothing it published (the hub still reads the queued bytes before it sees
  the end of the stream). That is the in-process bus's guarantee (the parent's memory) moved one hop. When the
  wrapped bus is durable (Kafka), the hub acknowledges each event once the wrapped bus took it and ``publish``
  waits for that acknowledgement, so Kafka's guarantee crosses the socket as well.
- Back-pressure: the hub reads the next bytes only after the wrapped bus took the previous events; a full socket
  makes ``publish`` wait (the write buffer limit is 0: ``publish`` waits until its frame left the process).
- Subscriptions: ``subscribe`` on a worker subscribes the hub to the wrapped bus with the same topic and group
  and streams the events over the socket. A new templates subscription first gets the latest template the hub
  published, so a restarted worker has a job for its miners at once, not at the next tip.
- Templates the parent publishes (its job maker) are written to every templates subscription's socket inside
  ``publish`` itself, before it returns; the wrapped bus's copy of the same template (same ``job_id`` and
  ``received_at``) is then skipped by the pump. Why: through the pump a new tip waited for the parent's next
  event-loop turn -- after whatever woke with it, on 2 cores often another process -- 0.4 ms median and up to
  3 ms of the new-template -> last-channel latency (issue 19's fan-out at 100 channels). Templates from elsewhere
  (a Kafka-wrapped hub whose job maker runs on another host) still come through the pump.

The hub also collects what its workers report (``send_ready``, ``send_stats``) for the parent's ``/status`` and
``/metrics`` (:class:`WorkerLink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from . import _sharecodec
from .base import (
    EVENT_TYPES,
    Bus,
    BusClosed,
    BusUnavailable,
    Event,
    EventDecodeError,
    Subscription,
    Topic,
    check_event,
)
from .events import SEQ_MAX, JobTemplate, Share
from .inproc import InProcBus

__all__ = [
    "FrameError",
    "IpcBus",
    "IpcHub",
    "WorkerLink",
    "decode_frames",
    "decode_shares",
    "encode_frame",
    "encode_shares",
]

log = logging.getLogger(__name__)

# frame kinds
HELLO = 1  # worker -> hub: JSON {"name", "pid"}
WELCOME = 2  # hub -> worker: JSON {"durable"}
PUBLISH = 3  # worker -> hub: u8 topic index | event proto
SUBSCRIBE = 4  # worker -> hub: JSON {"id", "topic", "group"}
EVENT = 5  # hub -> worker: u32 subscription id | event proto
ACK = 6  # hub -> worker: u64 events of this connection the wrapped bus has taken (durable hubs only)
READY = 7  # worker -> hub: its stratum server listens
STATS = 8  # worker -> hub: JSON, its status and metrics (the hub keeps the latest)
PUBLISH_MANY = 9  # worker -> hub: u8 topic index | (u32 length | event proto)*, published in that order
SHARES = 10  # worker -> hub: Share events in the compact codec (encode_shares), published in that order

MAX_FRAME = 64 << 20  # a template is ~100 KiB-1 MiB; anything this large is a bug, not a message
_HEADER = struct.Struct(">IB")
_TOPIC = struct.Struct(">B")
_SUB = struct.Struct(">I")
_ACK = struct.Struct(">Q")
_LEN = struct.Struct(">I")
#: events per PUBLISH_MANY frame at most (a share is ~150 bytes: frames stay far below MAX_FRAME)
MANY_PER_FRAME = 8192
_TOPICS: tuple[Topic, ...] = tuple(Topic)
_TOPIC_INDEX = {topic: index for index, topic in enumerate(_TOPICS)}
_READ_SIZE = 1 << 18
#: a templates subscription whose socket holds this many unsent bytes gets no further template written at once:
#: it is sent the latest one when its socket drained (a worker needs only the newest; memory stays bounded)
TEMPLATE_BACKLOG_MAX = 16 << 20
#: (job_id, received_at) of the templates written directly, remembered per subscription to skip the pump's copy
_SENT_KEYS = 64


class FrameError(ValueError):
    """Bytes on the IPC socket that are not a frame of this protocol (a bug or a foreign peer: the link ends)."""


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One frame: ``u32 length of (kind + payload) | u8 kind | payload``."""
    return _HEADER.pack(len(payload) + 1, kind) + payload


def decode_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove every complete frame from the front of ``buffer`` and return them as ``(kind, payload)``."""
    frames: list[tuple[int, bytes]] = []
    offset = 0
    size = len(buffer)
    while size - offset >= 5:
        length, kind = _HEADER.unpack_from(buffer, offset)
        if length < 1 or length > MAX_FRAME:
            raise FrameError(f"frame length {length} out of range")
        end = offset + 4 + length
        if end > size:
            break
        frames.append((kind, bytes(buffer[offset + 5 : end])))
        offset = end
    if offset:
        del buffer[:offset]
    return frames


# The SHARES codec is C (_sharecodec.c: the format, and why): with several workers, encoding each share in the
# worker and decoding it in the parent is per-share work the one-process pool does not have, and in Python it was a
# tenth of a share's cost (issue 19). tests/unit/test_share_codec.py keeps a struct-based reference of the format.
_sharecodec.configure(Share, FrameError, SEQ_MAX)
#: Shares as one payload: ``u32 strings | u32 shares | (u32 length | UTF-8)* | record* | block_hash*``
encode_shares = _sharecodec.encode_shares
#: the inverse of :func:`encode_shares`; :class:`FrameError` for a payload that is not one (a Share's ranges are the
#: record's field widths, seq checked on its own, so the Shares are built without running Share's checks again)
decode_shares = _sharecodec.decode_shares


def _decode_event(topic: Topic, data: bytes) -> Event:
    return EVENT_TYPES[topic].from_proto(data)


@dataclass
class WorkerLink:
    """One connected worker as the hub sees it: identity, readiness, the latest report, the end of its stream."""

    name: str
    pid: int = 0
    ready: bool = False
    connected_at: float = field(default_factory=time.time)
    stats: dict[str, Any] = field(default_factory=dict)
    stats_at: float = 0.0
    received: int = 0  # events published through this link
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # the hub read the end of the stream


@dataclass(eq=False)
class _TemplateSink:
    """One worker's templates subscription, written to directly by :meth:`IpcHub.publish`."""

    writer: asyncio.StreamWriter
    prefix: bytes  # the EVENT frame's subscription id
    sent: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=_SENT_KEYS))
    catch_up: asyncio.Task[None] | None = None  # waiting for a full socket to drain (TEMPLATE_BACKLOG_MAX)


def _template_key(event: JobTemplate) -> tuple[int, float]:
    return event.job_id, event.received_at


class IpcHub(Bus):
    """The parent's bus: ``inner`` for this process's services, plus a Unix socket for the worker processes.

    ``durable`` (default: ``inner`` is not the in-process bus) makes the workers' ``publish`` wait until
    ``inner`` took the event (module docstring)."""

    def __init__(self, inner: Bus, path: Path, *, durable: bool | None = None) -> None:
        self.inner = inner
        self.path = path
        self.durable = not isinstance(inner, InProcBus) if durable is None else durable
        self.links: dict[str, WorkerLink] = {}
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._latest_template: JobTemplate | None = None
        self._last_encoded: tuple[Event, bytes] | None = None
        self._template_sinks: list[_TemplateSink] = []
        self._closed = False
        self.received = 0
        self.link_errors = 0
        self._changed = asyncio.Event()

    # -- Bus ------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.inner.start()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, str(self.path), limit=_READ_SIZE)
        os.chmod(self.path, 0o600)  # only this user's processes may publish shares into the books

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        for writer in self._connections.values():
            writer.transport.abort()  # the link's reader sees the end and finishes normally
        if self._connections:
            _done, pending = await asyncio.wait(list(self._connections), timeout=5)
            for task in pending:
                task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        await self.inner.close()

    async def publish(self, topic: Topic, event: Event) -> None:
        if topic is Topic.TEMPLATES and isinstance(event, JobTemplate):
            self._latest_template = event
            for sink in self._template_sinks:
                self._send_template(sink, event)
        await self.inner.publish(topic, event)

    async def publish_many(self, topic: Topic, events: Sequence[Event]) -> None:
        if topic is Topic.TEMPLATES:
            for event in events:
                await self.publish(topic, event)
            return
        await self.inner.publish_many(topic, events)

    def subscribe(self, topic: Topic, group: str, *, manual_ack: bool = False) -> Subscription:
        return self.inner.subscribe(topic, group, manual_ack=manual_ack)

    def stats(self) -> dict[str, int]:
        return {
            **self.inner.stats(),
            "ipc_links": sum(1 for link in self.links.values() if not link.closed.is_set()),
            "ipc_received": self.received,
            "ipc_link_errors": self.link_errors,
        }

    # -- the workers' side ----------------------------------------------------------------------
    async def wait_ready(self, name: str, timeout: float) -> WorkerLink:
        """The link of worker ``name`` once it said its server listens; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                link = self.links.get(name)
                if link is not None and link.ready and not link.closed.is_set():
                    return link
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed(self, name: str, timeout: float) -> bool:
        """True once the hub has read (and handed on) everything worker ``name`` sent, up to its end."""
        link = self.links.get(name)
        if link is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.closed.wait(), timeout)
        return link.closed.is_set()

    def _notify(self) -> None:
        self._changed.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        link: WorkerLink | None = None
        pumps: list[tuple[asyncio.Task[None], Subscription]] = []
        buffer = bytearray()
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                buffer += data
                published = 0
                for kind, payload in decode_frames(buffer):
                    if kind == SHARES:
                        if link is None:
                            raise FrameError("publish before hello")
                        # the batch goes on as one list (the in-process bus queues it in one step)
                        shares = decode_shares(payload)
                        await self.inner.publish_many(Topic.SHARES, shares)
                        count = len(shares)
                        link.received += count
                        published += count
                    elif kind == PUBLISH_MANY:
                        if link is None:
                            raise FrameError("publish before hello")
                        count = await self._publish_many(payload)
                        link.received += count
                        published += count
                    elif kind == PUBLISH:
                        if link is None:
                            raise FrameError("publish before hello")
                        topic = _TOPICS[payload[0]]
                        await self.publish(topic, _decode_event(topic, payload[1:]))
                        link.received += 1
                        published += 1
                    elif kind == HELLO:
                        hello = json.loads(payload)
                        link = WorkerLink(name=str(hello["name"]), pid=int(hello.get("pid", 0)))
                        self.links[link.name] = link  # a restarted worker replaces its predecessor's entry
                        writer.write(encode_frame(WELCOME, json.dumps({"durable": self.durable}).encode()))
                        self._notify()
                    elif kind == SUBSCRIBE:
                        request = json.loads(payload)
                        pumps.append(self._start_pump(writer, int(request["id"]), Topic(request["topic"]), request))
                    elif kind == STATS and link is not None:
                        link.stats = json.loads(payload)
                        link.stats_at = time.time()
                    elif kind == READY and link is not None:
                        link.ready = True
                        self._notify()
                    else:
                        raise FrameError(f"unexpected frame kind {kind}")
                if published:
                    self.received += published
                    if self.durable and link is not None:
                        writer.write(encode_frame(ACK, _ACK.pack(link.received)))
        except (FrameError, EventDecodeError, ValueError, KeyError, IndexError) as exc:
            self.link_errors += 1
            log.error("IPC link %s broken: %s", link.name if link else "?", exc)
        except (ConnectionError, BusClosed) as exc:
            log.info("IPC link %s ended: %r", link.name if link else "?", exc)
        finally:
            for pump, subscription in pumps:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
                with contextlib.suppress(Exception):
                    await subscription.close()
            writer.close()
            if link is not None:
                link.closed.set()
                self._notify()
            self._connections.pop(task, None)

    async def _publish_many(self, payload: bytes) -> int:
        """The events of one PUBLISH_MANY frame, in order; how many."""
        topic = _TOPICS[payload[0]]
        decode = EVENT_TYPES[topic].from_proto
        publish = self.publish if topic is Topic.TEMPLATES else self.inner.publish
        offset, end, count = 1, len(payload), 0
        while offset < end:
            (size,) = _LEN.unpack_from(payload, offset)
            offset += 4
            if offset + size > end:
                raise FrameError("event runs past the end of its PUBLISH_MANY frame")
            await publish(topic, decode(payload[offset : offset + size]))
            offset += size
            count += 1
        return count

    def _start_pump(
        self, writer: asyncio.StreamWriter, sub_id: int, topic: Topic, request: dict[str, Any]
    ) -> tuple[asyncio.Task[None], Subscription]:
        subscription = self.inner.subscribe(topic, str(request["group"]))
        sink = None
        if topic is Topic.TEMPLATES:
            sink = _TemplateSink(writer, _SUB.pack(sub_id))
            if self._latest_template is not None:
                self._send_template(sink, self._latest_template)
            self._template_sinks.append(sink)
        return asyncio.create_task(self._pump(writer, sub_id, subscription, sink)), subscription

    def _send_template(self, sink: _TemplateSink, event: JobTemplate) -> None:
        """Write ``event`` to one templates subscription now, unless its socket is backed up (then it gets the
        latest template once drained)."""
        if sink.writer.is_closing():
            return
        sink.sent.append(_template_key(event))
        if sink.catch_up is not None:
            return  # the catch-up sends the latest when the socket drained
        if sink.writer.transport.get_write_buffer_size() >= TEMPLATE_BACKLOG_MAX:
            log.warning("IPC link: a worker is not reading its templates; it gets the latest once it does")
            sink.catch_up = asyncio.create_task(self._catch_up(sink))
            return
        sink.writer.write(encode_frame(EVENT, sink.prefix + self._encoded(event)))

    async def _catch_up(self, sink: _TemplateSink) -> None:
        try:
            await sink.writer.drain()
        except (ConnectionError, RuntimeError):
            return  # the link is gone: its reader ends it
        finally:
            sink.catch_up = None
        if self._latest_template is not None:
            self._send_template(sink, self._latest_template)

    def _encoded(self, event: Event) -> bytes:
        """``event.to_proto()``, once for all the workers it goes to: the in-process bus hands every subscription
        the same object, and a template (up to ~1 MiB) is what every worker gets at once on a new tip."""
        last = self._last_encoded
        if last is not None and last[0] is event:
            return last[1]
        data = event.to_proto()
        self._last_encoded = (event, data)
        return data

    async def _pump(
        self, writer: asyncio.StreamWriter, sub_id: int, subscription: Subscription, sink: _TemplateSink | None
    ) -> None:
        """Stream one subscription of the wrapped bus to a worker; for templates, only those not already written
        to it directly (the replay, or this hub's own ``publish``)."""
        prefix = _SUB.pack(sub_id)
        try:
            async for event in subscription:
                if sink is not None and isinstance(event, JobTemplate):
                    key = _template_key(event)
                    if key in sink.sent:
                        continue
                    sink.sent.append(key)
                writer.write(encode_frame(EVENT, prefix + self._encoded(event)))
                await writer.drain()
        finally:
            if sink is not None:
                with contextlib.suppress(ValueError):
                    self._template_sinks.remove(sink)
                if sink.catch_up is not None:
                    sink.catch_up.cancel()


class IpcSubscription(Subscription):
    """Events the hub streams for one ``subscribe`` of a worker."""

    def __init__(self, bus: IpcBus, sub_id: int, topic: Topic) -> None:
        self._bus = bus
        self.sub_id = sub_id
        self.topic = topic
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def _put(self, event: Event) -> None:
        self._items.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __anext__(self) -> Event:
        while not self._items:
            if self.closed or self._bus.lost.is_set():
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._items.popleft()

    async def close(self) -> None:
        self.closed = True
        self._bus._subscriptions.pop(self.sub_id, None)
        self._wake()


class IpcBus(Bus):
    """A worker's bus: one connection to the parent's :class:`IpcHub` at ``path``; ``name`` identifies the worker.

    ``lost`` is set when the parent went away; the worker shuts down then (nobody would count its shares)."""

    def __init__(self, path: Path, name: str, *, connect_timeout: float = 10.0) -> None:
        self.path = path
        self.name = name
        self.connect_timeout = connect_timeout
        self.durable = False
        self.published = 0
        self.lost = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._subscriptions: dict[int, IpcSubscription] = {}
        self._next_sub = 1
        self._acked = 0
        self._ack_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._read_task: asyncio.Task[None] | None = None
        self._closed = False
        self.on_lost: Callable[[], None] | None = None

    async def start(self) -> None:
        if self._closed:
            raise BusClosed("bus was closed")
        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(str(self.path), limit=_READ_SIZE)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() > deadline:
                    raise BusUnavailable(f"no IPC hub at {self.path}: {exc}") from exc
                await asyncio.sleep(0.05)
        transport = self._writer.transport  # uvloop's transports are not asyncio.WriteTransport subclasses
        self._transport = transport
        transport.set_write_buffer_limits(high=0)  # drain() returns only once every frame left the process
        self._writer.write(encode_frame(HELLO, json.dumps({"name": self.name, "pid": os.getpid()}).encode()))
        kind, payload = await self._read_one()
        if kind != WELCOME:
            raise FrameError(f"expected WELCOME, got frame kind {kind}")
        self.durable = bool(json.loads(payload)["durable"])
        self._read_task = asyncio.create_task(self._read_loop())

    async def _read_one(self) -> tuple[int, bytes]:
        assert self._reader is not None
        async with asyncio.timeout(self.connect_timeout):
            length, kind = _HEADER.unpack(await self._reader.readexactly(5))
            return kind, await self._reader.readexactly(length - 1)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        buffer = bytearray()
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                buffer += data
                for kind, payload in decode_frames(buffer):
                    if kind == EVENT:
                        (sub_id,) = _SUB.unpack_from(payload)
                        subscription = self._subscriptions.get(sub_id)
                        if subscription is not None:
                            subscription._put(_decode_event(subscription.topic, payload[4:]))
                    elif kind == ACK:
                        (self._acked,) = _ACK.unpack(payload)
                        self._release_acks()
                    else:
                        raise FrameError(f"unexpected frame kind {kind} from the hub")
        except (ConnectionError, FrameError, EventDecodeError) as exc:
            log.error("IPC link to the parent broken: %r", exc)
        finally:
            self._set_lost()

    def _release_acks(self) -> None:
        waiters = self._ack_waiters
        while waiters and waiters[0][0] <= self._acked:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _set_lost(self) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        error = BusUnavailable("the parent process went away")
        while self._ack_waiters:
            _, future = self._ack_waiters.popleft()
            if not future.done():
                future.set_exception(error)
        for subscription in self._subscriptions.values():
            subscription._wake()
        if not self._closed:
            log.error("the IPC hub closed the link")
            if self.on_lost is not None:
                self.on_lost()

    async def close(self) -> None:
        """Flush what is written (bounded), end the link; subscriptions end."""
        self._closed = True
        writer = self._writer
        if writer is not None and not self.lost.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 5)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
        self._set_lost()

    def _send(self, frame: bytes) -> None:
        if self._closed:
            raise BusClosed("publish on a closed bus")
        writer = self._writer
        if writer is None or self.lost.is_set() or writer.transport.is_closing():
            raise BusUnavailable("no link to the parent process")
        writer.write(frame)

    async def _flushed(self) -> None:
        transport = self._transport
        assert transport is not None and self._writer is not None
        if transport.get_write_buffer_size():
            try:
                await self._writer.drain()
            except ConnectionError as exc:
                raise BusUnavailable(f"link to the parent process broken: {exc!r}") from exc
        if transport.is_closing():
            raise BusUnavailable("the link to the parent process closed before the event left")

    async def _delivered(self) -> None:
        """Return once everything published so far is in the kernel -- and, to a durable hub, taken by it."""
        number = self.published
        await self._flushed()
        if self.durable and self._acked < number:
            future = asyncio.get_running_loop().create_future()
            self._ack_waiters.append((number, future))
            await future

    async def publish(self, topic: Topic, event: Event) -> None:
        check_event(topic, event)
        self._send(encode_frame(PUBLISH, _TOPIC.pack(_TOPIC_INDEX[topic]) + event.to_proto()))
        self.published += 1
        await self._delivered()

    async def publish_many(self, topic: Topic, events: Sequence[Event]) -> None:
        """``publish`` for a list, in order, as one frame per ``MANY_PER_FRAME`` events and one write: returns once
        all of them are in the kernel (a durable hub: once it took the last one). A failure leaves it unknown
        how many the hub took; handing the same list again duplicates those (stable ids: accounting drops them)."""
        if not events:
            return
        index = _TOPIC.pack(_TOPIC_INDEX[topic])
        pack = _LEN.pack
        frames = []
        for start in range(0, len(events), MANY_PER_FRAME):
            if topic is Topic.SHARES:
                chunk = events[start : start + MANY_PER_FRAME]
                for event in chunk:
                    if type(event) is not Share:
                        check_event(topic, event)  # raises, naming the type
                frames.append(encode_frame(SHARES, encode_shares(cast("Sequence[Share]", chunk))))
                continue
            parts = [index]
            for event in events[start : start + MANY_PER_FRAME]:
                check_event(topic, event)
                data = event.to_proto()
                parts.append(pack(len(data)))
                parts.append(data)
            frames.append(encode_frame(PUBLISH_MANY, b"".join(parts)))
        self._send(frames[0] if len(frames) == 1 else b"".join(frames))
        self.published += len(events)
        await self._delivered()

    def subscribe(self, topic: Topic, group: str, *, manual_ack: bool = False) -> Subscription:
        topic = Topic(topic)
        sub_id = self._next_sub
        self._next_sub += 1
        request = {"id": sub_id, "topic": topic.value, "group": group}
        subscription = IpcSubscription(self, sub_id, topic)
        self._subscriptions[sub_id] = subscription
        self._send(encode_frame(SUBSCRIBE, json.dumps(request).encode()))
        return subscription

    async def send_ready(self) -> None:
        """Tell the parent this worker's stratum server listens."""
        self._send(encode_frame(READY, b""))
        await self._flushed()

    async def send_stats(self, report: dict[str, Any]) -> None:
        """The worker's latest figures for the parent's /status and /metrics (JSON)."""
        self._send(encode_frame(STATS, json.dumps(report, separators=(",", ":")).encode()))
        await self._flushed()

    def stats(self) -> dict[str, int]:
        return {"published": self.published, "connected": 0 if self.lost.is_set() else 1}
