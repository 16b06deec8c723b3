"""Pool policy for mining channels: extranonce prefixes, vardiff, and the share check.

Kept free of sockets and of the SV2 state machine so each rule is testable on its own. Prefix layout follows
docs/sv2-ckb.md section 2: 4-byte slots whose first byte is this pool instance (server_id); extended channels
each own one slot, standard channels share slot 0 and add a 4-byte counter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from ..ckb import eaglesong as _eaglesong
from ..ckb.eaglesong import pow_output
from ..ckb.target import U256_MAX, target_to_share_difficulty
from .config import VardiffSettings

TWO_256 = 1 << 256
# check_share's hash: the C function itself when built. Its inputs are the job's 32-byte pow_hash and a
# 16-byte nonce16 the pool assembled, so the Python wrapper's argument checks only cost time at every share.
_pow_output = _eaglesong._C.pow_output if _eaglesong._C is not None else pow_output


class PrefixExhausted(RuntimeError):
    """No free extranonce prefix left on this server instance."""


class PrefixAllocator:
    """Unique extranonce prefixes for this server instance; freed prefixes are reused last (FIFO)."""

    def __init__(self, server_id: int, extended_prefix_bytes: int = 4) -> None:
        if not 0 <= server_id <= 255:
            raise ValueError("server_id must fit one byte")
        if not 2 <= extended_prefix_bytes <= 7:
            raise ValueError("extended prefix must be 2..7 bytes")
        self.server_id = server_id
        self.extended_prefix_bytes = extended_prefix_bytes
        self._next_slot = 1  # slot 0 is shared by standard channels
        self._next_standard = 0
        self._free_slots: list[int] = []
        self._free_standard: list[int] = []
        self._slot_limit = 1 << (8 * (extended_prefix_bytes - 1))

    @property
    def extended_extranonce_size(self) -> int:
        return 8 - self.extended_prefix_bytes

    def extended(self) -> bytes:
        if self._free_slots:
            slot = self._free_slots.pop(0)
        elif self._next_slot < self._slot_limit:
            slot = self._next_slot
            self._next_slot += 1
        else:
            raise PrefixExhausted("no extended-channel prefix left")
        return bytes([self.server_id]) + slot.to_bytes(self.extended_prefix_bytes - 1, "big")

    def standard(self) -> bytes:
        if self._free_standard:
            counter = self._free_standard.pop(0)
        elif self._next_standard < 1 << (8 * (8 - self.extended_prefix_bytes)):
            counter = self._next_standard
            self._next_standard += 1
        else:
            raise PrefixExhausted("no standard-channel prefix left")
        slot0 = bytes([self.server_id]) + bytes(self.extended_prefix_bytes - 1)
        return slot0 + counter.to_bytes(8 - self.extended_prefix_bytes, "big")

    def release(self, prefix: bytes) -> None:
        if len(prefix) == self.extended_prefix_bytes:
            self._free_slots.append(int.from_bytes(prefix[1:], "big"))
        elif len(prefix) == 8:
            self._free_standard.append(int.from_bytes(prefix[self.extended_prefix_bytes :], "big"))


def target_for_hashrate(hashrate: float, share_interval_s: float) -> int:
    """Share target at which a device of ``hashrate`` H/s finds one share every ``share_interval_s``."""
    hashes = max(1.0, hashrate * share_interval_s)
    return min(U256_MAX, int(TWO_256 / hashes))


def easiest_target(settings: VardiffSettings) -> int:
    """The share difficulty floor as a target: the harder of ``min_share_difficulty`` and one share per
    ``share_interval_s`` at ``min_hashrate``. No channel's target is ever easier than this."""
    by_difficulty = int((0xFFFF << 240) / settings.min_share_difficulty)
    by_hashrate = target_for_hashrate(settings.min_hashrate, settings.share_interval_s)
    return max(1, min(U256_MAX, by_difficulty, by_hashrate))


def floored_hashrate(declared: float, settings: VardiffSettings) -> float:
    """The hashrate a channel is started (or updated) at: a declared ``nominal_hash_rate`` (0, negative or NaN
    = none declared: ``initial_hashrate``), never below ``min_hashrate``."""
    rate = declared if declared > 0 else settings.initial_hashrate
    return max(rate, settings.min_hashrate)


