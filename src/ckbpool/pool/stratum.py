"""The Stratum V2 server: Noise handshake, the sans-IO ServerConnection per miner, and the pool's policy.

One asyncio task per connection reads, decrypts, feeds the state machine and acts on its events; everything a
connection sends goes through :meth:`MinerSession.send` so Noise nonces stay in order. A malformed frame, a
failed MAC or a protocol violation closes that one connection — never the server.

Shares and their answers: every checked share becomes a bus event with a stable id (``source`` = this server
run, ``seq`` = publish order; accounting dedups on it). SubmitShares.Success for an accepted share goes out only
after the bus took its event (``publish`` returned: in-process queue, Kafka ack or the disk spool), so a miner is
never told Success for a share that exists only in this process's memory; publishing is retried
(``ckbpool.retry``) while the bus cannot take events, and the Success waits with it. ``close()`` stops reading
from miners, publishes what is queued, sends the Successes, then closes the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..bus.base import BusClosed
from ..bus.events import FoundBlock, Share
from ..ckb.target import target_to_share_difficulty
from ..ckb.template import MiningJob
from ..retry import retry
from ..sv2 import ckb_profile
from ..sv2.errors import FrameTooLarge, Sv2Error
from ..sv2.events import (
    ChannelClosed,
    ChannelInfo,
    ChannelKind,
    ChannelUpdateRequested,
    ConnectionClosed,
    ConnectionSetUp,
    Event,
    MessageIgnored,
    MessageReceived,
    OpenExtendedChannelRequested,
    OpenStandardChannelRequested,
    Rejected,
    ShareSubmitted,
)
from ..sv2.extensions import EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
from ..sv2.framing import Frame, FrameDecoder
from ..sv2.messages_ckb import (
    EXTENSION_TYPE_CKB_TEMPLATE,
    CkbJobTemplate,
    CkbSubmitSolution,
    CkbTemplateSubscribe,
)
from ..sv2.noise import NoiseResponder, NoiseTransport, ResponderCredentials
from ..sv2.noise_handshake import MSG1_SIZE
from ..sv2.server import PreparedJobMessage, ServerConnection
from .channels import (
    JobEntry,
    PrefixAllocator,
    PrefixExhausted,
    ShareResult,
    Vardiff,
    check_share,
    floored_hashrate,
    target_for_hashrate,
)
from .config import PoolConfig, VardiffSettings
from .identity import (
    ERROR_ADDRESS_WRONG_NETWORK,
    ERROR_INVALID_IDENTITY,
    Identity,
    IdentityError,
    check_worker,
    is_solo,
    parse_identity,
)
from .limits import ConnectionLimiter, ip_key
from .limits import TokenBucket as RateBucket
from .metrics import (
    LIMIT_CHANNELS_PER_CONNECTION,
    LIMIT_FRAME_TOO_LARGE,
    LIMIT_HASHRATE_FLOOR,
    LIMIT_MESSAGE_RATE,
    LIMIT_REASONS,
    LIMIT_UPDATE_CHANNEL_RATE,
    HashrateWindow,
    PoolMetrics,
)
from .solo import SoloJobError, SoloJobs, solo_lock_error

log = logging.getLogger(__name__)
TWO_256 = 1 << 256
MAX_WRITE_BUFFER = 4 << 20  # a client that does not read what we send is dropped, not buffered forever
_SUPPORTED_EXTENSIONS = (EXTENSION_TYPE_CKB_TEMPLATE, EXTENSION_TYPE_WORKER_HASHRATE_TRACKING)
#: OpenMiningChannel.Error code when a connection already has ``stratum.max_channels_per_connection`` channels
ERROR_TOO_MANY_CHANNELS = "too-many-channels"


@dataclass
class ActiveJob:
    """A job as the server hands it out: the chain-side job, the share checker's entry, its id."""

    job_id: int
    job: MiningJob
    entry: JobEntry
    new_height: bool
    # the node's template JSON the job was built from (template extension 0x4CCB), when known
    template_json: bytes | None = None
    # a SOLO variant of job ``job_id`` for this account (``solo:<address>``, pool.solo); "" for the pool's job
    solo_user: str = ""


#: a share waiting for the bus: the event, and for an accepted one what its SubmitShares.Success needs
#: (session, channel, sequence_number, shares_sum); session and channel None for a rejected share
_Queued = tuple[Share, "MinerSession | None", "ChannelState | None", int, int]


class _JobFrames:
    """A job's messages, each encoded once (lazily, for the channel kinds present) and handed to every channel
    with only its channel id patched in: per channel of a fan-out, what remains is the state machine's
    bookkeeping, the encryption and the write. ``new_height``: sent as a future job followed by SetNewPrevHash
    (a new tip, or a channel that opens), else as an active job on the current tip."""

    __slots__ = ("_extended", "_prev_hash", "_standard", "active", "new_height")

    def __init__(self, active: ActiveJob, *, new_height: bool) -> None:
        self.active = active
        self.new_height = new_height
        self._standard: PreparedJobMessage | None = None
        self._extended: PreparedJobMessage | None = None
        self._prev_hash: PreparedJobMessage | None = None

    def job(self, kind: ChannelKind) -> PreparedJobMessage:
        a = self.active
        if kind is ChannelKind.EXTENDED:
            if self._extended is None:
                extended = ckb_profile.extended_job(0, a.job_id, a.job, future=self.new_height)
                self._extended = PreparedJobMessage.of(extended)
            return self._extended
        if self._standard is None:
            standard = ckb_profile.standard_job(0, a.job_id, a.job, future=self.new_height)
            self._standard = PreparedJobMessage.of(standard)
        return self._standard

    def prev_hash(self) -> PreparedJobMessage:
        if self._prev_hash is None:
            a = self.active
            self._prev_hash = PreparedJobMessage.of(ckb_profile.set_new_prev_hash(0, a.job_id, a.job))
        return self._prev_hash


