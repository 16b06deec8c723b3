"""Stratum V2 Noise handshake, Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256, sans-IO.

Two messages, no length prefixes (SRI's codec reads them by their fixed sizes):

    -> e                        msg1: initiator's ephemeral key, 64-byte ElligatorSwift encoding
    <- e, ee, s, es, [cert]     msg2: 64 (responder ephemeral) + 80 (static, encrypted) + 90 (cert) = 234

Every detail below was checked against SRI's ``noise_sv2`` 2.0.0 (``handshake.rs``, ``initiator.rs``,
``responder.rs``) and is exercised against it by ``tests/interop``:

* init: ``ck = SHA256(protocol name)``, ``h = SHA256(ck)`` (= Noise's MixHash of an empty prologue);
* both sides ``MixHash`` the initiator's 64-byte encoding, then ``MixHash(b"")`` — SRI's
  ``EncryptAndHash``/``DecryptAndHash`` of msg1's empty payload with no key yet;
* responder: ``MixHash(e_R)``; ``MixKey(ECDH(e_I, e_R))``; ``EncryptAndHash(ellswift(s_R))`` (the static
  key travels as a 64-byte ElligatorSwift encoding); ``MixKey(ECDH(e_I, s_R))``;
  ``EncryptAndHash(certificate)``; the initiator mirrors this, decrypting;
* ``MixHash`` always hashes the bytes as sent (ciphertext once a key exists); AEAD associated data is
  ``h``; each ``MixKey`` resets the handshake nonce to 0;
* ECDH is BIP324's x-only ElligatorSwift ECDH (libsecp256k1 ``ellswift_xdh`` with the BIP324 hash),
  the initiator's *ephemeral* encoding always in the A position — also for the ``es`` exchange, where B is
  the responder's static encoding;
* HKDF is Noise's HKDF with HMAC-SHA256; ``Split`` = HKDF(ck, empty): the initiator sends with the first
  key and receives with the second, the responder the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Final

from ckbpool.sv2.certs import (
    CERTIFICATE_SIZE,
    CERTIFICATE_VERSION,
    DEFAULT_CLOCK_LEEWAY,
    Certificate,
    CertificateUnsupportedVersion,
)
from ckbpool.sv2.keys import (
    Keypair,
    check_xonly,
    decode_authority_public_key,
    ellswift_create,
    ellswift_to_xonly,
    ellswift_xdh,
)
from ckbpool.sv2.noise_transport import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    MAC_SIZE,
    CipherState,
    NoiseDecryptor,
    NoiseEncryptor,
    NoiseHandshakeError,
    NoiseTransport,
)

__all__ = [
    "MSG1_SIZE",
    "MSG2_SIZE",
    "PROTOCOL_NAME",
    "NoiseInitiator",
    "NoiseResponder",
    "ResponderCredentials",
]

PROTOCOL_NAME: Final = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256"
ELLSWIFT_SIZE: Final = 64
MSG1_SIZE: Final = ELLSWIFT_SIZE
MSG2_SIZE: Final = ELLSWIFT_SIZE + (ELLSWIFT_SIZE + MAC_SIZE) + (CERTIFICATE_SIZE + MAC_SIZE)
_CK0: Final = hashlib.sha256(PROTOCOL_NAME).digest()
_H0: Final = hashlib.sha256(_CK0).digest()
_CURVE_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    return out1, _hmac(temp, out1 + b"\x02")


def _new_secret() -> bytes:
    while True:
        secret = os.urandom(32)
        if 0 < int.from_bytes(secret, "big") < _CURVE_N:
            return secret


class _SymmetricState:
    """Noise SymmetricState (ck, h, and the handshake CipherState)."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self) -> None:
        self.ck = _CK0
        self.h = _H0
        self.cipher: CipherState | None = None

    def __repr__(self) -> str:
        return "_SymmetricState()"

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = _hkdf2(self.ck, ikm)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = plaintext if self.cipher is None else self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = ciphertext if self.cipher is None else self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        return _hkdf2(self.ck, b"")


