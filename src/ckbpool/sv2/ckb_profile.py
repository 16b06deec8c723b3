"""The CKB profile of Stratum V2 as pure functions (the specification is ``docs/sv2-ckb.md``).

The one byte layout everything hangs on -- ``nonce16``, the 16 bytes after ``pow_hash`` in the
Eaglesong input::

    nonce16 = extranonce_prefix || extranonce || version.to_bytes(4, "little") || nonce.to_bytes(4, "little")
              \\____________ 8 bytes ____________/  \\______ 4 bytes ______/     \\_____ 4 bytes _____/

    header nonce (u128) = int.from_bytes(nonce16, "little")

* standard channel: ``extranonce_prefix`` is 8 bytes, there is no ``extranonce``;
* extended channel: ``len(extranonce_prefix) + extranonce_size == 8``;
* ``version`` and ``nonce`` of SubmitShares* are 8 more bytes of nonce space, so every device owns
  at least 2^64 nonces per job (the job's ``version`` is 0 and version rolling is always allowed).

Job fields: NewMiningJob.merkle_root and NewExtendedMiningJob.coinbase_tx_prefix carry
``pow_hash``; NewExtendedMiningJob.coinbase_tx_suffix carries the height (u64 LE);
SetNewPrevHash carries ``parent_hash``, ``timestamp // 1000`` and ``compact_target``;
SetTarget / Open*Success carry the share target as a U256 number. A share is valid when
``int.from_bytes(eaglesong(pow_hash || nonce16), "big") <= target`` (note: *big*-endian, unlike
Bitcoin's reading of the hash).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Protocol

from ckbpool.sv2.events import Share
from ckbpool.sv2.messages_ckb import CkbSubmitSolution
from ckbpool.sv2.messages_mining import (
    NewExtendedMiningJob,
    NewMiningJob,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesExtended,
    SubmitSharesStandard,
)

__all__ = [
    "EXTRANONCE_SPACE",
    "JOB_VERSION",
    "NONCE16_SIZE",
    "SUCCESS_FLAG_CKB_PROFILE",
    "SUCCESS_FLAG_POW_EAGLESONG_BLAKE2B",
    "V1_EXTRANONCE2_MAX",
    "V1_EXTRANONCE2_MIN",
    "CkbJob",
    "JobInfo",
    "Nonce16Parts",
    "PowFunction",
    "extended_job",
    "extranonce_size_for_prefix",
    "header_nonce",
    "job_info",
    "min_ntime",
    "nonce16_from_extended_share",
    "nonce16_from_header_nonce",
    "nonce16_from_share",
    "nonce16_from_standard_share",
    "pow_function_from_flags",
    "set_new_prev_hash",
    "set_target",
    "split_nonce16",
    "split_v1_extranonce2",
    "standard_job",
    "success_flags",
    "v1_extranonce1",
    "v1_extranonce2",
]

NONCE16_SIZE = 16
#: Bytes of nonce16 owned by extranonce_prefix + extranonce (the rest is version || nonce).
EXTRANONCE_SPACE = 8
#: The ``version`` every CKB job carries; shares use the field as 4 bytes of nonce space.
JOB_VERSION = 0
#: Extranonce2 sizes CKB Stratum V1 ASIC firmware accepts.
V1_EXTRANONCE2_MIN = 4
V1_EXTRANONCE2_MAX = 15

#: SetupConnection.Success flag: the server speaks this profile (CKB, not Bitcoin).
SUCCESS_FLAG_CKB_PROFILE = 1 << 30
#: SetupConnection.Success flag: PoW is EaglesongBlake2b (testnet); clear means Eaglesong (mainnet).
SUCCESS_FLAG_POW_EAGLESONG_BLAKE2B = 1 << 31

_U32 = (1 << 32) - 1


class PowFunction(enum.Enum):
    """The chain's PoW: ``eaglesong(msg)`` or, on testnet, ``ckb_hash(eaglesong(msg))``."""

    EAGLESONG = "Eaglesong"
    EAGLESONG_BLAKE2B = "EaglesongBlake2b"


def success_flags(pow_function: PowFunction, other_flags: int = 0) -> int:
    """SetupConnection.Success flags announcing the CKB profile and the PoW function."""
    flags = other_flags | SUCCESS_FLAG_CKB_PROFILE
    if pow_function is PowFunction.EAGLESONG_BLAKE2B:
        flags |= SUCCESS_FLAG_POW_EAGLESONG_BLAKE2B
    return flags


def pow_function_from_flags(flags: int) -> PowFunction:
    """Read the PoW function from SetupConnection.Success flags; ValueError if not a CKB server."""
    if not flags & SUCCESS_FLAG_CKB_PROFILE:
        raise ValueError("the server did not announce the CKB profile (SetupConnection.Success flag bit 30)")
    if flags & SUCCESS_FLAG_POW_EAGLESONG_BLAKE2B:
        return PowFunction.EAGLESONG_BLAKE2B
    return PowFunction.EAGLESONG


