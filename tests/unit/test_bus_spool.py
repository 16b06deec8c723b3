"""The disk spool: order, acknowledgement, restart persistence, corrupt tails, segments, one owner."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.bus import SpoolError
from ckbpool.bus.spool import MAGIC, Spool

pytestmark = pytest.mark.unit


def payloads(n: int, size: int = 20) -> list[bytes]:
    return [f"record-{i:06d}".encode().ljust(size, b".") for i in range(n)]


def drain(spool: Spool, batch: int = 7) -> list[bytes]:
    out: list[bytes] = []
    while spool.depth:
        records = spool.read(batch)
        assert records
        out += [r.payload for r in records]
        spool.ack(records[-1])
    return out


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.spool"))


def test_append_read_ack_in_order(tmp_path: Path) -> None:
    with Spool(tmp_path, fsync="never") as spool:
        data = payloads(50)
        for p in data:
            spool.append(p)
        assert spool.depth == 50
        first = spool.read(10)
        assert [r.payload for r in first] == data[:10]
        assert [r.payload for r in spool.read(10)] == data[:10]  # unacked: the same again
        spool.ack(first[4])
        assert spool.depth == 45
        assert [r.payload for r in spool.read(3)] == data[5:8]
        assert drain(spool) == data[5:]
        assert spool.depth == 0 and spool.pending_bytes == 0
        assert spool.read(10) == []


def test_records_survive_a_restart_and_acks_too(tmp_path: Path) -> None:
    data = payloads(30)
    with Spool(tmp_path, fsync="always") as spool:
        for p in data:
            spool.append(p)
        spool.ack(spool.read(12)[-1])
    with Spool(tmp_path) as spool:
        assert spool.depth == 18
        spool.append(b"after restart")
        assert drain(spool) == [*data[12:], b"after restart"]
    with Spool(tmp_path) as spool:
        assert spool.depth == 0


def test_a_process_crash_loses_nothing_appended(tmp_path: Path) -> None:
    """No close(), no fsync: every append is one write() to the kernel, so a new open sees it."""
    spool = Spool(tmp_path, fsync="never")
    for p in payloads(5):
        spool.append(p)
    os.close(spool._lock_fd)  # type: ignore[arg-type]  # what the kernel does when the process dies
    spool._lock_fd = None
    with Spool(tmp_path) as again:
        assert drain(again) == payloads(5)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda b: b[:-3], "short record payload"),
        (lambda b: b + b"\x05\x00", "short record header"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "CRC mismatch"),
        (lambda b: b + b"\xff\xff\xff\x7f\x00\x00\x00\x00", "absurd"),
    ],
)
def test_corrupt_tail_is_truncated_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, problem: str
) -> None:
    data = payloads(10)
    with Spool(tmp_path) as spool:
        for p in data:
            spool.append(p)
    (segment,) = segment_files(tmp_path)
    good = segment.read_bytes()
    segment.write_bytes(damage(good))  # type: ignore[operator]
    with caplog.at_level(logging.WARNING, logger="ckbpool.bus.spool"), Spool(tmp_path) as spool:
        lost_last = problem in ("short record payload", "CRC mismatch")
        assert spool.depth == (9 if lost_last else 10)
        assert spool.truncated_bytes > 0
        spool.append(b"next")
        assert drain(spool) == [*(data[:9] if lost_last else data), b"next"]
    assert any("corrupt tail" in r.getMessage() and problem in r.getMessage() for r in caplog.records)


def test_segments_roll_and_are_deleted_once_delivered(tmp_path: Path) -> None:
    data = payloads(100, size=100)
    with Spool(tmp_path, fsync="never", segment_bytes=1000) as spool:
        for p in data:
            spool.append(p)
        assert len(segment_files(tmp_path)) >= 10
        assert [r.payload for r in spool.read(1000)] == data  # a read spans segments
        spool.ack(spool.read(50)[-1])
        assert len(segment_files(tmp_path)) < 10
    with Spool(tmp_path, segment_bytes=1000) as spool:
        assert spool.depth == 50
        assert drain(spool, batch=13) == data[50:]
    assert len(segment_files(tmp_path)) == 1  # drained: one fresh, empty segment
    assert segment_files(tmp_path)[0].read_bytes() == MAGIC


def test_only_one_process_owns_a_spool(tmp_path: Path) -> None:
    with Spool(tmp_path), pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path)
    with Spool(tmp_path):
        pass  # released on close


def test_pending_bytes_tracks_the_backlog(tmp_path: Path) -> None:
    with Spool(tmp_path, fsync="never") as spool:
        spool.append(b"x" * 10)
        spool.append(b"y" * 20)
        assert spool.pending_bytes == 2 * 8 + 30
        spool.ack(spool.read(1)[0])
        assert spool.pending_bytes == 8 + 20
    with Spool(tmp_path) as spool:
        assert spool.pending_bytes == 8 + 20


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.binary(max_size=64)),
            st.tuples(st.just("ack"), st.integers(1, 5)),
            st.tuples(st.just("reopen"), st.none()),
        ),
        max_size=40,
    )
)
def test_spool_behaves_like_a_queue(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, object]]) -> None:
    directory = tmp_path_factory.mktemp("spool")
    model: list[bytes] = []
    spool = Spool(directory, fsync="never", segment_bytes=200)
    try:
        for op, arg in ops:
            if op == "append":
                assert isinstance(arg, bytes)
                spool.append(arg)
                model.append(arg)
            elif op == "ack":
                assert isinstance(arg, int)
                records = spool.read(arg)
                assert [r.payload for r in records] == model[: len(records)]
                if records:
                    spool.ack(records[-1])
                    del model[: len(records)]
            else:
                spool.close()
                spool = Spool(directory, fsync="never", segment_bytes=200)
            assert spool.depth == len(model)
        assert drain(spool) == model
    finally:
        spool.close()
