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
import math
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


def as_text(value: Any) -> str:
    """A value as redis-py returns it (bytes, or str with decode_responses) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def entry_fields(raw_fields: Any) -> dict[str, str]:
    """A stream entry's fields (or a hash's, from HGETALL) as redis-py returns them (bytes or str, or None) as
    text."""
    return {as_text(k): as_text(v) for k, v in (raw_fields or {}).items()}


def record_from_fields(entry_id: str, fields: Mapping[str, str]) -> ShareRecord:
    """One per-share share-log entry (the format before batched entries) -> ShareRecord; ``work`` if present, else
    derived from ``difficulty`` (see above)."""
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


# -- the two formats of the share log ---------------------------------------------------------------------------
#
# Per-share entries (written before batched entries; a pool upgraded in place keeps them until they are trimmed):
# fields user, worker, ts, id, work, cum (older ones also difficulty, height; the oldest no work, no cum), ID = the
# share's time in ms. Batched entries (ckbpool.pool.accounting, SHARE_LOG_CHUNK shares at most): fields n (shares),
# s (one line per share in the order written, "user\tworker\tts\tsource:seq\twork"; a tab, newline or backslash in
# a name escaped as \t \n \\), work (their sum), cum / ncum / ecum (the log's running sums of work, shares and
# batched entries after this one), ID = the newest share's time in ms as a per-share entry would have had it.
# The readers below take both, share by share, in the order written.

_LINE_FIELDS = ("user", "worker", "ts", "id", "work")
_UNESCAPE = {"t": "\t", "n": "\n", "\\": "\\"}


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        out.append(_UNESCAPE.get(next(chars, ""), "") if c == "\\" else c)
    return "".join(out)


def is_batched(fields: Mapping[Any, Any]) -> bool:
    """A batched entry (many shares in its ``s`` field) rather than a per-share one."""
    return "s" in fields or b"s" in fields


def _lines(entry_id: str, fields: Mapping[str, str]) -> list[list[str]]:
    """A batched entry's share lines, split into their five fields (unescaped), in the order written."""
    text = fields["s"]
    lines = [line.split("\t") for line in text.split("\n")] if text else []
    try:
        expected = int(fields.get("n", len(lines)))
    except ValueError as exc:
        raise ShareLogError(f"share log entry {entry_id}: n = {fields.get('n')!r}") from exc
    if len(lines) != expected or any(len(parts) != 5 for parts in lines):
        raise ShareLogError(f"share log entry {entry_id}: {len(lines)} lines for n = {expected}, or a line without "
                            "5 fields")  # fmt: skip
    if "\\" in text:
        lines = [[_unescape(part) for part in parts] for parts in lines]
    return lines


def entry_records(entry_id: str, fields: Mapping[str, str]) -> list[ShareRecord]:
    """The shares of one share-log entry of either format, in the order written (oldest first)."""
    if "s" not in fields:
        return [record_from_fields(entry_id, fields)]
    records = []
    for user, _worker, ts, share_id, work in _lines(entry_id, fields):
        if not user:
            raise ShareLogError(f"share log entry {entry_id} has a share without a user")
        try:
            records.append(ShareRecord(address=user, work=int(work), ts=float(ts), id=share_id))
        except ValueError as exc:
            raise ShareLogError(f"share log entry {entry_id}: {exc!r}") from exc
    return records


def entry_shares(raw_id: Any, raw_fields: Any) -> list[dict[str, str]]:
    """The shares of one share-log entry (as redis-py returns it, bytes or str) as field dicts, oldest first: a
    per-share entry's own fields, or ``user``, ``worker``, ``ts``, ``id``, ``work`` per line of a batched one."""
    entry_id = as_text(raw_id)
    fields = entry_fields(raw_fields)
    if "s" not in fields:
        return [fields]
    return [dict(zip(_LINE_FIELDS, parts, strict=True)) for parts in _lines(entry_id, fields)]


def entry_size(raw_fields: Any) -> int:
    """How many shares an entry holds (1 for a per-share entry)."""
    fields = raw_fields or {}
    n = fields.get("n", fields.get(b"n")) if is_batched(fields) else None
    return 1 if n is None else int(as_text(n))


