"""The pool's end of a Mining-protocol connection, sans-IO.

The state machine enforces the protocol and answers what the protocol alone can answer; it never
decides pool policy. It does not choose targets, channel ids or extranonce prefixes, and it does
not judge shares: it reports :class:`OpenStandardChannelRequested`, :class:`ShareSubmitted`, ...
and the pool answers through :meth:`ServerConnection.accept_standard_channel`,
:meth:`~ServerConnection.acknowledge_shares`, ... or the generic :meth:`~ServerConnection.send`.

What it answers by itself (the reply travels in the event's ``reply``):

========================================  ======================================================
peer does                                 state machine answers
========================================  ======================================================
anything before SetupConnection           close (no message exists for this)
SetupConnection, protocol != 0            SetupConnection.Error ``unsupported-protocol``, close
SetupConnection, no common version        SetupConnection.Error ``protocol-version-mismatch``,
                                          close
SetupConnection, flags we do not support  SetupConnection.Error ``unsupported-feature-flags``
                                          (flags = the unsupported ones), close
SetupConnection, acceptable               SetupConnection.Success(2, ``success_flags``)
a second SetupConnection, or a message    close (``unexpected-message``)
only a server may send
RequestExtensions                         .Success(requested ∩ supported) or .Error (none
                                          supported / required ones missing)
Open*MiningChannel whose request_id is    OpenMiningChannel.Error ``duplicate-request-id``
still pending
OpenStandardMiningChannel while we set    OpenMiningChannel.Error
REQUIRES_EXTENDED_CHANNELS                ``standard-channels-not-supported``
OpenExtendedMiningChannel from a client   OpenMiningChannel.Error
that set REQUIRES_STANDARD_JOBS           ``extended-channels-not-supported-for-standard-jobs``
SubmitShares* for an unknown channel or   SubmitShares.Error ``invalid-channel-id``
one of the other kind
SubmitSharesExtended with an extranonce   SubmitShares.Error ``bad-extranonce-size``
of the wrong size
SubmitSharesExtended with TLVs this       SubmitShares.Error ``extension-not-negotiated``,
connection may not carry                  ``invalid-tlv`` or ``invalid-user-identity``
                                          (:mod:`ckbpool.sv2.extensions`); valid ones give
                                          ``ShareSubmitted.user_identity``
UpdateChannel for an unknown channel      UpdateChannel.Error ``invalid-channel-id``
SetCustomMiningJob                        SetCustomMiningJob.Error ``invalid-channel-id``, or
                                          ``jd-not-supported`` unless work selection was agreed
CloseChannel for an unknown channel       nothing (``MessageIgnored``: it may have just closed)
unknown / un-negotiated extension msg     nothing (``MessageIgnored``; spec 3.4.1)
========================================  ======================================================

On the sending side it checks what the spec requires of a server: jobs only to channels of the
right kind, ``SetNewPrevHash`` only for a job previously sent as a future job on that channel or
its group, no ``SetGroupChannel`` to a connection that set REQUIRES_STANDARD_JOBS, unique
channel/group ids, one extranonce size per group. Violations raise ``LocalProtocolError``.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from ckbpool.sv2.connection import (
    CLOSE_SETUP_REQUIRED,
    CLOSE_UNEXPECTED_MESSAGE,
    SV2_VERSION,
    Connection,
    ConnectionState,
)
from ckbpool.sv2.errors import LocalProtocolError, ProtocolError
from ckbpool.sv2.events import (
    ChannelInfo,
    ChannelKind,
    ChannelUpdateRequested,
    ConnectionSetUp,
    CustomMiningJobRequested,
    Event,
    ExtensionsNegotiated,
    MessageIgnored,
    MessageReceived,
    OpenExtendedChannelRequested,
    OpenStandardChannelRequested,
    Rejected,
    ShareSubmitted,
)
from ckbpool.sv2.extensions import TlvRejected, read_share_extensions
from ckbpool.sv2.framing import DEFAULT_MAX_INBOUND_PAYLOAD, HEADER_SIZE
from ckbpool.sv2.messages import Message, UnknownMessage, encode_message
from ckbpool.sv2.messages_ckb import (
    CkbJobTemplate,
    CkbSubmitSolution,
    CkbTemplateSubscribe,
)
from ckbpool.sv2.messages_common import (
    ERROR_PROTOCOL_VERSION_MISMATCH,
    ERROR_UNSUPPORTED_FEATURE_FLAGS,
    ERROR_UNSUPPORTED_PROTOCOL,
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
    ERROR_BAD_EXTRANONCE_SIZE,
    ERROR_INVALID_CHANNEL_ID,
    ERROR_JD_NOT_SUPPORTED,
    REQUIRES_EXTENDED_CHANNELS,
    REQUIRES_FIXED_VERSION,
    REQUIRES_STANDARD_JOBS,
    REQUIRES_VERSION_ROLLING,
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

__all__ = [
    "ERROR_DUPLICATE_REQUEST_ID",
    "ERROR_EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS",
    "ERROR_STANDARD_CHANNELS_NOT_SUPPORTED",
    "KNOWN_MINING_SETUP_FLAGS",
    "PreparedJobMessage",
    "ServerConnection",
]

ERROR_DUPLICATE_REQUEST_ID = "duplicate-request-id"
ERROR_STANDARD_CHANNELS_NOT_SUPPORTED = "standard-channels-not-supported"
ERROR_EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS = "extended-channels-not-supported-for-standard-jobs"

#: The SetupConnection flags the Mining protocol defines. Bits outside this set are ignored (as
#: SRI does) so that a flag defined later does not lock out newer clients.
KNOWN_MINING_SETUP_FLAGS = REQUIRES_STANDARD_JOBS | REQUIRES_WORK_SELECTION | REQUIRES_VERSION_ROLLING

_Handler = Callable[["ServerConnection", Any], list[Event]]
_Sender = Callable[["ServerConnection", Any], None]
_OpenRequest = OpenStandardMiningChannel | OpenExtendedMiningChannel


# receive_standard_share: the frame of a SubmitSharesStandard with its fixed 24-byte payload (extension 0, with or
# without the channel-message bit, which decode_frame_bytes ignores too)
_SHARE_STD_FRAME = HEADER_SIZE + 24
_SHARE_STD_HEADERS = frozenset(bytes([0, flag, SubmitSharesStandard.MSG_TYPE, 24, 0, 0]) for flag in (0x00, 0x80))
_SHARE_STD_UNPACK = struct.Struct("<6I").unpack_from


class ServerConnection(Connection):
    """Pool side of one connection.

    ``success_flags``: the SetupConnection.Success flags (e.g. the CKB profile's PoW bit).
    ``supported_flags``: client SetupConnection flags we can honour; the default honours standard
    jobs and version rolling (the CKB profile always allows version rolling) but not work
    selection. ``supported_extensions`` / ``required_extensions``: for RequestExtensions
    (0x0001 itself is always supported). ``max_payload``: the largest frame accepted from the client,
    by default :data:`~ckbpool.sv2.framing.DEFAULT_MAX_INBOUND_PAYLOAD` (client messages are small).
    """

    __slots__ = (
        "_future_jobs",
        "_group_extranonce",
        "pending_requests",
        "required_extensions",
        "success_flags",
        "supported_extensions",
        "supported_flags",
    )

    def __init__(
        self,
        *,
        success_flags: int = 0,
        supported_flags: int = REQUIRES_STANDARD_JOBS | REQUIRES_VERSION_ROLLING,
        supported_extensions: Iterable[int] = (),
        required_extensions: Iterable[int] = (),
        max_payload: int = DEFAULT_MAX_INBOUND_PAYLOAD,
    ) -> None:
        super().__init__(max_payload)
        if success_flags & REQUIRES_FIXED_VERSION:
            # Spec 5.3.1: REQUIRES_FIXED_VERSION excludes a client that requires version rolling.
            supported_flags &= ~REQUIRES_VERSION_ROLLING
        self.success_flags = success_flags
        self.supported_flags = supported_flags
        self.supported_extensions = _extension_set(frozenset(supported_extensions))
        self.required_extensions = tuple(required_extensions)
        self.pending_requests: dict[int, _OpenRequest] = {}
        self._future_jobs: dict[int, set[int]] = {}
        self._group_extranonce: dict[int, int] = {}

    @property
    def requires_standard_jobs(self) -> bool:
        """The client set REQUIRES_STANDARD_JOBS: it can only take NewMiningJob."""
        return self.setup is not None and bool(self.setup.flags & REQUIRES_STANDARD_JOBS)

    # --- input -------------------------------------------------------------------------------

    def _handle(self, message: Message | UnknownMessage) -> list[Event]:
        if self.state is ConnectionState.AWAITING_SETUP:
            if isinstance(message, SetupConnection):
                return [self._on_setup_connection(message)]
            raise ProtocolError(CLOSE_SETUP_REQUIRED, f"{type(message).__name__} before SetupConnection")
        if isinstance(message, UnknownMessage):
            return [MessageIgnored(message, "unknown message type")]
        if message.EXTENSION_TYPE > EXTENSION_TYPE_EXTENSIONS_NEGOTIATION and (
            message.EXTENSION_TYPE not in self.extensions
        ):
            return [MessageIgnored(message, "extension not negotiated")]
        handler = self._HANDLERS.get(type(message))
        if handler is None:
            raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, f"a client does not send {type(message).__name__}")
        return handler(self, message)

    def _unexpected(self, message: Message) -> list[Event]:
        raise ProtocolError(CLOSE_UNEXPECTED_MESSAGE, f"{type(message).__name__} after setup")

    def _on_setup_connection(self, msg: SetupConnection) -> Event:
        if msg.protocol != PROTOCOL_MINING:
            return self._refuse_setup(0, ERROR_UNSUPPORTED_PROTOCOL, f"protocol {msg.protocol}")
        if not msg.min_version <= SV2_VERSION <= msg.max_version:
            return self._refuse_setup(
                0, ERROR_PROTOCOL_VERSION_MISMATCH, f"versions {msg.min_version}..{msg.max_version}"
            )
        unsupported = msg.flags & KNOWN_MINING_SETUP_FLAGS & ~self.supported_flags
        if unsupported:
            return self._refuse_setup(unsupported, ERROR_UNSUPPORTED_FEATURE_FLAGS, f"flags {unsupported:#x}")
        success = SetupConnectionSuccess(SV2_VERSION, self.success_flags)
        # kept for its protocol, versions and flags; the device strings (vendor, firmware, ...) travel in the
        # ConnectionSetUp event only: a pool holds one of these per connection (issue 19)
        kept = msg
        if msg.endpoint_host or msg.vendor or msg.hardware_version or msg.firmware or msg.device_id:
            kept = dataclasses.replace(msg, endpoint_host="", vendor="", hardware_version="", firmware="", device_id="")
        self.setup, self.setup_success = kept, success
        self.state = ConnectionState.CONNECTED
        return ConnectionSetUp(msg, success, reply=encode_message(success))

    def _refuse_setup(self, flags: int, error_code: str, detail: str) -> Event:
        return self._close(error_code, detail, reply=encode_message(SetupConnectionError(flags, error_code)))

    def _on_request_extensions(self, msg: RequestExtensions) -> list[Event]:
        requested = dict.fromkeys(msg.requested_extensions)  # ordered, without duplicates
        supported = tuple(e for e in requested if e in self.supported_extensions)
        missing = tuple(e for e in self.required_extensions if e not in requested)
        response: RequestExtensionsSuccess | RequestExtensionsError
        if supported and not missing:
            response = RequestExtensionsSuccess(msg.request_id, supported)
            self.extensions = frozenset(supported)
        else:
            unsupported = tuple(e for e in requested if e not in self.supported_extensions)
            response = RequestExtensionsError(msg.request_id, unsupported, missing)
            self.extensions = frozenset()
        return [ExtensionsNegotiated(self.extensions, response, reply=encode_message(response))]

    def _on_open_standard(self, msg: OpenStandardMiningChannel) -> list[Event]:
        if msg.request_id in self.pending_requests:
            return [self._reject_open(msg, ERROR_DUPLICATE_REQUEST_ID)]
        if self.success_flags & REQUIRES_EXTENDED_CHANNELS:
            return [self._reject_open(msg, ERROR_STANDARD_CHANNELS_NOT_SUPPORTED)]
        self.pending_requests[msg.request_id] = msg
        return [OpenStandardChannelRequested(msg)]

    def _on_open_extended(self, msg: OpenExtendedMiningChannel) -> list[Event]:
        if msg.request_id in self.pending_requests:
            return [self._reject_open(msg, ERROR_DUPLICATE_REQUEST_ID)]
        if self.requires_standard_jobs:
            return [self._reject_open(msg, ERROR_EXTENDED_CHANNELS_NOT_SUPPORTED_FOR_STANDARD_JOBS)]
        self.pending_requests[msg.request_id] = msg
        return [OpenExtendedChannelRequested(msg)]

    def _reject_open(self, msg: _OpenRequest, error_code: str) -> Event:
        reply = encode_message(OpenMiningChannelError(msg.request_id, error_code))
        return Rejected(msg, error_code, reply=reply)

    def _on_update_channel(self, msg: UpdateChannel) -> list[Event]:
        channel = self.channels.get(msg.channel_id)
        if channel is None:
            reply = encode_message(UpdateChannelError(msg.channel_id, ERROR_INVALID_CHANNEL_ID))
            return [Rejected(msg, ERROR_INVALID_CHANNEL_ID, reply=reply)]
        channel.nominal_hash_rate = msg.nominal_hash_rate
        return [ChannelUpdateRequested(channel, msg)]

    def _on_close_channel(self, msg: CloseChannel) -> list[Event]:
        events = self._close_channels(msg.channel_id, msg.reason_code)
        return events or [MessageIgnored(msg, "no such channel")]

    def _on_submit_standard(self, msg: SubmitSharesStandard) -> list[Event]:
        channel = self.channels.get(msg.channel_id)
        if channel is None or channel.kind is not ChannelKind.STANDARD:
            return [self._reject_share(msg, ERROR_INVALID_CHANNEL_ID)]
        return [ShareSubmitted(channel, msg)]

    def receive_standard_share(self, frame: bytes) -> Event | None:
        """``receive_frame`` for the commonest frame a pool reads, a 24-byte SubmitSharesStandard, as one event
        (ShareSubmitted, or Rejected for a channel that is not an open standard one); None for any other frame
        or state, which then goes through ``receive_frame``. Same result, without the generic decode and
        dispatch and the event list (issue 19: per-share Python work)."""
        if len(frame) != _SHARE_STD_FRAME or frame[:HEADER_SIZE] not in _SHARE_STD_HEADERS:
            return None
        if self.state is not ConnectionState.CONNECTED:
            return None
        msg = SubmitSharesStandard(*_SHARE_STD_UNPACK(frame, HEADER_SIZE))
        channel = self.channels.get(msg.channel_id)
        if channel is None or channel.kind is not ChannelKind.STANDARD:
            return self._reject_share(msg, ERROR_INVALID_CHANNEL_ID)
        return ShareSubmitted(channel, msg)

    def _on_submit_extended(self, msg: SubmitSharesExtended) -> list[Event]:
        channel = self.channels.get(msg.channel_id)
        if channel is None or channel.kind is not ChannelKind.EXTENDED:
            return [self._reject_share(msg, ERROR_INVALID_CHANNEL_ID)]
        if len(msg.extranonce) != channel.extranonce_size:
            return [self._reject_share(msg, ERROR_BAD_EXTRANONCE_SIZE)]
        if not msg.tlvs:
            return [ShareSubmitted(channel, msg)]
        try:
            found = read_share_extensions(msg.tlvs, self.extensions)
        except TlvRejected as exc:
            return [self._reject_share(msg, exc.error_code, exc.detail)]
        return [ShareSubmitted(channel, msg, found.user_identity, found.ckb_user_identity, found.share_target)]

    def _on_ckb_solution(self, msg: CkbSubmitSolution) -> list[Event]:
        channel = self.channels.get(msg.channel_id)
        if channel is None:
            return [self._reject_share(msg, ERROR_INVALID_CHANNEL_ID)]
        return [ShareSubmitted(channel, msg)]

    def _reject_share(
        self, msg: SubmitSharesStandard | SubmitSharesExtended | CkbSubmitSolution, error_code: str, detail: str = ""
    ) -> Event:
        reply = encode_message(SubmitSharesError(msg.channel_id, msg.sequence_number, error_code))
        return Rejected(msg, error_code, detail, reply=reply)

    def _on_set_custom_mining_job(self, msg: SetCustomMiningJob) -> list[Event]:
        channel = self.channels.get(msg.channel_id)
        code = ERROR_INVALID_CHANNEL_ID
        if channel is not None and channel.kind is ChannelKind.EXTENDED:
            assert self.setup is not None
            if self.setup.flags & REQUIRES_WORK_SELECTION:
                return [CustomMiningJobRequested(channel, msg)]
            code = ERROR_JD_NOT_SUPPORTED
        reply = encode_message(SetCustomMiningJobError(msg.channel_id, msg.request_id, code))
        return [Rejected(msg, code, reply=reply)]

    def _on_ckb_subscribe(self, msg: CkbTemplateSubscribe) -> list[Event]:
        if msg.channel_id not in self.channels:
            return [MessageIgnored(msg, "no such channel")]
        return [MessageReceived(msg)]

    # --- output ------------------------------------------------------------------------------

    def send(self, message: Message) -> bytes:
        """Validate ``message`` against the state, update bookkeeping, return its plaintext frame."""
        self._require_connected(type(message).__name__)
        check = self._SENDERS.get(type(message))
        if check is None:
            raise LocalProtocolError(f"a server does not send {type(message).__name__} (or it is automatic)")
        if message.EXTENSION_TYPE > EXTENSION_TYPE_EXTENSIONS_NEGOTIATION and (
            message.EXTENSION_TYPE not in self.extensions
        ):
            raise LocalProtocolError(f"extension {message.EXTENSION_TYPE:#06x} was not negotiated")
        check(self, message)
        return encode_message(message)

    def send_for_channel(self, prepared: PreparedJobMessage, channel_id: int) -> bytes:
        """What ``send()`` returns for ``prepared.message`` with ``channel_id`` as its channel, with the same
        checks and bookkeeping, but without building or encoding the message again: a new tip goes to every
        channel with the same job, so the pool encodes it once and only the channel id differs."""
        self._require_connected(prepared.name)
        prepared.check(self, channel_id, prepared.job_id, prepared.future)
        frame = prepared.frame
        return frame[:HEADER_SIZE] + channel_id.to_bytes(4, "little") + frame[HEADER_SIZE + 4 :]

    def send_new_tip(
        self, job: PreparedJobMessage, prev_hash: PreparedJobMessage, channel_id: int
    ) -> tuple[bytes, bytes]:
        """``send_for_channel(job, channel_id)`` then ``send_for_channel(prev_hash, channel_id)``: a future job and
        the SetNewPrevHash that activates it at once (every channel on a new tip). Same checks, frames and state
        after, without recording the future job the SetNewPrevHash would drop again (the fan-out's per-channel
        bookkeeping, issue 19)."""
        if not self.check_new_tip(job, prev_hash, channel_id):
            return self.send_for_channel(job, channel_id), self.send_for_channel(prev_hash, channel_id)
        cid = channel_id.to_bytes(4, "little")
        return job.header + cid + job.tail, prev_hash.header + cid + prev_hash.tail

    def check_new_tip(self, job: PreparedJobMessage, prev_hash: PreparedJobMessage, channel_id: int) -> bool:
        """The checks and bookkeeping of ``send_new_tip`` without building its frames: True and the state updated
        as if both were sent (the caller then sends ``header + channel id + tail`` of each, e.g. encrypted
        straight from those pieces); False, nothing checked or changed, when the pair is not a future job and
        its SetNewPrevHash (then ``send_new_tip`` falls back to two ``send_for_channel``). Raises as they do."""
        if not job.future or prev_hash.check is not ServerConnection._check_prev_hash or prev_hash.job_id != job.job_id:
            return False
        self._require_connected(job.name)
        job.check(self, channel_id, job.job_id, False)  # the channel (or group) exists and is of the job's kind
        futures = self._future_jobs
        if futures:  # "the remaining queued jobs have to be made invalid" (as _check_prev_hash)
            futures.pop(channel_id, None)
            if not futures:
                self._future_jobs = {}
        return True

    def accept_standard_channel(
        self, request_id: int, channel_id: int, target: int, extranonce_prefix: bytes, group_channel_id: int = 0
    ) -> bytes:
        """Answer a pending OpenStandardMiningChannel with .Success; the channel is open from now."""
        return self.send(
            OpenStandardMiningChannelSuccess(request_id, channel_id, target, extranonce_prefix, group_channel_id)
        )

    def accept_extended_channel(
        self,
        request_id: int,
        channel_id: int,
        target: int,
        extranonce_prefix: bytes,
        extranonce_size: int,
        group_channel_id: int = 0,
    ) -> bytes:
        """Answer a pending OpenExtendedMiningChannel with .Success; the channel is open from now."""
        return self.send(
            OpenExtendedMiningChannelSuccess(
                request_id, channel_id, target, extranonce_size, extranonce_prefix, group_channel_id
            )
        )

    def reject_channel(self, request_id: int, error_code: str) -> bytes:
        """Answer a pending Open*MiningChannel with OpenMiningChannel.Error."""
        return self.send(OpenMiningChannelError(request_id, error_code))

    def acknowledge_shares(
        self, channel_id: int, last_sequence_number: int, new_submits_accepted_count: int, new_shares_sum: int
    ) -> bytes:
        """SubmitShares.Success for a batch of accepted shares."""
        return self.send(
            SubmitSharesSuccess(channel_id, last_sequence_number, new_submits_accepted_count, new_shares_sum)
        )

    def reject_share(self, channel_id: int, sequence_number: int, error_code: str) -> bytes:
        """SubmitShares.Error for one share (e.g. ``stale-share``, ``difficulty-too-low``)."""
        return self.send(SubmitSharesError(channel_id, sequence_number, error_code))

    def close_channel(self, channel_id: int, reason_code: str) -> bytes:
        """CloseChannel for a channel or a group (closing its members)."""
        return self.send(CloseChannel(channel_id, reason_code))

    # --- send-side checks (raise LocalProtocolError) -----------------------------------------

    def _send_open_success(self, msg: OpenStandardMiningChannelSuccess | OpenExtendedMiningChannelSuccess) -> None:
        request = self.pending_requests.get(msg.request_id)
        is_standard = isinstance(msg, OpenStandardMiningChannelSuccess)
        wanted = OpenStandardMiningChannel if is_standard else OpenExtendedMiningChannel
        if not isinstance(request, wanted):
            raise LocalProtocolError(f"no pending {wanted.__name__} with request_id {msg.request_id}")
        self._check_new_id(msg.channel_id)
        extranonce_size = 0
        if isinstance(msg, OpenExtendedMiningChannelSuccess):
            assert isinstance(request, OpenExtendedMiningChannel)
            extranonce_size = msg.extranonce_size
            if extranonce_size < request.min_extranonce_size:
                raise LocalProtocolError(
                    f"extranonce_size {extranonce_size} < requested minimum {request.min_extranonce_size}"
                )
        if len(msg.extranonce_prefix) + extranonce_size > 32:
            raise LocalProtocolError("extranonce_prefix + extranonce_size exceeds 32 bytes")
        group = msg.group_channel_id
        if group:
            if self.requires_standard_jobs:
                raise LocalProtocolError("no group channels for a client that requires standard jobs")
            if group in self.channels:
                raise LocalProtocolError(f"group_channel_id {group} is a channel id")
            self._check_group_extranonce(group, len(msg.extranonce_prefix) + extranonce_size)
        del self.pending_requests[msg.request_id]
        if not self.pending_requests:
            self.pending_requests = {}  # an emptied dict keeps its table; a fresh one has none (issue 19)
        kind = ChannelKind.STANDARD if is_standard else ChannelKind.EXTENDED
        self._add_channel(
            ChannelInfo(
                msg.channel_id,
                kind,
                request.user_identity,
                request.nominal_hash_rate,
                msg.target,
                msg.extranonce_prefix,
                extranonce_size,
                group,
            )
        )

    def _check_new_id(self, channel_id: int) -> None:
        if channel_id == 0:
            raise LocalProtocolError("channel_id 0 is reserved (group_channel_id 0 means no group)")
        if channel_id in self.channels or channel_id in self.groups:
            raise LocalProtocolError(f"channel_id {channel_id} is already in use on this connection")

    def _check_group_extranonce(self, group: int, full_size: int) -> None:
        """Spec 5.2.3: every channel of a group has the same full extended extranonce size."""
        known = self._group_extranonce.setdefault(group, full_size)
        if known != full_size:
            raise LocalProtocolError(f"group {group} channels use {known}-byte extranonces, not {full_size}")

    def _send_open_error(self, msg: OpenMiningChannelError) -> None:
        if self.pending_requests.pop(msg.request_id, None) is None:
            raise LocalProtocolError(f"no pending channel request with request_id {msg.request_id}")

    def _send_new_mining_job(self, msg: NewMiningJob) -> None:
        self._check_standard_job(msg.channel_id, msg.job_id, msg.min_ntime is None)

    def _check_standard_job(self, channel_id: int, job_id: int, future: bool) -> None:
        channel = self.channels.get(channel_id)
        if channel is None or channel.kind is not ChannelKind.STANDARD:
            raise LocalProtocolError(f"NewMiningJob needs an open standard channel, not {channel_id}")
        if future:
            self._future_jobs.setdefault(channel_id, set()).add(job_id)

    def _send_new_extended_job(self, msg: NewExtendedMiningJob) -> None:
        self._check_extended_job(msg.channel_id, msg.job_id, msg.min_ntime is None)

    def _check_extended_job(self, channel_id: int, job_id: int, future: bool) -> None:
        channel = self.channels.get(channel_id)
        if channel is None:
            if channel_id not in self.groups:
                raise LocalProtocolError(f"no extended channel or group {channel_id}")
        elif channel.kind is not ChannelKind.EXTENDED:
            raise LocalProtocolError(f"NewExtendedMiningJob to standard channel {channel_id}")
        if future:
            self._future_jobs.setdefault(channel_id, set()).add(job_id)

    def _send_set_new_prev_hash(self, msg: SetNewPrevHash) -> None:
        self._check_prev_hash(msg.channel_id, msg.job_id, False)

    def _check_prev_hash(self, channel_id: int, job_id: int, future: bool) -> None:
        del future  # (same signature as the job checks)
        if self._members(channel_id) is None:
            raise LocalProtocolError(f"no channel or group {channel_id}")
        # Spec 5.3.17: only a job previously sent as a future job on that channel (or its group).
        futures = self._future_jobs.get(channel_id, set())
        channel = self.channels.get(channel_id)
        group_futures = self._future_jobs.get(channel.group_channel_id, set()) if channel else set()
        if job_id not in futures and job_id not in group_futures:
            raise LocalProtocolError(f"job {job_id} was not sent as a future job on {channel_id}")
        self._future_jobs.pop(channel_id, None)  # "the remaining queued jobs have to be made invalid"
        if not self._future_jobs:
            self._future_jobs = {}  # as above: no table kept between tips on an idle connection

    def _send_set_target(self, msg: SetTarget) -> None:
        members = self._members(msg.channel_id)
        if members is None:
            raise LocalProtocolError(f"no channel or group {msg.channel_id}")
        for channel in members:
            channel.target = msg.maximum_target

    def _send_set_extranonce_prefix(self, msg: SetExtranoncePrefix) -> None:
        channel = self.channels.get(msg.channel_id)
        if channel is None:
            raise LocalProtocolError(f"SetExtranoncePrefix needs an open channel (not a group): {msg.channel_id}")
        if len(msg.extranonce_prefix) + channel.extranonce_size > 32:
            raise LocalProtocolError("extranonce_prefix + extranonce_size exceeds 32 bytes")
        if channel.group_channel_id:
            self._check_group_extranonce(channel.group_channel_id, len(msg.extranonce_prefix) + channel.extranonce_size)
        channel.extranonce_prefix = msg.extranonce_prefix

    def _send_set_group_channel(self, msg: SetGroupChannel) -> None:
        group = msg.group_channel_id
        if self.requires_standard_jobs:
            raise LocalProtocolError("SetGroupChannel to a connection with REQUIRES_STANDARD_JOBS (spec 5.3.22)")
        if group == 0 or group in self.channels:
            raise LocalProtocolError(f"group_channel_id {group} is not usable as a group id")
        sizes = set()
        for cid in msg.channel_ids:
            channel = self.channels.get(cid)
            if channel is None:
                raise LocalProtocolError(f"SetGroupChannel lists unknown channel {cid}")
            sizes.add(len(channel.extranonce_prefix) + channel.extranonce_size)
        if len(sizes) > 1:
            raise LocalProtocolError(f"group {group} would mix extranonce sizes {sorted(sizes)}")
        for size in sizes:
            self._check_group_extranonce(group, size)
        self._set_group(group, msg.channel_ids)

    def _send_close_channel(self, msg: CloseChannel) -> None:
        if msg.channel_id not in self.channels and msg.channel_id not in self.groups:
            raise LocalProtocolError(f"no channel or group {msg.channel_id}")
        self._close_channels(msg.channel_id, msg.reason_code)

    def _require_channel(self, msg: Any) -> None:
        if msg.channel_id not in self.channels:
            raise LocalProtocolError(f"{type(msg).__name__} for channel {msg.channel_id}, which is not open")

    def _forget(self, channel_id: int) -> None:
        self._future_jobs.pop(channel_id, None)
        self._group_extranonce.pop(channel_id, None)

    def _no_check(self, msg: Message) -> None:
        del msg

    # Dispatch by message type, one table per class rather than per connection (two dicts of ~30 bound
    # methods were ~3 KiB of every idle connection, issue 19); the functions take the connection first.
    _HANDLERS: ClassVar[dict[type[Message], _Handler]] = {
        SetupConnection: _unexpected,
        RequestExtensions: _on_request_extensions,
        OpenStandardMiningChannel: _on_open_standard,
        OpenExtendedMiningChannel: _on_open_extended,
        UpdateChannel: _on_update_channel,
        CloseChannel: _on_close_channel,
        SubmitSharesStandard: _on_submit_standard,
        SubmitSharesExtended: _on_submit_extended,
        SetCustomMiningJob: _on_set_custom_mining_job,
        CkbTemplateSubscribe: _on_ckb_subscribe,
        CkbSubmitSolution: _on_ckb_solution,
    }
    _SENDERS: ClassVar[dict[type[Message], _Sender]] = {
        OpenStandardMiningChannelSuccess: _send_open_success,
        OpenExtendedMiningChannelSuccess: _send_open_success,
        OpenMiningChannelError: _send_open_error,
        NewMiningJob: _send_new_mining_job,
        NewExtendedMiningJob: _send_new_extended_job,
        SetNewPrevHash: _send_set_new_prev_hash,
        SetTarget: _send_set_target,
        SetExtranoncePrefix: _send_set_extranonce_prefix,
        SetGroupChannel: _send_set_group_channel,
        CloseChannel: _send_close_channel,
        SubmitSharesSuccess: _require_channel,
        SubmitSharesError: _require_channel,
        SetCustomMiningJobSuccess: _require_channel,
        SetCustomMiningJobError: _require_channel,
        UpdateChannelError: _no_check,
        Reconnect: _no_check,
        ChannelEndpointChanged: _no_check,
        CkbJobTemplate: _require_channel,
    }


@functools.lru_cache(maxsize=64)
def _extension_set(supported: frozenset[int]) -> frozenset[int]:
    """The supported-extension set with 0x0001, one shared object per distinct set (every connection of a
    server has the same one)."""
    return supported | {EXTENSION_TYPE_EXTENSIONS_NEGOTIATION}


@dataclass(frozen=True, slots=True)
class PreparedJobMessage:
    """A job message (NewMiningJob, NewExtendedMiningJob, SetNewPrevHash) encoded once for many channels; every
    one of them begins with its channel id, which :meth:`ServerConnection.send_for_channel` patches in."""

    name: str
    frame: bytes
    job_id: int
    future: bool
    check: Callable[[ServerConnection, int, int, bool], None]
    #: ``frame`` split around the channel id: the frame header, and the payload after the channel id (a
    #: channel's frame is ``header + channel_id (4 bytes LE) + tail``)
    header: bytes = dataclasses.field(init=False)
    tail: bytes = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", self.frame[:HEADER_SIZE])
        object.__setattr__(self, "tail", self.frame[HEADER_SIZE + 4 :])

    @classmethod
    def of(cls, message: NewMiningJob | NewExtendedMiningJob | SetNewPrevHash) -> PreparedJobMessage:
        check: Callable[[ServerConnection, int, int, bool], None]
        if isinstance(message, NewMiningJob):
            check = ServerConnection._check_standard_job
        elif isinstance(message, NewExtendedMiningJob):
            check = ServerConnection._check_extended_job
        else:
            check = ServerConnection._check_prev_hash
        future = not isinstance(message, SetNewPrevHash) and message.min_ntime is None
        return cls(type(message).__name__, encode_message(message), message.job_id, future, check)
