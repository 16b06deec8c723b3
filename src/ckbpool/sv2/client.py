"""The miner's (or proxy's) end of a Mining-protocol connection, sans-IO.

The client drives the conversation: :meth:`ClientConnection.send` a ``SetupConnection``, then
(optionally) ``RequestExtensions``, then ``Open*MiningChannel`` requests, then shares. Incoming
frames become events; the state machine keeps the channel table (targets, extranonce prefixes,
groups) current so the miner can read it from ``conn.channels``.

Receiving is lenient where the protocol has natural races: a job, target or share result for a
channel we already closed is reported as :class:`MessageIgnored`, not treated as an error. A
message that no server may send, or a reply to something we never asked, ends the connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ckbpool.sv2.connection import (
    CLOSE_UNEXPECTED_MESSAGE,
    Connection,
    ConnectionState,
)
from ckbpool.sv2.errors import LocalProtocolError, ProtocolError
from ckbpool.sv2.events import (
    ChannelInfo,
    ChannelKind,
    ChannelOpened,
    ChannelOpenRejected,
    ConnectionSetUp,
    Event,
    ExtensionsNegotiated,
    MessageIgnored,
    MessageReceived,
)
from ckbpool.sv2.extensions import EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, TlvRejected, read_share_tlvs
from ckbpool.sv2.framing import DEFAULT_MAX_PAYLOAD
from ckbpool.sv2.messages import Message, UnknownMessage, encode_message
from ckbpool.sv2.messages_ckb import CkbJobTemplate, CkbSubmitSolution, CkbTemplateSubscribe
from ckbpool.sv2.messages_common import (
    ERROR_PROTOCOL_VERSION_MISMATCH,
    EXTENSION_TYPE_EXTENSIONS_NEGOTIATION,
    PROTOCOL_MINING,
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
    REQUIRES_EXTENDED_CHANNELS,
    REQUIRES_STANDARD_JOBS,
    REQUIRES_WORK_SELECTION,
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

__all__ = ["ClientConnection"]

_Handler = Callable[[Any], list[Event]]
_Sender = Callable[[Any], None]
_OpenRequest = OpenStandardMiningChannel | OpenExtendedMiningChannel


class ClientConnection(Connection):
    """Miner / proxy side of one connection."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        super().__init__(max_payload)
        self.pending_requests: dict[int, _OpenRequest] = {}
        self._pending_extensions: RequestExtensions | None = None
        self._mining_started = False
        self._handlers: dict[type[Message], _Handler] = {
            RequestExtensionsSuccess: self._on_extensions_response,
            RequestExtensionsError: self._on_extensions_response,
            OpenStandardMiningChannelSuccess: self._on_open_success,
            OpenExtendedMiningChannelSuccess: self._on_open_success,
            OpenMiningChannelError: self._on_open_error,
            NewMiningJob: self._on_new_mining_job,
            NewExtendedMiningJob: self._on_new_extended_job,
            SetNewPrevHash: self._on_set_target_or_prev_hash,
            SetTarget: self._on_set_target_or_prev_hash,
            SetExtranoncePrefix: self._on_set_extranonce_prefix,
            SetGroupChannel: self._on_set_group_channel,
            CloseChannel: self._on_close_channel,
            SubmitSharesSuccess: self._on_channel_message,
            SubmitSharesError: self._on_channel_message,
            UpdateChannelError: self._on_channel_message,
            SetCustomMiningJobSuccess: self._on_channel_message,
            SetCustomMiningJobError: self._on_channel_message,
            CkbJobTemplate: self._on_channel_message,
            Reconnect: self._on_connection_message,
            ChannelEndpointChanged: self._on_connection_message,
        }
        self._senders: dict[type[Message], _Sender] = {
            RequestExtensions: self._send_request_extensions,
            OpenStandardMiningChannel: self._send_open,
            OpenExtendedMiningChannel: self._send_open,
            UpdateChannel: self._require_channel,
            CloseChannel: self._send_close_channel,
            SubmitSharesStandard: self._send_share,
            SubmitSharesExtended: self._send_share,
            SetCustomMiningJob: self._send_custom_job,
            CkbTemplateSubscribe: self._require_channel,
            CkbSubmitSolution: self._require_channel,
        }

    # --- output ------------------------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """Validate ``message`` against the state, update bookkeeping, return its plaintext frame."""
        if isinstance(message, SetupConnection):
            if self.state is not ConnectionState.AWAITING_SETUP:
                raise LocalProtocolError("SetupConnection is sent once, first")
            if message.protocol != PROTOCOL_MINING:
                raise LocalProtocolError("this state machine speaks the Mining protocol (protocol 0)")
            self.setup = message
            self.state = ConnectionState.SETUP_SENT
            return encode_message(message)
        self._require_connected(type(message).__name__)
        check = self._senders.get(type(message))
        if check is None:
            raise LocalProtocolError(f"a client does not send {type(message).__name__}")
        if message.EXTENSION_TYPE > EXTENSION_TYPE_EXTENSIONS_NEGOTIATION and (
            message.EXTENSION_TYPE not in self.extensions
        ):
            raise LocalProtocolError(f"extension {message.EXTENSION_TYPE:#06x} was not negotiated")
        check(message)
        return encode_message(message)

    def _send_request_extensions(self, msg: RequestExtensions) -> None:
        # Extension 0x0001 section 4: right after SetupConnection.Success, one request at a time.
        if self._mining_started:
            raise LocalProtocolError("RequestExtensions must precede every Mining message")
        if self._pending_extensions is not None:
            raise LocalProtocolError("a RequestExtensions is already waiting for its answer")
        self._pending_extensions = msg

    def _send_open(self, msg: _OpenRequest) -> None:
        if self._pending_extensions is not None:
            raise LocalProtocolError("wait for the RequestExtensions answer before opening channels")
        if msg.request_id in self.pending_requests:
            raise LocalProtocolError(f"request_id {msg.request_id} is already pending")
        assert self.setup is not None and self.setup_success is not None
        if isinstance(msg, OpenStandardMiningChannel):
            if self.setup_success.flags & REQUIRES_EXTENDED_CHANNELS:
                raise LocalProtocolError("the server set REQUIRES_EXTENDED_CHANNELS")
        elif self.setup.flags & REQUIRES_STANDARD_JOBS:
            raise LocalProtocolError("an extended channel contradicts our REQUIRES_STANDARD_JOBS")
        self._mining_started = True
        self.pending_requests[msg.request_id] = msg

    def _send_share(self, msg: SubmitSharesStandard | SubmitSharesExtended) -> None:
        channel = self.channels.get(msg.channel_id)
        kind = ChannelKind.STANDARD if isinstance(msg, SubmitSharesStandard) else ChannelKind.EXTENDED
        if channel is None or channel.kind is not kind:
            raise LocalProtocolError(f"{type(msg).__name__} needs an open {kind.value} channel")
        if isinstance(msg, SubmitSharesExtended):
            if len(msg.extranonce) != channel.extranonce_size:
                raise LocalProtocolError(f"extranonce must be {channel.extranonce_size} bytes")
            try:
                identity = read_share_tlvs(msg.tlvs, self.extensions) if msg.tlvs else None
            except TlvRejected as exc:
                raise LocalProtocolError(str(exc)) from None
            if identity is None and EXTENSION_TYPE_WORKER_HASHRATE_TRACKING in self.extensions:
                # 0x0002 section 1.2: once negotiated, every SubmitSharesExtended carries the TLV.
                raise LocalProtocolError("extension 0x0002 is negotiated: the share needs a user_identity TLV")

    def _send_custom_job(self, msg: SetCustomMiningJob) -> None:
        assert self.setup is not None
        if not self.setup.flags & REQUIRES_WORK_SELECTION:
            raise LocalProtocolError("SetCustomMiningJob needs REQUIRES_WORK_SELECTION in SetupConnection")
        channel = self.channels.get(msg.channel_id)
        if channel is None or channel.kind is not ChannelKind.EXTENDED:
            raise LocalProtocolError("SetCustomMiningJob needs an open extended channel")

    def _send_close_channel(self, msg: CloseChannel) -> None:
        if msg.channel_id not in self.channels and msg.channel_id not in self.groups:
            raise LocalProtocolError(f"no channel or group {msg.channel_id}")
        self._close_channels(msg.channel_id, msg.reason_code)

    def _require_channel(self, msg: Any) -> None:
        if msg.channel_id not in self.channels:
            raise LocalProtocolError(f"{type(msg).__name__} for channel {msg.channel_id}, which is not open")

    # --- input -------------------------------------------------------------------------------

    def _handle(self, message: Message | UnknownMessage) -> list[Event]:
        if self.state is ConnectionState.SETUP_SENT:
            return [self._on_setup_response(message)]
        if self.state is ConnectionState.AWAITING_SETUP:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, "the server spoke before SetupConnection")
        if isinstance(message, UnknownMessage):
            return [MessageIgnored(message, "unknown message type")]
        if message.EXTENSION_TYPE > EXTENSION_TYPE_EXTENSIONS_NEGOTIATION and (
            message.EXTENSION_TYPE not in self.extensions
        ):
            return [MessageIgnored(message, "extension not negotiated")]
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, f"a server does not send {type(message).__name__}")
        return handler(message)

    def _on_setup_response(self, message: Message | UnknownMessage) -> Event:
        assert self.setup is not None
        if isinstance(message, SetupConnectionError):
            return self._close(message.error_code, f"server refused SetupConnection (flags {message.flags:#x})")
        if not isinstance(message, SetupConnectionSuccess):
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, f"{type(message).__name__} before SetupConnection.Success")
        if not self.setup.min_version <= message.used_version <= self.setup.max_version:
            return self._close(ERROR_PROTOCOL_VERSION_MISMATCH, f"server chose version {message.used_version}")
        self.setup_success = message
        self.state = ConnectionState.CONNECTED
        return ConnectionSetUp(self.setup, message)

    def _on_extensions_response(self, msg: RequestExtensionsSuccess | RequestExtensionsError) -> list[Event]:
        request = self._pending_extensions
        if request is None or request.request_id != msg.request_id:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, f"unsolicited {type(msg).__name__}")
        self._pending_extensions = None
        if isinstance(msg, RequestExtensionsSuccess):
            # Only what we asked for can be in use, whatever the server lists.
            self.extensions = frozenset(msg.supported_extensions) & frozenset(request.requested_extensions)
        return [ExtensionsNegotiated(self.extensions, msg)]

    def _on_open_success(self, msg: OpenStandardMiningChannelSuccess | OpenExtendedMiningChannelSuccess) -> list[Event]:
        request = self.pending_requests.get(msg.request_id)
        is_standard = isinstance(msg, OpenStandardMiningChannelSuccess)
        wanted = OpenStandardMiningChannel if is_standard else OpenExtendedMiningChannel
        if not isinstance(request, wanted):
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, f"{type(msg).__name__} for no pending request")
        if msg.channel_id in self.channels or msg.channel_id in self.groups:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, f"channel_id {msg.channel_id} reused")
        del self.pending_requests[msg.request_id]
        if isinstance(msg, OpenExtendedMiningChannelSuccess):
            kind, size = ChannelKind.EXTENDED, msg.extranonce_size
        else:
            kind, size = ChannelKind.STANDARD, 0
        channel = ChannelInfo(
            msg.channel_id,
            kind,
            request.user_identity,
            request.nominal_hash_rate,
            msg.target,
            msg.extranonce_prefix,
            size,
            msg.group_channel_id,
        )
        self._add_channel(channel)
        return [ChannelOpened(channel, msg)]

    def _on_open_error(self, msg: OpenMiningChannelError) -> list[Event]:
        if self.pending_requests.pop(msg.request_id, None) is None:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, "OpenMiningChannel.Error for no pending request")
        return [ChannelOpenRejected(msg)]

    def _on_new_mining_job(self, msg: NewMiningJob) -> list[Event]:
        channel = self.channels.get(msg.channel_id)
        if channel is None:
            return [MessageIgnored(msg, "no such channel")]
        if channel.kind is not ChannelKind.STANDARD:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, "NewMiningJob on an extended channel")
        return [MessageReceived(msg)]

    def _on_new_extended_job(self, msg: NewExtendedMiningJob) -> list[Event]:
        members = self._members(msg.channel_id)
        if members is None:
            return [MessageIgnored(msg, "no such channel")]
        if msg.channel_id in self.channels and members[0].kind is not ChannelKind.EXTENDED:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, "NewExtendedMiningJob on a standard channel")
        return [MessageReceived(msg)]

    def _on_set_target_or_prev_hash(self, msg: SetTarget | SetNewPrevHash) -> list[Event]:
        members = self._members(msg.channel_id)
        if members is None:
            return [MessageIgnored(msg, "no such channel")]
        if isinstance(msg, SetTarget):
            for channel in members:
                channel.target = msg.maximum_target
        return [MessageReceived(msg)]

    def _on_set_extranonce_prefix(self, msg: SetExtranoncePrefix) -> list[Event]:
        channel = self.channels.get(msg.channel_id)
        if channel is None:
            return [MessageIgnored(msg, "no such channel")]
        channel.extranonce_prefix = msg.extranonce_prefix
        return [MessageReceived(msg)]

    def _on_set_group_channel(self, msg: SetGroupChannel) -> list[Event]:
        if msg.group_channel_id in self.channels:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, "SetGroupChannel reuses a channel id as group id")
        self._set_group(msg.group_channel_id, tuple(c for c in msg.channel_ids if c in self.channels))
        return [MessageReceived(msg)]

    def _on_close_channel(self, msg: CloseChannel) -> list[Event]:
        events = self._close_channels(msg.channel_id, msg.reason_code)
        return events or [MessageIgnored(msg, "no such channel")]

    def _on_channel_message(self, msg: Any) -> list[Event]:
        if msg.channel_id not in self.channels:
            return [MessageIgnored(msg, "no such channel")]
        return [MessageReceived(msg)]

    def _on_connection_message(self, msg: Message) -> list[Event]:
        return [MessageReceived(msg)]
