"""The Noise transport's C cipher (``ckbpool.sv2._chacha``, issue 19) against ``cryptography``'s ChaCha20Poly1305:
every message, frame layout, nonce and error must be what the Python transport produced before (and what SRI's
noise_sv2 expects: the interop tests run the whole transport against it). And the fan-out's direct socket write:
bytes written in order, the rest handed back, never a write once the transport has queued bytes of its own."""

from __future__ import annotations

import os
import socket
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.sv2._chacha import Cipher
from ckbpool.sv2.noise_transport import (
    MAX_CHUNK_PLAINTEXT,
    NoiseDecryptError,
    NoiseDecryptor,
    NoiseEncryptor,
    NoiseStateError,
)

pytestmark = pytest.mark.unit

KEY = bytes(range(32))
LIMIT = (1 << 64) - 1
_nonce = struct.Struct("<4xQ").pack


def _reference_frame(aead: ChaCha20Poly1305, n: int, frame: bytes) -> tuple[bytes, int]:
    """The SV2 Noise layout: the 6-byte header sealed alone, the payload in chunks of at most 65519 bytes."""
    out = [aead.encrypt(_nonce(n), frame[:6], None)]
    n += 1
    for start in range(6, len(frame), MAX_CHUNK_PLAINTEXT):
        out.append(aead.encrypt(_nonce(n), frame[start : start + MAX_CHUNK_PLAINTEXT], None))
        n += 1
    return b"".join(out), n


def _frame(msg_type: int, payload: bytes) -> bytes:
    return bytes([0, 0, msg_type]) + len(payload).to_bytes(3, "little") + payload


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), n=st.integers(0, LIMIT - 2), data=st.binary(max_size=300))
def test_seal_and_open_are_chacha20_poly1305_with_the_noise_nonce(key: bytes, n: int, data: bytes) -> None:
    reference = ChaCha20Poly1305(key)
    sealer, opener = Cipher(key), Cipher(key)
    sealer.n = opener.n = n
    sealed = sealer.seal(data)
    assert sealed == reference.encrypt(_nonce(n), data, None)
    assert opener.open(sealed) == data
    assert sealer.n == opener.n == n + 1


@pytest.mark.parametrize("length", [0, 1, 40, MAX_CHUNK_PLAINTEXT, MAX_CHUNK_PLAINTEXT + 1, 140_000])
def test_a_frame_is_sealed_header_alone_then_payload_chunks(length: int) -> None:
    frame = _frame(0x1A, os.urandom(length))
    encryptor = NoiseEncryptor(KEY)
    encryptor.n = 7
    expected, n = _reference_frame(ChaCha20Poly1305(KEY), 7, frame)
    assert encryptor.encrypt_frame(frame) == expected
    assert encryptor.n == n
    decryptor = NoiseDecryptor(KEY)
    decryptor.n = 7
    assert decryptor.feed(expected) == [frame]
    assert decryptor.n == n


def _job_parts(tail1: int = 90, tail2: int = 36) -> tuple[bytes, bytes, bytes, bytes]:
    t1, t2 = os.urandom(tail1), os.urandom(tail2)
    h1 = bytes([0, 0x80, 0x15]) + (4 + len(t1)).to_bytes(3, "little")
    h2 = bytes([0, 0x80, 0x20]) + (4 + len(t2)).to_bytes(3, "little")
    return h1, t1, h2, t2


def test_seal_job_is_two_frames_with_the_channel_id_patched_in() -> None:
    h1, t1, h2, t2 = _job_parts()
    encryptor = NoiseEncryptor(KEY)
    encryptor.n = 3
    cid = (0xDEADBEEF).to_bytes(4, "little")
    reference = NoiseEncryptor(KEY)
    reference.n = 3
    expected = reference.encrypt_frames([h1 + cid + t1, h2 + cid + t2])
    assert encryptor.seal_job(-1, 0xDEADBEEF, h1, t1, h2, t2) == expected  # fd -1: every byte handed back
    assert encryptor.n == reference.n == 7


def test_seal_job_refuses_a_header_that_does_not_announce_its_payload_and_uses_no_nonce() -> None:
    h1, t1, h2, t2 = _job_parts()
    encryptor = NoiseEncryptor(KEY)
    for args in ((h1, t1 + b"x", h2, t2), (h1, t1, h2, t2[:-1]), (h1[:5], t1, h2, t2)):
        with pytest.raises(ValueError, match="msg_length"):
            encryptor.seal_job(-1, 1, *args)
    for cid in (1 << 32, (1 << 64) + 1, -1, 1.0):  # never wrapped into a u32
        with pytest.raises(ValueError, match="channel id"):
            encryptor.seal_job(-1, cid, h1, t1, h2, t2)
    assert encryptor.n == 0


