"""Abuse run "100k distinct worker names" against the books (issue 15, "Must show"), with an honest worker's
shares in the same stream.

What an attacker can do with names: every share names ``<account>.<worker>`` (a channel's identity, or a proxy's
0x0002 / 0x4CCB tag per share), and before issue 15 every name -- even one with only rejected shares -- created
Redis keys that never expired. The run feeds the real accounting consumer (``ShareAccounting``, the production Lua
script) on a real ``redis-server`` (AOF ``appendfsync always``, ``maxmemory`` + ``noeviction``, as rendered)
with three phases of the same length:

1. **baseline**: the honest worker alone (one share per batch slot, as a busy miner would fill batches);
2. **flood**: the honest worker's shares interleaved with 100,000 attacker shares under 100,000 distinct worker
   names that were *accepted* (the worst case: the attacker paid the difficulty floor for each -- at the default
   floor, 1e4 H/s x 10 s, 1e5 hashes a name) and 100,000 more *rejected* ones under other fresh names (free for
   the attacker);
3. **expiry**: the flood's names go idle; with ``idle_ttl_s`` compressed to a few seconds for the run (30 days in
   production) their keys leave Redis and the ``users``/``workers`` sorted sets, and memory comes back.

Figures: honest shares/s counted into the books in the baseline and under the flood (the loss), the batch write
latency (p50/p99) the honest worker's shares saw, Redis ``used_memory`` and key count before / at the peak /
after expiry, bytes per accepted-share name, keys made by the rejected names (must be 0), and this process's RSS.
What it does not cover: the network side (the stratum server's per-share cost and RSS for tagged shares is
``benchmarks.abuse_pool`` / ``bench_pool``); here the books are the resource under attack.

Bounded: fixed share counts, every phase with a deadline, redis-server killed by pid at the end. Loopback only.
``python -m benchmarks.abuse_identity`` prints the markdown section; ``main()`` returns it (about 30-60 s).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.bench_accounting import RedisProcess

NAMES = 100_000
BATCH = 256
HONEST_PER_BATCH = 16  # honest shares in each batch of the flood (the rest: attacker names)
IDLE_TTL_S = 45  # compressed idle TTL of the run (production default: 30 days)
PHASE_DEADLINE_S = 60.0
MAXMEMORY = "1gb"  # the rendered default (ckbpool.yaml redis.maxmemory_mb = 1024)
ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw4gxyzabcdefghijklmnopqrstuvwxyz0123"


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _share(seq: int, user: str, worker: str, *, accepted: bool, source: str) -> Any:
    from ckbpool.bus import Share

    return Share(
        server_id="stratum-1", channel_id=1, user=user, worker=worker, job_id=1, height=1000, nonce=seq,
        share_target=(1 << 256) // 100_000, share_difficulty=1.0, accepted=accepted,
        reason="" if accepted else "difficulty-too-low", is_block=False, block_hash=b"", timestamp=time.time(),
        source=source, seq=seq,
    )  # fmt: skip


@dataclass
class Phase:
    honest: int = 0
    attacker: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def honest_rate(self) -> float:
        return self.honest / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _memory(client: Any) -> tuple[int, int]:
    info = await client.info("memory")
    return int(info["used_memory"]), int(await client.dbsize())


async def _run() -> dict[str, Any]:
    from ckbpool.pool.accounting import PREFIX, ShareAccounting, connect_redis

    out: dict[str, Any] = {}
    with RedisProcess(appendfsync="always") as redis_server:  # as rendered (templates/redis.conf.j2)
        client = connect_redis(redis_server.url, timeout_s=30)
        try:
            await client.config_set("maxmemory", MAXMEMORY)
            await client.config_set("maxmemory-policy", "noeviction")
            acc = ShareAccounting(client, idle_ttl_s=IDLE_TTL_S, batch=BATCH)
            seq = 0

            def honest() -> Any:
                nonlocal seq
                seq += 1
                return _share(seq, ADDRESS, "rig1", accepted=True, source="honest-src")

            async def write(batch: list[Any], phase: Phase) -> None:
                started = time.perf_counter()
                await acc.record(batch)
                phase.latencies_ms.append((time.perf_counter() - started) * 1000)

            # warm-up: the honest worker exists, the script is loaded
            await acc.record([honest() for _ in range(BATCH)])
            out["memory_before"] = await _memory(client)
            out["rss_before_kb"] = _rss_kb()

            # the flood: 100k rejected-only names, then 100k accepted names, honest shares in every batch; the
            # attacker's shares are made batch by batch (this process's RSS is the consumer's, not a 200k list)
            flood = Phase()
            step = BATCH - HONEST_PER_BATCH
            started = time.perf_counter()
            deadline = time.monotonic() + PHASE_DEADLINE_S
            for accepted in (False, True):
                for first in range(1, NAMES + 1, step):
                    if time.monotonic() > deadline:
                        break
                    chunk = [
                        _share(n + (0 if accepted else NAMES), "mallory", f"{'a' if accepted else 'r'}{n}",
                               accepted=accepted, source="attacker-src")
                        for n in range(first, min(first + step, NAMES + 1))
                    ]  # fmt: skip
                    await write(chunk + [honest() for _ in range(HONEST_PER_BATCH)], flood)
                    flood.attacker += len(chunk)
                    flood.honest += HONEST_PER_BATCH
                if not accepted:
                    out["rejected_name_keys"] = len(await client.keys(f"{PREFIX}*mallory*"))
                    out["ignored"] = acc.ignored
            flood.seconds = time.perf_counter() - started
            out["flood"] = flood
            out["memory_peak"] = await _memory(client)
            out["workers_zset_peak"] = int(await client.zcard(f"{PREFIX}workers"))
            out["rss_peak_kb"] = _rss_kb()

            # the same number of shares, honest only, in full batches: the books' throughput without the flood
            base = Phase()
            started = time.perf_counter()
            while base.honest < flood.honest + flood.attacker and time.monotonic() < deadline + PHASE_DEADLINE_S:
                await write([honest() for _ in range(BATCH)], base)
                base.honest += BATCH
            base.seconds = time.perf_counter() - started
            out["baseline"] = base

            # expiry: the flood's names go idle; the honest worker keeps mining (its batches prune the sets)
            wait_until = time.monotonic() + IDLE_TTL_S + 2
            while time.monotonic() < wait_until:
                await acc.record([honest() for _ in range(HONEST_PER_BATCH)])
                await asyncio.sleep(0.5)
            expiry_deadline = time.monotonic() + 20  # Redis' active expiry of 100k keys takes a few cycles
            while time.monotonic() < expiry_deadline:
                await acc.record([honest() for _ in range(HONEST_PER_BATCH)])
                if len(await client.keys(f"{PREFIX}worker:mallory.*")) == 0:
                    break
                await asyncio.sleep(0.5)
            out["memory_after"] = await _memory(client)
            out["workers_zset_after"] = int(await client.zcard(f"{PREFIX}workers"))
            out["attacker_worker_keys_after"] = len(await client.keys(f"{PREFIX}worker:mallory.*"))
            from ckbpool.payouts.pplns import read_shares

            out["sharelog_len"] = len(await read_shares(client))  # shares (an entry holds a batch's chunk)
            out["sharelog_entries"] = int(await client.xlen(f"{PREFIX}sharelog"))
            out["honest_counted"] = int((await acc.worker_stats(ADDRESS, "rig1")).get("accepted", 0))
            out["honest_sent"] = seq
            out["rss_after_kb"] = _rss_kb()
        finally:
            await client.aclose()
    return out


def to_markdown(r: dict[str, Any]) -> str:
    flood: Phase = r["flood"]
    base: Phase = r["baseline"]
    flood_rate = (flood.honest + flood.attacker) / flood.seconds if flood.seconds else 0.0
    loss = max(0.0, 1 - flood_rate / base.honest_rate) if base.honest_rate else 0.0
    mem0, keys0 = r["memory_before"]
    mem1, keys1 = r["memory_peak"]
    mem2, keys2 = r["memory_after"]
    per_name = (mem1 - mem0) / NAMES
    mib = 1 / (1 << 20)
    lines = [
        f"The real accounting script on redis-server (maxmemory {MAXMEMORY}, noeviction, AOF always), "
        f"{os.cpu_count()} shared cores; batches of {BATCH} with {HONEST_PER_BATCH} honest shares each during the "
        f"flood; idle TTL compressed to {IDLE_TTL_S} s (production: 30 days).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| attacker shares written | {flood.attacker:,} ({NAMES:,} accepted names + {NAMES:,} rejected names) |",
        f"| flood duration (must stay under the idle TTL for the peak to be whole) | {flood.seconds:.1f} s |",
        f"| books throughput, shares/s: honest only → flood (same batch size) | {base.honest_rate:,.0f} → "
        f"{flood_rate:,.0f} ({loss:.0%} slower per share with 100k fresh names) |",
        f"| honest shares/s into the books during the flood (flood written as fast as Redis takes it) | "
        f"{flood.honest_rate:,.0f} (one share per 10 s per device: ~{flood.honest_rate * 10:,.0f} devices' worth) |",
        f"| batch write latency p50 / p99: honest only → flood | {base.pct(0.5):.1f} / {base.pct(0.99):.1f} ms → "
        f"{flood.pct(0.5):.1f} / {flood.pct(0.99):.1f} ms |",
        f"| honest shares counted / sent | {r['honest_counted']:,} / {r['honest_sent']:,} |",
        f"| keys created by the {NAMES:,} rejected-only names | {r['rejected_name_keys']} "
        f"(ignored shares: {r['ignored']:,}) |",
        f"| Redis used_memory: before → peak → after expiry (after: + the honest-only phase's log entries) | "
        f"{mem0 * mib:.1f} → {mem1 * mib:.1f} → {mem2 * mib:.1f} MiB |",
        f"| Redis keys: before → peak → after expiry | {keys0:,} → {keys1:,} → {keys2:,} |",
        f"| bytes per accepted-share name (hashes, set member, dedup mark, bucket field, log entry) | "
        f"{per_name:,.0f} |",
        f"| `workers` sorted set: peak → after expiry | {r['workers_zset_peak']:,} → {r['workers_zset_after']:,} |",
        f"| attacker worker hashes left after expiry | {r['attacker_worker_keys_after']:,} |",
        f"| share log shares (time-trimmed, 7 days: the flood's accepted shares stay in it) | {r['sharelog_len']:,} "
        f"in {r.get('sharelog_entries', 0):,} entries |",
        f"| accounting process RSS: before → peak → after | {r['rss_before_kb'] / 1024:.0f} → "
        f"{r['rss_peak_kb'] / 1024:.0f} → {r['rss_after_kb'] / 1024:.0f} MiB |",
        "",
        f"At {per_name:,.0f} bytes a name, the rendered 1 GiB maxmemory holds ~{(1 << 30) / max(per_name, 1):,.0f} "
        "live names; each costs the attacker an accepted share at the difficulty floor, and a name it stops using "
        "is gone after the idle TTL. Rejected shares cost nothing and leave nothing. What stays for the share "
        "log's 7 days is the log entry (~220 bytes per accepted share, named or not), and for dedup_ttl_s (7 days) "
        "the name's exactly-once mark (~100-200 bytes): that is the memory left after expiry.",
    ]
    return "\n".join(lines) + "\n"


def main() -> str:
    """Run the abuse (about 30-60 s) and return the markdown section."""
    return to_markdown(asyncio.run(_run()))


if __name__ == "__main__":
    print(main())
