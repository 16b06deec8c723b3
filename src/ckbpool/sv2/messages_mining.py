"""Mining protocol messages 0x10..0x25 (sv2-spec chapter 5).

Layouts and channel_msg bits follow SRI ``mining_sv2`` 12.0.0 (crates.io, the version pinned by
``tests/interop``; same as stratum-mining/stratum commit 268022034c18). For every message the
field order and the channel bit agree with the spec's tables (08-Message-Types.md). Naming
follows SRI where the two differ (``SetCustomMiningJob.token`` is the spec's
``mining_job_token``; ``coinbase_tx_input_n_sequence`` is ``coinbase_tx_input_nSequence``).

U256 fields that are numbers (targets) are ``int``; U256 fields that are hashes (``merkle_root``,
``prev_hash``, merkle path) are the 32 wire bytes -- see :mod:`ckbpool.sv2.types`.

The share path (SubmitShares*, SubmitShares.Success/.Error) and the per-channel job fan-out
(NewMiningJob, SetNewPrevHash, SetTarget) use precompiled ``struct`` layouts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated, Self

from ckbpool.sv2.messages_base import Message
from ckbpool.sv2.types import (
    B0_32,
    B0_64K,
    B0_255,
    BOOL,
    F32,
    STR0_255,
    TLV_LIST,
    U16,
    U32,
    U64,
    U256,
    U256_BYTES,
    Option,
    Seq0_64K,
    Seq0_255,
    Tlv,
)

__all__ = [
    "ERROR_BAD_EXTRANONCE_SIZE",
    "ERROR_DIFFICULTY_TOO_LOW",
    "ERROR_DUPLICATE_SHARE",
    "ERROR_INVALID_CHANNEL_ID",
    "ERROR_INVALID_JOB_ID",
    "ERROR_INVALID_SHARE",
    "ERROR_JD_NOT_SUPPORTED",
    "ERROR_MAX_TARGET_OUT_OF_RANGE",
    "ERROR_MIN_EXTRANONCE_SIZE_TOO_LARGE",
    "ERROR_STALE_SHARE",
    "ERROR_UNKNOWN_USER",
    "REQUIRES_EXTENDED_CHANNELS",
    "REQUIRES_FIXED_VERSION",
    "REQUIRES_STANDARD_JOBS",
    "REQUIRES_VERSION_ROLLING",
    "REQUIRES_WORK_SELECTION",
    "CloseChannel",
    "NewExtendedMiningJob",
    "NewMiningJob",
    "OpenExtendedMiningChannel",
    "OpenExtendedMiningChannelSuccess",
    "OpenMiningChannelError",
    "OpenStandardMiningChannel",
    "OpenStandardMiningChannelSuccess",
    "SetCustomMiningJob",
    "SetCustomMiningJobError",
    "SetCustomMiningJobSuccess",
    "SetExtranoncePrefix",
    "SetGroupChannel",
    "SetNewPrevHash",
    "SetTarget",
    "SubmitSharesError",
    "SubmitSharesExtended",
    "SubmitSharesStandard",
    "SubmitSharesSuccess",
    "UpdateChannel",
    "UpdateChannelError",
]

# SetupConnection.flags for the Mining protocol (client -> server), spec 5.3.1.
REQUIRES_STANDARD_JOBS = 1 << 0
REQUIRES_WORK_SELECTION = 1 << 1
REQUIRES_VERSION_ROLLING = 1 << 2
# SetupConnection.Success.flags for the Mining protocol (server -> client).
REQUIRES_FIXED_VERSION = 1 << 0
REQUIRES_EXTENDED_CHANNELS = 1 << 1

# Error codes, spelled as in mining_sv2's ERROR_CODE_* constants.
ERROR_INVALID_CHANNEL_ID = "invalid-channel-id"
ERROR_INVALID_SHARE = "invalid-share"
ERROR_STALE_SHARE = "stale-share"
ERROR_INVALID_JOB_ID = "invalid-job-id"
ERROR_DIFFICULTY_TOO_LOW = "difficulty-too-low"
ERROR_DUPLICATE_SHARE = "duplicate-share"
ERROR_BAD_EXTRANONCE_SIZE = "bad-extranonce-size"
ERROR_UNKNOWN_USER = "unknown-user"
ERROR_MAX_TARGET_OUT_OF_RANGE = "max-target-out-of-range"
ERROR_MIN_EXTRANONCE_SIZE_TOO_LARGE = "min-extranonce-size-too-large"
ERROR_JD_NOT_SUPPORTED = "jd-not-supported"


# --- channel opening ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenStandardMiningChannel(Message):
    """0x10, client -> server."""

    MSG_TYPE = 0x10
    CHANNEL_MSG = False

    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[int, U256]


@dataclass(frozen=True, slots=True)
class OpenStandardMiningChannelSuccess(Message):
    """0x11, server -> client."""

    MSG_TYPE = 0x11
    CHANNEL_MSG = False

    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[int, U256]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class OpenMiningChannelError(Message):
    """0x12, server -> client: answer to either Open*MiningChannel."""

    MSG_TYPE = 0x12
    CHANNEL_MSG = False

    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@dataclass(frozen=True, slots=True)
class OpenExtendedMiningChannel(Message):
    """0x13, client -> server."""

    MSG_TYPE = 0x13
    CHANNEL_MSG = False

    request_id: Annotated[int, U32]
    user_identity: Annotated[str, STR0_255]
    nominal_hash_rate: Annotated[float, F32]
    max_target: Annotated[int, U256]
    min_extranonce_size: Annotated[int, U16]


@dataclass(frozen=True, slots=True)
class OpenExtendedMiningChannelSuccess(Message):
    """0x14, server -> client."""

    MSG_TYPE = 0x14
    CHANNEL_MSG = False

    request_id: Annotated[int, U32]
    channel_id: Annotated[int, U32]
    target: Annotated[int, U256]
    extranonce_size: Annotated[int, U16]
    extranonce_prefix: Annotated[bytes, B0_32]
    group_channel_id: Annotated[int, U32]


# --- jobs -----------------------------------------------------------------------------------------

_JOB_HEAD = struct.Struct("<IIB")  # channel_id, job_id, min_ntime option count
_JOB_FUTURE = struct.Struct("<IIBI32s")  # ... version, merkle_root (min_ntime absent)
_JOB_ACTIVE = struct.Struct("<IIBII32s")  # ... min_ntime, version, merkle_root


@dataclass(frozen=True, slots=True)
class NewMiningJob(Message):
    """0x15, server -> client, standard channels. ``min_ntime`` None marks a future job."""

    MSG_TYPE = 0x15
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, Option(U32)]
    version: Annotated[int, U32]
    merkle_root: Annotated[bytes, U256_BYTES]

    def encode(self) -> bytes:
        root = self.merkle_root
        if type(root) is bytes and len(root) == 32:
            try:
                if self.min_ntime is None:
                    return _JOB_FUTURE.pack(self.channel_id, self.job_id, 0, self.version, root)
                return _JOB_ACTIVE.pack(self.channel_id, self.job_id, 1, self.min_ntime, self.version, root)
            except struct.error:
                pass
        return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = len(payload)
        if n == _JOB_FUTURE.size and payload[8] == 0:
            channel_id, job_id, _, version, root = _JOB_FUTURE.unpack(payload)
            return cls(channel_id, job_id, None, version, root)
        if n == _JOB_ACTIVE.size and payload[8] == 1:
            channel_id, job_id, _, min_ntime, version, root = _JOB_ACTIVE.unpack(payload)
            return cls(channel_id, job_id, min_ntime, version, root)
        return cls._decode_generic(payload)


@dataclass(frozen=True, slots=True)
class NewExtendedMiningJob(Message):
    """0x1f, server -> client, extended and group channels."""

    MSG_TYPE = 0x1F
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    min_ntime: Annotated[int | None, Option(U32)]
    version: Annotated[int, U32]
    version_rolling_allowed: Annotated[bool, BOOL]
    merkle_path: Annotated[tuple[bytes, ...], Seq0_255(U256_BYTES)]
    coinbase_tx_prefix: Annotated[bytes, B0_64K]
    coinbase_tx_suffix: Annotated[bytes, B0_64K]


_PREV_HASH = struct.Struct("<II32sII")


@dataclass(frozen=True, slots=True)
class SetNewPrevHash(Message):
    """0x20, server -> client: activates the future job ``job_id`` on a channel or group."""

    MSG_TYPE = 0x20
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256_BYTES]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]

    def encode(self) -> bytes:
        if type(self.prev_hash) is bytes and len(self.prev_hash) == 32:
            try:
                return _PREV_HASH.pack(self.channel_id, self.job_id, self.prev_hash, self.min_ntime, self.nbits)
            except struct.error:
                pass
        return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) != _PREV_HASH.size:
            return cls._decode_generic(payload)
        return cls(*_PREV_HASH.unpack(payload))


_U32 = struct.Struct("<I")
_U256_LIMIT = 1 << 256


@dataclass(frozen=True, slots=True)
class SetTarget(Message):
    """0x21, server -> client: the channel's (or group's) new maximum share target."""

    MSG_TYPE = 0x21
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    maximum_target: Annotated[int, U256]

    def encode(self) -> bytes:
        target = self.maximum_target
        if type(target) is int and 0 <= target < _U256_LIMIT:
            try:
                return _U32.pack(self.channel_id) + target.to_bytes(32, "little")
            except struct.error:
                pass
        return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) != 36:
            return cls._decode_generic(payload)
        return cls(_U32.unpack_from(payload)[0], int.from_bytes(payload[4:], "little"))


@dataclass(frozen=True, slots=True)
class SetCustomMiningJob(Message):
    """0x22, client -> server (work selection; the CKB pool answers ``jd-not-supported``)."""

    MSG_TYPE = 0x22
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    token: Annotated[bytes, B0_255]
    version: Annotated[int, U32]
    prev_hash: Annotated[bytes, U256_BYTES]
    min_ntime: Annotated[int, U32]
    nbits: Annotated[int, U32]
    coinbase_tx_version: Annotated[int, U32]
    coinbase_prefix: Annotated[bytes, B0_255]
    coinbase_tx_input_n_sequence: Annotated[int, U32]
    coinbase_tx_outputs: Annotated[bytes, B0_64K]
    coinbase_tx_locktime: Annotated[int, U32]
    merkle_path: Annotated[tuple[bytes, ...], Seq0_255(U256_BYTES)]


@dataclass(frozen=True, slots=True)
class SetCustomMiningJobSuccess(Message):
    """0x23, server -> client."""

    MSG_TYPE = 0x23
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    job_id: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class SetCustomMiningJobError(Message):
    """0x24, server -> client."""

    MSG_TYPE = 0x24
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    request_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


# --- channel management ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateChannel(Message):
    """0x16, client -> server: new nominal hash rate / maximum target for a channel."""

    MSG_TYPE = 0x16
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    nominal_hash_rate: Annotated[float, F32]
    maximum_target: Annotated[int, U256]


@dataclass(frozen=True, slots=True)
class UpdateChannelError(Message):
    """0x17, server -> client."""

    MSG_TYPE = 0x17
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]


@dataclass(frozen=True, slots=True)
class CloseChannel(Message):
    """0x18, either direction. Closing a group channel closes all its member channels."""

    MSG_TYPE = 0x18
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    reason_code: Annotated[str, STR0_255]


@dataclass(frozen=True, slots=True)
class SetExtranoncePrefix(Message):
    """0x19, server -> client, standard or extended channel (not a group)."""

    MSG_TYPE = 0x19
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    extranonce_prefix: Annotated[bytes, B0_32]


@dataclass(frozen=True, slots=True)
class SetGroupChannel(Message):
    """0x25, server -> client: (re)defines which channels belong to ``group_channel_id``."""

    MSG_TYPE = 0x25
    CHANNEL_MSG = False

    group_channel_id: Annotated[int, U32]
    channel_ids: Annotated[tuple[int, ...], Seq0_64K(U32)]


# --- shares ---------------------------------------------------------------------------------------

_SHARE_STD = struct.Struct("<6I")
_SHARE_EXT_HEAD = struct.Struct("<6IB")
_SHARE_OK = struct.Struct("<3IQ")
_SHARE_ERR_HEAD = struct.Struct("<IIB")


_set_slot = object.__setattr__


@dataclass(frozen=True, slots=True, init=False)
class SubmitSharesStandard(Message):
    """0x1a, client -> server.

    Its ``__init__`` is written out (same parameters as the generated one): one is made per share a pool reads,
    and the generated frozen ``__init__`` looks ``object.__setattr__`` up once per field (issue 19)."""

    MSG_TYPE = 0x1A
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]

    def __init__(
        self, channel_id: int, sequence_number: int, job_id: int, nonce: int, ntime: int, version: int
    ) -> None:
        put = _set_slot
        put(self, "channel_id", channel_id)
        put(self, "sequence_number", sequence_number)
        put(self, "job_id", job_id)
        put(self, "nonce", nonce)
        put(self, "ntime", ntime)
        put(self, "version", version)

    def encode(self) -> bytes:
        try:
            return _SHARE_STD.pack(
                self.channel_id, self.sequence_number, self.job_id, self.nonce, self.ntime, self.version
            )
        except struct.error:
            return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) != 24:
            return cls._decode_generic(payload)
        return cls(*_SHARE_STD.unpack(payload))


@dataclass(frozen=True, slots=True)
class SubmitSharesExtended(Message):
    """0x1b, client -> server, extended channels: ``extranonce`` has the channel's extranonce_size.

    ``tlvs``: the TLV fields appended after the fixed fields (sv2-spec 3.4.3), e.g. the
    ``user_identity`` of extension 0x0002 (:func:`ckbpool.sv2.extensions.user_identity_tlv`).
    Empty unless an extension that extends this message was negotiated; the frame header's
    extension_type stays 0 either way (spec 3.4.1). Decoding checks only their structure; the
    connection state machines check them against the negotiated extensions.
    """

    MSG_TYPE = 0x1B
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce: Annotated[int, U32]
    ntime: Annotated[int, U32]
    version: Annotated[int, U32]
    extranonce: Annotated[bytes, B0_32]
    tlvs: Annotated[tuple[Tlv, ...], TLV_LIST] = ()

    def encode(self) -> bytes:
        extranonce = self.extranonce
        if type(extranonce) is bytes and len(extranonce) <= 32:
            try:
                head = (
                    _SHARE_EXT_HEAD.pack(
                        self.channel_id,
                        self.sequence_number,
                        self.job_id,
                        self.nonce,
                        self.ntime,
                        self.version,
                        len(extranonce),
                    )
                    + extranonce
                )
            except struct.error:
                pass
            else:
                tlvs = self.tlvs
                if type(tlvs) is tuple and not tlvs:
                    return head
                return head + TLV_LIST.encode(tlvs, "SubmitSharesExtended.tlvs")
        return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = len(payload)
        if n < 25 or payload[24] > 32 or 25 + payload[24] > n:
            return cls._decode_generic(payload)
        end = 25 + payload[24]
        channel_id, sequence_number, job_id, nonce, ntime, version, _ = _SHARE_EXT_HEAD.unpack_from(payload)
        tlvs = () if end == n else TLV_LIST.decode(payload, end, "SubmitSharesExtended.tlvs")[0]
        return cls(channel_id, sequence_number, job_id, nonce, ntime, version, bytes(payload[25:end]), tlvs)


@dataclass(frozen=True, slots=True)
class SubmitSharesSuccess(Message):
    """0x1c, server -> client: acknowledges a batch of accepted submits."""

    MSG_TYPE = 0x1C
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    last_sequence_number: Annotated[int, U32]
    new_submits_accepted_count: Annotated[int, U32]
    new_shares_sum: Annotated[int, U64]

    def encode(self) -> bytes:
        try:
            return _SHARE_OK.pack(
                self.channel_id, self.last_sequence_number, self.new_submits_accepted_count, self.new_shares_sum
            )
        except struct.error:
            return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        if len(payload) != 20:
            return cls._decode_generic(payload)
        return cls(*_SHARE_OK.unpack(payload))


@dataclass(frozen=True, slots=True)
class SubmitSharesError(Message):
    """0x1d, server -> client: one rejected submit."""

    MSG_TYPE = 0x1D
    CHANNEL_MSG = True

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    error_code: Annotated[str, STR0_255]

    def encode(self) -> bytes:
        code = self.error_code
        if type(code) is str and code.isascii() and len(code) <= 255:
            try:
                return _SHARE_ERR_HEAD.pack(self.channel_id, self.sequence_number, len(code)) + code.encode()
            except struct.error:
                pass
        return self._encode_generic()
