"""Payout batch speed (issue 16): build + sign one payment transaction of 1,000 outputs.

- plan: check 1,000 (lock, shannons) outputs against their occupied capacity, choose inputs from 2,000 live cells
  of ~2,000 CKB (the cellbase cells a pool wallet holds), compute size and fee, build the unsigned transaction;
- sign: sighash_all over the whole group (tx hash of ~110 kB of raw transaction, one secp256k1 signature);
- address parsing of the 1,000 recipients (bech32m decode), which the wallet does before planning.

Baselines in the same run: serializing the same signed transaction to molecule bytes (what any sender must do),
and ckb_hash of those bytes (the C hash floor of anything that touches the whole transaction).

PPLNS at a 1M-share window (issue 16's Must show), with the real code of :mod:`ckbpool.payouts.pplns`:

- window + split: ``window_from_shares`` (what ``read_window`` fills each page with) over 1,000,000 in-memory
  ``ShareRecord`` of 10,000 addresses, with a target of ``window_target(difficulty, N=2)`` sized so that exactly
  all 1M shares are in the window, then ``split_reward`` of a block reward over the 10,000 weights (what the ledger
  does at finalization); the split also alone. Baseline in the same run: summing the same 1M works into a dict by
  address in plain Python (the least any split by address must do).
- ``read_window`` from a real ``redis-server`` (``tests/support/redis.py``) whose ``ckbpool:sharelog`` stream holds
  the shares in both formats the readers take: batched entries of ``SHARE_LOG_CHUNK`` shares as the accounting
  script writes them now (n, s = one line per share, work, cum, ncum, ecum), and per-share entries as it wrote them
  before (user, worker, difficulty, height, ts, id, work, cum; a pool upgraded in place still holds some). By
  default ``REDIS_ENTRIES`` = 20,000 shares are read and the 1M figure is extrapolated linearly (pages of ~5,000
  shares); ``--redis-entries 1000000`` measures it (once, on the 2-core box: read_window 2.2 s batched against
  7.5 s per-share, bare XREVRANGE 0.08 s against 3.2 s, 161 against 189 MiB of Redis). Baseline: the same
  ``XREVRANGE`` pages read with redis-py alone, without building the window.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckbpool.ckb.address import encode_address, parse_address, secp256k1_lock
from ckbpool.ckb.hashing import ckb_hash
from ckbpool.ckb.signing import Secp256k1Key
from ckbpool.ckb.structures import CellDep, OutPoint
from ckbpool.ckb.txbuild import SHANNONS_PER_CKB, LiveCell, PaymentOutput, plan_batch, tx_size_in_block
from ckbpool.payouts.pplns import (
    DEFAULT_N,
    SHARELOG_KEY,
    ShareRecord,
    read_window,
    split_reward,
    window_from_shares,
    window_target,
)

OUTPUTS = 1000
KEY = Secp256k1Key(bytes.fromhex("5a" * 32))
DEPS = (CellDep(OutPoint(b"\x22" * 32, 0), 1),)
REPO = Path(__file__).resolve().parents[1]

SHARES = 1_000_000
ADDRESSES = 10_000
REDIS_ENTRIES = 20_000
SHARE_WORK = 1 << 32  # expected hashes of a share at pool difficulty ~1 (2^256 // target)
REWARD = 1_000 * SHANNONS_PER_CKB + 12_345  # a block reward in shannons, not a round number
FEE_BPS = 100


def _timed(fn: Callable[[], object], budget: float, min_calls: int = 3) -> tuple[float, int]:
    """Best seconds per call of ``fn`` over repeats filling about ``budget`` seconds (at least ``min_calls``)."""
    best = float("inf")
    calls = 0
    deadline = time.perf_counter() + budget
    while calls < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        calls += 1
    return best, calls


def _inputs() -> tuple[list[str], list[PaymentOutput], list[LiveCell]]:
    addresses = [encode_address(secp256k1_lock(i.to_bytes(20, "big")), "mainnet") for i in range(1, OUTPUTS + 1)]
    outputs = [
        PaymentOutput(parse_address(a, "mainnet"), 61 * SHANNONS_PER_CKB + 7 * i, a) for i, a in enumerate(addresses)
    ]
    cells = [LiveCell(OutPoint(i.to_bytes(32, "big"), 0), 2000 * SHANNONS_PER_CKB + i, 100 + i, 0) for i in range(2000)]
    return addresses, outputs, cells


def _share_records(addresses: list[str]) -> list[ShareRecord]:
    """SHARES records newest first, one a millisecond, spread evenly over the addresses (7919 is prime to 10,000,
    so consecutive shares are from different addresses), works of 1..4 x SHARE_WORK (vardiff's spread)."""
    count = len(addresses)
    who = [addresses[(i * 7919) % count] for i in range(SHARES)]
    works = [SHARE_WORK * (1 + i % 4) for i in range(SHARES)]
    stamps = [1_700_000_000.0 - i / 1000 for i in range(SHARES)]
    return list(map(ShareRecord, who, works, stamps))


# One share-log entry per i in [ARGV[1], ARGV[2]), as accounting's XADD wrote them before batched entries (same
# fields, same order; a pool upgraded in place still has such entries); ARGV[4..] are the addresses. Entry i's id is
# t0 + i ms, its work (1 + i % 4) x 2^32.
_FILL = """
local n0, n1, t0 = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local na = #ARGV - 3
local cum = 0
for i = n0, n1 - 1 do
  local work = 4294967296 * (1 + i % 4)
  local ms = t0 + i
  cum = cum + work
  redis.call('XADD', KEYS[1], string.format('%.0f', ms) .. '-0', 'user', ARGV[4 + (i * 7919) % na],
    'worker', 'rig' .. (i % 3), 'difficulty', tostring(1 + i % 4), 'height', '123456',
    'ts', string.format('%.3f', ms / 1000), 'id', 'stratum-1:' .. i, 'work', string.format('%.0f', work),
    'cum', string.format('%.17g', cum))
end
return n1
"""


# The same shares as _FILL, as the accounting script writes them now: one entry per chunk of ARGV[4] shares (fields
# n, s = one "user\tworker\tts\tid\twork" line per share, work, cum, ncum, ecum; ID = its newest share's ms);
# ARGV[5..] are the addresses. ARGV[1] is a multiple of the chunk.
_FILL_BATCHED = """
local n0, n1, t0, chunk = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local na = #ARGV - 4
local cum = 0
for c = n0, n1 - 1, chunk do
  local parts, sum, last = {}, 0, math.min(c + chunk, n1) - 1
  for i = c, last do
    local work = 4294967296 * (1 + i % 4)
    sum = sum + work
    parts[#parts + 1] = ARGV[5 + (i * 7919) % na] .. '\\trig' .. (i % 3) .. '\\t' ..
      string.format('%.3f', (t0 + i) / 1000) .. '\\tstratum-1:' .. i .. '\\t' .. string.format('%.0f', work)
  end
  cum = cum + sum
  redis.call('XADD', KEYS[1], string.format('%.0f', t0 + last) .. '-0', 'n', last - c + 1,
    's', table.concat(parts, '\\n'), 'work', string.format('%.17g', sum), 'cum', string.format('%.17g', cum),
    'ncum', last + 1, 'ecum', math.floor(c / chunk) + 1)
end
return n1
"""


def _redis_read(addresses: list[str], entries: int, budget: float, batched: bool = False) -> dict[str, Any]:
    """Fill a real redis-server's share log with ``entries`` shares (per-share entries, or ``batched`` ones of
    ``SHARE_LOG_CHUNK`` shares as accounting writes them now); time ``read_window`` of a window holding exactly all
    of them, and the bare XREVRANGE pages of the same walk (pages of ~5,000 shares)."""
    from ckbpool.pool.accounting import SHARE_LOG_CHUNK

    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    import redis
    import redis.asyncio as aioredis

    from support.redis import RedisServer, RedisUnavailable

    try:
        server = RedisServer()
    except RedisUnavailable as exc:
        return {"skipped": str(exc)}
    t0_ms = 1_700_000_000_000
    target = sum(SHARE_WORK * (1 + i % 4) for i in range(entries))
    found_at = (t0_ms + entries - 1) / 1000
    with server:
        sync = redis.Redis.from_url(server.url)
        fill = sync.register_script(_FILL_BATCHED if batched else _FILL)
        chunk = SHARE_LOG_CHUNK if batched else 1
        start = time.perf_counter()
        step = 100 * 1024  # a multiple of the chunk
        for first in range(0, entries, step):
            extra = [chunk] if batched else []
            fill(keys=[SHARELOG_KEY], args=[first, min(entries, first + step), t0_ms, *extra, *addresses])
        fill_s = time.perf_counter() - start
        stream_entries = int(sync.xlen(SHARELOG_KEY))
        assert stream_entries == -(-entries // chunk)
        memory = int(sync.info("memory")["used_memory"])
        sync.close()
        with asyncio.Runner() as runner:
            client = runner.run(_client(aioredis, server.url))

            def window() -> Any:
                got = runner.run(read_window(client, found_at, target))
                assert got.complete and got.shares == entries and got.counted_work == target, got
                return got

            async def pages() -> int:
                upper, seen, count = "+", 0, max(1, 5000 // chunk)
                while True:
                    part = await client.xrevrange(SHARELOG_KEY, max=upper, min="-", count=count)
                    seen += len(part)
                    if len(part) < count:
                        return seen
                    upper = "(" + part[-1][0].decode()

            read_s, read_calls = _timed(window, budget, 1)
            raw_s, raw_calls = _timed(lambda: runner.run(pages()), budget, 1)
            runner.run(client.aclose())
    return {
        "entries": entries,
        "stream_entries": stream_entries,
        "batched": batched,
        "fill_s": fill_s,
        "memory_bytes": memory,
        "read_s": read_s,
        "read_calls": read_calls,
        "xrevrange_s": raw_s,
        "xrevrange_calls": raw_calls,
    }


async def _client(aioredis: Any, url: str) -> Any:
    return aioredis.Redis.from_url(url)


def _pplns(budget: float, redis_entries: int) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, float]]:
    addresses = [encode_address(secp256k1_lock(i.to_bytes(20, "big")), "mainnet") for i in range(1, ADDRESSES + 1)]
    start = time.perf_counter()
    records = _share_records(addresses)
    setup_s = time.perf_counter() - start
    total_work = sum(record.work for record in records)
    difficulty = total_work // DEFAULT_N  # the network difficulty for which N x difficulty is exactly all 1M shares
    target = window_target(difficulty, DEFAULT_N)
    assert target == total_work
    fee_address = addresses[0]

    sample = window_from_shares(records, target)
    assert sample.complete and sample.shares == SHARES and len(sample.weights) == ADDRESSES, sample.shares
    credits = split_reward(REWARD, sample.weights, FEE_BPS, fee_address)
    assert sum(line.amount for line in credits) == REWARD and len(credits) == ADDRESSES + 1

    def engine() -> Any:
        window = window_from_shares(records, target)
        return split_reward(REWARD, window.weights, FEE_BPS, fee_address)

    def by_address() -> dict[str, int]:
        sums: dict[str, int] = {}
        for record in records:
            sums[record.address] = sums.get(record.address, 0) + record.work
        return sums

    assert by_address() == sample.weights
    rows: list[dict[str, Any]] = []

    def add(what: str, seconds: float, calls: int, note: str) -> float:
        rows.append({"what": what, "ms": seconds * 1e3, "calls": calls, "note": note})
        return seconds

    both = add("PPLNS window + split, 1M shares / 10k addresses", *_timed(engine, budget, 2), "in memory")
    split = add(
        "split_reward alone, 10k weights",
        *_timed(lambda: split_reward(REWARD, sample.weights, FEE_BPS, fee_address), budget),
        "fee + largest remainder",
    )
    base = add("sum 1M works by address (plain dict)", *_timed(by_address, budget, 2), "baseline")
    ratios = {
        "PPLNS window+split / dict sum": both / base,
        "split share of window+split": split / both,
    }
    info: dict[str, Any] = {
        "shares": SHARES,
        "addresses": ADDRESSES,
        "n": DEFAULT_N,
        "window_work": target,
        "records_setup_s": setup_s,
    }
    for batched in (True, False) if redis_entries > 0 else ():
        # batched entries (as written now), then per-share ones (a pool upgraded in place still holds some)
        read = _redis_read(addresses, redis_entries, budget, batched)
        info["redis_batched" if batched else "redis"] = read
        if "read_s" in read:
            form = "batched entries" if batched else "per-share entries"
            scale = SHARES / read["entries"]
            label = f"{read['entries']:,}" if read["entries"] != SHARES else "1M"
            add(
                f"read_window from redis-server, {label} shares in {form}",
                read["read_s"],
                read["read_calls"],
                f"XREVRANGE pages of ~5,000 shares + records + window; fill {read['fill_s']:.2f} s, "
                f"{read['memory_bytes'] / 2**20:,.0f} MiB",
            )
            add(f"XREVRANGE of the same {label} shares ({form})", read["xrevrange_s"], read["xrevrange_calls"],
                "baseline")  # fmt: skip
            if scale != 1:
                rows.append(
                    {
                        "what": f"read_window, 1M shares in {form} (extrapolated x{scale:g})",
                        "ms": read["read_s"] * scale * 1e3,
                        "calls": "-",
                        "note": "linear in shares; --redis-entries 1000000 measures it",
                    }
                )
            tag = " (batched)" if batched else ""
            ratios[f"read_window / bare XREVRANGE{tag}"] = read["read_s"] / read["xrevrange_s"]
            ratios[f"read_window (1M) / in-memory window+split{tag}"] = read["read_s"] * scale / both
    return info, rows, ratios


def run(budget: float = 0.5, redis_entries: int = REDIS_ENTRIES) -> dict[str, Any]:
    addresses, outputs, cells = _inputs()

    def plan() -> Any:
        return plan_batch(outputs, cells, change_lock=KEY.lock, cell_deps=DEPS)

    def build_and_sign() -> Any:
        return KEY.sign_sighash_all(plan().tx)

    sample = plan()
    signed = KEY.sign_sighash_all(sample.tx)
    raw = signed.serialize()
    rows: list[dict[str, Any]] = []

    def add(what: str, seconds: float, calls: int, note: str) -> float:
        rows.append({"what": what, "ms": seconds * 1e3, "calls": calls, "note": note})
        return seconds

    total = add("build + sign, 1,000 outputs", *_timed(build_and_sign, budget), "plan + sighash_all signature")
    planning = add("plan only (inputs, change, fee, unsigned tx)", *_timed(plan, budget), "")
    signing = add("sign only", *_timed(lambda: KEY.sign_sighash_all(sample.tx), budget), "tx hash + 1 signature")
    parse = add(
        "parse 1,000 recipient addresses",
        *_timed(lambda: [parse_address(a, "mainnet") for a in addresses], budget),
        "bech32m",
    )
    serialize = add("serialize the signed tx", *_timed(signed.serialize, budget), "baseline")
    hashing = add("ckb_hash of the tx bytes", *_timed(lambda: ckb_hash(raw), budget), "baseline (C floor)")
    pplns, pplns_rows, pplns_ratios = _pplns(budget, redis_entries)
    rows += pplns_rows
    return {
        "benchmark": "payouts",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "tx": {
            "outputs": OUTPUTS,
            "inputs": len(sample.inputs),
            "size_bytes": tx_size_in_block(signed),
            "fee_shannons": sample.fee,
        },
        "rows": rows,
        "ratios": {
            "build+sign / serialize": total / serialize,
            "build+sign / ckb_hash of the bytes": total / hashing,
            "plan share of build+sign": planning / total,
            "sign share of build+sign": signing / total,
            "address parsing / build+sign": parse / total,
            **pplns_ratios,
        },
        "pplns": pplns,
    }


def to_markdown(result: dict[str, Any]) -> str:
    tx = result["tx"]
    lines = [
        f"One payment transaction: {tx['outputs']} outputs, {tx['inputs']} inputs, {tx['size_bytes']:,} bytes, "
        f"fee {tx['fee_shannons']:,} shannons at 1000 shannons/KB.",
    ]
    pplns = result.get("pplns")
    if pplns:
        lines.append(
            f"PPLNS: a window of N={pplns['n']} x network difficulty holding exactly {pplns['shares']:,} shares of "
            f"{pplns['addresses']:,} addresses (real encoded addresses), split with a {FEE_BPS} bps fee."
        )
        for key in ("redis_batched", "redis"):
            read = pplns.get(key, {})
            if "skipped" in read:
                lines.append(f"read_window from Redis skipped: {read['skipped']}")
            elif read:
                lines.append(
                    f"Redis share log: {read['entries']:,} shares in {read.get('stream_entries', 0):,} entries "
                    f"filled in {read['fill_s']:.2f} s ({read['memory_bytes'] / 2**20:,.0f} MiB used)."
                )
    lines += [
        "",
        "| what | best ms per call | calls | note |",
        "|---|---:|---:|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['what']} | {row['ms']:,.3f} | {row['calls']} | {row['note']} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:,.2f}x |" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--redis-entries", type=int, default=REDIS_ENTRIES, help="0 skips the Redis read")
    args = parser.parse_args()
    result = run(args.budget, args.redis_entries)
    print(json.dumps(result, indent=2) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
