"""Stratum V2 encrypted transport (after the Noise handshake), sans-IO.

Wire format, checked against SRI's ``codec_sv2`` 7.0.0 (``encoder.rs``/``decoder.rs``) and ``noise_sv2``
2.0.0 (``cipher_state.rs``):

* every SV2 frame is sent as its **6-byte header encrypted on its own** (one AEAD call, 6 + 16 = 22 bytes)
  followed by its **payload encrypted in chunks** of at most 65519 plaintext bytes (65535 with the MAC),
  one AEAD call per chunk; an empty payload sends the 22-byte header only;
* ChaCha20-Poly1305 (RFC 8439), empty associated data, nonce = 4 zero bytes || counter as U64 LE;
* each direction has its own key and counter, starting at 0 and incremented once per AEAD call; the
  counter may never reach 2^64-1 (SRI refuses it too).

So a small frame costs exactly two AEAD calls each way. The transport's halves run them in
``ckbpool.sv2._chacha`` (a small C type on OpenSSL's libcrypto, sv2/_chacha.c): for messages this small the cost
was the Python around each call, and each ``cryptography`` ChaCha20Poly1305 object held a ~2.2 KiB OpenSSL
context, two per connection (issue 19). The handshake's :class:`CipherState` keeps ``cryptography`` (a handful of
messages per connection, with associated data). Nothing here does I/O except
:meth:`ckbpool.sv2._chacha.Cipher.seal_job`, the fan-out's one write to a socket the caller hands it:
:meth:`NoiseEncryptor.encrypt_frame` returns bytes to write, :meth:`NoiseDecryptor.feed` takes whatever bytes the
socket produced and returns whole plaintext frames.
"""

from __future__ import annotations

import struct
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ckbpool.sv2._chacha import Cipher, set_errors
from ckbpool.sv2.errors import FrameTooLarge, Sv2Error

__all__ = [
    "DEFAULT_MAX_FRAME_PAYLOAD",
    "ENCRYPTED_HEADER_SIZE",
    "FRAME_HEADER_SIZE",
    "MAC_SIZE",
    "MAX_CHUNK_PLAINTEXT",
    "MAX_U24",
    "CipherState",
    "NoiseDecryptError",
    "NoiseDecryptor",
    "NoiseEncryptor",
    "NoiseError",
    "NoiseFrameError",
    "NoiseFrameTooLarge",
    "NoiseHandshakeError",
    "NoiseStateError",
    "NoiseTransport",
    "encrypted_payload_size",
]

MAC_SIZE: Final = 16
FRAME_HEADER_SIZE: Final = 6
ENCRYPTED_HEADER_SIZE: Final = FRAME_HEADER_SIZE + MAC_SIZE
#: SRI's ``SV2_FRAME_CHUNK_SIZE`` (65535) minus the MAC: the largest plaintext one AEAD call may carry.
MAX_CHUNK_PLAINTEXT: Final = 65535 - MAC_SIZE
_MAX_CHUNK_CIPHERTEXT: Final = 65535
#: Largest payload the U24 length field can describe.
MAX_U24: Final = 0xFFFFFF
#: Default cap on an incoming frame's payload. SV2 mining messages are small (the largest common one,
#: NewExtendedMiningJob, is bounded by its two B0_64K coinbase parts); 1 MiB leaves room while keeping a
#: hostile peer from making us buffer 16 MiB per connection.
DEFAULT_MAX_FRAME_PAYLOAD: Final = 1 << 20
_NONCE_LIMIT: Final = (1 << 64) - 1
_nonce = struct.Struct("<4xQ").pack


class NoiseError(Sv2Error):
    """Base class of every error raised by the Noise handshake and transport code (and certificates)."""


class NoiseHandshakeError(NoiseError):
    """A handshake message was malformed or a handshake step was used out of order."""


class NoiseDecryptError(NoiseError):
    """An AEAD tag did not verify: the bytes were altered, truncated, reordered or sent under another key.

    The stream cannot be resynchronised after this; the connection must be closed.
    """


class NoiseFrameError(NoiseError):
    """A plaintext frame handed to the encryptor is not a well-formed SV2 frame."""


class NoiseFrameTooLarge(NoiseError, FrameTooLarge):
    """An incoming encrypted frame announces a payload larger than the configured maximum.

    Also a :class:`~ckbpool.sv2.errors.FrameTooLarge`, so one ``except`` covers plaintext and
    encrypted connections. Raised from the decrypted header, before any payload byte is buffered.
    """

    def __init__(self, length: int, limit: int) -> None:
        FrameTooLarge.__init__(self, length, limit)
        self.length = length


