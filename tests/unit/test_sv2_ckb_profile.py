"""The CKB profile of SV2: nonce16 layout, V1 mapping, job field mapping, PoW flag."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.sv2 import ckb_profile as p
from ckbpool.sv2.events import ChannelInfo, ChannelKind
from ckbpool.sv2.messages import (
    CkbSubmitSolution,
    NewExtendedMiningJob,
    NewMiningJob,
    SetNewPrevHash,
    SubmitSharesExtended,
    SubmitSharesStandard,
    decode_frame_bytes,
    encode_message,
)

pytestmark = pytest.mark.unit

# UUPool's CKB stratum vector (docs/protocols.md): V1 extranonce1 || extranonce2 = nonce16.
V1_POW_HASH = bytes.fromhex("d5a74fba920ad0d35ec5726f26327547cbc82180e356e5ccf6cf2e6bd75f8a66")
V1_EXTRANONCE1 = bytes.fromhex("00c904bd")
V1_EXTRANONCE2 = bytes.fromhex("000000000000000000114026")
V1_HEADER_NONCE = 0x264011000000000000000000BD04C900
V1_EAGLESONG = bytes.fromhex("000034965758f32a266558876abba7be3ea343086bf048c9fc3c854e77a2f360")

u32 = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Job:
    pow_hash: bytes = V1_POW_HASH
    height: int = 123_456
    parent_hash: bytes = bytes(range(32))
    compact_target: int = 0x1A08_A97E
    timestamp: int = 1_700_000_123_456


def test_v1_vector_through_the_extended_channel_fields() -> None:
    # The pool granted the 4-byte prefix 00c904bd; the proxy's miner id is empty here, so the
    # whole V1 extranonce2 is extranonce (4 bytes) || version LE || nonce LE.
    tail, version, nonce = p.split_v1_extranonce2(V1_EXTRANONCE2)
    assert (tail, version, nonce) == (bytes(4), 0, 0x26401100)
    nonce16 = p.nonce16_from_extended_share(V1_EXTRANONCE1, tail, version, nonce)
    assert nonce16 == V1_EXTRANONCE1 + V1_EXTRANONCE2
    assert p.header_nonce(nonce16) == V1_HEADER_NONCE
    assert p.nonce16_from_header_nonce(V1_HEADER_NONCE) == nonce16
    assert p.v1_extranonce2(tail, version, nonce) == V1_EXTRANONCE2


def test_v1_vector_pow_with_the_chain_core() -> None:
    eaglesong = pytest.importorskip("ckbpool.ckb.eaglesong")
    nonce16 = p.nonce16_from_extended_share(V1_EXTRANONCE1, bytes(4), 0, 0x26401100)
    assert eaglesong.pow_output(V1_POW_HASH, nonce16) == V1_EAGLESONG
    assert eaglesong.check_pow(V1_POW_HASH, nonce16, 1 << 240)


def test_standard_share_layout() -> None:
    prefix = bytes.fromhex("0102030405060708")
    nonce16 = p.nonce16_from_standard_share(prefix, version=0x0A0B0C0D, nonce=0x11223344)
    assert nonce16 == prefix + bytes.fromhex("0d0c0b0a") + bytes.fromhex("44332211")
    assert p.split_nonce16(nonce16, 8) == p.Nonce16Parts(prefix, b"", 0x0A0B0C0D, 0x11223344)
    with pytest.raises(ValueError):
        p.nonce16_from_standard_share(prefix[:7], 0, 0)
    with pytest.raises(ValueError):
        p.nonce16_from_standard_share(prefix, 1 << 32, 0)


@given(
    st.integers(1, 7).flatmap(
        lambda n: st.tuples(st.binary(min_size=n, max_size=n), st.binary(min_size=8 - n, max_size=8 - n))
    ),
    u32,
    u32,
)
def test_extended_split_round_trip(parts: tuple[bytes, bytes], version: int, nonce: int) -> None:
    prefix, extranonce = parts
    nonce16 = p.nonce16_from_extended_share(prefix, extranonce, version, nonce)
    assert len(nonce16) == 16 and nonce16.startswith(prefix)
    assert p.split_nonce16(nonce16, len(prefix)) == p.Nonce16Parts(prefix, extranonce, version, nonce)
    assert p.nonce16_from_header_nonce(p.header_nonce(nonce16)) == nonce16
    assert p.extranonce_size_for_prefix(prefix) == len(extranonce)


def test_extended_share_needs_exactly_eight_extranonce_bytes() -> None:
    with pytest.raises(ValueError):
        p.nonce16_from_extended_share(b"\x00" * 4, b"\x00" * 5, 0, 0)
    with pytest.raises(ValueError):
        p.extranonce_size_for_prefix(b"\x00" * 8)
    with pytest.raises(ValueError):
        p.split_nonce16(b"\x00" * 15, 4)


def test_nonce16_from_share_for_every_share_message() -> None:
    std = ChannelInfo(1, ChannelKind.STANDARD, "w", 0.0, 1, b"\xaa" * 8, 0, 0)
    ext = ChannelInfo(2, ChannelKind.EXTENDED, "p", 0.0, 1, b"\xbb" * 3, 5, 0)
    assert p.nonce16_from_share(std.extranonce_prefix, SubmitSharesStandard(1, 1, 1, 2, 0, 3)) == b"\xaa" * 8 + bytes(
        [3, 0, 0, 0, 2, 0, 0, 0]
    )
    share = SubmitSharesExtended(2, 1, 1, 2, 0, 3, b"\xcc" * 5)
    assert p.nonce16_from_share(ext.extranonce_prefix, share) == b"\xbb" * 3 + b"\xcc" * 5 + bytes(
        [3, 0, 0, 0, 2, 0, 0, 0]
    )
    assert p.nonce16_from_share(ext.extranonce_prefix, CkbSubmitSolution(2, 1, 1, b"\x07" * 16)) == b"\x07" * 16


def test_v1_extranonce_sizes_fit_asics() -> None:
    for prefix_len in range(1, 8):
        for id_len in range(0, 9 - prefix_len):
            extranonce1 = p.v1_extranonce1(b"\x01" * prefix_len, b"\x02" * id_len)
            assert p.V1_EXTRANONCE2_MIN <= 16 - len(extranonce1) <= p.V1_EXTRANONCE2_MAX
    with pytest.raises(ValueError):
        p.v1_extranonce1(b"\x01" * 4, b"\x02" * 5)
    with pytest.raises(ValueError):
        p.split_v1_extranonce2(b"\x00" * 7)


def test_job_mapping_standard() -> None:
    job = Job()
    future = p.standard_job(7, 1, job, future=True)
    assert future == NewMiningJob(7, 1, None, 0, V1_POW_HASH)
    active = p.standard_job(7, 2, job, future=False)
    assert active.min_ntime == 1_700_000_123
    assert p.job_info(active) == p.JobInfo(2, V1_POW_HASH, None, 1_700_000_123)


def test_job_mapping_extended_round_trips_through_the_wire() -> None:
    job = Job()
    msg = p.extended_job(8, 3, job, future=True)
    assert msg == NewExtendedMiningJob(8, 3, None, 0, True, (), V1_POW_HASH, (123_456).to_bytes(8, "little"))
    decoded = decode_frame_bytes(encode_message(msg))
    assert isinstance(decoded, NewExtendedMiningJob)
    assert p.job_info(decoded) == p.JobInfo(3, V1_POW_HASH, 123_456, None)
    with pytest.raises(ValueError):
        p.job_info(NewExtendedMiningJob(8, 3, None, 0, True, (), b"\x00" * 31, bytes(8)))


def test_prev_hash_and_target_mapping() -> None:
    job = Job()
    assert p.set_new_prev_hash(7, 1, job) == SetNewPrevHash(7, 1, job.parent_hash, 1_700_000_123, 0x1A08A97E)
    target = 0xFFFF << 230
    assert p.set_target(7, target).encode()[4:] == target.to_bytes(32, "little")
    with pytest.raises(ValueError):
        p.min_ntime(1 << 45)


def test_pow_function_flag() -> None:
    main = p.success_flags(p.PowFunction.EAGLESONG)
    test = p.success_flags(p.PowFunction.EAGLESONG_BLAKE2B, other_flags=0)
    assert main == 1 << 30 and test == (1 << 30) | (1 << 31)
    assert p.pow_function_from_flags(main) is p.PowFunction.EAGLESONG
    assert p.pow_function_from_flags(test) is p.PowFunction.EAGLESONG_BLAKE2B
    # Defined SV2 Success flags (bits 0, 1) are left alone.
    assert p.success_flags(p.PowFunction.EAGLESONG, other_flags=2) & 0b11 == 2
    with pytest.raises(ValueError, match="CKB profile"):
        p.pow_function_from_flags(0)
