"""The IPC bus between stratum workers and their parent (``ckbpool.bus.ipc``).

Frame codec tests are pure (``unit``); the link tests run a hub and clients over a real Unix socket in this
process (``integration``: sockets): order and exactly-once ids across the link, the latest template for a new
subscriber, a durable hub's acknowledgements, and nothing lost when a client vanishes right after publishing.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
from pathlib import Path

import pytest

from ckbpool.bus import BusClosed, BusUnavailable, InProcBus, JobTemplate, Share, Topic, ipc
from ckbpool.bus.events import SEQ_MAX
from ckbpool.bus.ipc import (
    EVENT,
    HELLO,
    PUBLISH,
    SUBSCRIBE,
    WELCOME,
    FrameError,
    IpcBus,
    IpcHub,
    decode_frames,
    decode_shares,
    encode_frame,
    encode_shares,
)
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.procs import merge_users, with_default_workers
from support.waiting import until


def _share(source: str, seq: int) -> Share:
    return Share(
        server_id="stratum-1",
        channel_id=1,
        user="alice",
        worker="rig",
        job_id=7,
        height=100,
        nonce=seq,
        share_target=1 << 240,
        share_difficulty=1.0,
        accepted=True,
        reason="",
        is_block=False,
        block_hash=b"",
        timestamp=time.time(),
        source=source,
        seq=seq,
    )


@pytest.mark.unit
def test_frames_split_anywhere_decode_whole_and_in_order() -> None:
    frames = [encode_frame(PUBLISH, bytes([i]) * i) for i in range(1, 40)]
    stream = b"".join(frames)
    buffer = bytearray()
    out: list[tuple[int, bytes]] = []
    for start in range(0, len(stream), 7):  # 7-byte chunks: headers and payloads split at every offset
        buffer += stream[start : start + 7]
        out += decode_frames(buffer)
    assert out == [(PUBLISH, bytes([i]) * i) for i in range(1, 40)]
    assert not buffer


@pytest.mark.unit
def test_a_frame_announcing_no_kind_or_too_much_is_refused() -> None:
    with pytest.raises(FrameError):
        decode_frames(bytearray(b"\x00\x00\x00\x00\x03"))
    with pytest.raises(FrameError):
        decode_frames(bytearray(b"\x7f\xff\xff\xff\x03"))


@pytest.mark.unit
def test_the_share_codec_gives_back_every_field_and_refuses_a_broken_payload() -> None:
    plain = [_share("stratum-1-run", seq) for seq in range(1, 6)]
    odd = Share(
        server_id="stratum-7",
        channel_id=0xFFFFFFFF,
        user="ckt1qyq\u00e9.tab\tname",  # any characters: the books take them as they are
        worker="rig-\u2603",
        job_id=(1 << 64) - 1,
        height=(1 << 64) - 1,
        nonce=(1 << 128) - 1,
        share_target=(1 << 256) - 1,
        share_difficulty=1e-9,
        accepted=True,
        reason="",
        is_block=True,
        block_hash=bytes(range(32)),
        timestamp=1.5,
        source="",
        seq=0,
    )
    rejected = _replace(plain[0], accepted=False, reason="stale-share", seq=6)
    shares = [*plain, odd, rejected]
    data = encode_shares(shares)
    assert decode_shares(data) == shares
    assert decode_shares(encode_shares([])) == []
    for broken in (data[:-1], data + b"\x00", data[:7], b"\xff" * 8):
        with pytest.raises(FrameError):
            decode_shares(broken)


def _replace(share: Share, **changes: object) -> Share:
    return share.replace(**changes)


@pytest.mark.unit
def test_workers_default_to_one_per_core_and_must_fit_server_ids() -> None:
    config = with_default_workers(PoolConfig())
    assert config.stratum.workers is not None and config.stratum.workers >= 1
    assert with_default_workers(PoolConfig.model_validate({"stratum": {"workers": 1}})).stratum.workers == 1
    with pytest.raises(ValueError, match="server_id"):
        PoolConfig.model_validate({"stratum": {"server_id": 250, "workers": 8}})


@pytest.mark.unit
def test_users_of_several_processes_add_up() -> None:
    one = {"alice": {"hashrate_hps": 1.0, "accepted": 2, "rejected": 0, "last_share": 5.0, "workers": {"a": {}}}}
    two = {"alice": {"hashrate_hps": 2.0, "accepted": 3, "rejected": 1, "last_share": 4.0, "workers": {"a": {}}}}
    merged = merge_users(merge_users({}, one), two)
    assert merged["alice"]["accepted"] == 5 and merged["alice"]["rejected"] == 1
    assert merged["alice"]["hashrate_hps"] == 3.0 and merged["alice"]["last_share"] == 5.0


@pytest.mark.integration
async def test_shares_cross_in_order_with_their_ids_and_nothing_is_lost_when_the_worker_vanishes(
    tmp_path: Path,
) -> None:
    hub = IpcHub(InProcBus(), tmp_path / "hub.sock")
    await hub.start()
    books = hub.subscribe(Topic.SHARES, "accounting", manual_ack=True)
    worker = IpcBus(tmp_path / "hub.sock", "stratum-worker-0")
    await worker.start()
    assert not worker.durable
    for seq in range(1, 2001):
        await worker.publish(Topic.SHARES, _share("stratum-1-run", seq))
    # the worker disappears without a goodbye right after its last publish returned
    assert worker._writer is not None
    worker._writer.transport.abort()
    assert await hub.wait_closed("stratum-worker-0", 5)
    got = []
    while len(got) < 2000:
        batch = await books.next_batch(500, 1.0)
        assert batch, f"only {len(got)} of 2000 shares reached the hub's bus"
        got += batch
    assert [(s.source, s.seq) for s in got if isinstance(s, Share)] == [("stratum-1-run", n) for n in range(1, 2001)]
    assert hub.stats()["ipc_received"] == 2000
    await hub.close()


@pytest.mark.integration
async def test_a_batch_of_shares_crosses_as_one_frame_in_order_and_a_durable_hub_acknowledges_all(
    tmp_path: Path,
) -> None:
    for durable in (False, True):
        hub = IpcHub(InProcBus(), tmp_path / "hub.sock", durable=durable)
        await hub.start()
        books = hub.subscribe(Topic.SHARES, "accounting", manual_ack=True)
        worker = IpcBus(tmp_path / "hub.sock", "stratum-worker-0")
        await worker.start()
        await worker.publish(Topic.SHARES, _share("run", 1))
        await worker.publish_many(Topic.SHARES, [_share("run", seq) for seq in range(2, 20_002)])  # 3 frames
        await worker.publish(Topic.SHARES, _share("run", 20_002))
        if durable:
            assert worker._acked == 20_002  # publish_many returned once the hub's bus held every share
        with pytest.raises(TypeError):
            await worker.publish_many(Topic.SHARES, [JobTemplate(1, b"{}", 0.0)])
        got: list[object] = []
        while len(got) < 20_002:
            batch = await books.next_batch(8192, 1.0)
            assert batch, f"only {len(got)} of 20,002 shares reached the hub's bus"
            got += batch
        assert [s.seq for s in got if isinstance(s, Share)] == list(range(1, 20_003))
        assert hub.links["stratum-worker-0"].received == 20_002
        await worker.close()
        await hub.close()


@pytest.mark.integration
async def test_a_new_template_subscriber_gets_the_latest_first_then_the_stream(tmp_path: Path) -> None:
    hub = IpcHub(InProcBus(), tmp_path / "hub.sock")
    await hub.start()
    await hub.publish(Topic.TEMPLATES, JobTemplate(1, b"{}", time.time()))
    await hub.publish(Topic.TEMPLATES, JobTemplate(2, b"{}", time.time()))
    worker = IpcBus(tmp_path / "hub.sock", "w")
    await worker.start()
    templates = worker.subscribe(Topic.TEMPLATES, "stratum-2")
    first = await asyncio.wait_for(templates.__anext__(), 5)
    assert isinstance(first, JobTemplate) and first.job_id == 2
    await asyncio.sleep(0.05)  # the hub has attached the subscription
    await hub.publish(Topic.TEMPLATES, JobTemplate(3, b"{}", time.time()))
    second = await asyncio.wait_for(templates.__anext__(), 5)
    assert isinstance(second, JobTemplate) and second.job_id == 3
    await worker.close()
    with pytest.raises(BusClosed):
        await worker.publish(Topic.SHARES, _share("x", 1))
    await hub.close()


@pytest.mark.integration
async def test_a_durable_hub_acknowledges_and_a_lost_parent_is_reported(tmp_path: Path) -> None:
    hub = IpcHub(InProcBus(), tmp_path / "hub.sock", durable=True)
    await hub.start()
    books = hub.subscribe(Topic.SHARES, "accounting")
    worker = IpcBus(tmp_path / "hub.sock", "w")
    await worker.start()
    assert worker.durable
    await worker.publish(Topic.SHARES, _share("s", 1))
    assert worker._acked == 1  # publish returned only once the hub's bus held it
    assert (await asyncio.wait_for(books.__anext__(), 5)).seq == 1  # type: ignore[attr-defined]
    lost = asyncio.Event()
    worker.on_lost = lost.set
    await hub.close()
    await asyncio.wait_for(lost.wait(), 5)
    with pytest.raises(BusUnavailable):
        await worker.publish(Topic.SHARES, _share("s", 2))
    await worker.close()


@pytest.mark.unit
def test_decoded_shares_are_shares_and_a_seq_beyond_what_lua_compares_exactly_is_refused() -> None:
    """decode_shares builds Shares without Share's checks (the record's field widths are its ranges), so the one
    range the widths do not imply -- seq, u64 on the wire, at most SEQ_MAX in a Share -- is checked there."""
    share = _share("stratum-1-run", SEQ_MAX)
    data = encode_shares([share])
    (decoded,) = decode_shares(data)
    assert type(decoded) is Share and decoded == share and decoded.seq == SEQ_MAX
    wire = struct.pack(">Q", SEQ_MAX)
    assert data.count(wire) == 1
    with pytest.raises(FrameError, match="seq"):
        decode_shares(data.replace(wire, struct.pack(">Q", SEQ_MAX + 1)))


def _peek(bus: IpcBus) -> bytes:
    """The bytes waiting on a worker's socket, read without taking them (a dup of its descriptor)."""
    assert bus._writer is not None
    fd = bus._writer.transport.get_extra_info("socket").fileno()
    with socket.socket(fileno=os.dup(fd)) as sock:
        try:
            return sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""


