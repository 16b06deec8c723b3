"""Stratum V2 for CKB, sans-IO: bytes in, events out -- no sockets, no asyncio (the h11 way).

Layers, bottom up:

* :mod:`.types` -- SV2 binary types (U8..U256, STR0_255, B0_*, SEQ*, OPTION, ...);
* :mod:`.framing` -- the 6-byte frame header, :class:`FrameDecoder` for plaintext streams;
* :mod:`.messages` -- every Common, Mining and extension message as a frozen dataclass,
  :func:`encode_message` / :func:`decode_message` (``UnknownMessage`` for unknown types);
* :mod:`.noise` -- Noise NX handshake and the encrypted transport (frames in, ciphertext out);
* :mod:`.server` / :mod:`.client` -- the connection state machines, reporting :mod:`.events`;
* :mod:`.extensions` -- TLV fields of negotiated extensions (0x0002 worker identity), judged per connection;
* :mod:`.session` -- the one asyncio client connection (the proxy's upstream and the CPU miner use it);
* :mod:`.ckb_profile` -- how CKB's pow_hash, targets and 16-byte nonce map onto SV2 fields
  (``docs/sv2-ckb.md``).

Wire compatibility target: the SRI crates binary_sv2 7.0.0, framing_sv2 8.0.0, common_messages_sv2
9.0.0, mining_sv2 12.0.0 (pinned in ``tests/interop``).
"""

from ckbpool.sv2.client import ClientConnection
from ckbpool.sv2.connection import ConnectionState
from ckbpool.sv2.errors import (
    DecodeError,
    EncodeError,
    FrameTooLarge,
    LocalProtocolError,
    ProtocolError,
    Sv2Error,
)
from ckbpool.sv2.framing import Frame, FrameDecoder, FrameHeader, encode_frame
from ckbpool.sv2.messages import (
    Message,
    UnknownMessage,
    decode_frame_bytes,
    decode_message,
    encode_message,
)
from ckbpool.sv2.server import ServerConnection

__all__ = [
    "ClientConnection",
    "ConnectionState",
    "DecodeError",
    "EncodeError",
    "Frame",
    "FrameDecoder",
    "FrameHeader",
    "FrameTooLarge",
    "LocalProtocolError",
    "Message",
    "ProtocolError",
    "ServerConnection",
    "Sv2Error",
    "UnknownMessage",
    "decode_frame_bytes",
    "decode_message",
    "encode_frame",
    "encode_message",
]
