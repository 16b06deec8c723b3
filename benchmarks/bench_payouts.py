"""Payout batch speed (issue 16): build + sign one payment transaction of 1,000 outputs.

- plan: check 1,000 (lock, shannons) outputs against their occupied capacity, choose inputs from 2,000 live cells
  of ~2,000 CKB (the cellbase cells a pool wallet holds), compute size and fee, build the unsigned transaction;
- sign: sighash_all over the whole group (tx hash of ~110 kB of raw transaction, one secp256k1 signature);
- address parsing of the 1,000 recipients (bech32m decode), which the wallet does before planning.

Baselines in the same run: serializing the same signed transaction to molecule bytes (what any sender must do),
and ckb_hash of those bytes (the C hash floor of anything that touches the whole transaction).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from ckbpool.ckb.address import encode_address, parse_address, secp256k1_lock
from ckbpool.ckb.hashing import ckb_hash
from ckbpool.ckb.signing import Secp256k1Key
from ckbpool.ckb.structures import CellDep, OutPoint
from ckbpool.ckb.txbuild import SHANNONS_PER_CKB, LiveCell, PaymentOutput, plan_batch, tx_size_in_block

OUTPUTS = 1000
KEY = Secp256k1Key(bytes.fromhex("5a" * 32))
DEPS = (CellDep(OutPoint(b"\x22" * 32, 0), 1),)


def _timed(fn: Callable[[], object], budget: float) -> tuple[float, int]:
    """Best seconds per call of ``fn`` over repeats filling about ``budget`` seconds (at least 3 calls)."""
    best = float("inf")
    calls = 0
    deadline = time.perf_counter() + budget
    while calls < 3 or time.perf_counter() < deadline:
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


def run(budget: float = 0.5) -> dict[str, Any]:
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
        },
    }


def to_markdown(result: dict[str, Any]) -> str:
    tx = result["tx"]
    lines = [
        f"One payment transaction: {tx['outputs']} outputs, {tx['inputs']} inputs, {tx['size_bytes']:,} bytes, "
        f"fee {tx['fee_shannons']:,} shannons at 1000 shannons/KB.",
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
    args = parser.parse_args()
    result = run(args.budget)
    print(json.dumps(result, indent=2) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
