"""The CKB Stratum V1 side of the translator: ASICs in, one SV2 extended channel out.

Nonce space (docs/sv2-ckb.md sections 2 and 8): the pool gives the channel an extranonce_prefix (4 bytes by
default); each V1 connection gets a miner id of ``16 - len(prefix) - extranonce2_size`` bytes, so

    extranonce1 = pool prefix || miner id        extranonce2 = rest of the SV2 extranonce || version || nonce

and every V1 share is a SubmitSharesExtended on the one channel. A miner's share target is never easier than the
channel's (see :mod:`.vardiff`), so each share the proxy accepts locally is forwarded, and the miner hears the
pool's verdict: the miners' accepted shares and the pool's count for the channel are the same number.

Identity (``identity = "per-worker"``, the default): ``mining.authorize`` checks the username is
``<CKB address of the pool's network>.<worker>`` (else error 29 with the reason; the connection stays usable),
and every forwarded share carries three TLVs: 0x0002 ``user_identity`` = the worker name (<= 32 bytes, what
generic SV2 tooling reads), 0x4CCB ``ckb_user_identity`` = the whole username (the account the pool credits:
an address does not fit in 0x0002's 32 bytes) and 0x4CCB ``share_target`` = the miner's own target the share
met, so the pool credits the work the share proved (docs/sv2-ckb.md sections 12 and 13). ``"aggregated"``:
no tags, any username, the pool credits ``upstream.user_identity`` (a farm paid to one address).

Upstream loss (docs/sv2-ckb.md section 12, "Pool away"): for ``v1.upstream_loss_grace_s`` after the pool channel
goes (a restart, a network blip) the miners stay connected: no new work is sent, their shares are answered with 21
(stale). The first job of the new connection goes to every miner with clean_jobs=true at once. After a reconnect
with the *same* prefix mining simply resumes; if the pool hands out a different prefix, every V1 connection is
closed so that the miners subscribe again (CKB V1 has no way to change extranonce1 on a live connection). If the
grace passes with no job, the proxy stops pretending: every V1 connection is closed and new ones are refused at
accept (reason ``no_upstream``) until the pool sends a job again, so an ASIC's own failover pools take over rather
than the farm hashing a dead job behind a live TCP connection (a chaos run measured 41,906 of 46,638 V1 submissions
answered "stale" that way). ``v1.keep_miners_without_upstream = true`` keeps the old hold-them-forever behaviour.

Abuse limits (all in ``[v1]``, see :mod:`.config` and :mod:`.limits`): connections are counted at accept against
``max_connections`` (lowered to what RLIMIT_NOFILE can hold, so accept never fails for want of descriptors) and
``max_connections_per_ip`` and refused there; each connection then runs against one
deadline at a time -- ``mining.subscribe`` within ``subscribe_timeout_s`` of connecting, an accepted
``mining.authorize`` within ``authorize_timeout_s`` of the subscribe answer, then at most ``idle_timeout_s``
between lines -- kept as one timer handle per connection that is re-armed lazily (a line only stamps the time). A
token bucket caps lines per connection (``max_messages_per_second``, ``message_burst``); a flood closes it. A miner
id is taken when the subscribe is answered and given back when the connection goes, so the id space can only be
held by live, recently talking connections; with every id held a subscribe is refused (error 30 + reason) and the
connection closed. Every refusal is counted by reason (``ckbpool_proxy_v1_refusals_total{reason}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from ..ckb.eaglesong import pow_output
from ..ckb.target import share_difficulty_to_target, target_to_share_difficulty
from ..pool.identity import Identity, IdentityError, parse_identity
from ..sv2.events import ChannelInfo
from ..sv2.messages_base import Message
from ..sv2.messages_mining import (
    ERROR_DIFFICULTY_TOO_LOW,
    ERROR_DUPLICATE_SHARE,
    ERROR_INVALID_JOB_ID,
    ERROR_STALE_SHARE,
    NewExtendedMiningJob,
    SetExtranoncePrefix,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesSuccess,
)
from ..v1.dialect import Dialect, parse_job_id
from ..v1.errors import StratumErrorCode
from ..v1.events import AuthorizeRequested, ConnectionClosed, ShareSubmitted, SubscribeRequested
from ..v1.server import ServerSession, SessionState
from .config import ProxyConfig
from .jobs import ChannelJobs, ProxyJob
from .limits import ExtranonceIds, PerIpCount, Refusal, TokenBucket, connection_cap, raise_nofile_limit
from .pending import PendingShare, PendingShares
from .upstream import Upstream, UpstreamRefused
from .vardiff import MinerVardiff

__all__ = ["V1Connection", "V1Server", "WorkerStats"]

log = logging.getLogger(__name__)
MAX_WRITE_BUFFER = 1 << 20  # a miner that does not read its answers is dropped, not buffered forever
MAX_WORKERS_PER_CONNECTION = 16
MAX_TRACKED_WORKERS = 100_000

_SV2_TO_V1 = {
    ERROR_STALE_SHARE: StratumErrorCode.JOB_NOT_FOUND,
    ERROR_INVALID_JOB_ID: StratumErrorCode.JOB_NOT_FOUND,
    ERROR_DUPLICATE_SHARE: StratumErrorCode.DUPLICATE_SHARE,
    ERROR_DIFFICULTY_TOO_LOW: StratumErrorCode.LOW_DIFFICULTY,
}


@dataclass
class WorkerStats:
    """What the proxy knows per V1 worker name (the pool sees one channel for all of them)."""

    accepted: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    accepted_difficulty: float = 0.0
    blocks: int = 0
    last_share_at: float = 0.0


class V1Connection(asyncio.Protocol):
    """One miner's TCP connection: bytes to the sans-IO session, its events to the server."""

    def __init__(self, server: V1Server) -> None:
        self.server = server
        s = server.config.v1
        self.session = ServerSession(
            dialect=server.dialect, max_line_bytes=s.max_line_bytes, max_bad_requests=s.max_bad_requests
        )
        self.transport: asyncio.Transport | None = None
        self.peer: Any = None
        self.miner_id: int | None = None
        self.vardiff: MinerVardiff | None = None
        self.previous_target = 0
        self.grace_until = 0.0
        # per-worker identity: each authorized username's checked identity (the share tags)
        self.identities: dict[str, Identity] = {}
        self.waiting_subscribe = False
        self.closed = False
        # abuse limits: the source address (per-IP cap), the phase clocks (loop time), the line rate limit
        self.host = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connected_at = 0.0
        self.subscribed_at: float | None = None  # when the subscribe was answered (a miner id taken)
        self.last_seen = 0.0
        self.bucket = TokenBucket(s.max_messages_per_second, s.message_burst)
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: check the interface, not the class
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.host = str(self.peer[0]) if isinstance(self.peer, tuple) and self.peer else str(self.peer)
        self.loop = asyncio.get_running_loop()
        self.connected_at = self.last_seen = self.loop.time()
        refusal = self.server.add_connection(self)
        if refusal is not None:
            self.closed = True
            self.server.note_refusal(refusal, self)
            self.transport.abort()
            return
        self.rearm()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        server = self.server
        server.bytes_in += len(data)
        assert self.loop is not None
        now = self.last_seen = self.loop.time()
        events = self.session.receive_data(data)
        if events and not self.bucket.take(len(events), now):
            server.note_refusal(Refusal.RATE_LIMIT, self)
            self.close()
            return
        out: list[bytes] = []
        for event in events:
            if self.closed:  # refused on the way (no miner id): the rest of the read is moot
                return
            if event.reply:
                out.append(event.reply)
            kind = type(event)
            if kind is ShareSubmitted:
                assert isinstance(event, ShareSubmitted)
                line = server.on_share(self, event)
                if line:
                    out.append(line)
            elif kind is SubscribeRequested:
                assert isinstance(event, SubscribeRequested)
                out.extend(server.on_subscribe(self, event))
            elif kind is AuthorizeRequested:
                assert isinstance(event, AuthorizeRequested)
                out.extend(server.on_authorize(self, event))
            elif kind is ConnectionClosed:
                assert isinstance(event, ConnectionClosed)
                log.info("closing V1 connection %s: %s", self.peer, event.reason)
                server.bad_closes += 1
                server.note_refusal(Refusal.BAD_REQUESTS, self)
                if out:
                    self.write(b"".join(out))
                self.close()
                return
        if out:
            self.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.server.remove_connection(self)

    # -- deadlines --------------------------------------------------------------------------------
    def deadline(self) -> tuple[float, Refusal]:
        """The one deadline of the connection's current phase (loop time), and the reason if it passes."""
        s = self.server.config.v1
        if self.session.authorized:
            return self.last_seen + s.idle_timeout_s, Refusal.IDLE_TIMEOUT
        if self.subscribed_at is not None:
            return self.subscribed_at + s.authorize_timeout_s, Refusal.AUTHORIZE_TIMEOUT
        if self.session.state is SessionState.SUBSCRIBING:
            # held back until the pool gives the channel (no miner id taken yet): only a silent socket ends
            return self.last_seen + s.idle_timeout_s, Refusal.IDLE_TIMEOUT
        return self.connected_at + s.subscribe_timeout_s, Refusal.SUBSCRIBE_TIMEOUT

    def rearm(self) -> None:
        """(Re)schedule the timer at the current phase's deadline; called when the phase changes."""
        if self.closed or self.loop is None:
            return
        self._cancel_timer()
        self._timer = self.loop.call_at(self.deadline()[0], self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        if self.closed or self.loop is None:
            return
        deadline, reason = self.deadline()
        if self.loop.time() < deadline:  # talked since (idle) or moved to a later phase: sleep again
            self._timer = self.loop.call_at(deadline, self._on_deadline)
            return
        self.server.note_refusal(reason, self)
        self.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- output -----------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None:
            return
        self.server.bytes_out += len(data)
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing V1 connection %s: it does not read what we send", self.peer)
            self.server.note_refusal(Refusal.SLOW_READER, self)
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
        self.server.remove_connection(self)

    # -- targets ----------------------------------------------------------------------------------
    def share_target(self, now: float) -> int:
        """The target a share must meet: the current one, or the previous easier one during the grace window."""
        current = self.session.target or 0
        if now < self.grace_until and self.previous_target > current:
            return self.previous_target
        return current

    def retarget(self, upstream_target: int, grace_s: float) -> bytes:
        """A set_target line if the miner's effective target moved, else b''."""
        if self.vardiff is None or not self.session.ready:
            return b""
        target = self.vardiff.effective(upstream_target)
        current = self.session.target
        if target == current:
            return b""
        if current is not None and target < current:
            # harder: shares found against the easier target are still on their way. Two steps in a row keep the
            # easiest target still in its grace window, not just the last one.
            now = time.monotonic()
            in_grace = self.previous_target if now < self.grace_until else 0
            self.previous_target = max(current, in_grace)
            self.grace_until = now + grace_s
        return self.session.set_target(target)


class V1Server:
    """V1 listener + the V1 channel's upstream; implements :class:`~.upstream.UpstreamHandler`."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        v1 = config.v1
        self.dialect = Dialect(notify_parent_hash=v1.notify_parent_hash, extranonce_subscribe=v1.extranonce_subscribe)
        self.extranonce2_size = v1.extranonce2_size
        self.jobs = ChannelJobs()
        self.pending = PendingShares()
        self.upstream = Upstream(
            config.upstream,
            self,
            user_identity=config.upstream.user_identity,
            extended=True,
            # the SV2 extranonce must hold >= 1 byte of miner id plus extranonce2's part of it
            min_extranonce_size=v1.extranonce2_size - 8 + 1,
            worker_identities=config.per_worker,
            ckb_identities=config.per_worker,
            name="v1-upstream",
        )
        self.connections: set[V1Connection] = set()
        self.prefix: bytes | None = None
        self.id_bytes = 0
        self.upstream_target = 0
        self.ids = ExtranonceIds()  # capacity set by the first channel (256 ** id_bytes)
        self.per_ip = PerIpCount(v1.max_connections_per_ip)
        self.max_connections = v1.max_connections  # lowered at start() to what RLIMIT_NOFILE can hold
        self.refusals: dict[Refusal, int] = dict.fromkeys(Refusal, 0)
        self._server: asyncio.Server | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self.workers: dict[str, WorkerStats] = {}
        self.accepted = 0
        self.rejected: dict[int, int] = {}
        self.forwarded = 0
        self.blocks = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.bad_closes = 0
        self.refused_authorizations = 0
        self.verdicts_lost = 0
        self.prefix_changes = 0
        # upstream loss (see the module doc): "serving" (a channel with a job), "grace" (lost, miners held) or
        # "refusing" (grace over: miners closed, accepts refused); the counters feed /status and /metrics
        self.upstream_state = "grace"  # nothing to give until the first job
        self.upstream_lost_at = time.monotonic()
        self.upstream_lost_reason = "not connected yet"
        self.upstream_losses = 0
        self.closed_for_upstream_loss = 0
        self._grace_timer: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        v1 = self.config.v1
        loop = asyncio.get_running_loop()
        nofile = raise_nofile_limit(v1.max_connections + 1024)
        self.max_connections = connection_cap(v1.max_connections, nofile)
        if self.max_connections < v1.max_connections:
            log.warning(
                "RLIMIT_NOFILE is %d: at most %d V1 connections (v1.max_connections = %d); raise the hard limit "
                "(systemd LimitNOFILE, docker --ulimit nofile) to hold more miners",
                nofile,
                self.max_connections,
                v1.max_connections,
            )
        self._server = await loop.create_server(
            lambda: V1Connection(self), v1.listen_host, v1.listen_port, backlog=1024
        )
        self.upstream.start()
        self._maintenance = asyncio.create_task(self._maintenance_loop())
        self.upstream_lost_at = time.monotonic()
        self._arm_grace()  # a pool that never answers at start-up is an upstream loss too
        log.info("CKB Stratum V1 listening on %s:%d", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None and self._server.sockets
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def close(self) -> None:
        self._cancel_grace()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        await self.upstream.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    # -- connections ------------------------------------------------------------------------------
    def add_connection(self, conn: V1Connection) -> Refusal | None:
        """Count a just-accepted connection against the global and per-IP caps; the refusal reason if over (or
        if the pool has been away past the grace: no work to give, the miner should use its backup pool)."""
        if self.upstream_state == "refusing":
            return Refusal.NO_UPSTREAM
        if len(self.connections) >= self.max_connections:
            return Refusal.MAX_CONNECTIONS
        if not self.per_ip.add(conn.host):
            return Refusal.PER_IP
        self.connections.add(conn)
        return None

    def remove_connection(self, conn: V1Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.per_ip.remove(conn.host)
            if conn.miner_id is not None:
                self.ids.release(conn.miner_id)
                conn.miner_id = None

    def note_refusal(self, reason: Refusal, conn: V1Connection) -> None:
        """Count a refused or closed connection. Logged at warning the first time and every 10,000th per reason
        (an attack must not turn into a log flood), at debug otherwise."""
        count = self.refusals[reason] = self.refusals[reason] + 1
        if count == 1 or count % 10_000 == 0:
            log.warning(
                "V1 connection %s refused or closed: %s (%d so far; %d connections, %d miner ids free)",
                conn.peer,
                reason.value,
                count,
                len(self.connections),
                self.ids.available,
            )
        else:
            log.debug("V1 connection %s refused or closed: %s", conn.peer, reason.value)

    # -- V1 requests ------------------------------------------------------------------------------
    def on_subscribe(self, conn: V1Connection, event: SubscribeRequested) -> list[bytes]:
        if self.prefix is None:  # the pool has not given us a channel yet: the miner waits for its answer
            conn.waiting_subscribe = True
            return []
        return self._answer_subscribe(conn, event.request_id)

    def _answer_subscribe(self, conn: V1Connection, request_id: Any) -> list[bytes]:
        assert self.prefix is not None
        miner_id = self.ids.allocate()
        if miner_id is None:
            # every extranonce1 is held by a live connection: refuse clearly and hang up (the miner retries later;
            # ids come back as connections close or time out)
            self.note_refusal(Refusal.NO_MINER_ID, conn)
            conn.write(
                conn.session.reject(
                    request_id, StratumErrorCode.INTERNAL_ERROR, "no free extranonce1: the proxy is full, retry later"
                )
            )
            conn.close()
            return []
        conn.miner_id = miner_id
        conn.subscribed_at = conn.loop.time() if conn.loop is not None else time.monotonic()
        conn.rearm()
        extranonce1 = self.prefix + miner_id.to_bytes(self.id_bytes, "big")
        lines = [conn.session.accept_subscribe(request_id, extranonce1, self.extranonce2_size)]
        if conn.session.ready:
            lines += self._start_mining(conn)
        return lines

    def on_authorize(self, conn: V1Connection, event: AuthorizeRequested) -> list[bytes]:
        first = not conn.session.authorized
        if len(conn.session.authorized) >= MAX_WORKERS_PER_CONNECTION:
            return [conn.session.reject(event.request_id, StratumErrorCode.INVALID_USERNAME, "too many workers")]
        if self.config.per_worker:
            try:
                identity = parse_identity(event.username, self.config.network)
            except IdentityError as exc:
                # refused with the reason; the connection stays usable (the miner may authorize another name)
                self.refused_authorizations += 1
                return [conn.session.reject(event.request_id, StratumErrorCode.INVALID_USERNAME, exc.message)]
            if identity.solo:  # a SOLO job pays one address: the upstream channel's, never a tagged device's
                self.refused_authorizations += 1
                reason = "SOLO needs its own upstream channel: use a proxy whose pool identity is solo:<address>"
                return [conn.session.reject(event.request_id, StratumErrorCode.INVALID_USERNAME, reason)]
            conn.identities[event.username] = identity
        lines = [conn.session.accept_authorize(event.request_id, event.username)]
        if event.username not in self.workers and len(self.workers) < MAX_TRACKED_WORKERS:
            self.workers[event.username] = WorkerStats()
        if first:
            conn.rearm()  # authorized: from now on only silence ends it
            if conn.session.ready:
                lines += self._start_mining(conn)
        return lines

    def _start_mining(self, conn: V1Connection) -> list[bytes]:
        """The miner is subscribed and authorized: its target, then the current job."""
        vd = self.config.v1.vardiff
        # without vardiff a miner simply gets the channel's target (an "infinitely easy" own target)
        initial = share_difficulty_to_target(vd.initial_difficulty) if vd.enabled else (1 << 256) - 1
        conn.vardiff = MinerVardiff(
            initial,
            share_interval_s=vd.share_interval_s,
            retarget_interval_s=vd.retarget_interval_s,
            tolerance=vd.tolerance,
            enabled=vd.enabled,
        )
        lines = [conn.session.set_target(conn.vardiff.effective(self.upstream_target))]
        job = self.jobs.current
        if job is not None and self.upstream.connected:
            lines.append(self._notify_line(job, clean=True))
        return lines

    def _notify_line(self, job: ProxyJob, clean: bool) -> bytes:
        return self.dialect.notify(job.downstream_id, job.pow_hash, job.height or 0, job.parent_hash, clean)

    def on_share(self, conn: V1Connection, event: ShareSubmitted) -> bytes:
        """Judge a share; forward it (answer later, with the pool's verdict) or answer now with an error."""
        session = conn.session
        number = parse_job_id(event.job_id)
        job = self.jobs.get(number) if number is not None else None
        if job is None or not self.jobs.is_live(job) or not self.upstream.connected:
            return self._reject_now(conn, event, StratumErrorCode.JOB_NOT_FOUND)
        nonce16 = session.extranonce1 + event.extranonce2
        if nonce16 in job.seen:
            return self._reject_now(conn, event, StratumErrorCode.DUPLICATE_SHARE)
        now = time.monotonic()
        target = conn.share_target(now)
        value = int.from_bytes(pow_output(job.pow_hash, nonce16, self.upstream.blake2b), "big")
        is_block = value <= job.network_target
        if value > target and not is_block:
            return self._reject_now(conn, event, StratumErrorCode.LOW_DIFFICULTY)
        job.seen.add(nonce16)
        # The target it is credited at: the hardest one it meets of the miner's current target and, in a grace
        # window, the easier previous one (a miner already on the harder target must not be credited at the easier
        # one); the network's for a block that missed both.
        current = session.target or 0
        proven = current if value <= current else target if value <= target else job.network_target
        sequence_number = self.pending.next_sequence_number()
        identity = conn.identities.get(event.username) if self.config.per_worker else None
        if identity is None:
            self.upstream.submit_extended(sequence_number, job.upstream_id, job.ntime, nonce16)
        else:
            self.upstream.submit_extended(
                sequence_number, job.upstream_id, job.ntime, nonce16, identity.worker, str(identity), proven
            )
        self.forwarded += 1
        self.pending.add(PendingShare(sequence_number, conn, event.request_id, event.username, proven, now, is_block))
        if is_block:
            log.info("block candidate from %s at height %s, forwarded", event.username, job.height)
        return b""

    def _reject_now(self, conn: V1Connection, event: ShareSubmitted, code: StratumErrorCode) -> bytes:
        self._count_reject(event.username, code)
        return conn.session.reject(event.request_id, code)

    def _count_reject(self, worker: str, code: StratumErrorCode) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1
        stats = self.workers.get(worker)
        if stats is not None:
            stats.rejected[code] = stats.rejected.get(code, 0) + 1

    # -- verdicts ---------------------------------------------------------------------------------
    def _accepted(self, shares: list[PendingShare]) -> None:
        if not shares:
            return
        now = time.time()
        grace = self.config.v1.vardiff.grace_s
        upstream_target = self.upstream_target
        out: dict[V1Connection, list[bytes]] = {}
        for share in shares:
            conn: V1Connection = share.owner
            self.accepted += 1
            stats = self.workers.get(share.worker)
            if stats is not None:
                stats.accepted += 1
                stats.accepted_difficulty += target_to_share_difficulty(share.target)
                stats.last_share_at = now
                stats.blocks += share.is_block
            self.blocks += share.is_block
            if conn.closed:
                continue
            lines = out.setdefault(conn, [])
            lines.append(conn.session.accept_share(share.request_id))
            # counted at the target it was credited at, not the miner's current one (see .vardiff)
            if conn.vardiff is not None and conn.vardiff.on_share(upstream_target, target=share.target):
                line = conn.retarget(upstream_target, grace)
                if line:
                    lines.append(line)
        for conn, lines in out.items():
            conn.write(b"".join(lines))

    def _rejected(self, share: PendingShare, code: StratumErrorCode) -> None:
        self._count_reject(share.worker, code)
        conn: V1Connection = share.owner
        if not conn.closed:
            conn.write(conn.session.reject(share.request_id, code))

    # -- upstream ---------------------------------------------------------------------------------
    def upstream_up(self, upstream: Upstream, channel: ChannelInfo) -> None:
        prefix = channel.extranonce_prefix
        id_bytes = 16 - len(prefix) - self.extranonce2_size
        if not 0 <= id_bytes <= channel.extranonce_size:
            raise UpstreamRefused(
                f"extranonce2_size {self.extranonce2_size} does not fit the pool's {len(prefix)}-byte prefix"
            )
        self.jobs.reset()
        if self.prefix is not None and (prefix != self.prefix or id_bytes != self.id_bytes):
            # the miners' extranonce1 no longer belongs to us: they must subscribe again
            self.prefix_changes += 1
            log.warning(
                "the pool gave a new extranonce prefix (%s, was %s): closing %d V1 connections to resubscribe",
                prefix.hex(),
                self.prefix.hex(),
                len(self.connections),
            )
            for conn in list(self.connections):
                conn.close()
        if prefix != self.prefix or id_bytes != self.id_bytes:
            self.ids.reset(1 << (8 * id_bytes))  # a new id space (the holders of the old one are closed)
        self.prefix, self.id_bytes = prefix, id_bytes
        self.upstream_target = channel.target
        grace = self.config.v1.vardiff.grace_s
        for conn in list(self.connections):
            if conn.waiting_subscribe:
                conn.waiting_subscribe = False
                lines = self._answer_subscribe(conn, conn.session.pending_subscribe_id)
                conn.write(b"".join(lines))
            elif conn.session.ready:
                line = conn.retarget(self.upstream_target, grace)
                if line:
                    conn.write(line)

    def upstream_down(self, upstream: Upstream, reason: str) -> None:
        if self.config.v1.keep_miners_without_upstream:
            log.warning("pool connection lost (%s): %d V1 miners wait for new work", reason, len(self.connections))
        else:
            log.warning(
                "pool connection lost (%s): %d V1 miners wait for new work for up to %gs (v1.upstream_loss_grace_s)",
                reason,
                len(self.connections),
                self.config.v1.upstream_loss_grace_s,
            )
        self._lose_upstream(reason)
        self.jobs.reset()
        # no verdict will come: the miner hears "stale". (A pool that closed without flushing its batched
        # SubmitShares.Success may still have credited some of these: verdicts_lost bounds that.)
        lost = self.pending.drain()
        self.verdicts_lost += len(lost)
        for share in lost:
            self._rejected(share, StratumErrorCode.JOB_NOT_FOUND)

    def upstream_message(self, upstream: Upstream, message: Message) -> None:
        kind = type(message)
        if kind is SubmitSharesSuccess:
            assert isinstance(message, SubmitSharesSuccess)
            self._accepted(self.pending.accept_through(message.last_sequence_number))
        elif kind is SubmitSharesError:
            assert isinstance(message, SubmitSharesError)
            share = self.pending.reject(message.sequence_number)
            if share is not None:
                self._rejected(share, _SV2_TO_V1.get(message.error_code, StratumErrorCode.NOT_SUPPORTED))
        elif kind is NewExtendedMiningJob:
            assert isinstance(message, NewExtendedMiningJob)
            job = self.jobs.on_job(message)
            if job is not None:
                self._broadcast(self._notify_line(job, clean=self._serve_again()))
        elif kind is SetNewPrevHash:
            assert isinstance(message, SetNewPrevHash)
            job = self.jobs.on_prev_hash(message)
            if job is not None:
                self._serve_again()
                self._broadcast(self._notify_line(job, clean=True))
        elif kind is SetTarget:
            assert isinstance(message, SetTarget)
            self.upstream_target = message.maximum_target
            grace = self.config.v1.vardiff.grace_s
            for conn in list(self.connections):
                line = conn.retarget(self.upstream_target, grace)
                if line:
                    conn.write(line)
        elif kind is SetExtranoncePrefix:
            assert upstream.channel is not None
            self.upstream_up(upstream, upstream.channel)  # same handling as a reconnect with a new prefix
        else:
            log.debug("v1 upstream: ignoring %s", kind.__name__)

    # -- upstream loss ----------------------------------------------------------------------------
    def _lose_upstream(self, reason: str) -> None:
        """The channel is gone: the miners are held for the grace, then closed (see the module doc)."""
        if self.upstream_state == "serving":
            self.upstream_losses += 1
            self.upstream_state = "grace"
            self.upstream_lost_at = time.monotonic()
        self.upstream_lost_reason = reason
        self._arm_grace()

    def _arm_grace(self) -> None:
        if self.config.v1.keep_miners_without_upstream or self._grace_timer is not None or self._server is None:
            return  # (not started: no loop to time it on; start() arms it)
        if self.upstream_state != "grace":
            return
        delay = max(0.0, self.upstream_lost_at + self.config.v1.upstream_loss_grace_s - time.monotonic())
        self._grace_timer = asyncio.get_running_loop().call_later(delay, self._grace_over)

    def _cancel_grace(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _grace_over(self) -> None:
        """The pool stayed away past the grace: close every V1 connection and refuse new ones until a job comes."""
        self._grace_timer = None
        if self.upstream_state != "grace":
            return
        self.upstream_state = "refusing"
        conns = list(self.connections)
        log.warning(
            "pool unavailable for %.1fs (%s): closing %d V1 connections so the miners fail over to their backup "
            "pools; new V1 connections are refused until the pool sends a job",
            time.monotonic() - self.upstream_lost_at,
            self.upstream_lost_reason or self.upstream.last_error or "no job",
            len(conns),
        )
        self.closed_for_upstream_loss += len(conns)
        for conn in conns:
            conn.close()

    def _serve_again(self) -> bool:
        """A job is about to go out: if it is the first since a loss (or ever), accept miners again. True when it
        is, so that it goes out with clean_jobs=true (whatever the miners hashed before is stale)."""
        if self.upstream_state == "serving":
            return False
        self._cancel_grace()
        if self.upstream_state == "refusing":
            log.info(
                "pool back with a job after %.1fs: accepting V1 miners again", time.monotonic() - self.upstream_lost_at
            )
        elif self.upstream_losses:
            log.info(
                "pool back with a job after %.1fs, within the grace: %d V1 miners get it as a clean job",
                time.monotonic() - self.upstream_lost_at,
                len(self.connections),
            )
        self.upstream_state = "serving"
        return True

    def _broadcast(self, line: bytes) -> None:
        for conn in list(self.connections):
            if conn.session.ready:
                conn.write(line)

    async def _maintenance_loop(self) -> None:
        """Shares the pool never answered; quiet miners get an easier target (down to the channel's)."""
        timeout = self.config.upstream.share_timeout_s
        grace = self.config.v1.vardiff.grace_s
        while True:
            await asyncio.sleep(1.0)
            for share in self.pending.expire(timeout):
                self._rejected(share, StratumErrorCode.JOB_NOT_FOUND)
            for conn in list(self.connections):
                if conn.vardiff is not None and conn.vardiff.maybe_retarget(self.upstream_target):
                    line = conn.retarget(self.upstream_target, grace)
                    if line:
                        conn.write(line)

    # -- reporting --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "upstream": {
                "connected": self.upstream.connected,
                "connections": self.upstream.connections,
                "last_error": self.upstream.last_error,
                "channel_id": self.upstream.channel.channel_id if self.upstream.channel else None,
                "extranonce_prefix": self.prefix.hex() if self.prefix else None,
                "target": f"{self.upstream_target:064x}" if self.upstream_target else None,
                "bytes_out": self.upstream.bytes_out,
                "bytes_in": self.upstream.bytes_in,
            },
            "upstream_loss": {
                "state": self.upstream_state,
                "losses": self.upstream_losses,
                "lost_for_s": None if self.upstream_state == "serving" else time.monotonic() - self.upstream_lost_at,
                "reason": None if self.upstream_state == "serving" else self.upstream_lost_reason,
                "closed_connections": self.closed_for_upstream_loss,
            },
            "identity": self.config.identity,
            "miners": len(self.connections),
            "miner_ids": {"in_use": self.ids.in_use, "capacity": self.ids.capacity},
            "refusals": {reason.value: count for reason, count in self.refusals.items()},
            "refused_authorizations": self.refused_authorizations,
            "accepted": self.accepted,
            "rejected": {str(k): v for k, v in sorted(self.rejected.items())},
            "forwarded": self.forwarded,
            "pending": len(self.pending),
            "verdicts_lost": self.verdicts_lost,
            "blocks": self.blocks,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "workers": {
                name: {
                    "accepted": w.accepted,
                    "rejected": {str(k): v for k, v in sorted(w.rejected.items())},
                    "accepted_difficulty": w.accepted_difficulty,
                    "blocks": w.blocks,
                    "last_share_at": w.last_share_at,
                }
                for name, w in sorted(self.workers.items())
            },
        }
