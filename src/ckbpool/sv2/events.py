"""What the connection state machines report, and the channel records those reports carry.

Every event has a ``reply`` attribute: the plaintext frame(s) the state machine already decided to
send in answer (a ``SetupConnection.Success``, a ``SubmitShares.Error`` for an unknown channel,
...), or ``b""``. The caller's loop is therefore always the same::

    for event in conn.receive_frame(frame):
        if event.reply:
            transport.write(noise.encrypt_frame(event.reply))
        ...  # then act on the event itself; after ConnectionClosed, close the socket
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ckbpool.sv2.messages_base import Message, UnknownMessage
from ckbpool.sv2.messages_ckb import CkbSubmitSolution
from ckbpool.sv2.messages_common import (
    RequestExtensionsError,
    RequestExtensionsSuccess,
    SetupConnection,
    SetupConnectionSuccess,
)
from ckbpool.sv2.messages_mining import (
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetCustomMiningJob,
    SubmitSharesExtended,
    SubmitSharesStandard,
    UpdateChannel,
)

__all__ = [
    "ChannelClosed",
    "ChannelInfo",
    "ChannelKind",
    "ChannelOpenRejected",
    "ChannelOpened",
    "ChannelUpdateRequested",
    "ConnectionClosed",
    "ConnectionSetUp",
    "CustomMiningJobRequested",
    "Event",
    "ExtensionsNegotiated",
    "MessageIgnored",
    "MessageReceived",
    "OpenExtendedChannelRequested",
    "OpenStandardChannelRequested",
    "Rejected",
    "Share",
    "ShareSubmitted",
]

Share = SubmitSharesStandard | SubmitSharesExtended | CkbSubmitSolution


class ChannelKind(enum.Enum):
    STANDARD = "standard"
    EXTENDED = "extended"


@dataclass(slots=True)
class ChannelInfo:
    """An open standard or extended channel, as both ends track it.

    Mutable on purpose: ``target``, ``extranonce_prefix`` and ``group_channel_id`` follow
    SetTarget / SetExtranoncePrefix / SetGroupChannel. ``extranonce_size`` is 0 for standard
    channels. ``group_channel_id`` 0 means "no group" (SRI's convention).
    """

    channel_id: int
    kind: ChannelKind
    user_identity: str
    nominal_hash_rate: float
    target: int
    extranonce_prefix: bytes
    extranonce_size: int
    group_channel_id: int


@dataclass(frozen=True, slots=True)
class Event:
    """Base class. ``reply``: frame(s) to send now (already encoded), or ``b""``."""

    reply: bytes = field(default=b"", kw_only=True)


# --- connection lifecycle ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionSetUp(Event):
    """SetupConnection succeeded. Server side: ``request`` is the client's message and ``reply``
    the Success frame. Client side: ``request`` is what we sent."""

    request: SetupConnection
    response: SetupConnectionSuccess


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection is over (state CLOSED): send ``reply`` if any, then close the transport.

    ``error_code`` is the SV2 code when one went on the wire (``unsupported-protocol``,
    ``protocol-version-mismatch``, ``unsupported-feature-flags`` -- or the peer's own code from a
    SetupConnection.Error), else a local description (``unexpected-message``,
    ``setup-connection-required``, ``invalid-message``, ``frame-too-large``).
    """

    error_code: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ExtensionsNegotiated(Event):
    """RequestExtensions was answered; ``extensions`` are the ones both ends now use."""

    extensions: frozenset[int]
    response: RequestExtensionsSuccess | RequestExtensionsError


# --- channels ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenStandardChannelRequested(Event):
    """Server: answer with ``accept_standard_channel`` or ``reject_channel``."""

    request: OpenStandardMiningChannel


@dataclass(frozen=True, slots=True)
class OpenExtendedChannelRequested(Event):
    """Server: answer with ``accept_extended_channel`` or ``reject_channel``."""

    request: OpenExtendedMiningChannel


@dataclass(frozen=True, slots=True)
class ChannelOpened(Event):
    """Client: the server accepted an Open*MiningChannel; ``channel`` is now tracked."""

    channel: ChannelInfo
    response: OpenStandardMiningChannelSuccess | OpenExtendedMiningChannelSuccess


@dataclass(frozen=True, slots=True)
class ChannelOpenRejected(Event):
    """Client: the server refused an Open*MiningChannel."""

    response: OpenMiningChannelError


@dataclass(frozen=True, slots=True)
class ChannelUpdateRequested(Event):
    """Server: the client sent UpdateChannel for an open channel. If ``request.maximum_target``
    is below the channel's target, the spec requires a SetTarget that honours it."""

    channel: ChannelInfo
    request: UpdateChannel


@dataclass(frozen=True, slots=True)
class ChannelClosed(Event):
    """A channel is gone (the peer sent CloseChannel for it or for its group)."""

    channel_id: int
    reason_code: str


# --- work ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareSubmitted(Event):
    """Server: a share for an open channel of the right kind. The pool checks it and answers with
    ``acknowledge_shares`` / ``reject_share``.

    ``user_identity``: the worker the share belongs to, from the ``user_identity`` TLV of extension
    0x0002 (already checked: negotiated on this connection, 1..32 bytes of UTF-8), or None when the
    share carries none -- then it is the channel's (``channel.user_identity``). A share whose TLVs
    are not acceptable never becomes this event: it is :class:`Rejected` with a SubmitShares.Error.

    ``ckb_user_identity`` / ``share_target``: the 0x4CCB TLVs (the account ``<address>.<worker>``
    a proxy tags a V1 device's share with, and the target it validated the share against), checked
    for size and encoding only; what they are worth is the pool's judgement.
    """

    channel: ChannelInfo
    share: Share
    user_identity: str | None = None
    ckb_user_identity: str | None = None
    share_target: int | None = None


@dataclass(frozen=True, slots=True)
class CustomMiningJobRequested(Event):
    """Server, only when work selection was negotiated: answer with SetCustomMiningJob.Success/.Error."""

    channel: ChannelInfo
    request: SetCustomMiningJob


@dataclass(frozen=True, slots=True)
class MessageReceived(Event):
    """A valid message for the current state that needs no bookkeeping beyond what the state
    machine did (client: jobs, prev hashes, targets, share results; both: negotiated extension
    messages)."""

    message: Message


# --- refusals ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """The state machine refused ``message`` itself; ``reply`` carries the protocol's error message
    (SubmitShares.Error, UpdateChannel.Error, OpenMiningChannel.Error, SetCustomMiningJob.Error)."""

    message: Message
    error_code: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MessageIgnored(Event):
    """A message dropped without answer: an unknown or un-negotiated extension (the spec says to
    ignore those), or a message for a channel that is already closed (a normal race)."""

    message: Message | UnknownMessage
    reason: str