class NoiseInitiator:
    """The miner/proxy side: sends msg1, checks msg2 and the pool's certificate, yields the transport.

    ``authority_public_key`` is the 32-byte x-only key or its Base58Check string. ``None`` accepts any
    pool without authentication (SRI allows this too); only use it for tests.

    Usage::

        init = NoiseInitiator(authority)
        send(init.start())                       # 64 bytes
        transport = init.complete(recv_exactly(MSG2_SIZE))
    """

    def __init__(
        self,
        authority_public_key: bytes | str | None,
        *,
        clock: Callable[[], float] = time.time,
        leeway: int = DEFAULT_CLOCK_LEEWAY,
        max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD,
    ) -> None:
        if isinstance(authority_public_key, str):
            authority_public_key = decode_authority_public_key(authority_public_key)
        elif authority_public_key is not None:
            check_xonly(authority_public_key)
        self._authority = authority_public_key
        self._clock = clock
        self._leeway = leeway
        self._max_frame_payload = max_frame_payload
        self._state = _SymmetricState()
        self._e_secret: bytes | None = None
        self._e_ell = b""
        self._step = 0
        self.certificate: Certificate | None = None
        self.remote_static_key: bytes | None = None

    def __repr__(self) -> str:
        return f"NoiseInitiator(step={self._step})"

    def start(self) -> bytes:
        """Return msg1: the initiator's 64-byte ElligatorSwift ephemeral key."""
        if self._step != 0:
            raise NoiseHandshakeError("start() already called")
        self._e_secret = _new_secret()
        self._e_ell = ellswift_create(self._e_secret)
        self._state.mix_hash(self._e_ell)
        self._state.encrypt_and_hash(b"")
        self._step = 1
        return self._e_ell

    def complete(self, msg2: bytes) -> NoiseTransport:
        """Process the responder's 234-byte msg2; return the transport or raise a NoiseError.

        Raises :class:`NoiseHandshakeError` (wrong size / order), ``NoiseDecryptError`` (msg2 altered or
        not meant for us) or a ``CertificateError`` subclass (pool not vouched for by the authority).
        """
        if self._step != 1 or self._e_secret is None:
            raise NoiseHandshakeError("complete() needs start() first, and only once")
        self._step = 2  # whatever happens now, this handshake object is spent
        if len(msg2) != MSG2_SIZE:
            raise NoiseHandshakeError(f"handshake message 2 must be {MSG2_SIZE} bytes, got {len(msg2)}")
        msg2 = bytes(msg2)
        st = self._state
        e_secret, e_ell = self._e_secret, self._e_ell
        self._e_secret = None
        re_ell = msg2[:64]
        st.mix_hash(re_ell)
        st.mix_key(ellswift_xdh(e_ell, re_ell, e_secret, initiator=True))
        rs_ell = st.decrypt_and_hash(msg2[64:144])
        st.mix_key(ellswift_xdh(e_ell, rs_ell, e_secret, initiator=True))
        cert = Certificate.from_bytes(st.decrypt_and_hash(msg2[144:234]))
        rs_xonly = ellswift_to_xonly(rs_ell)
        if self._authority is not None:
            cert.verify(rs_xonly, self._authority, clock=self._clock, leeway=self._leeway)
        elif cert.version != CERTIFICATE_VERSION:  # all SRI checks without an authority key
            raise CertificateUnsupportedVersion(f"certificate version {cert.version} is not supported")
        self.certificate = cert
        self.remote_static_key = rs_xonly
        send_key, recv_key = st.split()
        self._state = _SymmetricState()
        return NoiseTransport(
            NoiseEncryptor(send_key), NoiseDecryptor(recv_key, max_frame_payload=self._max_frame_payload)
        )


