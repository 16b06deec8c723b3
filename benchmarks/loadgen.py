"""Load generator for the pool benchmarks: many light Stratum V2 connections in one process.

Run by ``benchmarks/bench_pool.py`` as ``python -m benchmarks.loadgen --cpu 1`` and driven over stdin/stdout with
one JSON object per line (a command in, one reply out); it talks to loopback only and stops by itself (stdin EOF,
``quit``, or the ``--max-seconds`` alarm). It is deliberately lighter than ``ckbpool.miner.sv2``: no
``ClientConnection`` state machine and no per-share message objects: shares are packed with ``struct`` and
encrypted in batches, acknowledgements are read straight from the frame bytes, and during a fan-out
measurement incoming bytes are only timestamped and stashed (decrypted after the round), so the generator's
own cost stays out of the latencies it measures as far as possible.

Commands (``cmd`` plus arguments):

- ``connect`` host, port, count, mode ("noise": Noise handshake + SetupConnection + one standard channel,
  ready once the first job and SetNewPrevHash arrived; "tcp": a plain TCP connection), concurrency, sources
  (local addresses to bind, round-robin, so 50k connections do not run out of ephemeral ports), deadline:
  grow the connection set to ``count``;
- ``shares_prepare`` per_connection: find and encrypt that many shares per connection ahead of time (the
  generator cannot encrypt as fast as the Noise-only baseline server consumes, so the send path must be a bare
  write; if they run out, more are made on the fly and counted as ``live``);
- ``shares_start`` window: every ready connection keeps ``window`` shares in flight (refilled as
  SubmitShares.Success acknowledges them); ``mark``: counters and CPU time now; ``shares_stop``;
- ``arm`` stamps / ``collect`` t0, deadline: when each connection receives the SetNewPrevHash of the next job,
  relative to ``t0`` (CLOCK_MONOTONIC, comparable with the server process). ``stamps="kernel"`` (the fan-out
  figure): the connections stop reading for the round (``pause_reading``), an edge-free one-shot epoll only
  counts which sockets got data, and after the round each socket is read with ``recvmsg`` and the latency is
  the kernel's receive timestamp of the chunk (``SO_TIMESTAMPNS``: on loopback taken inside the server's write
  syscall), so the clients' own receive work -- 10k ``data_received`` callbacks, on the same 2 cores as the
  server -- is neither in the figure nor competing with the server during the round. ``stamps="user"`` (for
  comparison): each chunk is stamped in ``data_received``, what a Python miner's event loop saw. For kernel stamps
  run this process on asyncio's own loop (``--no-uvloop``): uvloop's ``pause_reading`` leaves the socket in
  libuv's epoll until its next event (libuv drops it lazily), so each socket's first chunk of a round would still
  wake this process -- 10k wake-ups per round, ping-ponging with the server on its cores (seen with ``perf sched``:
  a worker and this process alternating every ~15 µs) -- while asyncio's selector loop unregisters at once;
- ``mine`` blocks, deadline: on the first connection, solve each new job at the channel's target (one share per
  job, so at a share target equal to the network target every share is a block);
- ``answered``: shares answered Success per connection (identity ``bench.w<index>``), to check the books;
- ``stats``, ``quit``.

The share nonces are found with ``ckbpool.ckb.eaglesong.search`` at the channel's target (at the benchmark's
easiest target every nonce qualifies, so a search costs one hash); each connection walks its own counter under its
own extranonce prefix, so no two shares repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ckbpool.ckb.eaglesong import search
from ckbpool.sv2.messages import decode_frame_bytes, encode_message
from ckbpool.sv2.messages_common import (
    PROTOCOL_MINING,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from ckbpool.sv2.messages_mining import (
    NewMiningJob,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesStandard,
)
from ckbpool.sv2.noise import MSG2_SIZE, NoiseInitiator, NoiseTransport

log = logging.getLogger("loadgen")
monotonic = time.monotonic
U256_MAX = (1 << 256) - 1

MSG_SUBMIT_SUCCESS = 0x1C
MSG_SUBMIT_ERROR = 0x1D
MSG_SET_NEW_PREV_HASH = 0x20
# SubmitSharesStandard: ext 0x8000 (channel message), type 0x1a, 24-byte payload
SHARE_HEADER = b"\x00\x80\x1a\x18\x00\x00"
_share_payload = struct.Struct("<IIIIII").pack  # channel_id, sequence, job_id, nonce, ntime, version
assert SHARE_HEADER + _share_payload(1, 2, 3, 4, 5, 6) == encode_message(SubmitSharesStandard(1, 2, 3, 4, 5, 6))


# --- plumbing shared by every benchmark child process ------------------------------------------------------


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE to at least ``want`` (the hard limit too when we may); return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard < want:
        try:
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        except OSError:
            nr_open = want
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, nr_open), min(want, nr_open)))
            return min(want, nr_open)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_to_cpu(cpu: int | None) -> list[int]:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int, children: bool = False) -> float:
    """user + system CPU seconds of process ``pid`` so far (all its threads), from /proc; NaN once it is gone.

    ``children``: also what its children used -- those it has reaped (the kernel adds them to its cutime/cstime)
    and those still running (``/proc/<pid>/task/<pid>/children``, one level). For redis-server: its AOF-rewrite
    children (forked whenever the AOF doubles; their RDB preamble's compression was most of their CPU) are Redis's
    cost per share as much as its main thread's, and on the benchmark's 2 cores they compete with the pool."""
    fields = _stat_fields(pid)
    if fields is None:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        try:
            live = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            live = []
        for child in live:
            child_fields = _stat_fields(int(child))
            if child_fields is not None:  # else reaped meanwhile: in cutime/cstime from the next reading on
                ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / CLK_TCK


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (field 3 on is index 0 on); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def install_uvloop(enabled: bool) -> str:
    if enabled:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
        except ImportError:
            pass
    return "asyncio"


def child_setup(name: str, cpu: int | None, max_seconds: float, nofile: int) -> dict[str, Any]:
    """Common start of a benchmark child: logging to stderr, CPU pinning, fd limit, a hard lifetime."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{name}: %(levelname)s %(message)s")
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # default action: terminate; our bound on a stuck child
    signal.alarm(max(1, int(max_seconds)))
    return {"cpus": pin_to_cpu(cpu), "nofile": raise_nofile(nofile), "pid": os.getpid()}


