"""Noise NX handshake and encrypted transport, without sockets.

Byte compatibility with SRI is judged by tests/interop; these tests pin the wire layout we derived
from SRI's source (nonce format, header/payload AEAD split, chunking), the state machine, and the
promise that bad input only ever raises the library's own errors.
"""

from __future__ import annotations

import os
import struct
import time

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.sv2.certs import (
    Certificate,
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateUnsupportedVersion,
    CertificateWrongAuthority,
)
from ckbpool.sv2.errors import FrameTooLarge, Sv2Error
from ckbpool.sv2.keys import Keypair
from ckbpool.sv2.noise import (
    ENCRYPTED_HEADER_SIZE,
    MAX_CHUNK_PLAINTEXT,
    MSG1_SIZE,
    MSG2_SIZE,
    PROTOCOL_NAME,
    NoiseDecryptError,
    NoiseDecryptor,
    NoiseEncryptor,
    NoiseError,
    NoiseFrameError,
    NoiseFrameTooLarge,
    NoiseHandshakeError,
    NoiseInitiator,
    NoiseResponder,
    NoiseStateError,
    NoiseTransport,
    ResponderCredentials,
    encrypted_payload_size,
)

pytestmark = pytest.mark.unit

NOW = 1_750_000_000
AUTHORITY = Keypair.generate()
STATIC = Keypair.generate()
CERT = Certificate.issue(AUTHORITY, STATIC.xonly_public, NOW - 3600, NOW + 3600)
CREDS = ResponderCredentials.from_certificate(STATIC.secret, CERT)


def clock() -> float:
    return float(NOW)


def frame(payload: bytes, msg_type: int = 0x1B, ext: int = 0x8000) -> bytes:
    return struct.pack("<HB", ext, msg_type) + len(payload).to_bytes(3, "little") + payload


def handshake(
    creds: ResponderCredentials = CREDS, authority: bytes | str | None = AUTHORITY.xonly_public
) -> tuple[NoiseInitiator, NoiseTransport, NoiseTransport]:
    initiator = NoiseInitiator(authority, clock=clock)
    msg2, responder_side = NoiseResponder(creds, clock=clock).respond(initiator.start())
    return initiator, initiator.complete(msg2), responder_side


# ----------------------------------------------------------------------------------------- handshake


def test_protocol_name_hash_matches_sri_constant() -> None:
    import hashlib

    # noise_sv2 2.0.0 lib.rs NOISE_HASHED_PROTOCOL_NAME_CHACHA
    sri = bytes([46, 180, 120, 129, 32, 142, 158, 238, 31, 102, 159, 103, 198, 110, 231, 14, 169, 234, 136, 9,
                 13, 80, 63, 232, 48, 220, 75, 200, 62, 41, 191, 16])  # fmt: skip
    assert hashlib.sha256(PROTOCOL_NAME).digest() == sri


def test_handshake_sizes_and_round_trip_both_directions() -> None:
    initiator = NoiseInitiator(AUTHORITY.authority_public_key, clock=clock)
    msg1 = initiator.start()
    assert len(msg1) == MSG1_SIZE == 64
    msg2, pool = NoiseResponder(CREDS, clock=clock).respond(msg1)
    assert len(msg2) == MSG2_SIZE == 234
    miner = initiator.complete(msg2)
    assert initiator.certificate == CERT
    assert initiator.remote_static_key == STATIC.xonly_public
    for payload in (b"", b"x", os.urandom(37), os.urandom(MAX_CHUNK_PLAINTEXT + 1)):
        f = frame(payload)
        assert pool.feed(miner.encrypt_frame(f)) == [f]
        assert miner.feed(pool.encrypt_frame(f)) == [f]


def test_each_handshake_uses_fresh_ephemeral_keys() -> None:
    a, b = NoiseInitiator(None), NoiseInitiator(None)
    assert a.start() != b.start()
    msg1 = NoiseInitiator(None).start()
    m2a, _ = NoiseResponder(CREDS).respond(msg1)
    m2b, _ = NoiseResponder(CREDS).respond(msg1)
    assert m2a[:64] != m2b[:64]