class ResponderCredentials:
    """What a pool needs to answer handshakes; built once, shared by every connection.

    Either a static key plus a certificate the authority issued offline (:meth:`from_certificate`,
    the normal deployment), or the authority key itself, signing a fresh certificate for every
    handshake as SRI's ``Responder`` does (:meth:`signing_with_authority`, handy for tests and labs).
    The static key's ElligatorSwift encoding is computed once: it is sent encrypted, so reusing it
    leaks nothing to an observer and saves one curve multiplication per handshake.
    """

    __slots__ = ("_authority", "_cert_validity", "_static", "_static_ell", "certificate")

    def __init__(
        self,
        static: Keypair,
        certificate: Certificate | None,
        authority: Keypair | None = None,
        cert_validity: int = 3600,
    ) -> None:
        if certificate is None and authority is None:
            raise ValueError("need a certificate or an authority key to sign one")
        self._static = static
        self._static_ell = ellswift_create(static.secret)
        self.certificate = certificate
        self._authority = authority
        self._cert_validity = cert_validity

    def __repr__(self) -> str:
        return f"ResponderCredentials(static={self._static.xonly_public.hex()}, certificate={self.certificate})"

    @classmethod
    def from_certificate(cls, static_secret: bytes, certificate: Certificate | bytes) -> ResponderCredentials:
        if not isinstance(certificate, Certificate):
            certificate = Certificate.from_bytes(certificate)
        return cls(Keypair.from_secret(static_secret), certificate)

    @classmethod
    def signing_with_authority(
        cls, authority: Keypair, *, static: Keypair | None = None, cert_validity: int = 3600
    ) -> ResponderCredentials:
        return cls(static or Keypair.generate(), None, authority, cert_validity)

    @property
    def static_public_key(self) -> bytes:
        return self._static.xonly_public

    def verify(
        self,
        authority_public_key: bytes | str,
        *,
        clock: Callable[[], float] = time.time,
        leeway: int = DEFAULT_CLOCK_LEEWAY,
    ) -> None:
        """Check the configured certificate the way miners will, e.g. at pool start-up.

        Raises the same :class:`~ckbpool.sv2.certs.CertificateError` a miner would get, so a pool
        configured with a certificate for another static key, from another authority, or expired,
        fails loudly before accepting connections. Signing credentials always pass.
        """
        if isinstance(authority_public_key, str):
            authority_public_key = decode_authority_public_key(authority_public_key)
        if self.certificate is not None:
            self.certificate.verify(self._static.xonly_public, authority_public_key, clock=clock, leeway=leeway)

    def certificate_bytes(self, now: int) -> bytes:
        if self.certificate is not None:
            return self.certificate.to_bytes()
        assert self._authority is not None
        end = min(now + self._cert_validity, 0xFFFFFFFF)
        return Certificate.issue(self._authority, self._static.xonly_public, now, end).to_bytes()


class NoiseResponder:
    """The pool side of one handshake: msg1 in, (msg2, transport) out."""

    def __init__(
        self,
        credentials: ResponderCredentials,
        *,
        clock: Callable[[], float] = time.time,
        max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD,
    ) -> None:
        self._credentials = credentials
        self._clock = clock
        self._max_frame_payload = max_frame_payload
        self._done = False

    def __repr__(self) -> str:
        return f"NoiseResponder(done={self._done})"

    def respond(self, msg1: bytes) -> tuple[bytes, NoiseTransport]:
        """Answer the initiator's 64-byte msg1 with the 234-byte msg2 and return the ready transport.

        Any 64 bytes are a valid ElligatorSwift encoding, so garbage here is only detected by the
        initiator; only a wrong length is an error (:class:`NoiseHandshakeError`).
        """
        if self._done:
            raise NoiseHandshakeError("respond() may only be called once per handshake")
        self._done = True
        if len(msg1) != MSG1_SIZE:
            raise NoiseHandshakeError(f"handshake message 1 must be {MSG1_SIZE} bytes, got {len(msg1)}")
        creds = self._credentials
        re_ell = bytes(msg1)
        st = _SymmetricState()
        st.mix_hash(re_ell)
        st.decrypt_and_hash(b"")
        e_secret = _new_secret()
        e_ell = ellswift_create(e_secret)
        st.mix_hash(e_ell)
        st.mix_key(ellswift_xdh(re_ell, e_ell, e_secret, initiator=False))
        enc_static = st.encrypt_and_hash(creds._static_ell)
        st.mix_key(ellswift_xdh(re_ell, creds._static_ell, creds._static.secret, initiator=False))
        enc_cert = st.encrypt_and_hash(creds.certificate_bytes(int(self._clock())))
        recv_key, send_key = st.split()
        transport = NoiseTransport(
            NoiseEncryptor(send_key), NoiseDecryptor(recv_key, max_frame_payload=self._max_frame_payload)
        )
        return e_ell + enc_static + enc_cert, transport