async def control_loop(handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """Serve JSON-line commands from stdin until ``quit`` or EOF (the parent went away)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout
    while True:
        line = await reader.readline()
        if not line:
            return
        request = json.loads(line)
        if request.get("cmd") == "quit":
            out.write(json.dumps({"ok": True}) + "\n")
            out.flush()
            return
        try:
            reply = await handle(request)
            reply["ok"] = True
        except Exception as exc:  # reported to the parent, which decides
            log.exception("command %s failed", request.get("cmd"))
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# --- the connections -------------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One miner connection: Noise initiator, SetupConnection, one standard channel, shares."""

    __slots__ = (
        "accepted",
        "blob",
        "blob_pos",
        "channel_id",
        "chunks",
        "counter",
        "frame_size",
        "gen",
        "hs",
        "index",
        "inflight",
        "initiator",
        "job_id",
        "mined_job",
        "noise",
        "ntime",
        "pending_job",
        "pow_hash",
        "prefix",
        "ready",
        "seq",
        "target",
        "transport",
    )

    def __init__(self, gen: LoadGen, index: int, mode: str) -> None:
        self.gen = gen
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.initiator = NoiseInitiator(None) if mode == "noise" else None  # load generator: no cert check
        self.noise: NoiseTransport | None = None
        self.hs: bytearray | None = bytearray() if mode == "noise" else None
        self.ready: asyncio.Future[bool] = gen.loop.create_future()
        self.chunks: list[tuple[float, bytes]] | None = None
        self.channel_id = 0
        self.prefix = b""
        self.target = 0
        self.job_id = -1
        self.pending_job: tuple[int, bytes] | None = None
        self.pow_hash = b""
        self.ntime = 0
        self.seq = 0
        self.counter = 0
        self.inflight = 0
        self.mined_job = -1
        self.blob = b""
        self.blob_pos = 0
        self.frame_size = 0
        self.accepted = 0  # shares this connection was answered Success for (the books are checked against it)

    # -- transport callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        if self.initiator is None:
            self._set_ready(True)
        else:
            transport.write(self.initiator.start())

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost += 1
        self._set_ready(False)

    def data_received(self, data: bytes) -> None:
        chunks = self.chunks
        if chunks is not None:  # fan-out round: timestamp first, decrypt after the round
            now = monotonic()
            chunks.append((now, data))
            self.gen.last_rx = now
            return
        noise = self.noise
        if noise is None:
            hs = self.hs
            if hs is None or self.initiator is None:
                return  # plain TCP mode: nothing is expected
            hs += data
            if len(hs) < MSG2_SIZE:
                return
            try:
                self.noise = noise = self.initiator.complete(bytes(hs[:MSG2_SIZE]))
            except Exception as exc:
                log.warning("handshake failed: %s", exc)
                self._fail()
                return
            rest = bytes(hs[MSG2_SIZE:])
            self.initiator = self.hs = None
            self._send_message(
                SetupConnection(
                    protocol=PROTOCOL_MINING,
                    min_version=2,
                    max_version=2,
                    flags=0,
                    endpoint_host="127.0.0.1",
                    endpoint_port=0,
                    vendor="ckbpool-loadgen",
                    hardware_version="none",
                    firmware="bench",
                    device_id=str(self.index),
                )
            )
            if not rest:
                return
            data = rest
        try:
            frames = noise.feed(data)
        except Exception as exc:
            log.warning("bad frame from the server: %s", exc)
            self._fail()
            return
        for frame in frames:
            self.on_frame(frame)

    # -- frames -----------------------------------------------------------------------------------
    def on_frame(self, frame: bytes) -> None:
        kind = frame[2]
        gen = self.gen
        if kind == MSG_SUBMIT_SUCCESS:
            count = frame[14] | frame[15] << 8 | frame[16] << 16 | frame[17] << 24
            gen.accepted += count
            self.accepted += count
            self.inflight -= count
            if gen.sharing:
                self.refill()
            return
        message = decode_frame_bytes(frame)
        if isinstance(message, SubmitSharesError):
            gen.errors[message.error_code] = gen.errors.get(message.error_code, 0) + 1
            self.inflight -= 1
            if gen.sharing:
                self.refill()
        elif isinstance(message, NewMiningJob):
            if message.min_ntime is None:
                self.pending_job = (message.job_id, message.merkle_root)
            else:
                self._activate(message.job_id, message.merkle_root, message.min_ntime)
        elif isinstance(message, SetNewPrevHash):
            if self.pending_job is not None and self.pending_job[0] == message.job_id:
                self._activate(message.job_id, self.pending_job[1], message.min_ntime)
                self.pending_job = None
            gen.prevhashes += 1
            self._set_ready(True)
        elif isinstance(message, SetTarget):
            self.target = message.maximum_target
        elif isinstance(message, SetupConnectionSuccess):
            self._send_message(
                OpenStandardMiningChannel(
                    request_id=1,
                    user_identity=f"bench.w{self.index}",
                    nominal_hash_rate=gen.nominal_hash_rate,
                    max_target=U256_MAX,
                )
            )
        elif isinstance(message, OpenStandardMiningChannelSuccess):
            self.channel_id = message.channel_id
            self.prefix = message.extranonce_prefix
            self.target = message.target
        elif isinstance(message, SetupConnectionError | OpenMiningChannelError):
            log.warning("refused: %s", message)
            self._fail()

    def _activate(self, job_id: int, pow_hash: bytes, ntime: int) -> None:
        self.job_id, self.pow_hash, self.ntime = job_id, pow_hash, ntime
        if self.gen.mining is self:
            self.gen.loop.call_soon(self.mine_one)

    def _send_message(self, message: Any) -> None:
        assert self.transport is not None and self.noise is not None
        self.transport.write(self.noise.encrypt_frame(encode_message(message)))

    def _set_ready(self, ok: bool) -> None:
        if not self.ready.done():
            self.ready.set_result(ok)

    def _fail(self) -> None:
        self._set_ready(False)
        if self.transport is not None:
            self.transport.abort()

    # -- shares -----------------------------------------------------------------------------------
    def next_share(self) -> bytes:
        """The next distinct share meeting the channel target: found with the C Eaglesong search, except at
        the easiest target 2^256-1, which every nonce meets (the counter is then the nonce, no hash needed)."""
        counter = self.counter
        if self.target != U256_MAX:
            found = search(self.pow_hash, counter, 1 << 24, self.target, nonce_prefix=self.prefix)
            if found is None:
                raise RuntimeError("no share found in 2^24 nonces: target too hard for the load generator")
            counter = found >> 64  # nonce16 = prefix (8 bytes) || counter (8 bytes LE) = version LE || nonce LE
        self.counter = counter + 1
        self.seq = seq = (self.seq + 1) & 0xFFFFFFFF
        return SHARE_HEADER + _share_payload(
            self.channel_id, seq, self.job_id, counter >> 32, self.ntime, counter & 0xFFFFFFFF
        )

    def prepare(self, count: int) -> None:
        """Encrypt the next ``count`` shares now, so sending them later costs only a write. Nothing else may be
        sent on this connection until they are all out (they use up the Noise nonces in order)."""
        assert self.noise is not None
        encrypt = self.noise.encrypt_frame
        next_share = self.next_share
        self.blob = b"".join([encrypt(next_share()) for _ in range(count)])
        self.blob_pos = 0
        self.frame_size = len(self.blob) // count if count else 0

    def refill(self) -> None:
        gen = self.gen
        n = gen.window - self.inflight
        transport = self.transport
        if n <= 0 or transport is None or transport.is_closing() or self.noise is None:
            return
        parts = []
        blob = self.blob
        if blob:
            pos = self.blob_pos
            end = min(len(blob), pos + n * self.frame_size)
            parts.append(blob[pos:end])
            taken = (end - pos) // self.frame_size
            self.blob_pos = end
            if end >= len(blob):
                self.blob = b""
            n_live = n - taken
        else:
            n_live = n
        if n_live:
            gen.live += n_live  # prepared shares ran out: generated (slowly) on the fly
            encrypt = self.noise.encrypt_frame
            next_share = self.next_share
            parts += [encrypt(next_share()) for _ in range(n_live)]
        transport.write(b"".join(parts))
        self.inflight += n
        gen.submitted += n

    def mine_one(self) -> None:
        """Block-latency mode: one share per job, at the channel target."""
        gen = self.gen
        if gen.mining is not self or self.job_id == self.mined_job or gen.mined >= gen.mine_limit:
            return
        self.mined_job = self.job_id
        frame = self.next_share()
        assert self.transport is not None and self.noise is not None
        self.transport.write(self.noise.encrypt_frame(frame))
        gen.mined += 1
        gen.submitted += 1


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Linux: the receive timestamp of each skb as a struct timespec (CLOCK_REALTIME) in recvmsg's ancillary data
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)


