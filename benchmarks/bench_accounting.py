"""The books: share accounting's own throughput into a real Redis, and the Redis helper the pool benchmark uses.

Issue 15 asks that the accounting consumer (``ckbpool.pool.accounting.ShareAccounting``: one Lua script per
batch, deduplicating on each share's ``(source, seq)`` id) take shares faster than one stratum core produces
them, or the books fall behind a busy server. Measured here, on its own:

* a child process pinned to one CPU builds ``count`` distinct accepted ``Share`` events (100 users with
  mainnet-length addresses x 10 workers, round robin -- so a batch of 8,192 holds only ~8 shares of each
  identity, a hard case for the per-identity sums; one source, seq 1..count: what one stratum server
  publishes) and feeds them to ``ShareAccounting.record`` in batches of ``batch`` (by default the consumer's
  cap, ``redis.max_batch`` = 8,192: what ``run()`` takes from the bus when it is behind; 256, the cap before,
  for comparison), one batch at a time, as ``run()`` does;
* ``redis-server`` (the same binary the tests use) in its own process, pinned to the other CPU, with AOF on:
  ``appendfsync always``, as ``templates/redis.conf.j2`` renders it and as the accounting module's guarantees
  assume, and ``everysec`` (not rendered anywhere: for comparison, what the per-write fsync costs);
* figures: shares/s into the books (wall), the CPU-seconds each side spent per share, hence shares per
  CPU-second of the consumer and of Redis (each one's one-core capacity; the smaller is the ceiling), and a
  check that the books hold exactly ``count`` accepted shares afterwards (and that the same batches applied
  again count zero: the dedup path, timed too).

Baseline in the same run: the stratum figures of ``bench_pool`` (the consumer must exceed them) and, here,
the same batches as a plain ``EVAL`` of an empty script (``return 0`` with the same arguments, built by the
consumer's own ``_batch_args``): what building the arguments and one round trip cost before any counting.

``python -m benchmarks.bench_accounting [--count N] [--users U --workers-per-user W] [--modes always,...]
[--json]`` (``--users 50 --workers-per-user 1``: the pool benchmark's 50 identities, so a batch holds ~160 shares
of each); the consumer child has a hard lifetime (SIGALRM) and Redis is stopped by pid on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# a mainnet address (97 characters), as real users' keys in the books look
ADDRESS = "ckb1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw7qkdnnclfkg59uzn8umtfd2kwxceqxwquc4"


# --------------------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------------------


class RedisUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pin_before_exec(cpu: int) -> Any:
    def pin() -> None:
        if hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {cpu})

    return pin


class RedisProcess:
    """A real ``redis-server`` on a free loopback port, password-protected, AOF on, optionally pinned to a CPU.

    Why its own helper (not ``tests/support/redis.py``): benchmarks run without the test tree on the path, and
    need the process id (CPU accounting from /proc, pinning) and the AOF mode as a parameter."""

    def __init__(self, cpu: int | None = None, appendfsync: str = "everysec") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable("redis-server not found on PATH (apt-get install redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self.appendfsync = appendfsync
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", self.password]
        args += ["--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"), "--save", ""]
        args += ["--appendonly", "yes", "--appendfsync", appendfsync, "--rdbcompression", "no"]  # as rendered
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=None if cpu is None else _pin_before_exec(cpu),  # every redis thread then inherits it
        )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError("redis-server did not listen within 15 s") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """user + system CPU time of redis-server so far: all its threads and its AOF-rewrite children."""
        from .loadgen import process_cpu_seconds

        return process_cpu_seconds(self.pid, children=True)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=30)

    def flush(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join((self.dir / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # this redis-server only, by pid
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _members(client: Any, key: str) -> list[Any]:
    """Members of the ``users`` / ``workers`` index, a sorted set by last share (a plain set in older books)."""
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    if kind == "set":
        return list(client.smembers(key))
    return []


def books_totals(client: Any, user_prefix: str | None = None) -> dict[str, Any]:
    """What the books say: accepted per user (from ``ckbpool:user:*``), per ``user.worker``, the total, and the
    share log's shares (read per share, whatever an entry holds) and entries."""
    from ckbpool.payouts.pplns import read_shares_sync

    users = {(u.decode() if isinstance(u, bytes) else u) for u in _members(client, "ckbpool:users")}
    workers = {(w.decode() if isinstance(w, bytes) else w) for w in _members(client, "ckbpool:workers")}
    per_user = {u: int(client.hget(f"ckbpool:user:{u}", "accepted") or 0) for u in users}
    per_worker = {w: int(client.hget(f"ckbpool:worker:{w}", "accepted") or 0) for w in workers}
    return {
        "users": per_user,
        "workers": per_worker,
        "total": sum(per_user.values()),
        "workers_total": sum(per_worker.values()),
        "sharelog": len(read_shares_sync(client)),
        "sharelog_entries": int(client.xlen("ckbpool:sharelog")),
    }