@pytest.mark.integration
async def test_a_template_the_hub_publishes_is_on_every_worker_socket_when_publish_returns_and_arrives_once(
    tmp_path: Path,
) -> None:
    """Issue 19's fan-out: the parent writes a new template to its workers inside ``publish`` (not on a later
    turn of its loop); the wrapped bus's copy of it is not sent again; a template that only the wrapped bus has
    (a job maker on another host) still comes through."""
    hub = IpcHub(InProcBus(), tmp_path / "hub.sock")
    await hub.start()
    workers = [IpcBus(tmp_path / "hub.sock", f"stratum-worker-{i}") for i in range(2)]
    subs = []
    for i, worker in enumerate(workers):
        await worker.start()
        subs.append(worker.subscribe(Topic.TEMPLATES, f"stratum-{i + 1}"))
    await hub.publish(Topic.TEMPLATES, JobTemplate(0, b"{}", time.time()))
    for sub in subs:  # both subscriptions are attached
        assert (await asyncio.wait_for(sub.__anext__(), 5)).job_id == 0  # type: ignore[attr-defined]
    for worker in workers:  # stop the workers' reading: what publish wrote stays on their sockets
        assert worker._read_task is not None and worker._writer is not None
        worker._read_task.cancel()
        worker._writer.transport.pause_reading()
    await asyncio.sleep(0)
    for job_id in (1, 2, 3):
        await hub.publish(Topic.TEMPLATES, JobTemplate(job_id, b'{"n": %d}' % job_id, time.time()))
        # no await in between: publish itself wrote the frame to each worker's socket
        for worker in workers:
            assert b'{"n": %d}' % job_id in _peek(worker), f"template {job_id} not on {worker.name}'s socket"
    await hub.inner.publish(Topic.TEMPLATES, JobTemplate(4, b'{"n": 4}', time.time()))  # only the wrapped bus
    await asyncio.sleep(0.3)  # the hub's pumps have had every chance to send their copies
    for worker, sub in zip(workers, subs, strict=True):
        data = _peek(worker)
        frames = decode_frames(bytearray(data))
        ids = [JobTemplate.from_proto(payload[4:]).job_id for kind, payload in frames if kind == EVENT]
        assert ids == [1, 2, 3, 4], f"{worker.name} got templates {ids}"
        await sub.close()
    for worker in workers:
        await worker.close()
    await hub.close()


