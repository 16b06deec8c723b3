"""Stratum worker processes: ``stratum.workers`` Stratum V2 servers on one port, supervised by the parent.

Why: one Python process is one core. The parent (the :class:`~ckbpool.pool.service.Pool` that ``ckbpool pool
run`` starts) keeps the job maker, the block maker, accounting and the operator's ``/status`` and ``/metrics``;
N worker processes each run a :class:`~ckbpool.pool.stratum.StratumServer` bound to the same address with
``SO_REUSEPORT``, so the kernel spreads new connections over them. A worker is exactly the stratum-only role of
the distributed topology, with the parent as its bus (:mod:`ckbpool.bus.ipc`): templates come in, shares and
found blocks go out, a found block is written to the worker's own disk (``<blocks.data_dir>/stratum-worker-<i>``)
and submitted by the worker itself before anything else.

- Unique extranonce prefixes: worker ``i`` runs with ``server_id = stratum.server_id + i`` (the prefix's first
  byte), and its shares' stable ids have a ``source`` of their own (``stratum-<server_id>-<run>``).
- The port stays open: the parent binds (without listening) a ``SO_REUSEPORT`` socket on the address first,
  which fixes the port (``listen_port = 0`` included) and keeps it reserved while a worker restarts; the kernel
  hands connections only to the workers' listening sockets.
- A worker that dies is started again (``RESTART_BACKOFF``: 0.5 s doubling to 10 s while it keeps dying); its miners
  reconnect and land on the others meanwhile. What it published before it died is on the parent's socket and
  still read (``ckbpool.bus.ipc``), so no share it answered Success is lost.
- Metrics: each worker reports its status and its Prometheus samples once a second over the link; the parent
  sums them into its own (``/metrics``: counters and histograms summed, the per-process gauges too, the
  pool-wide ones -- job height, template age -- as the maximum) and lists the workers in ``/status``
  (``stratum_processes``).
- Scheduling: a worker runs as ``SCHED_BATCH`` (Linux; elsewhere it stays as it is): its wake-ups do not preempt
  the task running on their CPU. Why: a new tip reaches the workers as one socket write each, and a Unix socket
  wakes its reader "sync" -- onto the writer's CPU, where the first worker preempted the parent before its write
  to the second, which then waited for the first one's whole fan-out (~1-2 ms at 100 channels). Measured
  (bench_pool's fan-out, 2 workers @ 100 channels, 3 alternated pairs): p99 3.05/2.56/2.57 ms against
  3.52/3.37/4.16, shares/s unchanged. The cost: a worker woken while a normal task runs on its CPU (and none is
  idle) waits for that task's slice to end, a few ms at most -- nothing for a miner's Success or a found block's
  submit, which are not ms-critical.
- Shutdown: the parent asks every worker to stop (SIGTERM): each stops reading from miners, publishes its queued
  shares and sends their Successes, then closes; the parent reads every link to its end before accounting
  drains (``Pool.close``).

Workers are started with ``python -m ckbpool.pool.procs`` in a session of their own (a terminal's Ctrl-C
reaches only the parent, which stops them in order); the configuration and the Noise credentials travel on the
child's stdin, never on its command line. A worker whose parent is gone stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..bus.ipc import IpcBus, IpcHub
from ..retry import Backoff
from ..sv2.noise import ResponderCredentials
from .config import IDS_PER_STRATUM_HOST, PoolConfig

if TYPE_CHECKING:
    from .service import Pool

__all__ = [
    "MergedMetrics",
    "StratumProcesses",
    "WorkerSpec",
    "merge_users",
    "with_default_workers",
    "worker_config",
    "worker_count",
]

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0
READY_TIMEOUT_S = 60.0
#: wait before starting a dead worker again: 0.5 s doubling to 10 s (+ jitter) while it dies within STABLE_AFTER_S
RESTART_BACKOFF = Backoff(initial=0.5, maximum=10.0, jitter=0.25)
STABLE_AFTER_S = 30.0
#: gauges that are one process's share of a pool-wide total (summed); every other gauge is the maximum
SUMMED_GAUGES = frozenset(
    {
        "ckbpool_open_connections",
        "ckbpool_open_channels",
        "ckbpool_hashrate_hashes_per_second",
        "ckbpool_blocks_pending",
    }
)
#: status figures of a worker that add up to the pool's
_SUMMED_STATUS = ("connections", "channels", "hashrate_hps")


def worker_count(config: PoolConfig) -> int:
    """How many stratum processes this config asks for (a ``Pool`` built in code without it: one)."""
    return config.stratum.workers or 1


def with_default_workers(config: PoolConfig) -> PoolConfig:
    """``stratum.workers`` unset -> one per core: what ``ckbpool pool run`` runs."""
    if config.stratum.workers is not None:
        return config
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, min(cores, IDS_PER_STRATUM_HOST, 256 - config.stratum.server_id))
    return config.model_copy(update={"stratum": config.stratum.model_copy(update={"workers": cores})})


def worker_name(index: int) -> str:
    return f"stratum-worker-{index}"


def worker_config(config: PoolConfig, index: int, port: int) -> PoolConfig:
    """Worker ``index``'s configuration: the stratum role only, its own server_id, blocks directory and the port
    the parent reserved; no public web page (the parent serves it)."""
    stratum = config.stratum.model_copy(update={"server_id": config.stratum.server_id + index, "listen_port": port})
    blocks = config.blocks.model_copy(update={"data_dir": config.blocks.data_dir / worker_name(index)})
    web = config.web.model_copy(update={"enabled": False})
    return config.model_copy(update={"roles": ("stratum",), "stratum": stratum, "blocks": blocks, "web": web})


@dataclass(frozen=True)
class WorkerSpec:
    """What the parent hands a worker on its stdin (pickled: parent and child are the same program)."""

    config: PoolConfig
    credentials: ResponderCredentials | None
    index: int
    ipc_path: Path
    log_level: int


def merge_users(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Add one process's ``/status`` ``users`` (``WorkerBook.status()``) into ``into`` (a worker of one user may
    be connected to several processes)."""

    def add(target: dict[str, Any], figures: dict[str, Any]) -> None:
        target["hashrate_hps"] = target.get("hashrate_hps", 0.0) + figures.get("hashrate_hps", 0.0)
        target["accepted"] = target.get("accepted", 0) + figures.get("accepted", 0)
        target["rejected"] = target.get("rejected", 0) + figures.get("rejected", 0)
        target["last_share"] = max(target.get("last_share", 0.0), figures.get("last_share", 0.0))

    for user, account in other.items():
        mine = into.setdefault(user, {"hashrate_hps": 0.0, "accepted": 0, "rejected": 0, "last_share": 0.0})
        add(mine, account)
        workers = mine.setdefault("workers", {})
        for worker, figures in account.get("workers", {}).items():
            add(workers.setdefault(worker, {}), figures)
    return into


