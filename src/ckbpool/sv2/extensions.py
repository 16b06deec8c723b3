"""SV2 extensions carried as TLV fields: extension 0x0002, worker-specific hashrate tracking.

Extension 0x0002 (sv2-spec ``extensions/0x0002-worker-specific-hashrate-tracking.md``; SRI
``extensions_sv2`` 0.3.0 + ``parsers_sv2`` 0.6.0) lets one extended channel carry the shares of many
workers -- a proxy's downstream devices -- each tagged with its own ``user_identity``: once the
extension is negotiated with RequestExtensions, every SubmitSharesExtended ends with the TLV::

    extension_type 0x0002 (U16) | field_type 0x01 (U8) | length (U16, at most 32) | UTF-8 user_identity

The codec (:data:`~ckbpool.sv2.types.TLV_LIST`) only checks a TLV list's structure, because
whether a TLV is allowed depends on the connection. :func:`read_share_tlvs` is that judgement, used
by both state machines (the server answers a violation with SubmitShares.Error, the client refuses
to send it):

=====================================================  ==============================================
TLVs on a SubmitSharesExtended                         verdict
=====================================================  ==============================================
a TLV of an extension this connection did not          ``extension-not-negotiated``
negotiate
the same (extension_type, field_type) twice, or        ``invalid-tlv``
extension types out of ascending order (spec 3.4.3)
user_identity empty, over 32 bytes or not UTF-8        ``invalid-user-identity``
an unknown field type of a negotiated extension        skipped (spec 3.4.3: scan for known fields)
=====================================================  ==============================================

Where we are stricter than the spec and SRI: the spec says a server "MUST ignore any unexpected TLV
fields" when 0x0002 is not negotiated, and SRI drops TLVs of un-negotiated extensions silently. We
refuse the share instead: a client that tags a share with an identity expects it credited to that
identity, and crediting it to the channel's owner would hand the work to someone else without
anyone noticing. Same reasoning for an empty identity, which names no one.

The error codes are ours (the spec and mining_sv2 define none for TLVs); they are SubmitShares.Error
codes, so a generic client logs them and carries on (spec 3.5).

Our CKB extension 0x4CCB (docs/sv2-ckb.md sections 9 and 13) adds two share TLVs, for a proxy that
forwards the shares of many V1 devices on one channel:

- ``0x4CCB / 0x01 ckb_user_identity`` (STR0_255: 1..255 bytes of UTF-8): the whole V1 username,
  ``<CKB address>.<worker>``. The 0x0002 identity is capped at 32 bytes and a CKB address is 46-97
  characters, so the account to credit cannot travel in 0x0002; the pool credits this one.
- ``0x4CCB / 0x02 share_target`` (U256, exactly 32 bytes little-endian, non-zero): the target the
  sender validated the share against (a device's own, harder than the channel's). The pool checks the
  share against it and credits its work, so a device behind a proxy is credited what it proved.

Both are judged like the 0x0002 field: only on a connection that negotiated 0x4CCB
(``extension-not-negotiated`` otherwise), ``invalid-user-identity`` / ``invalid-share-target`` for
a value of the wrong size or encoding.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass

from ckbpool.sv2.errors import EncodeError, Sv2Error
from ckbpool.sv2.types import Tlv

__all__ = [
    "ERROR_EXTENSION_NOT_NEGOTIATED",
    "ERROR_INVALID_SHARE_TARGET",
    "ERROR_INVALID_TLV",
    "ERROR_INVALID_USER_IDENTITY",
    "EXTENSION_TYPE_CKB",
    "EXTENSION_TYPE_WORKER_HASHRATE_TRACKING",
    "FIELD_TYPE_CKB_SHARE_TARGET",
    "FIELD_TYPE_CKB_USER_IDENTITY",
    "FIELD_TYPE_USER_IDENTITY",
    "MAX_CKB_USER_IDENTITY_LENGTH",
    "MAX_USER_IDENTITY_LENGTH",
    "ShareTlvs",
    "TlvRejected",
    "ckb_share_target_tlv",
    "ckb_user_identity_tlv",
    "read_share_extensions",
    "read_share_tlvs",
    "share_tlvs",
    "user_identity_tlv",
]

EXTENSION_TYPE_WORKER_HASHRATE_TRACKING = 0x0002
FIELD_TYPE_USER_IDENTITY = 0x01
#: Bytes of UTF-8, as the spec and SRI's ``MAX_USER_IDENTITY_LENGTH`` say.
MAX_USER_IDENTITY_LENGTH = 32

#: Our CKB extension (the same id as the template extension, :mod:`ckbpool.sv2.messages_ckb`).
EXTENSION_TYPE_CKB = 0x4CCB
FIELD_TYPE_CKB_USER_IDENTITY = 0x01
FIELD_TYPE_CKB_SHARE_TARGET = 0x02
#: Bytes of UTF-8 (STR0_255; zero names no one): a full-format CKB address (97) + "." + a worker fit.
MAX_CKB_USER_IDENTITY_LENGTH = 255

ERROR_EXTENSION_NOT_NEGOTIATED = "extension-not-negotiated"
ERROR_INVALID_TLV = "invalid-tlv"
ERROR_INVALID_USER_IDENTITY = "invalid-user-identity"
ERROR_INVALID_SHARE_TARGET = "invalid-share-target"


class TlvRejected(Sv2Error):
    """The TLVs of a message are not acceptable on this connection; ``error_code`` names why
    (one of the ``ERROR_*`` codes above), ``detail`` says what exactly."""

    def __init__(self, error_code: str, detail: str) -> None:
        super().__init__(f"{error_code}: {detail}")
        self.error_code = error_code
        self.detail = detail


def user_identity_tlv(user_identity: str) -> Tlv:
    """The 0x0002 TLV naming the worker of a share: append it to ``SubmitSharesExtended.tlvs``.

    Raises :class:`~ckbpool.sv2.errors.EncodeError` for an identity the receiver would refuse
    (empty, over 32 UTF-8 bytes, not encodable), so a sender finds out before the pool does.
    """
    if not isinstance(user_identity, str):
        raise EncodeError("user_identity", f"needs a str, got {type(user_identity).__name__}")
    try:
        raw = user_identity.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError("user_identity", "not encodable as UTF-8") from None
    if not raw:
        raise EncodeError("user_identity", "empty")
    if len(raw) > MAX_USER_IDENTITY_LENGTH:
        raise EncodeError("user_identity", f"{len(raw)} UTF-8 bytes exceed the maximum of {MAX_USER_IDENTITY_LENGTH}")
    return Tlv(EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, FIELD_TYPE_USER_IDENTITY, raw)


def ckb_user_identity_tlv(identity: str) -> Tlv:
    """The 0x4CCB TLV naming the account of a share (``<address>.<worker>``, 1..255 UTF-8 bytes).

    Raises EncodeError for a value the receiver would refuse, so the sender finds out first."""
    raw = _encode_identity("ckb_user_identity", identity, MAX_CKB_USER_IDENTITY_LENGTH)
    return Tlv(EXTENSION_TYPE_CKB, FIELD_TYPE_CKB_USER_IDENTITY, raw)


def ckb_share_target_tlv(target: int) -> Tlv:
    """The 0x4CCB TLV with the target a share was validated against (U256 little-endian, non-zero)."""
    if not isinstance(target, int) or not 0 < target < 1 << 256:
        raise EncodeError("share_target", "needs an int in 1..2^256-1")
    return Tlv(EXTENSION_TYPE_CKB, FIELD_TYPE_CKB_SHARE_TARGET, target.to_bytes(32, "little"))


def share_tlvs(
    user_identity: str | None = None, ckb_user_identity: str | None = None, share_target: int | None = None
) -> tuple[Tlv, ...]:
    """The TLVs of one share, in the order the receiver requires (extension types ascending)."""
    out: list[Tlv] = []
    if user_identity is not None:
        out.append(user_identity_tlv(user_identity))
    if ckb_user_identity is not None:
        out.append(ckb_user_identity_tlv(ckb_user_identity))
    if share_target is not None:
        out.append(ckb_share_target_tlv(share_target))
    return tuple(out)


def _encode_identity(name: str, identity: str, limit: int) -> bytes:
    if not isinstance(identity, str):
        raise EncodeError(name, f"needs a str, got {type(identity).__name__}")
    try:
        raw = identity.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodeError(name, "not encodable as UTF-8") from None
    if not raw:
        raise EncodeError(name, "empty")
    if len(raw) > limit:
        raise EncodeError(name, f"{len(raw)} UTF-8 bytes exceed the maximum of {limit}")
    return raw


def _user_identity(value: bytes, name: str = "user_identity", limit: int = MAX_USER_IDENTITY_LENGTH) -> str:
    if not value:
        raise TlvRejected(ERROR_INVALID_USER_IDENTITY, f"{name} is empty")
    if len(value) > limit:
        raise TlvRejected(
            ERROR_INVALID_USER_IDENTITY,
            f"{name} of {len(value)} bytes exceeds the maximum of {limit}",
        )
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TlvRejected(ERROR_INVALID_USER_IDENTITY, f"{name} is not valid UTF-8") from None


def _share_target(value: bytes) -> int:
    if len(value) != 32:
        raise TlvRejected(ERROR_INVALID_SHARE_TARGET, f"share_target is {len(value)} bytes, not 32")
    target = int.from_bytes(value, "little")
    if target == 0:
        raise TlvRejected(ERROR_INVALID_SHARE_TARGET, "share_target is zero")
    return target


@dataclass(frozen=True, slots=True)
class ShareTlvs:
    """What a share's TLVs say (each None when absent): the 0x0002 worker, the 0x4CCB account
    (``<address>.<worker>``) and the 0x4CCB share target."""

    user_identity: str | None = None
    ckb_user_identity: str | None = None
    share_target: int | None = None


NO_TLVS = ShareTlvs()


def read_share_tlvs(tlvs: Sequence[Tlv], negotiated: Set[int]) -> str | None:
    """The ``user_identity`` (0x0002) carried by a SubmitSharesExtended's TLVs (None if it has none).

    Judges every TLV as :func:`read_share_extensions` does (raises :class:`TlvRejected`)."""
    return read_share_extensions(tlvs, negotiated).user_identity


def read_share_extensions(tlvs: Sequence[Tlv], negotiated: Set[int]) -> ShareTlvs:
    """Every field we know in a SubmitSharesExtended's TLVs.

    ``negotiated``: the connection's negotiated extensions. Raises :class:`TlvRejected` for TLVs
    this connection may not carry (see the module's table).
    """
    if not tlvs:
        return NO_TLVS
    identity: str | None = None
    ckb_identity: str | None = None
    share_target: int | None = None
    seen: set[tuple[int, int]] = set()
    last_extension = -1
    for tlv in tlvs:
        ext = tlv.extension_type
        if ext not in negotiated:
            raise TlvRejected(
                ERROR_EXTENSION_NOT_NEGOTIATED,
                f"TLV of extension {ext:#06x} (field {tlv.field_type:#04x}), which this connection did not negotiate",
            )
        key = (ext, tlv.field_type)
        if key in seen:
            raise TlvRejected(ERROR_INVALID_TLV, f"TLV {ext:#06x}/{tlv.field_type:#04x} appears twice")
        if ext < last_extension:
            raise TlvRejected(ERROR_INVALID_TLV, "TLVs are not ordered by extension_type")
        seen.add(key)
        last_extension = ext
        if key == (EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, FIELD_TYPE_USER_IDENTITY):
            identity = _user_identity(tlv.value)
        elif key == (EXTENSION_TYPE_CKB, FIELD_TYPE_CKB_USER_IDENTITY):
            ckb_identity = _user_identity(tlv.value, "ckb_user_identity", MAX_CKB_USER_IDENTITY_LENGTH)
        elif key == (EXTENSION_TYPE_CKB, FIELD_TYPE_CKB_SHARE_TARGET):
            share_target = _share_target(tlv.value)
    return ShareTlvs(identity, ckb_identity, share_target)
