"""Common protocol messages (sv2-spec 3.6) and the Extensions Negotiation extension (0x0001).

Layouts follow SRI ``common_messages_sv2`` 9.0.0 and ``extensions_sv2`` 0.3.0 (stratum-mining/stratum
at commit 268022034c18, the versions published with ``mining_sv2`` 12.0.0), field for field.

One deliberate difference from SRI: ``SetupConnection.protocol`` decodes as any U8. SRI's decoder
fails on values above 2; we decode them so the connection state machine can answer
``SetupConnection.Error("unsupported-protocol")`` as the spec asks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, Self

from ckbpool.sv2.messages_base import Message
from ckbpool.sv2.types import STR0_255, U8, U16, U32, Seq0_64K

__all__ = [
    "ERROR_MISSING_DECLARE_TX_DATA_FLAG",
    "ERROR_PROTOCOL_VERSION_MISMATCH",
    "ERROR_UNSUPPORTED_FEATURE_FLAGS",
    "ERROR_UNSUPPORTED_PROTOCOL",
    "EXTENSION_TYPE_EXTENSIONS_NEGOTIATION",
    "PROTOCOL_JOB_DECLARATION",
    "PROTOCOL_MINING",
    "PROTOCOL_TEMPLATE_DISTRIBUTION",
    "ChannelEndpointChanged",
    "Reconnect",
    "RequestExtensions",
    "RequestExtensionsError",
    "RequestExtensionsSuccess",
    "SetupConnection",
    "SetupConnectionError",
    "SetupConnectionSuccess",
]

PROTOCOL_MINING = 0
PROTOCOL_JOB_DECLARATION = 1
PROTOCOL_TEMPLATE_DISTRIBUTION = 2

EXTENSION_TYPE_EXTENSIONS_NEGOTIATION = 0x0001

# SetupConnection.Error codes (common_messages_sv2 ERROR_CODE_SETUP_CONNECTION_*).
ERROR_UNSUPPORTED_FEATURE_FLAGS = "unsupported-feature-flags"
ERROR_UNSUPPORTED_PROTOCOL = "unsupported-protocol"
ERROR_PROTOCOL_VERSION_MISMATCH = "protocol-version-mismatch"
ERROR_MISSING_DECLARE_TX_DATA_FLAG = "missing-declare-tx-data-flag"


@dataclass(frozen=True, slots=True)
class SetupConnection(Message):
    """0x00, client -> server: the first message on every connection."""

    MSG_TYPE = 0x00
    CHANNEL_MSG = False

    protocol: Annotated[int, U8]
    min_version: Annotated[int, U16]
    max_version: Annotated[int, U16]
    flags: Annotated[int, U32]
    endpoint_host: Annotated[str, STR0_255]
    endpoint_port: Annotated[int, U16]
    vendor: Annotated[str, STR0_255]
    hardware_version: Annotated[str, STR0_255]
    firmware: Annotated[str, STR0_255]
    device_id: Annotated[str, STR0_255]


_SETUP_SUCCESS = struct.Struct("<HI")


@dataclass(frozen=True, slots=True)
class SetupConnectionSuccess(Message):
    """0x01, server -> client. ``flags`` are the server's (see ``connection.py`` for their bits)."""

    MSG_TYPE = 0x01
    CHANNEL_MSG = False

    used_version: Annotated[int, U16]
    flags: Annotated[int, U32]

    def encode(self) -> bytes:
        try:
            return _SETUP_SUCCESS.pack(self.used_version, self.flags)
        except struct.error:
            return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) != 6:
            return cls._decode_generic(payload)
        return cls(*_SETUP_SUCCESS.unpack(payload))


@dataclass(frozen=True, slots=True)
class SetupConnectionError(Message):
    """0x02, server -> client, then the server closes. ``flags``: the unsupported ones, else 0."""

    MSG_TYPE = 0x02
    CHANNEL_MSG = False

    flags: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@dataclass(frozen=True, slots=True)
class ChannelEndpointChanged(Message):
    """0x03, server -> client: extension state of the channel must be renegotiated."""

    MSG_TYPE = 0x03
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class Reconnect(Message):
    """0x04, server -> client: reconnect (empty host / port 0 mean "the current one")."""

    MSG_TYPE = 0x04
    CHANNEL_MSG = False

    new_host: Annotated[str, STR0_255]
    new_port: Annotated[int, U16]


class _ExtensionsNegotiation(Message):
    __slots__ = ()
    EXTENSION_TYPE = EXTENSION_TYPE_EXTENSIONS_NEGOTIATION
    CHANNEL_MSG = False


@dataclass(frozen=True, slots=True)
class RequestExtensions(_ExtensionsNegotiation):
    """Extension 0x0001 / 0x00, client -> server, right after SetupConnection.Success."""

    MSG_TYPE = 0x00

    request_id: Annotated[int, U16]
    requested_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]


@dataclass(frozen=True, slots=True)
class RequestExtensionsSuccess(_ExtensionsNegotiation):
    """Extension 0x0001 / 0x01, server -> client: the subset of requested extensions it supports."""

    MSG_TYPE = 0x01

    request_id: Annotated[int, U16]
    supported_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]


@dataclass(frozen=True, slots=True)
class RequestExtensionsError(_ExtensionsNegotiation):
    """Extension 0x0001 / 0x02, server -> client: none supported, or some required ones missing."""

    MSG_TYPE = 0x02

    request_id: Annotated[int, U16]
    unsupported_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]
    required_extensions: Annotated[tuple[int, ...], Seq0_64K(U16)]
