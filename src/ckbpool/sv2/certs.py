"""Stratum V2 pool certificates (SRI's ``SignatureNoiseMessage``): issue, encode, verify.

A pool proves in the Noise handshake that its static key was vouched for by an authority whose public
key the miner configured. The 74-byte certificate travels encrypted at the end of handshake message 2:

    version U16 LE (0) || valid_from U32 LE || not_valid_after U32 LE || signature (64 bytes)

``signature`` is a BIP340 Schnorr signature by the authority key over the 32-byte message

    SHA256(version || valid_from || not_valid_after || server static x-only public key)

i.e. the first 10 bytes of the certificate followed by the 32-byte x-only key, hashed once with plain
SHA256 (not a BIP340 tagged hash) and then signed with ``schnorrsig_sign32``. Checked against
``noise_sv2`` 2.0.0 ``signature_message.rs`` (``sign_with_rng``/``verify_with_now``) and its responder's
``get_signature``. SRI tolerates 10 s of clock drift at both ends of the window; so do we by default.

The authority key only signs; the pool needs its static key and a certificate, which
``python -m ckbpool.sv2.keys`` produces, so the authority secret can stay offline.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final

from coincurve import PrivateKey, PublicKeyXOnly

from ckbpool.sv2.keys import KeyFormatError, Keypair, check_xonly
from ckbpool.sv2.noise_transport import NoiseError

__all__ = [
    "CERTIFICATE_SIZE",
    "CERTIFICATE_VERSION",
    "DEFAULT_CLOCK_LEEWAY",
    "Certificate",
    "CertificateError",
    "CertificateExpired",
    "CertificateMalformed",
    "CertificateNotYetValid",
    "CertificateTampered",
    "CertificateUnsupportedVersion",
    "CertificateWrongAuthority",
]

CERTIFICATE_SIZE: Final = 74
CERTIFICATE_VERSION: Final = 0
#: Seconds of clock drift tolerated at each end of the validity window (SRI's ``TIME_LEEWAY``).
DEFAULT_CLOCK_LEEWAY: Final = 10
_HEAD = struct.Struct("<HII")
_FIELD_P: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
_CURVE_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class CertificateError(NoiseError):
    """The pool's certificate was refused. ``reason`` is a stable machine-readable code."""

    reason: ClassVar[str] = "invalid-certificate"


class CertificateMalformed(CertificateError):
    """The certificate is not 74 bytes, or a field cannot be parsed."""

    reason = "malformed"


class CertificateUnsupportedVersion(CertificateError):
    """The certificate's version is not 0, the only one SV2 defines."""

    reason = "unsupported-version"


class CertificateWrongAuthority(CertificateError):
    """The signature does not verify for this server key under the configured authority key.

    BIP340 has no public-key recovery, so "another authority signed it", "it was signed for another
    static key" and "its signature bytes were altered into another well-formed signature" look exactly
    the same; all of them land here. :class:`CertificateTampered` (a subclass) is the part of tampering
    that *can* be told apart.
    """

    reason = "wrong-authority"


class CertificateTampered(CertificateWrongAuthority):
    """The signature's encoding is one no signer can produce (R not a curve x coordinate, or s >= n)."""

    reason = "tampered-signature"


class CertificateNotYetValid(CertificateError):
    """The current time (plus leeway) is before ``valid_from``."""

    reason = "not-yet-valid"


class CertificateExpired(CertificateError):
    """The current time (minus leeway) is after ``not_valid_after``."""

    reason = "expired"


def signed_message(version: int, valid_from: int, not_valid_after: int, static_xonly: bytes) -> bytes:
    """The 32 bytes the authority signs: SHA256 of the certificate head and the static x-only key."""
    return hashlib.sha256(_HEAD.pack(version, valid_from, not_valid_after) + static_xonly).digest()


