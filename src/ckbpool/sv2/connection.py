"""What both ends of a Mining-protocol connection share: states, channel bookkeeping, input plumbing.

The two state machines are :class:`ckbpool.sv2.server.ServerConnection` (pool side) and
:class:`ckbpool.sv2.client.ClientConnection` (miner / proxy side). Both are sans-IO: plaintext
frames (or a plaintext byte stream) in, :mod:`events <ckbpool.sv2.events>` out; sending returns
the plaintext frame to hand to the Noise layer.

Connection states::

    AWAITING_SETUP --(client sends SetupConnection)--> SETUP_SENT            (client only)
    AWAITING_SETUP / SETUP_SENT --(SetupConnection.Success)--> CONNECTED
    any --(SetupConnection.Error, a protocol violation, an undecodable frame)--> CLOSED

Inside CONNECTED, channels come and go: an ``Open*MiningChannel`` request is *pending* until the
server answers; on ``.Success`` the channel is *open* (a :class:`ChannelInfo` in ``channels``);
``CloseChannel`` removes it. A channel may belong to a group (``group_channel_id`` != 0); groups
share the channel-id namespace, are addressed by jobs/prev-hashes/targets like channels, and
closing a group closes its members (spec 5.3.9).

Peer misbehaviour never raises out of ``receive_*``: a handler raises
:class:`~ckbpool.sv2.errors.ProtocolError` (or the frame does not decode) and ``receive_frame``
turns it into a :class:`ConnectionClosed` event. Misuse by the local side (sending something the state forbids) raises
:class:`~ckbpool.sv2.errors.LocalProtocolError`. Input after CLOSED is dropped.
"""

from __future__ import annotations

import enum

from ckbpool.sv2.errors import DecodeError, FrameTooLarge, LocalProtocolError, ProtocolError
from ckbpool.sv2.events import ChannelClosed, ChannelInfo, ConnectionClosed, Event
from ckbpool.sv2.framing import DEFAULT_MAX_PAYLOAD, Frame, FrameDecoder
from ckbpool.sv2.messages import Message, UnknownMessage, decode_frame_bytes, decode_message
from ckbpool.sv2.messages_common import SetupConnection, SetupConnectionSuccess

__all__ = [
    "CLOSE_FRAME_TOO_LARGE",
    "CLOSE_INVALID_MESSAGE",
    "CLOSE_SETUP_REQUIRED",
    "CLOSE_UNEXPECTED_MESSAGE",
    "SV2_VERSION",
    "Connection",
    "ConnectionState",
]

SV2_VERSION = 2

# ConnectionClosed.error_code values for closes that put no error message on the wire.
CLOSE_UNEXPECTED_MESSAGE = "unexpected-message"
CLOSE_SETUP_REQUIRED = "setup-connection-required"
CLOSE_INVALID_MESSAGE = "invalid-message"
CLOSE_FRAME_TOO_LARGE = "frame-too-large"


_NO_EXTENSIONS: frozenset[int] = frozenset()  # shared: an empty frozenset() is a new 216-byte object each time


class ConnectionState(enum.Enum):
    AWAITING_SETUP = "awaiting-setup"
    SETUP_SENT = "setup-sent"
    CONNECTED = "connected"
    CLOSED = "closed"


