"""Bus payloads: bytes and encode+decode µs per message, protobuf (what Kafka carries) against JSON (the baseline).

Run: ``python benchmarks/bench_bus.py`` (markdown) or ``--json`` (one JSON object, for the ``make bench`` driver).
``run(budget)`` returns the same dict; ``to_markdown(result)`` renders it.

Messages, all built from the real block template of the RFC 0031 test vector (tests/data/rfc0031_vector.json):

- Share: a typical accepted share (u128 nonce, u256 target, user/worker strings).
- JobTemplate, ~2.4 KB: that template as get_block_template returns it (cellbase + one transaction).
- JobTemplate, ~20 KB: the same with 14 more transactions (distinct hashes) — a busy mempool.
- FoundBlock: the complete submit_block JSON built from the small template.
- BlockOutcome: what the block maker reports.

Each codec's figure is the best of three timed repeats of ``Event.from_X(event.to_X())`` (and of each half), so
it includes building the Python dataclass on decode, the work a consumer really does. JSON is stdlib ``json``
with hex strings for big integers and hashes; the ratio column is JSON / protobuf (above 1: protobuf wins).
The in-process bus does neither: it passes the object.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf.internal import api_implementation

from ckbpool.bus.events import BlockOutcome, FoundBlock, JobTemplate, Share

REPO = Path(__file__).resolve().parents[1]
VECTOR = REPO / "tests" / "data" / "rfc0031_vector.json"


def _template(extra_transactions: int) -> dict[str, Any]:
    template: dict[str, Any] = json.loads(VECTOR.read_text())["template"]
    base = template["transactions"][0]
    for i in range(extra_transactions):
        tx = copy.deepcopy(base)
        tx["hash"] = "0x" + hashlib.sha256(f"tx{i}".encode()).hexdigest()
        tx["data"]["inputs"][0]["previous_output"]["tx_hash"] = "0x" + hashlib.sha256(f"in{i}".encode()).hexdigest()
        template["transactions"].append(tx)
    return template


def _block_json(template: dict[str, Any], nonce: int) -> bytes:
    """A submit_block body shaped like the node expects (header + transactions + proposals + extension)."""
    block = {
        "header": {
            "version": template["version"],
            "compact_target": template["compact_target"],
            "timestamp": template["current_time"],
            "number": template["number"],
            "epoch": template["epoch"],
            "parent_hash": template["parent_hash"],
            "transactions_root": "0x" + hashlib.sha256(b"transactions_root").hexdigest(),
            "proposals_hash": "0x" + "00" * 32,
            "extra_hash": "0x" + hashlib.sha256(b"extra_hash").hexdigest(),
            "dao": template["dao"],
            "nonce": hex(nonce),
        },
        "uncles": [],
        "transactions": [template["cellbase"]["data"], *(t["data"] for t in template["transactions"])],
        "proposals": template["proposals"],
    }
    if template.get("extension") is not None:
        block["extension"] = template["extension"]
    return json.dumps(block, separators=(",", ":")).encode()


def messages() -> list[tuple[str, JobTemplate | Share | FoundBlock | BlockOutcome]]:
    now = 1_764_000_000.123456
    nonce = 0x6E43A02F3ED8BB00DEA7F78C_12345678
    block_hash = hashlib.sha256(b"block").digest()
    small, large = _template(0), _template(14)
    return [
        (
            "Share",
            Share(
                server_id="stratum-eu-1",
                channel_id=1042,
                user="ckb1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw4g",
                worker="rig-07",
                job_id=91234,
                height=15_123_456,
                nonce=nonce,
                share_target=(1 << 236) - 1,
                share_difficulty=1_048_576.0,
                accepted=True,
                reason="",
                is_block=False,
                block_hash=b"",
                timestamp=now,
            ),
        ),
        ("JobTemplate, small", JobTemplate(91234, json.dumps(small).encode(), now)),
        ("JobTemplate, large", JobTemplate(91235, json.dumps(large).encode(), now)),
        (
            "FoundBlock",
            FoundBlock(
                "stratum-eu-1",
                91234,
                15_123_456,
                block_hash,
                0x1F,
                _block_json(small, nonce),
                "ckb1qalice",
                "rig-07",
                now,
            ),
        ),
        ("BlockOutcome", BlockOutcome(block_hash, 15_123_456, "accepted", "", now, 18.25, "ckb1qalice", "rig-07")),
    ]


def _best_us(call: Callable[[], object], budget: float) -> float:
    """Microseconds per call: n calibrated to ~budget/3 per repeat, best of 3."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= budget / 30 or n >= 1 << 24:
            break
        n *= 4
    n = max(1, int(n * (budget / 3) / max(elapsed, 1e-9)))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            call()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def _measure(event: Any, budget: float) -> dict[str, Any]:
    cls = type(event)
    proto, js = event.to_proto(), event.to_json()
    assert cls.from_proto(proto) == event and cls.from_json(js) == event
    each = budget / 6
    out: dict[str, Any] = {"proto_bytes": len(proto), "json_bytes": len(js)}
    out["proto_encode_us"] = _best_us(event.to_proto, each)
    out["proto_decode_us"] = _best_us(lambda: cls.from_proto(proto), each)
    out["proto_roundtrip_us"] = _best_us(lambda: cls.from_proto(event.to_proto()), each)
    out["json_encode_us"] = _best_us(event.to_json, each)
    out["json_decode_us"] = _best_us(lambda: cls.from_json(js), each)
    out["json_roundtrip_us"] = _best_us(lambda: cls.from_json(event.to_json()), each)
    out["bytes_ratio"] = len(js) / len(proto)
    out["time_ratio"] = out["json_roundtrip_us"] / out["proto_roundtrip_us"]
    return out


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "protobuf_backend": api_implementation.Type(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def run(budget: float = 0.5) -> dict[str, Any]:
    """Measure every message (about ``budget`` seconds each); rows carry bytes, µs and JSON/protobuf ratios."""
    rows = [{"message": name, **_measure(event, budget)} for name, event in messages()]
    return {
        "benchmark": "bus",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv) if sys.argv and sys.argv[0] else "run()",
        "machine": _machine(),
        "rows": rows,
    }


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Bus payloads, {result['date']}, {m['cores']} cores, {m['cpu']}, Python {m['python']}, "
        f"protobuf backend {m['protobuf_backend']}, load {m['load_average_1m']}",
        "",
        "| message | protobuf bytes | JSON bytes | JSON/pb bytes | pb enc+dec µs | JSON enc+dec µs | JSON/pb time "
        "| pb enc / dec µs | JSON enc / dec µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['message']} | {r['proto_bytes']:,} | {r['json_bytes']:,} | {r['bytes_ratio']:.2f}x "
            f"| {r['proto_roundtrip_us']:.2f} | {r['json_roundtrip_us']:.2f} | {r['time_ratio']:.2f}x "
            f"| {r['proto_encode_us']:.2f} / {r['proto_decode_us']:.2f} "
            f"| {r['json_encode_us']:.2f} / {r['json_decode_us']:.2f} |"
        )
    lines += [
        "",
        "enc+dec = `from_X(to_X(event))` including the dataclass on both ends; ratios are JSON / protobuf, "
        "measured in the same run (above 1x: protobuf is smaller / faster). In-process the bus passes the "
        "object: 0 bytes, no codec.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of markdown")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per message (default 0.5)")
    args = parser.parse_args(argv)
    result = run(budget=args.budget)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
