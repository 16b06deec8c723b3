"""Newline-delimited framing with a hard line limit: bytes in, whole lines out."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineBuffer", "LineTooLong"]

#: Longest request line a V1 server accepts (a mining.submit is ~150 bytes; 16 KiB is generous).
DEFAULT_MAX_LINE_BYTES = 16 * 1024


class LineTooLong(Exception):
    """A line (or an unterminated tail) exceeds the limit: the peer is not speaking this protocol."""


class LineBuffer:
    """Split a byte stream at ``\\n``; a trailing ``\\r`` and blank lines are dropped.

    Never holds more than ``max_line_bytes`` of an unterminated line: :class:`LineTooLong` is raised as soon as
    the limit is passed, so a peer cannot make us buffer without bound.
    """

    __slots__ = ("_tail", "max_line_bytes")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._tail = b""

    @property
    def buffered(self) -> int:
        return len(self._tail)

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        if b"\n" not in data:
            if len(data) > self.max_line_bytes:
                self._tail = b""
                raise LineTooLong(f"more than {self.max_line_bytes} bytes without a newline")
            self._tail = data
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        limit = self.max_line_bytes
        if len(tail) > limit:
            self._tail = b""
            raise LineTooLong(f"more than {limit} bytes without a newline")
        self._tail = tail
        out: list[bytes] = []
        for line in lines:
            if len(line) > limit:
                self._tail = b""
                raise LineTooLong(f"a line of {len(line)} bytes (limit {limit})")
            if line.endswith(b"\r"):
                line = line[:-1]
            if line and not line.isspace():
                out.append(line)
        return out
