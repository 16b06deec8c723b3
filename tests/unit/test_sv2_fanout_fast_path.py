"""The new-tip fan-out's per-channel step (issue 19): ``NoiseEncryptor.seal_job`` must give the wire bytes and
nonces of ``encrypt_frames`` on the two frames with the channel id patched in, whatever their size;
``ServerConnection.check_new_tip`` the checks and state of ``send_new_tip``; and ``StratumServer.new_job`` over
Noise must still give every channel, standard and extended, its own job and SetNewPrevHash, decryptable by that
miner, in one write per connection."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
from pathlib import Path
from typing import Any

import pytest

from ckbpool.ckb.template import BlockTemplate, MiningJob, job_from_template
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.metrics import PoolMetrics
from ckbpool.pool.stratum import MinerSession, StratumServer
from ckbpool.sv2.errors import LocalProtocolError
from ckbpool.sv2.framing import Frame, FrameDecoder
from ckbpool.sv2.messages import decode_frame_bytes, decode_message, encode_message
from ckbpool.sv2.messages_common import PROTOCOL_MINING, SetupConnection
from ckbpool.sv2.messages_mining import (
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetNewPrevHash,
)
from ckbpool.sv2.noise_transport import NoiseDecryptor, NoiseEncryptor, NoiseTransport
from ckbpool.sv2.server import PreparedJobMessage, ServerConnection

pytestmark = pytest.mark.unit

U256_MAX = (1 << 256) - 1
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
KEY = bytes(range(32))


def _frame(msg_type: int, payload: bytes) -> tuple[bytes, bytes]:
    header = bytes([0x00, 0x80, msg_type]) + len(payload).to_bytes(3, "little")
    return header, payload


def _job_frames(cid: int, tail1: bytes, tail2: bytes) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """Two frames as the fan-out has them (header, tail after the channel id) and as a miner gets them (whole)."""
    (h1, p1), (h2, p2) = (
        _frame(0x15, cid.to_bytes(4, "little") + tail1),
        _frame(0x20, cid.to_bytes(4, "little") + tail2),
    )
    return (h1, h1 + p1), (h2, h2 + p2)


# payloads (channel id + tail) of 4 and 4, 90 and 36, one chunk exactly (65519), and beyond one chunk (70,000)
@pytest.mark.parametrize("tails", [(0, 0), (86, 32), (0, 65515), (65515, 196), (69_996, 0)])
def test_a_new_tip_is_sealed_as_encrypt_frames_does(tails: tuple[int, int]) -> None:
    t1, t2 = os.urandom(tails[0]), os.urandom(tails[1])
    (h1, f1), (h2, f2) = _job_frames(9, t1, t2)
    sealed, reference = NoiseEncryptor(KEY), NoiseEncryptor(KEY)
    for _ in range(3):  # the nonces move on alike
        assert sealed.seal_job(-1, 9, h1, t1, h2, t2) == reference.encrypt_frames([f1, f2])
        assert sealed.n == reference.n
    decryptor = NoiseDecryptor(KEY)
    wire = NoiseEncryptor(KEY).seal_job(-1, 9, h1, t1, h2, t2)
    assert wire is not None and decryptor.feed(wire) == [f1, f2]


def _connected() -> tuple[ServerConnection, int, int]:
    """A connection with standard channel 7 and extended channel 8 open."""
    conn = ServerConnection()
    conn.receive_frame(encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "h", 0, "v", "", "", "")))
    conn.receive_frame(encode_message(OpenStandardMiningChannel(1, "alice.rig", 1e6, U256_MAX)))
    conn.accept_standard_channel(1, 7, 1 << 250, bytes(8))
    conn.receive_frame(encode_message(OpenExtendedMiningChannel(2, "alice.rig", 1e6, U256_MAX, 4)))
    conn.accept_extended_channel(2, 8, 1 << 250, bytes(4), 4)
    return conn, 7, 8


def _state(conn: ServerConnection) -> Any:
    return ({k: set(v) for k, v in conn._future_jobs.items()}, sorted(conn.channels))


def test_check_new_tip_checks_and_records_what_send_new_tip_does() -> None:
    job = PreparedJobMessage.of(NewMiningJob(0, 5, None, 2, b"\x11" * 32))
    ext_job = PreparedJobMessage.of(NewExtendedMiningJob(0, 5, None, 2, True, (), b"a", b"b"))
    prev_hash = PreparedJobMessage.of(SetNewPrevHash(0, 5, b"\x22" * 32, 1_700_000_000, 0x1D00FFFF))
    assert (job.header, job.tail) == (job.frame[:6], job.frame[10:])
    checked, sent = _connected()[0], _connected()[0]
    checked._future_jobs = {7: {1}, 8: {2}}
    sent._future_jobs = {7: {1}, 8: {2}}
    assert checked.check_new_tip(job, prev_hash, 7)
    first, second = sent.send_new_tip(job, prev_hash, 7)
    assert _state(checked) == _state(sent)
    cid = (7).to_bytes(4, "little")
    assert (first, second) == (job.header + cid + job.tail, prev_hash.header + cid + prev_hash.tail)
    # refusals are the same: wrong kind, unknown channel
    for conn in (checked, sent):
        with pytest.raises(LocalProtocolError):
            conn.check_new_tip(ext_job, prev_hash, 7) if conn is checked else conn.send_new_tip(ext_job, prev_hash, 7)
        with pytest.raises(LocalProtocolError):
            conn.check_new_tip(job, prev_hash, 99) if conn is checked else conn.send_new_tip(job, prev_hash, 99)
    # not a future job + its SetNewPrevHash: False and nothing touched (send_new_tip then takes two sends)
    active = PreparedJobMessage.of(NewMiningJob(0, 6, 1_700_000_000, 2, b"\x11" * 32))
    before = _state(checked)
    assert not checked.check_new_tip(active, prev_hash, 7)
    assert _state(checked) == before


class _Capture:
    """Enough of an asyncio transport for MinerSession: keeps every write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def _noise_sessions(server: StratumServer, count: int) -> list[tuple[MinerSession, _Capture, NoiseDecryptor, Any]]:
    """Sessions opened in plaintext (one standard or extended channel each), then switched to Noise with a key
    the test's decryptor shares: from then on every write is what that miner would decrypt."""
    out = []
    setup = encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "127.0.0.1", 0, "test", "", "", ""))
    for i in range(count):
        capture = _Capture()
        session = MinerSession(server, capture, None)  # type: ignore[arg-type]
        server.sessions.add(session)
        session.feed(setup)
        if i % 2:
            session.feed(encode_message(OpenExtendedMiningChannel(1, f"test.w{i}", 1e12, U256_MAX, 4)))
        else:
            session.feed(encode_message(OpenStandardMiningChannel(1, f"test.w{i}", 1e12, U256_MAX)))
        (opened,) = [m for m in map(decode_message, _frames(capture.writes)) if isinstance(m, _OPENED)]
        key = os.urandom(32)
        session.noise = NoiseTransport.from_keys(key, os.urandom(32))
        capture.writes.clear()
        out.append((session, capture, NoiseDecryptor(key), opened))
    return out