# --------------------------------------------------------------------------------------------------------
# the consumer child
# --------------------------------------------------------------------------------------------------------


def make_shares(count: int, users: int = 100, workers_per_user: int = 10) -> list[Any]:
    """``count`` accepted Share events of one stratum run: distinct seqs, spread over users x workers."""
    from ckbpool.bus.events import Share

    source = f"bench-{time.time_ns():x}"
    names = [(f"{ADDRESS[:-4]}{u:04d}", f"rig{w:04d}") for u in range(users) for w in range(workers_per_user)]
    now = time.time()
    target = 1 << 226
    shares = []
    for i in range(count):
        user, worker = names[i % len(names)]
        shares.append(
            Share(
                server_id="bench",
                channel_id=1 + i % len(names),
                user=user,
                worker=worker,
                job_id=7,
                height=1_000_000,
                nonce=i,
                share_target=target,
                share_difficulty=float((1 << 256) // target) / 2**32,
                accepted=True,
                reason="",
                is_block=False,
                block_hash=b"",
                timestamp=now + i * 1e-5,
                source=source,
                seq=i + 1,
            )
        )
    return shares


async def _consume(
    url: str, count: int, batch: int, redis_pid: int, users: int = 100, workers_per_user: int = 10
) -> dict[str, Any]:
    from ckbpool.pool.accounting import PREFIX, ShareAccounting, _batch_args, connect_redis

    from .loadgen import cpu_seconds, process_cpu_seconds

    def redis_cpu() -> float:
        return process_cpu_seconds(redis_pid, children=True)

    t_build = time.perf_counter()
    shares = make_shares(count, users, workers_per_user)
    build_s = time.perf_counter() - t_build
    batches = [shares[i : i + batch] for i in range(0, len(shares), batch)]
    client = connect_redis(url, timeout_s=30)
    accounting = ShareAccounting(client, batch=batch)
    out: dict[str, Any] = {"count": count, "batch": batch, "build_s": build_s, "identities": users * workers_per_user}
    try:
        # the floor: one EVAL per batch carrying the same arguments, doing nothing with them
        noop = client.register_script("return 0")

        async def floor_pass() -> None:
            for chunk in batches:
                args: list[Any] = [PREFIX, 1, 1, 0, 1, 1, 1, *_batch_args(chunk)]
                await noop(keys=[], args=args)

        async def record_pass() -> tuple[int, int]:
            counted = duplicates = 0
            for chunk in batches:
                c, d = await accounting.record(chunk)
                counted += c
                duplicates += d
            return counted, duplicates

        for name, fn in (("floor", floor_pass), ("record", record_pass), ("again", record_pass)):
            c0, r0, t0 = cpu_seconds(), redis_cpu(), time.perf_counter()
            got = await fn()
            elapsed = time.perf_counter() - t0
            out[name] = {
                "elapsed": elapsed,
                "rate": count / elapsed,
                "consumer_cpu": cpu_seconds() - c0,
                "redis_cpu": redis_cpu() - r0,
            }
            if got is not None:
                out[name]["counted"], out[name]["duplicates"] = got
    finally:
        await client.aclose()
    return out


def consume_main(args: argparse.Namespace) -> int:
    from .loadgen import child_setup, install_uvloop

    child_setup("accounting", args.cpu, args.max_seconds, 4096)
    install_uvloop(True)
    result = asyncio.run(_consume(args.url, args.count, args.batch, args.redis_pid, args.users, args.workers_per_user))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# --------------------------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------------------------


def _cpus() -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def consumer_run(
    count: int = 200_000,
    batch: int | None = None,
    appendfsync: str = "always",
    users: int = 100,
    workers_per_user: int = 10,
) -> dict[str, Any]:
    """One consumer measurement against a fresh Redis; the books are checked for exactly ``count`` shares.

    ``users`` x ``workers_per_user`` identities, round robin (the pool benchmark's load generator has 50)."""
    if batch is None:
        from ckbpool.pool.accounting import DEFAULT_BATCH

        batch = DEFAULT_BATCH
    consumer_cpu, redis_cpu = _cpus()
    with RedisProcess(redis_cpu, appendfsync) as redis:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-m", "benchmarks.bench_accounting", "--consume", "--url", redis.url]
        cmd += ["--count", str(count), "--batch", str(batch), "--redis-pid", str(redis.pid)]
        cmd += ["--users", str(users), "--workers-per-user", str(workers_per_user)]
        cmd += [] if consumer_cpu is None else ["--cpu", str(consumer_cpu)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"accounting child failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        client = redis.client()
        try:
            books = books_totals(client)
            result["used_memory_mib"] = int(client.info("memory")["used_memory"]) / 2**20
        finally:
            client.close()
        result["books_total"] = books["total"]
        result["books_workers_total"] = books["workers_total"]
        result["books_users"] = len(books["users"])
        result["sharelog"] = books["sharelog"]
        result["sharelog_entries"] = books["sharelog_entries"]
        result["exact"] = (
            books["total"] == count
            and books["workers_total"] == count
            and result["record"].get("counted") == count
            and result["again"].get("counted") == 0
            and result["again"].get("duplicates") == count
            and books["sharelog"] == count
        )
        result["appendfsync"] = appendfsync
        return result


def per_cpu(rate: float, cpu: float, elapsed: float) -> float | None:
    """Shares per CPU-second of a process that used ``cpu`` seconds in ``elapsed`` (its one-core capacity)."""
    if not cpu or cpu != cpu or elapsed <= 0:
        return None
    return rate * elapsed / cpu


def run(
    budget: float = 0.5,
    count: int | None = None,
    users: int = 100,
    workers_per_user: int = 10,
    modes: tuple[str, ...] = ("always", "everysec", "b256"),
) -> dict[str, Any]:
    """The runs ``modes`` names: ``always`` / ``everysec`` (AOF fsync, batches of the consumer's cap) and
    ``b256`` (``always``, batches of 256)."""
    count = count or (50_000 if budget < 0.3 else 200_000)
    out: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    for mode in modes:  # as rendered (templates/redis.conf.j2), then for comparison
        if mode == "b256":
            out[mode] = consumer_run(count, 256, "always", users, workers_per_user)
        else:
            out[mode] = consumer_run(count, None, mode, users, workers_per_user)
    return out


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (what, wall rate, consumer per CPU-s, Redis per CPU-s, note) for the pool benchmark's table."""
    rows = []
    for key in ("always", "everysec", "b256"):
        r = result.get(key)
        if not r:
            continue
        rec, again, floor = r["record"], r["again"], r["floor"]
        rows.append(
            {
                "mode": r["appendfsync"],
                "rate": rec["rate"],
                "consumer_per_cpu": per_cpu(rec["rate"], rec["consumer_cpu"], rec["elapsed"]),
                "redis_per_cpu": per_cpu(rec["rate"], rec["redis_cpu"], rec["elapsed"]),
                "floor_rate": floor["rate"],
                "again_rate": again["rate"],
                "exact": r["exact"],
                "count": r["count"],
                "batch": r["batch"],
                "consumer_cpu_frac": rec["consumer_cpu"] / rec["elapsed"],
                "redis_cpu_frac": rec["redis_cpu"] / rec["elapsed"],
                "memory_mib": r["used_memory_mib"],
            }
        )
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| Redis AOF | shares/s into the books (wall) | per consumer CPU-s | per Redis CPU-s | floor: empty EVAL "
        "of the same batches | same batches again (all duplicates) | books exact |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in summary_rows(result):
        lines.append(
            f"| {row['mode']} | {row['rate']:,.0f} | {_f(row['consumer_per_cpu'])} | {_f(row['redis_per_cpu'])} | "
            f"{row['floor_rate']:,.0f} | {row['again_rate']:,.0f} | "
            f"{'yes' if row['exact'] else 'NO'} ({row['count']:,} shares, batches of {row['batch']}) |"
        )
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--users", type=int, default=100, help="distinct users (x --workers-per-user identities)")
    parser.add_argument("--workers-per-user", type=int, default=10)
    parser.add_argument("--modes", default="always,everysec,b256", help="comma-separated runs: always, everysec, b256")
    parser.add_argument("--consume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=8192, help=argparse.SUPPRESS)
    parser.add_argument("--redis-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        return consume_main(args)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(modes) - {"always", "everysec", "b256"}
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)} (always, everysec, b256)")
    result = run(args.budget, args.count, args.users, args.workers_per_user, modes)
    print(json.dumps(result, indent=2) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
