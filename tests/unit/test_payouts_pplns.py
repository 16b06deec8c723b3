"""PPLNS: the window and the integer-exact split (credits add up to the reward to the shannon)."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.ckb.target import difficulty_to_target, share_difficulty_to_target, target_to_difficulty
from ckbpool.payouts.pplns import (
    ShareLogError,
    ShareRecord,
    record_from_fields,
    split_reward,
    window_from_shares,
    window_target,
)
from ckbpool.pool.accounting import share_work

pytestmark = pytest.mark.unit

ADDRESSES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
WEIGHTS = st.dictionaries(ADDRESSES, st.integers(min_value=0, max_value=1 << 200), max_size=60)
REWARDS = st.integers(min_value=0, max_value=(1 << 62))
FEES = st.integers(min_value=0, max_value=10_000)


@settings(max_examples=400)
@given(reward=REWARDS, weights=WEIGHTS, fee_bps=FEES)
def test_credits_add_up_to_the_reward_exactly_and_each_is_within_one_shannon_of_its_share(
    reward: int, weights: dict[str, int], fee_bps: int
) -> None:
    lines = split_reward(reward, weights, fee_bps, "operator")
    assert sum(line.amount for line in lines) == reward
    assert all(line.amount >= 0 for line in lines)
    assert len({(line.address, line.kind) for line in lines}) == len(lines), "one line per (address, kind)"
    total = sum(weights.values())
    if total == 0:
        assert [(line.address, line.kind, line.amount) for line in lines] == (
            [("operator", "fee", reward)] if reward else []
        )
        return
    fee = reward * fee_bps // 10_000
    assert sum(line.amount for line in lines if line.kind == "fee") == fee
    rest = reward - fee
    shares = {line.address: line.amount for line in lines if line.kind == "share"}
    assert set(shares) == {a for a, w in weights.items() if w > 0}
    for address, amount in shares.items():
        exact = Fraction(rest * weights[address], total)
        assert abs(amount - exact) < 1, (address, amount, exact)


@given(reward=REWARDS, weights=WEIGHTS, fee_bps=FEES)
def test_more_work_never_earns_less(reward: int, weights: dict[str, int], fee_bps: int) -> None:
    shares = {
        line.address: line.amount for line in split_reward(reward, weights, fee_bps, "op") if line.kind == "share"
    }
    ranked = sorted(shares, key=lambda a: weights[a])
    for lower, higher in itertools.pairwise(ranked):
        if weights[higher] > weights[lower]:
            assert shares[higher] >= shares[lower]


def test_a_worked_example_by_hand() -> None:
    # 1000 shannons, 1 % fee = 10; 990 shared 1:1:1 = 330 each, nothing left over
    lines = split_reward(1000, {"a": 5, "b": 5, "c": 5}, 100, "op")
    assert [(x.address, x.kind, x.amount) for x in lines] == [
        ("a", "share", 330), ("b", "share", 330), ("c", "share", 330), ("op", "fee", 10)
    ]  # fmt: skip
    # 100 shared 1:1:1 -> 33 each + 1 leftover shannon to the largest remainder (all equal: first address)
    lines = split_reward(100, {"b": 1, "a": 1, "c": 1}, 0, "op")
    assert [(x.address, x.amount) for x in lines] == [("a", 34), ("b", 33), ("c", 33)]


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        split_reward(-1, {"a": 1}, 0, "op")
    with pytest.raises(ValueError):
        split_reward(1, {"a": 1}, 10_001, "op")
    with pytest.raises(ValueError):
        split_reward(1, {"a": -1}, 0, "op")


def _records(spec: list[tuple[str, int]]) -> list[ShareRecord]:
    return [ShareRecord(address=a, work=w, ts=1000.0 - i) for i, (a, w) in enumerate(spec)]


def test_the_window_takes_newest_first_and_the_crossing_share_only_in_part() -> None:
    window = window_from_shares(_records([("a", 300), ("b", 300), ("a", 300), ("c", 300)]), 800)
    assert window.complete
    assert window.weights == {"a": 500, "b": 300}  # a: 300 + the 200 that still fit; c is older than the window
    assert window.counted_work == 800 and window.shares == 3
    assert (window.newest_ts, window.oldest_ts) == (1000.0, 998.0)


def test_a_short_share_log_gives_an_incomplete_window_of_what_exists() -> None:
    window = window_from_shares(_records([("a", 100), ("b", 50)]), 1000)
    assert not window.complete
    assert window.weights == {"a": 100, "b": 50} and window.counted_work == 150


@given(works=st.lists(st.integers(min_value=1, max_value=1 << 40), max_size=80), target=st.integers(1, 1 << 42))
def test_a_window_never_holds_more_than_its_target(works: list[int], target: int) -> None:
    window = window_from_shares(_records([(f"m{i % 7}", w) for i, w in enumerate(works)]), target)
    assert sum(window.weights.values()) == window.counted_work <= target
    assert window.complete == (sum(works) >= target)


def test_window_target_is_n_times_difficulty_exactly() -> None:
    assert window_target(256, 2) == 512
    assert window_target(10**30, 2) == 2 * 10**30
    assert window_target(1001, 0.5) == 500
    with pytest.raises(ValueError):
        window_target(0, 2)
    with pytest.raises(ValueError):
        window_target(1, 0)


def test_share_work_is_in_the_unit_of_network_difficulty() -> None:
    """A share at the network target is worth exactly one network difficulty: the pool's credited work
    (accounting.share_work) and the node's difficulty (2^256 // target) are the same unit."""
    for difficulty in (256, 1_000_003, 3 << 60):
        target = difficulty_to_target(difficulty)
        assert int(share_work(target)) == pytest.approx((1 << 256) // target, rel=1e-15)
        record = record_from_fields("1-0", {"user": "a", "work": repr(share_work(target)), "ts": "1.0"})
        assert record.work == pytest.approx(target_to_difficulty(target), rel=1e-15)


def test_a_record_without_work_is_read_from_its_share_difficulty() -> None:
    target = share_difficulty_to_target(64.0)
    record = record_from_fields("1700000000000-0", {"user": "ckt1x", "difficulty": "64.0", "id": "s:1"})
    assert record.work == (1 << 256) // target
    assert record.ts == 1_700_000_000.0  # no ts field: the stream id's time
    with pytest.raises(ShareLogError):
        record_from_fields("1-0", {"difficulty": "1.0"})
    with pytest.raises(ShareLogError):
        record_from_fields("1-0", {"user": "a", "difficulty": "zero"})
