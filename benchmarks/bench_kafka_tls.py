"""Kafka bus over TLS + SASL/SCRAM vs plaintext: shares/s a stratum server's bus publishes, same run, same broker.

Run: ``python -m benchmarks.bench_kafka_tls`` (markdown) or ``--json``. ``run(budget)`` returns the dict,
``to_markdown(result)`` renders it.

One real Kafka 4.4 KRaft broker (``tests/support/kafka.py``'s ``SecureKafkaBroker``, the jars of
``scripts/kafka-deps.sh``) with two client listeners: ``CLIENT`` (SASL_SSL, SCRAM-SHA-512, the deployment's
PKI from ``ckbpool.deploy.pki`` and its ACLs) and ``PLAIN`` (PLAINTEXT, the baseline). Each window publishes
Share events for a fixed time through a ``KafkaBus`` exactly as ``Pool._publish_share`` does (``await
bus.publish(Topic.SHARES, share)``, acks=all, idempotent producer, 5 ms linger), from ``concurrency`` tasks at
once -- a stratum server's connections each awaiting their own share -- so the figure is the bus's throughput
under the same load the server puts on it. The secured client connects as the ``stratum`` principal (WRITE on
the shares topic only). Windows alternate plain / TLS so drift in the shared machine's load hits both; the
table gives the median window of each, the client process's CPU per share (``time.process_time``: what the
stratum server's process pays for TLS and SASL) and ack latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _share(n: int) -> Any:
    from ckbpool.bus import Share

    return Share(
        server_id="stratum-1", channel_id=n % 1000, user=f"ckb1qbench{n % 97}", worker=f"rig{n % 13}", job_id=1,
        height=15_000_000, nonce=n, share_target=(1 << 236) - 1, share_difficulty=1_048_576.0, accepted=True,
        reason="", is_block=False, block_hash=b"", timestamp=time.time(), source="bench", seq=n,
    )  # fmt: skip


async def _window(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Publish shares for ``seconds`` from ``concurrency`` tasks through a fresh bus; counts only acknowledged
    publishes (an event spooled or refused is an error here: the bus has no spool)."""
    from ckbpool.bus import Topic, create_bus

    bus = create_bus(url)
    await bus.start()
    latencies: list[float] = []
    counter = 0
    try:
        for n in range(200):  # warm-up: connections, metadata, producer id
            await bus.publish(Topic.SHARES, _share(n))
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal counter
            while time.perf_counter() < stop:
                counter += 1
                share = _share(counter)
                t0 = time.perf_counter()
                await bus.publish(Topic.SHARES, share)
                latencies.append(time.perf_counter() - t0)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        stats = bus.stats()
    finally:
        await bus.close()
    if stats["spooled"] or stats["refused"]:
        raise RuntimeError(f"bench window lost events: {stats}")
    latencies.sort()
    done = len(latencies)
    return {
        "shares": done,
        "seconds": wall,
        "shares_per_s": done / wall,
        "cpu_us_per_share": cpu / done * 1e6,
        "p50_ms": latencies[done // 2] * 1000,
        "p99_ms": latencies[min(done - 1, int(done * 0.99))] * 1000,
    }


async def _measure(budget: float, rounds: int, concurrency: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from support.kafka import SecureKafkaBroker

    broker = SecureKafkaBroker(plaintext=True, heap="768m")
    await asyncio.to_thread(broker.start, 90.0)
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        await broker.grant(topic_prefix=prefix)
        common = {"topic_prefix": prefix, "spool_dir": "none", "publish_timeout": "10", "partitions": "3"}
        urls = {
            "plaintext": broker.plain_url(client_id="bench-plain", **common),
            "tls+sasl": broker.url("stratum", client_id="bench-tls", create_topics="0", **common),
        }
        # topics created once, by the admin (the stratum principal may not create them)
        from ckbpool.bus import create_bus
        from ckbpool.bus.kafka import KafkaBus

        admin = create_bus(broker.url("admin", **common))
        assert isinstance(admin, KafkaBus)
        await admin.ensure_topics()
        await admin.close()
        seconds = max(2.0, 12.0 * budget)
        windows: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
        for _ in range(rounds):
            for name, url in urls.items():
                windows[name].append(await _window(url, seconds, concurrency))
    finally:
        await asyncio.to_thread(broker.stop)
    return {"kafka": broker.version, "window_s": seconds, "concurrency": concurrency, "rounds": rounds,
            "windows": windows}  # fmt: skip


def run(budget: float = 0.5, *, rounds: int | None = None, concurrency: int = 256) -> dict[str, Any]:
    rounds = rounds or (2 if budget < 0.3 else 3)
    raw = asyncio.run(_measure(budget, rounds, concurrency))
    summary: dict[str, dict[str, float]] = {}
    for name, ws in raw["windows"].items():
        median = sorted(ws, key=lambda w: w["shares_per_s"])[len(ws) // 2]
        summary[name] = {k: median[k] for k in ("shares_per_s", "cpu_us_per_share", "p50_ms", "p99_ms")}
        summary[name]["spread"] = (max(w["shares_per_s"] for w in ws) - min(w["shares_per_s"] for w in ws)) / max(
            1e-9, statistics.median(w["shares_per_s"] for w in ws)
        )
    plain, tls = summary["plaintext"], summary["tls+sasl"]
    raw["summary"] = summary
    raw["tls_throughput_ratio"] = tls["shares_per_s"] / plain["shares_per_s"]
    raw["tls_cpu_ratio"] = tls["cpu_us_per_share"] / plain["cpu_us_per_share"]
    return raw


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Kafka {result['kafka']} (one KRaft broker, two listeners), {result['concurrency']} concurrent publishers, "
        f"{result['rounds']} alternating windows of {result['window_s']:.0f}s each (median shown; spread = "
        "(max - min) / median of the windows).",
        "",
        "| bus | shares/s | client CPU µs/share | ack p50 ms | ack p99 ms | spread |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["summary"].items():
        lines.append(f"| {name} | {s['shares_per_s']:,.0f} | {s['cpu_us_per_share']:.1f} | {s['p50_ms']:.1f} | "
                     f"{s['p99_ms']:.1f} | {s['spread']:.0%} |")  # fmt: skip
    lines += [
        "",
        f"TLS + SASL/SCRAM keeps {result['tls_throughput_ratio']:.0%} of the plaintext throughput and costs "
        f"{result['tls_cpu_ratio']:.2f}x its client CPU per share.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.budget)
    print(json.dumps(result, indent=2) if args.json else to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