def test_sessions_have_independent_keys() -> None:
    _, miner1, _ = handshake()
    _, _, pool2 = handshake()
    f = frame(b"share")
    with pytest.raises(NoiseDecryptError):
        pool2.feed(miner1.encrypt_frame(f))


def test_directions_use_different_keys() -> None:
    # A frame the initiator sent cannot be fed back into the initiator's own decryptor (Split order).
    _, miner, _ = handshake()
    with pytest.raises(NoiseDecryptError):
        miner.feed(miner.encrypt_frame(frame(b"echo")))


def test_signing_responder_issues_fresh_certificates() -> None:
    creds = ResponderCredentials.signing_with_authority(AUTHORITY, cert_validity=600)
    initiator, _, _ = handshake(creds)
    assert initiator.certificate is not None
    assert (initiator.certificate.valid_from, initiator.certificate.not_valid_after) == (NOW, NOW + 600)


def test_credentials_self_check() -> None:
    CREDS.verify(AUTHORITY.authority_public_key, clock=clock)
    with pytest.raises(CertificateWrongAuthority):
        CREDS.verify(Keypair.generate().xonly_public, clock=clock)
    with pytest.raises(CertificateWrongAuthority):  # certificate issued for another static key
        ResponderCredentials.from_certificate(Keypair.generate().secret, CERT).verify(AUTHORITY.xonly_public)
    with pytest.raises(CertificateExpired):
        CREDS.verify(AUTHORITY.xonly_public, clock=lambda: NOW + 7200)


def test_initiator_without_authority_accepts_any_pool() -> None:
    other = Keypair.generate()
    creds = ResponderCredentials.signing_with_authority(other)
    initiator, _, _ = handshake(creds, authority=None)
    assert initiator.remote_static_key == creds.static_public_key


def test_initiator_without_authority_still_checks_version() -> None:
    cert = Certificate.issue(AUTHORITY, STATIC.xonly_public, NOW - 10, NOW + 10, version=1)
    with pytest.raises(CertificateUnsupportedVersion):
        handshake(ResponderCredentials.from_certificate(STATIC.secret, cert), authority=None)


@pytest.mark.parametrize(
    ("window", "error"),
    [
        ((NOW - 7200, NOW - 3600), CertificateExpired),
        ((NOW + 3600, NOW + 7200), CertificateNotYetValid),
    ],
)
def test_initiator_refuses_certificate_outside_window(window: tuple[int, int], error: type[Exception]) -> None:
    cert = Certificate.issue(AUTHORITY, STATIC.xonly_public, *window)
    with pytest.raises(error):
        handshake(ResponderCredentials.from_certificate(STATIC.secret, cert))


def test_initiator_refuses_other_authority() -> None:
    with pytest.raises(CertificateWrongAuthority):
        handshake(authority=Keypair.generate().xonly_public)


def test_initiator_refuses_certificate_for_another_static_key() -> None:
    # A man in the middle replaying the pool's certificate with its own static key.
    mitm = ResponderCredentials.from_certificate(Keypair.generate().secret, CERT)
    with pytest.raises(CertificateWrongAuthority):
        handshake(mitm)


def test_certificate_errors_have_distinct_reasons() -> None:
    reasons = set()
    for window, authority in (
        ((NOW - 7200, NOW - 3600), AUTHORITY.xonly_public),
        ((NOW + 3600, NOW + 7200), AUTHORITY.xonly_public),
        ((NOW - 60, NOW + 60), Keypair.generate().xonly_public),
    ):
        cert = Certificate.issue(AUTHORITY, STATIC.xonly_public, *window)
        with pytest.raises(CertificateError) as info:
            handshake(ResponderCredentials.from_certificate(STATIC.secret, cert), authority=authority)
        reasons.add(info.value.reason)
    assert reasons == {"expired", "not-yet-valid", "wrong-authority"}


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_responder_rejects_wrong_msg1_length(length: int) -> None:
    with pytest.raises(NoiseHandshakeError):
        NoiseResponder(CREDS).respond(b"\x01" * length)