def _next_count(entries: list[Any], page: int) -> int:
    """The COUNT of the next XRANGE page: ~``page`` shares by the last page's shares per entry (a page of 5,000
    batched entries would be millions of shares)."""
    shares = sum(entry_size(fields) for _id, fields in entries)
    return max(1, min(page, page * len(entries) // max(1, shares)))


#: the first page's COUNT: a few entries, until their size is known
_FIRST_COUNT = 8


class _SharePages:
    """The paging of :func:`read_shares` / :func:`read_shares_sync`, written once for the async and the sync
    client: :attr:`count` is the next XRANGE page's COUNT (None: done), :meth:`take` takes its entries."""

    def __init__(self, start: str, page: int, max_entries: int) -> None:
        self.out: list[dict[str, str]] = []
        self.lower, self.count = start, _FIRST_COUNT
        self.page, self.left = page, max_entries
        self.done = max_entries <= 0

    def take(self, entries: list[Any]) -> None:
        for raw_id, raw_fields in entries:
            self.out += entry_shares(raw_id, raw_fields)
        self.left -= len(entries)
        if len(entries) < self.count or self.left <= 0:
            self.done = True
            return
        self.lower = "(" + as_text(entries[-1][0])
        self.count = _next_count(entries, self.page)


async def read_shares(
    client: aioredis.Redis, key: str = SHARELOG_KEY, *, start: str = "-", page: int = 5000,
    max_entries: int = 100_000_000,
) -> list[dict[str, str]]:  # fmt: skip
    """Every share in the log from the entry ``start`` on (an XRANGE bound), oldest first, from either format
    (:func:`entry_shares`): what tests, the chaos harness and benchmarks count and compare. Pages of about
    ``page`` shares; ``max_entries`` bounds the walk."""
    pages = _SharePages(start, page, max_entries)
    while not pages.done:
        pages.take(await client.xrange(key, min=pages.lower, max="+", count=pages.count) or [])
    return pages.out


def read_shares_sync(
    client: Any, key: str = SHARELOG_KEY, *, start: str = "-", page: int = 5000, max_entries: int = 100_000_000
) -> list[dict[str, str]]:
    """:func:`read_shares` with a synchronous redis-py client (benchmarks, the chaos harness)."""
    pages = _SharePages(start, page, max_entries)
    while not pages.done:
        pages.take(client.xrange(key, min=pages.lower, max="+", count=pages.count) or [])
    return pages.out


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
    """Walk the share log newest -> oldest (XREVRANGE in pages of about ``page`` shares) from the block's find time
    and fill its window. Shares written up to ``grace_s`` after ``found_at`` are looked at (accounting writes later
    than a share happens) and those whose own ``ts`` is after ``found_at`` are skipped: they belong to the next
    block. ``max_entries`` bounds the walk whatever the stream holds.

    "Written up to" is by the ID each share had as a per-share entry (the running maximum of the shares' clamped
    times), so both formats give the same shares. A batched entry's ID is its newest share's: the entries at or
    before the bound hold only shares at or before it; of the shares after it, only the oldest entry past the
    bound can hold some (every later one starts after that entry, past the bound): its shares from the first up to
    the first whose time (ms) is past the bound (a share's old ID was the running maximum of the times before it,
    and where the +60 s clamp lowered a time, the whole entry's ID was at or below the bound -- see
    :func:`_past_bound`)."""
    window = Window(target_work=target_work)
    upper_ms = int((found_at + grace_s) * 1000)
    pending = await _past_bound(client, key, upper_ms, found_at)
    upper = str(upper_ms)
    count, seen = _FIRST_COUNT, 0
    while seen < max_entries:
        entries = await client.xrevrange(key, max=upper, min="-", count=count) or []
        records, pending = pending, []
        for raw_id, raw_fields in entries:
            for record in reversed(entry_records(as_text(raw_id), entry_fields(raw_fields))):
                if record.ts <= found_at:
                    records.append(record)
        seen += len(entries)
        _add(window, window_from_shares(records, target_work - window.counted_work))
        if window.counted_work >= target_work:
            window.complete = True
            break
        if len(entries) < count:
            break
        upper = "(" + as_text(entries[-1][0])
        count = _next_count(entries, page)
    if not window.complete:
        log.warning(
            "pplns: incomplete window for the block found at %.3f: %d of %d work in %d shares (the share log "
            "is shorter than the window; credits follow the work that exists)",
            found_at, window.counted_work, target_work, window.shares,
        )  # fmt: skip
    return window


async def _past_bound(client: aioredis.Redis, key: str, upper_ms: int, found_at: float) -> list[ShareRecord]:
    """The shares, newest first and at or before ``found_at``, that a batched entry written past ``upper_ms`` holds
    but per-share entries would have had at or before it.

    Per share i of an entry, its per-share ID was ``max(P, U_1..U_i)`` (ms), P the previous entry's ID and
    ``U_j = min(T_j, C)`` (T_j its time, C the consumer's clock + 60 s); the entry's ID E is that of its last
    share. Only the oldest entry past the bound matters (P <= bound for it, and > bound for every later one). With
    E > bound some U_j = E > bound, so C > bound and ``U_j <= bound`` exactly when ``T_j <= bound``: share i was at
    or before the bound when ``T_1..T_i`` all are -- the entry's leading shares up to the first later one."""
    after = await client.xrange(key, min=str(upper_ms + 1), max="+", count=1) or []
    if not after or not is_batched(after[0][1] or {}):
        return []  # none, or a per-share entry: its own ID is past the bound
    raw_id, raw_fields = after[0]
    lead: list[ShareRecord] = []
    for record in entry_records(as_text(raw_id), entry_fields(raw_fields)):
        if math.floor(record.ts * 1000) > upper_ms:
            break
        lead.append(record)
    return [record for record in reversed(lead) if record.ts <= found_at]


def _add(window: Window, part: Window) -> None:
    for address, work in part.weights.items():
        window.weights[address] = window.weights.get(address, 0) + work
    window.counted_work += part.counted_work
    window.shares += part.shares
    if part.newest_ts is not None and window.newest_ts is None:
        window.newest_ts = part.newest_ts
    if part.oldest_ts is not None:
        window.oldest_ts = part.oldest_ts
