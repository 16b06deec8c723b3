"""Eaglesong: official vectors, the CKB mining vector, C == Python, PoW check / search, the fallback path."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.ckb import eaglesong as es

pytestmark = pytest.mark.unit

needs_c = pytest.mark.skipif(not es.HAVE_C, reason="C extension ckbpool.ckb._eaglesong is not built")

# Input/output pairs from nervosnetwork/eaglesong src/test_vectors.txt (inputs from OpenSSL's evptests.txt,
# outputs from the RFC 0010 reference eaglesong.py), plus "" and "Hello, world!\n" from RFC 0010.
VECTORS: list[tuple[bytes, str]] = [
    (b"", "9e4452fc7aed93d7240b7b55263792befd1be09252b456401122ba71a56f62a0"),
    (b"a", "34d81e6aa4551c99edba23e65b69af25b478f5e8233461a7a8c0eb3f40407c97"),
    (b"abc", "1e93baa3ff9f8afa381430b7811d428c5b4514f39f6a78d00511b20305067b68"),
    (b"message digest", "f1d33eb7907454979d67d06dd6995806e397941a8280a25cbabecb43496217e3"),
    (b"Hello, world!\n", "64867e2441d162615dc2430b6bcb4d3f4b95e4d0db529fca1eece73c077d72d6"),
    (b"abcdefghijklmnopqrstuvwxyz", "e759b93888208f7df31f749590a7c59420deb04810bae49744cc43f4e3b8094f"),
    (
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        "2893d0188b08fdc50bad2e9854ff74210eb9805f20f15d7ee1f5410163bcd295",
    ),
    (b"1234567890" * 8, "5f68529f2cbea3c01ef570f0fe03e19c4fa0a1a366ab21fa75e686def0fb726a"),
    (bytes(range(128)), "4bd70497c1045cbf2fbd946e55912ef76dc58c678812910518369911d79a5a46"),
    (bytes(range(130)), "4f91345f65bd47fde7f83b534ae4f5d0af3d8129e479583ac3b2ff02f2e83c76"),
]

# A CKB mining vector: pow_hash, the 16 wire nonce bytes, and the Eaglesong output (a valid block's PoW).
MINING_POW_HASH = bytes.fromhex("d5a74fba920ad0d35ec5726f26327547cbc82180e356e5ccf6cf2e6bd75f8a66")
MINING_NONCE16 = bytes.fromhex("00c904bd" + "000000000000000000114026")
MINING_HEADER_NONCE = 0x264011000000000000000000BD04C900
MINING_OUTPUT = bytes.fromhex("000034965758f32a266558876abba7be3ea343086bf048c9fc3c854e77a2f360")

U256_MAX = (1 << 256) - 1


def ckb_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32, person=b"ckb-default-hash").digest()


@pytest.fixture(scope="module")
def c_module() -> ModuleType:
    if not es.HAVE_C:
        pytest.skip("C extension ckbpool.ckb._eaglesong is not built")
    return importlib.import_module("ckbpool.ckb._eaglesong")


def _load_without_c() -> ModuleType:
    """A fresh copy of eaglesong.py imported while the C extension is blocked (None in sys.modules)."""
    name = "ckbpool.ckb._eaglesong_fallback_probe"
    spec = importlib.util.spec_from_file_location(name, es.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("ckbpool.ckb._eaglesong")
    sys.modules["ckbpool.ckb._eaglesong"] = None  # type: ignore[assignment]
    try:
        with pytest.warns(RuntimeWarning, match="pure-Python fallback"):
            spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["ckbpool.ckb._eaglesong"]
        else:
            sys.modules["ckbpool.ckb._eaglesong"] = saved
    return module


@pytest.fixture(scope="module")
def fallback() -> Iterator[ModuleType]:
    yield _load_without_c()


# --- vectors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "digest"), VECTORS, ids=[f"len{len(m)}" for m, _ in VECTORS])
def test_official_vectors_python(message: bytes, digest: str) -> None:
    assert es.eaglesong_py(message).hex() == digest


@needs_c
@pytest.mark.parametrize(("message", "digest"), VECTORS, ids=[f"len{len(m)}" for m, _ in VECTORS])
def test_official_vectors_c(message: bytes, digest: str) -> None:
    assert es.eaglesong(message).hex() == digest


def test_mining_vector_byte_order() -> None:
    assert int.from_bytes(MINING_NONCE16, "little") == MINING_HEADER_NONCE
    assert MINING_HEADER_NONCE.to_bytes(16, "little") == MINING_NONCE16


def test_mining_vector_python_reference() -> None:
    assert es.eaglesong_py(MINING_POW_HASH + MINING_NONCE16) == MINING_OUTPUT


@needs_c
def test_mining_vector_c() -> None:
    assert es.eaglesong(MINING_POW_HASH + MINING_NONCE16) == MINING_OUTPUT
    assert es.pow_output(MINING_POW_HASH, MINING_NONCE16) == MINING_OUTPUT
    value = int.from_bytes(MINING_OUTPUT, "big")
    assert es.check_pow(MINING_POW_HASH, MINING_NONCE16, value)
    assert not es.check_pow(MINING_POW_HASH, MINING_NONCE16, value - 1)
    assert es.pow_output(MINING_POW_HASH, MINING_NONCE16, blake2b=True) == ckb_hash(MINING_OUTPUT)


@pytest.mark.parametrize("prefix_len", [0, 4, 8, 12])
def test_search_finds_mining_vector(prefix_len: int) -> None:
    """Searching a window around the known nonce with target = its output returns the header nonce."""
    prefix = MINING_NONCE16[:prefix_len]
    counter = int.from_bytes(MINING_NONCE16[prefix_len:], "little")
    target = int.from_bytes(MINING_OUTPUT, "big")
    found = es.search(MINING_POW_HASH, counter - 3, 6, target, nonce_prefix=prefix)
    assert found == MINING_HEADER_NONCE


# --- C == Python ------------------------------------------------------------------------------------------


@needs_c
@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_c_matches_python(data: bytes) -> None:
    assert es.eaglesong(data) == es.eaglesong_py(data)


@needs_c
@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=16, max_size=16), st.booleans())
def test_pow_output_c_matches_python(pow_hash: bytes, nonce16: bytes, blake2b: bool) -> None:
    expected = es.eaglesong_py(pow_hash + nonce16)
    if blake2b:
        expected = ckb_hash(expected)
    assert es.pow_output(pow_hash, nonce16, blake2b) == expected


def test_every_block_boundary_c_matches_python() -> None:
    """Lengths around the 32-byte rate, where the delimiter moves to the next word or block."""
    for length in [*range(27, 38), 63, 64, 65, 95, 96, 97]:
        data = bytes((7 * i + 3) & 0xFF for i in range(length))
        assert es.eaglesong(data) == es.eaglesong_py(data), length


# --- BLAKE2b in C -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 31, 32, 33, 127, 128, 129, 255, 256, 257, 1000])
def test_c_ckb_hash_matches_hashlib(c_module: ModuleType, length: int) -> None:
    data = bytes((i * 31 + 7) & 0xFF for i in range(length))
    assert c_module.ckb_hash(data) == ckb_hash(data)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400))
def test_c_ckb_hash_matches_hashlib_random(data: bytes) -> None:
    if not es.HAVE_C:
        pytest.skip("C extension not built")
    c = importlib.import_module("ckbpool.ckb._eaglesong")
    assert c.ckb_hash(data) == ckb_hash(data)


# --- check_pow / search -----------------------------------------------------------------------------------

POW_HASH = hashlib.sha256(b"ckbpool eaglesong test job").digest()
EASY_TARGET = U256_MAX >> 5  # about 1 nonce in 32 meets it


@pytest.mark.parametrize("blake2b", [False, True])
@pytest.mark.parametrize("prefix", [b"", b"\x01\x02\x03\x04", bytes(range(1, 13))])
def test_search_result_is_first_valid_nonce(blake2b: bool, prefix: bytes) -> None:
    start = 1000
    found = es.search(POW_HASH, start, 2000, EASY_TARGET, blake2b=blake2b, nonce_prefix=prefix)
    assert found is not None
    nonce16 = found.to_bytes(16, "little")
    assert nonce16[: len(prefix)] == prefix
    counter = found >> (8 * len(prefix))
    assert counter >= start
    assert es.check_pow(POW_HASH, nonce16, EASY_TARGET, blake2b)
    assert int.from_bytes(es.pow_output(POW_HASH, nonce16, blake2b), "big") <= EASY_TARGET
    for earlier in range(start, counter):
        candidate = prefix + earlier.to_bytes(16 - len(prefix), "little")
        assert not es.check_pow(POW_HASH, candidate, EASY_TARGET, blake2b)


@pytest.mark.parametrize("blake2b", [False, True])
def test_search_agrees_with_fallback(fallback: ModuleType, blake2b: bool) -> None:
    """The fallback iterates the same nonces in the same order as C."""
    prefix = b"\xaa\xbb"
    start = (1 << 64) - 40  # the counter carries through several bytes inside the window
    c_found = es.search(POW_HASH, start, 80, U256_MAX >> 3, blake2b=blake2b, nonce_prefix=prefix)
    py_found = fallback.search(POW_HASH, start, 80, U256_MAX >> 3, blake2b=blake2b, nonce_prefix=prefix)
    assert c_found == py_found
    assert c_found is not None


@pytest.mark.parametrize("blake2b", [False, True])
@pytest.mark.parametrize("prefix", [b"", b"\x07" * 5], ids=["no-prefix", "prefix5"])
def test_search_first_hit_at_every_position(blake2b: bool, prefix: bytes) -> None:
    """Whichever nonce of a window is the first to meet the target, search returns exactly it.

    C checks 4 nonces per permutation (vector lanes) and the rest one by one, so this covers every lane
    and the tail of a 23-nonce window, counting from a start where the counter carries into a new byte.
    """
    width = 16 - len(prefix)
    start = 0x3FE
    window = [prefix + c.to_bytes(width, "little") for c in range(start, start + 23)]
    values = [int.from_bytes(es.pow_output(POW_HASH, n16, blake2b), "big") for n16 in window]
    for target in values:
        first = next(k for k, v in enumerate(values) if v <= target)
        found = es.search(POW_HASH, start, len(window), target, blake2b=blake2b, nonce_prefix=prefix)
        assert found == int.from_bytes(window[first], "little")
    assert es.search(POW_HASH, start, len(window), min(values) - 1, blake2b=blake2b, nonce_prefix=prefix) is None


def test_search_target_zero_finds_nothing() -> None:
    assert es.search(POW_HASH, 0, 500, 0) is None
    assert es.search(POW_HASH, 0, 500, 0, blake2b=True, nonce_prefix=b"\x00" * 8) is None


def test_search_max_target_returns_first_nonce() -> None:
    assert es.search(POW_HASH, 77, 5, U256_MAX) == 77
    assert es.search(POW_HASH, 77, 5, U256_MAX, nonce_prefix=b"\x05") == 0x05 + (77 << 8)


def test_search_count_zero() -> None:
    assert es.search(POW_HASH, 0, 0, U256_MAX) is None


def test_search_counter_space_bounds() -> None:
    prefix15 = bytes(15)
    assert es.search(POW_HASH, 250, 6, U256_MAX, nonce_prefix=prefix15) == 250 << 120
    assert es.search(POW_HASH, 255, 1, 0, nonce_prefix=prefix15) is None
    assert es.search(POW_HASH, 250, 6, 0, nonce_prefix=prefix15) is None  # ends exactly at the last counter
    with pytest.raises(ValueError, match="counter"):
        es.search(POW_HASH, 250, 7, U256_MAX, nonce_prefix=prefix15)
    full = bytes(range(16))
    assert es.search(POW_HASH, 0, 1, U256_MAX, nonce_prefix=full) == int.from_bytes(full, "little")
    with pytest.raises(ValueError, match="counter"):
        es.search(POW_HASH, 0, 2, U256_MAX, nonce_prefix=full)
    assert es.search(POW_HASH, (1 << 128) - 3, 3, 0) is None
    with pytest.raises(ValueError, match="counter"):
        es.search(POW_HASH, (1 << 128) - 3, 4, 0)


def test_c_search_rejects_counter_overflow(c_module: ModuleType) -> None:
    with pytest.raises(ValueError, match="counter"):
        c_module.search(POW_HASH, b"\x01" + b"\xff" * 15, 1, 2, bytes(32), False)
    assert c_module.search(POW_HASH, b"\x01" + b"\xff" * 15, 1, 1, bytes(32), False) is None
    with pytest.raises(ValueError, match="prefix_len"):
        c_module.search(POW_HASH, bytes(16), 17, 1, bytes(32), False)
    with pytest.raises(ValueError, match="count"):
        c_module.search(POW_HASH, bytes(16), 0, -1, bytes(32), False)


def test_check_pow_boundary() -> None:
    nonce16 = bytes(16)
    value = int.from_bytes(es.pow_output(POW_HASH, nonce16), "big")
    assert es.check_pow(POW_HASH, nonce16, value)
    assert es.check_pow(POW_HASH, nonce16, U256_MAX)
    assert not es.check_pow(POW_HASH, nonce16, value - 1)
    assert not es.check_pow(POW_HASH, nonce16, 0)


def test_bytes_like_arguments_accepted() -> None:
    expected = es.pow_output(MINING_POW_HASH, MINING_NONCE16)
    assert es.pow_output(bytearray(MINING_POW_HASH), memoryview(MINING_NONCE16)) == expected
    assert es.eaglesong(bytearray(b"abc")) == es.eaglesong(b"abc")


# --- bad arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: es.pow_output(bytes(31), bytes(16)), ValueError, "pow_hash"),
        (lambda: es.pow_output(bytes(32), bytes(15)), ValueError, "nonce16"),
        (lambda: es.pow_output("00" * 32, bytes(16)), TypeError, "pow_hash"),  # type: ignore[arg-type]
        (lambda: es.check_pow(bytes(33), bytes(16), 1), ValueError, "pow_hash"),
        (lambda: es.check_pow(bytes(32), bytes(17), 1), ValueError, "nonce16"),
        (lambda: es.check_pow(bytes(32), bytes(16), -1), ValueError, "target"),
        (lambda: es.check_pow(bytes(32), bytes(16), 1 << 256), ValueError, "target"),
        (lambda: es.check_pow(bytes(32), bytes(16), "1"), TypeError, "target"),  # type: ignore[arg-type]
        (lambda: es.search(bytes(31), 0, 1, 1), ValueError, "pow_hash"),
        (lambda: es.search(bytes(32), -1, 1, 1), ValueError, "nonce_start"),
        (lambda: es.search(bytes(32), 0, -1, 1), ValueError, "count"),
        (lambda: es.search(bytes(32), 0, 1 << 63, 1), ValueError, "count"),
        (lambda: es.search(bytes(32), 0, 1, 1, nonce_prefix=bytes(17)), ValueError, "nonce_prefix"),
        (lambda: es.search(bytes(32), 0, 1, 1, nonce_prefix="ab"), TypeError, "nonce_prefix"),  # type: ignore[arg-type]
        (lambda: es.eaglesong("abc"), TypeError, "data"),  # type: ignore[arg-type]
        (lambda: es.eaglesong_py("abc"), TypeError, "data"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments(call: object, error: type[Exception], match: str) -> None:
    assert callable(call)
    with pytest.raises(error, match=match):
        call()


def test_c_functions_validate_directly(c_module: ModuleType) -> None:
    """The extension checks its own arguments too; it never trusts the Python wrapper."""
    with pytest.raises(ValueError, match="pow_hash"):
        c_module.check(bytes(31), bytes(16), bytes(32), False)
    with pytest.raises(ValueError, match="nonce16"):
        c_module.pow_output(bytes(32), bytes(15), False)
    with pytest.raises(ValueError, match="target_be32"):
        c_module.check(bytes(32), bytes(16), bytes(31), False)
    with pytest.raises(TypeError):
        c_module.hash("abc")
    with pytest.raises(TypeError):
        c_module.check(bytes(32), bytes(16), 5, False)


# --- the fallback -----------------------------------------------------------------------------------------


def test_fallback_without_c_extension(fallback: ModuleType) -> None:
    assert fallback.HAVE_C is False
    assert fallback.eaglesong(b"abc").hex() == VECTORS[2][1]
    assert fallback.pow_output(MINING_POW_HASH, MINING_NONCE16) == MINING_OUTPUT
    assert fallback.pow_output(MINING_POW_HASH, MINING_NONCE16, True) == ckb_hash(MINING_OUTPUT)
    value = int.from_bytes(MINING_OUTPUT, "big")
    assert fallback.check_pow(MINING_POW_HASH, MINING_NONCE16, value)
    assert not fallback.check_pow(MINING_POW_HASH, MINING_NONCE16, value - 1)
    counter = int.from_bytes(MINING_NONCE16[4:], "little")
    found = fallback.search(MINING_POW_HASH, counter - 2, 4, value, nonce_prefix=MINING_NONCE16[:4])
    assert found == MINING_HEADER_NONCE
    assert fallback.search(POW_HASH, 0, 20, 0) is None
    with pytest.raises(ValueError, match="pow_hash"):
        fallback.check_pow(bytes(31), bytes(16), 1)


def test_fallback_leaves_real_module_alone(fallback: ModuleType) -> None:
    assert fallback is not es
    assert sys.modules["ckbpool.ckb.eaglesong"] is es
    if es.HAVE_C:
        assert isinstance(sys.modules.get("ckbpool.ckb._eaglesong"), ModuleType)
