"""Fan-out of a new tip, per channel and per component (issue 19), in one process and one run.

Where the CPU of a new tip goes, each figure measured here on the same channels in the same run (process CPU time,
the median of ``rounds`` rounds, divided by the channels):

- ``new_job`` with a null transport: the pool's own work per channel (the state machine's checks, the channel id
  patched into frames encoded once, the four ChaCha20-Poly1305 calls a job + SetNewPrevHash need -- header and
  payload of each frame are separate AEAD messages in SV2's Noise framing -- and the write call into the
  transport), everything but the kernel;
- the AEAD calls alone (four per channel, the same sizes, per-connection keys): the crypto floor;
- the write floor: one ``send`` of the same number of bytes to each of ``sockets`` loopback TCP connections from
  Python, nothing else (the receiving ends are not read during the round). On loopback the sender's syscall also
  runs the receiver's TCP input, so this is more than a remote miner would cost;
- ``new_job`` writing to those same sockets: all of it together.

Run: ``python -m benchmarks.bench_fanout [--channels 5000] [--rounds 15]`` (5,000: one worker's half of 10k).
``--e2e`` then runs bench_pool's fan-out end to end with 2 stratum worker processes at 100 and 10k channels:
the pool's figure (kernel receive stamps, the load generator idle during the round) and the same with the
load generator stamping in its event loop (``stamps="user"``), with the group's CPU per channel.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import socket
import statistics
import sys
import time
from typing import Any

from ckbpool.pool.config import PoolConfig
from ckbpool.pool.metrics import PoolMetrics
from ckbpool.pool.stratum import MinerSession, StratumServer, _JobFrames
from ckbpool.sv2.messages import encode_message
from ckbpool.sv2.messages_common import PROTOCOL_MINING, SetupConnection
from ckbpool.sv2.messages_mining import OpenStandardMiningChannel
from ckbpool.sv2.noise_transport import NoiseEncryptor, NoiseTransport

from .pool_baseline import make_jobs

U256_MAX = (1 << 256) - 1


class NullTransport:
    """Enough of an asyncio transport for MinerSession; counts what it is given, writes nothing."""

    __slots__ = ("bytes", "writes")

    def __init__(self) -> None:
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.writes += 1

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


class SocketTransport(NullTransport):
    """A non-blocking loopback socket written straight away, as uvloop does when nothing is buffered."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The socket too, as uvloop's transports give it: the fan-out writes to its descriptor directly."""
        return self.sock if name == "socket" else super().get_extra_info(name, default)

    def write(self, data: bytes) -> None:
        sent = self.sock.send(data)
        if sent != len(data):
            raise RuntimeError("loopback socket buffer full: drain between rounds")
        self.bytes += sent
        self.writes += 1


def _socket_pairs(count: int) -> tuple[socket.socket, list[tuple[socket.socket, socket.socket]]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    pairs = []
    for _ in range(count):
        client = socket.socket()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(listener.getsockname())
        server, _addr = listener.accept()
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.setblocking(False)
        client.setblocking(False)
        pairs.append((server, client))
    return listener, pairs


def _drain(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    for _server, client in pairs:
        try:
            while client.recv(1 << 16):
                pass
        except BlockingIOError:
            pass


def _server(channels: int, transports: list[NullTransport]) -> tuple[StratumServer, list[MinerSession]]:
    """A StratumServer with ``channels`` sessions, one standard channel each, opened through the real state
    machine (plaintext), then switched to Noise (random keys: the ciphertext is never read here)."""
    config = PoolConfig.model_validate({"stratum": {"noise": False}})
    server = StratumServer(config, PoolMetrics(), None)
    jobs = make_jobs(1)
    server.new_job(1, jobs[0])
    sessions = []
    setup = encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "127.0.0.1", 0, "bench", "", "", ""))
    for i, transport in enumerate(transports[:channels]):
        session = MinerSession(server, transport, None)  # type: ignore[arg-type]
        server.sessions.add(session)
        session.feed(setup)
        session.feed(encode_message(OpenStandardMiningChannel(1, f"bench.w{i}", 1e12, U256_MAX)))
        if len(session.channels) != 1:
            raise RuntimeError("the channel did not open")
        session.noise = NoiseTransport.from_keys(os.urandom(32), os.urandom(32))
        sessions.append(session)
    return server, sessions


def _median_cpu_per(fn: Any, rounds: int, per: int, between: Any = None) -> float:
    """Median over ``rounds`` of the process CPU time of ``fn()``, in µs per ``per``."""
    samples = []
    for _ in range(rounds):
        if between is not None:
            between()
        c0 = time.process_time()
        fn()
        samples.append((time.process_time() - c0) / per * 1e6)
    return statistics.median(samples)