def test_garbage_msg1_is_answered_but_cannot_complete() -> None:
    # Every 64-byte string is a valid ElligatorSwift encoding: the responder cannot tell garbage apart.
    msg2, _ = NoiseResponder(CREDS).respond(os.urandom(64))
    initiator = NoiseInitiator(AUTHORITY.xonly_public)
    initiator.start()
    with pytest.raises(NoiseDecryptError):
        initiator.complete(msg2)


@pytest.mark.parametrize("length", [0, 64, 144, 233, 235])
def test_initiator_rejects_truncated_or_long_msg2(length: int) -> None:
    initiator = NoiseInitiator(AUTHORITY.xonly_public)
    msg2, _ = NoiseResponder(CREDS).respond(initiator.start())
    with pytest.raises(NoiseHandshakeError):
        initiator.complete((msg2 + b"\x00")[:length])


@pytest.mark.parametrize("position", [0, 40, 63, 64, 100, 143, 144, 200, 233])
def test_any_altered_msg2_byte_fails_authentication(position: int) -> None:
    initiator = NoiseInitiator(AUTHORITY.xonly_public, clock=clock)
    msg2, _ = NoiseResponder(CREDS, clock=clock).respond(initiator.start())
    altered = bytearray(msg2)
    altered[position] ^= 0x01
    # The ephemeral key is hashed into the transcript; static key and certificate are AEAD-protected.
    with pytest.raises(NoiseDecryptError):
        initiator.complete(bytes(altered))


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=MSG2_SIZE, max_size=MSG2_SIZE))
def test_random_msg2_raises_only_library_errors(msg2: bytes) -> None:
    initiator = NoiseInitiator(AUTHORITY.xonly_public)
    initiator.start()
    with pytest.raises(NoiseError):
        initiator.complete(msg2)


def test_handshake_steps_out_of_order() -> None:
    initiator = NoiseInitiator(None)
    with pytest.raises(NoiseHandshakeError):
        initiator.complete(b"\x00" * MSG2_SIZE)
    msg1 = initiator.start()
    with pytest.raises(NoiseHandshakeError):
        initiator.start()
    responder = NoiseResponder(CREDS)
    msg2, _ = responder.respond(msg1)
    with pytest.raises(NoiseHandshakeError):
        responder.respond(msg1)
    initiator.complete(msg2)
    with pytest.raises(NoiseHandshakeError):
        initiator.complete(msg2)


def test_failed_handshake_cannot_be_retried() -> None:
    initiator = NoiseInitiator(AUTHORITY.xonly_public)
    msg2, _ = NoiseResponder(CREDS).respond(initiator.start())
    with pytest.raises(NoiseHandshakeError):
        initiator.complete(msg2[:-1])
    with pytest.raises(NoiseHandshakeError):
        initiator.complete(msg2)


def test_no_secret_in_reprs_or_errors() -> None:
    initiator = NoiseInitiator(AUTHORITY.xonly_public)
    msg2, pool = NoiseResponder(CREDS).respond(initiator.start())
    texts = [repr(initiator), repr(pool), repr(CREDS), repr(STATIC), repr(AUTHORITY), repr(pool.encryptor)]
    try:
        NoiseInitiator(Keypair.generate().xonly_public, clock=clock).complete(msg2)
    except NoiseError as exc:
        texts.append(str(exc))
    for secret in (STATIC.secret, AUTHORITY.secret):
        for text in texts:
            assert secret.hex() not in text
            assert repr(secret) not in text


# ----------------------------------------------------------------------------------------- transport


KEY_A, KEY_B = bytes(range(32)), bytes(range(32, 64))


def nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "little")


def test_wire_format_header_then_payload_with_counter_nonces() -> None:
    # codec_sv2 encoder.rs: header and payload are separate AEAD calls, empty AD, nonce 0^4 || LE64(n).
    enc = NoiseEncryptor(KEY_A)
    aead = ChaCha20Poly1305(KEY_A)
    f1, f2, f3 = frame(b"abc"), frame(b""), frame(b"defg")
    assert enc.encrypt_frame(f1) == aead.encrypt(nonce(0), f1[:6], None) + aead.encrypt(nonce(1), f1[6:], None)
    assert enc.encrypt_frame(f2) == aead.encrypt(nonce(2), f2, None)  # empty payload: header only
    assert enc.encrypt_frame(f3)[:ENCRYPTED_HEADER_SIZE] == aead.encrypt(nonce(3), f3[:6], None)
    assert enc.n == 5


