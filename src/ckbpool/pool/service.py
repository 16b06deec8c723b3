"""The pool as one object: wires node, bus, template watcher, Stratum V2 server, block maker, accounting,
metrics and the status endpoint according to the roles this process runs.

Embedded (all roles, in-process bus): the watcher feeds the server directly and the server submits blocks
directly — no hop on the latency path. Distributed: each role talks to the others only through the bus, with
one exception: found blocks.

Found blocks, on every topology: the process that finds a block (the one running the stratum server) writes it
to its own ``blocks.data_dir`` (fsync of file and directory) before anything else, then submits it to the node
itself and publishes the FoundBlock event -- both at once, the submission never waiting for the bus. So a
stratum server in the Kafka topology is given the node's RPC URL (``node.rpc_url``; the rendered configs give it
to every role): a block found while Kafka is down reaches the node in milliseconds, not when Kafka is back. The
event goes on the bus's block lane, which never queues behind spooled shares (``ckbpool.bus.kafka``), and is
retried until the bus takes it; a block whose event the bus never took, or whose submission never got an
answer, is finished at the next start from the finder's own disk. The block maker remains the one recorder of
outcomes (metrics ``ckbpool_blocks_total``, /status ``last_blocks``, the BlockOutcome event, the books): it
receives every FoundBlock, submits it too (harmless: ckb answers a known block with its hash), classifies it
and reports it once per block hash (``ckbpool.pool.blocks``). A stratum-only process counts its own direct
submissions separately (``ckbpool_block_submissions_total``, /status ``found_blocks``), so nothing is counted
twice across processes. Each process needs its own ``blocks.data_dir``.

Stratum workers (``stratum.workers`` > 1, ``ckbpool.pool.procs``): this process keeps every role but stratum and
its bus becomes an IPC hub (``ckbpool.bus.ipc``) around the configured one; the stratum role runs in N worker
processes on one port, each a stratum-only Pool (``worker_index``) whose bus is the link to this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import time
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bus import create_bus
from ..bus.base import Bus, BusClosed, Topic
from ..bus.events import BlockOutcome, FoundBlock, JobTemplate, Share
from ..bus.inproc import InProcBus
from ..bus.ipc import IpcBus, IpcHub
from ..ckb.rpc import CkbRpcClient, NodeTransport
from ..ckb.target import target_to_difficulty
from ..ckb.template import BlockTemplate, job_from_template
from ..retry import Backoff, retry
from ..sv2.certs import Certificate, CertificateError, CertificateExpired
from ..sv2.keys import decode_secret_key
from ..sv2.noise import ResponderCredentials
from .blocks import BlockMaker, BlockRecord, BlockStore
from .config import PoolConfig
from .metrics import BusCollector, FunctionCounter, PoolMetrics
from .procs import MergedMetrics, StratumProcesses, worker_count
from .stratum import StratumServer, server_stats
from .workers import WorkerBook

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..web.app import WebServer
    from .accounting import ShareAccounting, ShareLogTrimmer
    from .status import MetricsSource, StatusServer
    from .templates import NewJob, TemplateWatcher

# The accounting, job maker, status and web modules (Redis, aiohttp and the web app's models with them) are imported
# where their role starts, not here: a stratum worker (ckbpool.pool.procs) runs none of them, and importing them
# anyway was ~16 MiB of each worker's RSS (81 -> 65 MiB running; issue 19's memory goal counts every process).

log = logging.getLogger(__name__)


def load_credentials(static_key_file: Path, certificate_file: Path) -> ResponderCredentials:
    """The pool's Noise identity from the files `ckbpool init` (or ``python -m ckbpool.sv2.keys``) wrote."""
    secret = decode_secret_key(static_key_file.read_text(encoding="ascii"))
    certificate = Certificate.from_hex(certificate_file.read_text(encoding="ascii").strip())
    return ResponderCredentials.from_certificate(secret, certificate)


#: a found block's event is retried until the bus takes it (the block itself is on disk and submitted already)
ANNOUNCE_RETRY = Backoff(initial=0.1, maximum=2.0, jitter=0.1)


def _retry_announce(exc: Exception) -> bool:
    if isinstance(exc, BusClosed):
        return False
    log.warning("the bus cannot take a found block (%r); retrying", exc)
    return True