@pytest.mark.integration
async def test_a_worker_that_stops_reading_gets_the_latest_template_once_it_reads_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub does not pile up templates for a worker that does not read: past TEMPLATE_BACKLOG_MAX unsent
    bytes it stops writing to it, and the latest template goes out once the socket drained."""
    monkeypatch.setattr(ipc, "TEMPLATE_BACKLOG_MAX", 256 << 10)
    hub = IpcHub(InProcBus(), tmp_path / "hub.sock")
    await hub.start()
    reader, writer = await asyncio.open_unix_connection(str(tmp_path / "hub.sock"), limit=1 << 22)
    writer.write(encode_frame(HELLO, json.dumps({"name": "stuck", "pid": 0}).encode()))
    length, kind = struct.unpack(">IB", await reader.readexactly(5))
    assert kind == WELCOME
    await reader.readexactly(length - 1)
    request = {"id": 1, "topic": Topic.TEMPLATES.value, "group": "stratum-9"}
    writer.write(encode_frame(SUBSCRIBE, json.dumps(request).encode()))
    await until(lambda: len(hub._template_sinks) == 1, "the template subscription", 5.0, 0.01)
    sink = hub._template_sinks[0]
    body = b"x" * (200 << 10)
    for job_id in range(1, 41):  # 8 MiB in all: far more than the kernel's socket buffers take
        await hub.publish(Topic.TEMPLATES, JobTemplate(job_id, body, time.time()))
        assert sink.writer.transport.get_write_buffer_size() < (256 << 10) + (201 << 10)
    assert sink.catch_up is not None  # it stopped writing
    await asyncio.sleep(0.05)
    ids: list[int] = []
    buffer = bytearray()
    while 40 not in ids:
        chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
        assert chunk, "the hub closed the link"
        buffer += chunk
        ids += [JobTemplate.from_proto(p[4:]).job_id for k, p in decode_frames(buffer) if k == EVENT]
    assert ids == sorted(ids) and len(ids) < 40, f"templates sent: {ids}"
    writer.close()
    await hub.close()