_BOUNDS: dict[tuple[float, float, float, float], tuple[int, int]] = {}
_LAST_BOUNDS: list[tuple[VardiffSettings, tuple[int, int]] | None] = [None]
#: shared by every Vardiff until it sees a tagged share; never written to (Vardiff.on_share replaces it first)
_NO_WORKERS: dict[str, float] = {}


def _target_bounds(settings: VardiffSettings) -> tuple[int, int]:
    """(easiest, hardest) share target the settings allow, remembered per distinct settings: a flooding channel
    clamps at every share, and the float/int arithmetic was a measurable part of the share path (issue 19).
    The settings of the last call are checked first by identity (they are frozen models: every channel of a
    server shares one), which saves building the key at every share."""
    last = _LAST_BOUNDS[0]
    if last is not None and last[0] is settings:
        return last[1]
    key = (
        settings.min_share_difficulty,
        settings.min_hashrate,
        settings.share_interval_s,
        settings.max_share_difficulty,
    )
    bounds = _BOUNDS.get(key)
    if bounds is None:
        hardest = max(1, int((0xFFFF << 240) / settings.max_share_difficulty))
        bounds = (easiest_target(settings), hardest)
        if len(_BOUNDS) >= 64:  # settings change only on a reload; never grows without bound
            _BOUNDS.clear()
        _BOUNDS[key] = bounds
    _LAST_BOUNDS[0] = (settings, bounds)
    return bounds


