"""Eaglesong throughput: C single call, C check_pow, C batch search, pure Python, against a blake2b floor.

Run: ``python benchmarks/bench_eaglesong.py`` (markdown table and ratios) or ``--json`` (one JSON object on
stdout, for the ``make bench`` driver that assembles docs/benchmarks.md). ``run()`` returns the same dict.

What each row measures (all on one thread of this process, all with the same 48-byte PoW message shape):

- C single call: ``pow_output(pow_hash, nonce16)`` from Python: two permutations plus the call overhead.
- C check_pow: the pool's share check, in microseconds per call (hash + target comparison + argument checks).
- C batch search: ``search(..., target=0)`` so no nonce ever hits; one permutation per nonce, since the
  pow_hash block is absorbed once per call. Also with ``blake2b=True`` (testnet) and on every core at once
  (the loop releases the GIL, so threads should scale with free cores).
- pure Python: ``eaglesong_py`` of 48 bytes, the fallback's speed.
- blake2b-256 of 48 bytes through hashlib: a C hash called from Python, the floor a single call can reach.

The machine is shared and noisy, so each figure is the best of three timed repeats, and every C figure is
also given as a ratio against the pure-Python and blake2b baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ckbpool.ckb import eaglesong as es

POW_HASH = hashlib.sha256(b"ckbpool bench_eaglesong").digest()
NONCE16 = bytes(range(16))
MESSAGE = POW_HASH + NONCE16
HARD_TARGET = 1 << 200  # check_pow compares against it; almost no output meets it


def _best_rate(work: Callable[[int], int], budget: float) -> float:
    """Units per second of ``work(n)`` (which does n units and returns how many), best of 3 repeats.

    ``n`` is calibrated so the three repeats together take about ``budget`` seconds.
    """
    n = 1
    while True:
        start = time.perf_counter()
        done = work(n)
        elapsed = time.perf_counter() - start
        if elapsed >= budget / 20 or n >= 1 << 40:
            break
        n *= 4
    n = max(1, int(n * (budget / 3) / max(elapsed, 1e-9)))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        done = work(n)
        elapsed = time.perf_counter() - start
        best = max(best, done / elapsed)
    return best


def _loop(call: Callable[[], object]) -> Callable[[int], int]:
    def work(n: int) -> int:
        for _ in range(n):
            call()
        return n

    return work


def _search_work(blake2b: bool) -> Callable[[int], int]:
    def work(n: int) -> int:
        es.search(POW_HASH, 0, n, 0, blake2b=blake2b)
        return n

    return work


def _threaded_search_work(threads: int) -> Callable[[int], int]:
    """Each thread searches its own n/threads nonces (disjoint prefixes), as a multi-threaded miner would."""

    def work(n: int) -> int:
        share = max(1, n // threads)
        workers = [
            threading.Thread(target=es.search, args=(POW_HASH, 0, share, 0), kwargs={"nonce_prefix": bytes([i])})
            for i in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return share * threads

    return work


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": None if load is None else round(load[0], 2),
    }


def run(budget: float = 0.5) -> dict[str, Any]:
    """Measure every row (about ``budget`` seconds each) and return them with ratios and machine facts."""
    rows: list[dict[str, Any]] = []

    def add(what: str, value: float | None, unit: str, note: str = "") -> float | None:
        rows.append({"what": what, "figure": value, "unit": unit, "note": note})
        return value

    if not es.HAVE_C:
        for what in ("C single call (pow_output, 48 B)", "C check_pow", "C batch search, 1 thread"):
            add(what, None, "n/a", "C extension not built")
        c_single = c_batch = None
    else:
        c_single = add(
            "C single call (pow_output, 48 B)",
            _best_rate(_loop(lambda: es.pow_output(POW_HASH, NONCE16)), budget),
            "hashes/s",
            "2 permutations + Python call",
        )
        check_rate = _best_rate(_loop(lambda: es.check_pow(POW_HASH, NONCE16, HARD_TARGET)), budget)
        add("C check_pow", 1e6 / check_rate, "µs/call", "hash + compare + argument checks")
        c_batch = add(
            "C batch search, 1 thread",
            _best_rate(_search_work(blake2b=False), budget),
            "hashes/s",
            "1 permutation per nonce (midstate)",
        )
        add(
            "C batch search, 1 thread, EaglesongBlake2b",
            _best_rate(_search_work(blake2b=True), budget),
            "hashes/s",
            "testnet: + blake2b-256 per nonce",
        )
        threads = os.cpu_count() or 1
        add(
            f"C batch search, {threads} threads",
            _best_rate(_threaded_search_work(threads), budget),
            "hashes/s",
            "GIL released; shares the cores with whatever else runs",
        )
    python = add(
        "pure Python (eaglesong_py, 48 B)",
        _best_rate(_loop(lambda: es.eaglesong_py(MESSAGE)), budget),
        "hashes/s",
        "the fallback",
    )
    blake2b = add(
        "hashlib.blake2b-256 of 48 B",
        _best_rate(
            _loop(lambda: hashlib.blake2b(MESSAGE, digest_size=32, person=b"ckb-default-hash").digest()),
            budget,
        ),
        "hashes/s",
        "baseline: C hash floor from Python",
    )

    ratios: dict[str, float | None] = {}
    assert python is not None and blake2b is not None
    ratios["C single / pure Python"] = None if c_single is None else c_single / python
    ratios["C batch / pure Python"] = None if c_batch is None else c_batch / python
    ratios["C single / blake2b"] = None if c_single is None else c_single / blake2b
    ratios["C batch / blake2b"] = None if c_batch is None else c_batch / blake2b

    return {
        "benchmark": "eaglesong",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv) if sys.argv and sys.argv[0] else "run()",
        "machine": _machine(),
        "have_c": es.HAVE_C,
        "rows": rows,
        "ratios": ratios,
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "µs/call":
        return f"{value:.2f}"
    return f"{value:,.0f}"


def to_markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        f"Eaglesong, {result['date']}, {machine['cores']} cores, {machine['cpu']}, "
        f"Python {machine['python']}, load {machine['load_average_1m']}",
        "",
        "| what | figure | unit | note |",
        "|---|---:|---|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['what']} | {_fmt(row['figure'], row['unit'])} | {row['unit']} | {row['note']} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    for name, value in result["ratios"].items():
        lines.append(f"| {name} | {'n/a' if value is None else f'{value:,.2f}x'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of markdown")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per measured row (default 0.5)")
    args = parser.parse_args(argv)
    result = run(budget=args.budget)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
