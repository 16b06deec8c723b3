"""Same-run baselines for ``benchmarks/bench_pool.py``: servers that do only the unavoidable part of the pool's work.

Run as a child process (``python -m benchmarks.pool_baseline --mode noise|tcp --cpu 0``), driven over stdin/stdout
like ``benchmarks/loadgen.py``:

- ``--mode noise``: an asyncio server built the way ``StratumServer`` is (``asyncio.start_server``, one task per
  connection reading 64 KiB at a time), that completes the same Noise handshake (``NoiseResponder``), answers
  SetupConnection / OpenStandardMiningChannel and sends the first job through ``ServerConnection`` (set-up is not
  measured), and then

  * for the share benchmark: decrypts every frame and, without decoding it, counts SubmitSharesStandard frames
    and sends one encrypted SubmitShares.Success-sized frame per ``ack_batch`` of them (the pool's default is one
    per 16 shares, or after 100 ms): the I/O + AEAD floor of the share path;
  * for the fan-out benchmark (``job`` command): sends a NewMiningJob and a SetNewPrevHash encoded **once** and
    only encrypted per connection, as two writes per connection like the pool does (``writes=1``: one joined
    write per connection, to show what batching the two would save);

- ``--mode tcp``: an asyncio server that accepts and holds plain TCP connections (one reader task each): the
  floor for the memory per idle connection.

Also here: the block-latency baseline (:func:`direct_submit_round_trips`, a script submitting freshly solved
blocks straight to the node) and the fixed jobs every server child uses (:func:`make_jobs`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import time
from pathlib import Path
from typing import Any

from ckbpool.ckb.eaglesong import search
from ckbpool.ckb.target import target_to_compact
from ckbpool.ckb.template import BlockTemplate, MiningJob, job_from_template
from ckbpool.sv2 import ckb_profile
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.events import ConnectionClosed, OpenStandardChannelRequested
from ckbpool.sv2.keys import Keypair
from ckbpool.sv2.messages import encode_message
from ckbpool.sv2.messages_mining import SubmitSharesSuccess
from ckbpool.sv2.noise import MSG1_SIZE, NoiseResponder, NoiseTransport, ResponderCredentials
from ckbpool.sv2.server import ServerConnection

from .loadgen import child_setup, control_loop, cpu_seconds, install_uvloop, rss_bytes

VECTOR = Path(__file__).resolve().parents[1] / "tests" / "data" / "rfc0031_vector.json"
U256_MAX = (1 << 256) - 1
IMPOSSIBLE_COMPACT = target_to_compact(1)  # network target 1: no share is ever a block
MSG_SUBMIT_STANDARD = 0x1A


def make_jobs(count: int, compact_target: int = IMPOSSIBLE_COMPACT) -> list[MiningJob]:
    """``count`` jobs from the RFC 0031 template, each on its own parent (so each announces a new tip)."""
    template = BlockTemplate.from_json(json.loads(VECTOR.read_text())["template"])
    jobs = []
    for i in range(count):
        parent = (i + 1).to_bytes(4, "big") + template.parent_hash[4:]
        jobs.append(job_from_template(dataclasses.replace(template, compact_target=compact_target, parent_hash=parent)))
    return jobs


def test_credentials() -> ResponderCredentials:
    authority, static = Keypair.generate(), Keypair.generate()
    now = int(time.time())
    cert = Certificate.issue(authority, static.xonly_public, now - 60, now + 86_400)
    return ResponderCredentials.from_certificate(static.secret, cert)


class _Session:
    __slots__ = ("channel_id", "conn", "flush", "noise", "pending", "writer")

    def __init__(self, writer: asyncio.StreamWriter, noise: NoiseTransport) -> None:
        self.writer = writer
        self.noise = noise
        self.conn = ServerConnection(success_flags=ckb_profile.success_flags(ckb_profile.PowFunction.EAGLESONG))
        self.channel_id = 0
        self.pending = 0
        self.flush: asyncio.TimerHandle | None = None


class NoiseBaseline:
    """Handshake + decrypt + count + acknowledge; pre-encoded fan-out."""

    def __init__(self, credentials: ResponderCredentials, ack_batch: int, ack_ms: float) -> None:
        self.credentials = credentials
        self.ack_batch = ack_batch
        self.ack_delay = ack_ms / 1000
        self.sessions: set[_Session] = set()
        self.shares = 0
        self.jobs = make_jobs(64, IMPOSSIBLE_COMPACT)
        self.job_index = 0
        self.next_channel = 1
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=1 << 16)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session: _Session | None = None
        try:
            msg1 = await asyncio.wait_for(reader.readexactly(MSG1_SIZE), 30)
            msg2, noise = NoiseResponder(self.credentials).respond(msg1)
            writer.write(msg2)
            session = _Session(writer, noise)
            self.sessions.add(session)
            feed = noise.feed
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                shares = 0
                for frame in feed(data):
                    if frame[2] == MSG_SUBMIT_STANDARD:
                        shares += 1
                    else:
                        self._setup_frame(session, frame)
                if shares:
                    self._count(session, shares)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            if session is not None:
                self.sessions.discard(session)
                if session.flush is not None:
                    session.flush.cancel()
            writer.close()

    def _send(self, session: _Session, frame: bytes) -> None:
        session.writer.write(session.noise.encrypt_frame(frame))

    def _setup_frame(self, session: _Session, frame: bytes) -> None:
        conn = session.conn
        for event in conn.receive_frame(frame):
            if event.reply:
                self._send(session, event.reply)
            if isinstance(event, OpenStandardChannelRequested):
                channel_id = self.next_channel
                self.next_channel += 1
                prefix = channel_id.to_bytes(8, "big")
                request_id = event.request.request_id
                self._send(session, conn.accept_standard_channel(request_id, channel_id, U256_MAX, prefix))
                session.channel_id = channel_id
                job = self.jobs[self.job_index % len(self.jobs)]
                self._send(session, conn.send(ckb_profile.standard_job(channel_id, self.job_index, job, future=True)))
                self._send(session, conn.send(ckb_profile.set_new_prev_hash(channel_id, self.job_index, job)))
            elif isinstance(event, ConnectionClosed):
                session.writer.close()

    def _count(self, session: _Session, shares: int) -> None:
        self.shares += shares
        session.pending += shares
        while session.pending >= self.ack_batch:
            session.pending -= self.ack_batch
            self._ack(session, self.ack_batch)
        if session.pending and session.flush is None:
            session.flush = asyncio.get_running_loop().call_later(self.ack_delay, self._flush, session)

    def _flush(self, session: _Session) -> None:
        session.flush = None
        if session.pending:
            self._ack(session, session.pending)
            session.pending = 0

    def _ack(self, session: _Session, count: int) -> None:
        # a SubmitShares.Success-sized frame (20-byte payload), encoded per batch as the pool does
        self._send(session, encode_message(SubmitSharesSuccess(session.channel_id, 0, count, count)))

    def fan_out(self, writes: int) -> dict[str, float]:
        """The fan-out floor: the same two messages for everyone, encoded once, encrypted per connection."""
        self.job_index += 1
        job = self.jobs[self.job_index % len(self.jobs)]
        c0 = time.process_time()
        t0 = time.monotonic()
        job_frame = encode_message(ckb_profile.standard_job(1, self.job_index, job, future=True))
        prev_frame = encode_message(ckb_profile.set_new_prev_hash(1, self.job_index, job))
        if writes == 1:
            for session in list(self.sessions):
                encrypt = session.noise.encrypt_frame
                session.writer.write(encrypt(job_frame) + encrypt(prev_frame))
        else:
            for session in list(self.sessions):
                encrypt = session.noise.encrypt_frame
                session.writer.write(encrypt(job_frame))
                session.writer.write(encrypt(prev_frame))
        t1 = time.monotonic()
        return {"t0": t0, "t1": t1, "cpu": time.process_time() - c0}


class TcpBaseline:
    """Holds plain TCP connections, one reader task each (the shape of the pool's accept loop)."""

    def __init__(self) -> None:
        self.sessions: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=1 << 16)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions.add(writer)
        try:
            while await reader.read(1 << 16):
                pass
        except ConnectionError:
            pass
        finally:
            self.sessions.discard(writer)
            writer.close()