class Vardiff:
    """Per-channel difficulty: aim at one share per ``share_interval_s``; retarget at most every
    ``retarget_interval_s`` (sooner if shares flood in), only when the change exceeds ``tolerance``.

    A channel that carries several workers' shares (a proxy tagging each share with its device's identity,
    docs/sv2-ckb.md section 12) is different: each device has its own, harder target at the proxy and the
    channel target is only the easiest any of them may use. There the channel aims at one share per interval
    *per active worker*: its target is the one at which the slowest active worker would share once per
    interval, so every device can get a target that keeps it near the interval (the proxy makes faster ones
    harder), and the channel's share rate is about workers x 1/interval. A worker that went silent for a
    window while still active eases the target (at least 2x), as silence does for a one-device channel.

    A flood (shares > 4x too fast, checked at every share) retargets before the window ends, but its rate is
    measured over the current window *and the previous one*, and it only ever makes the target harder. The
    window restarts at a check, i.e. at a share -- under load often the first share of a backlog the event loop
    delivers at once; measured over the few milliseconds since, the rest of that backlog looked like hundreds
    of shares per second and the target jumped 10x (issue 14: a device's credited work then comes in a few huge
    shares, a lottery). A backlog cannot compress a whole window (flood windows are short: a flood is measured
    back to the start of the last full one); a real flood keeps coming and soon dominates.
    Before the first window ends, the initial target stands in for the previous one.
    """

    #: a worker counts as active this many retarget windows after its last share
    ACTIVE_WINDOWS = 3

    # slotted: one per miner channel (issue 19)
    __slots__ = (
        "_active_count",
        "_active_from",
        "_active_until",
        "_prev_elapsed",
        "_prev_work",
        "_prev_worker_work",
        "_window_shares",
        "_window_start",
        "_window_work",
        "_worker_seen",
        "_worker_work",
        "network_target",
        "settings",
        "target",
    )

    def __init__(self, settings: VardiffSettings, initial_target: int, network_target: int) -> None:
        self.settings = settings
        self.network_target = network_target
        self.target = self._clamp(initial_target)
        self._window_start = time.monotonic()
        self._window_shares = 0
        self._window_work = 0.0
        # the per-worker dicts start as the shared empty _NO_WORKERS (an untagged channel never needs them; on_share
        # makes its own before the first write -- issue 19: memory per idle channel)
        self._worker_work: dict[str, float] = _NO_WORKERS  # this window, per worker identity
        # the previous window, for a flood's rate (measured over both): its length, work and work per worker.
        # Before the first one ends, the initial target stands in for it (a window at one share per interval:
        # the channel's declared or configured rate), so a backlog right after the open is not a flood either.
        self._prev_elapsed = settings.retarget_interval_s
        self._prev_work = settings.retarget_interval_s / settings.share_interval_s * (TWO_256 / self.target)
        self._prev_worker_work: dict[str, float] = _NO_WORKERS
        self._worker_seen: dict[str, float] = _NO_WORKERS  # worker identity -> last share (monotonic)
        # active_workers() remembered: the count holds until _active_until (the first active worker's expiry)
        # unless a worker becomes active; -1: to be counted again. It is asked at every share.
        self._active_count = 0
        self._active_from = 0.0
        self._active_until = 0.0

    def _clamp(self, target: int) -> int:
        easiest, hardest = _target_bounds(self.settings)
        # never harder than the network: every block-solving nonce must also pass as a share
        hardest = max(hardest, self.network_target)
        return max(hardest, min(easiest, target))

    def set_network_target(self, network_target: int) -> int | None:
        self.network_target = network_target
        clamped = self._clamp(self.target)
        if clamped != self.target:
            self.target = clamped
            return clamped
        return None

    def declare(self, target: int) -> int | None:
        """Move to ``target`` (from a miner's UpdateChannel; clamped to the floor and the network) without
        touching the measurement: the window's shares and work, and the workers seen, stay. A declaration
        therefore cannot hide a flood from the next retarget. Returns the new target if it changed."""
        clamped = self._clamp(target)
        if clamped == self.target:
            return None
        self.target = clamped
        return clamped

    def recent_workers(self, now: float | None = None) -> list[str]:
        """Worker identities with a share in the last ``ACTIVE_WINDOWS`` retarget windows (none: untagged)."""
        if not self._worker_seen:
            return []  # an untagged channel: asked at every share while it floods (_flood_target)
        now = time.monotonic() if now is None else now
        horizon = now - self.ACTIVE_WINDOWS * self.settings.retarget_interval_s
        return [worker for worker, seen in self._worker_seen.items() if seen >= horizon]

    def active_workers(self, now: float | None = None) -> int:
        """How many :meth:`recent_workers` (0: an untagged channel). O(1) amortised: counted again only when a
        worker became active (on_share) or the earliest-seen active one may have expired."""
        seen = self._worker_seen
        if not seen:
            return 0
        now = time.monotonic() if now is None else now
        if self._active_count >= 0 and self._active_from <= now < self._active_until:
            return self._active_count
        span = self.ACTIVE_WINDOWS * self.settings.retarget_interval_s
        horizon = now - span
        active = [t for t in seen.values() if t >= horizon]
        self._active_count = len(active)
        self._active_from = now
        # valid while no active worker expires; a worker seen at the same instant as ``now`` expires last
        self._active_until = min(active) + span if active else float("inf")
        return self._active_count

    def on_share(self, now: float | None = None, work: float | None = None, worker: str | None = None) -> int | None:
        """Count an accepted share (``work``: the hashes it was credited, default the channel target's;
        ``worker``: the identity it was tagged with); return a new target when it is time to change."""
        now = time.monotonic() if now is None else now
        self._window_shares += 1
        credited = TWO_256 / self.target if work is None else work
        self._window_work += credited
        if worker is not None:
            if self._worker_work is _NO_WORKERS:
                self._worker_work = {}
            if self._worker_seen is _NO_WORKERS:
                self._worker_seen = {}
            self._worker_work[worker] = self._worker_work.get(worker, 0.0) + credited
            last = self._worker_seen.get(worker)
            self._worker_seen[worker] = now
            if last is None or last < now - self.ACTIVE_WINDOWS * self.settings.retarget_interval_s:
                self._active_count = -1  # a worker became active: count again
        return self.maybe_retarget(now)

    def maybe_retarget(self, now: float | None = None) -> int | None:
        now = time.monotonic() if now is None else now
        elapsed = now - self._window_start
        if elapsed <= 0:
            return None
        interval = self.settings.share_interval_s
        workers = self.active_workers(now)
        expected = elapsed / interval * max(1, workers)
        flood = self._window_shares >= 8 and self._window_shares > 4 * max(expected, 1.0)
        if elapsed < self.settings.retarget_interval_s and not flood:
            return None
        if elapsed < self.settings.retarget_interval_s:
            # a flood: judged over this window and the previous one; only ever harder, else keep measuring.
            # Already within the tolerance of the hardest target allowed, no flood can move it: skip the rate
            # arithmetic (a channel flooding at the ceiling asks this at every share, issue 19)
            if self.target < max(_target_bounds(self.settings)[1], self.network_target) * self.settings.tolerance:
                return None
            new_target = self._clamp(self._flood_target(elapsed, now))
            if self.target / max(1, new_target) < self.settings.tolerance:
                return None
        elif workers:
            new_target = self._clamp(self._per_worker_target(elapsed, now))
        else:
            hashrate = self._window_work / elapsed
            if self._window_shares == 0:
                hashrate = (TWO_256 / self.target) / elapsed / 2  # silence: at least halve the difficulty
            new_target = self._clamp(target_for_hashrate(hashrate, interval))
        if elapsed < self.settings.retarget_interval_s:
            # a flood window is short: the next flood is still measured back to the last full window's start
            self._prev_elapsed += elapsed
            self._prev_work += self._window_work
            if self._worker_work:
                merged = dict(self._prev_worker_work)
                for worker, work in self._worker_work.items():
                    merged[worker] = merged.get(worker, 0.0) + work
                self._prev_worker_work = merged
            self._worker_work = _NO_WORKERS
        else:
            self._prev_elapsed, self._prev_work = elapsed, self._window_work
            self._prev_worker_work, self._worker_work = self._worker_work, _NO_WORKERS
        self._window_start = now
        self._window_shares = 0
        self._window_work = 0.0
        ratio = max(new_target, self.target) / max(1, min(new_target, self.target))
        if ratio < self.settings.tolerance:
            return None
        self.target = new_target
        return new_target

    def _flood_target(self, elapsed: float, now: float) -> int:
        """The target a flood asks for: the rate over the current and the previous window -- on a tagged channel,
        of the slowest *active* worker, whether or not it shared in the current (short) window: a fast device's
        burst must not set the channel to its rate while a slow one is still mining on it."""
        span = self._prev_elapsed + elapsed
        interval = self.settings.share_interval_s
        active = self.recent_workers(now)
        if not active:
            return target_for_hashrate((self._prev_work + self._window_work) / span, interval)
        rates = [(self._prev_worker_work.get(w, 0.0) + self._worker_work.get(w, 0.0)) / span for w in active]
        return target_for_hashrate(min(rates), interval)

    def _per_worker_target(self, elapsed: float, now: float) -> int:
        horizon = now - self.ACTIVE_WINDOWS * self.settings.retarget_interval_s
        for worker, seen in list(self._worker_seen.items()):
            if seen < horizon:
                del self._worker_seen[worker]  # gone: no longer holds the channel's target down
                self._active_count = -1
        rates = [self._worker_work[w] / elapsed for w in self._worker_seen if w in self._worker_work]
        if not rates:
            return min(U256_MAX, self.target * 2)  # every worker silent this window
        target = target_for_hashrate(min(rates), self.settings.share_interval_s)
        if len(rates) < len(self._worker_seen):
            target = max(target, min(U256_MAX, self.target * 2))  # an active worker found nothing: ease
        return target


