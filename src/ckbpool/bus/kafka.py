"""The Kafka bus: pool services in several processes / hosts (``kafka://host:port[,host:port]?...``).

Events travel as protobuf (``Event.to_proto()``), one message type per topic, with a ``ckbpool-event`` header
naming the type. Record keys keep what must stay in order on one partition: templates share one key (one
partition, job order), shares are keyed by ``user.worker``, found blocks and outcomes by block hash.

Producer: aiokafka with ``acks="all"``, idempotence on (so the broker drops the duplicates that its own retries
would create) and a few ms of linger. ``publish`` waits for the acknowledgement at most ``publish_timeout``:

- acknowledged in time: done (``published``);
- could not even be queued (no metadata, buffer full, producer down): the event goes to the disk spool
  (``spooled``);
- queued but not acknowledged in time ("in doubt": the broker may still get it, since an idempotent producer
  retries in-flight batches until they land): the event goes to the spool too, and the spool replay first
  waits for that original send: acknowledged -> the record is dropped unsent, failed -> it is sent again. So an
  outage neither loses nor duplicates events within one process run; after a crash, in-doubt records are sent
  again (at-least-once: consumers that must not double count dedupe on the share's identity).

While the spool holds anything, new events are appended to it too (no waiting at all), so order is kept and a
stratum server is never slowed by a dead broker. A background task (re)connects, creates the topics, and replays
the spool in order in windows of ``replay_batch`` records, acknowledging a record only after Kafka did.

Block lane: found blocks and block outcomes (``BLOCK_TOPICS``) never wait behind shares. They are rare and each
is worth a block reward, while a stratum server that rode out an outage may hold millions of spooled shares. So
they have a lane of their own: sent directly whenever the producer is connected, whatever the share spool holds;
kept, when Kafka cannot take them, in a spool of their own (``<spool_dir>/blocks``, fsynced at every append
and acknowledgement, whatever ``fsync`` says), which a task of its own replays as soon as Kafka is back, ahead
of and independently of the share spool. Nothing orders a block event relative to shares (other topics), so
nothing is lost by letting it overtake them. Delivery of block events is at-least-once like the rest: the
block maker deduplicates found blocks by hash.

Consumers: one ``AIOKafkaConsumer`` per subscription, Kafka ``group_id`` = ``<group>@<topic name>`` (so a
service's subscriptions to several topics under one group name do not make each other rebalance), starting at
the earliest offset for a new group. Offsets are committed manually: a record counts as processed once the
subscriber asks for the next one (or calls ``commit()``), and processed offsets are committed every
``commit_interval`` seconds, before a rebalance takes the partition away, and on close. The record handed out
last is not counted on close or revocation, since its handler may have been interrupted: delivery is
at-least-once. With ``manual_ack=True`` (share accounting) a record counts as processed only at ``ack()``, which
covers every record handed out before it: an offset is never committed for a record the consumer has only
copied into memory. Records handed out and not acked when a partition is revoked or the subscription closes
are delivered again (to this group's next owner of the partition).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import ssl
import struct
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    ClusterAuthorizationFailedError,
    ConsumerStoppedError,
    GroupAuthorizationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)

from ..retry import Backoff, retry
from .base import (
    EVENT_TYPES,
    Bus,
    BusClosed,
    BusError,
    BusUnavailable,
    Event,
    EventDecodeError,
    Subscription,
    Topic,
    check_event,
)
from .events import BlockOutcome, FoundBlock, JobTemplate, Share
from .spool import FSYNC_POLICIES, FsyncPolicy, Spool

log = logging.getLogger(__name__)

EVENT_HEADER = "ckbpool-event"
_TOPIC_CODES = {Topic.TEMPLATES: 1, Topic.SHARES: 2, Topic.FOUND_BLOCKS: 3, Topic.BLOCK_OUTCOMES: 4}
_CODE_TOPICS = {code: topic for topic, code in _TOPIC_CODES.items()}
_SPOOLED = struct.Struct("<BHQ")  # topic code, key length, timestamp ms; then key, then value
_TEMPLATE_KEY = b"templates"
_CONNECT_ERRORS = (KafkaError, OSError, TimeoutError)
#: topics on the block lane (see the module docstring): never queued behind spooled shares
BLOCK_TOPICS = frozenset({Topic.FOUND_BLOCKS, Topic.BLOCK_OUTCOMES})
BLOCK_SPOOL_SUBDIR = "blocks"
T = TypeVar("T")
MAX_MESSAGE_BYTES = 8 << 20  # a full CKB template is ~1.3 MB of JSON; Kafka's default limit is 1 MB


SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
_AUTHORIZATION_ERRORS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError)


async def diagnose_connect(config: KafkaBusConfig, timeout: float = 5.0) -> BaseException | None:
    """Why the bootstrap servers cannot be used, when aiokafka only says "Unable to bootstrap": one direct
    connection attempt (TLS handshake and SASL included) per server; the first error, or None if one works."""
    from aiokafka.conn import create_conn  # type: ignore[import-untyped]

    first: BaseException | None = None
    for server in config.bootstrap_servers:
        host, _, port = server.rpartition(":")
        try:
            async with asyncio.timeout(timeout):
                conn = await create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id=f"{config.client_id}-diagnose",
                    request_timeout_ms=int(timeout * 1000),
                    **config.client_security(),
                )
        except (OSError, KafkaError, TimeoutError, ValueError) as exc:
            first = first or exc
            continue
        conn.close()
        return None
    return first


class KafkaAuthorizationError(BusError):
    """Kafka refused this process's principal an operation its ACLs do not grant (a configuration error: the
    process runs a role its credentials are not for, or the deploy-time ACLs are missing)."""


def describe_refusal(exc: BaseException, config: KafkaBusConfig, what: str) -> str | None:
    """A clear sentence for an authentication / authorization refusal (never containing a secret), else None."""
    who = f"principal {config.username!r}" if config.username else "this (unauthenticated) client"
    if isinstance(exc, _AUTHORIZATION_ERRORS):
        detail = exc.args[0] if exc.args else ""
        return (
            f"Kafka refused {who} {what} ({type(exc).__name__}: {detail}): its ACLs do not allow it; "
            "check which roles this process runs and the credentials it uses"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the Kafka broker's TLS certificate does not verify against {config.ca_file or 'the system CAs'} "
                f"({exc.verify_message}): wrong ca_file, or a broker not of this deployment")  # fmt: skip
    text = repr(exc)
    if isinstance(exc, SaslAuthenticationFailed) or "Authentication failed" in text or "SaslAuthenticat" in text:
        return f"Kafka refused the credentials of {who} (SASL {config.sasl_mechanism}): check {config.password_file}"
    return None


#: the block lane retries sooner than the share replay: a found block should reach the block maker within
#: a second of Kafka being back
BLOCK_REPLAY = Backoff(initial=0.05, maximum=1.0, jitter=0.1)


class _NoProgress(Exception):
    """A spool replay window acknowledged nothing: wait (with backoff) before the next one."""


#: a consumer's fetch failed (logged by _fetch): 0.5 s first, then growing to 5 s while Kafka stays down
_FETCH_RETRY = Backoff(initial=0.5, maximum=5.0, jitter=0.25)


class _FetchFailed(KafkaError):  # type: ignore[misc]
    """A getmany() failed with a KafkaError that :meth:`KafkaSubscription._fetch` logged."""


def default_spool_dir(client_id: str) -> Path:
    base = os.environ.get("CKBPOOL_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "ckbpool"
    )
    return Path(base) / "bus-spool" / client_id


@dataclass
class KafkaBusConfig:
    """Settings of the Kafka bus; ``from_url`` reads them from a ``kafka://`` URL's query string."""

    bootstrap_servers: list[str]
    client_id: str = "ckbpool"
    spool_dir: Path | None = None  # None: no spool, publish raises BusUnavailable when Kafka cannot take an event
    fsync: FsyncPolicy = "interval"
    fsync_interval: float = 1.0
    topic_prefix: str = ""
    partitions: dict[Topic, int] = field(default_factory=lambda: {Topic.SHARES: 3})  # the others: 1
    replication_factor: int = 1
    create_topics: bool = True
    publish_timeout: float = 0.5
    linger_ms: int = 5
    request_timeout_ms: int = 30_000
    connect_timeout: float = 5.0
    close_timeout: float = 5.0
    replay_batch: int = 500
    commit_interval: float = 1.0
    max_attempts: int = 5  # sends of one spooled record failing with a non-retriable error before dead-lettering
    # --- security (issue 18): TLS + SASL/SCRAM between hosts. Secrets travel by file name only: the password is
    # read from password_file whenever a client is created (so a rotated file is picked up on reconnect), never
    # kept in this object, never logged.
    security_protocol: str = "PLAINTEXT"  # or SASL_SSL
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None  # PEM trust bundle (kafka-ca.pem); None: the system's CAs
    check_hostname: bool = True

    def client_security(self) -> dict[str, Any]:
        """The aiokafka keyword arguments for this config's security settings (reads the password file)."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        assert self.password_file is not None and self.username is not None  # from_url / validate() ensure it
        try:
            password = self.password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise BusError(
                f"Kafka password_file {self.password_file}: cannot read ({exc.__class__.__name__})"
            ) from None
        if not password:
            raise BusError(f"Kafka password_file {self.password_file} is empty")
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise BusError(f"Kafka ca_file {self.ca_file}: cannot load ({exc})") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = self.check_hostname
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": context,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": password,
        }

    def validate(self) -> None:
        """Refuse inconsistent security settings with one clear message."""
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol must be one of {SECURITY_PROTOCOLS}, got {self.security_protocol!r}")
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl_mechanism must be one of {SASL_MECHANISMS}, got {self.sasl_mechanism!r}")
        if self.security_protocol == "SASL_SSL":
            missing = [n for n in ("username", "password_file") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"security_protocol=SASL_SSL needs {' and '.join(missing)} in the kafka:// URL")
        elif self.username or self.password_file or self.ca_file:
            raise ValueError(
                "username / password_file / ca_file given with security_protocol=PLAINTEXT: add "
                "security_protocol=SASL_SSL (credentials are never sent in the clear)"
            )

    @classmethod
    def from_url(cls, url: str) -> KafkaBusConfig:
        """``kafka://h1:9092,h2:9092?client_id=pool-a&spool_dir=/var/lib/ckbpool/spool&partitions=6&...``

        Query keys: client_id, spool_dir ("none" disables the spool; default
        ``$CKBPOOL_STATE_DIR|~/.local/state/ckbpool/bus-spool/<client_id>``), fsync (always|interval|never),
        fsync_interval, topic_prefix, partitions (of the shares topic), replication_factor, create_topics (0/1),
        publish_timeout (s), linger_ms, request_timeout_ms, connect_timeout, close_timeout, replay_batch,
        commit_interval; security: security_protocol (PLAINTEXT|SASL_SSL), sasl_mechanism (SCRAM-SHA-512|-256),
        username, password_file, ca_file (PEM), check_hostname (0/1). A ``password`` parameter is refused: a URL
        ends up in config files, process lists and logs.
        """
        parts = urlsplit(url)
        if parts.scheme != "kafka" or not parts.netloc:
            raise ValueError(f"not a kafka:// URL: {url!r}")
        servers = [s.strip() for s in unquote(parts.netloc).split(",") if s.strip()]
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        known = {
            "client_id", "spool_dir", "fsync", "fsync_interval", "topic_prefix", "partitions",
            "replication_factor", "create_topics", "publish_timeout", "linger_ms", "request_timeout_ms",
            "connect_timeout", "close_timeout", "replay_batch", "commit_interval", "security_protocol",
            "sasl_mechanism", "username", "password_file", "ca_file", "check_hostname",
        }  # fmt: skip
        if "password" in query or parts.password is not None:
            raise ValueError("kafka:// URL: never put the password in the URL; give password_file=<path> instead")
        unknown = set(query) - known
        if unknown:
            raise ValueError(f"unknown kafka:// URL parameter(s): {', '.join(sorted(unknown))}")
        config = cls(bootstrap_servers=servers, client_id=query.get("client_id") or "ckbpool")
        spool = query.get("spool_dir")
        if spool is None:
            config.spool_dir = default_spool_dir(config.client_id)
        elif spool.lower() not in ("", "none"):
            config.spool_dir = Path(os.path.expanduser(spool))
        fsync = query.get("fsync", config.fsync)
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        config.fsync = fsync
        config.topic_prefix = query.get("topic_prefix", "")
        if "partitions" in query:
            config.partitions = {Topic.SHARES: int(query["partitions"])}
        if "create_topics" in query:
            config.create_topics = query["create_topics"].lower() not in ("0", "false", "no")
        for name in ("replication_factor", "linger_ms", "request_timeout_ms", "replay_batch"):
            if name in query:
                setattr(config, name, int(query[name]))
        for name in ("fsync_interval", "publish_timeout", "connect_timeout", "close_timeout", "commit_interval"):
            if name in query:
                setattr(config, name, float(query[name]))
        config.security_protocol = query.get("security_protocol", "PLAINTEXT").upper()
        config.sasl_mechanism = query.get("sasl_mechanism", config.sasl_mechanism).upper()
        config.username = query.get("username") or None
        for name in ("password_file", "ca_file"):
            if query.get(name):
                setattr(config, name, Path(os.path.expanduser(query[name])))
        if "check_hostname" in query:
            config.check_hostname = query["check_hostname"].lower() not in ("0", "false", "no")
        config.validate()
        return config

    def topic_name(self, topic: Topic) -> str:
        return self.topic_prefix + topic.value


def record_key(event: Event) -> bytes:
    """The Kafka record key: what has to stay in order shares a partition."""
    if isinstance(event, Share):
        return f"{event.user}.{event.worker}".encode()
    if isinstance(event, FoundBlock | BlockOutcome):
        return event.block_hash
    assert isinstance(event, JobTemplate)
    return _TEMPLATE_KEY


def encode_spooled(topic: Topic, key: bytes, timestamp_ms: int, value: bytes) -> bytes:
    return _SPOOLED.pack(_TOPIC_CODES[topic], len(key), timestamp_ms) + key + value


def decode_spooled(payload: bytes) -> tuple[Topic, bytes, int, bytes]:
    code, key_len, timestamp_ms = _SPOOLED.unpack_from(payload)
    start = _SPOOLED.size
    return _CODE_TOPICS[code], payload[start : start + key_len], timestamp_ms, payload[start + key_len :]


async def _timed(awaitable: Awaitable[T], timeout: float) -> T:
    """``asyncio.wait_for`` without its Python 3.11 flaw (a cancellation racing completion gets lost)."""
    async with asyncio.timeout(timeout):
        return await awaitable


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback: mark an in-doubt send's exception as seen (the replay decides what it means)."""
    if not future.cancelled():
        future.exception()