def _recv_stamped(fd: int, limit: int = 64) -> list[tuple[int, bytes]]:
    """Everything queued on socket ``fd`` now, as (kernel receive time in CLOCK_REALTIME ns, bytes) per read.

    The descriptor stays the transport's: it is wrapped without a dup and detached again. A read that returns
    several skbs carries the stamp of the last of them (tcp_recvmsg); a new tip is one write per connection."""
    sock = socket.socket(fileno=fd)
    out: list[tuple[int, bytes]] = []
    try:
        for _ in range(limit):
            try:
                data, anc, _flags, _addr = sock.recvmsg(1 << 16, _ANC_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            if not data:
                break
            stamp = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                    sec, nsec = _TIMESPEC.unpack_from(payload)
                    stamp = sec * 1_000_000_000 + nsec
            out.append((stamp, data))
    finally:
        sock.detach()
    return out


def _realtime_minus_monotonic_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC now, from the tightest of a few paired readings (converts the kernel's
    receive stamps to the monotonic clock the server's t0 is on)."""
    best: tuple[int, int] | None = None
    for _ in range(5):
        m0 = time.monotonic_ns()
        r = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, r - (m0 + m1) // 2)
    assert best is not None
    return best[1]


def _bound_socket(source: str) -> socket.socket:
    """A non-blocking TCP socket bound to ``source``; the port is chosen at connect() time
    (IP_BIND_ADDRESS_NO_PORT), per 4-tuple, instead of by a slow search for a port free on every destination."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # fan-out rounds read the kernel's receive stamps
        sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class LoadGen:
    def __init__(self, nominal_hash_rate: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.conns: list[Conn] = []
        self.nominal_hash_rate = nominal_hash_rate
        self.window = 64
        self.sharing = False
        self.accepted = 0
        self.submitted = 0
        self.errors: dict[str, int] = {}
        self.prevhashes = 0
        self.lost = 0
        self.last_rx = 0.0
        self.stamps = "user"  # how the armed fan-out round is timed (see ``arm``)
        self.round_epoll: select.epoll | None = None
        self.round_fds: dict[int, Conn] = {}  # the sockets of a kernel-stamped round (arm), by descriptor
        self.live = 0
        self.mining: Conn | None = None
        self.mined = 0
        self.mine_limit = 0

    async def connect(
        self,
        host: str,
        port: int,
        count: int,
        mode: str = "noise",
        concurrency: int = 64,
        sources: list[str] | None = None,
        deadline: float = 120.0,
        per_connection_timeout: float = 30.0,
        nominal_hash_rate: float | None = None,
    ) -> dict[str, Any]:
        if nominal_hash_rate is not None:
            self.nominal_hash_rate = nominal_hash_rate
        sources = sources or ["127.0.0.1"]
        start = monotonic()
        deadline = start + deadline
        first = len(self.conns)
        todo = iter(range(first, count))
        failed = 0
        cpu0 = cpu_seconds()

        async def worker() -> None:
            nonlocal failed
            for index in todo:
                if monotonic() > deadline:
                    return
                conn = Conn(self, index, mode)
                try:
                    sock = _bound_socket(sources[index % len(sources)])
                    try:
                        await asyncio.wait_for(self.loop.sock_connect(sock, (host, port)), per_connection_timeout)
                    except BaseException:
                        sock.close()
                        raise
                    await self.loop.create_connection(lambda conn=conn: conn, sock=sock)  # type: ignore[misc]
                    ok = await asyncio.wait_for(asyncio.shield(conn.ready), per_connection_timeout)
                except (OSError, TimeoutError) as exc:
                    log.warning("connection %d failed: %s", index, exc)
                    ok = False
                if ok:
                    self.conns.append(conn)
                else:
                    failed += 1
                    if conn.transport is not None:
                        conn.transport.abort()
                    if failed > max(20, count // 100):
                        raise RuntimeError(f"{failed} connections failed; giving up")

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        elapsed = monotonic() - start
        made = len(self.conns) - first
        targets = {c.target for c in self.conns[first:]} if mode == "noise" else set()
        return {
            "connections": len(self.conns),
            "made": made,
            "failed": failed,
            "elapsed": elapsed,
            "rate": made / elapsed if elapsed > 0 else 0.0,
            "cpu": cpu_seconds() - cpu0,
            "targets": sorted(hex(t) for t in targets)[:4],
            "timed_out": monotonic() > deadline,
        }

    def mark(self) -> dict[str, Any]:
        return {
            "t": monotonic(),
            "accepted": self.accepted,
            "submitted": self.submitted,
            "errors": dict(self.errors),
            "cpu": cpu_seconds(),
            "lost": self.lost,
            "live": self.live,
            "rss": rss_bytes(),
        }

    def shares_prepare(self, per_connection: int) -> dict[str, Any]:
        start, cpu0 = monotonic(), cpu_seconds()
        for conn in self.conns:
            if conn.noise is not None and conn.job_id >= 0:
                conn.prepare(per_connection)
        return {"elapsed": monotonic() - start, "cpu": cpu_seconds() - cpu0, "rss": rss_bytes()}

    def shares_start(self, window: int) -> dict[str, Any]:
        self.window = window
        self.sharing = True
        for conn in self.conns:
            if conn.noise is not None and conn.job_id >= 0:
                conn.refill()
        return self.mark()

    async def shares_stop(self, drain: float) -> dict[str, Any]:
        self.sharing = False
        deadline = monotonic() + drain
        while monotonic() < deadline and any(c.inflight > 0 for c in self.conns):
            await asyncio.sleep(0.02)
        result = self.mark()
        result["inflight"] = sum(max(0, c.inflight) for c in self.conns)
        return result

    def arm(self, stamps: str = "user") -> dict[str, Any]:
        """Get ready to time the next job's arrival. ``stamps="user"``: each chunk stamped in ``data_received``;
        ``"kernel"``: reading paused and every socket put in a one-shot epoll that only says which ones got data
        (no wake-up of this process per chunk: ``collect`` polls it), the kernel's receive stamps read after."""
        if stamps not in ("user", "kernel"):
            raise ValueError(f"stamps must be 'user' or 'kernel', not {stamps!r}")
        self.stamps = stamps
        if self.round_epoll is not None:
            self.round_epoll.close()
            self.round_epoll = None
        self.round_fds = {}
        if stamps == "kernel":
            # no cyclic collection in this process until the round is collected: a full pass over 10k
            # connections' objects takes this process ~20 ms on the server's cores during the round (perf)
            gc.disable()
            ep = self.round_epoll = select.epoll(sizehint=max(1, len(self.conns)))
            for conn in self.conns:
                transport = conn.transport
                if transport is None or transport.is_closing():
                    continue
                transport.pause_reading()
                fd = transport.get_extra_info("socket").fileno()
                ep.register(fd, select.EPOLLIN | select.EPOLLONESHOT)
                self.round_fds[fd] = conn
                conn.chunks = []
        else:
            for conn in self.conns:
                conn.chunks = []
        self.last_rx = monotonic()
        return {"armed": len(self.conns)}

    async def collect(self, t0: float, timeout: float, quiet: float = 0.03) -> dict[str, Any]:
        if self.stamps == "kernel":
            return await self._collect_kernel(t0, timeout, quiet)
        conns = [c for c in self.conns if c.chunks is not None]
        deadline = monotonic() + timeout
        pending = conns
        while pending and monotonic() < deadline:
            pending = [c for c in pending if not c.chunks]
            if pending:
                await asyncio.sleep(0.005)
        while monotonic() - self.last_rx < quiet and monotonic() < deadline:
            await asyncio.sleep(0.005)
        latencies: list[float] = []
        missing = 0
        for conn in conns:
            chunks, conn.chunks = conn.chunks or [], None
            got: float | None = None
            for stamp, data in chunks:
                assert conn.noise is not None
                for frame in conn.noise.feed(data):
                    if got is None and frame[2] == MSG_SET_NEW_PREV_HASH:
                        got = stamp
                    conn.on_frame(frame)
            if got is None:
                missing += 1
            else:
                latencies.append(round((got - t0) * 1000, 4))
        return {"latencies_ms": latencies, "missing": missing}

    async def _collect_kernel(self, t0: float, timeout: float, quiet: float) -> dict[str, Any]:
        """``collect`` of a ``stamps="kernel"`` round: wait (polling the one-shot epoll every few ms, so the
        server's writes wake nothing here) until every armed socket got data, plus ``quiet`` for stragglers;
        then read each socket with its receive stamps, decrypt, and resume reading."""
        ep = self.round_epoll
        assert ep is not None
        by_fd, self.round_fds = self.round_fds, {}  # made by arm: no per-connection work here during the round
        # one-shot: each socket is reported once, so counting the events is enough (no per-fd Python work while
        # the server is still writing on these cores)
        seen = 0
        deadline = monotonic() + timeout
        while seen < len(by_fd) and monotonic() < deadline:
            await asyncio.sleep(0.02)  # the stamps are the kernel's: polling less often loses no precision
            seen += len(ep.poll(0, len(by_fd)))
        await asyncio.sleep(quiet)
        ep.close()
        self.round_epoll = None
        offset = _realtime_minus_monotonic_ns()
        t0_ns = round(t0 * 1e9)
        latencies: list[float] = []
        missing = 0
        for fd, conn in by_fd.items():
            conn.chunks = None
            got: int | None = None
            noise = conn.noise
            assert noise is not None
            for stamp, data in _recv_stamped(fd):
                for frame in noise.feed(data):
                    if got is None and frame[2] == MSG_SET_NEW_PREV_HASH:
                        got = stamp - offset if stamp else None
                    conn.on_frame(frame)
            if got is None:
                missing += 1
            else:
                latencies.append(round((got - t0_ns) / 1e6, 4))
            assert conn.transport is not None
            if not conn.transport.is_closing():
                conn.transport.resume_reading()
        gc.enable()
        return {"latencies_ms": latencies, "missing": missing}

    async def mine(self, blocks: int, timeout: float) -> dict[str, Any]:
        conn = self.conns[0]
        self.mining, self.mined, self.mine_limit = conn, 0, blocks
        conn.mine_one()
        deadline = monotonic() + timeout
        while self.mined < blocks and monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # let the last block's path finish on the server
        self.mining = None
        return {"mined": self.mined, "target": hex(conn.target)}

    def close(self) -> None:
        """Abort every connection with SO_LINGER 0 (RST): no TIME_WAIT left holding ephemeral ports."""
        linger = struct.pack("ii", 1, 0)
        for conn in self.conns:
            transport = conn.transport
            if transport is None:
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            transport.abort()


async def amain(args: argparse.Namespace, info: dict[str, Any]) -> None:
    gen = LoadGen(args.nominal_hash_rate)

    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.pop("cmd")
        if cmd == "hello":
            return dict(info)
        if cmd == "connect":
            return await gen.connect(**req)
        if cmd == "shares_prepare":
            return gen.shares_prepare(int(req["per_connection"]))
        if cmd == "shares_start":
            return gen.shares_start(int(req.get("window", 64)))
        if cmd == "mark":
            return gen.mark()
        if cmd == "shares_stop":
            return await gen.shares_stop(float(req.get("drain", 2.0)))
        if cmd == "arm":
            return gen.arm(str(req.get("stamps", "user")))
        if cmd == "collect":
            return await gen.collect(float(req["t0"]), float(req.get("deadline", 10.0)))
        if cmd == "mine":
            return await gen.mine(int(req["blocks"]), float(req.get("deadline", 30.0)))
        if cmd == "stats":
            return gen.mark() | {"connections": len(gen.conns), "prevhashes": gen.prevhashes}
        if cmd == "answered":  # Successes per connection index (its identity is bench.w<index>)
            return {"per_connection": {str(c.index): c.accepted for c in gen.conns}, "total": gen.accepted}
        raise ValueError(f"unknown command {cmd!r}")

    try:
        await control_loop(handle)
    finally:
        gen.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--max-seconds", type=float, default=900, help="hard lifetime (SIGALRM)")
    parser.add_argument("--nofile", type=int, default=120_000, help="RLIMIT_NOFILE to ask for")
    parser.add_argument("--nominal-hash-rate", type=float, default=0.0)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    info = child_setup("loadgen", args.cpu, args.max_seconds, args.nofile)
    info["loop"] = install_uvloop(not args.no_uvloop)
    asyncio.run(amain(args, info))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of tens of thousands of objects


if __name__ == "__main__":
    raise SystemExit(main())
