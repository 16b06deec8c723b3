"""Per-worker figures for the operator's ``/status``: hashrate, accepted, rejected, last share, per user and worker.

Fed with every share event this process's stratum server hands to the bus (``Pool._publish_share``), so a share
tagged by a proxy with its device's identity counts for that device, not for the proxy's channel. These are
the stratum server's own live figures, since it started; the books miners are paid from are Redis
(:mod:`ckbpool.pool.accounting`), whose per-minute hashrate buckets average over whole minutes and so cannot say
what a worker that started 30 s ago does. In a topology with several stratum processes each one's ``/status``
shows the workers connected to it. Deliberately not Prometheus labels: one series per worker would grow the
metrics without bound.

Hashrate: the work credited to the worker's accepted shares (2^256 / the target each share was credited at) in
a sliding window of ``window_s``, kept in ``buckets`` buckets so memory per worker is bounded whatever its
share rate. Until the worker has been sharing for a whole window, the estimate is the work of its shares
*after the first one* divided by the time since the first one: share arrivals are memoryless, so the work found
in (first share, now] is what the worker hashed in that time on average -- counting the first share as well
(it took an unknown time since the worker started) would overstate a new worker's rate.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..bus.events import Share
from .channels import TWO_256

__all__ = ["WorkerBook", "WorkerFigures"]


@dataclass
class WorkerFigures:
    """One ``user.worker`` as this stratum server saw it."""

    accepted: int = 0
    rejected: int = 0
    last_share: float = 0.0  # wall clock of its last share, accepted or not
    first_accepted: float | None = None  # wall clock of the first accepted share (start of the estimate)
    buckets: deque[list[float]] = field(default_factory=deque)  # [bucket start, work], oldest first

    def add_work(self, work: float, at: float, bucket_s: float) -> None:
        start = at - at % bucket_s
        if self.buckets and self.buckets[-1][0] >= start:
            self.buckets[-1][1] += work  # same bucket (or a share stamped slightly out of order)
        else:
            self.buckets.append([start, work])

    def expire(self, now: float, window_s: float, bucket_s: float) -> None:
        while self.buckets and self.buckets[0][0] + bucket_s <= now - window_s:
            self.buckets.popleft()

    def hashrate(self, now: float, window_s: float, bucket_s: float) -> float:
        if self.first_accepted is None:
            return 0.0
        self.expire(now, window_s, bucket_s)
        span = min(window_s, now - self.first_accepted)
        if span <= 0:
            return 0.0
        return sum(work for _start, work in self.buckets) / span


class WorkerBook:
    """Live per-worker figures; a worker silent for ``forget_after_s`` is dropped (memory stays bounded by the
    workers active in that time)."""

    def __init__(self, window_s: float = 600.0, buckets: int = 60, forget_after_s: float = 3600.0) -> None:
        if window_s <= 0 or buckets < 1 or forget_after_s < window_s:
            raise ValueError("window_s > 0, buckets >= 1 and forget_after_s >= window_s are required")
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self.forget_after_s = forget_after_s
        self.workers: dict[tuple[str, str], WorkerFigures] = {}
        self._swept = 0.0

    def observe(self, share: Share) -> None:
        """Count one share event (as published: each share once)."""
        key = (share.user, share.worker)
        figures = self.workers.get(key)
        if figures is None:
            figures = self.workers[key] = WorkerFigures()
        at = share.timestamp
        figures.last_share = max(figures.last_share, at)
        if not share.accepted:
            figures.rejected += 1
            return
        figures.accepted += 1
        if figures.first_accepted is None:
            figures.first_accepted = at  # the start of the estimate; its own work is not counted (module doc)
        else:
            figures.add_work(TWO_256 / share.share_target, at, self.bucket_s)
            figures.expire(at, self.window_s, self.bucket_s)
        if at - self._swept >= self.bucket_s:
            self._sweep(at)

    def observe_many(self, shares: list[Share]) -> None:
        """``observe`` each share, in order, with the figures of consecutive shares of one worker looked up once
        (the stratum server's batches run in long stretches per connection)."""
        key: tuple[str, str] | None = None
        figures: WorkerFigures | None = None
        bucket_s, window_s = self.bucket_s, self.window_s
        for share in shares:
            if key is None or share.user != key[0] or share.worker != key[1]:
                key = (share.user, share.worker)
                figures = self.workers.get(key)
                if figures is None:
                    figures = self.workers[key] = WorkerFigures()
            assert figures is not None
            at = share.timestamp
            if at > figures.last_share:
                figures.last_share = at
            if not share.accepted:
                figures.rejected += 1
                continue
            figures.accepted += 1
            if figures.first_accepted is None:
                figures.first_accepted = at
            else:
                figures.add_work(TWO_256 / share.share_target, at, bucket_s)
                figures.expire(at, window_s, bucket_s)
            if at - self._swept >= bucket_s:
                self._sweep(at)
                key = None  # the sweep may have dropped this worker's figures: look them up again

    def _sweep(self, now: float) -> None:
        self._swept = now
        horizon = now - self.forget_after_s
        for key in [k for k, f in self.workers.items() if f.last_share < horizon]:
            del self.workers[key]

    def status(self, now: float | None = None) -> dict[str, Any]:
        """``{user: {hashrate_hps, accepted, rejected, last_share, workers: {worker: {...the same...}}}}``."""
        now = time.time() if now is None else now
        users: dict[str, Any] = {}
        for (user, worker), f in sorted(self.workers.items()):
            entry = {
                "hashrate_hps": f.hashrate(now, self.window_s, self.bucket_s),
                "accepted": f.accepted,
                "rejected": f.rejected,
                "last_share": f.last_share,
            }
            account = users.setdefault(
                user, {"hashrate_hps": 0.0, "accepted": 0, "rejected": 0, "last_share": 0.0, "workers": {}}
            )
            account["workers"][worker] = entry
            account["hashrate_hps"] += entry["hashrate_hps"]
            account["accepted"] += f.accepted
            account["rejected"] += f.rejected
            account["last_share"] = max(account["last_share"], f.last_share)
        return users