class ShareResult(StrEnum):
    ACCEPTED = "accepted"
    STALE = "stale-share"
    LOW_DIFFICULTY = "difficulty-too-low"
    DUPLICATE = "duplicate-share"
    UNKNOWN_JOB = "invalid-job-id"


@dataclass
class JobEntry:
    """A job as the share checker sees it. ``seen`` holds the nonce16 of every share accepted for it."""

    job_id: int
    pow_hash: bytes
    network_target: int
    height: int
    parent_hash: bytes
    seen: set[bytes] = field(default_factory=set)


class ShareVerdict(NamedTuple):
    """check_share's answer (a named tuple: one per share, cheaper to make than a frozen dataclass, issue 19)."""

    result: ShareResult
    is_block: bool = False
    difficulty: float = 0.0
    value: int = 0  # Eaglesong output of an accepted share (what it proves: any target >= value)


def check_share(
    job: JobEntry | None,
    current_parent: bytes | None,
    nonce16: bytes,
    share_target: int,
    blake2b: bool,
) -> ShareVerdict:
    """The pool's share rules, in order: known job, not stale, not duplicate, Eaglesong(pow_hash||nonce) <= target.

    A nonce that meets the network target is a block even if it somehow misses the share target.
    """
    if job is None:
        return ShareVerdict(ShareResult.UNKNOWN_JOB)
    if current_parent is not None and job.parent_hash != current_parent:
        return ShareVerdict(ShareResult.STALE)
    if nonce16 in job.seen:
        return ShareVerdict(ShareResult.DUPLICATE)
    value = int.from_bytes(_pow_output(job.pow_hash, nonce16, blake2b), "big")
    is_block = value <= job.network_target
    if value > share_target and not is_block:
        return ShareVerdict(ShareResult.LOW_DIFFICULTY)
    job.seen.add(nonce16)
    return ShareVerdict(ShareResult.ACCEPTED, is_block, target_to_share_difficulty(share_target), value)
