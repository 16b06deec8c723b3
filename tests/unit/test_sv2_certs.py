"""SV2 certificates (SignatureNoiseMessage) and the key encodings/CLI that produce them.

Layout and signed bytes follow noise_sv2 2.0.0 ``signature_message.rs``; the Base58Check strings follow
SRI's ``key_utils`` 1.2.0. The interop tests check both against the real crates; here they are pinned
with SRI's published example key pair (codec_sv2 ``examples/encrypted.rs``).
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path

import pytest
from coincurve import PublicKeyXOnly
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.sv2 import keys
from ckbpool.sv2.certs import (
    CERTIFICATE_SIZE,
    Certificate,
    CertificateError,
    CertificateExpired,
    CertificateMalformed,
    CertificateNotYetValid,
    CertificateTampered,
    CertificateUnsupportedVersion,
    CertificateWrongAuthority,
    signed_message,
)
from ckbpool.sv2.errors import Sv2Error
from ckbpool.sv2.keys import (
    KeyFormatError,
    Keypair,
    b58check_decode,
    b58check_encode,
    decode_authority_public_key,
    decode_secret_key,
    encode_authority_public_key,
    encode_secret_key,
)
from ckbpool.sv2.noise_transport import NoiseError

pytestmark = pytest.mark.unit

# SRI codec_sv2 7.0.0 examples/encrypted.rs: AUTHORITY_PUBLIC_K / AUTHORITY_PRIVATE_K
SRI_AUTHORITY_PUB = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"
SRI_AUTHORITY_SECRET = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n"

NOW = 1_750_000_000
AUTHORITY = Keypair.from_secret(decode_secret_key(SRI_AUTHORITY_SECRET))
STATIC = Keypair.generate()


def issue(valid_from: int = NOW - 100, not_valid_after: int = NOW + 100, version: int = 0) -> Certificate:
    return Certificate.issue(AUTHORITY, STATIC.xonly_public, valid_from, not_valid_after, version=version)


# ------------------------------------------------------------------------------------- certificates


def test_layout_and_signed_bytes() -> None:
    cert = issue(0x01020304, 0x0A0B0C0D)
    raw = cert.to_bytes()
    assert len(raw) == CERTIFICATE_SIZE == 74
    assert raw[:10] == bytes.fromhex("0000" + "04030201" + "0d0c0b0a")  # version, valid_from, not_valid_after LE
    assert Certificate.from_bytes(raw) == cert
    # signature: BIP340 over SHA256(first 10 bytes || static x-only key), by the authority
    msg = hashlib.sha256(raw[:10] + STATIC.xonly_public).digest()
    assert msg == signed_message(0, 0x01020304, 0x0A0B0C0D, STATIC.xonly_public)
    assert PublicKeyXOnly(AUTHORITY.xonly_public).verify(raw[10:], msg)


def test_verify_accepts_inside_window() -> None:
    issue().verify(STATIC.xonly_public, AUTHORITY.xonly_public, now=NOW)


@pytest.mark.parametrize(
    ("now", "error"),
    [
        (NOW - 110, None),  # valid_from - 10: inside SRI's leeway
        (NOW - 111, CertificateNotYetValid),
        (NOW + 110, None),  # not_valid_after + 10
        (NOW + 111, CertificateExpired),
    ],
)
def test_window_edges_with_sri_leeway(now: int, error: type[Exception] | None) -> None:
    cert = issue()
    if error is None:
        cert.verify(STATIC.xonly_public, AUTHORITY.xonly_public, now=now)
    else:
        with pytest.raises(error):
            cert.verify(STATIC.xonly_public, AUTHORITY.xonly_public, now=now)


def test_leeway_is_configurable_and_clock_injectable() -> None:
    cert = issue()
    with pytest.raises(CertificateExpired):
        cert.verify(STATIC.xonly_public, AUTHORITY.xonly_public, clock=lambda: NOW + 101, leeway=0)
    cert.verify(STATIC.xonly_public, AUTHORITY.xonly_public, clock=lambda: NOW + 100, leeway=0)


def test_wrong_authority() -> None:
    with pytest.raises(CertificateWrongAuthority) as info:
        issue().verify(STATIC.xonly_public, Keypair.generate().xonly_public, now=NOW)
    assert info.value.reason == "wrong-authority"
    assert not isinstance(info.value, CertificateTampered)


def test_signed_for_another_static_key() -> None:
    with pytest.raises(CertificateWrongAuthority):
        issue().verify(Keypair.generate().xonly_public, AUTHORITY.xonly_public, now=NOW)


@pytest.mark.parametrize("field", ["valid_from", "not_valid_after"])
def test_altered_window_breaks_the_signature(field: str) -> None:
    cert = issue()
    raw = bytearray(cert.to_bytes())
    offset = 2 if field == "valid_from" else 6
    struct.pack_into("<I", raw, offset, struct.unpack_from("<I", raw, offset)[0] + 1)
    with pytest.raises(CertificateWrongAuthority):
        Certificate.from_bytes(bytes(raw)).verify(STATIC.xonly_public, AUTHORITY.xonly_public, now=NOW)


@given(st.integers(min_value=0, max_value=511))
def test_any_signature_bit_flip_is_refused(bit: int) -> None:
    raw = bytearray(issue().to_bytes())
    raw[10 + bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CertificateWrongAuthority):  # CertificateTampered is a subclass
        Certificate.from_bytes(bytes(raw)).verify(STATIC.xonly_public, AUTHORITY.xonly_public, now=NOW)


@pytest.mark.parametrize(
    "signature",
    [
        # s = n (curve order): no signer produces it
        bytes(32) + (0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141).to_bytes(32, "big"),
        # R = p (field size)
        (0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F).to_bytes(32, "big") + bytes(32),
        # R = 5: not the x coordinate of any curve point (BIP340 vector 11 uses such an R)
        (5).to_bytes(32, "big") + (1).to_bytes(32, "big"),
    ],
)
def test_impossible_signature_encoding_is_reported_as_tampered(signature: bytes) -> None:
    cert = Certificate(NOW - 100, NOW + 100, signature)
    with pytest.raises(CertificateTampered) as info:
        cert.verify(STATIC.xonly_public, AUTHORITY.xonly_public, now=NOW)
    assert info.value.reason == "tampered-signature"


def test_signature_checked_before_window() -> None:
    # An expired certificate from someone else is reported as the wrong authority, not as expired.
    with pytest.raises(CertificateWrongAuthority):
        issue(1, 2).verify(STATIC.xonly_public, Keypair.generate().xonly_public, now=NOW)


def test_unsupported_version() -> None:
    cert = issue(version=1)
    with pytest.raises(CertificateUnsupportedVersion) as info:
        cert.verify(STATIC.xonly_public, AUTHORITY.xonly_public, now=NOW)
    assert info.value.reason == "unsupported-version"


@pytest.mark.parametrize("length", [0, 73, 75])
def test_malformed_length(length: int) -> None:
    with pytest.raises(CertificateMalformed):
        Certificate.from_bytes(b"\x00" * length)


def test_malformed_fields_and_hex() -> None:
    with pytest.raises(CertificateMalformed):
        Certificate(0, 1 << 32, bytes(64))
    with pytest.raises(CertificateMalformed):
        Certificate(0, 1, bytes(63))
    with pytest.raises(CertificateMalformed):
        Certificate.from_hex("zz")
    cert = issue()
    assert Certificate.from_hex(cert.to_bytes().hex() + "\n") == cert


def test_issue_rejects_invalid_static_key() -> None:
    with pytest.raises(CertificateMalformed):
        Certificate.issue(AUTHORITY, b"\xff" * 32, 0, 1)


def test_error_hierarchy_and_distinct_reasons() -> None:
    classes = [
        CertificateMalformed,
        CertificateUnsupportedVersion,
        CertificateWrongAuthority,
        CertificateTampered,
        CertificateNotYetValid,
        CertificateExpired,
    ]
    assert len({c.reason for c in classes}) == len(classes)
    for c in classes:
        assert issubclass(c, CertificateError)
        assert issubclass(c, NoiseError)
        assert issubclass(c, Sv2Error)


def test_repr_hides_signature_bytes() -> None:
    cert = issue()
    assert cert.signature.hex() not in repr(cert)


# --------------------------------------------------------------------------------------- key formats


def test_sri_example_key_pair() -> None:
    assert AUTHORITY.authority_public_key == SRI_AUTHORITY_PUB
    assert encode_secret_key(AUTHORITY.secret) == SRI_AUTHORITY_SECRET
    assert decode_authority_public_key(SRI_AUTHORITY_PUB) == AUTHORITY.xonly_public
    payload = b58check_decode(SRI_AUTHORITY_PUB)
    assert payload[:2] == b"\x01\x00" and payload[2:] == AUTHORITY.xonly_public


def test_base58check_known_values() -> None:
    # Bitcoin address of hash160 zero with version 0 (well-known).
    assert b58check_encode(b"\x00" * 21) == "1111111111111111111114oLvT2"
    assert b58check_decode("1111111111111111111114oLvT2") == b"\x00" * 21


@given(st.binary(max_size=80))
def test_base58check_round_trip(data: bytes) -> None:
    assert b58check_decode(b58check_encode(data)) == data


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0OIl",  # not in the alphabet
        SRI_AUTHORITY_PUB[:-1] + ("2" if SRI_AUTHORITY_PUB[-1] != "2" else "3"),  # checksum
        b58check_encode(b"\x02\x00" + AUTHORITY.xonly_public),  # version 2
        b58check_encode(b"\x01\x00" + b"\xff" * 32),  # not on the curve
        b58check_encode(b"\x01\x00" + AUTHORITY.xonly_public[:31]),  # short
    ],
)
def test_bad_authority_keys(text: str) -> None:
    with pytest.raises(KeyFormatError):
        decode_authority_public_key(text)


def test_secret_key_formats() -> None:
    assert decode_secret_key(AUTHORITY.secret.hex()) == AUTHORITY.secret
    for bad in ("00" * 32, b58check_encode(b"\x00" * 32), b58check_encode(b"\x01" * 31)):
        with pytest.raises(KeyFormatError) as info:
            decode_secret_key(bad)
        assert bad not in str(info.value)
    with pytest.raises(KeyFormatError):
        encode_authority_public_key(b"\x00" * 31)


def test_generated_keys_have_even_y_and_hide_secret() -> None:
    for _ in range(8):
        kp = Keypair.generate()
        from coincurve import PrivateKey

        assert PrivateKey(kp.secret).public_key.format()[0] == 0x02
        assert kp.secret.hex() not in repr(kp)
        assert kp.xonly_public.hex() in repr(kp)


# ---------------------------------------------------------------------------------------------- CLI


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cli_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pool-keys"
    assert keys.main(["generate", "--out-dir", str(out), "--valid-from", str(NOW), "--valid-days", "30"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["authority.key", "authority.pub", "pool-certificate.hex", "pool-static.key"]
    for name in files:
        assert _mode(out / name) == 0o600
    authority = Keypair.from_secret(decode_secret_key((out / "authority.key").read_text()))
    assert (out / "authority.pub").read_text().strip() == authority.authority_public_key
    static = Keypair.from_secret(decode_secret_key((out / "pool-static.key").read_text()))
    cert = Certificate.from_hex((out / "pool-certificate.hex").read_text())
    assert (cert.valid_from, cert.not_valid_after) == (NOW, NOW + 30 * 86400)
    cert.verify(static.xonly_public, authority.xonly_public, now=NOW + 1)
    printed = capsys.readouterr().out
    assert authority.authority_public_key in printed
    assert encode_secret_key(authority.secret) not in printed and authority.secret.hex() not in printed
    # refuses to overwrite without --force
    with pytest.raises(SystemExit):
        keys.main(["generate", "--out-dir", str(out)])
    assert keys.main(["generate", "--out-dir", str(out), "--force"]) == 0


def test_cli_issue_cert_and_show_pub(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys.main(["generate", "--out-dir", str(tmp_path)])
    os.remove(tmp_path / "pool-certificate.hex")
    argv = ["issue-cert", "--authority-key", str(tmp_path / "authority.key"), "--static-key"]
    argv += [str(tmp_path / "pool-static.key"), "--out-dir", str(tmp_path), "--valid-from", "100", "--valid-days", "1"]
    assert keys.main(argv) == 0
    cert = Certificate.from_hex((tmp_path / "pool-certificate.hex").read_text())
    assert (cert.valid_from, cert.not_valid_after) == (100, 100 + 86400)
    capsys.readouterr()
    keys.main(["show-pub", str(tmp_path / "authority.key")])
    assert capsys.readouterr().out.strip() == (tmp_path / "authority.pub").read_text().strip()


def test_cli_rejects_bad_window_and_bad_key_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        keys.main(["generate", "--out-dir", str(tmp_path), "--valid-from", str(2**32 - 10)])
    assert not list(tmp_path.iterdir())  # nothing written
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(SystemExit) as info:
        keys.main(["show-pub", str(bad)])
    assert "not a key" not in str(info.value)