@dataclass(eq=False)
class _Lane:
    """One ordered path to Kafka: its spool (None: no spool configured) and the replay state that goes with it.

    The bus has two: ``main`` (templates, shares) and ``blocks`` (BLOCK_TOPICS), so that a block event never
    waits for the shares spooled before it."""

    name: str
    spool: Spool | None = None
    in_doubt: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    delivered: set[int] = field(default_factory=set)  # seqs delivered out of order, acked once the head reaches them
    attempts: collections.Counter[int] = field(default_factory=collections.Counter)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def depth(self) -> int:
        return self.spool.depth if self.spool is not None and not self.spool.closed else 0


class KafkaBus(Bus):
    """Kafka backend with a disk spool for outages. Counters: see :meth:`stats`."""

    def __init__(self, config: KafkaBusConfig) -> None:
        self.config = config
        self._producer: Any = None
        self._main = _Lane("main")
        self._blocks = _Lane("blocks")
        self._background: asyncio.Task[None] | None = None
        self._block_replayer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._subscriptions: set[KafkaSubscription] = set()
        self._topics_ready = False
        self._topics_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self.published = 0
        self.spooled = 0
        self.replayed = 0
        self.dead_lettered = 0
        self.ack_timeouts = 0  # events spooled "in doubt" (queued, not acknowledged within publish_timeout)
        self.block_spooled = 0  # block events that went to the block spool
        self.consumed = 0
        self.decode_errors = 0
        self.refused = 0  # publishes Kafka refused for authorization (the ACLs give the topic to another principal)
        self._refused_topics: set[Topic] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._closed:
            raise BusClosed("bus was closed")
        if self._started:
            return
        if self.config.spool_dir is not None:
            self._main.spool = Spool(
                self.config.spool_dir, fsync=self.config.fsync, fsync_interval=self.config.fsync_interval
            )
            try:
                # a found block is fsynced at once whatever the share spool's policy: there are few of them
                self._blocks.spool = Spool(self.config.spool_dir / BLOCK_SPOOL_SUBDIR, fsync="always")
            except BaseException:
                self._main.spool.close()
                raise
        self._started = True
        try:
            await _timed(self._connect(), self.config.connect_timeout)
        except _CONNECT_ERRORS as exc:
            refusal = describe_refusal(exc, self.config, "access")
            if refusal is None and self.config.security_protocol != "PLAINTEXT":
                cause = await diagnose_connect(self.config)
                refusal = describe_refusal(cause, self.config, "access") if cause is not None else None
            if self._main.spool is None:
                await self.close()
                raise BusUnavailable(
                    refusal or f"Kafka at {','.join(self.config.bootstrap_servers)} unreachable: {exc!r}"
                ) from exc
            if refusal:
                log.error("bus: %s; spooling to %s meanwhile", refusal, self.config.spool_dir)
            else:
                log.warning("Kafka unreachable at start (%r): spooling to %s until it is back", exc,
                            self.config.spool_dir)  # fmt: skip
        self._background = asyncio.create_task(self._run_background(), name="ckbpool-bus-kafka")
        if self._blocks.spool is not None:
            self._block_replayer = asyncio.create_task(self._run_block_lane(), name="ckbpool-bus-kafka-blocks")
        if self._main.spool is not None and self.config.fsync == "interval":
            self._syncer = asyncio.create_task(self._sync_spool(), name="ckbpool-bus-spool-fsync")

    async def _connect(self) -> None:
        await self.ensure_topics()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.config.bootstrap_servers,
            client_id=self.config.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.config.linger_ms,
            request_timeout_ms=self.config.request_timeout_ms,
            max_request_size=MAX_MESSAGE_BYTES,
            **self.config.client_security(),
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        if self._closed:  # close() ran while we were connecting
            with contextlib.suppress(Exception):
                await producer.stop()
            return
        self._producer = producer

    async def ensure_topics(self) -> None:
        """Create the four topics if missing (idempotent; concurrent creators are fine)."""
        if self._topics_ready or not self.config.create_topics:
            return
        async with self._topics_lock:
            if self._topics_ready:
                return
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.config.bootstrap_servers,
                client_id=f"{self.config.client_id}-admin",
                request_timeout_ms=self.config.request_timeout_ms,
                **self.config.client_security(),
            )
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                wanted = [
                    NewTopic(
                        self.config.topic_name(topic),
                        self.config.partitions.get(topic, 1),
                        self.config.replication_factor,
                        topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
                    )
                    for topic in Topic
                    if self.config.topic_name(topic) not in existing
                ]
                if wanted:
                    response = await admin.create_topics(wanted)
                    for name, code, *rest in response.topic_errors:
                        if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (another process won the race)
                            raise BusError(f"creating Kafka topic {name} failed: error {code} {rest}")
                    log.info("created Kafka topics %s", ", ".join(t.name for t in wanted))
            finally:
                await admin.close()
            self._topics_ready = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._background, self._block_replayer, self._syncer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        deadline = time.monotonic() + self.config.close_timeout
        for lane in (self._blocks, self._main):  # block events first: they are worth the most
            if self._producer is not None and lane.depth:
                with contextlib.suppress(TimeoutError, *_CONNECT_ERRORS):
                    await _timed(self._drain_spool(lane), max(0.0, deadline - time.monotonic()))
        if self._producer is not None:
            await self._stop_producer(max(0.1, deadline - time.monotonic()))
        for subscription in list(self._subscriptions):
            await subscription.close()
        for lane in (self._blocks, self._main):
            if lane.spool is not None:
                if lane.spool.depth:
                    log.warning("closing with %d events in the spool %s: they go out on the next start",
                                lane.spool.depth, lane.spool.directory)  # fmt: skip
                lane.spool.close()

    async def _stop_producer(self, timeout: float) -> None:
        producer, self._producer = self._producer, None
        try:
            await _timed(producer.flush(), timeout)
        except TimeoutError:
            log.warning("Kafka producer flush timed out after %.1fs; unacknowledged events stay in the spool", timeout)
            sender = getattr(getattr(producer, "_sender", None), "sender_task", None)
            if sender is not None:
                sender.cancel()  # else stop() waits for a broker that is not there
        with contextlib.suppress(Exception):
            await _timed(producer.stop(), 5.0)

    async def _drain_spool(self, lane: _Lane) -> None:
        assert lane.spool is not None
        while lane.spool.depth and self._producer is not None:
            await self._replay_window(lane)

    # ------------------------------------------------------------------ publish

    async def publish(self, topic: Topic, event: Event) -> None:
        if self._closed:
            raise BusClosed("publish on a closed bus")
        check_event(topic, event)
        value = event.to_proto()
        key = record_key(event)
        timestamp_ms = int(time.time() * 1000)
        producer = self._producer
        # block events take their own lane: they never wait behind spooled shares (module docstring)
        lane = self._blocks if topic in BLOCK_TOPICS else self._main
        if producer is None or lane.depth:
            self._spool_event(lane, topic, key, timestamp_ms, value, "Kafka not connected" if producer is None else "")
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.publish_timeout
        try:
            future = await _timed(
                producer.send(
                    self.config.topic_name(topic),
                    value,
                    key=key,
                    timestamp_ms=timestamp_ms,
                    headers=[(EVENT_HEADER, type(event).event_name.encode())],
                ),
                self.config.publish_timeout,
            )
        except (TimeoutError, KafkaError) as exc:  # not queued: nothing is in flight
            self._refused(exc, topic, lane)
            self._spool_event(lane, topic, key, timestamp_ms, value, f"send failed: {exc!r}")
            return
        try:
            await _timed(asyncio.shield(future), max(0.001, deadline - loop.time()))
        except TimeoutError:
            future.add_done_callback(_retrieve)
            seq = self._spool_event(lane, topic, key, timestamp_ms, value, "no acknowledgement in time")
            lane.in_doubt[seq] = future
            self.ack_timeouts += 1
            return
        except KafkaError as exc:
            self._refused(exc, topic, lane)
            self._spool_event(lane, topic, key, timestamp_ms, value, f"delivery failed: {exc!r}")
            return
        self.published += 1

    def _refused(self, exc: BaseException, topic: Topic, lane: _Lane) -> None:
        """An authorization refusal is a configuration error, not an outage: say so loudly (once per topic), and
        raise :class:`KafkaAuthorizationError` when there is no spool to keep the event for a fixed ACL."""
        refusal = describe_refusal(exc, self.config, f"writing {self.config.topic_name(topic)}")
        if refusal is None:
            return
        self.refused += 1
        if topic not in self._refused_topics:
            self._refused_topics.add(topic)
            log.error("bus: %s", refusal)
        if lane.spool is None:
            raise KafkaAuthorizationError(refusal) from exc

    def _spool_event(self, lane: _Lane, topic: Topic, key: bytes, timestamp_ms: int, value: bytes, why: str) -> int:
        spool = lane.spool
        if spool is None:
            raise BusUnavailable(f"Kafka cannot take the event ({why or 'backlog'}) and no spool is configured")
        was_empty = spool.depth == 0
        seq = spool.append(encode_spooled(topic, key, timestamp_ms, value))
        self.spooled += 1
        if lane is self._blocks:
            self.block_spooled += 1
        if was_empty:
            log.warning("bus: spooling %s events to %s (%s)", lane.name, spool.directory, why or "backlog")
        lane.wake.set()
        return seq

    # ------------------------------------------------------------------ background: reconnect, replay, fsync

    async def _sync_spool(self) -> None:
        spool = self._main.spool
        assert spool is not None
        while True:
            await asyncio.sleep(self.config.fsync_interval)
            spool.sync()  # fsync of what was appended since: short, and never racing close()

    async def _run_background(self) -> None:
        """(Re)connect, then replay the main spool whenever it holds anything; waits come from ``ckbpool.retry``.

        The block lane has a task of its own (:meth:`_run_block_lane`), so a share replay that waits or backs
        off never holds a block back."""
        lane = self._main
        while not self._closed:
            if self._producer is None:
                await retry(
                    lambda: _timed(self._connect(), self.config.connect_timeout),
                    on=_CONNECT_ERRORS,
                    what="Kafka connect",
                )
                log.info("bus: connected to Kafka at %s", ",".join(self.config.bootstrap_servers))
                self._blocks.wake.set()
                continue
            if lane.depth == 0:
                lane.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await _timed(lane.wake.wait(), self.config.fsync_interval)
                continue
            await retry(partial(self._replay_progress, lane), on=(*_CONNECT_ERRORS, _NoProgress), what="spool replay")
            if lane.depth == 0:
                log.warning("bus: spool drained, %d events replayed so far", self.replayed)

    async def _run_block_lane(self) -> None:
        """Replay the block spool whenever it holds anything and Kafka is connected (the main task connects)."""
        lane = self._blocks
        while not self._closed:
            if self._producer is None or lane.depth == 0:
                lane.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await _timed(lane.wake.wait(), 0.5)
                continue
            await retry(
                partial(self._replay_progress, lane),
                on=(*_CONNECT_ERRORS, _NoProgress),
                policy=BLOCK_REPLAY,
                what="block spool replay",
            )
            if lane.depth == 0:
                log.warning("bus: block spool drained")

    async def _replay_progress(self, lane: _Lane) -> None:
        """One replay window that must acknowledge something, else _NoProgress (retried with backoff)."""
        if self._closed or lane.depth == 0 or self._producer is None:
            return
        if not await self._replay_window(lane):
            raise _NoProgress("no spooled record was acknowledged")

    async def _replay_window(self, lane: _Lane) -> bool:
        """Send up to ``replay_batch`` spooled records in order, ack the delivered prefix. True if it acked any."""
        spool, producer = lane.spool, self._producer
        assert spool is not None and producer is not None
        records = spool.read(self.config.replay_batch)
        sends: list[tuple[int, asyncio.Future[Any] | None]] = []
        for record in records:
            if record.seq in lane.delivered:
                sends.append((record.seq, None))
                continue
            future = lane.in_doubt.pop(record.seq, None)
            if future is None:
                topic, key, timestamp_ms, value = decode_spooled(record.payload)
                try:
                    future = await _timed(
                        producer.send(
                            self.config.topic_name(topic),
                            value,
                            key=key,
                            timestamp_ms=timestamp_ms,
                            headers=[(EVENT_HEADER, EVENT_TYPES[topic].event_name.encode())],
                        ),
                        self.config.request_timeout_ms / 1000,
                    )
                except (TimeoutError, KafkaError) as exc:
                    with contextlib.suppress(KafkaAuthorizationError):
                        self._refused(exc, topic, lane)
                    log.debug("bus: replay could not queue record %d: %r", record.seq, exc)
                    break
            sends.append((record.seq, future))
        acked = 0
        head_blocked = False
        for (seq, future), record in zip(sends, records, strict=False):
            if future is not None:
                try:
                    await asyncio.shield(future)  # never cancel aiokafka's own batch future
                except KafkaError as exc:
                    with contextlib.suppress(KafkaAuthorizationError):
                        self._refused(exc, decode_spooled(record.payload)[0], lane)
                    head_blocked = True
                    if not getattr(exc, "retriable", True):
                        lane.attempts[seq] += 1
                        if lane.attempts[seq] >= self.config.max_attempts:
                            self._dead_letter(lane, record.payload, exc)
                            lane.delivered.add(seq)
                    log.debug("bus: replay of %s record %d failed: %r", lane.name, seq, exc)
                    continue
                self.replayed += 1
            lane.delivered.add(seq)
            if not head_blocked:
                spool.ack(record)
                lane.delivered.discard(seq)
                lane.attempts.pop(seq, None)
                acked += 1
        return acked > 0

    def _dead_letter(self, lane: _Lane, payload: bytes, exc: BaseException) -> None:
        """A record Kafka refuses for good (e.g. too large): keep it aside in ``dead-letter.spool``, loudly."""
        assert lane.spool is not None
        path = lane.spool.directory / "dead-letter.spool"
        with open(path, "ab") as f:
            f.write(len(payload).to_bytes(4, "little") + payload)
        self.dead_lettered += 1
        log.error("bus: Kafka refused a spooled event %d times (%r); moved to %s", self.config.max_attempts, exc, path)

    # ------------------------------------------------------------------ subscribe / stats

    def subscribe(self, topic: Topic, group: str, *, manual_ack: bool = False) -> Subscription:
        if self._closed:
            raise BusClosed("subscribe on a closed bus")
        subscription = KafkaSubscription(self, Topic(topic), group, manual_ack=manual_ack)
        self._subscriptions.add(subscription)
        return subscription

    def stats(self) -> dict[str, int]:
        spool = self._main.spool
        return {
            "published": self.published,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "spool_depth": self._main.depth,
            "spool_bytes": spool.pending_bytes if spool is not None and not spool.closed else 0,
            "block_spooled": self.block_spooled,
            "block_spool_depth": self._blocks.depth,
            "in_doubt": len(self._main.in_doubt) + len(self._blocks.in_doubt),
            "ack_timeouts": self.ack_timeouts,
            "dead_lettered": self.dead_lettered,
            "consumed": self.consumed,
            "decode_errors": self.decode_errors,
            "refused": self.refused,
            "connected": int(self._producer is not None),
        }


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: KafkaSubscription) -> None:
        self.subscription = subscription

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.subscription._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        sub = self.subscription
        if not assigned and sub.topic is Topic.TEMPLATES:
            # Every stratum process (and each of its worker processes) must read every template, so each reads
            # as a group of its own (its server_id). A member left without the topic's partition means another
            # process joined the same group: overlapping server_id ranges (a process with N workers uses
            # server_id .. server_id + N - 1), or for a moment a rolling restart. Its miners get no job.
            log.warning(
                "consumer group %s got no partition of %s: another process reads templates as the same group, so "
                "this one hands its miners no job -- give each stratum process its own server_id range "
                "(server_id .. server_id + workers - 1; deploys space them 16 apart)",
                sub.kafka_group_id,
                sub.topic,
            )
        sub._assigned.set()  # also with no partitions: the member has joined


