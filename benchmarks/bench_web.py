"""The public API: requests/s on one core for the address page's call, with 10,000 addresses in the books.

Set-up, all real: ``redis-server`` (pinned to one CPU) holding books written by the real ``ShareAccounting``
-- 10,000 mainnet-length addresses x 2 workers, a few shares each, in the current minutes -- and the rollups
run once (``ckbpool.web.books.Rollup``: the per-address worker index the page reads). The pool's public
listener (``ckbpool.web.WebServer``, the same object ``Pool`` starts) runs in a child process pinned to the
other CPU; the load generator (aiohttp, 64 connections) runs in this process.

Figures, each for ``seconds`` of load:

* **baseline**: ``/api/openapi.json`` -- a pre-encoded JSON answer through the same server, routes and
  middleware (rate limit, headers): what serving any answer costs before reading the books;
* **address, uncached**: ``/api/address/{a}`` for a different address each request, cache off
  (``cache_ttl_s = 0``): every answer reads Redis -- one Lua script call per account, the address's PPLNS one
  and its ``solo:`` one in parallel (totals, worker index, each worker's minutes and hours, all inside Redis),
  then the books' block list (LRANGE) -- with at most 32 answers computed at once (``ckbpool.web.app``);
* **address, cached**: the same call for one address with the default 5 s cache: a crowd watching one page;
* **pool overview, uncached**: ``/api/pool`` with the cache off: one Lua script call (the pool's minutes
  and hours), the online counts (two ZCOUNTs, pipelined), the block list (node RPC left out: no node here).

For each: requests/s (wall) and requests per CPU-second of the server process (its one core's capacity, which
does not depend on how fast this load generator is), and the ratio to the baseline.

``python -m benchmarks.bench_web [--seconds S] [--json]``; the server child has a hard lifetime (SIGALRM) and
Redis is stopped by pid on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_accounting import RedisProcess, RedisUnavailable, _cpus, _pin_before_exec

ROOT = Path(__file__).resolve().parents[1]
ADDRESSES = 10_000
WORKERS_PER_ADDRESS = 2
SHARES_PER_WORKER = 3
CONNECTIONS = 64


def _addresses(count: int) -> list[str]:
    from ckbpool.ckb.address import encode_address, secp256k1_lock

    rng = random.Random(7)
    return [encode_address(secp256k1_lock(rng.randbytes(20)), "mainnet") for _ in range(count)]


async def fill_books(url: str, addresses: list[str]) -> dict[str, Any]:
    """Write the books through the real accounting consumer, then run the rollups once."""
    from ckbpool.bus.events import Share
    from ckbpool.pool.accounting import ShareAccounting, connect_redis
    from ckbpool.web.books import Rollup

    client = connect_redis(url, timeout_s=60)
    accounting = ShareAccounting(client)
    now = time.time()
    seq = 0
    batch: list[Share] = []
    started = time.perf_counter()
    for address in addresses:
        for w in range(WORKERS_PER_ADDRESS):
            for _ in range(SHARES_PER_WORKER):
                seq += 1
                batch.append(
                    Share(
                        server_id="s", channel_id=1, user=address, worker=f"rig{w}", job_id=1, height=1, nonce=seq,
                        share_target=1 << 230, share_difficulty=1.0, accepted=True, reason="", is_block=False,
                        block_hash=b"", timestamp=now - 30 + (seq % 30), source="bench", seq=seq,
                    )
                )  # fmt: skip
                if len(batch) >= 2000:
                    await accounting.record(batch)
                    batch = []
    if batch:
        await accounting.record(batch)
    filled_s = time.perf_counter() - started
    rollup = Rollup(client, idle_ttl_s=30 * 86400)
    started = time.perf_counter()
    await rollup.run_once()
    rollup_s = time.perf_counter() - started
    await client.aclose()
    return {"shares": seq, "fill_s": filled_s, "rollup_s": rollup_s}


# -- the server child -----------------------------------------------------------------------------------------
def serve_main(args: argparse.Namespace) -> int:
    """Child: the public listener on a free port; prints the port, serves until stdin closes or SIGALRM."""
    from ckbpool.pool.config import PoolConfig
    from ckbpool.web.app import WebServer

    signal.alarm(int(args.lifetime))
    config = PoolConfig.model_validate(
        {
            "network": "mainnet",
            "redis": {"url": args.redis_url},
            "web": {"enabled": True, "listen_port": 0, "cache_ttl_s": args.cache, "rate_limit_per_s": 1e9,
                    "rate_limit_burst": 1_000_000_000},
        }
    )  # fmt: skip

    async def main() -> None:
        server = WebServer(config)
        # no rollup task: the books do not change during the measurement, and the task's reads would be noise
        server.rollup = None
        await server.start()
        print(server.port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await server.close()

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())
    return 0


class ServerChild:
    def __init__(self, redis_url: str, cache: float, cpu: int | None, lifetime: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_web", "serve", "--redis-url", redis_url, "--cache", str(cache),
             "--lifetime", str(lifetime)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=None if cpu is None else _pin_before_exec(cpu),
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the web server child did not start (printed {line!r})")
        self.port = int(line)

    def cpu_seconds(self) -> float:
        from benchmarks.loadgen import process_cpu_seconds

        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def load(port: int, paths: list[str], seconds: float) -> dict[str, Any]:
    """Keep CONNECTIONS requests in flight for ``seconds``, cycling through ``paths``; count answers."""
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    statuses: dict[int, int] = {}
    done = 0
    deadline = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            path = paths[next(counter) % len(paths)]
            async with session.get(base + path) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            done += 1

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm-up: connections open, first answers
        await asyncio.gather(*(session.get(base + paths[0]) for _ in range(4)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    return {"requests": done, "elapsed_s": elapsed, "statuses": statuses}


def measure(server: ServerChild, redis_server: RedisProcess, paths: list[str], seconds: float) -> dict[str, Any]:
    cpu_before, redis_before = server.cpu_seconds(), redis_server.cpu_seconds()
    result = asyncio.run(load(server.port, paths, seconds))
    cpu = server.cpu_seconds() - cpu_before
    result["server_cpu_s"] = cpu
    result["redis_cpu_us_per_request"] = (redis_server.cpu_seconds() - redis_before) / max(1, result["requests"]) * 1e6
    result["rps"] = result["requests"] / result["elapsed_s"]
    result["per_cpu_s"] = result["requests"] / cpu if cpu > 0 else None
    return result


def run(budget: float = 0.5, seconds: float | None = None) -> dict[str, Any]:
    """``budget`` scales the load time of each figure (0.5 -> 4 s)."""
    seconds = seconds if seconds is not None else max(2.0, 8.0 * budget)
    server_cpu, redis_cpu = _cpus()
    try:
        redis_server = RedisProcess(cpu=redis_cpu)
    except RedisUnavailable as exc:
        return {"error": str(exc)}
    result: dict[str, Any] = {"addresses": ADDRESSES, "workers_per_address": WORKERS_PER_ADDRESS, "seconds": seconds}
    try:
        addresses = _addresses(ADDRESSES)
        result["books"] = asyncio.run(fill_books(redis_server.url, addresses))
        rng = random.Random(11)
        shuffled = rng.sample(addresses, len(addresses))
        figures: dict[str, Any] = {}
        uncached = ServerChild(redis_server.url, 0.0, server_cpu, lifetime=20 * seconds + 60)
        try:
            figures["baseline"] = measure(uncached, redis_server, ["/api/openapi.json"], seconds)
            figures["address_uncached"] = measure(
                uncached, redis_server, [f"/api/address/{a}" for a in shuffled], seconds
            )
            figures["pool_uncached"] = measure(uncached, redis_server, ["/api/pool"], seconds)
        finally:
            uncached.stop()
        cached = ServerChild(redis_server.url, 5.0, server_cpu, lifetime=20 * seconds + 60)
        try:
            figures["address_cached"] = measure(cached, redis_server, [f"/api/address/{addresses[0]}"], seconds)
        finally:
            cached.stop()
        result["figures"] = figures
        result["redis_used_memory"] = redis_server.client().info("memory").get("used_memory")
    finally:
        redis_server.stop()
    return result


LABELS = {
    "baseline": "baseline: static JSON (/api/openapi.json), same server",
    "address_uncached": "address page call, 10k addresses, uncached (a different address each request)",
    "address_cached": "address page call, one address, 5 s cache",
    "pool_uncached": "pool overview, uncached",
}


def to_markdown(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"not run: {result['error']}\n"
    figures = result["figures"]
    base = figures["baseline"]["per_cpu_s"] or 0
    books = result["books"]
    lines = [
        f"{result['addresses']:,} addresses x {result['workers_per_address']} workers in the books "
        f"({books['shares']:,} shares written by ShareAccounting in {books['fill_s']:.1f} s; rollup "
        f"{books['rollup_s'] * 1000:.0f} ms), server pinned to one CPU, Redis to the other, {CONNECTIONS} "
        f"connections, {result['seconds']:.0f} s each.",
        "",
        "| call | requests/s (wall) | requests per server CPU-second | vs baseline | Redis CPU per request "
        "| statuses |",
        "|---|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        f = figures[key]
        per_cpu = f["per_cpu_s"]
        ratio = f"{per_cpu / base:.2f}x" if per_cpu and base else "-"
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(f["statuses"].items()))
        redis_us = f"{f['redis_cpu_us_per_request']:,.0f} us"
        lines.append(f"| {label} | {f['rps']:,.0f} | {per_cpu or 0:,.0f} | {ratio} | {redis_us} | {statuses} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve")
    serve.add_argument("--redis-url", required=True)
    serve.add_argument("--cache", type=float, default=0.0)
    serve.add_argument("--lifetime", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.command == "serve":
        return serve_main(args)
    result = run(seconds=args.seconds)
    print(json.dumps(result, indent=1) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
