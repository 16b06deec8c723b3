"""CPU per share of the stratum share path in one process, without sockets (issue 19).

What it runs: a real :class:`~ckbpool.pool.stratum.StratumServer` (the bench pool config, test credentials,
fixed jobs) with eight Noise connections, each a :class:`~ckbpool.pool.stratum.MinerProtocol` on a transport that
only collects what is written. Every connection opens a standard channel at the easiest target, then 20k
SubmitSharesStandard frames per connection, encrypted beforehand, are fed to ``data_received`` 64 frames per read,
round-robin over the connections, with the event loop run between rounds (the Successes go out when the bus took
the shares). Timed: decrypt -> decode -> checks (Eaglesong included) -> Success -> the bus hand-over, as
``time.process_time`` over the shares fed.

Two sinks, as the server is wired in production:

- ``one``: ``on_share`` per share that only counts it (the in-process bus' cost left out);
- ``many``: ``on_shares`` per queued batch that encodes it with the IPC share codec (what a stratum worker's link
  to the parent costs on the worker's side, ``ckbpool.bus.ipc.encode_shares``);
- ``inproc``: ``on_shares`` per queued batch onto an in-process bus (``publish_many``) plus the per-worker figures,
  as the embedded Pool wires it, the batch then taken off the bus' queue (accounting's write left out).

The process runs with the GC thresholds ``Pool.start`` sets (``ckbpool.pool.service.tune_gc``) unless
``--default-gc``.

Each figure is the minimum of ``--repeat`` runs, each in a fresh server (the box is shared: the minimum is the
least disturbed run). ``--profile`` prints cProfile's top functions of one more run instead of timing it.

    python -m benchmarks.bench_pool_share_path [--mode one|many|inproc|all] [--repeat 5] [--shares 20000]
        [--profile] [--default-gc]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import time
from typing import Any

from benchmarks.bench_pool import _share_bench_config
from benchmarks.pool_baseline import make_jobs, test_credentials
from ckbpool.bus.base import Topic
from ckbpool.bus.events import Share
from ckbpool.bus.inproc import InProcBus
from ckbpool.bus.ipc import encode_shares
from ckbpool.pool.metrics import PoolMetrics
from ckbpool.pool.service import tune_gc
from ckbpool.pool.stratum import MinerProtocol, StratumServer
from ckbpool.pool.workers import WorkerBook
from ckbpool.sv2.messages import decode_frame_bytes, encode_message
from ckbpool.sv2.messages_common import PROTOCOL_MINING, SetupConnection
from ckbpool.sv2.messages_mining import (
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SubmitSharesStandard,
)
from ckbpool.sv2.noise import NoiseInitiator

CONNECTIONS = 8
FRAMES_PER_READ = 64


class _Transport:
    """Collects what the server writes; never pushes back, never closes."""

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


async def run_once(mode: str, shares: int) -> tuple[float, int]:
    """(CPU seconds, shares handed over) for ``shares`` shares per connection through a fresh server."""
    handed = [0]

    async def on_shares(batch: list[Share]) -> None:
        encode_shares(batch)
        handed[0] += len(batch)

    async def on_share(share: Share) -> None:
        handed[0] += 1

    bus = InProcBus()
    subscription = bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
    book = WorkerBook()

    async def on_shares_inproc(batch: list[Share]) -> None:  # Pool._publish_shares on the in-process bus
        await bus.publish_many(Topic.SHARES, batch)
        book.observe_many(batch)
        handed[0] += len(batch)
        await subscription.next_batch(len(batch), 0)  # taken off the queue, as accounting would

    sink: dict[str, Any] = (
        {"on_shares": on_shares}
        if mode == "many"
        else {"on_shares": on_shares_inproc}
        if mode == "inproc"
        else {"on_share": on_share}
    )
    server = StratumServer(_share_bench_config(), PoolMetrics(), test_credentials(), **sink)
    server.new_job(1, make_jobs(1)[0])
    reads: list[tuple[MinerProtocol, _Transport, list[bytes]]] = []
    for i in range(CONNECTIONS):
        proto, transport = MinerProtocol(server), _Transport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        initiator = NoiseInitiator(None)
        proto.data_received(initiator.start())
        noise = initiator.complete(transport.out[0])
        transport.out.clear()
        setup = SetupConnection(PROTOCOL_MINING, 2, 2, 0, "h", 0, "v", "", "", "")
        proto.data_received(noise.encrypt_frame(encode_message(setup)))
        opened = OpenStandardMiningChannel(1, f"bench.w{i}", 1e-9, (1 << 256) - 1)
        proto.data_received(noise.encrypt_frame(encode_message(opened)))
        channel_id = None
        for data in transport.out:
            for frame in noise.feed(data):
                message = decode_frame_bytes(frame)
                if isinstance(message, OpenStandardMiningChannelSuccess):
                    channel_id = message.channel_id
        if channel_id is None:
            raise RuntimeError(f"connection {i}: no OpenStandardMiningChannel.Success")
        frames = [
            noise.encrypt_frame(encode_message(SubmitSharesStandard(channel_id, n, 1, n, 0, 0)))
            for n in range(1, shares + 1)
        ]
        chunks = [b"".join(frames[k : k + FRAMES_PER_READ]) for k in range(0, shares, FRAMES_PER_READ)]
        reads.append((proto, transport, chunks))
    gc.collect()
    start = time.process_time()
    for k in range(len(reads[0][2])):
        for proto, transport, chunks in reads:
            proto.data_received(chunks[k])
            transport.out.clear()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await server.flush_shares(10)
    cpu = time.process_time() - start
    expected = shares * CONNECTIONS
    if handed[0] != expected:
        raise RuntimeError(f"{mode}: {handed[0]} shares handed over, {expected} fed")
    return cpu, handed[0]


def measure(mode: str, shares: int, repeat: int) -> dict[str, Any]:
    """Minimum and every run's CPU microseconds per share."""
    runs = []
    for _ in range(repeat):
        cpu, count = asyncio.run(run_once(mode, shares))
        runs.append(1e6 * cpu / count)
    return {"mode": mode, "us_per_share_min": min(runs), "us_per_share_runs": [round(r, 2) for r in runs]}


def profile(mode: str, shares: int, top: int = 30) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    asyncio.run(run_once(mode, shares))
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mode", choices=("one", "many", "inproc", "all"), default="all")
    parser.add_argument("--default-gc", action="store_true", help="keep CPython's GC thresholds (no tune_gc)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shares", type=int, default=20_000, help="shares per connection (8 connections)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    modes = ("one", "many", "inproc") if args.mode == "all" else (args.mode,)
    if not args.default_gc:
        tune_gc()  # as Pool.start does
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for mode in modes:
        if args.profile:
            print(profile(mode, args.shares))
            continue
        result = measure(mode, args.shares, args.repeat)
        print(f"{mode}: {result['us_per_share_min']:.2f} us CPU per share (min; runs {result['us_per_share_runs']})")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