_OPENED = (OpenStandardMiningChannelSuccess, OpenExtendedMiningChannelSuccess)


def _frames(writes: list[bytes]) -> list[Frame]:
    return FrameDecoder(1 << 20).feed(b"".join(writes))


def _jobs(count: int) -> list[MiningJob]:
    """``count`` jobs from the RFC 0031 template, each on its own parent: each one a new tip."""
    template = BlockTemplate.from_json(json.loads((DATA_DIR / "rfc0031_vector.json").read_text())["template"])
    return [
        job_from_template(
            dataclasses.replace(template, parent_hash=(i + 1).to_bytes(4, "big") + template.parent_hash[4:])
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("gc_enabled", [True, False])
def test_a_new_tip_reaches_every_noise_channel_as_its_own_job_in_one_write(gc_enabled: bool) -> None:
    jobs = _jobs(3)
    server = StratumServer(PoolConfig.model_validate({"stratum": {"noise": False}}), PoolMetrics(), None)
    server.new_job(1, jobs[0])
    sessions = _noise_sessions(server, 6)
    was = gc.isenabled()
    try:
        gc.enable() if gc_enabled else gc.disable()
        for job_id in (2, 3):
            server.new_job(job_id, jobs[job_id - 1])
            assert gc.isenabled() == gc_enabled  # the fan-out's pause of the collector is undone
            for session, capture, decryptor, opened in sessions:
                assert len(capture.writes) == 1  # job + SetNewPrevHash in one write
                job, prev_hash = map(decode_frame_bytes, decryptor.feed(capture.writes.pop()))
                kind = NewExtendedMiningJob if isinstance(opened, OpenExtendedMiningChannelSuccess) else NewMiningJob
                assert isinstance(job, kind) and isinstance(prev_hash, SetNewPrevHash)
                assert job.channel_id == prev_hash.channel_id == opened.channel_id
                assert job.job_id == prev_hash.job_id == job_id and job.min_ntime is None
                assert prev_hash.prev_hash == jobs[job_id - 1].parent_hash
                assert session.conn._future_jobs == {}
    finally:
        gc.enable() if was else gc.disable()


class _CountingTransport:
    """A real event loop's transport, with its ``write`` calls counted (everything else passed through)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_new_tip_goes_straight_to_the_socket_and_after_anything_the_transport_holds(loop_kind: str) -> None:
    """The fan-out writes a job to the socket's descriptor itself only while the transport holds nothing: once the
    socket is full and the transport queues the rest, every later job goes through the transport, after it -- the
    miner decrypts every frame in order (one byte out of order would break the Noise nonces)."""
    import asyncio
    import socket

    jobs = _jobs(400)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        miner = socket.socket()
        miner.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small buffers: the socket fills quickly
        miner.connect(listener.getsockname())
        ours, _ = listener.accept()
        listener.close()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        miner.setblocking(False)
        transport, _protocol = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        try:
            server = StratumServer(PoolConfig.model_validate({"stratum": {"noise": False}}), PoolMetrics(), None)
            server.new_job(1, jobs[0])
            counting = _CountingTransport(transport)
            session = MinerSession(server, counting, None)  # type: ignore[arg-type]
            assert session.fd == ours.fileno()
            server.sessions.add(session)
            session.feed(encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "h", 0, "test", "", "", "")))
            session.feed(encode_message(OpenStandardMiningChannel(1, "test.w0", 1e12, U256_MAX)))
            plain = FrameDecoder(1 << 20)
            received: list[Frame] = []
            while len(received) < 4:  # SetupConnection.Success, OpenChannel.Success, its job and SetNewPrevHash
                await asyncio.sleep(0.001)
                with contextlib.suppress(BlockingIOError):
                    received += plain.feed(miner.recv(1 << 16))
            key = os.urandom(32)
            session.noise = NoiseTransport.from_keys(key, os.urandom(32))
            counting.writes = 0
            server.new_job(2, jobs[1])
            assert counting.writes == 0  # written to the descriptor, not through the transport
            job_id = 2
            while not transport.get_write_buffer_size() and job_id < 300:  # until the transport queues
                job_id += 1
                server.new_job(job_id, jobs[job_id - 1])
            assert transport.get_write_buffer_size() > 0
            # the miner reads some (the loop does not run: the transport keeps its bytes), so the socket has room
            # again: a job written to it now would overtake the transport's bytes
            decryptor = NoiseDecryptor(key)
            frames: list[bytes] = decryptor.feed(miner.recv(1 << 16))
            queued_at = counting.writes
            for _ in range(20):
                job_id += 1
                server.new_job(job_id, jobs[job_id - 1])
            assert counting.writes == queued_at + 20  # the transport holds bytes: every job goes after them
            deadline = loop.time() + 10
            while len(frames) < 2 * (job_id - 1) and loop.time() < deadline:
                await asyncio.sleep(0.001)  # the loop flushes the transport as the miner reads
                with contextlib.suppress(BlockingIOError):
                    frames += decryptor.feed(miner.recv(1 << 16))
            messages = [decode_frame_bytes(f) for f in frames]
            assert [(type(m), m.job_id) for m in messages] == [
                (kind, j) for j in range(2, job_id + 1) for kind in (NewMiningJob, SetNewPrevHash)
            ]
        finally:
            transport.close()
            miner.close()

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
    else:
        asyncio.run(run())
