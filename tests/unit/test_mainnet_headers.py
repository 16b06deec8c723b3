"""Real CKB mainnet headers (tests/data/mainnet_headers.json): published block hash reproduced, PoW valid.

Each header was copied from public material (the ``source`` of each entry says where) and is accepted only
because our code reproduces its published hash and its Eaglesong PoW meets its own compact target. Mainnet
uses plain Eaglesong (testnet wraps it in ckb_hash), so the PoW checks run with ``blake2b=False``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ckbpool.ckb.eaglesong import check_pow, eaglesong_py, pow_output
from ckbpool.ckb.structures import Header
from ckbpool.ckb.target import compact_to_target

pytestmark = pytest.mark.unit

DATA = Path(__file__).parent.parent / "data" / "mainnet_headers.json"
ENTRIES: list[dict[str, Any]] = json.loads(DATA.read_text())
IDS = [f"block-{int(e['header']['number'], 16)}" for e in ENTRIES]


def _parts(header_json: dict[str, Any]) -> tuple[Header, bytes, bytes, int]:
    h = Header.from_json(header_json, "header")
    return h, h.raw.pow_hash(), h.nonce.to_bytes(16, "little"), compact_to_target(h.raw.compact_target)


def test_data_set_shape() -> None:
    assert len(ENTRIES) >= 3
    numbers = [int(e["header"]["number"], 16) for e in ENTRIES]
    assert all(n > 0 for n in numbers)
    assert len(set(numbers)) == len(numbers)
    for e in ENTRIES:
        assert e["source"].strip()
        assert e["header"]["hash"].startswith("0x") and len(e["header"]["hash"]) == 66


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_block_hash_matches_published(entry: dict[str, Any]) -> None:
    h, _, _, _ = _parts(entry["header"])
    assert h.hash().hex() == entry["header"]["hash"][2:]


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_pow_is_valid(entry: dict[str, Any]) -> None:
    _, pow_hash, nonce16, target = _parts(entry["header"])
    out_py = eaglesong_py(pow_hash + nonce16)
    assert int.from_bytes(out_py, "big") <= target
    assert pow_output(pow_hash, nonce16) == out_py  # C path (when built) agrees with the reference
    assert check_pow(pow_hash, nonce16, target)
    # These are mainnet headers: the testnet variant (ckb_hash of the Eaglesong output) does not pass.
    assert not check_pow(pow_hash, nonce16, target, blake2b=True)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_flipped_nonce_bit_breaks_hash_and_pow(entry: dict[str, Any]) -> None:
    h, pow_hash, nonce16, target = _parts(entry["header"])
    bad = Header(raw=h.raw, nonce=h.nonce ^ (1 << 77))
    bad16 = bad.nonce.to_bytes(16, "little")
    assert bad16 != nonce16
    assert bad.hash().hex() != entry["header"]["hash"][2:]
    assert bad.raw.pow_hash() == pow_hash  # the nonce is not part of the pow_hash
    # A random nonce meets these targets with probability < 2**-48: failure is what a real block shows.
    assert not check_pow(pow_hash, bad16, target)
    assert int.from_bytes(eaglesong_py(pow_hash + bad16), "big") > target
