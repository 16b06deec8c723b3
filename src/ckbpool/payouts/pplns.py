"""PPLNS: who earned a block, from the last N x (network difficulty) of accepted work before it.

Unit of work. The pool credits each accepted share with ``2^256 // share_target`` expected hashes
(:func:`ckbpool.pool.accounting.share_work`), and the node's difficulty is ``2^256 // target``
(:func:`ckbpool.ckb.target.target_to_difficulty`, ckb's ``compact_to_difficulty``): the same unit, so a window of
``N x difficulty`` work is N blocks' worth of expected hashes. A share record that carries ``work`` is read as
that integer; an older record with only ``difficulty`` (btcpool's scale, diff-1 = ``0xffff << 240``) is turned
back into its target and then into work the same way -- exact for whole difficulties, within float rounding
(1e-16 relative) otherwise.

The window. Newest to oldest from the block's find time, shares are added until the window is full; the share
that crosses the boundary counts only for the part that fits, so a complete window weighs exactly
``N x difficulty``. A share log shorter than the window (a young pool, or a share log capped below the window)
gives an **incomplete** window: the block is still shared out, in proportion to the work that exists, and the
window says ``complete=False`` -- the ledger keeps that flag on the block and the tracker logs a warning and
counts it, so an operator sees it (the fix is a larger ``share_log_maxlen``). Paying what exists is better than
paying nobody: every share in it was real work towards the block.

The split is integer-exact: the fee is ``floor(reward x fee_bps / 10000)``; the rest is shared by largest
remainder (each address gets the floor of its exact part, and the shannons left over -- fewer than the number
of addresses -- go one each to the largest fractional parts, ties by address), so the credits add up to the
reward to the shannon, and each one is within one shannon of its exact proportion.

SOLO shares are not pool work. A SOLO miner's jobs pay its own address through the cellbase
(:mod:`ckbpool.pool.solo`), so its shares -- in the share log under the account ``solo:<address>``
(:data:`ckbpool.pool.identity.SOLO_PREFIX`) -- neither count towards a window nor get a part of a PPLNS block:
:func:`window_from_shares` skips them, as if they were not in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import redis.asyncio as aioredis

from ..ckb.target import share_difficulty_to_target
from ..pool.identity import is_solo

log = logging.getLogger(__name__)

SHARELOG_KEY = "ckbpool:sharelog"
DEFAULT_N = 2
#: how far past the find time the reader starts: the stream id is the time accounting wrote the share, which is
#: later than the share's own ``ts`` by the bus and accounting delay (seconds normally; Redis outages longer)
DEFAULT_GRACE_S = 600.0


class ShareLogError(ValueError):
    """A share record that cannot be read (no user, no work): the window would be wrong without it."""


@dataclass(frozen=True)
class ShareRecord:
    """One accepted share as the share log keeps it: the identity credited and its work in hashes."""

    address: str
    work: int
    ts: float
    id: str = ""


@dataclass
class Window:
    """A block's PPLNS window: work per address, summing to ``counted_work`` (== ``target_work`` if complete)."""

    target_work: int
    weights: dict[str, int] = field(default_factory=dict)
    counted_work: int = 0
    shares: int = 0
    complete: bool = False
    oldest_ts: float | None = None
    newest_ts: float | None = None


@dataclass(frozen=True)
class CreditLine:
    address: str
    kind: str  # "share" | "fee"
    amount: int


