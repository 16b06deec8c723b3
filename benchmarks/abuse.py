"""`make abuse`: the abuse runs of issue 15, each while an honest miner keeps mining; writes docs/abuse.md.

Each module exposes ``main() -> str`` (a markdown section with its numbers and the same-run baseline of the
honest miner's share rate). They are not part of `make bench` because they measure the pool's *limits* (what an
attacker gets, what the honest miner loses, how far RSS grows), not its speed, and they are not tests because the
figures are reported rather than asserted (the integration tests check that each limit refuses what it must).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import subprocess
import time
from pathlib import Path

MODULES = [
    (
        "Stratum V2: tiny declared hashrate, 1,000 channels on one connection, 5,000 half-open handshakes, "
        "100k distinct worker names",
        "benchmarks.abuse_pool",
    ),
    (
        "Identities: 100k distinct worker names, the books alone (accepted names written straight in)",
        "benchmarks.abuse_identity",
    ),
    ("V1 proxy: 60k idle sockets", "benchmarks.abuse_proxy"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs/abuse.md"))
    parser.add_argument("--only", nargs="*", help="module names to run (default: all)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    sections = [
        "# ckbpool abuse runs",
        "",
        "Written by `make abuse` (`python -m benchmarks.abuse`). Each run keeps an honest miner mining and compares",
        "its accepted-share rate with a same-run baseline without the abuse (the issue's bar: at most 10 % loss).",
        "",
        f"- date: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}",
        f"- commit: {commit or 'unknown'}",
        "",
    ]
    for title, module_name in MODULES:
        if args.only and module_name.rsplit(".", 1)[-1] not in args.only:
            continue
        print(f"== {title}", flush=True)
        started = time.monotonic()
        section = importlib.import_module(module_name).main()
        sections += [f"## {title}", "", section.strip(), "", f"(took {time.monotonic() - started:.0f}s)", ""]
    args.out.write_text("\n".join(sections))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
