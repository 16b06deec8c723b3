"""What a miner submitted and what it was told: one entry per share, for audits that must be exact.

A miner cannot know whether a share it never heard back about was counted: the pool may have published it and
died before the answer went out. The chaos harness (tests/chaos) therefore has each miner connection keep a
journal -- every share's job id, header nonce and answer (``success`` / ``error`` / ``none``) -- and matches
the pool's books against it one share at a time, instead of comparing totals that in-doubt shares blur.

Keys are what the protocol answers by: the SV2 sequence number (a SubmitShares.Success acknowledges every
share still waiting up to its ``last_sequence_number``; errors name one share) or the V1 request id.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["ShareJournal", "SubmittedShare"]

_U32 = 1 << 32
_HALF = 1 << 31


@dataclass(slots=True)
class SubmittedShare:
    key: int  # SV2 sequence number, or V1 request id
    job_id: str
    nonce: int  # the header's u128 nonce (nonce16 read little-endian), as the pool's Share event carries it
    submitted_at: float
    answer: str = "none"  # "success" | "error" | "none" (no answer reached the miner)
    error: str = ""  # the error code, for answer == "error"


@dataclass
class ShareJournal:
    """The shares of one connection, credited to ``user``.``worker``."""

    user: str
    worker: str
    shares: list[SubmittedShare] = field(default_factory=list)
    #: SubmitShares.Success whose new_submits_accepted_count differed from the shares it covered here
    count_mismatches: int = 0
    #: answers naming a share this journal does not wait for (unknown or already answered)
    stray_answers: int = 0
    _waiting: dict[int, SubmittedShare] = field(default_factory=dict, repr=False)

    @property
    def waiting(self) -> int:
        """Shares submitted and not answered yet."""
        return len(self._waiting)

    def submitted(self, key: int, job_id: str, nonce: int) -> None:
        share = SubmittedShare(key, job_id, nonce, time.time())
        self.shares.append(share)
        self._waiting[key] = share

    def success(self, key: int) -> None:
        """One share answered accepted (V1)."""
        share = self._waiting.pop(key, None)
        if share is None:
            self.stray_answers += 1
            return
        share.answer = "success"

    def success_through(self, last_sequence_number: int, count: int) -> None:
        """An SV2 SubmitShares.Success: every share still waiting at or before ``last_sequence_number`` (mod 2^32)
        is accepted; ``count`` is what the pool says that is, checked against the journal."""
        covered = [key for key in self._waiting if (last_sequence_number - key) % _U32 < _HALF]
        for key in covered:
            self._waiting.pop(key).answer = "success"
        if len(covered) != count:
            self.count_mismatches += 1

    def error(self, key: int, code: str) -> None:
        share = self._waiting.pop(key, None)
        if share is None:
            self.stray_answers += 1
            return
        share.answer, share.error = "error", code

    def answers(self) -> Counter[str]:
        return Counter(share.answer for share in self.shares)