class KafkaSubscription(Subscription):
    """Events of one topic for one consumer group; see the module docstring for offsets and delivery."""

    def __init__(self, bus: KafkaBus, topic: Topic, group: str, *, manual_ack: bool = False) -> None:
        self._bus = bus
        self.manual_ack = manual_ack
        # TopicPartition -> next offset, of records handed out by next_batch (any mode) or __anext__ (manual
        # mode) and not yet processed: auto mode folds them in at the next read, manual mode at ack()
        self._handed: dict[Any, int] = {}
        self.topic = topic
        self.group = group
        # One Kafka group per (group, topic): a service's subscriptions to different topics do not rebalance
        # each other, and the test prefix isolates groups too.
        self.kafka_group_id = f"{group}@{bus.config.topic_name(topic)}"
        self._consumer: Any = None
        self._buffer: collections.deque[Any] = collections.deque()
        self._current: Any = None  # the record handed out last; processed once the next one is asked for
        self._processed: dict[Any, int] = {}  # TopicPartition -> next offset to commit
        self._dirty = False
        self._last_commit = time.monotonic()
        self._assigned = asyncio.Event()
        self._start_lock = asyncio.Lock()
        self._closed = False

    async def _ensure_started(self) -> Any:
        if self._consumer is not None:
            return self._consumer
        async with self._start_lock:
            if self._consumer is None:
                self._consumer = await retry(self._start_consumer, on=_CONNECT_ERRORS, what="Kafka consumer start")
        return self._consumer

    async def _start_consumer(self) -> Any:
        """One attempt to start this subscription's consumer; StopAsyncIteration once the subscription closed."""
        if self._closed:
            raise StopAsyncIteration
        config = self._bus.config
        consumer = AIOKafkaConsumer(
            bootstrap_servers=config.bootstrap_servers,
            client_id=config.client_id,
            group_id=self.kafka_group_id,
            heartbeat_interval_ms=1000,  # members notice a rebalance within ~1 s
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=config.request_timeout_ms,
            fetch_max_bytes=MAX_MESSAGE_BYTES * 2,
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            **config.client_security(),
        )
        try:
            await self._bus.ensure_topics()
            consumer.subscribe([config.topic_name(self.topic)], listener=_Rebalance(self))
            await consumer.start()
        except BaseException as exc:
            # also a *cancelled* start (next_batch bounds it by its poll timeout): a half-started consumer left
            # behind keeps its coordinator running, joins the group and holds partitions nobody fetches from, so
            # their records wait until the process restarts (found by the chaos harness, tests/chaos)
            with contextlib.suppress(Exception):
                await consumer.stop()
            if isinstance(exc, _CONNECT_ERRORS):
                refusal = describe_refusal(exc, config, f"reading {self.topic} as group {self.kafka_group_id}")
                if refusal:
                    log.error("bus: %s; retrying", refusal)
                else:
                    log.warning("bus: consumer %s/%s cannot reach Kafka (%r); retrying", self.topic, self.group, exc)
            raise
        return consumer

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            await self._ensure_started()
            await self._assigned.wait()

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        consumer = await self._ensure_started()
        self._mark_processed()
        while True:
            if self._closed:
                raise StopAsyncIteration
            while self._buffer:
                record = self._buffer.popleft()
                event = self._decode(record)
                if self.manual_ack:
                    self._hand_out(record)
                    if event is None:
                        continue
                    self._bus.consumed += 1
                    return event
                if event is None:
                    self._current = record
                    self._mark_processed()
                    continue
                self._current = record
                self._bus.consumed += 1
                return event
            # a Kafka error (broker down, leader moving) backs off through ckbpool.retry instead of polling a
            # dead broker at a fixed rate; the wait starts over once a fetch works
            await retry(
                partial(self._fetch_or_raise, consumer, self._bus.config.commit_interval),
                on=KafkaError,
                policy=_FETCH_RETRY,
                what=f"fetch {self.topic}/{self.group}",
            )

    async def next_batch(self, max_events: int, timeout: float) -> list[Event] | None:
        if self._closed:
            return None
        try:
            consumer = await _timed(self._ensure_started(), timeout)
        except TimeoutError:
            return []
        except StopAsyncIteration:
            return None
        self._mark_processed()
        if not self._buffer:
            try:
                await self._fetch(consumer, timeout)
            except StopAsyncIteration:
                return None
        events: list[Event] = []
        while self._buffer and len(events) < max_events:
            record = self._buffer.popleft()
            self._hand_out(record)
            event = self._decode(record)
            if event is not None:
                self._bus.consumed += 1
                events.append(event)
        return None if self._closed and not events else events

    async def _fetch(self, consumer: Any, timeout: float) -> bool:
        """One getmany() into the buffer (committing what is due first). False on a Kafka error."""
        await self._maybe_commit()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=500)
        except ConsumerStoppedError:
            raise StopAsyncIteration from None
        except KafkaError as exc:
            refusal = describe_refusal(exc, self._bus.config, f"reading {self.topic} as group {self.kafka_group_id}")
            if refusal:
                log.error("bus: %s", refusal)
            else:
                log.warning("bus: consumer %s/%s: %r", self.topic, self.group, exc)
            return False
        for records in batches.values():
            self._buffer.extend(records)
        return True

    async def _fetch_or_raise(self, consumer: Any, timeout: float) -> None:
        """:meth:`_fetch`, raising the KafkaError (already logged) for :func:`retry` to back off on."""
        if not await self._fetch(consumer, timeout):
            raise _FetchFailed(self.topic)

    def _hand_out(self, record: Any) -> None:
        self._handed[TopicPartition(record.topic, record.partition)] = record.offset + 1

    async def ack(self) -> None:
        """Every record handed out so far is processed; committed within ``commit_interval``."""
        if self._handed:
            self._processed.update(self._handed)
            self._handed.clear()
            self._dirty = True
        await self._maybe_commit()

    def _decode(self, record: Any) -> Event | None:
        expected = EVENT_TYPES[self.topic]
        for name, value in record.headers or ():
            if name == EVENT_HEADER and value != expected.event_name.encode():
                log.error("bus: %s carries a %r record at offset %d; skipped", self.topic, value, record.offset)
                self._bus.decode_errors += 1
                return None
        try:
            return expected.from_proto(record.value)
        except EventDecodeError as exc:
            log.error("bus: undecodable %s record at %d/%d: %s; skipped", self.topic, record.partition,
                      record.offset, exc)  # fmt: skip
            self._bus.decode_errors += 1
            return None

    def _mark_processed(self) -> None:
        if not self.manual_ack and self._handed:
            self._processed.update(self._handed)
            self._handed.clear()
            self._dirty = True
        record = self._current
        if record is not None:
            self._processed[TopicPartition(record.topic, record.partition)] = record.offset + 1
            self._current = None
            self._dirty = True

    async def _maybe_commit(self, force: bool = False) -> None:
        if not self._dirty or self._consumer is None:
            return
        if not force and time.monotonic() - self._last_commit < self._bus.config.commit_interval:
            return
        await self._commit(dict(self._processed))

    async def _commit(self, offsets: dict[Any, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (KafkaError, AssertionError) as exc:  # AssertionError: a partition we no longer own
            log.warning("bus: offset commit for %s/%s failed: %r", self.topic, self.group, exc)
            owned = self._consumer.assignment()
            for tp in [tp for tp in self._processed if tp not in owned]:
                del self._processed[tp]  # its new owner starts from the last committed offset
            self._dirty = bool(self._processed)
            return
        for tp, offset in offsets.items():
            if self._processed.get(tp) == offset:
                del self._processed[tp]
        self._dirty = bool(self._processed)
        self._last_commit = time.monotonic()

    async def commit(self) -> None:
        """Commit what was processed so far (the record handed out last counts as processed) now."""
        self._mark_processed()
        await self._maybe_commit(force=True)

    async def _on_revoked(self, revoked: set[Any]) -> None:
        current = self._current
        if current is not None and TopicPartition(current.topic, current.partition) in revoked:
            self._current = None  # maybe still being handled: its partition's new owner gets it again
        await self._commit({tp: off for tp, off in self._processed.items() if tp in revoked})
        for tp in revoked:
            self._processed.pop(tp, None)
            self._handed.pop(tp, None)  # handed out, not acked: the partition's new owner gets them again
        self._buffer = collections.deque(r for r in self._buffer if TopicPartition(r.topic, r.partition) not in revoked)
        self._assigned.clear()

    async def close(self) -> None:
        """Commit what was processed and leave the group; a pending ``__anext__`` ends."""
        if self._closed:
            return
        self._closed = True
        self._bus._subscriptions.discard(self)
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        # The record handed out last is not marked processed: if its handler was interrupted, the group gets
        # it again (at-least-once). Call commit() first to count it as done.
        self._consumer = consumer  # for the final commit
        with contextlib.suppress(Exception):
            await _timed(self._maybe_commit(force=True), self._bus.config.close_timeout)
        self._consumer = None
        with contextlib.suppress(Exception):
            await _timed(consumer.stop(), self._bus.config.close_timeout)
