"""Abuse of the pool's Stratum V2 side is refused or limited while an honest miner keeps mining.

A real dev ckb node (genesis target hard enough, 2^220, that the share difficulty floor is easier than the
network and therefore visible), the real Pool, one honest CPU miner (Sv2Miner) on 127.0.0.1 the whole time,
and hostile clients from other loopback addresses (127.0.0.2-6: per-address limits must not touch the honest
miner): a miner declaring 1e-9 H/s, more channels than a connection may open, an UpdateChannel stream,
half-open sockets that never start the Noise handshake, handshakes faster than the per-address rate, more
connections than one address may hold, and frames one byte over the inbound cap. Each refusal is checked
from the hostile side (an error code, a reset, silence) and in ``ckbpool_stratum_limited_total{reason}``;
after each abuse the honest miner's accepted count still grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_pool_e2e import pool_config, pool_keys

from ckbpool.ckb.devwallet import DevKey
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.target import target_to_compact
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.channels import easiest_target, target_for_hashrate
from ckbpool.pool.service import Pool
from ckbpool.pool.stratum import ERROR_TOO_MANY_CHANNELS
from ckbpool.sv2.client import ClientConnection
from ckbpool.sv2.events import ChannelOpened, ChannelOpenRejected, ConnectionSetUp, Event, MessageReceived
from ckbpool.sv2.framing import FrameHeader
from ckbpool.sv2.messages import OpenExtendedMiningChannel, SetTarget, SetupConnection, UpdateChannel
from ckbpool.sv2.noise import MSG2_SIZE, NoiseInitiator, NoiseTransport

pytestmark = pytest.mark.integration

HARD_COMPACT_TARGET = target_to_compact(1 << 220)  # ~7e10 hashes a block: no CPU finds one, shares still flow
EASY = (1 << 256) - 1
MAX_CHANNELS = 8
UPDATE_BURST = 2
HALF_OPEN_CAP = 8  # below PER_IP, so this cap is the one that binds
RATE_BURST, RATE_PER_S = 20, 1.0
PER_IP = 12
HANDSHAKE_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def hard_node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey) -> Iterator[CkbNode]:
    from conftest import start_dev_node

    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb-abuse"), dev_key, genesis_compact_target=HARD_COMPACT_TARGET
    )
    try:
        yield node
    finally:
        node.stop()


@dataclass
class Arena:
    pool: Pool
    authority: str
    address: tuple[str, int]
    miner: Sv2Miner
    miner_task: asyncio.Task[object]

    def limited(self, reason: str) -> float:
        value = self.pool.metrics.registry.get_sample_value("ckbpool_stratum_limited_total", {"reason": reason})
        assert value is not None, reason
        return value

    async def still_mining(self, accepted_before: int) -> None:
        await wait_for(
            lambda: self.miner.stats.accepted > accepted_before or self.miner_task.done(),
            30,
            "the honest miner's next accepted share",
        )
        assert not self.miner_task.done(), "the honest miner's connection went down"


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def arena(hard_node: CkbNode, tmp_path: Path) -> AsyncIterator[Arena]:
    credentials, authority = pool_keys()
    config = pool_config(
        hard_node,
        tmp_path,
        stratum={
            "listen_host": "127.0.0.1",
            "listen_port": 0,
            "handshake_timeout_s": HANDSHAKE_TIMEOUT_S,
            "max_channels_per_connection": MAX_CHANNELS,
            "update_channel_burst": UPDATE_BURST,
            "update_channel_interval_s": 3600,
            "max_handshakes_in_progress_per_ip": HALF_OPEN_CAP,
            "handshake_rate_per_ip": RATE_PER_S,
            "handshake_burst_per_ip": RATE_BURST,
            "max_connections_per_ip": PER_IP,
        },
        # default min_hashrate (the floor under test); ~2 shares/s for a CPU miner
        vardiff={"share_interval_s": 0.5, "retarget_interval_s": 1.0, "initial_hashrate": 1e6},
    )
    pool = Pool(config, credentials=credentials)
    await pool.start()
    try:
        assert pool.server is not None
        await wait_for(lambda: pool.watcher is not None and pool.watcher.current is not None, 20, "a first job")
        host, port = pool.server.address
        miner = Sv2Miner(host, port, "honest.rig1", authority_public_key=authority)
        task: asyncio.Task[object] = asyncio.create_task(miner.run(duration=150))
        try:
            await wait_for(lambda: miner.stats.accepted > 0 or task.done(), 30, "the honest miner's first share")
            assert not task.done(), task
            yield Arena(pool, authority, (host, port), miner, task)
        finally:
            miner.stop()
            await asyncio.wait_for(task, 10)
    finally:
        await pool.close()


# --- raw clients from other loopback addresses ---------------------------------------------------------------------


@dataclass
class Raw:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    noise: NoiseTransport
    conn: ClientConnection

    def send(self, message: object) -> None:
        self.writer.write(self.noise.encrypt_frame(self.conn.send(message)))  # type: ignore[arg-type]

    async def events(self, until: Callable[[list[Event]], bool], timeout: float = 10.0) -> list[Event]:
        seen: list[Event] = []
        deadline = time.monotonic() + timeout
        while not until(seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never got what was awaited; got {seen}"
            try:
                data = await asyncio.wait_for(self.reader.read(1 << 16), remaining)
            except TimeoutError:
                continue
            assert data, f"the pool closed the connection; events so far: {seen}"
            for frame in self.noise.feed(data):
                seen.extend(self.conn.receive_frame(frame))
        return seen

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


async def tcp(arena: Arena, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(*arena.address, local_addr=(source, 0)), 5)


async def handshake(arena: Arena, source: str) -> Raw:
    """TCP + Noise from ``source``; raises ConnectionError / IncompleteReadError when the pool refuses."""
    reader, writer = await tcp(arena, source)
    initiator = NoiseInitiator(arena.authority)
    writer.write(initiator.start())
    try:
        noise = initiator.complete(await asyncio.wait_for(reader.readexactly(MSG2_SIZE), 5))
    except BaseException:
        writer.close()
        raise
    return Raw(reader, writer, noise, ClientConnection())


async def set_up(arena: Arena, source: str) -> Raw:
    raw = await handshake(arena, source)
    raw.send(SetupConnection(0, 2, 2, 0, "127.0.0.1", 0, "abuser", "", "", ""))
    await raw.events(lambda seen: any(isinstance(e, ConnectionSetUp) for e in seen))
    return raw


async def refused(reader: asyncio.StreamReader) -> bool:
    """The pool reset or closed the socket without a byte (bounded wait)."""
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


# --- the abuses -----------------------------------------------------------------------------------------------------


async def test_tiny_hashrate_too_many_channels_and_update_spam_are_limited(arena: Arena) -> None:
    vd = arena.pool.config.vardiff
    floor = easiest_target(vd)
    network = arena.pool.server.jobs.current.job.target  # type: ignore[union-attr]
    assert network < floor, "the dev chain must be harder than the floor for this test to see it"

    # 1. a miner that declares 1e-9 H/s and really mines: it starts at the floor, vardiff moves it up
    accepted = arena.miner.stats.accepted
    tiny = Sv2Miner(*arena.address, "abuser.tiny", authority_public_key=arena.authority, nominal_hash_rate=1e-9)
    stats = await tiny.run(duration=6)
    assert stats.targets[0] == floor  # not the 2^256/1e-8 a 1e-9 H/s declaration asked for
    assert min(stats.targets) < floor  # vardiff raised the difficulty within the run
    assert arena.limited("hashrate-floor") >= 1
    await arena.still_mining(accepted)

    # 2. more channels than one connection may open
    accepted = arena.miner.stats.accepted
    raw = await set_up(arena, "127.0.0.2")
    for request_id in range(1, MAX_CHANNELS + 5):
        raw.send(OpenExtendedMiningChannel(request_id, "abuser.many", 1e-9, EASY, 0))
    seen = await raw.events(
        lambda s: sum(isinstance(e, ChannelOpened | ChannelOpenRejected) for e in s) >= MAX_CHANNELS + 4
    )
    opened = [e for e in seen if isinstance(e, ChannelOpened)]
    rejected = [e for e in seen if isinstance(e, ChannelOpenRejected)]
    assert len(opened) == MAX_CHANNELS and all(e.channel.target == floor for e in opened)
    assert [e.response.error_code for e in rejected] == [ERROR_TOO_MANY_CHANNELS] * 4
    assert arena.limited("channels-per-connection") == 4

    # 3. UpdateChannel spam on one of them: the first UPDATE_BURST honoured, the rest ignored
    channel_id = opened[0].channel.channel_id
    before = arena.limited("update-channel-rate")
    raw.send(UpdateChannel(channel_id, 1e8, EASY))
    for _ in range(19):
        raw.send(UpdateChannel(channel_id, 1e-9, EASY))
    await wait_for(lambda: arena.limited("update-channel-rate") >= before + 18, 10, "the ignored UpdateChannels")
    targets = [
        e.message.maximum_target
        for e in await raw.events(
            lambda s: sum(isinstance(e, MessageReceived) and isinstance(e.message, SetTarget) for e in s) >= 2
        )
        if isinstance(e, MessageReceived) and isinstance(e.message, SetTarget)
    ]
    assert targets[:2] == [target_for_hashrate(1e8, vd.share_interval_s), floor]
    assert arena.limited("update-channel-rate") == before + 18
    await raw.close()
    await arena.still_mining(accepted)


async def test_half_open_sockets_handshake_rate_and_connections_per_address_are_capped(arena: Arena) -> None:
    # 1. 200 sockets from one address that never start the handshake: HALF_OPEN_CAP are held, the rest reset
    accepted = arena.miner.stats.accepted
    before = arena.limited("ip-handshakes-in-progress")
    sockets = [await tcp(arena, "127.0.0.2") for _ in range(200)]
    results = await asyncio.gather(*(refused(reader) for reader, _ in sockets[HALF_OPEN_CAP:]))
    assert all(results)
    assert arena.limited("ip-handshakes-in-progress") == before + 200 - HALF_OPEN_CAP
    fresh = await set_up(arena, "127.0.0.3")  # another address is not affected
    await fresh.close()
    await arena.still_mining(accepted)
    # the held ones time out on their own and free the address again
    assert all(await asyncio.gather(*(refused(reader) for reader, _ in sockets[:HALF_OPEN_CAP])))
    for _, writer in sockets:
        writer.close()
    again = await set_up(arena, "127.0.0.2")
    await again.close()

    # 2. handshakes faster than the per-address rate: the burst passes, then about RATE_PER_S a second
    accepted = arena.miner.stats.accepted
    before = arena.limited("ip-handshake-rate")
    ok = denied = 0
    start = time.monotonic()
    for _ in range(RATE_BURST + 20):
        try:
            raw = await handshake(arena, "127.0.0.4")
        except (ConnectionError, asyncio.IncompleteReadError):
            denied += 1
            continue
        ok += 1
        await raw.close()
    elapsed = time.monotonic() - start
    assert denied >= 1 and ok <= RATE_BURST + RATE_PER_S * elapsed + 1
    assert arena.limited("ip-handshake-rate") == before + denied
    await arena.still_mining(accepted)

    # 3. connections per address, counted whether or not they finished a handshake
    before = arena.limited("ip-connections")
    held = [await set_up(arena, "127.0.0.5") for _ in range(PER_IP)]
    reader, writer = await tcp(arena, "127.0.0.5")
    assert await refused(reader)
    writer.close()
    assert arena.limited("ip-connections") == before + 1
    for raw in held:
        await raw.close()


async def test_a_frame_over_the_inbound_cap_is_refused_and_one_at_the_cap_is_not(arena: Arena) -> None:
    accepted = arena.miner.stats.accepted
    cap = arena.pool.config.stratum.max_frame_bytes
    assert cap == 64 * 1024
    # exactly the cap: an unknown message type is read whole and ignored; the connection stays usable
    raw = await set_up(arena, "127.0.0.6")
    raw.writer.write(raw.noise.encrypt_frame(FrameHeader(0x0042, 0x7F, cap, False).encode() + bytes(cap)))
    raw.send(OpenExtendedMiningChannel(1, "abuser.big", 1e6, EASY, 0))
    await raw.events(lambda s: any(isinstance(e, ChannelOpened) for e in s))
    await raw.close()
    # one byte more: closed from the header alone (only the 22-byte encrypted header is ever sent)
    before = arena.limited("frame-too-large")
    raw = await set_up(arena, "127.0.0.6")
    wire = raw.noise.encrypt_frame(FrameHeader(0, 0x16, cap + 1, True).encode() + bytes(cap + 1))
    raw.writer.write(wire[:22])
    assert await refused(raw.reader)
    await raw.close()
    assert arena.limited("frame-too-large") == before + 1
    await arena.still_mining(accepted)
