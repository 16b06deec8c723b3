"""Monitoring against a running stack: Debian's Prometheus, started here on a free loopback port with the
prometheus.yml that `ckbpool render` writes (1 s scrape and evaluation intervals), scrapes a real ckb dev node's
built-in exporter, the real Pool's /metrics (a CPU miner mining through it, so share and block metrics move), the
V1<->V2 proxy's /metrics (a V1 CPU miner behind it), Redis through redis_exporter and this host through
node-exporter (both Debian packages) — every target up.

Then: every Grafana dashboard query runs on that Prometheus and names metrics the stack exports (kafka_exporter's
names, which nothing here exports, are checked against the cited list in monitoring/metric-names.yml and reported
as such), the alerts stay quiet on the healthy stack, and stopping the ckb node makes CkbNodeTipNotAdvancing fire.
The rules Prometheus evaluates are monitoring/prometheus/rules/ckbpool.yml with only the windows and `for:`
durations shortened (support.monitoring.short_window_rules): the expressions under test are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.ckb.devwallet import DevKey
from ckbpool.ckb.node import CkbNode
from ckbpool.cli.app import app
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.miner.v1 import V1Miner
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy, load_proxy_config
from support.kafka import child_guard, free_port
from support.monitoring import (
    RULES,
    dashboard_queries,
    expand_grafana_vars,
    exporter_metric_names,
    load_dashboards,
    pool_metric_names,
    promql_metric_names,
    proxy_metric_names,
    short_window_rules,
)
from support.redis import RedisServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus missing (apt-get install prometheus)"),
]

NODE_EXPORTER = shutil.which("prometheus-node-exporter")
REDIS_EXPORTER = shutil.which("prometheus-redis-exporter")
# alerts whose condition this stack controls: they must be quiet while it is healthy (DiskAlmostFull depends on
# the test machine's disks, the hashrate/reject alerts on a CPU miner's noise over 10-second windows)
QUIET_WHEN_HEALTHY = (
    "TargetDown", "CkbNodeTipNotAdvancing", "CkbpoolNoNewTemplate", "RedisDown", "CkbpoolProxyUpstreamDown"
)  # fmt: skip


# ------------------------------------------------------------------------------------------------ helpers
def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Process:
    """A server child on loopback: killed with the test process (PDEATHSIG), log kept for failures."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_guard(),
                env={**os.environ, **(env or {})},
            )

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class PoolThread:
    """The real Pool and a CPU miner on their own event loop, so the tests can be plain blocking code."""

    def __init__(self, pool: Pool, authority: str) -> None:
        self.pool = pool
        self.authority = authority
        self.proxy: Proxy | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="pool", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("pool did not start")
        if self.error is not None:
            raise self.error

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        miner: Sv2Miner | None = None
        miner_task: asyncio.Task[Any] | None = None
        v1_miner: V1Miner | None = None
        v1_task: asyncio.Task[Any] | None = None
        try:
            await self.pool.start()
            for _ in range(200):
                if self.pool.watcher is not None and self.pool.watcher.current is not None:
                    break
                await asyncio.sleep(0.05)
            assert self.pool.server is not None
            host, port = self.pool.server.address
            miner = Sv2Miner(host, port, "ckt1qmonitoring.rig1", authority_public_key=self.authority)
            miner_task = asyncio.create_task(miner.run())
            # the V1<->V2 translator with a V1 CPU miner behind it: its /metrics is a scrape target too
            self.proxy = Proxy(
                load_proxy_config(
                    data={
                        "identity": "aggregated",  # account names here are not addresses
                        "upstream": {"host": host, "port": port, "authority_public_key": self.authority,
                                     "user_identity": "ckt1qmonitoring.proxy"},
                        "v1": {"listen_host": "127.0.0.1", "listen_port": 0,
                               "vardiff": {"initial_difficulty": 2e4, "share_interval_s": 1.0}},
                        "http": {"listen_port": 0},
                    }
                )
            )  # fmt: skip
            await self.proxy.start()
            await self.proxy.wait_upstream(10)
            assert self.proxy.v1 is not None
            v1_miner = V1Miner(*self.proxy.v1.address, "ckt1qmonitoring.asic1")
            v1_task = asyncio.create_task(v1_miner.run())
            # one peer that hangs up mid-handshake: ckbpool_connection_errors_total{reason} gets a series
            _, writer = await asyncio.open_connection(host, port)
            writer.write(b"not a noise handshake")
            await writer.drain()
            writer.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
        try:
            if self.error is None:
                await self._stop.wait()
        finally:
            for stoppable, task in ((v1_miner, v1_task), (miner, miner_task)):
                if stoppable is not None and task is not None:
                    stoppable.stop()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(task, 10)
            if self.proxy is not None:
                await self.proxy.close()
            # Bounded: with the node stopped, Pool.close() waits for in-flight submit_block retries (each waits
            # up to 30 s for the node to come back). The blocks are on disk already; asyncio.run cancels the rest.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.pool.close(), 5)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@dataclass