def window_target(network_difficulty: int, n: int | float = DEFAULT_N) -> int:
    """``N x difficulty`` as an integer (N may be fractional, e.g. 0.5; it is taken exactly)."""
    if network_difficulty <= 0:
        raise ValueError("network difficulty must be positive")
    if n <= 0:
        raise ValueError("N must be positive")
    ratio = Decimal(str(n)).as_integer_ratio()
    return max(1, network_difficulty * ratio[0] // ratio[1])


def window_from_shares(records: Iterable[ShareRecord], target_work: int) -> Window:
    """Fill a window from share records given newest first; stops as soon as it is full. SOLO records
    (``solo:<address>``) are skipped: that work was paid by its own blocks' cellbases, not the pool's."""
    window = Window(target_work=target_work)
    for record in records:
        if record.work <= 0 or is_solo(record.address):
            continue
        take = min(record.work, target_work - window.counted_work)
        window.weights[record.address] = window.weights.get(record.address, 0) + take
        window.counted_work += take
        window.shares += 1
        if window.newest_ts is None:
            window.newest_ts = record.ts
        window.oldest_ts = record.ts
        if window.counted_work >= target_work:
            window.complete = True
            break
    return window


def split_reward(reward: int, weights: Mapping[str, int], fee_bps: int, fee_address: str) -> list[CreditLine]:
    """Share ``reward`` shannons: the fee to ``fee_address``, the rest by weight; sums to ``reward`` exactly.

    With no work at all in the window (nothing to share by), the whole reward goes to ``fee_address`` as fee:
    the pool found the block, nobody else can be credited, and the books still add up."""
    if reward < 0:
        raise ValueError("reward must not be negative")
    if not 0 <= fee_bps <= 10_000:
        raise ValueError("fee_bps must be within 0..10000")
    if any(w < 0 for w in weights.values()):
        raise ValueError("weights must not be negative")
    total = sum(weights.values())
    if total == 0:
        return [CreditLine(fee_address, "fee", reward)] if reward else []
    fee = reward * fee_bps // 10_000
    rest = reward - fee
    parts: list[tuple[str, int, int]] = []
    for address, weight in weights.items():
        if weight == 0:
            continue
        whole, remainder = divmod(rest * weight, total)
        parts.append((address, whole, remainder))
    leftover = rest - sum(whole for _, whole, _ in parts)
    assert 0 <= leftover < max(1, len(parts)), leftover
    order = sorted(range(len(parts)), key=lambda i: (-parts[i][2], parts[i][0]))
    bonus = set(order[:leftover])
    lines = [
        CreditLine(address, "share", whole + (1 if i in bonus else 0)) for i, (address, whole, _) in enumerate(parts)
    ]
    if fee:
        lines.append(CreditLine(fee_address, "fee", fee))
    lines.sort(key=lambda line: (line.address, line.kind))
    return lines


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def record_from_fields(entry_id: str, fields: Mapping[str, str]) -> ShareRecord:
    """One share-log entry -> ShareRecord; ``work`` if present, else derived from ``difficulty`` (see above)."""
    user = fields.get("user", "")
    if not user:
        raise ShareLogError(f"share log entry {entry_id} has no user")
    try:
        if "work" in fields:
            work = int(Decimal(fields["work"]))
        else:
            work = (1 << 256) // share_difficulty_to_target(float(fields["difficulty"]))
        ts = float(fields.get("ts") or int(entry_id.split("-")[0]) / 1000)
    except (KeyError, ValueError, InvalidOperation, ArithmeticError) as exc:
        raise ShareLogError(f"share log entry {entry_id}: {exc!r} in {dict(fields)}") from exc
    return ShareRecord(address=user, work=work, ts=ts, id=fields.get("id", ""))


async def read_window(
    client: aioredis.Redis,
    found_at: float,
    target_work: int,
    *,
    key: str = SHARELOG_KEY,
    page: int = 5000,
    grace_s: float = DEFAULT_GRACE_S,
    max_entries: int = 20_000_000,
) -> Window:
    """Walk the share log newest -> oldest (XREVRANGE in pages of ``page``) from the block's find time and fill
    its window. Entries written up to ``grace_s`` after ``found_at`` are looked at (accounting writes later than
    a share happens) and those whose own ``ts`` is after ``found_at`` are skipped: they belong to the next
    block. ``max_entries`` bounds the walk whatever the stream holds."""
    window = Window(target_work=target_work)
    upper = f"{int((found_at + grace_s) * 1000)}"
    seen = 0
    while seen < max_entries:
        entries = await client.xrevrange(key, max=upper, min="-", count=page)
        if not entries:
            break
        records = []
        for raw_id, raw_fields in entries:
            entry_id = _text(raw_id)
            record = record_from_fields(entry_id, {_text(k): _text(v) for k, v in (raw_fields or {}).items()})
            if record.ts <= found_at:
                records.append(record)
        seen += len(entries)
        part = window_from_shares(records, target_work - window.counted_work)
        for address, work in part.weights.items():
            window.weights[address] = window.weights.get(address, 0) + work
        window.counted_work += part.counted_work
        window.shares += part.shares
        if part.newest_ts is not None and window.newest_ts is None:
            window.newest_ts = part.newest_ts
        if part.oldest_ts is not None:
            window.oldest_ts = part.oldest_ts
        if window.counted_work >= target_work:
            window.complete = True
            break
        if len(entries) < page:
            break
        upper = "(" + _text(entries[-1][0])
    if not window.complete:
        log.warning(
            "pplns: incomplete window for the block found at %.3f: %d of %d work in %d shares (the share log "
            "is shorter than the window; credits follow the work that exists)",
            found_at, window.counted_work, target_work, window.shares,
        )  # fmt: skip
    return window
