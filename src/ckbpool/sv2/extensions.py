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
"""

from __future__ import annotations

from collections.abc import Sequence, Set

from ckbpool.sv2.errors import EncodeError, Sv2Error
from ckbpool.sv2.types import Tlv

__all__ = [
    "ERROR_EXTENSION_NOT_NEGOTIATED",
    "ERROR_INVALID_TLV",
    "ERROR_INVALID_USER_IDENTITY",
    "EXTENSION_TYPE_WORKER_HASHRATE_TRACKING",
    "FIELD_TYPE_USER_IDENTITY",
    "MAX_USER_IDENTITY_LENGTH",
    "TlvRejected",
    "read_share_tlvs",
    "user_identity_tlv",
]

EXTENSION_TYPE_WORKER_HASHRATE_TRACKING = 0x0002
FIELD_TYPE_USER_IDENTITY = 0x01
#: Bytes of UTF-8, as the spec and SRI's ``MAX_USER_IDENTITY_LENGTH`` say.
MAX_USER_IDENTITY_LENGTH = 32

ERROR_EXTENSION_NOT_NEGOTIATED = "extension-not-negotiated"
ERROR_INVALID_TLV = "invalid-tlv"
ERROR_INVALID_USER_IDENTITY = "invalid-user-identity"


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


def _user_identity(value: bytes) -> str:
    if not value:
        raise TlvRejected(ERROR_INVALID_USER_IDENTITY, "user_identity is empty")
    if len(value) > MAX_USER_IDENTITY_LENGTH:
        raise TlvRejected(
            ERROR_INVALID_USER_IDENTITY,
            f"user_identity of {len(value)} bytes exceeds the maximum of {MAX_USER_IDENTITY_LENGTH}",
        )
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TlvRejected(ERROR_INVALID_USER_IDENTITY, "user_identity is not valid UTF-8") from None


def read_share_tlvs(tlvs: Sequence[Tlv], negotiated: Set[int]) -> str | None:
    """The ``user_identity`` carried by a SubmitSharesExtended's TLVs (None if it has none).

    ``negotiated``: the connection's negotiated extensions. Raises :class:`TlvRejected` for TLVs
    this connection may not carry (see the module's table).
    """
    identity: str | None = None
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
    return identity
