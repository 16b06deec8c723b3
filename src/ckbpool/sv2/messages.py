"""SV2 messages: every typed message class, and frame <-> message conversion.

* :func:`encode_message` -- message -> whole plaintext frame (header + payload).
* :func:`decode_message` -- :class:`~ckbpool.sv2.framing.Frame` -> typed message, or
  :class:`UnknownMessage` for an (extension_type, msg_type) pair this library does not know.
  A known pair with a malformed payload raises :class:`~ckbpool.sv2.errors.DecodeError`.

Receiving ignores the frame's channel_msg bit when choosing the message class, as SRI's
``parsers_sv2`` does (``ext_type_without_channel_msg``); sending always sets it to the class's
``CHANNEL_MSG``.

Message definitions live in :mod:`.messages_common` (Common + extension 0x0001),
:mod:`.messages_mining` (Mining protocol) and :mod:`.messages_ckb` (CKB template extension).
"""

from __future__ import annotations

from ckbpool.sv2.errors import EncodeError
from ckbpool.sv2.framing import CHANNEL_MSG_BIT, HEADER_SIZE, MAX_PAYLOAD, Frame
from ckbpool.sv2.messages_base import Message, UnknownMessage
from ckbpool.sv2.messages_ckb import CkbJobTemplate, CkbSubmitSolution, CkbTemplateSubscribe
from ckbpool.sv2.messages_common import (
    ChannelEndpointChanged,
    Reconnect,
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
)
from ckbpool.sv2.messages_mining import (
    CloseChannel,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetCustomMiningJobSuccess,
    SetExtranoncePrefix,
    SetGroupChannel,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
)

__all__ = [
    "MESSAGE_CLASSES",
    "ChannelEndpointChanged",
    "CkbJobTemplate",
    "CkbSubmitSolution",
    "CkbTemplateSubscribe",
    "CloseChannel",
    "Message",
    "NewExtendedMiningJob",
    "NewMiningJob",
    "OpenExtendedMiningChannel",
    "OpenExtendedMiningChannelSuccess",
    "OpenMiningChannelError",
    "OpenStandardMiningChannel",
    "OpenStandardMiningChannelSuccess",
    "Reconnect",
    "RequestExtensions",
    "RequestExtensionsError",
    "RequestExtensionsSuccess",
    "SetCustomMiningJob",
    "SetCustomMiningJobError",
    "SetCustomMiningJobSuccess",
    "SetExtranoncePrefix",
    "SetGroupChannel",
    "SetNewPrevHash",
    "SetTarget",
    "SetupConnection",
    "SetupConnectionError",
    "SetupConnectionSuccess",
    "SubmitSharesError",
    "SubmitSharesExtended",
    "SubmitSharesStandard",
    "SubmitSharesSuccess",
    "UnknownMessage",
    "UpdateChannel",
    "UpdateChannelError",
    "decode_frame_bytes",
    "decode_message",
    "encode_message",
    "message_class",
]

MESSAGE_CLASSES: tuple[type[Message], ...] = (
    SetupConnection,
    SetupConnectionSuccess,
    SetupConnectionError,
    ChannelEndpointChanged,
    Reconnect,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    OpenMiningChannelError,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    NewMiningJob,
    UpdateChannel,
    UpdateChannelError,
    CloseChannel,
    SetExtranoncePrefix,
    SubmitSharesStandard,
    SubmitSharesExtended,
    SubmitSharesSuccess,
    SubmitSharesError,
    NewExtendedMiningJob,
    SetNewPrevHash,
    SetTarget,
    SetCustomMiningJob,
    SetCustomMiningJobSuccess,
    SetCustomMiningJobError,
    SetGroupChannel,
    RequestExtensions,
    RequestExtensionsSuccess,
    RequestExtensionsError,
    CkbTemplateSubscribe,
    CkbJobTemplate,
    CkbSubmitSolution,
)

# (extension_type << 8 | msg_type) -> class; one int key keeps the hot lookup cheap.
_BY_KEY: dict[int, type[Message]] = {(c.EXTENSION_TYPE << 8) | c.MSG_TYPE: c for c in MESSAGE_CLASSES}
assert len(_BY_KEY) == len(MESSAGE_CLASSES), "duplicate (extension_type, msg_type)"

# Precomputed first two header bytes (extension_type with the channel bit, msg_type) per class.
_HEAD: dict[type[Message], bytes] = {
    c: ((c.EXTENSION_TYPE | (CHANNEL_MSG_BIT if c.CHANNEL_MSG else 0)).to_bytes(2, "little") + bytes((c.MSG_TYPE,)))
    for c in MESSAGE_CLASSES
}


def message_class(extension_type: int, msg_type: int) -> type[Message] | None:
    """The class for an (extension_type without channel bit, msg_type) pair, if known."""
    return _BY_KEY.get((extension_type << 8) | msg_type)


def encode_message(message: Message) -> bytes:
    """The whole plaintext frame for ``message``: 6-byte header then payload."""
    payload = message.encode()
    n = len(payload)
    if n > MAX_PAYLOAD:
        # Only B0_16M-bearing extension messages can get here.
        raise EncodeError(type(message).__name__, f"payload of {n} bytes exceeds the frame maximum")
    head = _HEAD.get(type(message))
    if head is None:
        cls = type(message)
        ext = cls.EXTENSION_TYPE | (CHANNEL_MSG_BIT if cls.CHANNEL_MSG else 0)
        head = ext.to_bytes(2, "little") + bytes((cls.MSG_TYPE,))
    return head + n.to_bytes(3, "little") + payload


def decode_message(frame: Frame) -> Message | UnknownMessage:
    """The typed message carried by ``frame`` (or :class:`UnknownMessage`).

    Raises :class:`~ckbpool.sv2.errors.DecodeError` when a known message's payload is malformed.
    """
    cls = _BY_KEY.get((frame.extension_type << 8) | frame.msg_type)
    if cls is None:
        return UnknownMessage(frame.extension_type, frame.msg_type, frame.channel_msg, frame.payload)
    return cls.decode(frame.payload)


def decode_frame_bytes(data: bytes) -> Message | UnknownMessage:
    """Decode one whole plaintext frame given as bytes (header included), e.g. from the Noise layer.

    Same result as ``decode_message(Frame.decode(data))`` without building the :class:`Frame`.
    """
    n = len(data)
    if n < HEADER_SIZE or n - HEADER_SIZE != data[3] | data[4] << 8 | data[5] << 16:
        return decode_message(Frame.decode(data))  # raises the precise DecodeError
    ext = (data[0] | data[1] << 8) & 0x7FFF
    cls = _BY_KEY.get((ext << 8) | data[2])
    if cls is None:
        return UnknownMessage(ext, data[2], bool(data[1] & 0x80), bytes(data[HEADER_SIZE:]))
    return cls.decode(data[HEADER_SIZE:])
