"""Chain-core speed: ckb_hash throughput and template -> job time, each against a same-run baseline.

- ckb_hash of a 192-byte raw header (the pow_hash a pool computes per template / timestamp refresh), with
  hashlib.sha256 of the same bytes as the baseline (another C hash called from Python).
- template -> job: parse + validate a get_block_template result and build the header, pow_hash and block body,
  for the RFC 0031 vector and a synthetic 200-transaction template; the baseline is json.loads of the same
  template text (the least any consumer of the RPC reply must do).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckbpool.ckb.hashing import ckb_hash
from ckbpool.ckb.structures import Transaction
from ckbpool.ckb.template import BlockTemplate, job_from_template

VECTOR = Path(__file__).resolve().parent.parent / "tests" / "data" / "rfc0031_vector.json"


def _rate(fn: Callable[[], object], budget: float) -> float:
    """Calls per second of ``fn``, best of three repeats of about budget/3 seconds each."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > budget / 30:
            break
        n *= 2
    n = max(1, int(n * budget / 3 / elapsed))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def _big_template(base: dict[str, Any], count: int) -> dict[str, Any]:
    template = copy.deepcopy(base)
    tx0 = template["transactions"][0]
    txs = []
    for i in range(count):
        data = copy.deepcopy(tx0["data"])
        data["inputs"][0]["previous_output"]["index"] = hex(i)
        tx = Transaction.from_json(data, "tx")
        txs.append({**tx0, "data": data, "hash": "0x" + tx.hash().hex()})
    template["transactions"] = txs
    return template


def run(budget: float = 0.5) -> dict[str, Any]:
    vector = json.loads(VECTOR.read_text())["template"]
    raw_header = bytes(range(192))
    rows: list[dict[str, Any]] = []

    def add(what: str, figure: float, unit: str, note: str) -> float:
        rows.append({"what": what, "figure": figure, "unit": unit, "note": note})
        return figure

    ckb = add("ckb_hash of 192 B raw header", _rate(lambda: ckb_hash(raw_header), budget), "hashes/s", "")
    sha = add(
        "hashlib.sha256 of 192 B",
        _rate(lambda: hashlib.sha256(raw_header).digest(), budget),
        "hashes/s",
        "baseline",
    )
    ratios = {"ckb_hash / sha256": ckb / sha}
    for name, template in (
        ("RFC 0031 template (1 tx)", vector),
        ("synthetic template (200 txs)", _big_template(vector, 200)),
    ):
        text = json.dumps(template)
        job_rate = add(
            f"template -> job, {name}",
            _rate(lambda t=text: job_from_template(BlockTemplate.from_json(json.loads(t))), budget),
            "jobs/s",
            "parse, validate hashes, commitments, pow_hash",
        )
        parse_rate = add(f"json.loads, {name}", _rate(lambda t=text: json.loads(t), budget), "parses/s", "baseline")
        rows[-2]["note"] += f"; {1e3 / job_rate:.3f} ms per job"
        ratios[f"template->job time / json.loads time, {name}"] = parse_rate / job_rate
    return {
        "benchmark": "chain",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "rows": rows,
        "ratios": ratios,
    }


def to_markdown(result: dict[str, Any]) -> str:
    lines = ["| what | figure | unit | note |", "|---|---:|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['what']} | {row['figure']:,.0f} | {row['unit']} | {row['note']} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:,.2f}x |" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--budget", type=float, default=0.5)
    args = parser.parse_args()
    result = run(args.budget)
    print(json.dumps(result, indent=2) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
