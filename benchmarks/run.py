"""`make bench`: run every benchmark module and write docs/benchmarks.md.

Each module exposes ``run(budget) -> dict`` and ``to_markdown(dict) -> str``; every figure in it comes with a
baseline measured in the same run (see shared design benchmarks.md), so the ratios stay meaningful on a noisy,
shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MODULES = [
    ("Eaglesong", "benchmarks.bench_eaglesong"),
    ("Chain core", "benchmarks.bench_chain"),
    ("Stratum V2 codec and Noise", "benchmarks.bench_sv2"),
    ("Event bus payloads", "benchmarks.bench_bus"),
    (
        "Pool: shares/s (bare, bus, books), accounting, memory per channel, fan-out, block latency",
        "benchmarks.bench_pool",
    ),
    (
        "V1<->V2 translator: V1 shares/s per-worker vs aggregated, bytes per share upstream vs downstream",
        "benchmarks.bench_proxy",
    ),
    ("Kafka bus: shares published over TLS + SASL/SCRAM vs plaintext", "benchmarks.bench_kafka_tls"),
    ("Payouts: PPLNS over 1M shares, a 1,000-output payment built and signed", "benchmarks.bench_payouts"),
    ("Public API: the address page's call at 10k addresses", "benchmarks.bench_web"),
]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--only", nargs="*", help="module names to run (default: all)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # what ran is HEAD only if the code under measurement is clean: say so when it is not (shared working trees)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "src", "benchmarks"], capture_output=True, text=True
    ).stdout.splitlines()
    if commit and dirty:
        commit += f" plus uncommitted changes to {len(dirty)} files under src/ and benchmarks/"
    sections = [
        "# ckbpool benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.run`). Machines here are shared and noisy: read the",
        "ratios against the same-run baselines rather than the absolute figures.",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} cores, {_cpu_model()}, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}",
        f"- commit: {commit or 'unknown'}",
        "",
    ]
    for title, module_name in MODULES:
        if args.only and module_name.rsplit(".", 1)[-1] not in args.only and title not in args.only:
            continue
        start = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            sections += [f"## {title}", "", f"not run: {exc}", ""]
            continue
        print(f"running {module_name} ...", file=sys.stderr)
        result = module.run(budget=args.budget)
        sections += [
            f"## {title}",
            "",
            module.to_markdown(result),
            "",
            f"(took {time.perf_counter() - start:.1f}s)",
            "",
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