def test_seal_job_writes_to_the_socket_and_hands_back_only_what_it_did_not_take() -> None:
    h1, t1, h2, t2 = _job_parts()
    ours, theirs = socket.socketpair()
    try:
        ours.setblocking(False)
        encryptor, decryptor = NoiseEncryptor(KEY), NoiseDecryptor(KEY)
        assert encryptor.seal_job(ours.fileno(), 5, h1, t1, h2, t2) is None  # all of it written
        cid = (5).to_bytes(4, "little")
        assert decryptor.feed(theirs.recv(1 << 16)) == [h1 + cid + t1, h2 + cid + t2]
        # fill the socket until it takes no more, then a job: the part it refused comes back, in order
        sent = 0
        while True:
            try:
                sent += ours.send(b"\0" * 4096)
            except BlockingIOError:
                break
        rest = encryptor.seal_job(ours.fileno(), 6, h1, t1, h2, t2)
        assert rest is not None and encryptor.n == 8
        whole = NoiseEncryptor(KEY)
        whole.n = 4
        wire = whole.encrypt_frames([h1 + (6).to_bytes(4, "little") + t1, h2 + (6).to_bytes(4, "little") + t2])
        assert wire.endswith(rest)
        theirs.setblocking(False)
        received = b""
        while len(received) < sent + len(wire) - len(rest):
            received += theirs.recv(1 << 20)
        assert received[sent:] == wire[: len(wire) - len(rest)]
    finally:
        ours.close()
        theirs.close()


def test_seal_job_on_a_closed_descriptor_hands_everything_back() -> None:
    h1, t1, h2, t2 = _job_parts()
    ours, theirs = socket.socketpair()
    theirs.close()  # the peer is gone: the write is refused (EPIPE), never a SIGPIPE
    try:
        encryptor = NoiseEncryptor(KEY)
        rest = encryptor.seal_job(ours.fileno(), 1, h1, t1, h2, t2)
        assert rest is not None and len(rest) == 2 * 22 + 2 * 4 + len(t1) + len(t2) + 2 * 16
    finally:
        ours.close()


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 200), max_size=6),
    limit=st.sampled_from([0, 64, 1 << 20]),
)
def test_feed_gives_the_frames_whatever_the_split(sizes: list[int], cuts: list[int], limit: int) -> None:
    frames = [_frame(0x1B, os.urandom(size)) for size in sizes]
    wire = NoiseEncryptor(KEY).encrypt_frames(frames)
    decryptor = NoiseDecryptor(KEY, max_frame_payload=max(limit, max(sizes)))
    out: list[bytes] = []
    pos = 0
    for cut in cuts:
        out += decryptor.feed(wire[pos : pos + cut])
        pos += cut
    out += decryptor.feed(wire[pos:])
    assert out == frames
    assert decryptor.buffered == 0 and decryptor.n == sum(1 if len(f) == 6 else 2 for f in frames)


def test_a_tampered_frame_fails_at_its_own_nonce_and_poisons_the_stream() -> None:
    frames = [_frame(0x1B, b"a" * 10), _frame(0x1B, b"b" * 10), _frame(0x1B, b"c" * 10)]
    wire = bytearray(NoiseEncryptor(KEY).encrypt_frames(frames))
    wire[-10] ^= 1  # the third frame is its encrypted header (22 bytes) + payload (26): this is in its payload
    decryptor = NoiseDecryptor(KEY)
    with pytest.raises(NoiseDecryptError):
        decryptor.feed(bytes(wire))
    assert decryptor.n == 5  # two frames and the third's header opened; its payload's nonce not used
    with pytest.raises(NoiseStateError):
        decryptor.feed(b"")


def test_the_counter_never_reaches_2_64_minus_1() -> None:
    encryptor = NoiseEncryptor(KEY)
    encryptor.n = LIMIT - 1
    encryptor._cipher.seal(b"x")  # the last usable nonce
    with pytest.raises(NoiseStateError, match="exhausted"):
        encryptor._cipher.seal(b"x")
    h1, t1, h2, t2 = _job_parts()
    encryptor.n = LIMIT - 3  # a job needs four nonces: LIMIT-3 .. LIMIT would use the forbidden one
    with pytest.raises(NoiseStateError, match="exhausted"):
        encryptor.seal_job(-1, 1, h1, t1, h2, t2)
    assert encryptor.n == LIMIT - 3
    encryptor.n = LIMIT - 4
    assert encryptor.seal_job(-1, 1, h1, t1, h2, t2) is not None and encryptor.n == LIMIT


def test_a_key_is_32_bytes_and_never_shown() -> None:
    with pytest.raises(NoiseStateError):
        Cipher(b"short")
    cipher = Cipher(KEY)
    assert KEY.hex() not in repr(cipher) and not hasattr(cipher, "key") and not hasattr(cipher, "__dict__")
