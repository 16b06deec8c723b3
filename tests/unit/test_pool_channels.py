"""Pool policy without sockets: prefixes, vardiff, the share rules, the job book, the block store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.bus.events import FoundBlock
from ckbpool.ckb.eaglesong import pow_output, search
from ckbpool.pool.blocks import BlockRecord, BlockStore
from ckbpool.pool.channels import (
    JobEntry,
    PrefixAllocator,
    PrefixExhausted,
    ShareResult,
    Vardiff,
    check_share,
    target_for_hashrate,
)
from ckbpool.pool.config import VardiffSettings

pytestmark = pytest.mark.unit
POW_HASH = bytes(range(32))
EASY = (1 << 256) - 1


def test_prefixes_are_unique_and_sized_per_channel_kind() -> None:
    alloc = PrefixAllocator(server_id=7, extended_prefix_bytes=4)
    extended = [alloc.extended() for _ in range(100)]
    standard = [alloc.standard() for _ in range(100)]
    assert all(len(p) == 4 and p[0] == 7 for p in extended)
    assert all(len(p) == 8 and p[0] == 7 for p in standard)
    assert alloc.extended_extranonce_size == 4
    # no prefix is a prefix of another: nonce spaces never overlap
    everything = extended + standard
    for a in everything:
        for b in everything:
            if a is not b:
                assert not b.startswith(a) and not a.startswith(b)


def test_released_prefixes_are_reused_and_exhaustion_is_reported() -> None:
    alloc = PrefixAllocator(server_id=1, extended_prefix_bytes=2)  # 255 extended slots
    taken = [alloc.extended() for _ in range(255)]
    with pytest.raises(PrefixExhausted):
        alloc.extended()
    alloc.release(taken[10])
    assert alloc.extended() == taken[10]


def test_target_for_hashrate_gives_the_requested_share_interval() -> None:
    target = target_for_hashrate(1e6, 10.0)
    expected_hashes = (1 << 256) / target
    assert expected_hashes == pytest.approx(1e7, rel=1e-9)


def test_vardiff_raises_difficulty_for_a_fast_miner_and_lowers_it_for_a_silent_one() -> None:
    settings = VardiffSettings(share_interval_s=1.0, retarget_interval_s=10.0, tolerance=1.2)
    initial = target_for_hashrate(1e3, 1.0)  # the pool assumes 1 kH/s
    vd = Vardiff(settings, initial, network_target=1)
    now = time.monotonic()
    true_hashrate = 1e5  # the miner is 100x faster: shares arrive every 2^256 / (H * target) seconds
    for _ in range(2000):
        now += (1 << 256) / (true_hashrate * vd.target)
        vd.on_share(now)
    assert vd.target < initial
    # converged: about one share per second at the miner's real speed
    assert (1 << 256) / vd.target == pytest.approx(true_hashrate, rel=0.3)
    hard = vd.target
    # silence for a whole window: the target gets easier
    quiet = vd.maybe_retarget(now + 30)
    assert quiet is not None and quiet > hard


def test_vardiff_never_sets_a_share_target_harder_than_the_network() -> None:
    settings = VardiffSettings(share_interval_s=1.0, retarget_interval_s=1.0)
    network = 1 << 200
    vd = Vardiff(settings, 1 << 10, network_target=network)
    assert vd.target == network
    assert vd.set_network_target(1 << 210) == 1 << 210


def _job() -> JobEntry:
    return JobEntry(job_id=5, pow_hash=POW_HASH, network_target=1, height=10, parent_hash=b"p" * 32)


def test_share_rules_in_order_unknown_stale_duplicate_low_difficulty() -> None:
    job = _job()
    nonce = search(POW_HASH, 0, 1 << 20, 1 << 250)
    assert nonce is not None
    nonce16 = nonce.to_bytes(16, "little")
    assert check_share(None, job.parent_hash, nonce16, EASY, False).result is ShareResult.UNKNOWN_JOB
    assert check_share(job, b"q" * 32, nonce16, EASY, False).result is ShareResult.STALE
    ok = check_share(job, job.parent_hash, nonce16, 1 << 250, False)
    assert ok.result is ShareResult.ACCEPTED and not ok.is_block
    assert check_share(job, job.parent_hash, nonce16, 1 << 250, False).result is ShareResult.DUPLICATE
    value = int.from_bytes(pow_output(POW_HASH, (nonce + 1).to_bytes(16, "little")), "big")
    verdict = check_share(job, job.parent_hash, (nonce + 1).to_bytes(16, "little"), value - 1, False)
    assert verdict.result is ShareResult.LOW_DIFFICULTY


def test_a_block_solving_nonce_is_a_block_even_above_the_share_target() -> None:
    job = _job()
    nonce16 = bytes(16)
    value = int.from_bytes(pow_output(POW_HASH, nonce16), "big")
    job.network_target = value  # this nonce exactly meets the network target
    verdict = check_share(job, job.parent_hash, nonce16, value - 1, False)
    assert verdict.result is ShareResult.ACCEPTED and verdict.is_block


@given(st.binary(min_size=16, max_size=16))
def test_share_check_agrees_with_the_raw_pow_output(nonce16: bytes) -> None:
    job = _job()
    target = 1 << 255
    value = int.from_bytes(pow_output(POW_HASH, nonce16), "big")
    verdict = check_share(job, job.parent_hash, nonce16, target, False)
    assert (verdict.result is ShareResult.ACCEPTED) == (value <= target)


def _found(block_hash: bytes) -> FoundBlock:
    return FoundBlock(
        server_id="s",
        job_id=1,
        height=3,
        block_hash=block_hash,
        work_id=9,
        block_json=json.dumps({"header": {}}).encode(),
        user="u",
        worker="w",
        found_at=1.5,
    )


def test_block_store_round_trips_records_and_lists_pending_ones(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    store.save(BlockRecord(found=_found(b"\x01" * 32)))
    store.save(BlockRecord(found=_found(b"\x02" * 32), status="accepted"))
    pending = store.pending()
    assert [r.found.block_hash for r in pending] == [b"\x01" * 32]
    assert pending[0].found == _found(b"\x01" * 32)
    assert not list(tmp_path.glob("*.tmp"))


def test_block_store_keeps_going_past_an_unreadable_record(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    (tmp_path / "garbage.json").write_text("{not json")
    store.save(BlockRecord(found=_found(b"\x03" * 32)))
    assert len(store.pending()) == 1