#: the collector's thresholds of a process on the share path (CPython's default: 700, 10, 10)
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Collect young objects every 50,000 allocations instead of 700 (and the older generations as rarely as
    before, relative to that), for a process that handles shares.

    Why (issue 19): a ``Share`` is a tuple *subclass*, and CPython untracks only exact tuples of atomic values,
    so every share stays under the collector until it is freed; with the default thresholds a share queued for a
    few thousand allocations (a batch on its way to Redis) is traversed by several young collections and then
    promoted into the old generation, whose full collections traverse every share still queued. Measured on the
    parent's path (IPC decode -> in-process bus -> accounting's arguments, 8,192-share batches): 2.8 -> 1.8 us
    per share, the collector's part 0.8-1.0 -> ~0.0 us. A share now dies young, before any collection sees it.
    Cyclic garbage waits a little longer (at most ~10M allocations for a full collection, seconds at full load)."""
    if gc.get_threshold() != GC_THRESHOLDS:
        gc.set_threshold(*GC_THRESHOLDS)


class Pool:
    """The services of one process. ``bus``: use this bus instead of ``bus.url``'s; ``worker_index``: this Pool is
    stratum worker ``worker_index`` of a parent Pool (``ckbpool.pool.procs``: no HTTP endpoints of its own)."""

    def __init__(
        self,
        config: PoolConfig,
        *,
        credentials: ResponderCredentials | None = None,
        bus: Bus | None = None,
        worker_index: int | None = None,
    ) -> None:
        self.config = config
        self.roles = set(config.roles)
        self.worker_index = worker_index
        if credentials is None and config.stratum.noise and "stratum" in self.roles:
            s = config.stratum
            if s.static_key_file is None or s.certificate_file is None:
                raise ValueError("stratum.static_key_file and stratum.certificate_file are required (encryption is on)")
            credentials = load_credentials(s.static_key_file, s.certificate_file)
        self.credentials = credentials
        self.metrics = PoolMetrics()
        self._export_certificate_expiry()
        self.rpc = CkbRpcClient.from_settings(config.node, retries=2)
        self.bus: Bus = bus if bus is not None else create_bus(config.bus.url)
        # stratum.workers > 1: the stratum role runs in worker processes this parent supervises
        self.stratum_processes: StratumProcesses | None = self._plan_stratum_processes()
        self.server: StratumServer | None = None
        self.watcher: TemplateWatcher | None = None
        self.block_maker: BlockMaker | None = None  # the recorder of outcomes (blockmaker role)
        self.finder: BlockMaker | None = None  # persists and submits the blocks this process finds (stratum role)
        self.accounting: ShareAccounting | None = None
        self.share_log_trimmer: ShareLogTrimmer | None = None  # keeps the share log to the work PPLNS needs
        self.status_server: StatusServer | None = None
        self.web_server: WebServer | None = None  # the public page + API ([web], off by default)
        self.recent_blocks: list[BlockOutcome] = []
        # per user and worker, the shares this process's stratum server published (/status "users")
        self.workers = WorkerBook()
        self._tasks: list[asyncio.Task[Any]] = []
        self._accounting_task: asyncio.Task[Any] | None = None
        self._redis: aioredis.Redis | None = None
        self.started_at = time.time()

    # -- lifecycle --------------------------------------------------------------------------------
    def reload_credentials(self) -> bool:
        """Re-read ``stratum.static_key_file`` / ``certificate_file`` (SIGHUP after ``ckbpool keys rotate``).

        New handshakes use the new certificate at once; connected miners keep their session (the certificate is
        only checked in the handshake), so nobody is dropped and a miner reconnects at most once, whenever it
        would anyway. A file that does not load keeps the current credentials (logged, counted)."""
        s = self.config.stratum
        if s.static_key_file is None or s.certificate_file is None or not s.noise:
            return False
        try:
            credentials = load_credentials(s.static_key_file, s.certificate_file)
            certificate = credentials.certificate
            if certificate is not None and certificate.not_valid_after < time.time():
                raise CertificateExpired(
                    f"the certificate in {s.certificate_file} expired at {certificate.not_valid_after}"
                )
        except (OSError, ValueError, CertificateError) as exc:
            self.metrics.certificate_reloads_total.labels(result="failed").inc()
            log.error("certificate reload failed, keeping the current one: %s", exc)
            return False
        self.credentials = credentials
        if self.server is not None:
            self.server.credentials = credentials
        self._export_certificate_expiry()
        if self.stratum_processes is not None:
            self.stratum_processes.signal_all(signal.SIGHUP)  # each worker reloads the files itself
        self.metrics.certificate_reloads_total.labels(result="ok").inc()
        log.info("reloaded the pool certificate: %s", credentials.certificate)
        return True

    def _export_certificate_expiry(self) -> None:
        certificate = self.credentials.certificate if self.credentials is not None else None
        if certificate is not None:
            self.metrics.certificate_expiry.set(certificate.not_valid_after)

    async def start(self) -> None:
        cfg = self.config
        if "stratum" in self.roles or "accounting" in self.roles:
            tune_gc()
        await self.bus.start()
        if "blockmaker" in self.roles or "stratum" in self.roles:
            # one store per process: the block maker's records double as the finder's when it runs both roles
            maker = BlockMaker(
                self.rpc,
                BlockStore(cfg.blocks.data_dir, fsync=cfg.blocks.fsync),
                retries=cfg.blocks.submit_retries,
                on_outcome=self._on_outcome if "blockmaker" in self.roles else self._on_finder_outcome,
            )
            if "blockmaker" in self.roles:
                self.block_maker = maker
            if "stratum" in self.roles:
                self.finder = maker
            await asyncio.to_thread(maker.load)  # read the store once, off the event loop
            # blocks left without an outcome or an announcement by the last run, from this process's own disk
            for record in maker.unannounced() if self.finder is not None else []:
                self._spawn(self._announce(record))
            self._spawn(maker.replay_pending())
            self._spawn(maker.keep_resubmitting())
        if "accounting" in self.roles and cfg.redis.url:
            from .accounting import ShareAccounting, ShareLogTrimmer, node_difficulty
            from .redis_conn import redis_from_settings

            self._redis = redis_from_settings(cfg.redis)
            self.accounting = ShareAccounting.from_settings(self._redis, cfg.redis)
            shares = self.bus.subscribe(Topic.SHARES, "accounting", manual_ack=True)
            self._accounting_task = self._spawn(self.accounting.run(shares))
            # a task of its own (not the consumer's): its node RPC must never delay a batch of shares
            self.share_log_trimmer = ShareLogTrimmer.from_settings(
                self._redis, cfg.redis, node_difficulty(self.rpc), pplns_n=cfg.payouts.pplns_n
            )
            self._spawn(self.share_log_trimmer.run())
            if "blockmaker" not in self.roles:
                self._spawn(self._record_outcomes(self.bus.subscribe(Topic.BLOCK_OUTCOMES, "accounting")))
        if self.block_maker is not None:
            # every FoundBlock, also those of stratum servers in other processes (its own come back as
            # duplicates and are skipped by hash)
            self._spawn(self.block_maker.run(self.bus.subscribe(Topic.FOUND_BLOCKS, "blockmaker")))
        if "stratum" in self.roles:
            self.server = StratumServer(
                cfg,
                self.metrics,
                self.credentials,
                on_share=self._publish_share,
                # the share queue goes to the bus as one list: a stratum worker's as one IPC frame, the embedded
                # pool's in one step onto the in-process queues (issue 19); Kafka keeps per-share publishes (and
                # per-share retries: a failed batch resent whole would put its taken part on the topic twice)
                on_shares=self._publish_shares if isinstance(self.bus, (IpcBus, InProcBus)) else None,
                on_found_block=self._on_found_block,
                server_name=f"stratum-{cfg.stratum.server_id}",
            )
            await self.server.start()
            if "jobmaker" not in self.roles:
                group = f"stratum-{cfg.stratum.server_id}"
                self._spawn(self._follow_templates(self.bus.subscribe(Topic.TEMPLATES, group)))
        if "jobmaker" in self.roles:
            subscribe = None
            if cfg.node.subscribe_address:
                host, _, port = cfg.node.subscribe_address.rpartition(":")
                subscribe = (host, int(port))
            from .templates import TemplateWatcher

            self.watcher = TemplateWatcher(
                self.rpc,
                self._on_new_job,
                poll_interval=cfg.node.poll_interval_ms / 1000,
                subscribe_address=subscribe,
                subscribe_transport=NodeTransport.from_settings(cfg.node),
                on_node_down=self.block_maker.note_node_down if self.block_maker is not None else None,
            )
            watcher = self.watcher
            self.metrics.track_template_age(lambda: watcher.last_template_at or time.time())
            self._spawn(self.watcher.run())
        if self.stratum_processes is not None:
            await self._start_stratum_processes(self.stratum_processes)
        self._register_metrics()
        if self.worker_index is not None:
            return  # a stratum worker: its parent serves /status, /metrics and the web page for all
        from .status import StatusServer

        self.status_server = StatusServer(
            cfg.http.listen_host, cfg.http.listen_port, self.status, self._metrics_source(), self.healthy
        )
        await self.status_server.start()
        if cfg.web.enabled:
            # its own listener and Redis client: the public side shares nothing with the operator's endpoints
            from ..web.app import WebServer

            self.web_server = WebServer(cfg, rpc=self.rpc)
            await self.web_server.start()

    def _register_metrics(self) -> None:
        """Gauges read at scrape time from the live objects (nothing on the share path)."""
        m = self.metrics
        m.registry.register(BusCollector(self.bus.stats))
        server = self.server
        if server is not None:
            m.hashrate.set_function(server.hashrate.rate)
            m.job_age_seconds.set_function(
                lambda: time.time() - server.job_announced_at if server.job_announced_at else 0.0
            )
        watcher = self.watcher
        if watcher is not None:
            m.template_stale.set_function(lambda: 1.0 if watcher.template_stale else 0.0)
            m.registry.register(
                FunctionCounter(
                    "ckbpool_template_fetch_errors",
                    "Failed or malformed get_block_template calls",
                    lambda: watcher.errors,
                )
            )
        block_maker = self.block_maker or self.finder
        if block_maker is not None:
            m.blocks_pending.set_function(lambda: block_maker.pending_count)
        accounting = self.accounting
        if accounting is not None:
            m.accounting_lag_seconds.set_function(accounting.lag_seconds)
            m.accounting_up.set_function(lambda: 1.0 if accounting.healthy() else 0.0)
            m.accounting_share_log_age_seconds.set_function(accounting.share_log_age_s)
            for name, doc, attr in (
                ("ckbpool_accounting_counted_shares", "Shares counted into the books (Redis)", "written"),
                ("ckbpool_accounting_duplicate_shares", "Share events dropped as already counted", "duplicates"),
                ("ckbpool_accounting_redis_errors", "Failed Redis attempts of accounting (retried)", "errors"),
            ):
                m.registry.register(FunctionCounter(name, doc, partial(getattr, accounting, attr)))
        trimmer = self.share_log_trimmer
        if trimmer is not None:
            m.accounting_share_log_entries.set_function(lambda: trimmer.entries)
            m.accounting_share_log_work.set_function(lambda: trimmer.covered_work)
            m.accounting_share_log_window_work.set_function(trimmer.window_work)
            m.accounting_share_log_window_ratio.set_function(trimmer.window_ratio)
            m.accounting_share_log_trimmed.set_function(lambda: 1.0 if trimmer.ever_trimmed else 0.0)
            m.accounting_books_accepted_blocks.set_function(lambda: trimmer.blocks_accepted)
            m.registry.register(
                FunctionCounter(
                    "ckbpool_accounting_share_log_trimmed_entries",
                    "Share log entries dropped by the work trimmer (this process)",
                    lambda: trimmer.trimmed,
                )
            )

    async def close(self) -> None:
        """Shut down in the order that keeps the books right: the stratum server stops reading, publishes its
        last shares and sends their Successes; accounting then writes everything the bus holds for it (bounded
        by ``redis.drain_timeout_s``; in Kafka mode what is left is redelivered at the next start); then the
        other services stop and the clients close. Stratum workers stop first, each the same way, and their links
        are read to the end before accounting drains."""
        if self.stratum_processes is not None:
            await self.stratum_processes.stop()
        if self.server is not None:
            await self.server.close()
        if self.accounting is not None and self._accounting_task is not None and not self._accounting_task.done():
            self.accounting.drain()
            _done, pending = await asyncio.wait([self._accounting_task], timeout=self.config.redis.drain_timeout_s)
            if pending:
                log.error("share accounting did not drain within %.0fs", self.config.redis.drain_timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.status_server is not None:
            await self.status_server.close()
        if self.web_server is not None:
            await self.web_server.close()
        await self.bus.close()
        await self.rpc.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def __aenter__(self) -> Pool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    @staticmethod
    def _task_done(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pool service task died", exc_info=task.exception())

    # -- data flow --------------------------------------------------------------------------------
    async def _on_new_job(self, new: NewJob) -> None:
        self.metrics.network_difficulty.set(target_to_difficulty(new.job.target))
        if self.server is not None:
            self.server.new_job(new.job_id, new.job, new.template_json)
        await self.bus.publish(Topic.TEMPLATES, JobTemplate(new.job_id, new.template_json, new.received_at))

    async def _follow_templates(self, subscription: Any) -> None:
        """Stratum-only process: jobs arrive as templates over the bus.

        A consumer group that is new (or restarted) may be handed old templates first: only the newest one
        counts, and nothing older than a couple of minutes is announced to miners.
        """
        newest = 0.0
        async for event in subscription:
            if not isinstance(event, JobTemplate) or self.server is None:
                continue
            if event.received_at < newest or time.time() - event.received_at > 120:
                continue
            newest = event.received_at
            try:
                template = BlockTemplate.from_json(json.loads(event.template_json))
            except ValueError as exc:
                log.error("ignoring malformed template %d from the bus: %s", event.job_id, exc)
                continue
            self.server.new_job(event.job_id, job_from_template(template), event.template_json)

    async def _record_outcomes(self, subscription: Any) -> None:
        """Accounting in its own process: block outcomes arrive from the block maker over the bus."""
        async for event in subscription:
            if isinstance(event, BlockOutcome) and self.accounting is not None:
                await self.accounting.record_block(event)

    async def _publish_share(self, share: Share) -> None:
        await self.bus.publish(Topic.SHARES, share)
        self.workers.observe(share)  # after the bus took it: a retried publish is counted once

    async def _publish_shares(self, shares: list[Share]) -> None:
        await self.bus.publish_many(Topic.SHARES, shares)
        self.workers.observe_many(shares)  # after the bus took them, as _publish_share

    async def _on_found_block(self, found: FoundBlock) -> None:
        """On disk first (fsynced), then submitted by this process and announced on the bus, concurrently: the
        node never waits for the bus, nor the bus for the node (module docstring)."""
        finder = self.finder
        assert finder is not None  # the stratum role always has one
        record = await finder.persist(found)
        submit = asyncio.create_task(finder.submit_record(record))
        try:
            await self._announce(record)
        except asyncio.CancelledError:
            # shutting down: the block is on disk as pending and the next start submits it; a submission still
            # retrying against an unreachable node must not hold the close (awaiting it here would, as the one
            # cancellation has been delivered already)
            submit.cancel()
            raise
        except Exception:
            await submit
            raise
        await submit  # a cancellation here reaches the submission too (it is the awaited task)

    async def _announce(self, record: BlockRecord) -> None:
        """Publish a found block on the bus (its block lane), retried until the bus takes it; then the record
        says so, and the next start does not publish it again. Only a closing bus ends the retrying: the next
        start announces the block from disk."""
        if record.announced:
            return
        try:
            await retry(
                partial(self.bus.publish, Topic.FOUND_BLOCKS, record.found),
                on=_retry_announce,
                policy=ANNOUNCE_RETRY,
                what="found block publish",
            )
        except BusClosed:
            log.error("bus closed before it took block %s: announced at the next start", record.found.block_hash.hex())
            return
        assert self.finder is not None
        await self.finder.mark_announced(record)

    def _on_finder_outcome(self, outcome: BlockOutcome) -> None:
        """A stratum-only process: what the node said to this process's own submission. Counted apart from
        ``ckbpool_blocks_total``, which only the block maker counts (one outcome per block pool-wide)."""
        self.metrics.block_submissions_total.labels(status=outcome.status).inc()
        if outcome.latency_ms:
            self.metrics.block_submit_latency_seconds.observe(outcome.latency_ms / 1000)

    async def _on_outcome(self, outcome: BlockOutcome) -> None:
        self.metrics.blocks_total.labels(status=outcome.status).inc()
        if outcome.latency_ms:
            self.metrics.block_submit_latency_seconds.observe(outcome.latency_ms / 1000)
        self.recent_blocks.append(outcome)
        del self.recent_blocks[:-50]
        await self.bus.publish(Topic.BLOCK_OUTCOMES, outcome)
        if self.accounting is not None:
            await self.accounting.record_block(outcome)

    # -- status -----------------------------------------------------------------------------------
    def healthy(self) -> bool:
        if self.accounting is not None and not self.accounting.healthy():
            return False  # the books are not being written (Redis down, lagging, or the consumer ended)
        if self.watcher is not None:
            return (
                bool(self.watcher.current)
                and time.time() - self.watcher.last_template_at < 120
                and not self.watcher.template_stale
            )
        return True

    def _found_blocks_status(self) -> list[dict[str, Any]]:
        """The blocks this process found, as its own disk records them (newest first)."""
        if self.finder is None:
            return []
        server = f"stratum-{self.config.stratum.server_id}"
        own = [r for r in self.finder.records() if r.found.server_id == server]
        return [
            {
                "height": r.found.height,
                "hash": "0x" + r.found.block_hash.hex(),
                "submitted": r.status,
                "reason": r.reason,
                "announced": r.announced,
                "worker": f"{r.found.user}.{r.found.worker}",
            }
            for r in reversed(own[-10:])
        ]

    async def status(self) -> dict[str, Any]:
        current = self.watcher.current if self.watcher is not None else None
        stats = server_stats(self.server) if self.server is not None else None
        hashrate = self.server.hashrate.rate() if self.server is not None else 0.0
        result: dict[str, Any] = {
            "network": self.config.network,
            "roles": sorted(self.roles),
            "uptime_s": round(time.time() - self.started_at, 1),
            "stratum": None if self.server is None else f"{self.server.address[0]}:{self.server.address[1]}",
            "job": None
            if current is None
            else {
                "job_id": current.job_id,
                "height": current.job.height,
                "parent_hash": "0x" + current.job.parent_hash.hex(),
                "network_difficulty": target_to_difficulty(current.job.target),
                "template_age_s": round(time.time() - current.received_at, 1),
            },
            "hashrate_hps": hashrate,
            "connections": stats.connections if stats else 0,
            "channels": stats.channels if stats else 0,
            "workers": sorted(stats.workers) if stats else [],
            # hashrate, accepted, rejected, last share per user and worker, as this stratum server saw them
            "users": self.workers.status(),
            "last_blocks": [
                {
                    "height": b.height,
                    "hash": "0x" + b.block_hash.hex(),
                    "status": b.status,
                    "reason": b.reason,
                    "worker": f"{b.user}.{b.worker}",
                }
                for b in reversed(self.recent_blocks[-10:])
            ],
            "found_blocks": self._found_blocks_status(),
            "bus": self.bus.stats(),
            # where miners see their figures (`ckbpool status` prints it); None when the page is off
            "web": None if self.web_server is None else self.web_server.url,
        }
        if self.stratum_processes is not None:
            result["roles"] = sorted(self.roles | {"stratum"})
            self.stratum_processes.merge_status(result)
        return result

    # -- stratum worker processes (stratum.workers > 1; ckbpool.pool.procs) --------------------------
    def _plan_stratum_processes(self) -> StratumProcesses | None:
        """In a parent of stratum workers: drop the stratum role here and wrap the bus in the workers' IPC hub."""
        count = worker_count(self.config)
        if self.worker_index is not None or count <= 1 or "stratum" not in self.roles:
            return None
        self.roles.discard("stratum")
        processes = StratumProcesses(self.config, self.credentials, count)
        self.bus = IpcHub(self.bus, processes.hub_path)
        return processes

    async def _start_stratum_processes(self, processes: StratumProcesses) -> None:
        assert isinstance(self.bus, IpcHub)
        processes.reserve_port()
        await processes.start(self.bus)
        self.metrics.registry.register(processes.collector())

    def _metrics_source(self) -> MetricsSource:
        """What ``/metrics`` exposes: this process's registry, plus its stratum workers' samples if it has any."""
        if self.stratum_processes is None:
            return self.metrics.registry
        return MergedMetrics(self.metrics.registry, self.stratum_processes)