class Stack:
    node: CkbNode
    pool: PoolThread
    prometheus_url: str
    config_path: Path
    expected_jobs: set[str]
    processes: list[Process] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.prometheus_url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def firing(self) -> dict[str, list[dict[str, str]]]:
        out: dict[str, list[dict[str, str]]] = {}
        for alert in self.api("alerts")["alerts"]:
            if alert["state"] == "firing":
                out.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return out

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.processes)


def render_prometheus_config(tmp: Path, ports: dict[str, int], keep_jobs: set[str]) -> Path:
    """`ckbpool init` + `render` with this stack's ports and a 1 s scrape interval; the local target's
    prometheus.yml as rendered, minus the jobs of exporters that do not run here; rules/ = the short-window copy
    of the real rule file."""
    config = tmp / "ckbpool.yaml"
    runner = CliRunner()
    flags = [arg for key, port in ports.items() for arg in ("--port", f"{key}={port}")]
    result = runner.invoke(app, ["init", "-c", str(config), "-y", "--name", "monitoring-live", "--proxy", *flags])
    assert result.exit_code == 0, result.stdout + result.stderr
    data = yaml.safe_load(config.read_text())
    data.setdefault("monitoring", {})["scrape_interval"] = "1s"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    result = runner.invoke(app, ["render", "-c", str(config), "--no-diff"])
    assert result.exit_code == 0, result.stdout + result.stderr
    prom_dir = tmp / "workspace" / "local" / "prometheus"
    prom_yml = prom_dir / "prometheus.yml"
    rendered = yaml.safe_load(prom_yml.read_text())
    rendered["scrape_configs"] = [job for job in rendered["scrape_configs"] if job["job_name"] in keep_jobs]
    prom_yml.write_text(yaml.safe_dump(rendered, sort_keys=False))
    for old in (prom_dir / "rules").glob("*.yml"):
        old.unlink()
    short = short_window_rules(yaml.safe_load(RULES.read_text()))
    (prom_dir / "rules" / "ckbpool.yml").write_text(yaml.safe_dump(short, sort_keys=False))
    check = subprocess.run(["promtool", "check", "config", str(prom_yml)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    return prom_yml


# ------------------------------------------------------------------------------------------------ fixture
@pytest.fixture(scope="module")
def stack(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey) -> Iterator[Stack]:
    from test_pool_e2e import POOL_TEST_COMPACT_TARGET, pool_config, pool_keys

    from conftest import start_dev_node

    tmp = tmp_path_factory.mktemp("monitoring")
    t0 = time.monotonic()
    processes: list[Process] = []
    node = start_dev_node(ckb_binary, tmp / "ckb", dev_key, genesis_compact_target=POOL_TEST_COMPACT_TARGET)
    redis = RedisServer(tmp / "redis")
    pool_thread: PoolThread | None = None
    try:
        redis.start()
        credentials, authority = pool_keys()
        pool = Pool(pool_config(node, tmp / "pool", redis={"url": redis.url}), credentials=credentials)
        pool_thread = PoolThread(pool, authority)
        pool_thread.start()
        assert pool.status_server is not None and node.config.metrics_port is not None

        proxy = pool_thread.proxy
        assert proxy is not None and proxy.status_server is not None
        ports = {
            "pool_http": pool.status_server.port,
            "node_metrics": node.config.metrics_port,
            "proxy_http": proxy.status_server.port,
        }
        jobs = {"prometheus", "ckbpool", "ckb", "proxy"}
        if NODE_EXPORTER is not None:
            ports["node_exporter"] = free_port()
            processes.append(Process(
                "node-exporter", [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ports['node_exporter']}"], tmp
            ))  # fmt: skip
            jobs.add("node")
        if REDIS_EXPORTER is not None:
            ports["redis_exporter"] = free_port()
            processes.append(Process(
                "redis-exporter",
                [REDIS_EXPORTER, "-redis.addr", f"redis://{redis.HOST}:{redis.port}",
                 "-web.listen-address", f"127.0.0.1:{ports['redis_exporter']}"],
                tmp, env={"REDIS_PASSWORD": redis.password},
            ))  # fmt: skip
            jobs.add("redis")
        ports["prometheus"] = free_port()
        prom_yml = render_prometheus_config(tmp, ports, jobs)
        prometheus = Process(
            "prometheus",
            ["prometheus", f"--config.file={prom_yml}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--storage.tsdb.retention.time=1h"],
            tmp,
        )  # fmt: skip
        processes.append(prometheus)
        url = f"http://127.0.0.1:{ports['prometheus']}"

        def ready() -> bool:
            assert prometheus.popen.poll() is None, prometheus.log_tail()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            return False

        wait_until(ready, 30, "prometheus /-/ready")
        stack = Stack(node, pool_thread, url, prom_yml, jobs, processes, {"stack_start_s": time.monotonic() - t0})
        yield stack
    finally:
        if pool_thread is not None:
            pool_thread.stop()
        for process in reversed(processes):
            process.stop()
        redis.stop()
        node.stop()


# ------------------------------------------------------------------------------------------------ tests
def test_prometheus_scrapes_every_target_of_the_rendered_config(stack: Stack) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets: list[dict[str, Any]] = stack.api("targets")["activeTargets"]
        jobs = {t["labels"]["job"] for t in targets}
        return targets if jobs == stack.expected_jobs and all(t["health"] == "up" for t in targets) else None

    start = time.monotonic()
    try:
        targets = wait_until(all_up, 30, "every target up")
    except AssertionError:
        detail = [
            (t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"])
            for t in stack.api("targets")["activeTargets"]
        ]
        raise AssertionError(f"targets: {detail}\n{stack.logs()}") from None
    stack.timings["all_targets_up_s"] = time.monotonic() - start
    ckb = next(t for t in targets if t["labels"]["job"] == "ckb")
    assert ckb["scrapeUrl"].endswith(f":{stack.node.config.metrics_port}/")  # ckb's exporter serves on /
    print(f"\ntargets up: {sorted((t['labels']['job'], t['scrapeUrl']) for t in targets)}")


def test_pool_and_node_metrics_move(stack: Stack) -> None:
    checks = {
        "shares accepted": 'increase(ckbpool_shares_total{result="accepted"}[15s]) > 0',
        "pool hashrate": "rate(ckbpool_accepted_work_hashes_total[15s]) > 0",
        "blocks accepted": 'ckbpool_blocks_total{status="accepted"} > 0',
        "node tip advancing": "changes(ckb_chain_tip[15s]) > 0",
        "pool job follows the node": "max(ckbpool_job_height) - max(ckb_chain_tip) >= 0",
        "connection error counted": "ckbpool_connection_errors_total > 0",
        "V1 shares through the proxy": 'increase(ckbpool_proxy_shares_total{result="accepted", service="v1"}[15s]) > 0',
        "proxy upstream up": "ckbpool_proxy_upstream_up == 1",
    }
    for what, expr in checks.items():
        wait_until(lambda expr=expr: stack.query(expr), 30, what)  # type: ignore[misc]


def test_dashboard_queries_run_live_and_name_exported_metrics(stack: Stack) -> None:
    wait_until(lambda: stack.query('increase(ckbpool_blocks_total{status="accepted"}[1m]) > 0'), 30, "a block")
    live_names = set(stack.api("label/__name__/values"))
    exporters = exporter_metric_names()
    sources: dict[str, str] = {name: "pool" for name in pool_metric_names()}
    sources |= {name: "proxy" for name in proxy_metric_names()}
    sources["up"] = "prometheus"
    running = {"ckb": True, "node_exporter": NODE_EXPORTER is not None, "redis_exporter": REDIS_EXPORTER is not None}
    for exporter, entry in exporters.items():
        for name in entry["metrics"]:
            sources[name] = exporter if running.get(exporter) else f"{exporter} (documentation only)"
    documentation_only: set[str] = set()
    missing: list[str] = []
    empty: list[tuple[str, str]] = []  # (where, query)
    for board_name, board in load_dashboards().items():
        for where, expr in dashboard_queries(board):
            query = expand_grafana_vars(expr)
            names = promql_metric_names(query)
            unlisted = [n for n in names if n not in sources]
            assert not unlisted, f"{board_name} {where}: {unlisted} in no source list"
            doc_only = {n for n in names if sources[n].endswith("(documentation only)")}
            documentation_only |= doc_only
            missing += [f"{board_name} {where}: {n} ({sources[n]})" for n in names - doc_only - live_names]
            result = stack.query(query)  # the live Prometheus parses and runs it
            if not doc_only and not result:
                empty.append((f"{board_name} {where}", query))
    assert not missing, "dashboard metrics the live stack does not export:\n" + "\n".join(missing)
    # a rate over [1m] has data once two scrapes of its series are in the window: on a loaded box a 1 s scrape of
    # node_exporter can time out now and then (once in CI: 'CPU busy' empty), so a query without data yet gets
    # a bounded while more -- one that never gets any still fails, naming it and the scrape health
    deadline = time.monotonic() + 30
    while empty and time.monotonic() < deadline:
        time.sleep(1.0)
        empty = [(where, query) for where, query in empty if not stack.query(query)]
    health = {r["metric"].get("job", "?"): r["value"][1] for r in stack.query("up")} if empty else {}
    assert not empty, f"dashboard queries with no data on the live stack (up: {health}):\n" + "\n".join(
        f"{where}: {query}" for where, query in empty
    )
    # the cited names of exporters that run here are the ones they really export
    for exporter, entry in exporters.items():
        if running.get(exporter):
            assert set(entry["metrics"]) <= live_names, (exporter, sorted(set(entry["metrics"]) - live_names))
    print(f"\nchecked against documentation only (not run here): {sorted(documentation_only)}")


def test_alerts_quiet_on_a_healthy_stack_and_tip_alert_fires_when_the_node_stops(stack: Stack) -> None:
    def evaluated() -> bool:
        groups = stack.api("rules")["groups"]
        return bool(groups) and all(g["lastEvaluation"] > "2000" for g in groups)

    wait_until(evaluated, 20, "rule evaluation")
    time.sleep(6)  # longer than every shortened `for:` of the quiet set (TargetDown: 5 s)
    firing = stack.firing()
    assert not set(firing) & set(QUIET_WHEN_HEALTHY), (firing, stack.logs())
    print(f"\nfiring on the healthy stack (not asserted quiet): {sorted(firing)}")

    stack.node.stop()
    stopped = time.monotonic()

    def tip_alert() -> list[dict[str, str]] | None:
        alerts = stack.firing().get("CkbNodeTipNotAdvancing", [])
        return [a for a in alerts if a["job"] == "ckb"] or None

    (labels,) = wait_until(tip_alert, 60, "CkbNodeTipNotAdvancing to fire")
    stack.timings["tip_alert_after_stop_s"] = time.monotonic() - stopped
    assert labels["severity"] == "critical"
    assert labels["instance"] == f"127.0.0.1:{stack.node.config.metrics_port}"
    down = wait_until(lambda: [a for a in stack.firing().get("TargetDown", []) if a["job"] == "ckb"], 20, "TargetDown")
    assert [a["instance"] for a in down] == [labels["instance"]]
    stack.timings["target_down_after_stop_s"] = time.monotonic() - stopped
    print(f"timings: { {k: round(v, 1) for k, v in stack.timings.items()} }")
