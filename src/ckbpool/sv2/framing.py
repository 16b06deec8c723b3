"""SV2 plaintext frames (sv2-spec 3.2), byte-compatible with SRI's ``framing_sv2`` 8.0.0.

A frame is a 6-byte header followed by the payload::

    extension_type U16 | msg_type U8 | msg_length U24 | payload (msg_length bytes)

Bit 15 of ``extension_type`` is the ``channel_msg`` bit: when set, the payload starts with a U32
``channel_id``. It is not part of the extension number (``0x8001`` is extension ``0x0001``).
:class:`Frame` and :class:`FrameHeader` keep the two apart: ``extension_type`` never includes the
bit, ``channel_msg`` carries it.

The encrypted transport (``noise.py``) decrypts the 22-byte encrypted header into the 6 plaintext
bytes, reads ``msg_length`` from bytes ``[3:6]`` with :meth:`FrameHeader.decode`, checks it against
its limit, and then decrypts the payload. :class:`FrameDecoder` is the same job for plaintext
streams (tests, tools, a plaintext listener).

Payload size limit: the U24 length allows 2^24-1 bytes. The largest core Common/Mining/0x0001
message is a maximal ``NewExtendedMiningJob`` (139,253 bytes), so :data:`DEFAULT_MAX_PAYLOAD`
(256 KiB) accepts every core message while bounding what one connection can make us buffer.
A role that receives CKB template-extension messages (a proxy serving ``ckb miner``) must raise
it (up to :data:`MAX_PAYLOAD`).

A server (pool) only receives what clients send, and that is small: the largest messages a miner or proxy
legitimately sends are a SetupConnection with five full STR0_255 strings (1,291 payload bytes), a
CloseChannel (261), an Open*MiningChannel (298) and a SubmitSharesExtended with a 32-byte extranonce and the
0x0002 + 0x4CCB identity and share-target TLVs (391); CkbSubmitSolution is 28 bytes. Only two client
messages *could* be larger, neither legitimately here: RequestExtensions (a U16 per extension id, 128 KiB if
it listed all 65,536 — a handful are defined) and SetCustomMiningJob (~74 KB at most; refused unless work
selection was agreed). :data:`DEFAULT_MAX_INBOUND_PAYLOAD` (64 KiB, a single Noise chunk's worth) is what
:class:`~ckbpool.sv2.server.ServerConnection` accepts by default: ~50x the largest real message, and a
connection can make the server hold at most one such frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ckbpool.sv2.errors import DecodeError, EncodeError, FrameTooLarge

__all__ = [
    "CHANNEL_MSG_BIT",
    "DEFAULT_MAX_INBOUND_PAYLOAD",
    "DEFAULT_MAX_PAYLOAD",
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "Frame",
    "FrameDecoder",
    "FrameHeader",
    "encode_frame",
]

HEADER_SIZE = 6
CHANNEL_MSG_BIT = 0x8000
MAX_PAYLOAD = 0xFFFFFF
DEFAULT_MAX_PAYLOAD = 256 * 1024
#: What a server accepts from a client by default (see the module docstring for the sizes behind it).
DEFAULT_MAX_INBOUND_PAYLOAD = 64 * 1024

_HEADER = struct.Struct("<HBHB")  # extension_type, msg_type, msg_length low 16 bits, high 8 bits


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The 6-byte frame header. ``extension_type`` excludes the channel_msg bit."""

    extension_type: int
    msg_type: int
    msg_length: int
    channel_msg: bool

    @classmethod
    def decode(cls, header: bytes) -> FrameHeader:
        """Parse the first 6 bytes of ``header`` (a plaintext frame header)."""
        if len(header) < HEADER_SIZE:
            raise DecodeError("frame_header", f"need {HEADER_SIZE} bytes, got {len(header)}")
        ext, msg_type, low, high = _HEADER.unpack_from(header)
        return cls(ext & 0x7FFF, msg_type, low | (high << 16), bool(ext & CHANNEL_MSG_BIT))

    def encode(self) -> bytes:
        return _pack_header(self.extension_type, self.msg_type, self.msg_length, self.channel_msg)