class JobBook:
    """Recent jobs by id. Jobs of older heights stay known for a while so their shares read as stale, not
    unknown; the current parent decides staleness."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self.jobs: OrderedDict[int, ActiveJob] = OrderedDict()
        self.current: ActiveJob | None = None
        self.current_parent: bytes | None = None

    def add(self, job_id: int, job: MiningJob, template_json: bytes | None = None) -> ActiveJob:
        new_height = self.current_parent != job.parent_hash
        entry = JobEntry(
            job_id=job_id,
            pow_hash=job.pow_hash,
            network_target=job.target,
            height=job.height,
            parent_hash=job.parent_hash,
        )
        active = ActiveJob(job_id, job, entry, new_height, template_json)
        self.jobs[job_id] = active
        while len(self.jobs) > self.keep:
            self.jobs.popitem(last=False)
        self.current = active
        self.current_parent = job.parent_hash
        if new_height:
            # duplicate sets of older heights can go: their shares are stale anyway
            for other in self.jobs.values():
                if other.entry.parent_hash != job.parent_hash:
                    other.entry.seen.clear()
        return active

    def get(self, job_id: int) -> ActiveJob | None:
        return self.jobs.get(job_id)


@dataclass(slots=True)
class ChannelState:
    """The pool's side of one open channel (slotted: one per miner channel, issue 19)."""

    info: ChannelInfo
    user: str
    worker: str
    vardiff: Vardiff
    pending_accepted: int = 0
    pending_sum: int = 0
    last_sequence: int = 0
    accepted: int = 0
    rejected: int = 0
    # After a SetTarget that makes shares harder, shares already in flight were found against the old
    # target: accept them until grace_until (credited at the target they met).
    previous_target: int = 0
    grace_until: float = 0.0
    # CkbTemplateSubscribe received: send CkbJobTemplate with every job (docs/sv2-ckb.md section 9)
    templates: bool = False
    # UpdateChannel rate limit of this channel (created at the first UpdateChannel)
    updates: RateBucket | None = None
    # the account is ``solo:<address>``: this channel mines SOLO jobs (pool.solo), never the pool's
    solo: bool = False

    @property
    def target(self) -> int:
        return self.vardiff.target

    def share_target(self, now: float) -> int:
        if now < self.grace_until and self.previous_target > self.vardiff.target:
            return self.previous_target
        return self.vardiff.target


def split_identity(user_identity: str) -> tuple[str, str]:
    """``user.worker`` split at the first dot; a missing worker is ``default``."""
    user, _, worker = user_identity.partition(".")
    return user, worker or "default"


@functools.lru_cache(maxsize=1 << 16)
def cached_identity(text: str, network: str | None) -> Identity | IdentityError:
    """:func:`parse_identity`, remembered: a proxy tags every share with its device's identity, and decoding a
    CKB address (bech32) per share would cost more than checking the share's Eaglesong."""
    try:
        return parse_identity(text, network)
    except IdentityError as exc:
        return exc


@functools.lru_cache(maxsize=1 << 16)
def _tagged_worker(account: str, worker: str) -> Identity | IdentityError:
    try:
        check_worker(worker)
    except IdentityError as exc:
        return exc
    return Identity(account, worker)


class Flooding(Exception):
    """A connection sent messages faster than its rate limit allows."""