class NoiseStateError(NoiseError):
    """The cipher state cannot be used any more (nonce exhausted, or an earlier decryption failed)."""


# what the C cipher raises: an exhausted counter or a bad key, and a tag that does not verify
set_errors(NoiseStateError, NoiseDecryptError)


def encrypted_payload_size(length: int) -> int:
    """Bytes on the wire for a ``length``-byte payload: the payload plus one MAC per started chunk."""
    return length + -(-length // MAX_CHUNK_PLAINTEXT) * MAC_SIZE


class CipherState:
    """One direction of a Noise cipher: a ChaCha20-Poly1305 key and its nonce counter.

    Used by the handshake (with the handshake hash as associated data) and, after Split, by the transport
    (empty associated data). The key itself is not kept as an attribute, so it cannot leak through
    ``repr``/``vars``; only the ``cryptography`` object holds it.
    """

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise NoiseStateError("cipher key must be 32 bytes")
        self._aead = ChaCha20Poly1305(key)
        self.n = 0

    def __repr__(self) -> str:
        return f"CipherState(n={self.n})"

    def encrypt_with_ad(self, ad: bytes | None, plaintext: bytes) -> bytes:
        n = self.n
        if n >= _NONCE_LIMIT:
            raise NoiseStateError("nonce counter exhausted")
        self.n = n + 1
        return self._aead.encrypt(_nonce(n), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes | None, ciphertext: bytes) -> bytes:
        n = self.n
        if n >= _NONCE_LIMIT:
            raise NoiseStateError("nonce counter exhausted")
        try:
            plaintext = self._aead.decrypt(_nonce(n), ciphertext, ad)
        except InvalidTag:
            raise NoiseDecryptError("authentication tag mismatch") from None
        self.n = n + 1
        return plaintext


class _Counter:
    """The nonce counter ``n`` of a half's C cipher (``_cipher``), readable and settable like a plain attribute."""

    __slots__ = ()
    _cipher: Cipher

    @property
    def n(self) -> int:
        """The nonce counter: the next AEAD message's nonce."""
        return self._cipher.n

    @n.setter
    def n(self, value: int) -> None:
        self._cipher.n = value


class NoiseEncryptor(_Counter):
    """Sending half of an established transport: plaintext SV2 frames in, wire bytes out.

    The cipher is :class:`ckbpool.sv2._chacha.Cipher` (OpenSSL's ChaCha20-Poly1305 from a small C type, issue 19):
    the key lives in it (never readable back), ``n`` is its nonce counter."""

    __slots__ = ("_cipher", "_seal_frame", "seal_job")

    def __init__(self, key: bytes) -> None:
        self._cipher = Cipher(key)
        self._seal_frame = self._cipher.seal_frame
        #: ``seal_job(fd, channel_id, header1, tail1, header2, tail2)``: a new tip's per-channel step, see
        #: :meth:`ckbpool.sv2._chacha.Cipher.seal_job` (None when written to ``fd``, else the bytes left to write)
        self.seal_job = self._cipher.seal_job

    def __repr__(self) -> str:
        return f"NoiseEncryptor(n={self.n})"

    def encrypt_frame(self, frame: bytes) -> bytes:
        """Encrypt one complete plaintext SV2 frame (6-byte header + payload) for the wire: the header sealed
        alone, the payload in chunks of at most 65519 bytes.

        The header's msg_length must match the payload, because the receiver sizes its read from it.
        """
        length = len(frame) - FRAME_HEADER_SIZE
        if length < 0 or frame[3] | frame[4] << 8 | frame[5] << 16 != length:
            raise NoiseFrameError("frame length does not match the msg_length in its header")
        return self._seal_frame(frame)

    def encrypt_frames(self, frames: list[bytes]) -> bytes:
        """Encrypt several frames into one buffer (one ``write`` for a burst of messages)."""
        encrypt_frame = self.encrypt_frame
        return b"".join([encrypt_frame(f) for f in frames])


class NoiseDecryptor(_Counter):
    """Receiving half of an established transport: wire bytes in (any split), plaintext frames out.

    The payload size announced by a decrypted header is checked against ``max_frame_payload`` before
    any payload byte is buffered, so a peer cannot make us hold more than one maximum-size frame.
    After a MAC failure the decryptor refuses further input: the Noise stream cannot resynchronise.
    """

    __slots__ = ("_buf", "_cipher", "_failed", "_header", "_need", "_open", "_open_frames", "max_frame_payload")

    def __init__(self, key: bytes, *, max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD) -> None:
        if not 0 <= max_frame_payload <= MAX_U24:
            raise ValueError("max_frame_payload must be within 0..2^24-1")
        self._cipher = Cipher(key)
        self._open = self._cipher.open
        self._open_frames = self._cipher.open_frames
        self.max_frame_payload = max_frame_payload
        # bytes of an incomplete frame; b"" (shared) while none is pending, so an idle connection holds no buffer
        self._buf: bytes | bytearray = b""
        self._header: bytes | None = None
        self._need = 0
        self._failed = False

    def __repr__(self) -> str:
        return f"NoiseDecryptor(n={self.n}, buffered={len(self._buf)})"

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned frame."""
        return len(self._buf) + (FRAME_HEADER_SIZE if self._header is not None else 0)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume received bytes; return every plaintext frame (header + payload) completed by them."""
        if self._failed:
            raise NoiseStateError("transport failed earlier; close the connection")
        if self._buf or self._header is not None:
            return self._feed_general(data)
        # Fast path, nothing pending: whole small frames decrypted straight out of ``data`` in one C call; it
        # stops at a remainder shorter than a header, or (header opened) at a frame too big, multi-chunk or
        # incomplete, which the general path takes on
        try:
            out, pos, header = self._open_frames(data, self.max_frame_payload)
        except (NoiseDecryptError, NoiseStateError):
            self._failed = True
            raise
        if header is not None:
            self._accept_header(header)
            return out + self._feed_general(data[pos:])
        if pos < len(data):
            self._buf = bytearray(data[pos:])
        return out

    def _accept_header(self, header: bytes) -> None:
        """Check a decrypted header's payload length against the limit and remember what to read next."""
        length = header[3] | header[4] << 8 | header[5] << 16
        if length > self.max_frame_payload:
            self._failed = True
            raise NoiseFrameTooLarge(length, self.max_frame_payload)
        self._header = header
        self._need = encrypted_payload_size(length)

    def _feed_general(self, data: bytes) -> list[bytes]:
        """Any state, any split, any frame size; counts every nonce against the 2^64-1 limit."""
        stash = self._buf
        if stash:
            assert isinstance(stash, bytearray)  # a pending remainder is always kept as a bytearray
            stash += data  # amortised O(1) append while a large frame trickles in
            buf: bytes | bytearray = stash
        else:
            buf = data
        end = len(buf)
        pos = 0
        out: list[bytes] = []
        open_ = self._open
        try:
            while True:
                header = self._header
                if header is None:
                    if end - pos < ENCRYPTED_HEADER_SIZE:
                        break
                    header = open_(buf[pos : pos + ENCRYPTED_HEADER_SIZE])
                    pos += ENCRYPTED_HEADER_SIZE
                    self._accept_header(header)
                need = self._need
                if end - pos < need:
                    break
                parts = [header]
                stop = pos + need
                for start in range(pos, stop, _MAX_CHUNK_CIPHERTEXT):
                    parts.append(open_(buf[start : min(start + _MAX_CHUNK_CIPHERTEXT, stop)]))
                out.append(b"".join(parts))
                pos = stop
                self._header = None
        except (NoiseDecryptError, NoiseStateError):
            self._failed = True
            raise
        if buf is stash and isinstance(stash, bytearray):
            if pos >= end:
                self._buf = b""  # drop the grown buffer: the next frame may be a while
            else:
                del stash[:pos]
        elif pos < end:
            self._buf = bytearray(buf[pos:])
        return out


class NoiseTransport:
    """Both halves of an established Noise session, as returned by a completed handshake.

    ``encrypt_frame``/``feed`` are bound straight to the halves' methods so the per-frame call costs no
    extra Python frame. The halves are also available separately for a reader task and a writer task.
    """

    __slots__ = ("decryptor", "encrypt_frame", "encryptor", "feed")

    def __init__(self, encryptor: NoiseEncryptor, decryptor: NoiseDecryptor) -> None:
        self.encryptor = encryptor
        self.decryptor = decryptor
        self.encrypt_frame = encryptor.encrypt_frame
        self.feed = decryptor.feed

    @classmethod
    def from_keys(
        cls, send_key: bytes, recv_key: bytes, *, max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD
    ) -> NoiseTransport:
        return cls(NoiseEncryptor(send_key), NoiseDecryptor(recv_key, max_frame_payload=max_frame_payload))

    def __repr__(self) -> str:
        return f"NoiseTransport(sent={self.encryptor.n}, received={self.decryptor.n})"
