"""A local, append-only disk spool: where the Kafka bus keeps events while Kafka cannot take them.

Layout of a spool directory::

    LOCK                        flock()ed while a process has the spool open (one owner at a time)
    HEAD                        "<segment> <offset>": the first record not yet delivered (atomic rename)
    0000000000000001.spool      segments: an 8-byte magic, then records
    0000000000000002.spool      ...

Record: ``u32 length | u32 crc32(length bytes + payload) | payload`` (little-endian). Records are appended with
one ``write()`` each on an unbuffered descriptor, so a process crash never loses an appended record; what a
power loss can lose is governed by the fsync policy:

- ``"always"``: fsync after every append and every HEAD update (safest, ~1 ms a record on disks);
- ``"interval"``: fsync at most every ``fsync_interval`` seconds (the owner calls :meth:`Spool.sync` from a
  timer, and each append checks the clock) — the default;
- ``"never"``: leave it to the OS.

Delivery is acknowledged with :meth:`Spool.ack`, which moves HEAD past a record; segments wholly before HEAD
are deleted, and a drained spool starts a fresh segment so the disk is given back.

Opening scans every record after HEAD: a torn or corrupt tail (short header, short payload, CRC mismatch,
absurd length) is truncated with a warning, which is what a crash in the middle of a write leaves behind.
Corruption inside an older segment loses the rest of that segment only, logged as an error.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .base import SpoolError

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "never")

MAGIC = b"CKBSPL\x00\x01"
_HEADER = struct.Struct("<II")
MAX_RECORD = 64 << 20
DEFAULT_SEGMENT_BYTES = 64 << 20
_SUFFIX = ".spool"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One record read back from the spool; ``seq`` counts records in this process (not stored on disk)."""

    seq: int
    segment: int
    offset: int
    end: int
    payload: bytes


def _segment_name(number: int) -> str:
    return f"{number:016d}{_SUFFIX}"