async def amain(args: argparse.Namespace, info: dict[str, Any]) -> None:
    server: NoiseBaseline | TcpBaseline
    if args.mode == "noise":
        server = NoiseBaseline(test_credentials(), args.ack_batch, args.ack_ms)
    else:
        server = TcpBaseline()
    info["port"] = await server.start()
    gc.collect()
    info["rss"] = rss_bytes()

    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "hello":
            return dict(info)
        if cmd == "stats":
            shares = server.shares if isinstance(server, NoiseBaseline) else 0
            return {
                "sessions": len(server.sessions),
                "channels": len(server.sessions),
                "shares": shares,
                "accepted": shares,
                "cpu": cpu_seconds(),
                "rss": rss_bytes(),
                "t": time.monotonic(),
            }
        if cmd == "rss":
            gc.collect()
            return {"rss": rss_bytes(), "sessions": len(server.sessions)}
        if cmd == "job":
            if not isinstance(server, NoiseBaseline):
                raise ValueError("fan-out needs --mode noise")
            return server.fan_out(int(req.get("writes", 2)))
        raise ValueError(f"unknown command {cmd!r}")

    try:
        await control_loop(handle)
    finally:
        if server.server is not None:
            server.server.close()


# --- block latency baseline -----------------------------------------------------------------------------


async def direct_submit_round_trips(rpc_url: str, blocks: int, timeout: float) -> dict[str, Any]:
    """Solve ``blocks`` fresh blocks from the node's templates and time each ``submit_block`` round trip alone,
    through the same RPC client the pool uses (``CkbRpcClient``)."""
    from ckbpool.ckb.rpc import CkbRpcClient

    samples: list[float] = []
    rejected = 0
    deadline = time.monotonic() + timeout
    async with CkbRpcClient(rpc_url, retries=0) as rpc:
        while len(samples) + rejected < blocks and time.monotonic() < deadline:
            job = job_from_template(await rpc.get_block_template())
            nonce = search(job.pow_hash, 0, 1 << 30, job.target)
            assert nonce is not None
            block = job.block(nonce)
            start = time.perf_counter()
            try:
                await rpc.submit_block(job.work_id, block)
            except Exception:  # a stale template: count it, keep going
                rejected += 1
                continue
            samples.append((time.perf_counter() - start) * 1000)
    return {"round_trip_ms": samples, "rejected": rejected}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mode", choices=["noise", "tcp"], required=True)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--nofile", type=int, default=120_000)
    parser.add_argument("--ack-batch", type=int, default=16)
    parser.add_argument("--ack-ms", type=float, default=100)
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args()
    info = child_setup(f"baseline-{args.mode}", args.cpu, args.max_seconds, args.nofile)
    info["loop"] = install_uvloop(not args.no_uvloop)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(amain(args, info))
    import os
    import sys

    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