@dataclass(frozen=True)
class Certificate:
    """A decoded SV2 certificate. Public data only; the repr shows the window, not the signature bytes."""

    valid_from: int
    not_valid_after: int
    signature: bytes = field(repr=False)
    version: int = CERTIFICATE_VERSION

    def __post_init__(self) -> None:
        if len(self.signature) != 64:
            raise CertificateMalformed("certificate signature must be 64 bytes")
        for name in ("valid_from", "not_valid_after"):
            if not 0 <= getattr(self, name) <= 0xFFFFFFFF:
                raise CertificateMalformed(f"{name} must fit in a U32")
        if not 0 <= self.version <= 0xFFFF:
            raise CertificateMalformed("version must fit in a U16")

    # ------------------------------------------------------------------------------------- encoding

    def to_bytes(self) -> bytes:
        return _HEAD.pack(self.version, self.valid_from, self.not_valid_after) + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> Certificate:
        if len(data) != CERTIFICATE_SIZE:
            raise CertificateMalformed(f"certificate must be {CERTIFICATE_SIZE} bytes, got {len(data)}")
        version, valid_from, not_valid_after = _HEAD.unpack_from(data)
        return cls(valid_from, not_valid_after, bytes(data[10:]), version)

    @classmethod
    def from_hex(cls, text: str) -> Certificate:
        try:
            return cls.from_bytes(bytes.fromhex(text.strip()))
        except ValueError as exc:
            raise CertificateMalformed("certificate is not valid hex") from exc

    # --------------------------------------------------------------------------------------- issuing

    @classmethod
    def issue(
        cls,
        authority: Keypair,
        static_xonly: bytes,
        valid_from: int,
        not_valid_after: int,
        *,
        version: int = CERTIFICATE_VERSION,
    ) -> Certificate:
        """Sign a certificate for ``static_xonly`` (the pool's static x-only public key)."""
        try:
            check_xonly(static_xonly)
        except KeyFormatError as exc:
            raise CertificateMalformed(f"static key: {exc}") from None
        if not 0 <= valid_from <= 0xFFFFFFFF or not 0 <= not_valid_after <= 0xFFFFFFFF:
            raise CertificateMalformed("validity bounds must fit in a U32")
        msg = signed_message(version, valid_from, not_valid_after, static_xonly)
        signature = PrivateKey(authority.secret).sign_schnorr(msg)
        return cls(valid_from, not_valid_after, signature, version)

    # ---------------------------------------------------------------------------------- verification

    def verify(
        self,
        static_xonly: bytes,
        authority_xonly: bytes,
        *,
        now: int | None = None,
        clock: Callable[[], float] = time.time,
        leeway: int = DEFAULT_CLOCK_LEEWAY,
    ) -> None:
        """Raise a :class:`CertificateError` subclass unless this certificate is acceptable right now.

        Order: version, then signature, then validity window — so "expired"/"not yet valid" are only
        ever reported for a certificate the configured authority really signed. ``now`` (unix seconds)
        or ``clock`` make time injectable for tests.
        """
        if self.version != CERTIFICATE_VERSION:
            raise CertificateUnsupportedVersion(f"certificate version {self.version} is not supported")
        self._verify_signature(static_xonly, authority_xonly)
        t = int(clock()) if now is None else now
        if t + leeway < self.valid_from:
            raise CertificateNotYetValid(
                f"certificate is not valid before {self.valid_from} (now {t}, leeway {leeway}s)"
            )
        if t - leeway > self.not_valid_after:
            raise CertificateExpired(f"certificate expired at {self.not_valid_after} (now {t}, leeway {leeway}s)")

    def _verify_signature(self, static_xonly: bytes, authority_xonly: bytes) -> None:
        try:
            authority = PublicKeyXOnly(authority_xonly)
        except (ValueError, TypeError):
            raise CertificateWrongAuthority("configured authority public key is not a valid x-only key") from None
        msg = signed_message(self.version, self.valid_from, self.not_valid_after, static_xonly)
        if authority.verify(self.signature, msg):
            return
        if not _signature_well_formed(self.signature):
            raise CertificateTampered("certificate signature is not a well-formed BIP340 signature: it was altered")
        raise CertificateWrongAuthority(
            "certificate is not signed by the configured authority for this server key "
            "(different authority, different server key, or altered signature)"
        )


def _signature_well_formed(signature: bytes) -> bool:
    """True when (R, s) could have come from some signer: R a valid x coordinate, s < n."""
    r = signature[:32]
    if int.from_bytes(r, "big") >= _FIELD_P or int.from_bytes(signature[32:], "big") >= _CURVE_N:
        return False
    try:
        check_xonly(r)  # R must be the x coordinate of a curve point
    except KeyFormatError:
        return False
    return True