class Spool:
    """An append-only record log with a durable read head. Not thread-safe: use it from one event loop."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.directory = Path(directory)
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.truncated_bytes = 0  # corrupt bytes dropped when opening
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._dirty = False
        self._last_sync = time.monotonic()
        self._segments: list[int] = []
        self._sizes: dict[int, int] = {}
        self._head = (0, 0)
        self._head_seq = 0
        self._tail_seq = 0
        self._pending_bytes = 0
        self._open()

    # ---------------------------------------------------------------- state

    @property
    def depth(self) -> int:
        """Records appended and not yet acknowledged."""
        return self._tail_seq - self._head_seq

    @property
    def pending_bytes(self) -> int:
        """Bytes (headers included) of the records not yet acknowledged."""
        return self._pending_bytes

    @property
    def closed(self) -> bool:
        return self._fd is None

    # ---------------------------------------------------------------- open / close

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot open spool {self.directory}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise SpoolError(
                f"spool {self.directory} is in use by another process (give each process its own spool_dir)"
            ) from exc
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        segments = sorted(
            int(p.name[: -len(_SUFFIX)])
            for p in self.directory.iterdir()
            if p.name.endswith(_SUFFIX) and p.name[: -len(_SUFFIX)].isdigit()
        )
        head_segment, head_offset = self._read_head()
        for number in [n for n in segments if n < head_segment]:
            (self.directory / _segment_name(number)).unlink(missing_ok=True)  # delivered; a crash left it
        segments = [n for n in segments if n >= head_segment]
        if not segments:
            segments = [self._create_segment(max(head_segment, 1))]
        if segments[0] != head_segment:
            head_segment, head_offset = segments[0], len(MAGIC)
        self._segments = segments
        count = 0
        for i, number in enumerate(segments):
            start = head_offset if number == head_segment else len(MAGIC)
            n, size = self._scan(number, start, last=i == len(segments) - 1)
            if number == head_segment:
                head_offset = min(max(head_offset, len(MAGIC)), size)
                start = head_offset
            count += n
            self._sizes[number] = size
            self._pending_bytes += size - start
        self._head = (head_segment, head_offset)
        self._head_seq = 0
        self._tail_seq = count
        path = self.directory / _segment_name(segments[-1])
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if count:
            log.info(
                "spool %s: %d undelivered records (%d bytes) from a previous run",
                self.directory,
                count,
                self._pending_bytes,
            )

    def _read_head(self) -> tuple[int, int]:
        try:
            text = (self.directory / "HEAD").read_text().split()
            return int(text[0]), int(text[1])
        except FileNotFoundError:
            return 0, len(MAGIC)
        except (OSError, ValueError, IndexError):
            log.warning("spool %s: unreadable HEAD, replaying from the first segment", self.directory)
            return 0, len(MAGIC)

    def _scan(self, number: int, start: int, *, last: bool) -> tuple[int, int]:
        """Count the valid records from ``start``; truncate at the first invalid one. Returns (count, size)."""
        path = self.directory / _segment_name(number)
        with open(path, "rb") as f:
            data = f.read()
        if data[: len(MAGIC)] != MAGIC:
            log.error(
                "spool %s: %s is not a spool segment; dropping its %d bytes", self.directory, path.name, len(data)
            )
            self.truncated_bytes += len(data)
            path.write_bytes(MAGIC)
            return 0, len(MAGIC)
        pos = max(start, len(MAGIC))
        count = 0
        size = len(data)
        while pos < size:
            problem = ""
            if size - pos < _HEADER.size:
                problem = "short record header"
            else:
                length, crc = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + length
                if length > MAX_RECORD:
                    problem = f"record length {length} is absurd"
                elif end > size:
                    problem = "short record payload"
                elif zlib.crc32(data[pos + _HEADER.size : end], zlib.crc32(data[pos : pos + 4])) != crc:
                    problem = "CRC mismatch"
            if problem:
                self._truncate(path, pos, size, last, problem)
                return count, pos
            pos = end
            count += 1
        return count, size

    def _truncate(self, path: Path, pos: int, size: int, last: bool, problem: str) -> None:
        self.truncated_bytes += size - pos
        if last:
            log.warning(
                "spool %s: corrupt tail in %s at offset %d (%s): truncating %d bytes",
                self.directory,
                path.name,
                pos,
                problem,
                size - pos,
            )
        else:
            log.error(
                "spool %s: corruption inside %s at offset %d (%s): dropping the %d bytes after it",
                self.directory,
                path.name,
                pos,
                problem,
                size - pos,
            )
        with open(path, "r+b") as f:
            f.truncate(pos)
            os.fsync(f.fileno())

    def _create_segment(self, number: int) -> int:
        path = self.directory / _segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            os.write(fd, MAGIC)
            if self.fsync != "never":
                os.fsync(fd)
        finally:
            os.close(fd)
        if self.fsync != "never":
            self._fsync_dir()
        self._sizes[number] = len(MAGIC)
        return number

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """fsync (unless the policy is "never") and release the directory lock."""
        if self._fd is not None:
            try:
                if self.fsync != "never" and self._dirty:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- write

    def append(self, payload: bytes) -> int:
        """Append one record; returns its ``seq``. Raises SpoolError if the disk refuses it."""
        if self._fd is None:
            raise SpoolError("spool is closed")
        if len(payload) > MAX_RECORD:
            raise SpoolError(f"record of {len(payload)} bytes exceeds the spool's {MAX_RECORD}")
        active = self._segments[-1]
        if self._sizes[active] >= self.segment_bytes:
            self._roll()
            active = self._segments[-1]
        length = len(payload).to_bytes(4, "little")
        record = length + zlib.crc32(payload, zlib.crc32(length)).to_bytes(4, "little") + payload
        try:
            written = os.write(self._fd, record)
        except OSError as exc:
            raise SpoolError(f"spool append failed: {exc}") from exc
        if written != len(record):  # disk full in the middle: undo the torn record
            os.ftruncate(self._fd, self._sizes[active])
            raise SpoolError(f"spool append wrote {written} of {len(record)} bytes")
        self._sizes[active] += len(record)
        self._pending_bytes += len(record)
        self._dirty = True
        if self.fsync == "always" or (
            self.fsync == "interval" and time.monotonic() - self._last_sync >= self.fsync_interval
        ):
            self.sync()
        seq = self._tail_seq
        self._tail_seq += 1
        return seq

    def sync(self) -> None:
        """fsync appended records now (a no-op when nothing was appended since the last sync)."""
        if self._fd is not None and self._dirty:
            self._dirty = False
            os.fsync(self._fd)
        self._last_sync = time.monotonic()

    def _roll(self) -> None:
        """Start a new active segment (the old one stays until HEAD passes it)."""
        assert self._fd is not None
        if self.fsync != "never":
            os.fsync(self._fd)
        os.close(self._fd)
        number = self._create_segment(self._segments[-1] + 1)
        self._segments.append(number)
        self._fd = os.open(self.directory / _segment_name(number), os.O_WRONLY | os.O_APPEND)
        self._dirty = False

    # ---------------------------------------------------------------- read / acknowledge

    def read(self, max_records: int) -> list[SpoolRecord]:
        """Up to ``max_records`` undelivered records from HEAD, oldest first (the same ones until acked)."""
        out: list[SpoolRecord] = []
        if self._fd is None or self.depth == 0:
            return out
        segment, offset = self._head
        seq = self._head_seq
        for number in self._segments[self._segments.index(segment) :]:
            size = self._sizes[number]
            pos = offset if number == segment else len(MAGIC)
            if pos >= size:
                continue
            with open(self.directory / _segment_name(number), "rb") as f:
                f.seek(pos)
                data = f.read(size - pos)
            i = 0
            while i < len(data) and len(out) < max_records:
                length, _crc = _HEADER.unpack_from(data, i)
                start = i + _HEADER.size
                out.append(SpoolRecord(seq, number, pos + i, pos + start + length, data[start : start + length]))
                seq += 1
                i = start + length
            if len(out) >= max_records:
                break
        return out

    def ack(self, record: SpoolRecord) -> None:
        """Everything up to and including ``record`` was delivered: move HEAD past it, free what it can."""
        if self._fd is None:
            raise SpoolError("spool is closed")
        if record.seq < self._head_seq:
            return  # already acknowledged
        acked_bytes = self._bytes_between(self._head, (record.segment, record.end))
        self._head = (record.segment, record.end)
        self._head_seq = record.seq + 1
        self._pending_bytes -= acked_bytes
        if self.depth == 0 and self._sizes[self._segments[-1]] > len(MAGIC):
            self._roll()  # drained: a fresh segment, so the old ones can go
            self._head = (self._segments[-1], len(MAGIC))
            self._pending_bytes = 0
        self._write_head()
        for number in [n for n in self._segments if n < self._head[0]]:
            (self.directory / _segment_name(number)).unlink(missing_ok=True)
            self._segments.remove(number)
            del self._sizes[number]

    def _bytes_between(self, start: tuple[int, int], end: tuple[int, int]) -> int:
        if start[0] == end[0]:
            return end[1] - start[1]
        total = self._sizes[start[0]] - start[1]
        for number in self._segments:
            if start[0] < number < end[0]:
                total += self._sizes[number] - len(MAGIC)
        return total + end[1] - len(MAGIC)

    def _write_head(self) -> None:
        tmp = self.directory / "HEAD.tmp"
        with open(tmp, "w") as f:
            f.write(f"{self._head[0]} {self._head[1]}\n")
            if self.fsync == "always":
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.directory / "HEAD")
        if self.fsync == "always":
            self._fsync_dir()