# --- nonce16 ------------------------------------------------------------------------------------


_pack_version_nonce = struct.Struct("<II").pack


def _check_u32(value: int, name: str) -> None:
    if not 0 <= value <= _U32:
        raise ValueError(f"{name} {value} does not fit u32")


def nonce16_from_standard_share(extranonce_prefix: bytes, version: int, nonce: int) -> bytes:
    """nonce16 of a SubmitSharesStandard on a channel with this 8-byte ``extranonce_prefix``."""
    if len(extranonce_prefix) != EXTRANONCE_SPACE:
        raise ValueError(f"a standard channel's extranonce_prefix is {EXTRANONCE_SPACE} bytes")
    _check_u32(version, "version")
    _check_u32(nonce, "nonce")
    return extranonce_prefix + version.to_bytes(4, "little") + nonce.to_bytes(4, "little")


def nonce16_from_extended_share(extranonce_prefix: bytes, extranonce: bytes, version: int, nonce: int) -> bytes:
    """nonce16 of a SubmitSharesExtended: prefix and extranonce together are 8 bytes."""
    if len(extranonce_prefix) + len(extranonce) != EXTRANONCE_SPACE:
        raise ValueError(f"extranonce_prefix + extranonce must be {EXTRANONCE_SPACE} bytes")
    _check_u32(version, "version")
    _check_u32(nonce, "nonce")
    return extranonce_prefix + extranonce + version.to_bytes(4, "little") + nonce.to_bytes(4, "little")


def nonce16_from_share(extranonce_prefix: bytes, share: Share) -> bytes:
    """nonce16 of any share the server reports (:class:`~ckbpool.sv2.events.ShareSubmitted`).

    ``extranonce_prefix`` is the prefix the share's *job* was sent under. That is the channel's
    current ``extranonce_prefix`` unless the pool sent SetExtranoncePrefix after the job: the new
    prefix only applies to jobs sent after it (spec 5.3.10), so a pool that changes prefixes
    records the prefix per job. (CkbSubmitSolution carries the whole nonce16 and needs none.)
    """
    if type(share) is SubmitSharesStandard and len(extranonce_prefix) == EXTRANONCE_SPACE:
        # the pool's share path: decoded U32 fields, so only the packing is left (struct raises if not u32)
        return extranonce_prefix + _pack_version_nonce(share.version, share.nonce)
    if isinstance(share, SubmitSharesStandard):
        return nonce16_from_standard_share(extranonce_prefix, share.version, share.nonce)
    if isinstance(share, SubmitSharesExtended):
        return nonce16_from_extended_share(extranonce_prefix, share.extranonce, share.version, share.nonce)
    if isinstance(share, CkbSubmitSolution):
        return share.nonce16
    raise TypeError(f"not a share: {type(share).__name__}")


@dataclass(frozen=True, slots=True)
class Nonce16Parts:
    """nonce16 split back into the SV2 fields that carry it."""

    extranonce_prefix: bytes
    extranonce: bytes
    version: int
    nonce: int


def split_nonce16(nonce16: bytes, prefix_size: int) -> Nonce16Parts:
    """Split nonce16 for a channel whose extranonce_prefix is ``prefix_size`` bytes (8 = standard)."""
    if len(nonce16) != NONCE16_SIZE:
        raise ValueError(f"nonce16 is {NONCE16_SIZE} bytes, got {len(nonce16)}")
    if not 0 <= prefix_size <= EXTRANONCE_SPACE:
        raise ValueError(f"prefix_size must be within 0..{EXTRANONCE_SPACE}")
    return Nonce16Parts(
        extranonce_prefix=nonce16[:prefix_size],
        extranonce=nonce16[prefix_size:EXTRANONCE_SPACE],
        version=int.from_bytes(nonce16[8:12], "little"),
        nonce=int.from_bytes(nonce16[12:16], "little"),
    )


def header_nonce(nonce16: bytes) -> int:
    """The header's u128 nonce: the little-endian reading of nonce16."""
    if len(nonce16) != NONCE16_SIZE:
        raise ValueError(f"nonce16 is {NONCE16_SIZE} bytes, got {len(nonce16)}")
    return int.from_bytes(nonce16, "little")


def nonce16_from_header_nonce(nonce: int) -> bytes:
    """Inverse of :func:`header_nonce`."""
    return nonce.to_bytes(NONCE16_SIZE, "little")


def extranonce_size_for_prefix(extranonce_prefix: bytes) -> int:
    """The extranonce_size an extended channel gets with this prefix (8 - len(prefix))."""
    if not 0 < len(extranonce_prefix) < EXTRANONCE_SPACE:
        raise ValueError(f"an extended channel's prefix is 1..{EXTRANONCE_SPACE - 1} bytes")
    return EXTRANONCE_SPACE - len(extranonce_prefix)


# --- V1 through the proxy -----------------------------------------------------------------------