class TokenBucket:
    """Message rate limit of one connection: ``rate`` per second on average, bursts up to ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, count: int) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= count
        return self.tokens >= 0


class MinerSession:
    """One miner connection after the handshake.

    Slotted, and nothing per connection that an idle miner does not need (issue 19: an idle encrypted channel
    is mostly this object graph): no asyncio objects besides the transport; the flush timer exists only while
    acknowledgements wait, the setup timer only until SetupConnection."""

    __slots__ = (
        "__weakref__",
        "_closing",
        "_flush_handle",
        "_setup_timer",
        "bucket",
        "channels",
        "closed",
        "conn",
        "fd",
        "last_rx",
        "noise",
        "peer",
        "plain",
        "server",
        "setup_complete",
        "transport",
    )

    def __init__(
        self, server: StratumServer, transport: asyncio.Transport, noise: NoiseTransport | None, peer: Any = None
    ) -> None:
        self.server = server
        self.transport = transport
        self.noise = noise
        st = server.config.stratum
        self.conn = ServerConnection(
            success_flags=server.success_flags,
            # 0x0002 + 0x4CCB's share TLVs: a proxy credits each V1 device to its own identity (see on_share)
            supported_extensions=_SUPPORTED_EXTENSIONS,
            max_payload=st.max_frame_bytes,
        )
        self.channels: dict[int, ChannelState] = {}
        self.peer = transport.get_extra_info("peername") if peer is None else peer
        #: the socket's descriptor, for the fan-out's direct write (StratumServer._send_job); -1: none
        self.fd = _descriptor(transport)
        self._flush_handle: asyncio.TimerHandle | None = None
        self.closed = False
        self._closing = False
        #: SetupConnection answered with .Success; until then the setup timer runs, after it the idle timeout
        self.setup_complete = False
        self._setup_timer: asyncio.TimerHandle | None = None
        self.last_rx = time.monotonic()  # the last read, for the idle timeout (StratumServer._idle_loop)
        self.bucket = TokenBucket(st.max_messages_per_second, st.message_burst)
        self.plain = FrameDecoder(st.max_frame_bytes) if noise is None else None

    # -- output -----------------------------------------------------------------------------------
    def send(self, plaintext_frame: bytes) -> None:
        if self.closed or not plaintext_frame:
            return
        data = self.noise.encrypt_frame(plaintext_frame) if self.noise is not None else plaintext_frame
        self._write(data)

    def send_many(self, plaintext_frames: list[bytes]) -> None:
        """Several frames in one write (job + SetNewPrevHash): one syscall per connection on a new tip."""
        if self.closed:
            return
        frames = [f for f in plaintext_frames if f]
        if self.noise is not None:
            self._write(self.noise.encryptor.encrypt_frames(frames))
        else:
            self._write(b"".join(frames))

    def _write(self, data: bytes) -> None:
        transport = self.transport
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing %s: it does not read what we send", self.peer)
            self.close()

    def close(self, *, linger: bool = False) -> None:
        """Acknowledge what was accepted, forget the channels, end the connection.

        ``linger`` (the server's shutdown): half-close instead -- FIN after the last Successes, and keep reading
        (and discarding) until the miner closes its side. Closing a socket whose receive queue holds bytes the
        miner sent meanwhile (more shares) makes the kernel send a RST, and a RST can make the miner's kernel drop
        our last Successes before the miner reads them: shares booked that the miner never saw answered. This is
        the lingering close of HTTP servers; :meth:`StratumServer.close` bounds the wait."""
        if self.closed or self._closing:
            return
        self._closing = True  # send() may call close() again (slow reader) while the last acks go out
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._setup_timer is not None:
            self._setup_timer.cancel()
            self._setup_timer = None
        # shares accepted but not yet acknowledged get their SubmitShares.Success before the connection goes
        with contextlib.suppress(Exception):
            if not self.conn.closed:
                self.flush_acks()
        self.closed = True
        for channel_id in list(self.channels):
            self.server.forget_channel(self, channel_id)
        transport = self.transport
        if linger and transport.can_write_eof():
            transport.write_eof()  # after the buffered writes; reads go on (discarded) until the miner's FIN
        else:
            transport.close()  # after the buffered writes (the last Successes) went out

    # -- input ------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        # Frame by frame, each answered before the next one reaches the state machine, also without Noise:
        # conn.receive_data would run every frame of the chunk first, and an answer (a channel accepted, a
        # share acknowledged) could then find its channel or the connection already closed by a later frame.
        frames: list[bytes] | list[Frame]
        if self.server.draining:
            return  # shutting down: a share read now could not be published and answered any more
        if self.noise is not None:
            frames = self.noise.feed(data)
        else:
            assert self.plain is not None
            frames = self.plain.feed(data)
        if not self.bucket.take(len(frames)):
            raise Flooding(f"more than {self.bucket.rate:.0f} messages/s")
        conn = self.conn
        # a standard share (the bulk of what a pool reads) skips the generic decode and dispatch: same event
        share_event = conn.receive_standard_share if self.noise is not None else None
        for frame in frames:
            if share_event is not None:
                event = share_event(frame)  # type: ignore[arg-type]  # Noise yields bytes
                if event is not None:
                    self.handle(event)
                    if self.closed:
                        return
                    continue
            for event in conn.receive_frame(frame):
                self.handle(event)
                if self.closed:
                    return

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a whole frame."""
        if self.noise is not None:
            return self.noise.decryptor.buffered
        return self.plain.buffered if self.plain is not None else 0

    def handle(self, event: Event) -> None:
        if event.reply:
            self.send(event.reply)
        server = self.server
        if isinstance(event, ShareSubmitted):
            server.on_share(self, event)
        elif isinstance(event, OpenStandardChannelRequested | OpenExtendedChannelRequested):
            server.open_channel(self, event)
        elif isinstance(event, Rejected):
            code = event.error_code
            if code in ("invalid-channel-id", "bad-extranonce-size"):
                server.metrics.shares_total.labels(result="invalid-channel-id").inc()
        elif isinstance(event, ChannelUpdateRequested):
            server.update_channel(self, event)
        elif isinstance(event, ChannelClosed):
            server.forget_channel(self, event.channel_id)
        elif isinstance(event, ConnectionSetUp):
            self.setup_complete = True
            if self._setup_timer is not None:
                self._setup_timer.cancel()
                self._setup_timer = None
        elif isinstance(event, ConnectionClosed):
            server.metrics.connection_errors_total.labels(reason=event.error_code or "closed").inc()
            log.info("closing %s: %s %s", self.peer, event.error_code, event.detail)
            self.close()
        elif isinstance(event, MessageReceived) and isinstance(event.message, CkbTemplateSubscribe):
            server.subscribe_templates(self, event.message.channel_id)
        elif isinstance(event, MessageIgnored):
            log.debug("ignored from %s: %s", self.peer, event.reason)

    # -- share acknowledgements, batched ----------------------------------------------------------
    def ack(self, channel: ChannelState, sequence_number: int, shares_sum: int) -> None:
        channel.pending_accepted += 1
        channel.pending_sum += shares_sum
        channel.last_sequence = sequence_number
        if channel.pending_accepted >= self.server.config.success_batch_shares:
            self._flush_channel(channel)
        elif self._flush_handle is None:
            delay = self.server.config.success_batch_ms / 1000
            self._flush_handle = asyncio.get_running_loop().call_later(delay, self.flush_acks)

    def flush_acks(self) -> None:
        self._flush_handle = None
        for channel in self.channels.values():
            if channel.pending_accepted:
                self._flush_channel(channel)

    def _flush_channel(self, channel: ChannelState) -> None:
        if self.closed:
            return
        self.send(
            self.conn.acknowledge_shares(
                channel.info.channel_id,
                channel.last_sequence,
                channel.pending_accepted,
                min(channel.pending_sum, (1 << 64) - 1),
            )
        )
        channel.pending_accepted = 0
        channel.pending_sum = 0


def _descriptor(transport: asyncio.BaseTransport) -> int:
    """The descriptor of a transport's socket (uvloop's and asyncio's both expose it), -1 if it has none."""
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (AttributeError, OSError, ValueError):
        return -1


def _address_of(peer: Any) -> str:
    """The per-address limits' key of a peer (:func:`ip_key`: an IPv4 address or an IPv6 /64)."""
    return ip_key(str(peer[0])) if isinstance(peer, tuple) and peer else str(peer)


class MinerProtocol(asyncio.Protocol):
    """One accepted TCP connection, driven by the event loop's callbacks.

    It replaces a reader task per connection (``asyncio.start_server``: a Task and its coroutine frame, a
    StreamReader, StreamReaderProtocol and StreamWriter, and per read a ``wait_for`` task, future and timer):
    that machinery was about a third of an idle encrypted channel's memory (issue 19, docs/benchmarks.md).
    Bytes go straight from ``data_received`` to :meth:`MinerSession.feed`; the handshake and setup deadlines
    are one timer each while they run, the idle timeout is one sweep over all sessions
    (:meth:`StratumServer._idle_loop`). Any error closes this connection only."""

    __slots__ = ("_handshake", "_timer", "address", "handshaking", "peer", "server", "session", "transport")

    def __init__(self, server: StratumServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: MinerSession | None = None
        self.address = ""  # "" until admitted: nothing to release
        self.peer: Any = None
        self.handshaking = False
        self._handshake = b""  # the first handshake message, as it arrives
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        server = self.server
        peer = self.peer = transport.get_extra_info("peername")
        address = _address_of(peer)
        # admitted (or not) before a byte is read: the handshake's EC work is what a flood of sockets would cost
        refusal = server.limiter.admit(address)
        if refusal is not None:
            server._limited[refusal].inc()
            log.debug("refusing a connection from %s: %s", address, refusal)
            transport.abort()  # type: ignore[attr-defined]  # RST: no FIN handshake, no TIME_WAIT on our side
            return
        self.address = address
        self.handshaking = True
        server.metrics.connections_total.inc()
        s = server.config.stratum
        if s.noise:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(s.handshake_timeout_s, self._timed_out, "no handshake in time")
        else:
            self._start_session(None)

    def _start_session(self, noise: NoiseTransport | None) -> MinerSession:
        server = self.server
        assert self.transport is not None
        server.limiter.handshake_done(self.address)
        self.handshaking = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session = self.session = MinerSession(server, self.transport, noise, self.peer)
        server.sessions.add(session)
        server.metrics.connections.inc()
        loop = asyncio.get_running_loop()
        session._setup_timer = loop.call_later(
            server.config.stratum.setup_timeout_s, self._timed_out, "no SetupConnection in time"
        )
        return session

    def _timed_out(self, what: str) -> None:
        session = self.session
        if session is not None:
            session._setup_timer = None
            if session.setup_complete:
                return
        else:
            self._timer = None
        self._fail(TimeoutError(what))

    def data_received(self, data: bytes) -> None:
        session = self.session
        try:
            if session is None:
                if not self.handshaking:
                    return  # refused, or failed: the transport is closing
                buffered = self._handshake + data
                if len(buffered) < MSG1_SIZE:
                    self._handshake = buffered
                    return
                self._handshake = b""
                server = self.server
                assert server.credentials is not None
                responder = NoiseResponder(server.credentials, max_frame_payload=server.config.stratum.max_frame_bytes)
                msg2, noise = responder.respond(buffered[:MSG1_SIZE])
                assert self.transport is not None
                self.transport.write(msg2)
                session = self._start_session(noise)
                data = buffered[MSG1_SIZE:]
                if not data:
                    return
            if session.closed:
                return
            session.last_rx = time.monotonic()
            session.feed(data)
        except Exception as exc:  # sorted and counted in _fail: it costs one connection, never the server
            self._fail(exc)

    def eof_received(self) -> bool:
        session = self.session
        if session is None:
            if self.handshaking:  # the peer hung up before its first handshake message was complete
                self._fail(asyncio.IncompleteReadError(self._handshake, MSG1_SIZE))
        elif session.buffered:  # the peer hung up in the middle of a frame
            self.server.metrics.connection_errors_total.labels(reason="truncated-frame").inc()
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        if exc is not None and (self.handshaking or (self.session is not None and not self.session.closed)):
            server.metrics.connection_errors_total.labels(reason=type(exc).__name__).inc()
            log.debug("connection ended: %s", exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.address:
            server.limiter.release(self.address, handshaking=self.handshaking)
            self.address = ""
        self.handshaking = False
        session = self.session
        if session is not None:
            session.close()
            if session in server.sessions:
                server.sessions.discard(session)
                server.metrics.connections.dec()

    def _fail(self, exc: BaseException) -> None:
        """Count why a connection ends early (the same ``reason`` labels as ever) and close it."""
        metrics = self.server.metrics
        if isinstance(exc, asyncio.IncompleteReadError | ConnectionError | TimeoutError):
            metrics.connection_errors_total.labels(reason=type(exc).__name__).inc()
            log.debug("connection ended: %s", exc)
        elif isinstance(exc, Sv2Error | Flooding):
            metrics.connection_errors_total.labels(reason=type(exc).__name__).inc()
            if isinstance(exc, FrameTooLarge):
                self.server._limited[LIMIT_FRAME_TOO_LARGE].inc()
            elif isinstance(exc, Flooding):
                self.server._limited[LIMIT_MESSAGE_RATE].inc()
            log.info("closing a connection: %s: %s", type(exc).__name__, exc)
        else:  # a bug must cost one connection, not the server
            metrics.connection_errors_total.labels(reason="internal").inc()
            log.error("unexpected error on a miner connection; closing it", exc_info=exc)
        self._close()

    def _close(self) -> None:
        session = self.session
        if session is not None:
            session.close()  # acknowledgements first, then the transport
        elif self.transport is not None:
            self.transport.close()


def announce_target(session: MinerSession, channel: ChannelState, previous: int, grace_s: float) -> None:
    """Send SetTarget for the channel's current target, opening a grace window when it got harder."""
    if channel.target < previous:
        now = time.monotonic()
        # back-to-back harder targets: shares may still be in flight against the easiest one of the window
        if now < channel.grace_until:
            channel.previous_target = max(channel.previous_target, previous)
        else:
            channel.previous_target = previous
        channel.grace_until = now + grace_s
    session.send(session.conn.send(ckb_profile.set_target(channel.info.channel_id, channel.target)))


class StratumServer:
    """Accepts miners, hands out jobs, checks shares. Pool-wide state lives here; per-miner state in sessions."""

    def __init__(
        self,
        config: PoolConfig,
        metrics: PoolMetrics,
        credentials: ResponderCredentials | None,
        *,
        on_share: Callable[[Share], Awaitable[None] | None] | None = None,
        on_shares: Callable[[list[Share]], Awaitable[None] | None] | None = None,
        on_found_block: Callable[[FoundBlock], Awaitable[Any] | None] | None = None,
        server_name: str = "stratum-1",
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.credentials = credentials
        self.on_share_event = on_share
        # the whole queue in one call (a stratum worker's IPC link: one frame and one write per batch instead of
        # one per share, issue 19); preferred over ``on_share`` when both are given
        self.on_shares_event = on_shares
        self._publishing = on_share is not None or on_shares is not None
        self.on_found_block = on_found_block
        self.server_name = server_name
        self.blake2b = config.pow_blake2b
        pow_function = ckb_profile.PowFunction.EAGLESONG_BLAKE2B if self.blake2b else ckb_profile.PowFunction.EAGLESONG
        self.success_flags = ckb_profile.success_flags(pow_function)
        self.jobs = JobBook()
        self.prefixes = PrefixAllocator(config.stratum.server_id, config.stratum.extended_prefix_bytes)
        self.sessions: set[MinerSession] = set()
        st = config.stratum
        # connections are counted from accept (before the handshake), per address as well as in total
        self.limiter = ConnectionLimiter(
            max_connections=st.max_connections,
            max_per_ip=st.max_connections_per_ip,
            max_handshaking_per_ip=st.max_handshakes_in_progress_per_ip,
            handshake_rate_per_ip=st.handshake_rate_per_ip,
            handshake_burst_per_ip=st.handshake_burst_per_ip,
            max_channels_per_ip=st.max_channels_per_ip,
        )
        self._limited = {reason: metrics.stratum_limited_total.labels(reason=reason) for reason in LIMIT_REASONS}
        self._next_channel_id = 1
        # per-result counters resolved once: labels() on every share costs ~9% of the share path
        self._share_counters = {r: metrics.shares_total.labels(result=r.value) for r in ShareResult}
        # shares counted since the counters were last updated (flush_tally, once per event-loop pass)
        self._tally: dict[ShareResult, int] = {}
        self._tally_work = 0.0
        self._tally_difficulty = 0.0
        self._tally_scheduled = False
        # shares for the bus are handed over in batches by one task, not one task per share (~+75% shares/s);
        # each with what its SubmitShares.Success needs once the bus has it (session None: a rejected share).
        # Plain tuples, not a closure per share (issue 19: per-share allocations)
        self._share_queue: list[_Queued] = []
        # the shares' stable ids: this run of this server, and a counter in publish order
        self.share_source = f"{server_name}-{time.time_ns():x}-{secrets.token_hex(3)}"
        self._share_seq = 0
        self.draining = False  # close() began: input from miners is no longer processed
        self._share_flush: asyncio.Task[None] | None = None
        self.job_announced_at = 0.0
        self._server: asyncio.Server | None = None
        self.hashrate = HashrateWindow()
        self.found_blocks: list[FoundBlock] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retarget_task: asyncio.Task[None] | None = None
        self._idle_task: asyncio.Task[None] | None = None
        # in-flight shares after a harder SetTarget: a few share intervals, at least 2 s
        self._grace_s = max(2.0, 3 * config.vardiff.share_interval_s)
        # identities must be addresses of this network (None: any non-empty account name)
        self.identity_network: str | None = config.network if config.stratum.require_address_identity else None
        # SOLO variants of the jobs, per SOLO account (pool.solo); the lock's address is of the pool's network
        self.solo: SoloJobs[ActiveJob] = SoloJobs(config.network)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.config.stratum
        if self.credentials is None and s.noise:
            raise ValueError("Stratum V2 encryption is on but no pool key/certificate was given")
        if not s.noise:
            log.warning("Stratum V2 encryption is OFF: miners' traffic can be read and hijacked")
        loop = asyncio.get_running_loop()
        # several worker processes share the port (stratum.workers, ckbpool.pool.procs): SO_REUSEPORT
        self._server = await loop.create_server(
            partial(MinerProtocol, self), s.listen_host, s.listen_port, reuse_port=(s.workers or 1) > 1
        )
        self._retarget_task = asyncio.create_task(self._retarget_loop())
        self._idle_task = asyncio.create_task(self._idle_loop())
        log.info("Stratum V2 server listening on %s", self.address)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def close(self, *, flush_timeout: float = 10.0, linger_timeout: float = 2.0) -> None:
        """Stop in the order that keeps the books and the miners' answers equal: stop listening and reading
        from miners, publish every queued share (bounded by ``flush_timeout``), send their Successes, and only
        then close the connections."""
        for task in (self._retarget_task, self._idle_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
        self.draining = True
        if not await self.flush_shares(flush_timeout):
            log.error("closing with %d shares not yet on the bus (not answered Success)", len(self._share_queue))
        transports = [session.transport for session in self.sessions]
        for session in list(self.sessions):
            session.close(linger=True)  # sends the pending Successes first, then half-closes
        self.flush_tally()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        # the miners read to our FIN and close; whoever has not within the bound is closed now
        deadline = time.monotonic() + linger_timeout
        while time.monotonic() < deadline and not all(t.is_closing() for t in transports):
            await asyncio.sleep(0.02)
        for transport in transports:
            if not transport.is_closing():
                transport.close()
        # Let share publishing and block submissions finish briefly; a submission still retrying against a dead
        # node is cancelled — its block is already on disk as pending and is replayed at the next start.
        pending = list(self._tasks)
        if pending:
            _done, still_running = await asyncio.wait(pending, timeout=3.0)
            for task in still_running:
                task.cancel()
            for task in still_running:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- connections ------------------------------------------------------------------------------
    # -- channels ---------------------------------------------------------------------------------
    def _new_channel_id(self) -> int:
        channel_id = self._next_channel_id
        self._next_channel_id = self._next_channel_id % 0xFFFFFFFF + 1
        return channel_id

    def _network_target(self) -> int:
        return self.jobs.current.job.target if self.jobs.current is not None else TWO_256 - 1

    def open_channel(
        self, session: MinerSession, event: OpenStandardChannelRequested | OpenExtendedChannelRequested
    ) -> None:
        request = event.request
        if len(session.channels) >= self.config.stratum.max_channels_per_connection:
            self._limited[LIMIT_CHANNELS_PER_CONNECTION].inc()
            session.send(session.conn.reject_channel(request.request_id, ERROR_TOO_MANY_CHANNELS))
            return
        address = _address_of(session.peer)
        refusal = self.limiter.channel_refusal(address)
        if refusal is not None:
            self._limited[refusal].inc()
            session.send(session.conn.reject_channel(request.request_id, ERROR_TOO_MANY_CHANNELS))
            return
        if self.identity_network is not None or request.user_identity:
            # worker names are checked even without require_address_identity (charset, length: pool.identity)
            identity = cached_identity(request.user_identity, self.identity_network)
            if isinstance(identity, IdentityError):
                log.info("refusing a channel of %s: %s", session.peer, identity)
                self.metrics.connection_errors_total.labels(reason=identity.code).inc()
                session.send(session.conn.reject_channel(request.request_id, identity.code))
                return
            user, worker = identity.user, identity.worker
        else:
            user, worker = split_identity(request.user_identity)
        if not user:
            session.send(session.conn.reject_channel(request.request_id, "unknown-user"))
            return
        solo = is_solo(user)
        if solo:
            problem = solo_lock_error(user, self.config.network)
            if problem is not None:  # e.g. a mainnet address on a testnet pool: the pool cannot build its jobs
                log.info("refusing a SOLO channel of %s: %s", session.peer, problem)
                session.send(session.conn.reject_channel(request.request_id, ERROR_ADDRESS_WRONG_NETWORK))
                return
        extended = isinstance(event, OpenExtendedChannelRequested)
        try:
            if extended:
                assert isinstance(event, OpenExtendedChannelRequested)
                if event.request.min_extranonce_size > self.prefixes.extended_extranonce_size:
                    session.send(session.conn.reject_channel(request.request_id, "min-extranonce-size-too-large"))
                    return
                prefix = self.prefixes.extended()
            else:
                prefix = self.prefixes.standard()
        except PrefixExhausted:
            session.send(session.conn.reject_channel(request.request_id, "no-extranonce-prefix-available"))
            return
        vd = self.config.vardiff
        self._check_declared(request.nominal_hash_rate, vd)
        hashrate = floored_hashrate(request.nominal_hash_rate, vd)
        vardiff = Vardiff(vd, target_for_hashrate(hashrate, vd.share_interval_s), self._network_target())
        if request.max_target and vardiff.target > request.max_target:
            vardiff.target = max(request.max_target, 1)
        channel_id = self._new_channel_id()
        if extended:
            reply = session.conn.accept_extended_channel(
                request.request_id, channel_id, vardiff.target, prefix, self.prefixes.extended_extranonce_size
            )
        else:
            reply = session.conn.accept_standard_channel(request.request_id, channel_id, vardiff.target, prefix)
        session.send(reply)
        info = session.conn.channels[channel_id]
        session.channels[channel_id] = ChannelState(info=info, user=user, worker=worker, vardiff=vardiff, solo=solo)
        self.limiter.channel_opened(address)
        self.metrics.channels.labels(type="extended" if extended else "standard").inc()
        current = self.jobs.current
        if current is not None:
            if solo:
                current = self._solo_job(current, user)
            if current is not None:
                self._send_job(session, session.channels[channel_id], _JobFrames(current, new_height=True))

    def update_channel(self, session: MinerSession, event: ChannelUpdateRequested) -> None:
        """UpdateChannel: rate-limited per channel (the excess is ignored and counted); an honoured one moves the
        target to the declared rate (floored at ``min_hashrate``, capped by ``maximum_target``) but keeps vardiff's
        measurement window, so a stream of tiny declarations cannot keep resetting the flood detection."""
        channel = session.channels.get(event.channel.channel_id)
        if channel is None:
            return
        st = self.config.stratum
        if channel.updates is None:
            channel.updates = RateBucket(1.0 / st.update_channel_interval_s, st.update_channel_burst)
        if not channel.updates.take():
            self._limited[LIMIT_UPDATE_CHANNEL_RATE].inc()
            log.debug("ignoring an UpdateChannel of %s: over its rate limit", session.peer)
            return
        vd = self.config.vardiff
        declared = event.request.nominal_hash_rate
        if declared > 0:
            self._check_declared(declared, vd)
            target = target_for_hashrate(floored_hashrate(declared, vd), vd.share_interval_s)
            if event.request.maximum_target:
                target = min(target, event.request.maximum_target)
            previous = channel.target
            if channel.vardiff.declare(target) is not None:
                announce_target(session, channel, previous, self._grace_s)

    def _check_declared(self, declared: float, vd: VardiffSettings) -> None:
        """Count a declared nominal hashrate that the floor overrides."""
        if 0 < declared < vd.min_hashrate:
            self._limited[LIMIT_HASHRATE_FLOOR].inc()

    def subscribe_templates(self, session: MinerSession, channel_id: int) -> None:
        """CkbTemplateSubscribe: templates with every later job, and now the current job's."""
        channel = session.channels.get(channel_id)
        if channel is None or channel.templates:
            return
        channel.templates = True
        current = self.jobs.current
        if current is not None and channel.solo:
            current = self.solo.get(current.job_id, channel.user)
        template_json = None if current is None else self._template_json(current)
        if current is not None and template_json is not None:
            session.send(session.conn.send(CkbJobTemplate(channel_id, current.job_id, template_json)))

    def forget_channel(self, session: MinerSession, channel_id: int) -> None:
        channel = session.channels.pop(channel_id, None)
        if channel is None:
            return
        self.limiter.channel_closed(_address_of(session.peer))
        self.prefixes.release(channel.info.extranonce_prefix)
        kind = "extended" if channel.info.kind is ChannelKind.EXTENDED else "standard"
        self.metrics.channels.labels(type=kind).dec()

    # -- jobs -------------------------------------------------------------------------------------
    def new_job(self, job_id: int, job: MiningJob, template_json: bytes | None = None) -> ActiveJob:
        """Announce a job to every channel: future job + SetNewPrevHash on a new tip, else an active job.

        ``template_json`` (the node's template the job was built from) goes to channels that subscribed to
        the CKB template extension."""
        active = self.jobs.add(job_id, job, template_json)
        self.job_announced_at = time.time()
        self.metrics.templates_total.inc()
        self.metrics.job_height.set(job.height)
        network_target = job.target
        prepared = _JobFrames(active, new_height=active.new_height)
        self.solo.prune(self.jobs.jobs, self.jobs.current_parent)
        solo_prepared: dict[str, _JobFrames | None] = {}  # one SOLO job (and its frames) per SOLO account
        send_job = self._send_job
        # The loop allocates only short-lived objects that reference counting frees (wire bytes, a few tuples),
        # so a cyclic collection in it would be pure delay: at 10k channels a gen-2 pass over every session's
        # objects can take longer than the rest of the fan-out. Collections resume right after.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for session in list(self.sessions):
                if session.closed:
                    continue
                try:
                    for channel in session.channels.values():
                        vardiff = channel.vardiff
                        if network_target != vardiff.network_target:
                            previous = vardiff.target
                            if vardiff.set_network_target(network_target) is not None:
                                announce_target(session, channel, previous, self._grace_s)
                        if channel.solo:
                            if channel.user not in solo_prepared:
                                variant = self._solo_job(active, channel.user)
                                solo_prepared[channel.user] = (
                                    None if variant is None else _JobFrames(variant, new_height=active.new_height)
                                )
                            solo_frames = solo_prepared[channel.user]
                            if solo_frames is not None:
                                send_job(session, channel, solo_frames)
                            continue
                        send_job(session, channel, prepared)
                except Sv2Error as exc:
                    log.warning("dropping %s: cannot send it the job: %s", session.peer, exc)
                    session.close()
        finally:
            if gc_was_enabled:
                gc.enable()
        return active

    def _solo_job(self, base: ActiveJob, user: str) -> ActiveJob | None:
        """The SOLO variant of ``base`` for a SOLO account (pool.solo), or None if this template cannot carry its
        lock (logged): its channels then get no job for this template, never the pool's job."""

        def make(job_id: int, job: MiningJob, entry: JobEntry) -> ActiveJob:
            return ActiveJob(job_id, job, entry, base.new_height, base.template_json, solo_user=user)

        try:
            return self.solo.variant(base.job_id, base.job, user, make)
        except (SoloJobError, ValueError) as exc:
            log.warning("no SOLO job %d for %s: %s", base.job_id, user, exc)
            return None

    def _template_json(self, active: ActiveJob) -> bytes | None:
        """The template JSON a CKB-template subscriber gets with ``active`` (a SOLO job's has its cellbase)."""
        if active.template_json is None or not active.solo_user:
            return active.template_json
        return self.solo.template_json(active.job_id, active.solo_user, active.template_json)

    def _send_job(self, session: MinerSession, channel: ChannelState, prepared: _JobFrames) -> None:
        """The job (and with ``prepared.new_height`` its SetNewPrevHash) to one channel, in one write."""
        conn = session.conn
        info = channel.info
        cid = info.channel_id
        active = prepared.active
        templates = channel.templates and active.template_json is not None
        if prepared.new_height and not templates:  # the common case of a new tip: job + SetNewPrevHash
            job, prev_hash = prepared.job(info.kind), prepared.prev_hash()
            noise = session.noise
            if noise is not None and not session.closed and conn.check_new_tip(job, prev_hash, cid):
                # the fan-out's per-channel step (issue 19): the state machine's checks, then one C call patches
                # the channel id into the frames encoded once, makes the four AEAD messages and writes them to the
                # socket -- straight to its descriptor only while the transport has nothing queued and still owns
                # it (so the bytes keep their order, and a closed transport's descriptor number, which the kernel
                # may give to a new connection, is never written); what the socket does not take goes to the
                # transport
                fd = session.fd
                if fd >= 0 and (session.transport.get_write_buffer_size() or session.transport.is_closing()):
                    fd = -1
                rest = noise.encryptor.seal_job(fd, cid, job.header, job.tail, prev_hash.header, prev_hash.tail)
                if rest is not None:
                    session._write(rest)
                return
            session.send_many(list(conn.send_new_tip(job, prev_hash, cid)))
            return
        frames = [conn.send_for_channel(prepared.job(info.kind), cid)]
        if templates:
            # after the job, before its SetNewPrevHash: the client has the template when the job activates
            template_json = self._template_json(active)
            assert template_json is not None
            frames.append(conn.send(CkbJobTemplate(cid, active.job_id, template_json)))
        if prepared.new_height:
            frames.append(conn.send_for_channel(prepared.prev_hash(), cid))
        session.send_many(frames)

    # -- shares -----------------------------------------------------------------------------------
    def on_share(self, session: MinerSession, event: ShareSubmitted) -> None:
        share = event.share
        channel = session.channels.get(event.channel.channel_id)
        if channel is None:
            session.send(
                session.conn.reject_share(event.channel.channel_id, share.sequence_number, "invalid-channel-id")
            )
            return
        user, worker, tag = channel.user, channel.worker, None
        if event.ckb_user_identity is not None or event.user_identity is not None:
            identity = self._share_identity(channel, event)
            if isinstance(identity, IdentityError):
                # never credited to anyone: not to the channel's owner, not to a guess
                self.metrics.shares_total.labels(result=identity.code).inc()
                channel.rejected += 1
                log.debug("share of %s refused: %s", session.peer, identity)
                session.send(session.conn.reject_share(channel.info.channel_id, share.sequence_number, identity.code))
                return
            if is_solo(identity.user) != channel.solo or (channel.solo and identity.user != channel.user):
                # a SOLO job pays the channel's address: its shares are that account's, and a PPLNS channel's
                # jobs pay the pool: no share of them is SOLO work (docs/payouts.md, SOLO)
                self.metrics.shares_total.labels(result=ERROR_INVALID_IDENTITY).inc()
                channel.rejected += 1
                session.send(
                    session.conn.reject_share(channel.info.channel_id, share.sequence_number, ERROR_INVALID_IDENTITY)
                )
                return
            user, worker = identity.user, identity.worker
            tag = f"{user}.{worker}"
        if isinstance(share, CkbSubmitSolution):
            nonce16 = share.nonce16
        else:
            nonce16 = ckb_profile.nonce16_from_share(channel.info.extranonce_prefix, share)
        # a SOLO channel's job ids name its SOLO variants (pool.solo); a PPLNS channel's, the pool's jobs
        active = self.solo.get(share.job_id, channel.user) if channel.solo else self.jobs.get(share.job_id)
        share_target = channel.share_target(time.monotonic())
        if event.share_target is not None:
            # the target the proxy validated it against (a device's own, harder): checked and credited at that,
            # never at an easier one than the channel allows
            share_target = min(share_target, event.share_target)
        verdict = check_share(
            None if active is None else active.entry, self.jobs.current_parent, nonce16, share_target, self.blake2b
        )
        now = time.time()
        tally = self._tally
        tally[verdict.result] = tally.get(verdict.result, 0) + 1
        if not self._tally_scheduled:
            self._schedule_tally()
        accepted = verdict.result is ShareResult.ACCEPTED
        block_hash = b""
        success: MinerSession | None = None
        shares_sum = 0
        nonce = int.from_bytes(nonce16, "little")
        if accepted:
            assert active is not None
            channel.accepted += 1
            if verdict.value <= channel.target < share_target:
                # in a grace window the easier previous target is allowed, but a share that meets the current one
                # is credited at it: crediting every grace-window share at the easier target would pay a miner
                # already on the harder target less than it proved (docs/sv2-ckb.md section 12)
                share_target = channel.target
                verdict = verdict._replace(difficulty=target_to_share_difficulty(share_target))
            work = TWO_256 / share_target
            self._tally_work += work
            self._tally_difficulty += verdict.difficulty
            if verdict.is_block:
                block_hash = self._found_block(user, worker, active, nonce, now)
            shares_sum = max(1, round(verdict.difficulty))
            if not self._publishing:
                session.ack(channel, share.sequence_number, shares_sum)
            else:
                success = session
            previous = channel.target
            if channel.vardiff.on_share(work=work, worker=tag) is not None:
                session.flush_acks()
                announce_target(session, channel, previous, self._grace_s)
        else:
            channel.rejected += 1
            session.send(
                session.conn.reject_share(channel.info.channel_id, share.sequence_number, verdict.result.value)
            )
        if self._publishing:
            self._share_seq += 1
            # positional, in Share's field order (server_id, channel_id, user, worker, job_id, height, nonce,
            # share_target, share_difficulty, accepted, reason, is_block, block_hash, timestamp, source, seq):
            # sixteen keywords per share cost more than the rest of its construction (issue 19)
            event_out = Share(
                self.server_name,
                channel.info.channel_id,
                user,
                worker,
                share.job_id,
                active.entry.height if active is not None else 0,
                nonce,
                share_target,
                verdict.difficulty,
                accepted,
                "" if accepted else verdict.result.value,
                bool(block_hash),
                block_hash,
                now,
                self.share_source,
                self._share_seq,
            )
            self._share_queue.append((event_out, success, channel, share.sequence_number, shares_sum))
            flush = self._share_flush
            if flush is None or flush.done():
                self._start_share_flush()

    def _schedule_tally(self) -> None:
        """Apply the share counters once the event loop has run the current batch of reads, not per share: three
        Prometheus increments and a hashrate-window entry per share were ~10 % of the share path (issue 19).
        Without a running loop (a synchronous caller), at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_tally()
            return
        self._tally_scheduled = True
        loop.call_soon(self.flush_tally)

    def flush_tally(self) -> None:
        """Move the shares counted since the last call into the metrics and the hashrate window."""
        self._tally_scheduled = False
        tally, self._tally = self._tally, {}
        for result, count in tally.items():
            self._share_counters[result].inc(count)
        work, self._tally_work = self._tally_work, 0.0
        if work:
            self.hashrate.add(work)
            self.metrics.accepted_work_hashes_total.inc(work)
            self.metrics.share_difficulty_total.inc(self._tally_difficulty)
        self._tally_difficulty = 0.0

    def _share_identity(self, channel: ChannelState, event: ShareSubmitted) -> Identity | IdentityError:
        """Who a tagged share is credited to (docs/sv2-ckb.md section 13).

        The 0x4CCB ``ckb_user_identity`` names the account (``<address>.<worker>``, checked like a channel's
        identity); a 0x0002 ``user_identity`` next to it must be that worker (what generic tooling shows and
        what the books say must not differ). A 0x0002 identity alone (a generic SV2 proxy) is a worker of the
        channel's own account: it cannot name an address in 32 bytes, so it cannot move the work elsewhere."""
        if event.ckb_user_identity is not None:
            identity = cached_identity(event.ckb_user_identity, self.identity_network)
            if isinstance(identity, Identity) and event.user_identity not in (None, identity.worker):
                return IdentityError(ERROR_INVALID_IDENTITY, "user_identity is not the worker of ckb_user_identity")
            return identity
        assert event.user_identity is not None
        return _tagged_worker(channel.user, event.user_identity)

    def _start_share_flush(self) -> None:
        self._share_flush = flush = asyncio.ensure_future(self._flush_shares())
        self._tasks.add(flush)
        flush.add_done_callback(self._task_done)

    @staticmethod
    def _answer(batch: list[_Queued]) -> None:
        """SubmitShares.Success (batched per channel, ``MinerSession.ack``) for the accepted shares of ``batch``,
        which the bus has taken; not for a channel that closed or was replaced meanwhile."""
        for _share, session, channel, sequence_number, shares_sum in batch:
            if (
                session is not None
                and channel is not None
                and not session.closed
                and session.channels.get(channel.info.channel_id) is channel
            ):
                session.ack(channel, sequence_number, shares_sum)

    async def _flush_shares(self) -> None:
        """Hand queued shares to the bus in order, retried until the bus takes them, then their Successes.

        Nothing is dropped: shares the bus cannot take yet stay first in line (their Successes with them); on
        cancellation the rest goes back to the front of the queue. Only a closed bus ends it (shutdown): the
        shares left were never answered Success, and are logged. With ``on_shares`` the queue goes over as one
        list per pass (a retry hands the same list again: a bus that took part of it before failing publishes
        that part twice, which accounting drops by the shares' stable ids)."""
        many = self.on_shares_event
        if many is not None:
            await self._flush_batches(many)
            return
        callback = self.on_share_event
        while self._share_queue and callback is not None:
            batch, self._share_queue = self._share_queue, []
            for index, item in enumerate(batch):
                share = item[0]
                try:
                    try:  # the common case costs one call; the retry machinery only once the bus has failed
                        result = callback(share)
                        if result is not None:
                            await result
                    except BusClosed:
                        raise
                    except Exception as exc:
                        _retry_publish(exc)
                        await retry(partial(_publish, callback, share), on=_retry_publish, what="share publish")
                except BusClosed:
                    lost = len(batch) - index + len(self._share_queue)
                    self._share_queue = []
                    log.error("bus closed: %d shares not published (and never answered Success)", lost)
                    return
                except BaseException:
                    self._share_queue[:0] = batch[index:]
                    raise
                session, channel = item[1], item[2]
                if (  # as _answer does, without a list per share
                    session is not None
                    and channel is not None
                    and not session.closed
                    and session.channels.get(channel.info.channel_id) is channel
                ):
                    session.ack(channel, item[3], item[4])

    async def _flush_batches(self, many: Callable[[list[Share]], Awaitable[None] | None]) -> None:
        while self._share_queue:
            batch, self._share_queue = self._share_queue, []
            shares = [item[0] for item in batch]
            try:
                try:
                    result = many(shares)
                    if result is not None:
                        await result
                except BusClosed:
                    raise
                except Exception as exc:
                    _retry_publish(exc)
                    await retry(partial(_publish, many, shares), on=_retry_publish, what="share publish")
            except BusClosed:
                lost = len(batch) + len(self._share_queue)
                self._share_queue = []
                log.error("bus closed: %d shares not published (and never answered Success)", lost)
                return
            except BaseException:
                self._share_queue[:0] = batch
                raise
            self._answer(batch)

    async def flush_shares(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until every queued share is on the bus; True if it got there."""
        deadline = time.monotonic() + timeout
        while self._share_queue or (self._share_flush is not None and not self._share_flush.done()):
            if self._share_flush is None or self._share_flush.done():
                self._start_share_flush()
            assert self._share_flush is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait([self._share_flush], timeout=remaining)
        return True

    def _found_block(self, user: str, worker: str, active: ActiveJob, nonce: int, now: float) -> bytes:
        job = active.job
        block = job.block(nonce)
        block_hash = block.hash()
        found = FoundBlock(
            server_id=self.server_name,
            job_id=active.job_id,
            height=job.height,
            block_hash=block_hash,
            work_id=job.work_id,
            block_json=json.dumps(block.to_json(), separators=(",", ":")).encode(),
            user=user,
            worker=worker,
            found_at=now,
        )
        self.metrics.blocks_found_total.inc()
        self.found_blocks.append(found)
        del self.found_blocks[:-100]
        log.info("block found at height %d by %s.%s: %s", job.height, user, worker, block_hash.hex())
        if self.on_found_block is not None:
            self._spawn(self.on_found_block(found))
        return block_hash

    def _spawn(self, result: Awaitable[Any] | None) -> None:
        if result is None or not asyncio.iscoroutine(result):
            return
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def _idle_loop(self) -> None:
        """Close connections set up but silent for ``idle_timeout_s`` (a live miner always has shares or vardiff
        traffic): one sweep every eighth of the timeout (at most every 5 s) instead of a timer per connection, so
        a connection goes between the timeout and an eighth more after its last read."""
        idle = self.config.stratum.idle_timeout_s
        interval = min(idle / 8, 5.0)
        while True:
            await asyncio.sleep(interval)
            horizon = time.monotonic() - idle
            for session in [x for x in self.sessions if x.setup_complete and x.last_rx < horizon]:
                if not session.closed:
                    self.metrics.connection_errors_total.labels(reason="TimeoutError").inc()
                    log.debug("closing %s: idle for %.0f s", session.peer, idle)
                    session.close()

    async def _retarget_loop(self) -> None:
        """Channels that went quiet get an easier target even though no share arrives to trigger it."""
        interval = self.config.vardiff.retarget_interval_s
        while True:
            await asyncio.sleep(interval)
            for session in list(self.sessions):
                for channel in list(session.channels.values()):
                    previous = channel.target
                    if channel.vardiff.maybe_retarget() is not None and not session.closed:
                        with contextlib.suppress(Sv2Error):
                            announce_target(session, channel, previous, self._grace_s)


async def _publish(callback: Callable[[Any], Awaitable[None] | None], share: Share | list[Share]) -> None:
    result = callback(share)
    if result is not None and asyncio.iscoroutine(result):
        await result


def _retry_publish(exc: Exception) -> bool:
    """Retry hook of share publishing: anything but a closed bus is retried (and logged)."""
    if isinstance(exc, BusClosed):
        return False
    log.warning("the bus cannot take a share (%r); retrying, its Success waits", exc)
    return True


@dataclass
class ServerStats:
    connections: int = 0
    channels: int = 0
    workers: set[str] = field(default_factory=set)


def server_stats(server: StratumServer) -> ServerStats:
    stats = ServerStats(connections=len(server.sessions))
    now = time.monotonic()
    for session in server.sessions:
        for channel in session.channels.values():
            stats.channels += 1
            tagged = channel.vardiff.recent_workers(now)
            if tagged:  # a proxy's channel: its devices, not the proxy's own identity
                stats.workers.update(tagged)
            else:
                stats.workers.add(f"{channel.user}.{channel.worker}")
    return stats
