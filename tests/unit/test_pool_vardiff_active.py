"""Vardiff.active_workers is remembered between shares (issue 19: it runs at every share); it must always equal
the count of :meth:`Vardiff.recent_workers`, whatever the order of shares, silences and retargets."""

from __future__ import annotations

import random

import pytest

from ckbpool.pool.channels import Vardiff
from ckbpool.pool.config import VardiffSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(20))
def test_active_workers_matches_recent_workers(seed: int) -> None:
    rng = random.Random(seed)
    settings = VardiffSettings(share_interval_s=1.0, retarget_interval_s=2.0)
    vardiff = Vardiff(settings, 1 << 240, 1)
    workers = [f"acct.w{i}" for i in range(rng.randint(1, 6))]
    now = 1000.0
    changes = 0
    last = -1
    for _ in range(400):
        # steps from a few ms up to beyond the 3-window horizon (6 s), so workers come, expire and come back
        now += rng.choice((0.001, 0.05, 0.5, 1.5, 4.0, 7.0))
        if rng.random() < 0.8:
            vardiff.on_share(now=now, work=1.0, worker=rng.choice(workers))
        else:
            vardiff.maybe_retarget(now)
        expected = len(vardiff.recent_workers(now))
        got = vardiff.active_workers(now)
        assert got == expected, (now, got, expected)
        changes += got != last
        last = got
    assert changes > 5  # the sequence really moved the count around


def test_untagged_channel_has_no_active_workers() -> None:
    vardiff = Vardiff(VardiffSettings(), 1 << 240, 1)
    for i in range(10):
        vardiff.on_share(now=100.0 + i, work=1.0)
    assert vardiff.active_workers(200.0) == 0
    assert vardiff.recent_workers(200.0) == []