def v1_extranonce1(extranonce_prefix: bytes, miner_id: bytes) -> bytes:
    """V1 extranonce1 for one downstream miner: the pool's prefix, then the proxy's id for it."""
    extranonce1 = extranonce_prefix + miner_id
    if len(extranonce1) > EXTRANONCE_SPACE:
        raise ValueError(f"extranonce_prefix + miner_id exceed {EXTRANONCE_SPACE} bytes")
    if NONCE16_SIZE - len(extranonce1) > V1_EXTRANONCE2_MAX:
        raise ValueError(f"extranonce1 must be at least {NONCE16_SIZE - V1_EXTRANONCE2_MAX} byte(s)")
    return extranonce1


def v1_extranonce2(extranonce_tail: bytes, version: int, nonce: int) -> bytes:
    """V1 extranonce2 = the rest of the SV2 extranonce || version LE || nonce LE (8..12 bytes)."""
    _check_u32(version, "version")
    _check_u32(nonce, "nonce")
    return extranonce_tail + version.to_bytes(4, "little") + nonce.to_bytes(4, "little")


def split_v1_extranonce2(extranonce2: bytes) -> tuple[bytes, int, int]:
    """A V1 submit's extranonce2 -> (rest of the SV2 extranonce, version, nonce)."""
    if not 8 <= len(extranonce2) <= V1_EXTRANONCE2_MAX:
        raise ValueError(f"a CKB-profile extranonce2 is 8..{V1_EXTRANONCE2_MAX} bytes, got {len(extranonce2)}")
    tail = extranonce2[:-8]
    return tail, int.from_bytes(extranonce2[-8:-4], "little"), int.from_bytes(extranonce2[-4:], "little")


# --- jobs ---------------------------------------------------------------------------------------


class CkbJob(Protocol):
    """What the mapping needs from a job (``ckbpool.ckb.template.MiningJob`` fits)."""

    @property
    def pow_hash(self) -> bytes: ...

    @property
    def height(self) -> int: ...

    @property
    def parent_hash(self) -> bytes: ...

    @property
    def compact_target(self) -> int: ...

    @property
    def timestamp(self) -> int: ...


def min_ntime(timestamp_ms: int) -> int:
    """SV2 ntime for a CKB header timestamp (milliseconds): whole seconds."""
    seconds = timestamp_ms // 1000
    _check_u32(seconds, "timestamp // 1000")
    return seconds


def standard_job(channel_id: int, job_id: int, job: CkbJob, *, future: bool) -> NewMiningJob:
    """NewMiningJob: merkle_root = pow_hash; min_ntime None for a future job, else the timestamp."""
    return NewMiningJob(
        channel_id=channel_id,
        job_id=job_id,
        min_ntime=None if future else min_ntime(job.timestamp),
        version=JOB_VERSION,
        merkle_root=job.pow_hash,
    )


def extended_job(channel_id: int, job_id: int, job: CkbJob, *, future: bool) -> NewExtendedMiningJob:
    """NewExtendedMiningJob: prefix = pow_hash, suffix = height u64 LE, no merkle path."""
    return NewExtendedMiningJob(
        channel_id=channel_id,
        job_id=job_id,
        min_ntime=None if future else min_ntime(job.timestamp),
        version=JOB_VERSION,
        version_rolling_allowed=True,
        merkle_path=(),
        coinbase_tx_prefix=job.pow_hash,
        coinbase_tx_suffix=job.height.to_bytes(8, "little"),
    )


def set_new_prev_hash(channel_id: int, job_id: int, job: CkbJob) -> SetNewPrevHash:
    """SetNewPrevHash: prev_hash = parent_hash, min_ntime = timestamp // 1000, nbits = compact_target."""
    return SetNewPrevHash(
        channel_id=channel_id,
        job_id=job_id,
        prev_hash=job.parent_hash,
        min_ntime=min_ntime(job.timestamp),
        nbits=job.compact_target,
    )


def set_target(channel_id: int, share_target: int) -> SetTarget:
    """SetTarget with the share target (compared against the big-endian reading of the PoW output)."""
    return SetTarget(channel_id=channel_id, maximum_target=share_target)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What a miner or proxy reads out of a CKB-profile job message."""

    job_id: int
    pow_hash: bytes
    height: int | None  # only extended jobs carry it
    min_ntime: int | None  # None: a future job, waiting for its SetNewPrevHash


def job_info(message: NewMiningJob | NewExtendedMiningJob) -> JobInfo:
    """Read a job message back; ValueError if it does not follow the profile."""
    if isinstance(message, NewMiningJob):
        return JobInfo(message.job_id, message.merkle_root, None, message.min_ntime)
    if len(message.coinbase_tx_prefix) != 32 or len(message.coinbase_tx_suffix) != 8 or message.merkle_path:
        raise ValueError("NewExtendedMiningJob does not follow the CKB profile (32-byte prefix, 8-byte suffix)")
    height = int.from_bytes(message.coinbase_tx_suffix, "little")
    return JobInfo(message.job_id, message.coinbase_tx_prefix, height, message.min_ntime)