def test_large_payload_is_chunked_at_65519_bytes() -> None:
    enc = NoiseEncryptor(KEY_A)
    aead = ChaCha20Poly1305(KEY_A)
    payload = os.urandom(2 * MAX_CHUNK_PLAINTEXT + 10)
    wire = enc.encrypt_frame(frame(payload))
    expected = (
        aead.encrypt(nonce(0), frame(payload)[:6], None)
        + aead.encrypt(nonce(1), payload[:MAX_CHUNK_PLAINTEXT], None)
        + aead.encrypt(nonce(2), payload[MAX_CHUNK_PLAINTEXT : 2 * MAX_CHUNK_PLAINTEXT], None)
        + aead.encrypt(nonce(3), payload[2 * MAX_CHUNK_PLAINTEXT :], None)
    )
    assert wire == expected
    assert len(wire) == ENCRYPTED_HEADER_SIZE + encrypted_payload_size(len(payload))
    assert enc.n == 4


@pytest.mark.parametrize(
    ("length", "size"),
    [(0, 0), (1, 17), (MAX_CHUNK_PLAINTEXT, 65535), (MAX_CHUNK_PLAINTEXT + 1, 65536 + 16), (0xFFFFFF, None)],
)
def test_encrypted_payload_size(length: int, size: int | None) -> None:
    chunks = -(-length // MAX_CHUNK_PLAINTEXT)
    assert encrypted_payload_size(length) == (size if size is not None else length + 16 * chunks)


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=12),
    big=st.sampled_from([0, MAX_CHUNK_PLAINTEXT - 1, MAX_CHUNK_PLAINTEXT, MAX_CHUNK_PLAINTEXT + 1, 140_000]),
    cuts=st.lists(st.integers(min_value=1, max_value=70_000), max_size=40),
)
def test_decryptor_accepts_any_split(payloads: list[bytes], big: int, cuts: list[int]) -> None:
    frames = [frame(p) for p in payloads] + [frame(b"\xab" * big)]
    enc, dec = NoiseEncryptor(KEY_A), NoiseDecryptor(KEY_A)
    wire = enc.encrypt_frames(frames)
    out: list[bytes] = []
    pos = 0
    for cut in cuts:
        out += dec.feed(wire[pos : pos + cut])
        pos += cut
    out += dec.feed(wire[pos:])
    assert out == frames
    assert dec.n == enc.n
    assert dec.buffered == 0


def test_decryptor_byte_by_byte() -> None:
    frames = [frame(b"one"), frame(b""), frame(os.urandom(100))]
    wire = NoiseEncryptor(KEY_A).encrypt_frames(frames)
    dec = NoiseDecryptor(KEY_A)
    out: list[bytes] = []
    for i in range(len(wire)):
        out += dec.feed(wire[i : i + 1])
    assert out == frames


def test_max_frame_size_enforced_from_the_header_alone() -> None:
    wire = NoiseEncryptor(KEY_A).encrypt_frame(frame(b"\x00" * 5000))
    dec = NoiseDecryptor(KEY_A, max_frame_payload=4096)
    with pytest.raises(NoiseFrameTooLarge) as info:
        dec.feed(wire[:ENCRYPTED_HEADER_SIZE])  # no payload byte offered yet
    assert isinstance(info.value, FrameTooLarge)
    assert (info.value.length, info.value.limit) == (5000, 4096)
    with pytest.raises(NoiseStateError):
        dec.feed(wire[ENCRYPTED_HEADER_SIZE:])


@pytest.mark.parametrize("prefix", [b"", frame(b"ok")])
def test_max_frame_size_enforced_on_a_complete_frame(prefix: bytes) -> None:
    wire = NoiseEncryptor(KEY_A).encrypt_frames([prefix, frame(b"\x00" * 101)] if prefix else [frame(b"\x00" * 101)])
    dec = NoiseDecryptor(KEY_A, max_frame_payload=100)
    with pytest.raises(NoiseFrameTooLarge):
        dec.feed(wire)


