"""Chain primitives proven against published vectors (RFC 0006, 0021, 0031, protocols.md target vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.ckb import molecule as mol
from ckbpool.ckb.address import encode_address, parse_address, secp256k1_lock
from ckbpool.ckb.errors import MalformedError
from ckbpool.ckb.hashing import ckb_hash
from ckbpool.ckb.merkle import extra_hash, merkle_root, proposals_hash
from ckbpool.ckb.structures import Block, Script
from ckbpool.ckb.target import (
    TargetError,
    compact_to_target,
    difficulty_to_target,
    share_difficulty_to_target,
    target_to_compact,
    target_to_difficulty,
    target_to_share_difficulty,
)
from ckbpool.ckb.template import BlockTemplate, job_from_template

pytestmark = pytest.mark.unit
DATA = Path(__file__).parent.parent / "data"


def test_ckb_hash_of_empty_input_matches_published_value() -> None:
    assert ckb_hash(b"").hex() == "44f4c69744d5f8c55d642062949dcae49bc4e7ef43d388c5a12f42b5633d163e"


@pytest.mark.parametrize(
    ("compact", "target"),
    [
        (0x1020000, 2),
        (0x2123456, 0x1234),
        (0x4923456, 0x92345600),
        (0x20123456, 0x123456 << 232),
    ],
)
def test_compact_to_target_vectors(compact: int, target: int) -> None:
    assert compact_to_target(compact) == target


@pytest.mark.parametrize("compact", [0x21000001, 0xFF123456, 0x0, 0x1000000])
def test_compact_to_target_rejects_overflow_and_zero(compact: int) -> None:
    with pytest.raises(TargetError):
        compact_to_target(compact)


def test_target_to_compact_vectors() -> None:
    assert target_to_compact((1 << 256) - 1) == 0x20FFFFFF
    assert target_to_compact(1) == 0x1010000


def test_difficulty_vectors_of_dev_genesis() -> None:
    assert target_to_difficulty(compact_to_target(0x20010000)) == 256
    assert target_to_difficulty(compact_to_target(0x1F010000)) == 65536
    assert difficulty_to_target(1) == (1 << 256) - 1


@given(st.integers(min_value=1, max_value=(1 << 256) - 1))
def test_target_compact_round_trip_keeps_leading_24_bits(target: int) -> None:
    back = compact_to_target(target_to_compact(target))
    # compact keeps the top 3 significant bytes: the round trip never grows the target and only loses the rest
    size = (target.bit_length() + 7) // 8
    assert back <= target
    assert target - back < 1 << max(0, 8 * (size - 3))


def test_share_difficulty_scale_is_btcpools() -> None:
    assert share_difficulty_to_target(1) == 0xFFFF << 240
    assert share_difficulty_to_target(256) == (0xFFFF << 240) // 256
    assert target_to_share_difficulty(0xFFFF << 240) == 1.0


def test_molecule_empty_dynvec_and_table_layout() -> None:
    assert mol.dynvec([]) == bytes.fromhex("04000000")
    assert mol.fixvec([]) == bytes.fromhex("00000000")
    # Script table: header 16 bytes, code_hash 32, hash_type 1, args (4 + n)
    script = Script(code_hash=bytes(32), hash_type=1, args=b"\x01\x02")
    raw = script.serialize()
    assert raw[:4] == (16 + 32 + 1 + 6).to_bytes(4, "little")
    assert raw[4:16] == bytes.fromhex("100000003000000031000000")


def test_cbmt_shapes_follow_rfc0006() -> None:
    leaves = [bytes([i]) * 32 for i in range(3)]
    assert merkle_root([]) == bytes(32)
    assert merkle_root(leaves[:1]) == leaves[0]
    # n = 3: nodes = [root, n1, L0, L1, L2]; n1 = merge(L1, L2); root = merge(n1, L0)
    n1 = ckb_hash(leaves[1] + leaves[2])
    assert merkle_root(leaves) == ckb_hash(n1 + leaves[0])


def test_extra_hash_with_extension_but_no_uncles_hashes_the_zero_uncles_hash() -> None:
    ext = b"block #3"
    assert extra_hash([], None) == bytes(32)
    assert extra_hash([], ext) == ckb_hash(bytes(32) + ckb_hash(ext))
    assert proposals_hash([]) == bytes(32)


def _rfc0031() -> dict:  # type: ignore[type-arg]
    return json.loads((DATA / "rfc0031_vector.json").read_text())


def test_rfc0031_template_assembles_to_the_published_block() -> None:
    vector = _rfc0031()
    expected = vector["expected"]
    template = BlockTemplate.from_json(vector["template"])
    job = job_from_template(template)
    nonce = int(expected["nonce"], 16)
    block = job.block(nonce)
    assert "0x" + job.raw_header.transactions_root.hex() == expected["transactions_root"]
    assert "0x" + job.raw_header.extra_hash.hex() == expected["extra_hash"]
    assert "0x" + block.hash().hex() == expected["block_hash"]
    assert ["0x" + t.hash().hex() for t in block.transactions] == expected["tx_hashes"]
    block_json = block.to_json()
    assert "hash" not in block_json["header"]
    assert block_json["extension"] == vector["template"]["extension"]
    # the JSON we submit parses back to the same block
    assert Block.from_json(block_json) == block
    assert job.submit_params(nonce)[0] == "2"


def test_template_missing_field_names_its_path() -> None:
    vector = _rfc0031()["template"]
    del vector["transactions"][0]["data"]["inputs"][0]["previous_output"]["index"]
    with pytest.raises(MalformedError) as err:
        BlockTemplate.from_json(vector)
    assert err.value.path == "template.transactions[0].data.inputs[0].previous_output.index"


def test_template_bad_hex_names_its_path() -> None:
    vector = _rfc0031()["template"]
    vector["dao"] = "0xzz"
    with pytest.raises(MalformedError, match=r"template\.dao"):
        BlockTemplate.from_json(vector)
    vector = _rfc0031()["template"]
    vector["number"] = "0x03"
    with pytest.raises(MalformedError, match=r"template\.number.*leading zeros"):
        BlockTemplate.from_json(vector)


def test_template_with_tampered_tx_data_is_caught_by_its_declared_hash() -> None:
    vector = _rfc0031()["template"]
    vector["transactions"][0]["data"]["outputs"][0]["capacity"] = "0x1"
    with pytest.raises(MalformedError, match=r"transactions\[0\]\.hash"):
        BlockTemplate.from_json(vector)


def test_rfc0021_addresses_decode_to_the_same_lock() -> None:
    full = "ckb1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw7qkdnnclfkg59uzn8umtfd2kwxceqxwquc4"
    short = "ckb1qyqt8xaupvm8837nv3gtc9x0ekkj64vud3jqfwyw5v"
    lock = secp256k1_lock(bytes.fromhex("b39bbc0b3673c7d36450bc14cfcdad2d559c6c64"))
    assert parse_address(full) == lock
    assert parse_address(short) == lock
    assert encode_address(lock, "mainnet") == full


def test_address_on_wrong_network_and_bad_checksum_are_rejected() -> None:
    full = "ckb1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw7qkdnnclfkg59uzn8umtfd2kwxceqxwquc4"
    with pytest.raises(MalformedError, match="cannot be used on testnet"):
        parse_address(full, "testnet")
    with pytest.raises(MalformedError, match="checksum"):
        parse_address(full[:-1] + ("q" if full[-1] != "q" else "p"))
