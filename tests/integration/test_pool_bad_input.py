"""Bad input costs only the connection that sent it.

A real dev ckb node and the real Pool (as `ckbpool pool run` starts it), one real CPU miner (Sv2Miner) mining on
its own connection the whole time, and hostile raw TCP clients on 127.0.0.1 sending garbage instead of Noise,
garbage after the handshake, a truncated frame, a frame header announcing 16 MiB, a handshake or a
SetupConnection dribbled out byte by byte (slowloris), and a share flood from an honest-looking channel.

After each attack: the server closed the hostile connection itself (our read sees EOF in bounded time), the
close is counted in ``ckbpool_connection_errors_total`` under its reason, a new connection still gets through
the handshake and SetupConnection, the honest miner's connection is still up and its accepted-share count keeps
growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)

from ckbpool.ckb.node import CkbNode
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.service import Pool
from ckbpool.pool.stratum import server_stats
from ckbpool.sv2.client import ClientConnection
from ckbpool.sv2.events import ChannelOpened, ConnectionSetUp, Event, MessageReceived
from ckbpool.sv2.messages import (
    OpenStandardMiningChannel,
    SetNewPrevHash,
    SetupConnection,
    SubmitSharesStandard,
    encode_message,
)
from ckbpool.sv2.noise import MSG1_SIZE, MSG2_SIZE, NoiseInitiator, NoiseTransport

pytestmark = pytest.mark.integration

HANDSHAKE_TIMEOUT_S = 1.0
SETUP_TIMEOUT_S = 1.0
MAX_MESSAGES_PER_SECOND = 200
MESSAGE_BURST = 400
CLOSE_WITHIN_S = 3.0  # generous bound for "the server closed it" on a loaded 2-core machine


@dataclass
class Arena:
    pool: Pool
    authority: str
    address: tuple[str, int]
    miner: Sv2Miner
    miner_task: asyncio.Task[object]

    def errors(self, reason: str) -> float:
        value = self.pool.metrics.registry.get_sample_value("ckbpool_connection_errors_total", {"reason": reason})
        return value or 0.0


async def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def arena(pool_node: CkbNode, tmp_path: Path) -> AsyncIterator[Arena]:  # noqa: F811
    credentials, authority = pool_keys()
    config = pool_config(
        pool_node,
        tmp_path,
        stratum={
            "listen_host": "127.0.0.1",
            "listen_port": 0,
            "handshake_timeout_s": HANDSHAKE_TIMEOUT_S,
            "setup_timeout_s": SETUP_TIMEOUT_S,
            "max_messages_per_second": MAX_MESSAGES_PER_SECOND,
            "message_burst": MESSAGE_BURST,
        },
    )
    pool = Pool(config, credentials=credentials)
    await pool.start()
    try:
        assert pool.server is not None
        await _wait_for(lambda: pool.watcher is not None and pool.watcher.current is not None, 10, "a first job")
        host, port = pool.server.address
        miner = Sv2Miner(host, port, "honest.rig1", authority_public_key=authority)
        task: asyncio.Task[object] = asyncio.create_task(miner.run(duration=120))
        try:
            await _wait_for(lambda: miner.stats.accepted > 0 or task.done(), 20, "the honest miner's first share")
            assert not task.done(), task
            yield Arena(pool, authority, (host, port), miner, task)
        finally:
            miner.stop()
            await asyncio.wait_for(task, 10)  # re-raises if the honest miner's connection failed
    finally:
        await pool.close()


# --- raw hostile clients -----------------------------------------------------------------------------------------


async def connect(arena: Arena) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(*arena.address), 5)


async def handshake(arena: Arena, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> NoiseTransport:
    initiator = NoiseInitiator(arena.authority)
    writer.write(initiator.start())
    return initiator.complete(await asyncio.wait_for(reader.readexactly(MSG2_SIZE), 5))


def setup_frame() -> bytes:
    return encode_message(SetupConnection(0, 2, 2, 0, "127.0.0.1", 0, "hostile", "", "", ""))


async def read_events(
    reader: asyncio.StreamReader, noise: NoiseTransport, conn: ClientConnection, until: Callable[[Event], bool]
) -> list[Event]:
    """Read and decode until an event satisfies ``until`` (bounded: 5 s, 1000 reads)."""
    seen: list[Event] = []
    deadline = time.monotonic() + 5
    for _ in range(1000):
        data = await asyncio.wait_for(reader.read(1 << 16), max(0.01, deadline - time.monotonic()))
        assert data, f"the pool closed an honest-looking connection; events so far: {seen}"
        for frame in noise.feed(data):
            for event in conn.receive_frame(frame):
                seen.append(event)
                if until(event):
                    return seen
    raise AssertionError(f"never saw the awaited event; got {seen}")


async def set_up(arena: Arena) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, NoiseTransport, ClientConnection]:
    reader, writer = await connect(arena)
    noise = await handshake(arena, reader, writer)
    conn = ClientConnection()
    writer.write(noise.encrypt_frame(conn.send(SetupConnection(0, 2, 2, 0, "127.0.0.1", 0, "t", "", "", ""))))
    await read_events(reader, noise, conn, lambda e: isinstance(e, ConnectionSetUp))
    return reader, writer, noise, conn


async def closed_by_server(reader: asyncio.StreamReader, within: float = CLOSE_WITHIN_S) -> float:
    """Seconds until the server closed the connection (EOF or reset); fails after ``within`` seconds."""
    start = time.monotonic()
    for _ in range(10_000):
        remaining = within - (time.monotonic() - start)
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), max(0.01, remaining))
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        except TimeoutError:
            raise AssertionError(f"the server did not close the hostile connection within {within} s") from None
        if not data:
            return time.monotonic() - start
    raise AssertionError("the server kept sending instead of closing")


async def dribble(writer: asyncio.StreamWriter, data: bytes, interval: float = 1.0) -> None:
    """Slowloris: one byte per ``interval`` until done or the server hangs up."""
    for i in range(len(data)):
        if writer.is_closing():
            return
        try:
            writer.write(data[i : i + 1])
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(interval)


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def assert_unharmed(arena: Arena, accepted_before: int) -> None:
    """The attack cost nobody else anything: new connections work, the honest miner keeps mining."""
    _, writer, _, _ = await set_up(arena)  # handshake + SetupConnection.Success on a fresh connection
    await hang_up(writer)
    await _wait_for(
        lambda: arena.miner.stats.accepted > accepted_before or arena.miner_task.done(),
        20,
        "the honest miner's shares to be accepted after the attack",
    )
    assert not arena.miner_task.done(), "the honest miner's connection went down"
    assert arena.miner.stats.accepted > accepted_before
    assert arena.pool.server is not None
    await _wait_for(lambda: len(arena.pool.server.sessions) == 1, 5, "only the honest miner to stay connected")


# --- the attacks -----------------------------------------------------------------------------------------------------


async def test_random_bytes_instead_of_noise_msg1(arena: Arena) -> None:
    """Any 64 bytes are a valid ElligatorSwift key, so the pool answers msg2; the random bytes after it fail the
    first MAC and the connection is closed."""
    before, accepted = arena.errors("NoiseDecryptError"), arena.miner.stats.accepted
    reader, writer = await connect(arena)
    writer.write(os.urandom(MSG1_SIZE + 300))
    await closed_by_server(reader)
    await hang_up(writer)
    assert arena.errors("NoiseDecryptError") == before + 1
    await assert_unharmed(arena, accepted)


async def test_short_garbage_then_eof_during_the_handshake(arena: Arena) -> None:
    before, accepted = arena.errors("IncompleteReadError"), arena.miner.stats.accepted
    reader, writer = await connect(arena)
    writer.write(os.urandom(MSG1_SIZE // 2))
    writer.write_eof()
    await closed_by_server(reader)
    await hang_up(writer)
    assert arena.errors("IncompleteReadError") == before + 1
    await assert_unharmed(arena, accepted)


@pytest.mark.parametrize("after_setup", [False, True], ids=["after-handshake", "after-setup"])
async def test_random_bytes_after_a_completed_handshake(arena: Arena, after_setup: bool) -> None:
    before, accepted = arena.errors("NoiseDecryptError"), arena.miner.stats.accepted
    if after_setup:
        reader, writer, _, _ = await set_up(arena)
    else:
        reader, writer = await connect(arena)
        await handshake(arena, reader, writer)
    writer.write(os.urandom(4096))
    await closed_by_server(reader)
    await hang_up(writer)
    assert arena.errors("NoiseDecryptError") == before + 1
    await assert_unharmed(arena, accepted)


@pytest.mark.parametrize("cut", [10, 22, 30], ids=["inside-header", "header-only", "inside-payload"])
async def test_truncated_frame_then_close(arena: Arena, cut: int) -> None:
    """Part of an encrypted OpenStandardMiningChannel frame, then our side of the TCP stream ends."""
    before, accepted = arena.errors("truncated-frame"), arena.miner.stats.accepted
    reader, writer, noise, _ = await set_up(arena)
    frame = noise.encrypt_frame(encode_message(OpenStandardMiningChannel(7, "hostile.t", 1e6, (1 << 256) - 1)))
    assert len(frame) > cut
    writer.write(frame[:cut])
    writer.write_eof()
    await closed_by_server(reader)
    await hang_up(writer)
    assert arena.errors("truncated-frame") == before + 1
    await assert_unharmed(arena, accepted)


async def test_oversized_msg_length_is_refused_from_the_header(arena: Arena) -> None:
    """A header announcing a 2^24-1 byte payload (the pool's limit is 1 MiB): only the 22 encrypted header bytes
    are sent, and the server closes at once -- it judged the frame by its header and never waited to buffer it."""
    before, accepted = arena.errors("NoiseFrameTooLarge"), arena.miner.stats.accepted
    reader, writer, noise, _ = await set_up(arena)
    length = 0xFFFFFF
    assert arena.pool.config.stratum.max_frame_bytes < length
    header = b"\x00\x80\x1a" + length.to_bytes(3, "little")  # SubmitSharesStandard with channel_msg bit
    wire = noise.encrypt_frame(header + bytes(length))  # the real initiator's encryption; we send the header only
    writer.write(wire[:22])
    waited = await closed_by_server(reader)
    await hang_up(writer)
    assert waited < CLOSE_WITHIN_S
    assert arena.errors("NoiseFrameTooLarge") == before + 1
    await assert_unharmed(arena, accepted)


@pytest.mark.parametrize("mode", ["silent", "dribble"])
async def test_slowloris_handshake_is_cut_at_the_handshake_timeout(arena: Arena, mode: str) -> None:
    before, accepted = arena.errors("TimeoutError"), arena.miner.stats.accepted
    reader, writer = await connect(arena)
    started = time.monotonic()
    trickle = (
        asyncio.create_task(dribble(writer, NoiseInitiator(arena.authority).start())) if mode == "dribble" else None
    )
    try:
        await closed_by_server(reader, HANDSHAKE_TIMEOUT_S + CLOSE_WITHIN_S)
    finally:
        if trickle is not None:
            trickle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trickle
    elapsed = time.monotonic() - started
    await hang_up(writer)
    assert HANDSHAKE_TIMEOUT_S * 0.9 <= elapsed < HANDSHAKE_TIMEOUT_S + CLOSE_WITHIN_S, elapsed
    assert arena.errors("TimeoutError") == before + 1
    await assert_unharmed(arena, accepted)


@pytest.mark.parametrize("mode", ["silent", "dribble"])
async def test_no_setup_connection_is_cut_at_the_setup_timeout(arena: Arena, mode: str) -> None:
    before, accepted = arena.errors("TimeoutError"), arena.miner.stats.accepted
    reader, writer = await connect(arena)
    noise = await handshake(arena, reader, writer)
    started = time.monotonic()
    trickle = None
    if mode == "dribble":
        trickle = asyncio.create_task(dribble(writer, noise.encrypt_frame(setup_frame())))
    try:
        await closed_by_server(reader, SETUP_TIMEOUT_S + CLOSE_WITHIN_S)
    finally:
        if trickle is not None:
            trickle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trickle
    elapsed = time.monotonic() - started
    await hang_up(writer)
    assert elapsed < SETUP_TIMEOUT_S + CLOSE_WITHIN_S, elapsed
    assert arena.errors("TimeoutError") == before + 1
    await assert_unharmed(arena, accepted)


async def test_share_flood_closes_only_the_flooding_connection(arena: Arena) -> None:
    """A channel opened the honest way, then SubmitSharesStandard far beyond the per-connection rate limit."""
    before, accepted = arena.errors("Flooding"), arena.miner.stats.accepted
    assert arena.pool.server is not None
    reader, writer, noise, conn = await set_up(arena)
    writer.write(noise.encrypt_frame(conn.send(OpenStandardMiningChannel(1, "flooder.f1", 1e6, (1 << 256) - 1))))
    events = await read_events(
        reader,
        noise,
        conn,
        lambda e: isinstance(e, MessageReceived) and isinstance(e.message, SetNewPrevHash),
    )
    channel_id = next(e.channel.channel_id for e in events if isinstance(e, ChannelOpened))
    prev_hash = next(
        e.message for e in events if isinstance(e, MessageReceived) and isinstance(e.message, SetNewPrevHash)
    )
    assert server_stats(arena.pool.server).channels == 2
    flood_started = time.monotonic()
    sent = 0
    for batch in range(40):  # up to 20,000 shares, 500 a write, as fast as the socket takes them
        frames = [
            noise.encrypt_frame(
                encode_message(SubmitSharesStandard(channel_id, sent + i, prev_hash.job_id, sent + i, 0, 0))
            )
            for i in range(500)
        ]
        try:
            writer.write(b"".join(frames))
            await asyncio.wait_for(writer.drain(), 2)
        except (ConnectionError, TimeoutError):
            break
        sent += 500
        if reader.at_eof() or (batch % 4 == 3 and await _closed_soon(reader)):
            break
    await closed_by_server(reader)
    flood_s = time.monotonic() - flood_started
    await hang_up(writer)
    assert sent >= MESSAGE_BURST, sent  # it really sent more than the burst allowance ...
    assert sent / max(flood_s, 1e-3) > MAX_MESSAGES_PER_SECOND  # ... at more than the allowed rate
    assert arena.errors("Flooding") == before + 1
    await _wait_for(lambda: server_stats(arena.pool.server).channels == 1, 5, "the flooder's channel to be dropped")
    await assert_unharmed(arena, accepted)


async def _closed_soon(reader: asyncio.StreamReader) -> bool:
    """Drain what the pool sent back (share errors); True once it hung up."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(1 << 16), 0.01)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True