def test_frame_at_the_limit_is_accepted() -> None:
    f = frame(b"\x01" * 4096)
    assert NoiseDecryptor(KEY_A, max_frame_payload=4096).feed(NoiseEncryptor(KEY_A).encrypt_frame(f)) == [f]


@pytest.mark.parametrize("position", [0, 5, 21, 22, 30, 59])
def test_mac_failure_is_a_clear_error_and_final(position: int) -> None:
    wire = bytearray(NoiseEncryptor(KEY_A).encrypt_frame(frame(b"\x00" * 22)))
    wire[position] ^= 0x80
    dec = NoiseDecryptor(KEY_A)
    with pytest.raises(NoiseDecryptError, match="authentication"):
        dec.feed(bytes(wire))
    with pytest.raises(NoiseStateError):
        dec.feed(b"")


def test_wrong_key_fails() -> None:
    wire = NoiseEncryptor(KEY_A).encrypt_frame(frame(b"share"))
    with pytest.raises(NoiseDecryptError):
        NoiseDecryptor(KEY_B).feed(wire)


def test_replayed_or_reordered_frames_fail() -> None:
    enc = NoiseEncryptor(KEY_A)
    w1, w2 = enc.encrypt_frame(frame(b"1")), enc.encrypt_frame(frame(b"2"))
    with pytest.raises(NoiseDecryptError):
        NoiseDecryptor(KEY_A).feed(w2 + w1)
    dec = NoiseDecryptor(KEY_A)
    dec.feed(w1)
    with pytest.raises(NoiseDecryptError):
        dec.feed(w1)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_noise_errors(data: bytes) -> None:
    dec = NoiseDecryptor(KEY_A)
    try:
        assert dec.feed(data) == []  # a forged tag verifies with negligible probability
    except NoiseError as exc:
        assert isinstance(exc, Sv2Error)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00\x00\x1b\x01\x00", frame(b"abc")[:-1], frame(b"abc") + b"x", b"\x00\x00\x1b\xff\xff\xff"],
)
def test_encrypt_frame_checks_the_header_length(bad: bytes) -> None:
    enc = NoiseEncryptor(KEY_A)
    with pytest.raises(NoiseFrameError):
        enc.encrypt_frame(bad)
    assert enc.n == 0


def test_nonce_exhaustion_is_refused() -> None:
    # SRI (cipher_state.rs) refuses to use nonce 2^64-1; the last usable one is 2^64-2.
    enc, dec = NoiseEncryptor(KEY_A), NoiseDecryptor(KEY_A)
    enc.n = dec.n = (1 << 64) - 3
    with pytest.raises(NoiseStateError):
        enc.encrypt_frame(frame(b"x" * (MAX_CHUNK_PLAINTEXT + 1)))  # would need 3 nonces
    wire = enc.encrypt_frame(frame(b"ok"))  # nonces 2^64-3 and 2^64-2
    assert dec.feed(wire) == [frame(b"ok")]
    assert enc.n == dec.n == (1 << 64) - 1
    with pytest.raises(NoiseStateError):
        enc.encrypt_frame(frame(b""))
    with pytest.raises(NoiseStateError):
        dec.feed(b"\x00" * ENCRYPTED_HEADER_SIZE)


def test_transport_from_keys_pairs_up() -> None:
    a = NoiseTransport.from_keys(KEY_A, KEY_B)
    b = NoiseTransport.from_keys(KEY_B, KEY_A)
    f = frame(b"hello")
    assert b.feed(a.encrypt_frame(f)) == [f]
    assert a.feed(b.encrypt_frame(f)) == [f]
    assert "KEY" not in repr(a) and KEY_A.hex() not in repr(a)


def test_rejects_bad_keys_and_limits() -> None:
    with pytest.raises(NoiseStateError):
        NoiseEncryptor(b"short")
    with pytest.raises(ValueError):
        NoiseDecryptor(KEY_A, max_frame_payload=1 << 24)


def test_handshake_timing_is_sane() -> None:
    # Not a benchmark (see benchmarks/bench_sv2.py): a handshake must not take anywhere near a second.
    t = time.perf_counter()
    handshake()
    assert time.perf_counter() - t < 1.0
