"""A stand-in for the asyncio transport under a :class:`ckbpool.pool.stratum.MinerSession` in unit tests: it decodes
every plaintext frame the pool writes, so a test reads the pool's answers as messages (no socket, no event loop
I/O). Sessions built on it run with ``stratum.noise = false``."""

from __future__ import annotations

from typing import Any

from ckbpool.sv2.framing import FrameDecoder
from ckbpool.sv2.messages import Message, UnknownMessage, decode_message


class RecordingTransport:
    """Enough of an asyncio transport for MinerSession: decodes every plaintext frame the pool writes."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder((1 << 24) - 1)
        self.messages: list[Message | UnknownMessage] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.messages.extend(decode_message(f) for f in self.decoder.feed(data))

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def of(self, kind: type[Message]) -> list[Any]:
        """The messages of one kind the pool sent, in order."""
        return [m for m in self.messages if isinstance(m, kind)]
