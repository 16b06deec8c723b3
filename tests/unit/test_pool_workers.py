"""Per-worker figures of the operator's /status (ckbpool.pool.workers): counts, last share, the hashrate window."""

from __future__ import annotations

import random

import pytest

from ckbpool.bus.events import Share
from ckbpool.pool.workers import WorkerBook

pytestmark = pytest.mark.unit

TWO_256 = 1 << 256


def share(user: str, worker: str, at: float, *, work: float = 1000.0, accepted: bool = True) -> Share:
    return Share(
        server_id="stratum-1",
        channel_id=1,
        user=user,
        worker=worker,
        job_id=1,
        height=1,
        nonce=0,
        share_target=int(TWO_256 / work),
        share_difficulty=0.0,
        accepted=accepted,
        reason="" if accepted else "stale-share",
        is_block=False,
        block_hash=b"",
        timestamp=at,
    )


def test_counts_and_last_share_per_user_and_worker() -> None:
    book = WorkerBook()
    book.observe(share("ckt1a", "rig1", 100.0))
    book.observe(share("ckt1a", "rig1", 101.0, accepted=False))
    book.observe(share("ckt1a", "rig2", 102.0))
    book.observe(share("ckt1b", "rig1", 99.0))
    users = book.status(now=110.0)
    assert set(users) == {"ckt1a", "ckt1b"}
    a = users["ckt1a"]
    assert (a["accepted"], a["rejected"], a["last_share"]) == (2, 1, 102.0)
    assert a["workers"]["rig1"] == {"hashrate_hps": 0.0, "accepted": 1, "rejected": 1, "last_share": 101.0}
    assert users["ckt1b"]["workers"]["rig1"]["accepted"] == 1


def test_hashrate_counts_the_work_after_the_first_share() -> None:
    """Shares of 1000 hashes every second from t=100: 1000 H/s, not more for counting the first share too."""
    book = WorkerBook(window_s=600)
    for i in range(11):
        book.observe(share("ckt1a", "rig1", 100.0 + i))
    rig = book.status(now=110.0)["ckt1a"]["workers"]["rig1"]
    assert rig["hashrate_hps"] == pytest.approx(1000.0)


def test_hashrate_of_a_poisson_worker_over_a_full_window() -> None:
    """A worker of 5000 H/s with shares of random targets, sharing for longer than the window: within 5 % (about
    3600 shares in the 600 s window, standard deviation ~1.7 %)."""
    rng = random.Random(7)
    book = WorkerBook(window_s=600, buckets=60)
    at = 1000.0
    while at < 2000.0:
        work = rng.choice((500.0, 1000.0, 2000.0))
        at += rng.expovariate(5000.0 / work)
        book.observe(share("ckt1a", "rig1", at, work=work))
    assert book.status(now=at)["ckt1a"]["hashrate_hps"] == pytest.approx(5000.0, rel=0.05)
    # the window forgot the first half: its buckets are gone
    assert len(book.workers[("ckt1a", "rig1")].buckets) <= 61


def test_a_silent_worker_is_forgotten() -> None:
    book = WorkerBook(window_s=60, forget_after_s=120)
    book.observe(share("ckt1a", "old", 0.0))
    book.observe(share("ckt1a", "new", 200.0))
    assert set(book.status(now=200.0)["ckt1a"]["workers"]) == {"new"}


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        WorkerBook(window_s=600, forget_after_s=60)


def test_observe_many_is_observe_of_each_share_in_order() -> None:
    """The batch form the Pool uses gives the figures that observing the shares one by one gives, across
    interleaved workers, rejected shares, a time step past the sweep that forgets idle workers."""
    rng = random.Random(19)
    shares = []
    at = 1000.0
    for _ in range(3000):
        at += rng.choice([0.0, 0.01, 0.5, 30.0, 4000.0 if rng.random() < 0.002 else 0.1])
        shares.append(
            share(f"ckt1{rng.randint(0, 3)}", f"rig{rng.randint(0, 2)}", at, work=rng.choice([10.0, 1e6]),
                  accepted=rng.random() < 0.9)
        )  # fmt: skip
    one, many = WorkerBook(window_s=600, buckets=60), WorkerBook(window_s=600, buckets=60)
    for s in shares:
        one.observe(s)
    for start in range(0, len(shares), 257):
        many.observe_many(shares[start : start + 257])
    assert many.status(now=at) == one.status(now=at)
    assert many.workers.keys() == one.workers.keys()
