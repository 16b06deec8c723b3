"""Stratum worker processes under ``benchmarks/bench_pool.py`` (issue 19): the ``--serve procs-<N>`` child.

It runs the real parent ``Pool`` with ``stratum.workers = N`` (``ckbpool.pool.procs``): N stratum processes on
one port, the parent's IPC hub in front of the in-process bus, and -- given a Redis URL -- exactly-once
accounting in the parent, as ``ckbpool pool run`` wires them. Jobs are the benchmark's fixed jobs (the RFC 0031
template with an impossible network target, each on its own parent), published as JobTemplate events the way
the job maker does, so each new one is a new tip fanned out by every worker. It answers the same control
commands as the single-process child (``stats``, ``settle``, ``rss``, ``job``), summed over the processes: the
workers' accepted shares from their one-second reports, CPU and RSS from /proc for every process of the group
(the parent's CPU also apart: the hub and accounting's part of a share). ``settle`` waits until every live
worker reported, after the load stopped, nothing queued for its link, the hub received every share event the
workers made, and accounting wrote them: only then are the books compared with the Successes. The fan-out rows
add the group's CPU per channel over the rounds (the workers fan out on their own, after ``job`` returned).

Not pinned: the workers must be free to use every core (the load generator still takes its own).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["serve_procs"]


def _proc_cpu(pid: int) -> float:
    """utime + stime of a worker or the parent so far; 0 once it is gone (a killed worker's share is its
    successor's)."""
    from .loadgen import process_cpu_seconds

    seconds = process_cpu_seconds(pid)
    return 0.0 if math.isnan(seconds) else seconds


def _proc_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _templates(count: int) -> list[bytes]:
    from .pool_baseline import IMPOSSIBLE_COMPACT, VECTOR

    raw = json.loads(VECTOR.read_text())["template"]
    parent = bytes.fromhex(raw["parent_hash"][2:])
    out = []
    for i in range(count):
        variant = dict(
            raw,
            compact_target=hex(IMPOSSIBLE_COMPACT),
            parent_hash="0x" + ((i + 1).to_bytes(4, "big") + parent[4:]).hex(),
        )
        out.append(json.dumps(variant, separators=(",", ":")).encode())
    return out


async def serve_procs(args: argparse.Namespace, info: dict[str, Any], config: Any) -> None:
    """The ``--serve procs-<N>`` child: ``config`` is the single-process share benchmark's configuration."""
    import asyncio
    import os

    from ckbpool.bus import JobTemplate, Topic
    from ckbpool.bus.inproc import InProcBus
    from ckbpool.bus.ipc import IpcHub
    from ckbpool.pool.service import Pool

    from .loadgen import control_loop
    from .pool_baseline import test_credentials

    workers = int(args.serve.partition("-")[2] or "2")
    data_dir = Path(tempfile.mkdtemp(prefix="bench-procs-"))
    roles = ["stratum", "accounting"] if args.redis_url else ["stratum"]
    update: dict[str, Any] = {
        "roles": tuple(roles),
        "stratum": config.stratum.model_copy(update={"workers": workers}),
        "blocks": config.blocks.model_copy(update={"data_dir": data_dir, "fsync": False}),
        "http": config.http.model_copy(update={"listen_port": 0}),
    }
    if args.redis_url:
        redis = config.redis.model_copy(update={"url": args.redis_url})
        if args.accounting_batch and "max_batch" in type(config.redis).model_fields:
            redis = redis.model_copy(update={"max_batch": args.accounting_batch})
        update["redis"] = redis
    pool = Pool(config.model_copy(update=update), credentials=test_credentials())
    await pool.start()
    processes = pool.stratum_processes
    assert processes is not None and isinstance(pool.bus, IpcHub)
    hub = pool.bus
    inner = hub.inner
    templates = _templates(64)
    job_id = 1
    await hub.publish(Topic.TEMPLATES, JobTemplate(job_id, templates[0], time.time()))
    info |= {"port": processes.port, "rss": 0}

    def pids() -> list[int]:
        return [os.getpid()] + [p.pid for p in processes.processes if p is not None and p.returncode is None]

    info["rss"] = sum(_proc_rss(pid) for pid in pids())

    def accepted() -> float:
        total = 0.0
        for report in processes.live_reports():
            for family in report.get("metrics", []):
                if family["name"] == "ckbpool_shares":
                    total += sum(
                        v
                        for name, labels, v in family["samples"]
                        if labels.get("result") == "accepted" and name.endswith("_total")
                    )
        return total

    def worker_shares(since: float) -> tuple[int, int, bool]:
        """Share events the live workers made, how many wait for their links, and whether every live worker
        reported after ``since`` (time.monotonic)."""
        made = queued = 0
        fresh = True
        wall_since = time.time() - (time.monotonic() - since)
        for index in range(workers):
            link = hub.links.get(f"stratum-worker-{index}")
            if link is None or link.closed.is_set():
                continue
            shares = link.stats.get("shares", {})
            made += int(shares.get("published", 0))
            queued += int(shares.get("queued", 0))
            fresh = fresh and link.stats_at > wall_since
        return made, queued, fresh

    def backlog() -> int:
        return inner.backlog(Topic.SHARES, "accounting") if isinstance(inner, InProcBus) else -1

    profiler: Any = None

    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        nonlocal job_id, profiler
        cmd = req["cmd"]
        accounting = pool.accounting
        if cmd == "hello":
            return dict(info)
        if cmd == "stats":
            rows = processes.rows()
            return {
                "sessions": sum(r["connections"] for r in rows),
                "channels": sum(r["channels"] for r in rows),
                "accepted": accepted(),
                "published": hub.received,
                "written": accounting.written if accounting is not None else 0,
                "duplicates": accounting.duplicates if accounting is not None else 0,
                "redis_errors": accounting.errors if accounting is not None else 0,
                "backlog": backlog(),
                "cpu": sum(_proc_cpu(pid) for pid in pids()),
                # the parent (hub, accounting) apart from the workers: which side a share's CPU is spent on
                "cpu_parent": _proc_cpu(os.getpid()),
                "rss": sum(_proc_rss(pid) for pid in pids()),
                "per_worker": [r["connections"] for r in rows],
                "t": time.monotonic(),
            }
        if cmd == "settle":
            # the books are compared once every share a worker made is in them: each worker's report says how many
            # share events it made and how many still wait for its link (a report is at most a second old, so
            # one taken after the load stopped and showing nothing queued is final), and accounting has written
            # as many as the hub received, with nothing left on the parent's bus
            deadline = time.monotonic() + float(req.get("deadline", 60))
            t0 = time.monotonic()
            while accounting is not None and time.monotonic() < deadline:
                await asyncio.sleep(1.2)
                made, queued, fresh = worker_shares(t0)
                if (
                    fresh
                    and queued == 0
                    and hub.received >= made
                    and accounting.written + accounting.duplicates >= hub.received
                    and backlog() == 0
                ):
                    break
            return {
                "published": hub.received,
                "written": accounting.written if accounting is not None else 0,
                "duplicates": accounting.duplicates if accounting is not None else 0,
                "queued": backlog(),
                "settle_s": time.monotonic() - t0,
            }
        if cmd == "rss":
            return {
                "rss": sum(_proc_rss(pid) for pid in pids()),
                "sessions": sum(r["connections"] for r in processes.rows()),
            }
        if cmd == "job":
            job_id += 1
            t0 = time.monotonic()
            await hub.publish(Topic.TEMPLATES, JobTemplate(job_id, templates[job_id % len(templates)], time.time()))
            return {"t0": t0, "t1": time.monotonic(), "cpu": float("nan"), "gc": 0.0, "gcs": 0}
        if cmd == "profile_start":  # the parent only (hub + accounting); the workers: --profile (py-spy)
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            return {}
        if cmd == "profile_stop":
            from .bench_pool import _profile_top

            return {"top": _profile_top(profiler, int(req.get("top", 10)))}
        raise ValueError(f"unknown command {cmd!r}")

    try:
        await control_loop(handle)
    finally:
        await pool.close()


def _us(result: dict[str, Any], key: str = "server_cpu") -> float:
    """CPU (cores, ``key``) of a share run per accepted share, in µs."""
    rate = result.get("server_accepted_rate") or 0.0
    return float(result.get(key, 0.0)) / rate * 1e6 if rate else float("nan")


def cpu_bound(one: dict[str, Any], two: dict[str, Any]) -> tuple[float, float, float]:
    """What each run would do with its cores saturated, from its CPU per share (robust to a noisy box, where the
    wall rates are not): ``procs-2`` on the 2 cores it shares with redis-server and the load generator, the
    pinned one-worker server on its core. Returns (2-worker shares/s, 1-worker shares/s, µs per share on the 2
    cores)."""
    box = _us(two) + _us(two, "redis_cpu") + _us(two, "loadgen_cpu")
    return 2e6 / box, 1e6 / _us(one), box


def median_pair(
    pairs: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], list[float], bool] | None:
    """Of alternated (1 worker, 2 workers) share runs, the pair whose wall ratio is the median (the lower middle
    one of an even count), every complete pair's ratio in run order, and whether every 2-worker run's books were
    exact (a row showing one pair must not hide another's lost share); None if no pair completed."""
    done = [
        (p["books"], p["procs-2"], p["procs-2"]["rate"] / p["books"]["rate"])
        for p in pairs
        if p.get("books") and p.get("procs-2") and p["books"].get("rate") and p["procs-2"].get("rate")
    ]
    if not done:
        return None
    ranked = sorted(done, key=lambda d: d[2])
    one, two, _ = ranked[(len(ranked) - 1) // 2]
    return one, two, [d[2] for d in done], all(bool(d[1].get("books_exact")) for d in done)


def worker_rows(raw: dict[str, Any], row: Any) -> list[dict[str, Any]]:
    """bench_pool's rows for the worker processes: shares/s with 2 workers vs 1 (both with bus + exact books,
    same run), and fan-out new template -> last channel across the workers."""
    rows: list[dict[str, Any]] = []
    one = (raw.get("shares") or {}).get("books")  # one process (stratum.workers = 1), bus + books, same run
    two = (raw.get("workers") or {}).get("procs-2")
    pairs_note = ""
    pair = median_pair((raw.get("workers") or {}).get("pairs") or [])
    if pair is not None:
        one, two, ratios, exact = pair
        if len(ratios) > 1:
            pairs_note = (
                f"the pair of runs (1 worker, then 2) with the median ratio of {len(ratios)} alternated pairs: "
                + ", ".join(f"{r:.2f}x" for r in ratios)
                + f" (books exact in every 2-worker run: {exact}); "
            )
    if two:
        rate = two.get("server_accepted_rate") or 0.0
        per_share = two.get("server_cpu", 0) / rate * 1e6 if rate else float("nan")
        parent = two.get("parent_cpu", 0) / rate * 1e6 if rate else float("nan")
        note = pairs_note + (
            f"books exact: {two.get('books_exact')} ({two.get('books_total', 0):,} in the books, "
            f"{two.get('answered_total', 0):,} answered Success); errors {two.get('errors')}; server CPU "
            f"{two.get('server_cpu', 0):.2f} cores (parent {two.get('parent_cpu', 0):.2f}), "
            f"{per_share:.1f} µs per share ({parent:.1f} in the parent); into the books during the window "
            f"{two.get('books_rate', 0):,.0f}/s (published {two.get('published_rate', 0):,.0f}/s), Redis errors "
            f"{two.get('redis_errors', 0)}; load generator CPU {two.get('loadgen_cpu', 0):.2f}"
        )
        rows.append(
            row(
                "shares/s, 2 stratum workers + bus + exact books (vs 1 worker, same run)",
                two["rate"],
                "shares/s",
                one["rate"] if one else None,
                ">= 1.7x",
                (two["rate"] / one["rate"] >= 1.7) if one and one.get("rate") else None,
                note,
            )
        )
        if one and one.get("server_accepted_rate") and rate:
            bound_two, bound_one, box = cpu_bound(one, two)
            rows.append(
                row(
                    "shares/s, 2 stratum workers + bus + exact books vs 1 worker, CPU-bound (from CPU per share)",
                    bound_two,
                    "shares/s",
                    bound_one,
                    "",
                    None,
                    f"2 cores / ({box:.1f} µs per share: workers + parent {_us(two):.1f}, redis-server "
                    f"{_us(two, 'redis_cpu'):.1f}, load generator {_us(two, 'loadgen_cpu'):.1f}) vs 1 core / "
                    f"{_us(one):.1f} µs per share of the pinned one-worker server (its redis-server and load "
                    "generator run on the other core): the noise-robust comparison of the row above",
                )
            )
    conns = raw.get("procs_conns") or {}
    for size, entry in sorted((conns.get("sizes") or {}).items(), key=lambda kv: int(kv[0])):
        fan = entry.get("fanout")
        if not fan:
            continue
        n = int(size)
        target = "< 5" if n <= 100 else "< 100"
        rows.append(
            row(
                f"fan-out p99 new template -> channel, 2 workers @ {n:,} channels",
                fan["p99"],
                "ms",
                None,
                target,
                fan["p99"] < (5 if n <= 100 else 100),
                f"last channel median {fan['last_p50']:.1f} ms, max {fan['last_max']:.1f} ms; missing {fan['missing']}",
            )
        )
        if fan.get("cpu_us_per_channel") is not None:
            rows.append(
                row(
                    f"fan-out CPU per channel, 2 workers @ {n:,} channels",
                    fan["cpu_us_per_channel"],
                    "µs",
                    None,
                    "",
                    None,
                    "process CPU (parent + workers) over all rounds / (rounds x channels): the noise-robust comparison",
                )
            )
    rows += _whole_pool_rss_rows(raw, conns, row)
    return rows


def _whole_pool_rss_rows(raw: dict[str, Any], conns: dict[str, Any], row: Any) -> list[dict[str, Any]]:
    """Issue 19's memory goal on the whole pool: parent + 2 workers' RSS (summed from /proc; shared library pages
    counted once per process, so on the high side) per idle encrypted channel at each size measured, and at 50k
    extrapolated from the largest one with the processes' fixed cost included. Baseline: the one-process server at
    the same size, same run."""
    from .bench_pool import RSS_50K_BYTES, RSS_PER_CHANNEL_KIB

    rows: list[dict[str, Any]] = []
    single = (raw.get("pool_conns") or {}).get("sizes") or {}
    measured = [(int(k), v) for k, v in (conns.get("sizes") or {}).items() if "rss" in v]
    for n, entry in sorted(measured):
        base = single.get(str(n), {})
        rows.append(
            row(
                f"RSS per idle encrypted channel, whole pool (parent + 2 workers) @ {entry['server_sessions']:,}",
                entry["rss_per_conn"] / 1024,
                "KiB",
                base["rss_per_conn"] / 1024 if "rss" in base else None,
                "≤ 10.8 (528 MB / 50k, issue 19)",
                entry["rss_per_conn"] / 1024 <= RSS_PER_CHANNEL_KIB,
                f"total {entry['rss'] / 2**20:,.0f} MiB, of which {conns['rss0'] / 2**20:,.0f} MiB before the "
                f"first connection (parent + workers); baseline: the one-process server at {n:,}",
            )
        )
    if measured:
        n, entry = max(measured)
        total = conns["rss0"] + entry["rss_per_conn"] * 50_000
        rows.append(
            row(
                "whole pool RSS at 50k idle channels, parent + 2 workers (extrapolated)",
                total / 2**20,
                "MiB",
                None,
                "≤ 503.5 (528 MB)",
                total <= RSS_50K_BYTES,
                f"fixed {conns['rss0'] / 2**20:,.0f} MiB + 50,000 x the slope measured at "
                f"{entry['server_sessions']:,} connections",
            )
        )
    return rows


def main() -> int:
    """Only the share runs this module is about, in one go: the decrypt+ack floor, one process + bus + exact books,
    and ``procs-2`` (2 workers + bus + exact books), each as bench_pool runs them (same pinning, same load)::

        python -m benchmarks.bench_pool_workers [--window 10] [--profile DIR] [--cprofile 3]

    ``--cprofile S``: after each books window, S seconds of cProfile in the server process (for ``procs-2``: the
    parent, i.e. the IPC hub and accounting); ``--profile DIR``: py-spy of the server during the window (every
    worker too). Prints one line per run and the µs per share on each side."""
    import os
    import sys

    from .bench_pool import Settings, share_run

    parser = argparse.ArgumentParser(description=(main.__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--cprofile", type=float, default=0.0)
    parser.add_argument("--kinds", default="baseline,books,procs-2")
    args = parser.parse_args()
    s = Settings(share_measure_s=args.window, profile_dir=args.profile, cprofile_s=args.cprofile)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for i, kind in enumerate(args.kinds.split(",")):
        result = share_run(kind, s, 60 + i)
        results[kind] = result
        rate = result.get("server_accepted_rate") or 0.0
        per = result["server_cpu"] / rate * 1e6 if rate else float("nan")
        parent = result.get("parent_cpu", 0.0) / rate * 1e6 if rate else float("nan")
        redis = result.get("redis_cpu", 0.0) / rate * 1e6 if rate else float("nan")
        print(
            f"{kind}: {result['rate']:,.0f} shares/s; server CPU {result['server_cpu']:.2f} ({per:.1f} us/share, "
            f"parent {parent:.1f}); redis {redis:.1f} us/share; loadgen {result['loadgen_cpu']:.2f}; "
            f"books exact {result.get('books_exact')}; errors {result['errors']}",
            flush=True,
        )
        for entry in result.get("cprofile") or []:
            print(f"    {entry['tottime_s']:7.3f} {entry['calls']:>9} {entry['function']} <- {entry.get('caller', '')}")
    one, two, floor = results.get("books"), results.get("procs-2"), results.get("baseline")

    # wall ratios hold on a quiet box only; on a shared one the CPU per share is the figure (issue 19's ratios
    # from it: a core's worth of the pinned server, and the 2 cores' worth of everything procs-2 runs on them)
    if one and two:
        print(f"procs-2 / books, wall: {two['rate'] / one['rate']:.2f}x (goal 1.7x)")
        bound_two, bound_one, box = cpu_bound(one, two)
        print(
            f"procs-2 / books, CPU-bound on 2 cores: {bound_two:,.0f}/s (workers + parent + redis + loadgen "
            f"{box:.1f} us/share) vs {bound_one:,.0f}/s (server core {_us(one):.1f} us/share) = "
            f"{bound_two / bound_one:.2f}x"
        )
    if one and floor:
        print(f"books / floor, wall: {one['rate'] / floor['rate']:.2f}x (goal 0.3x)")
        per_floor, per_one = _us(floor), _us(one)
        print(f"books / floor, per server CPU-second: {per_floor / per_one:.2f}x ({per_floor:.1f} vs {per_one:.1f} us)")
    print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
