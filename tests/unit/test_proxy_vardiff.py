"""Vardiff measurements that a busy event loop must not fool (issue 14), for the proxy's per-device vardiff and
the pool's channel vardiff.

Under CPU load shares (and the pool's batched verdicts) arrive in backlogs: nothing for a few hundred
milliseconds, then a dozen at once. Two measurement errors turned such a backlog into a target 10-30x too hard
for a device of unchanged speed: a flood judged over a window a few milliseconds old (the window restarts at a
check, i.e. at the backlog's first share), and, at the proxy, every share counted at the target in force *now*
rather than the one it was credited at. A device on a far too hard target is still credited its work on
average, but in a few huge shares: over a fixed run its credited work per hash is a lottery (the fairness test
saw 0.82 vs 1.05 for an SV2 miner of the same speed). The clock here is simulated: no timing is asserted.
"""

from __future__ import annotations

import pytest

from ckbpool.pool.channels import TWO_256, Vardiff, target_for_hashrate
from ckbpool.pool.config import VardiffSettings
from ckbpool.proxy.vardiff import MinerVardiff

pytestmark = pytest.mark.unit

INTERVAL = 0.05  # s per share, as in the fairness test
RETARGET = 2.0
RATE = 20_000.0  # H/s of the device: 1,000 hashes per share at the right target
RIGHT = target_for_hashrate(RATE, INTERVAL)


def pool_settings() -> VardiffSettings:
    return VardiffSettings(
        share_interval_s=INTERVAL,
        retarget_interval_s=RETARGET,
        tolerance=1.5,
        min_hashrate=1_000.0,
        min_share_difficulty=1e-9,
    )


# --- the proxy's per-device vardiff ----------------------------------------------------------------------------------


def test_a_backlog_right_after_a_window_restart_is_not_a_flood_at_the_proxy() -> None:
    """One right-sized window (40 shares in 2 s), then the loop stalls and 12 verdicts arrive in one batch: the
    first closes the window (no change), the other 11 land in a window 1 ms old. The device's speed did not
    change, so neither may its target (before the fix: ~17x harder)."""
    upstream = RIGHT * 4  # the channel is easier than the device's own target: the device's own target rules
    vd = MinerVardiff(RIGHT, share_interval_s=INTERVAL, retarget_interval_s=RETARGET)
    start = 1000.0
    vd._window_start = start
    for i in range(39):
        assert not vd.on_share(upstream, now=start + INTERVAL * (i + 1))
    backlog = start + RETARGET + 0.3  # a stall, then everything at once
    changed = [vd.on_share(upstream, now=backlog + 0.0001 * i) for i in range(12)]
    assert not any(changed)
    assert vd.effective(upstream) == RIGHT


def test_shares_count_at_the_target_they_were_credited_at_not_the_current_one() -> None:
    """The pool makes the channel 4x harder than the device's own target (its SetTarget): the proxy's window
    still holds the shares found against the easier target. Counted at the new target they say the device is 4x
    faster and its own target would go 4x harder than the channel's (seen: 5,853 -> 30,601 hashes per share);
    counted at what each was credited, the device simply stays on the channel's target."""
    vd = MinerVardiff(RIGHT, share_interval_s=INTERVAL, retarget_interval_s=RETARGET)
    start = 1000.0
    vd._window_start = start
    upstream = RIGHT
    for i in range(40):
        now = start + INTERVAL * (i + 1)
        if i == 30:
            upstream = RIGHT // 4  # SetTarget: harder
        vd.on_share(upstream, now=now, target=RIGHT)  # all found (and credited) at the device's old target
    vd.maybe_retarget(upstream, now=start + RETARGET + 0.01)
    assert vd.target >= upstream  # never set harder than the channel for a device of unchanged speed
    assert vd.effective(upstream) == upstream


def test_a_real_flood_at_the_proxy_still_retargets_within_a_window() -> None:
    """A device 20x faster than its target allows, after a right-sized window: shares keep coming 20x too
    fast, so the sum over both windows soon shows it, well before the window ends."""
    vd = MinerVardiff(RIGHT, share_interval_s=INTERVAL, retarget_interval_s=RETARGET)
    start = 1000.0
    vd._window_start = start
    for i in range(40):
        vd.on_share(RIGHT * 4, now=start + INTERVAL * (i + 1))
    vd.maybe_retarget(RIGHT * 4, now=start + RETARGET)  # closes the first window, no change
    now, first_change = start + RETARGET, None
    for _ in range(2_000):
        now += (TWO_256 / vd.effective(RIGHT * 4)) / (20 * RATE)  # the next share of a 400 kH/s device
        if vd.on_share(RIGHT * 4, now=now) and first_change is None:
            first_change = now
    assert first_change is not None and first_change - (start + RETARGET) < RETARGET / 2
    # converged near one share per interval at 400 kH/s
    assert TWO_256 / vd.target == pytest.approx(20 * RATE * INTERVAL, rel=0.5)


# --- the pool's channel vardiff ------------------------------------------------------------------------------------


@pytest.mark.parametrize("worker", [None, "ckt1qyq.asic"], ids=["untagged", "tagged"])
def test_a_backlog_right_after_a_window_restart_is_not_a_flood_at_the_pool(worker: str | None) -> None:
    """The same backlog at the pool (an SV2 miner's channel, or a proxy's channel tagged per worker): 40 shares
    in a 2 s window, a stall, then 12 shares within 1 ms. The target stays (before the fix: ~10x harder)."""
    vd = Vardiff(pool_settings(), RIGHT, network_target=1)
    start = 1000.0
    vd._window_start = start
    work = TWO_256 / RIGHT
    for i in range(39):
        assert vd.on_share(start + INTERVAL * (i + 1), work=work, worker=worker) is None
    backlog = start + RETARGET + 0.3
    changes = [vd.on_share(backlog + 0.0001 * i, work=work, worker=worker) for i in range(12)]
    assert changes == [None] * 12
    assert vd.target == RIGHT