class Connection:
    """Shared state and plumbing; use :class:`ServerConnection` or :class:`ClientConnection`.

    Slotted: a pool holds one per miner connection (issue 19)."""

    __slots__ = (
        "__weakref__",
        "_decoder",
        "_max_payload",
        "channels",
        "extensions",
        "groups",
        "setup",
        "setup_success",
        "state",
    )

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.state = ConnectionState.AWAITING_SETUP
        #: The SetupConnection exchanged (once known) and the server's answer.
        self.setup: SetupConnection | None = None
        self.setup_success: SetupConnectionSuccess | None = None
        #: Extensions negotiated with RequestExtensions (empty until then).
        self.extensions: frozenset[int] = _NO_EXTENSIONS
        #: Open standard/extended channels by channel_id.
        self.channels: dict[int, ChannelInfo] = {}
        #: Group channel id -> ids of its member channels.
        self.groups: dict[int, set[int]] = {}
        # the plaintext stream decoder, made at the first receive_data (an encrypted connection never needs it)
        self._max_payload = max_payload
        self._decoder: FrameDecoder | None = None

    @property
    def closed(self) -> bool:
        return self.state is ConnectionState.CLOSED

    # --- input -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed a plaintext byte stream (any split); returns the events of every completed frame."""
        if self.state is ConnectionState.CLOSED:
            return []
        try:
            decoder = self._decoder
            if decoder is None:
                decoder = self._decoder = FrameDecoder(self._max_payload)
            frames = decoder.feed(data)
        except FrameTooLarge as exc:
            return [self._close(CLOSE_FRAME_TOO_LARGE, str(exc))]
        events: list[Event] = []
        for frame in frames:
            events.extend(self.receive_frame(frame))
            if self.closed:
                break
        return events

    def receive_frame(self, frame: Frame | bytes) -> list[Event]:
        """Process one whole plaintext frame (a :class:`Frame`, or its bytes as Noise returns them)."""
        if self.state is ConnectionState.CLOSED:
            return []
        try:
            message = decode_frame_bytes(frame) if isinstance(frame, bytes | bytearray) else decode_message(frame)
        except DecodeError as exc:
            return [self._close(CLOSE_INVALID_MESSAGE, str(exc))]
        try:
            return self._handle(message)
        except ProtocolError as exc:
            return [self._close(exc.error_code, exc.detail)]

    def _handle(self, message: Message | UnknownMessage) -> list[Event]:
        raise NotImplementedError

    def _close(self, error_code: str, detail: str = "", reply: bytes = b"") -> ConnectionClosed:
        self.state = ConnectionState.CLOSED
        return ConnectionClosed(error_code, detail, reply=reply)

    def _require_connected(self, what: str) -> None:
        if self.state is not ConnectionState.CONNECTED:
            raise LocalProtocolError(f"cannot send {what} in state {self.state.value}")

    # --- channel bookkeeping -----------------------------------------------------------------

    def is_group(self, channel_id: int) -> bool:
        return channel_id in self.groups

    def _members(self, channel_id: int) -> list[ChannelInfo] | None:
        """The channels a channel-or-group id addresses, or None if it names neither."""
        channel = self.channels.get(channel_id)
        if channel is not None:
            return [channel]
        members = self.groups.get(channel_id)
        if members is None:
            return None
        return [self.channels[c] for c in members]

    def _add_channel(self, channel: ChannelInfo) -> None:
        self.channels[channel.channel_id] = channel
        if channel.group_channel_id:
            self.groups.setdefault(channel.group_channel_id, set()).add(channel.channel_id)

    def _set_group(self, group_channel_id: int, channel_ids: tuple[int, ...]) -> None:
        """SetGroupChannel: move the listed channels into ``group_channel_id``."""
        for cid in channel_ids:
            channel = self.channels[cid]
            self._leave_group(channel)
            channel.group_channel_id = group_channel_id
        self.groups.setdefault(group_channel_id, set()).update(channel_ids)

    def _leave_group(self, channel: ChannelInfo) -> None:
        members = self.groups.get(channel.group_channel_id)
        if members is not None:
            members.discard(channel.channel_id)

    def _close_channels(self, channel_id: int, reason_code: str) -> list[Event]:
        """Remove a channel, or a group and all its members; one ChannelClosed per channel."""
        events: list[Event] = []
        channel = self.channels.pop(channel_id, None)
        if channel is not None:
            self._leave_group(channel)
            self._forget(channel_id)
            events.append(ChannelClosed(channel_id, reason_code))
        members = self.groups.pop(channel_id, None)
        if members is not None:
            self._forget(channel_id)
            for cid in sorted(members):
                if self.channels.pop(cid, None) is not None:
                    self._forget(cid)
                    events.append(ChannelClosed(cid, reason_code))
        return events

    def _forget(self, channel_id: int) -> None:
        """Hook: drop per-channel state kept by a subclass."""
