"""Per-miner difficulty behind the proxy.

Every share a V1 miner gets credited for must also count at the pool (the proxy forwards each one and answers
with the pool's verdict), so a miner's target is never *easier* than the upstream channel's target. Within that
bound each miner gets its own: a fast device is moved to a harder target so it sends about one share per
``share_interval_s`` instead of flooding the proxy (and the pool) with shares of the channel's difficulty.
"""

from __future__ import annotations

import time

__all__ = ["MinerVardiff"]

_TWO_256 = 1 << 256


class MinerVardiff:
    """``target`` follows the miner's share rate; ``effective(upstream_target)`` is what it is sent."""

    __slots__ = (
        "_shares",
        "_window_start",
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

    def effective(self, upstream_target: int) -> int:
        """The miner's share target: its own, but never easier than the upstream channel's."""
        return min(self.target, upstream_target)

    def on_share(self, upstream_target: int, now: float | None = None) -> bool:
        """Count an accepted share; True if the target changed."""
        self._shares += 1
        return self.maybe_retarget(upstream_target, now)

    def maybe_retarget(self, upstream_target: int, now: float | None = None) -> bool:
        if not self.enabled:
            return False
        now = time.monotonic() if now is None else now
        elapsed = now - self._window_start
        expected = elapsed / self.share_interval_s
        flood = self._shares >= 8 and self._shares > 4 * max(expected, 1.0)
        if (elapsed < self.retarget_interval_s and not flood) or elapsed <= 0:
            return False
        current = self.effective(upstream_target)
        if self._shares:
            hashrate = self._shares * (_TWO_256 / current) / elapsed
        else:
            hashrate = (_TWO_256 / current) / elapsed / 2  # silence: at least halve the difficulty
        wanted = min(upstream_target, max(1, int(_TWO_256 / max(1.0, hashrate * self.share_interval_s))))
        self._window_start = now
        self._shares = 0
        ratio = max(wanted, current) / max(1, min(wanted, current))
        if ratio < self.tolerance:
            return False
        self.target = wanted
        return True
