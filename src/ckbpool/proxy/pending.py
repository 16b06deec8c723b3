"""Shares forwarded upstream and waiting for the pool's verdict, by SV2 sequence number.

The pool answers each *rejected* share at once with ``SubmitShares.Error(sequence_number)`` and acknowledges
accepted ones in batches with ``SubmitShares.Success(last_sequence_number, count)``. It judges a channel's
shares in the order they arrive, so a Success covers every still-waiting share up to its last sequence number.
Sequence numbers are U32 and wrap; "up to" is judged in modular arithmetic (a window of 2^31).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["PendingShare", "PendingShares"]

_U32 = 1 << 32
_HALF = 1 << 31


@dataclass(slots=True)
class PendingShare:
    """``owner`` is whoever waits (a V1 connection, a getwork request); ``request_id`` its request."""

    sequence_number: int
    owner: Any
    request_id: Any
    worker: str
    target: int  # the share target it met (credited at this difficulty)
    sent_at: float
    is_block: bool = False


class PendingShares:
    """Insertion-ordered (= sequence-ordered) registry of shares awaiting a verdict."""

    def __init__(self) -> None:
        self._next = 0
        self._items: dict[int, PendingShare] = {}

    def __len__(self) -> int:
        return len(self._items)

    def next_sequence_number(self) -> int:
        self._next = (self._next + 1) % _U32
        return self._next

    def add(self, share: PendingShare) -> None:
        self._items[share.sequence_number] = share

    def reject(self, sequence_number: int) -> PendingShare | None:
        return self._items.pop(sequence_number, None)

    def accept_through(self, last_sequence_number: int) -> list[PendingShare]:
        """Every waiting share whose sequence number is at or before ``last_sequence_number`` (mod 2^32)."""
        done: list[PendingShare] = []
        items = self._items
        for seq in list(items):
            if (last_sequence_number - seq) % _U32 >= _HALF:
                break
            done.append(items.pop(seq))
        return done

    def drain(self) -> list[PendingShare]:
        """Everything still waiting (the upstream connection is gone: no verdict will come)."""
        done = list(self._items.values())
        self._items.clear()
        return done

    def expire(self, max_age_s: float, now: float | None = None) -> list[PendingShare]:
        """Shares waiting longer than ``max_age_s`` (a pool that never answers them)."""
        now = time.monotonic() if now is None else now
        done: list[PendingShare] = []
        items = self._items
        for seq in list(items):
            if now - items[seq].sent_at < max_age_s:
                break
            done.append(items.pop(seq))
        return done

    def __iter__(self) -> Iterator[PendingShare]:
        return iter(self._items.values())
