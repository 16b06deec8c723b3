"""SV2 binary types: round trips, wire layouts, and strict bounds on both encode and decode."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.sv2.errors import DecodeError, EncodeError
from ckbpool.sv2.types import (
    B0_16M,
    B0_32,
    B0_64K,
    B0_255,
    BOOL,
    F32,
    PUBKEY,
    SIGNATURE,
    STR0_255,
    U8,
    U16,
    U24,
    U32,
    U64,
    U256,
    U256_BYTES,
    Bytes,
    Option,
    Seq0_64K,
    Seq0_255,
    Sv2Type,
)

pytestmark = pytest.mark.unit

INT_TYPES = [(U8, 8), (U16, 16), (U24, 24), (U32, 32), (U64, 64), (U256, 256)]


def roundtrip(t: Sv2Type[object], value: object) -> object:
    raw = t.encode(value, "f")
    decoded, end = t.decode(raw, 0, "f")
    assert end == len(raw)
    # Decoding at an offset inside a larger buffer gives the same value and the right end.
    decoded2, end2 = t.decode(b"\xaa\xbb" + raw + b"\xcc", 2, "f")
    assert decoded2 == decoded and end2 == len(raw) + 2
    return decoded


@pytest.mark.parametrize(("t", "bits"), INT_TYPES, ids=lambda x: getattr(x, "name", str(x)))
def test_integers_are_little_endian_and_bounded(t: Sv2Type[int], bits: int) -> None:
    top = (1 << bits) - 1
    assert t.encode(1, "f") == b"\x01" + b"\x00" * (bits // 8 - 1)
    assert t.encode(top, "f") == b"\xff" * (bits // 8)
    assert roundtrip(t, top) == top
    for bad in (-1, 1 << bits):
        with pytest.raises(EncodeError, match=r"^Msg\.field: "):
            t.encode(bad, "Msg.field")
    with pytest.raises(ValueError, match="needs an int"):
        t.encode("1", "f")  # type: ignore[arg-type]
    with pytest.raises(DecodeError) as info:
        t.decode(b"\x00" * (bits // 8 - 1), 0, "Msg.field")
    assert info.value.field == "Msg.field"


@given(st.integers(0, (1 << 256) - 1))
def test_u256_number_round_trip_and_byte_order(value: int) -> None:
    raw = U256.encode(value, "t")
    assert raw == value.to_bytes(32, "little")
    assert roundtrip(U256, value) == value


def test_u256_as_bytes_keeps_wire_order() -> None:
    h = bytes(range(32))
    assert U256_BYTES.encode(h, "h") == h
    assert roundtrip(U256_BYTES, h) == h
    with pytest.raises(EncodeError, match="exactly 32"):
        U256_BYTES.encode(h[:31], "h")


def test_bool_reads_only_the_low_bit() -> None:
    assert BOOL.encode(True, "b") == b"\x01" and BOOL.encode(False, "b") == b"\x00"
    assert BOOL.decode(b"\x03", 0, "b") == (True, 1)
    assert BOOL.decode(b"\xfe", 0, "b") == (False, 1)
    with pytest.raises(EncodeError):
        BOOL.encode(1, "b")  # type: ignore[arg-type]


@given(st.floats(width=32, allow_nan=False))
def test_f32_round_trip(value: float) -> None:
    assert F32.encode(value, "f") == struct.pack("<f", value)
    assert roundtrip(F32, value) == value


def test_f32_rejects_values_beyond_binary32() -> None:
    with pytest.raises(EncodeError, match="nominal_hash_rate"):
        F32.encode(1e39, "nominal_hash_rate")


@given(st.text(max_size=80).filter(lambda s: len(s.encode()) <= 255))
def test_str0_255_round_trip(value: str) -> None:
    raw = STR0_255.encode(value, "s")
    assert raw[0] == len(value.encode())
    assert roundtrip(STR0_255, value) == value


def test_str0_255_bounds_and_utf8() -> None:
    STR0_255.encode("x" * 255, "s")
    with pytest.raises(EncodeError, match="user_identity"):
        STR0_255.encode("x" * 256, "user_identity")
    with pytest.raises(EncodeError):
        STR0_255.encode("\ud800", "s")
    with pytest.raises(DecodeError, match="UTF-8"):
        STR0_255.decode(b"\x01\xff", 0, "s")
    with pytest.raises(DecodeError, match="truncated"):
        STR0_255.decode(b"\x05abc", 0, "s")


@pytest.mark.parametrize(
    ("t", "header", "max_len"),
    [(B0_32, 1, 32), (B0_255, 1, 255), (B0_64K, 2, 0xFFFF), (B0_16M, 3, 0xFFFFFF)],
    ids=lambda x: getattr(x, "name", str(x)),
)
def test_variable_bytes_bounds(t: Sv2Type[bytes], header: int, max_len: int) -> None:
    assert t.encode(b"abc", "f") == (3).to_bytes(header, "little") + b"abc"
    assert roundtrip(t, b"") == b""
    if max_len <= 0xFFFF:
        assert roundtrip(t, b"\x01" * max_len) == b"\x01" * max_len
        with pytest.raises(EncodeError, match="extranonce"):
            t.encode(b"\x01" * (max_len + 1), "extranonce")
    # A length prefix above the maximum (or beyond the input) is refused before slicing.
    too_long = (min(max_len + 1, (1 << (8 * header)) - 1)).to_bytes(header, "little")
    with pytest.raises(DecodeError):
        t.decode(too_long + b"\x00" * 4, 0, "f")


def test_b0_32_rejects_a_length_of_33_even_with_enough_input() -> None:
    with pytest.raises(DecodeError, match="maximum of 32"):
        B0_32.decode(b"\x21" + b"\x00" * 33, 0, "extranonce_prefix")


def test_fixed_size_keys() -> None:
    assert roundtrip(PUBKEY, b"\x02" * 32) == b"\x02" * 32
    assert roundtrip(SIGNATURE, b"\x03" * 64) == b"\x03" * 64
    assert roundtrip(Bytes(16), b"\x04" * 16) == b"\x04" * 16
    with pytest.raises(EncodeError):
        SIGNATURE.encode(b"\x00" * 63, "sig")
    with pytest.raises(DecodeError):
        PUBKEY.decode(b"\x00" * 31, 0, "key")


def test_option_is_sri_sv2option() -> None:
    t = Option(U32)
    assert t.encode(None, "o") == b"\x00"
    assert t.encode(0x01020304, "o") == b"\x01\x04\x03\x02\x01"
    assert roundtrip(t, None) is None
    assert roundtrip(t, 7) == 7
    with pytest.raises(DecodeError, match="0 or 1"):
        t.decode(b"\x02\x00\x00\x00\x00\x00\x00\x00\x00", 0, "min_ntime")
    with pytest.raises(DecodeError):
        t.decode(b"\x01\x00", 0, "min_ntime")


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=20))
def test_seq0_255_of_hashes(items: list[bytes]) -> None:
    t = Seq0_255(U256_BYTES)
    raw = t.encode(items, "merkle_path")  # type: ignore[arg-type]
    assert raw[0] == len(items)
    assert roundtrip(t, tuple(items)) == tuple(items)


@given(st.lists(st.integers(0, 0xFFFF), max_size=300))
def test_seq0_64k_of_u16(items: list[int]) -> None:
    t = Seq0_64K(U16)
    raw = t.encode(tuple(items), "ids")
    assert raw[:2] == len(items).to_bytes(2, "little")
    assert roundtrip(t, tuple(items)) == tuple(items)


def test_sequence_bounds() -> None:
    with pytest.raises(EncodeError, match="merkle_path"):
        Seq0_255(U32).encode(tuple(range(256)), "merkle_path")
    with pytest.raises(EncodeError, match=r"ids\[1\]"):
        Seq0_64K(U32).encode((1, -1), "ids")
    with pytest.raises(EncodeError):
        Seq0_64K(U32).encode(b"abc", "ids")  # type: ignore[arg-type]
    # A count that the remaining input cannot possibly hold is refused up front.
    with pytest.raises(DecodeError, match="does not fit"):
        Seq0_64K(U256_BYTES).decode(b"\xff\xff" + b"\x00" * 64, 0, "path")
    with pytest.raises(DecodeError, match=r"path\[1\]"):
        Seq0_255(STR0_255).decode(b"\x02\x00\x05ab", 0, "path")


@given(st.binary(max_size=64))
def test_decoding_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    for t in (
        U8,
        U24,
        U64,
        U256,
        BOOL,
        F32,
        STR0_255,
        B0_32,
        B0_64K,
        B0_16M,
        PUBKEY,
        Option(U32),
        Seq0_255(U256_BYTES),
        Seq0_64K(STR0_255),
    ):
        try:
            _, end = t.decode(data, 0, "f")
        except DecodeError:
            continue
        assert end <= len(data)