@pytest.mark.parametrize("worker", [None, "ckt1qyq.asic"], ids=["untagged", "tagged"])
def test_a_real_flood_at_the_pool_still_retargets_within_a_window_and_only_harder(worker: str | None) -> None:
    vd = Vardiff(pool_settings(), RIGHT, network_target=1)
    start = 1000.0
    vd._window_start = start
    for i in range(40):
        vd.on_share(start + INTERVAL * (i + 1), work=TWO_256 / vd.target, worker=worker)
    vd.maybe_retarget(start + RETARGET)
    now, changes = start + RETARGET, []
    for _ in range(2_000):
        previous = vd.target
        now += (TWO_256 / vd.target) / (20 * RATE)
        new = vd.on_share(now, work=TWO_256 / previous, worker=worker)
        if new is not None and now - (start + RETARGET) < RETARGET:
            changes.append((previous, new))
    assert changes and all(new < previous for previous, new in changes)  # within the window: only harder
    assert TWO_256 / vd.target == pytest.approx(20 * RATE * INTERVAL, rel=0.5)


def test_a_backlog_in_the_first_window_after_the_open_is_not_a_flood_at_the_pool() -> None:
    """Before the first window ends there is no previous one to measure over: the initial target stands in for
    it. 12 shares 0.1 s after the open (a backlog) leave a right-sized target alone (before: ~6x harder)."""
    vd = Vardiff(pool_settings(), RIGHT, network_target=1)
    start = 1000.0
    vd._window_start = start
    changes = [vd.on_share(start + 0.1 + 0.0001 * i, work=TWO_256 / RIGHT) for i in range(12)]
    assert changes == [None] * 12


def test_a_fast_workers_burst_does_not_set_a_tagged_channel_to_its_rate_while_a_slow_one_mines() -> None:
    """A proxy's channel with a 10x and a 1x device: after a regular window, the fast device's shares (a burst)
    fill the new window before the slow one's next share. The channel aims at the slowest *active* worker, so the
    flood measure must include the slow one even though it has no share in this short window (before: the
    channel went to the fast device's rate and held the slow one at a 10x too hard target)."""
    slow_target = RIGHT  # 20 kH/s at 1,000 hashes per share
    vd = Vardiff(pool_settings(), slow_target, network_target=1)
    start = 1000.0
    vd._window_start = start
    for i in range(40):  # a regular window: the slow one at its rate, the fast one 10x (its own target 10x harder)
        vd.on_share(start + INTERVAL * (i + 0.5), work=TWO_256 / slow_target, worker="a.slow")
        vd.on_share(start + INTERVAL * (i + 0.7), work=10 * TWO_256 / slow_target, worker="a.fast")
    # a stall, then a burst: 12 fast shares (10x the work each) at once -- the first closes the regular window,
    # the others land in a new one with no slow share yet
    changes = [
        vd.on_share(start + RETARGET + 0.3 + 0.0001 * i, work=10 * TWO_256 / slow_target, worker="a.fast")
        for i in range(12)
    ]
    assert changes == [None] * 12
    assert vd.target == slow_target


def test_a_second_backlog_right_after_a_flood_retarget_is_not_measured_over_milliseconds() -> None:
    """A real flood retargets (the device is 20x faster), then the loop stalls and a backlog of verdicts arrives
    at once: the flood window just closed was short, so the next flood is still measured back to the last full
    window -- the backlog does not push the device far past its real rate (before: ~15x past it)."""
    vd = MinerVardiff(RIGHT, share_interval_s=INTERVAL, retarget_interval_s=RETARGET)
    start = 1000.0
    vd._window_start = start
    for i in range(40):
        vd.on_share(RIGHT * 4, now=start + INTERVAL * (i + 1))
    vd.maybe_retarget(RIGHT * 4, now=start + RETARGET)
    now = start + RETARGET
    while not vd.on_share(RIGHT * 4, now=now):  # a 400 kH/s device: the flood rule retargets it
        now += (TWO_256 / vd.effective(RIGHT * 4)) / (20 * RATE)
    for i in range(30):  # the rest of the verdict batch that carried the flood's last share
        vd.on_share(RIGHT * 4, now=now + 0.0001 * (i + 1))
    assert TWO_256 / vd.target <= 20 * RATE * INTERVAL  # never past the device's real rate


def test_the_rest_of_a_batch_after_a_flood_retarget_is_not_measured_over_milliseconds_at_the_pool() -> None:
    """The pool's side of the same: a real 20x flood retargets, then the rest of the batch that carried it."""
    vd = Vardiff(pool_settings(), RIGHT, network_target=1)
    start = 1000.0
    vd._window_start = start
    for i in range(40):
        vd.on_share(start + INTERVAL * (i + 1), work=TWO_256 / RIGHT)
    vd.maybe_retarget(start + RETARGET)
    now = start + RETARGET
    while vd.on_share(now, work=TWO_256 / vd.target) is None:
        now += (TWO_256 / vd.target) / (20 * RATE)
    for i in range(30):
        vd.on_share(now + 0.0001 * (i + 1), work=TWO_256 / vd.target)
    assert TWO_256 / vd.target <= 20 * RATE * INTERVAL  # never past the device's real rate