def registry_samples(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """A registry's samples as JSON-able families (what a worker reports); bus families stay out (the parent's
    hub counts every event the workers publish)."""
    return [
        {
            "name": family.name,
            "type": family.type,
            "doc": family.documentation,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
        for family in registry.collect()
        if not family.name.startswith("ckbpool_bus_")
    ]


class MergedMetrics:
    """The parent's registry with its workers' latest samples added: what ``/metrics`` exposes."""

    def __init__(self, registry: CollectorRegistry, processes: StratumProcesses) -> None:
        self.registry = registry
        self.processes = processes

    def collect(self) -> Iterator[Metric]:
        reports = [report.get("metrics", []) for report in self.processes.live_reports()]
        extra: dict[str, list[dict[str, Any]]] = {}
        for families in reports:
            for family in families:
                extra.setdefault(family["name"], []).append(family)
        for family in self.registry.collect():
            yield _merged(family.name, family.documentation, family.type, family.samples, extra.pop(family.name, []))
        for name, families in extra.items():
            yield _merged(name, families[0]["doc"], families[0]["type"], [], families)


def _merged(name: str, doc: str, kind: str, own: list[Any], workers: list[dict[str, Any]]) -> Metric:
    maximum = kind == "gauge" and name not in SUMMED_GAUGES
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for sample in own:
        values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    for family in workers:
        for sample_name, labels, value in family["samples"]:
            key = (sample_name, tuple(sorted(labels.items())))
            if key not in values:
                values[key] = value
            elif sample_name.endswith("_created"):
                values[key] = min(values[key], value)
            elif maximum:
                values[key] = max(values[key], value)
            else:
                values[key] += value
    metric = Metric(name, doc, kind)
    for (sample_name, labels), value in values.items():
        metric.add_sample(sample_name, dict(labels), value)
    return metric


class _ProcessCollector:
    def __init__(self, processes: StratumProcesses) -> None:
        self.processes = processes

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ckbpool_stratum_processes_up", "Stratum worker processes running and linked")
        up.add_metric([], float(sum(1 for row in self.processes.rows() if row["alive"])))
        yield up
        restarts = CounterMetricFamily(
            "ckbpool_stratum_process_restarts", "Stratum worker processes started again after they died"
        )
        restarts.add_metric([], float(self.processes.restarts_total))
        yield restarts


class StratumProcesses:
    """Starts, watches, restarts and stops the stratum worker processes of one parent ``Pool``."""

    def __init__(self, config: PoolConfig, credentials: ResponderCredentials | None, count: int) -> None:
        self.config = config
        self.credentials = credentials
        self.count = count
        self.run_dir = Path(tempfile.mkdtemp(prefix="ckbpool-ipc-"))  # 0700: the socket's directory
        self.hub_path = self.run_dir / "hub.sock"
        self.hub: IpcHub | None = None
        self.port = config.stratum.listen_port
        self.processes: list[asyncio.subprocess.Process | None] = [None] * count
        self.restarts = [0] * count
        self.restarts_total = 0
        self._reserved: socket.socket | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def address(self) -> tuple[str, int]:
        return self.config.stratum.listen_host, self.port

    def collector(self) -> _ProcessCollector:
        return _ProcessCollector(self)

    # -- lifecycle --------------------------------------------------------------------------------
    def reserve_port(self) -> int:
        """Bind (never listen on) a SO_REUSEPORT socket on the stratum address: fixes the port for every worker
        and keeps it ours while a worker restarts."""
        s = self.config.stratum
        family, kind, proto, _name, address = socket.getaddrinfo(
            s.listen_host or None, s.listen_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._reserved = sock
        self.port = sock.getsockname()[1]
        return self.port

    async def start(self, hub: IpcHub) -> None:
        """Start every worker and return once each one's server listens (``READY_TIMEOUT_S``)."""
        self.hub = hub
        if self._reserved is None:
            self.reserve_port()
        self._watchers = [asyncio.create_task(self._keep_running(i)) for i in range(self.count)]
        try:
            await asyncio.gather(*(hub.wait_ready(worker_name(i), READY_TIMEOUT_S) for i in range(self.count)))
        except TimeoutError:
            raise RuntimeError(f"stratum workers not ready within {READY_TIMEOUT_S:.0f}s (see their log)") from None
        log.info("%d stratum worker processes on %s:%d", self.count, *self.address)

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        spec = WorkerSpec(
            config=worker_config(self.config, index, self.port),
            credentials=self.credentials,
            index=index,
            ipc_path=self.hub_path,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ckbpool.pool.procs", stdin=asyncio.subprocess.PIPE, start_new_session=True
        )
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(spec))
        await process.stdin.drain()
        process.stdin.close()
        return process

    async def _keep_running(self, index: int) -> None:
        """Run worker ``index`` until stop(); a worker that dies is started again after ``RESTART_BACKOFF``'s
        wait for its count of quick deaths in a row (one that lived past STABLE_AFTER_S counts as a first one)."""
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            process = await self._spawn(index)
            self.processes[index] = process
            code = await process.wait()
            if self._stopping:
                return
            failures = 1 if time.monotonic() - started > STABLE_AFTER_S else failures + 1
            self.restarts[index] += 1
            self.restarts_total += 1
            delay = RESTART_BACKOFF.delay(failures)
            log.error(
                "stratum worker %d (pid %d) exited with %s; starting it again in %.1fs", index, process.pid, code, delay
            )
            await asyncio.sleep(delay)

    def signal_all(self, signum: int) -> None:
        for process in self.processes:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    async def stop(self, timeout: float = 30.0) -> None:
        """Workers first: each flushes its shares and Successes and exits; then every link is read to its end,
        so the parent's bus holds all they published before accounting drains."""
        self._stopping = True
        self.signal_all(signal.SIGTERM)
        if self._watchers:
            _done, pending = await asyncio.wait(self._watchers, timeout=timeout)
            if pending:
                log.error("%d stratum workers did not stop within %.0fs; killing them", len(pending), timeout)
                self.signal_all(signal.SIGKILL)
                await asyncio.wait(pending, timeout=5)
                for task in pending:
                    task.cancel()
        if self.hub is not None:
            for index in range(self.count):
                if not await self.hub.wait_closed(worker_name(index), 5.0):
                    log.error("the link of stratum worker %d did not end", index)
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- figures ----------------------------------------------------------------------------------
    def live_reports(self) -> list[dict[str, Any]]:
        """The latest report of each linked worker (a dead one's connections are gone with it)."""
        if self.hub is None:
            return []
        reports = []
        for index in range(self.count):
            link = self.hub.links.get(worker_name(index))
            if link is not None and not link.closed.is_set() and link.stats:
                reports.append(link.stats)
        return reports

    def rows(self) -> list[dict[str, Any]]:
        """One row per worker for ``/status``: process, link and its own figures."""
        rows = []
        now = time.time()
        for index in range(self.count):
            process = self.processes[index]
            link = self.hub.links.get(worker_name(index)) if self.hub is not None else None
            linked = link is not None and not link.closed.is_set()
            status = link.stats.get("status", {}) if link is not None and linked else {}
            rows.append(
                {
                    "index": index,
                    "server_id": self.config.stratum.server_id + index,
                    "pid": process.pid if process is not None else None,
                    "alive": process is not None and process.returncode is None and linked,
                    "ready": bool(link and linked and link.ready),
                    "restarts": self.restarts[index],
                    "connections": status.get("connections", 0),
                    "channels": status.get("channels", 0),
                    "hashrate_hps": status.get("hashrate_hps", 0.0),
                    "shares_published": link.received if link is not None else 0,
                    "report_age_s": round(now - link.stats_at, 1) if link is not None and link.stats_at else None,
                }
            )
        return rows

    def merge_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """The parent's ``/status`` with its workers' figures added (and listed in ``stratum_processes``)."""
        status["stratum"] = "{}:{}".format(*self.address)
        workers = set(status.get("workers", []))
        found = list(status.get("found_blocks", []))
        for report in self.live_reports():
            own = report.get("status", {})
            for key in _SUMMED_STATUS:
                status[key] = status.get(key, 0) + own.get(key, 0)
            workers.update(own.get("workers", []))
            merge_users(status.setdefault("users", {}), own.get("users", {}))
            found.extend(own.get("found_blocks", []))
        status["workers"] = sorted(workers)
        status["found_blocks"] = found
        status["stratum_processes"] = self.rows()
        return status


# -- the worker process ---------------------------------------------------------------------------
async def worker_report(pool: Pool) -> dict[str, Any]:
    """What a worker tells its parent every ``REPORT_INTERVAL_S``."""
    status = await pool.status()
    keep = ("connections", "channels", "workers", "hashrate_hps", "users", "found_blocks")
    report: dict[str, Any] = {
        "status": {key: status[key] for key in keep},
        "metrics": registry_samples(pool.metrics.registry),
    }
    server = pool.server
    if server is not None:
        # share events this worker made (ids 1..published) and how many of them still wait for the link: the
        # parent has all of them once it received ``published`` from this run and nothing is queued
        report["shares"] = {
            "source": server.share_source,
            "published": server._share_seq,
            "queued": len(server._share_queue),
        }
    return report


async def run_worker(spec: WorkerSpec) -> None:
    """One worker's life: a stratum-only Pool on the IPC bus, reporting until SIGTERM or until the parent is gone."""
    from .service import Pool

    bus = IpcBus(spec.ipc_path, worker_name(spec.index))
    pool = Pool(spec.config, credentials=spec.credentials, bus=bus, worker_index=spec.index)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, pool.reload_credentials)
    bus.on_lost = stop.set
    try:
        await pool.start()
        await bus.send_ready()
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a report is best effort; the next one comes in a second
                await bus.send_stats(await worker_report(pool))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_INTERVAL_S)
    finally:
        await pool.close()


def main() -> None:
    spec = pickle.load(sys.stdin.buffer)
    if not isinstance(spec, WorkerSpec):
        raise SystemExit("ckbpool.pool.procs: expected a WorkerSpec on stdin (started by the pool)")
    logging.basicConfig(
        level=spec.log_level, format=f"%(asctime)s %(levelname)s [worker {spec.index}] %(name)s: %(message)s"
    )
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    _batch_scheduling()
    asyncio.run(run_worker(spec))


def _batch_scheduling() -> None:
    """This process as SCHED_BATCH (module docstring: why); a platform without it keeps its default."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None:
        return
    try:
        os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError as exc:  # a sandbox may refuse it: the worker runs as before
        log.info("stratum worker keeps the default scheduling policy: %s", exc)


if __name__ == "__main__":
    # run as ckbpool.pool.procs, not __main__: the pickled WorkerSpec names that module's class
    from ckbpool.pool.procs import main as _main

    _main()