def components(channels: int = 5_000, rounds: int = 15) -> dict[str, Any]:
    """The per-channel figures of the module docstring, same channels, same run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * channels + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * channels + 200), hard))
    jobs = make_jobs(rounds * 2 + 2)
    next_job = iter(range(2, len(jobs) + 2))

    # 1. the pool's own work: new_job with a null transport
    nulls = [NullTransport() for _ in range(channels)]
    server, sessions = _server(channels, nulls)

    def announce() -> None:
        job_id = next(next_job)
        server.new_job(job_id, jobs[job_id - 2])

    w0 = sum(t.writes for t in nulls)
    b0 = sum(t.bytes for t in nulls)
    pool_us = _median_cpu_per(announce, rounds, channels)
    writes = (sum(t.writes for t in nulls) - w0) / (rounds * channels)
    wire = (sum(t.bytes for t in nulls) - b0) / (rounds * channels)

    # 2. the four AEAD calls alone (sizes of the frames just sent), per-connection keys
    frames = _JobFrames(server.jobs.current, new_height=True)  # type: ignore[arg-type]
    std, ph = frames.job(sessions[0].channels[next(iter(sessions[0].channels))].info.kind), frames.prev_hash()
    encryptors = [NoiseEncryptor(os.urandom(32)) for _ in range(channels)]

    def aead() -> None:
        for e in encryptors:
            e.seal_job(-1, 1, std.header, std.tail, ph.header, ph.tail)

    aead_us = _median_cpu_per(aead, rounds, channels)

    # 3. the write floor and 4. new_job into the same sockets
    for session in sessions:
        session.close()
    server.sessions.clear()
    gc.collect()
    listener, pairs = _socket_pairs(channels)
    try:
        payload = os.urandom(round(wire))
        socks = [s for s, _c in pairs]

        def send_all() -> None:
            for s in socks:
                s.send(payload)

        write_us = _median_cpu_per(send_all, rounds, channels, lambda: _drain(pairs))
        transports = [SocketTransport(s) for s in socks]
        server, sessions = _server(channels, transports)  # type: ignore[arg-type]
        _drain(pairs)
        full_us = _median_cpu_per(announce, rounds, channels, lambda: _drain(pairs))
        for session in sessions:
            session.closed = True  # the sockets are closed below, not through the session
    finally:
        for s, c in pairs:
            s.close()
            c.close()
        listener.close()
    return {
        "channels": channels,
        "rounds": rounds,
        "writes_per_channel": writes,
        "wire_bytes_per_channel": wire,
        "new_job_null_us": pool_us,
        "aead4_us": aead_us,
        "python_us": pool_us - aead_us,
        "write_floor_us": write_us,
        "new_job_sockets_us": full_us,
        "floor_us": aead_us + write_us,
    }


def e2e(rounds_10k: int = 10) -> dict[str, Any]:
    """bench_pool's fan-out with 2 stratum workers at 100 and 10k channels, kernel stamps then user stamps."""
    from . import bench_pool

    s = bench_pool.Settings()
    s.fanout_rounds = {100: 30, 10_000: rounds_10k}
    cap = bench_pool.connection_cap()
    sizes = sorted({min(n, cap) for n in (100, 10_000)})
    s.fanout_sizes = tuple(sizes)
    try:
        return bench_pool.connections_run("procs-2", s, 36, sizes, True)
    finally:
        bench_pool._kill_children()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--channels", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--e2e", action="store_true", help="also the end-to-end fan-out with 2 workers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"load_average_start": os.getloadavg()[0]}
    out["components"] = c = components(args.channels, args.rounds)
    if not args.json:
        print(
            f"{c['channels']:,} channels, median of {c['rounds']} rounds, µs CPU per channel: new_job (null "
            f"transport) {c['new_job_null_us']:.2f} = AEAD x4 {c['aead4_us']:.2f} + the rest "
            f"{c['python_us']:.2f}; write floor {c['write_floor_us']:.2f}; new_job into sockets "
            f"{c['new_job_sockets_us']:.2f} (floor AEAD + write {c['floor_us']:.2f}); "
            f"{c['writes_per_channel']:.2f} writes and {c['wire_bytes_per_channel']:.0f} bytes per channel; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    if args.e2e:
        out["e2e"] = e2e()
        if not args.json:
            for n, entry in out["e2e"]["sizes"].items():
                for key in ("fanout", "fanout_user"):
                    f = entry.get(key)
                    if f:
                        print(
                            f"{key} @ {int(n):,}: p50 {f['p50']:.1f} p99 {f['p99']:.1f} ms, last median "
                            f"{f['last_p50']:.1f} max {f['last_max']:.1f}, CPU/ch {f.get('cpu_us_per_channel', 0):.1f}"
                            f" µs, missing {f['missing']}",
                            flush=True,
                        )
    out["load_average_end"] = os.getloadavg()[0]
    if args.json:
        json.dump(out, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
