"""Prometheus metrics of the pool, named by Prometheus conventions (units in names, ``_total`` counters).

Labels are low-cardinality on purpose: results and channel types, never workers (per-worker figures live in
Redis and the status endpoint). Each Pool gets its own registry so several can run in one process (tests).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

SHARE_RESULTS = (
    "accepted",
    "stale-share",
    "difficulty-too-low",
    "duplicate-share",
    "invalid-job-id",
    "invalid-channel-id",
)

# ckbpool_stratum_limited_total{reason}: every refusal (or override) by a Stratum V2 abuse limit
LIMIT_MAX_CONNECTIONS = "max-connections"  # pool-wide connection cap, counted at accept
LIMIT_IP_CONNECTIONS = "ip-connections"  # connections from one IPv4 address / IPv6 /64
LIMIT_IP_HANDSHAKE_RATE = "ip-handshake-rate"  # handshakes started per second from one address
LIMIT_IP_HANDSHAKES_IN_PROGRESS = "ip-handshakes-in-progress"  # unfinished handshakes from one address
LIMIT_CHANNELS_PER_CONNECTION = "channels-per-connection"  # OpenMiningChannel.Error too-many-channels
LIMIT_IP_CHANNELS = "ip-channels"  # channels open from one address, all its connections (too-many-channels)
LIMIT_UPDATE_CHANNEL_RATE = "update-channel-rate"  # an UpdateChannel ignored
LIMIT_HASHRATE_FLOOR = "hashrate-floor"  # a declared nominal hashrate below vardiff.min_hashrate, raised to it
LIMIT_FRAME_TOO_LARGE = "frame-too-large"  # a frame header announcing more than stratum.max_frame_bytes
LIMIT_MESSAGE_RATE = "message-rate"  # a connection over its message rate limit (closed)
LIMIT_REASONS = (
    LIMIT_MAX_CONNECTIONS,
    LIMIT_IP_CONNECTIONS,
    LIMIT_IP_HANDSHAKE_RATE,
    LIMIT_IP_HANDSHAKES_IN_PROGRESS,
    LIMIT_CHANNELS_PER_CONNECTION,
    LIMIT_IP_CHANNELS,
    LIMIT_UPDATE_CHANNEL_RATE,
    LIMIT_HASHRATE_FLOOR,
    LIMIT_FRAME_TOO_LARGE,
    LIMIT_MESSAGE_RATE,
)


class PoolMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge("ckbpool_open_connections", "Open Stratum V2 connections", registry=r)
        self.connections_total = Counter(
            "ckbpool_connections_accepted_total", "Stratum V2 connections accepted since start", registry=r
        )
        self.connection_errors_total = Counter(
            "ckbpool_connection_errors_total",
            "Connections closed because of a protocol or handshake error",
            ["reason"],
            registry=r,
        )
        self.stratum_limited_total = Counter(
            "ckbpool_stratum_limited_total",
            "Connections, channels and messages refused, ignored or overridden by a Stratum V2 abuse limit, by limit",
            ["reason"],
            registry=r,
        )
        for reason in LIMIT_REASONS:
            self.stratum_limited_total.labels(reason=reason)
        self.channels = Gauge("ckbpool_open_channels", "Open mining channels", ["type"], registry=r)
        self.shares_total = Counter("ckbpool_shares_total", "Shares received, by result", ["result"], registry=r)
        for result in SHARE_RESULTS:
            self.shares_total.labels(result=result)
        self.share_difficulty_total = Counter(
            "ckbpool_accepted_share_difficulty_total",
            "Sum of the difficulty (btcpool CKB scale, diff-1 = 0xffff << 240) of accepted shares",
            registry=r,
        )
        self.accepted_work_hashes_total = Counter(
            "ckbpool_accepted_work_hashes_total",
            "Expected hashes behind accepted shares (2^256 / share target); rate() of it is the pool hashrate",
            registry=r,
        )
        self.blocks_found_total = Counter(
            "ckbpool_blocks_found_total", "Shares that met the network target", registry=r
        )
        self.blocks_total = Counter("ckbpool_blocks_total", "Submitted blocks by outcome", ["status"], registry=r)
        for status in ("accepted", "stale", "rejected", "pending"):
            self.blocks_total.labels(status=status)
        self.block_submissions_total = Counter(
            "ckbpool_block_submissions_total",
            "Blocks a stratum-only process found and submitted to the node itself, by the node's answer "
            "(the pool's outcome of record is ckbpool_blocks_total, counted by the block maker alone)",
            ["status"],
            registry=r,
        )
        self.block_submit_latency_seconds = Histogram(
            "ckbpool_block_submit_latency_seconds",
            "submit_block round trip for found blocks",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.templates_total = Counter("ckbpool_templates_total", "New templates turned into jobs", registry=r)
        self.template_age_seconds = Gauge(
            "ckbpool_template_age_seconds", "Seconds since the current job's template was received", registry=r
        )
        self.job_height = Gauge("ckbpool_job_height", "Block height of the current job", registry=r)
        self.network_difficulty = Gauge("ckbpool_network_difficulty", "Difficulty of the current job", registry=r)
        self.hashrate = Gauge(
            "ckbpool_hashrate_hashes_per_second", "Pool hashrate estimated from accepted shares (10 min)", registry=r
        )

        self.job_age_seconds = Gauge(
            "ckbpool_job_age_seconds", "Seconds since this stratum server announced its current job", registry=r
        )
        self.template_stale = Gauge(
            "ckbpool_template_stale", "1 while the node's templates lag its own tip (block assembler stuck)", registry=r
        )
        self.blocks_pending = Gauge(
            "ckbpool_blocks_pending", "Found blocks saved on disk whose submission has no outcome yet", registry=r
        )
        # share accounting (the books miners are paid from): read at scrape time from ShareAccounting
        self.accounting_lag_seconds = Gauge(
            "ckbpool_accounting_lag_seconds",
            "Age of the oldest share being written to Redis while a write is pending, else the last batch's "
            "end-to-end delay (share received -> in the books)",
            registry=r,
        )
        self.accounting_up = Gauge(
            "ckbpool_accounting_up",
            "1 while share accounting runs and keeps up (lag within its limit); 0 makes /health fail",
            registry=r,
        )
        self.accounting_share_log_age_seconds = Gauge(
            "ckbpool_accounting_share_log_oldest_age_seconds",
            "Age of the share log's oldest entry (how far back PPLNS can read; trimmed at redis.share_log_keep_s)",
            registry=r,
        )
        # the share log kept by work (ckbpool.pool.accounting.ShareLogTrimmer, one pass a minute)
        self.accounting_share_log_entries = Gauge(
            "ckbpool_accounting_share_log_entries",
            "Accepted shares in the share log (what PPLNS can read; a stream entry holds up to 1,024)",
            registry=r,
        )  # fmt: skip
        self.accounting_share_log_work = Gauge(
            "ckbpool_accounting_share_log_work_hashes",
            "Work (expected hashes) the share log holds, oldest entry to newest",
            registry=r,
        )
        self.accounting_share_log_window_work = Gauge(
            "ckbpool_accounting_share_log_window_work_hashes",
            "One PPLNS window of work: payouts.pplns_n x the node's network difficulty (0 until read)",
            registry=r,
        )
        self.accounting_share_log_window_ratio = Gauge(
            "ckbpool_accounting_share_log_window_ratio",
            "Work the share log holds / one PPLNS window; < 1: a block found now is shared from an incomplete "
            "window (NaN until the difficulty is known)",
            registry=r,
        )
        self.accounting_share_log_trimmed = Gauge(
            "ckbpool_accounting_share_log_trimmed",
            "1 once the share log has lost entries to a trim (by work, time or count), 0 while it holds every "
            "share since it began (a young pool)",
            registry=r,
        )
        self.certificate_expiry = Gauge(
            "ckbpool_pool_certificate_expiry_timestamp_seconds",
            "not_valid_after of the Stratum V2 certificate the pool presents (unix seconds; absent without Noise). "
            "Renew with `ckbpool keys rotate`, then SIGHUP the pool",
            registry=r,
        )
        self.certificate_reloads_total = Counter(
            "ckbpool_pool_certificate_reloads_total",
            "Stratum V2 certificate reloads (SIGHUP) by result (ok, failed: the previous one is kept)",
            ["result"],
            registry=r,
        )
        for result in ("ok", "failed"):
            self.certificate_reloads_total.labels(result=result)
        self.accounting_books_accepted_blocks = Gauge(
            "ckbpool_accounting_books_accepted_blocks",
            "Accepted blocks in the books' latest-blocks list (0: the pool has not mined a block yet)",
            registry=r,
        )

    def track_template_age(self, last_template_at: Callable[[], float]) -> None:
        self.template_age_seconds.set_function(lambda: max(0.0, time.time() - last_template_at()))


class BusCollector:
    """Exposes ``bus.stats()`` at scrape time: spool depth and friends without touching the publish path."""

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "published",
        "consumed",
        "spooled",
        "replayed",
        "ack_timeouts",
        "dead_lettered",
        "decode_errors",
    )
    GAUGES: ClassVar[dict[str, str]] = {
        "spool_depth": "ckbpool_bus_spool_records",
        "spool_bytes": "ckbpool_bus_spool_bytes",
        "in_doubt": "ckbpool_bus_in_doubt_records",
        "block_spool_depth": "ckbpool_bus_block_spool_records",
        "connected": "ckbpool_bus_connected",
    }

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for name in self.COUNTERS:
            if name in stats:
                counter = CounterMetricFamily(f"ckbpool_bus_{name}", f"Bus events {name.replace('_', ' ')}")
                counter.add_metric([], float(stats[name]))
                yield counter
        for key, metric_name in self.GAUGES.items():
            if key in stats:
                gauge = GaugeMetricFamily(metric_name, f"Bus {key.replace('_', ' ')}")
                gauge.add_metric([], float(stats[key]))
                yield gauge


class FunctionCounter:
    """A counter whose value lives elsewhere (e.g. the template watcher's error count), read at scrape time."""

    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        self._name = name
        self._doc = documentation
        self._value = value

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc)
        family.add_metric([], float(self._value()))
        yield family


class HashrateWindow:
    """Sliding-window estimate of hashrate from accepted work (hashes = 2^256 / share target)."""

    def __init__(self, window_s: float = 600.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._started = time.monotonic()

    def add(self, work: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._events.append((now, work))
        self._sum += work
        self._expire(now)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._events and self._events[0][0] < cutoff:
            self._sum -= self._events.popleft()[1]

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._expire(now)
        span = min(self.window_s, max(1.0, now - self._started))
        return max(0.0, self._sum) / span