def _pack_header(extension_type: int, msg_type: int, msg_length: int, channel_msg: bool) -> bytes:
    if not 0 <= extension_type <= 0x7FFF:
        raise EncodeError("extension_type", f"{extension_type:#x} is not a 15-bit extension type")
    if not 0 <= msg_type <= 0xFF:
        raise EncodeError("msg_type", f"{msg_type} out of range for U8")
    if not 0 <= msg_length <= MAX_PAYLOAD:
        raise EncodeError("msg_length", f"payload of {msg_length} bytes exceeds the U24 maximum")
    ext = extension_type | CHANNEL_MSG_BIT if channel_msg else extension_type
    return _HEADER.pack(ext, msg_type, msg_length & 0xFFFF, msg_length >> 16)


def encode_frame(extension_type: int, msg_type: int, payload: bytes, channel_msg: bool = False) -> bytes:
    """Return the plaintext frame: header followed by ``payload``."""
    return _pack_header(extension_type, msg_type, len(payload), channel_msg) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    """One plaintext frame. ``extension_type`` excludes the channel_msg bit."""

    extension_type: int
    msg_type: int
    channel_msg: bool
    payload: bytes

    @property
    def header(self) -> FrameHeader:
        return FrameHeader(self.extension_type, self.msg_type, len(self.payload), self.channel_msg)

    def encode(self) -> bytes:
        return encode_frame(self.extension_type, self.msg_type, self.payload, self.channel_msg)

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        """Parse exactly one whole frame (no bytes missing, none left over)."""
        header = FrameHeader.decode(data)
        if len(data) != HEADER_SIZE + header.msg_length:
            raise DecodeError(
                "frame", f"header announces {header.msg_length} payload bytes, got {len(data) - HEADER_SIZE}"
            )
        return cls(header.extension_type, header.msg_type, header.channel_msg, bytes(data[HEADER_SIZE:]))


class FrameDecoder:
    """Streaming plaintext frame decoder: feed bytes in any split, get whole frames out.

    The payload length is checked against ``max_payload`` as soon as the 6 header bytes are
    known, before any payload byte is buffered; :class:`FrameTooLarge` is raised otherwise.
    After an error the decoder is poisoned (the stream has lost framing) and every later
    :meth:`feed` raises the same error again.
    """

    __slots__ = ("_buf", "_error", "max_payload")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be within 0..{MAX_PAYLOAD}")
        self.max_payload = max_payload
        self._buf = bytearray()
        self._error: DecodeError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back, waiting for the rest of their frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return every frame it completes, in order."""
        if self._error is not None:
            raise self._error
        frames: list[Frame] = []
        buf = self._buf
        if not buf:
            # Fast path: nothing pending, parse straight out of the caller's bytes.
            pos = self._parse(data, frames)
            if pos < len(data):
                buf += data[pos:]
            return frames
        buf += data
        pos = self._parse(buf, frames)
        del buf[:pos]
        return frames

    def _parse(self, data: bytes | bytearray, frames: list[Frame]) -> int:
        """Append the whole frames found in ``data`` to ``frames``; return the bytes consumed."""
        pos = 0
        end = len(data)
        unpack = _HEADER.unpack_from
        limit = self.max_payload
        while end - pos >= HEADER_SIZE:
            ext, msg_type, low, high = unpack(data, pos)
            length = low | (high << 16)
            if length > limit:
                # Checked from the header alone: the oversize payload is never buffered.
                self._buf.clear()
                self._error = FrameTooLarge(length, limit)
                raise self._error
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            payload = bytes(data[pos + HEADER_SIZE : stop])
            frames.append(Frame(ext & 0x7FFF, msg_type, bool(ext & CHANNEL_MSG_BIT), payload))
            pos = stop
        return pos
