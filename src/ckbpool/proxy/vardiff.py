"""Per-miner difficulty behind the proxy.

Every share a V1 miner gets credited for must also count at the pool (the proxy forwards each one and answers
with the pool's verdict), so a miner's target is never *easier* than the upstream channel's target. Within that
bound each miner gets its own: a fast device is moved to a harder target so it sends about one share per
``share_interval_s`` instead of flooding the proxy (and the pool) with shares of the channel's difficulty.

How the rate is measured, and why (issue 14: a V1 device credited ~20 % less work per hash than an SV2 miner of
the same speed under CPU load): the pool acknowledges shares in batches, and a busy event loop delivers a backlog
of them at once. Two things used to turn such a batch into a wrong, far too hard target (seen: a device that
needed 1,000 hashes per share put on 30,601):

- every share of the window was counted at the target in force *now*, so after the upstream channel (or this
  vardiff) made the target harder, the shares found against the easier one were counted as hard ones: the rate
  was overestimated by the ratio of the two targets, and the next target overshot by as much. Each share now
  counts the work it was credited (``2^256 / target`` of the target it met).
- the window restarts at a retarget check, which happens at a share -- often the first share of a backlog. The
  rest of the backlog then fell into a window a few milliseconds old and looked like a flood of hundreds of
  shares per second. A flood's rate is now measured over the current window *and the one before it* (a backlog
  cannot compress a whole window; flood windows are short, so a flood is measured back to the start of the last
  full window), and a flood only ever makes the target harder.

A wrong target does not change what a hash is credited on average (each share is credited the work its target
proves), but a device on a target 30x too hard sends 30x fewer, 30x larger shares: its credited work becomes a
lottery, which is what the fairness test saw.
"""

from __future__ import annotations

import time

__all__ = ["MinerVardiff"]

_TWO_256 = 1 << 256


class MinerVardiff:
    """``target`` follows the miner's share rate; ``effective(upstream_target)`` is what it is sent."""

    __slots__ = (
        "_prev_elapsed",
        "_prev_work",
        "_shares",
        "_window_start",
        "_work",
        "enabled",
        "retarget_interval_s",
        "share_interval_s",
        "target",
        "tolerance",
    )

    def __init__(
        self,
        initial_target: int,
        *,
        share_interval_s: float = 10.0,
        retarget_interval_s: float = 30.0,
        tolerance: float = 1.5,
        enabled: bool = True,
    ) -> None:
        self.target = max(1, initial_target)
        self.share_interval_s = share_interval_s
        self.retarget_interval_s = retarget_interval_s
        self.tolerance = tolerance
        self.enabled = enabled
        self._window_start = time.monotonic()
        self._shares = 0
        self._work = 0.0  # hashes the window's shares were credited (each at the target it met)
        self._prev_work = 0.0  # the previous window (a flood is measured over both)
        self._prev_elapsed = 0.0

    def effective(self, upstream_target: int) -> int:
        """The miner's share target: its own, but never easier than the upstream channel's."""
        return min(self.target, upstream_target)

    def on_share(self, upstream_target: int, now: float | None = None, target: int | None = None) -> bool:
        """Count an accepted share credited at ``target`` (default: the miner's current effective target);
        True if the miner's own target changed."""
        self._shares += 1
        self._work += _TWO_256 / max(1, self.effective(upstream_target) if target is None else target)
        return self.maybe_retarget(upstream_target, now)

    def maybe_retarget(self, upstream_target: int, now: float | None = None) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic() if now is None else now
        elapsed = now - self._window_start
        if elapsed <= 0:
            return False
        expected = elapsed / self.share_interval_s
        flood = self._shares >= 8 and self._shares > 4 * max(expected, 1.0)
        if elapsed < self.retarget_interval_s and not flood:
            return False
        current = self.effective(upstream_target)
        if elapsed < self.retarget_interval_s:
            # a flood: shares arrive > 4x too fast. Judged over this window and the previous one, so a backlog
            # delivered at once (a batch of verdicts, a stalled loop) right after a window restart is not taken
            # for a rate; a real flood keeps coming and soon dominates the sum. Only ever harder.
            hashrate = (self._prev_work + self._work) / (self._prev_elapsed + elapsed)
            wanted = self._wanted(hashrate, upstream_target)
            if current / max(1, wanted) < self.tolerance:
                return False  # not a flood after all: keep measuring in the same window
        elif self._shares:
            wanted = self._wanted(self._work / elapsed, upstream_target)
        else:
            hashrate = (_TWO_256 / current) / elapsed / 2  # silence: at least halve the difficulty
            wanted = self._wanted(hashrate, upstream_target)
        if elapsed < self.retarget_interval_s:
            # a flood window is short: the next flood is still measured back to the last full window's start,
            # else a second backlog right after this retarget would be measured over milliseconds again
            self._prev_work, self._prev_elapsed = self._prev_work + self._work, self._prev_elapsed + elapsed
        else:
            self._prev_work, self._prev_elapsed = self._work, elapsed
        self._window_start = now
        self._shares = 0
        self._work = 0.0
        ratio = max(wanted, current) / max(1, min(wanted, current))
        if ratio < self.tolerance:
            return False
        self.target = wanted
        return True

    def _wanted(self, hashrate: float, upstream_target: int) -> int:
        """The target for one share per ``share_interval_s`` at ``hashrate``, never easier than the channel's."""
        return min(upstream_target, max(1, int(_TWO_256 / max(1.0, hashrate * self.share_interval_s))))
