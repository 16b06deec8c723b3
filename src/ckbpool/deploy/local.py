"""The ``local`` target: the stack as supervised processes on this machine (the embedded default).

``deploy`` starts a detached supervisor (``python -m ckbpool.deploy.local <workspace>``) that runs, in order,
Redis (when enabled), the ckb node (:class:`~ckbpool.ckb.node.CkbNode` on the rendered ``local/ckb``), the
pool (``ckbpool pool run -c local/pool.toml``), the proxy (when enabled and this ckbpool has one) and the CPU
miners (when enabled). The supervisor restarts a service that dies (with backoff), records every process in
``local/state/supervisor.json`` and stops them all, in reverse order, on SIGTERM. ``destroy`` sends that
SIGTERM and waits; whatever is still alive after the grace period is killed by its recorded pid.

Data stays in ``local/ckb/data`` and ``local/data`` unless ``destroy --purge``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..ckb.address import parse_address
from ..ckb.errors import CkbError
from ..ckb.node import CkbNode, NodeConfig
from ..pool.redis_conn import POOL_USER as REDIS_POOL_USER
from . import secrets as sec
from .config import DeployConfig, load_config
from .errors import TargetError, TargetUnavailable
from .probe import probe_node, probe_pool
from .render import LOCAL_LEDGER
from .target import ConfirmCallback, Paths, ProgressCallback, ServiceHealth, Target

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

STATE_FILE = "supervisor.json"
STOP_GRACE_S = 25.0


def local_dir(paths: Paths) -> Path:
    return paths.workspace / "local"


def state_path(paths: Paths) -> Path:
    return local_dir(paths) / "state" / STATE_FILE


def log_dir(paths: Paths) -> Path:
    return local_dir(paths) / "logs"


def cli_command() -> list[str]:
    """``ckbpool`` with this very interpreter (works in a venv, from a checkout, without PATH)."""
    return [sys.executable, "-m", "ckbpool.cli"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_state(paths: Paths) -> dict[str, Any] | None:
    try:
        data = json.loads(state_path(paths).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this child when the supervisor dies, even if it is SIGKILLed."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# ------------------------------------------------------------------------------------------ services


@dataclass
class Service:
    """One supervised process. ``start`` returns its Popen; ckb goes through CkbNode instead."""

    name: str
    command: list[str] | None
    log: Path
    node: CkbNode | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    status: str = "pending"
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        if self.node is not None:
            self.node.start()
            self.process = self.node.process
        else:
            assert self.command is not None
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("ab") as out:
                self.process = subprocess.Popen(
                    self.command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **self.env},
                    preexec_fn=_die_with_parent,
                )
        self.status = "running"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace: float) -> None:
        if self.node is not None:
            self.node.stop(timeout=grace)
        elif self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.status = "stopped"

    def record(self) -> dict[str, Any]:
        pid = self.process.pid if self.process is not None else None
        return {
            "pid": pid,
            "pgid": os.getpgid(pid) if pid is not None and self.alive() else None,
            "status": self.status,
            "restarts": self.restarts,
            "log": str(self.log),
            "exit_code": self.process.returncode if self.process is not None else None,
        }


def service_port(config: DeployConfig, key: str) -> tuple[str, int]:
    """Where to reach a miner-facing port of the local stack from this machine."""
    port: int = getattr(config.ports, key)
    return config.bind.public_from_here, port


def port_open(address: tuple[str, int]) -> bool:
    import socket

    try:
        socket.create_connection(address, timeout=1).close()
    except OSError:
        return False
    return True


def proxy_available() -> bool:
    """True when this ckbpool has ``ckbpool proxy run`` (the translator ships in a later version)."""
    result = subprocess.run(
        [*cli_command(), "proxy", "run", "--help"], capture_output=True, timeout=60, stdin=subprocess.DEVNULL
    )
    return result.returncode == 0


def build_services(config: DeployConfig, paths: Paths, *, binary: Path | None = None) -> list[Service]:
    ld = local_dir(paths)
    logs = log_dir(paths)
    services: list[Service] = []
    if config.services.redis:
        redis = shutil.which("redis-server")
        if redis is None:
            raise TargetUnavailable(
                "services.redis is on but redis-server is not installed (apt-get install redis-server)"
            )
        (ld / "data" / "redis").mkdir(parents=True, exist_ok=True)
        services.append(Service("redis", [redis, str(ld / "redis.conf")], logs / "redis.log"))
    lock = parse_address(config.payout_address, config.network)
    if config.payouts.enabled:
        # the ledger is SQLite in the data dir (render.LOCAL_LEDGER); the rewards go to the payout wallet, as the
        # rendered ckb.toml of the other targets says (render.build_context)
        (ld / LOCAL_LEDGER).parent.mkdir(parents=True, exist_ok=True)
        lock = sec.payout_wallet_lock(paths.secrets_dir) or lock
    p = config.ports
    node_config = NodeConfig(
        data_dir=ld / "ckb",
        block_assembler_lock=lock,
        chain=config.network,
        rpc_host=config.bind.private,
        rpc_port=p.node_rpc,
        tcp_rpc_port=p.node_tcp_rpc,
        p2p_port=p.node_p2p,
        metrics_port=p.node_metrics,
    )
    node = CkbNode(node_config, binary)
    services.append(Service("ckb", None, node.log_path, node=node))
    (ld / "data" / "pool").mkdir(parents=True, exist_ok=True)
    services.append(Service("pool", [*cli_command(), "pool", "run", "-c", str(ld / "pool.toml")], logs / "pool.log"))
    if config.payouts.enabled:
        # the payout engine, its own process as on every target (it holds the wallet key): the same pool.toml,
        # the SQLite ledger it migrates, /metrics on bind.private:ports.payouts_metrics (Prometheus job payouts)
        services.append(
            Service("payouts", [*cli_command(), "payouts", "serve", "-c", str(ld / "pool.toml")], logs / "payouts.log")
        )
    if config.services.proxy and proxy_available():
        services.append(
            Service("proxy", [*cli_command(), "proxy", "run", "-c", str(ld / "proxy.toml")], logs / "proxy.log")
        )
    miner = config.services.miner
    if miner.enabled:
        host = config.bind.public_from_here
        authority = sec.authority_public_key(paths.secrets_dir)
        for i in range(miner.workers):
            user = f"{config.payout_address}.local-{i + 1}"
            if miner.protocol == "v1":  # CKB Stratum V1 through the proxy
                command = [*cli_command(), "miner", "--protocol", "v1", "--url", f"{host}:{p.proxy}", "--user", user]
            else:
                command = [*cli_command(), "miner", "--url", f"{host}:{p.stratum}", "--user", user,
                           "--authority-key", authority]  # fmt: skip
                if miner.extended:
                    command.append("--extended")
            command += ["--threads", str(miner.threads)]
            services.append(Service(f"miner-{i + 1}", command, logs / f"miner-{i + 1}.log"))
    return services


# ---------------------------------------------------------------------------------------- supervisor


class Supervisor:
    """Runs the services, restarts the ones that die, stops everything on SIGTERM/SIGINT."""

    def __init__(self, paths: Paths, services: list[Service]) -> None:
        self.paths = paths
        self.services = services
        self.stopping = False
        self.started_at = time.time()
        self.config_digest = local_config_digest(paths)

    def write_state(self, running: bool = True) -> None:
        path = state_path(self.paths)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "target": "local",
            "pid": os.getpid(),
            "running": running,
            "started_at": self.started_at,
            "config_digest": self.config_digest,
            "services": {s.name: s.record() for s in self.services},
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        try:
            for service in self.services:
                if self.stopping:
                    break
                service.start()
                self.write_state()
                if service.node is not None:  # the pool and miners need the node's RPC
                    try:
                        asyncio.run(service.node.wait_ready(timeout=120))
                    except CkbError as exc:
                        print(f"supervisor: ckb did not become ready: {exc}", flush=True)
                        service.status = "failed"
                        self.stopping = True
                elif service.name == "redis":
                    time.sleep(0.3)
                elif service.name == "pool":  # miners and the proxy connect to it: wait for its health
                    self._wait_pool(deadline=time.monotonic() + 60)
                elif service.name == "proxy":  # V1 miners connect to it
                    self._wait_port(service_port(load_config(self.paths.config_file), "proxy"), time.monotonic() + 30)
            while not self.stopping:
                self._supervise()
                time.sleep(0.5)
        finally:
            for service in reversed(self.services):
                with contextlib.suppress(Exception):
                    service.stop(STOP_GRACE_S)
            self.write_state(running=False)
        return 0

    def _wait_pool(self, deadline: float) -> None:
        config = load_config(self.paths.config_file)
        url = f"http://{config.bind.private}:{config.ports.pool_http}"
        while not self.stopping and time.monotonic() < deadline:
            if probe_pool(url, timeout=1.0).healthy:
                return
            time.sleep(0.2)

    def _wait_port(self, address: tuple[str, int], deadline: float) -> None:
        while not self.stopping and time.monotonic() < deadline:
            if port_open(address):
                return
            time.sleep(0.2)

    def _supervise(self) -> None:
        changed = False
        now = time.monotonic()
        for service in self.services:
            if service.alive() or self.stopping:
                continue
            if service.status == "running":
                code = service.process.returncode if service.process is not None else None
                delay = min(30.0, 2.0 ** min(service.restarts, 5))
                print(f"supervisor: {service.name} exited with {code}; restarting in {delay:.0f}s", flush=True)
                service.status = "restarting"
                service.next_start = now + delay
                changed = True
            elif service.status == "restarting" and now >= service.next_start:
                service.restarts += 1
                try:
                    service.start()
                except (OSError, CkbError) as exc:
                    print(f"supervisor: cannot restart {service.name}: {exc}", flush=True)
                    service.next_start = now + 30
                changed = True
        if changed:
            self.write_state()


def local_config_digest(paths: Paths) -> str:
    """Digest of the rendered local/ files (from render.json): a running stack with another digest is stale."""
    from .render import read_manifest

    files = (read_manifest(paths.workspace) or {}).get("files", {})
    local = sorted((k, v) for k, v in files.items() if k.startswith("local/"))
    return hashlib.sha256(json.dumps(local).encode()).hexdigest()[:16]


def supervise(workspace_config: Path) -> int:
    """Entry point of the detached supervisor process."""
    config = load_config(workspace_config)
    paths = Paths.of(workspace_config, config)
    services = build_services(config, paths)
    return Supervisor(paths, services).run()


# -------------------------------------------------------------------------------------------- target


class LocalTarget:
    name = "local"

    def __init__(self, config: DeployConfig, paths: Paths) -> None:
        self.config = config
        self.paths = paths
        p = config.ports
        self.rpc_url = f"http://{config.bind.private}:{p.node_rpc}"
        self.pool_http = f"http://{config.bind.private}:{p.pool_http}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def running_supervisor(self) -> int | None:
        state = read_state(self.paths)
        if state and state.get("running") and isinstance(state.get("pid"), int) and pid_alive(state["pid"]):
            pid: int = state["pid"]
            return pid
        return None

    def deploy(
        self,
        *,
        timeout: float = 180.0,
        on_progress: ProgressCallback | None = None,
        confirm: ConfirmCallback | None = None,
    ) -> None:
        """Start the supervisor (unless it runs already) and wait until every service is healthy.

        ``confirm`` is unused: processes on this machine cost nothing to start, so there is no plan to approve."""
        report = on_progress or (lambda service, state: None)
        from ..ckb.install import find_or_install_ckb

        try:
            find_or_install_ckb()
        except CkbError as exc:
            raise TargetUnavailable(f"no ckb binary: {exc}") from None
        state = read_state(self.paths)
        if (
            self.running_supervisor() is not None
            and state
            and state.get("config_digest") != local_config_digest(self.paths)
        ):
            report("supervisor", "restarting with the new configuration")
            self.destroy()
        if self.running_supervisor() is None:
            build_services(self.config, self.paths)  # fail early (missing redis-server, ...) in this process
            logs = log_dir(self.paths)
            logs.mkdir(parents=True, exist_ok=True)
            state_path(self.paths).unlink(missing_ok=True)
            with (logs / "supervisor.log").open("ab") as out:
                subprocess.Popen(
                    [sys.executable, "-m", "ckbpool.deploy.local", str(self.paths.config_file)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    cwd=str(self.paths.workspace),
                )
        self.wait_healthy(timeout=timeout, on_progress=report)

    def wait_healthy(self, *, timeout: float, on_progress: ProgressCallback) -> None:
        deadline = time.monotonic() + timeout
        reported: dict[str, str] = {}
        while True:
            health = self.health()
            for gone in set(reported) - {h.name for h in health}:
                if reported[gone] != "healthy":
                    on_progress(gone, "healthy")
                    reported[gone] = "healthy"
            pending = []
            for h in health:
                state = "healthy" if h.healthy else (h.detail or h.state)
                if reported.get(h.name) != state:
                    on_progress(h.name, state)
                    reported[h.name] = state
                if not h.healthy:
                    pending.append(h)
            failed = [h for h in pending if h.state in ("failed", "exited", "missing")]
            supervisor_state = read_state(self.paths)
            if supervisor_state is not None and not supervisor_state.get("running"):
                failed = failed or pending
            if failed:
                raise TargetError(self._failure(failed[0]))
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TargetError(self._failure(pending[0], timed_out=timeout))
            time.sleep(0.5)

    def _failure(self, h: ServiceHealth, timed_out: float | None = None) -> str:
        why = f"not healthy after {timed_out:.0f}s" if timed_out else h.detail or h.state
        tail = self.log_tail(h.name, 8)
        return f"{h.name} is {why}" + (f"; last log lines:\n{tail}" if tail else "")

    def health(self) -> list[ServiceHealth]:
        state = read_state(self.paths)
        out: list[ServiceHealth] = []
        if state is None:
            if time.time() - self._spawned_at() < 30:
                return [ServiceHealth("supervisor", "starting", False, "starting")]
            return [ServiceHealth("supervisor", "missing", False, "not running (run `ckbpool deploy`)")]
        services: dict[str, dict[str, Any]] = state.get("services", {})
        node = pool = None
        for name, record in services.items():
            pid = record.get("pid")
            alive = isinstance(pid, int) and pid_alive(pid)
            status = record.get("status", "?")
            if not state.get("running"):
                status = "stopped" if status in ("stopped", "running") else status
            elif status == "running" and not alive:
                status = "exited"
            healthy: bool | None = None
            detail = status
            if status == "running":
                if name == "ckb":
                    node = node or probe_node(self.rpc_url)
                    healthy = node.reachable
                    detail = f"tip {node.tip}" if node.reachable else "RPC not answering yet"
                elif name == "pool":
                    pool = pool or probe_pool(self.pool_http)
                    healthy = pool.healthy
                    detail = "ready" if pool.healthy else ("no template yet" if pool.reachable else "starting")
                elif name == "redis":
                    healthy = self._redis_ping()
                    detail = "PONG" if healthy else "not answering yet"
                elif name == "payouts":
                    address = (self.config.bind.private, self.config.ports.payouts_metrics)
                    healthy = port_open(address)
                    detail = f"metrics on {address[0]}:{address[1]}" if healthy else "starting"
                elif name == "proxy":
                    host, port = service_port(self.config, "proxy")
                    healthy = port_open((host, port))
                    detail = f"V1 on {host}:{port}" if healthy else "not listening yet"
                else:
                    healthy = True
            else:
                healthy = False
            out.append(ServiceHealth(name, status, healthy, detail))
        return out

    def _spawned_at(self) -> float:
        try:
            return (log_dir(self.paths) / "supervisor.log").stat().st_mtime
        except OSError:
            return 0.0

    def _redis_ping(self) -> bool:
        import redis

        try:
            password = (self.paths.secrets_dir / sec.REDIS_PASSWORD).read_text().strip()
            # as the pool logs in: Redis's ACL user "pool" (the default user is off)
            client = redis.Redis(
                host=self.config.bind.private,
                port=self.config.ports.redis,
                username=REDIS_POOL_USER,
                password=password,
                socket_timeout=1,
            )
            with contextlib.closing(client):
                return bool(client.ping())
        except (OSError, redis.RedisError):
            return False

    def destroy(self, *, purge: bool = False, timeout: float = 60.0) -> list[str]:
        """Stop every process of the stack; returns what was stopped. With ``purge``, delete its data."""
        stopped: list[str] = []
        state = read_state(self.paths)
        pid = self.running_supervisor()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            stopped.append("supervisor")
        # whatever survived (supervisor killed, timeout): kill by recorded pid / process group
        for name, record in (state or {}).get("services", {}).items():
            spid = record.get("pid")
            if isinstance(spid, int) and pid_alive(spid) and _is_ours(spid, self.paths):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(spid, signal.SIGKILL)
                stopped.append(name)
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if purge:
            ld = local_dir(self.paths)
            for path in (ld / "ckb" / "data", ld / "data", ld / "logs", ld / "state"):
                shutil.rmtree(path, ignore_errors=True)
            (ld / "ckb" / "ckb-run.log").unlink(missing_ok=True)
        return stopped

    def pids(self) -> list[int]:
        """Pids of the stack's processes that are still alive (for tests and the demo's leak check)."""
        state = read_state(self.paths) or {}
        pids = [state.get("pid")] + [r.get("pid") for r in state.get("services", {}).values()]
        return [p for p in pids if isinstance(p, int) and pid_alive(p)]

    # -- logs --------------------------------------------------------------------------------------
    def log_files(self) -> dict[str, Path]:
        state = read_state(self.paths) or {}
        files = {"supervisor": log_dir(self.paths) / "supervisor.log"}
        for name, record in state.get("services", {}).items():
            files[name] = Path(record["log"])
        return files

    def summary(self) -> RenderableType | None:
        """Nothing beyond the deploy's per-service progress lines: every service here is one line already."""
        return None

    def show_logs(self, service: str | None, *, lines: int, follow: bool, console: Console) -> None:
        files = self.log_files()
        if service is not None and service not in files:
            raise TargetError(f"no service {service!r} (services: {', '.join(files)})")
        chosen = {service: files[service]} if service else files
        for name in chosen:
            console.print(f"[bold]==> {name} <==[/bold]")
            console.print(self.log_tail(name, lines), markup=False, highlight=False)
        if follow:
            positions = {name: path.stat().st_size if path.exists() else 0 for name, path in chosen.items()}
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    for name, path in chosen.items():
                        try:
                            with path.open("rb") as fh:
                                fh.seek(positions[name])
                                chunk = fh.read()
                                positions[name] = fh.tell()
                        except OSError:
                            continue
                        for line in chunk.decode(errors="replace").splitlines():
                            console.print(f"{name} | {line}", markup=False, highlight=False)
                    time.sleep(0.5)

    def log_tail(self, service: str, lines: int = 40) -> str:
        path = self.log_files().get(service)
        if path is None:
            return ""
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_IS_A_TARGET: type[Target] = LocalTarget  # mypy: LocalTarget has every member of the Target protocol


def _is_ours(pid: int, paths: Paths) -> bool:
    """Guard against pid reuse: only kill a process whose command line mentions our workspace or ckbpool."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(paths.workspace) in cmdline or "ckbpool" in cmdline or str(paths.config_file) in cmdline


if __name__ == "__main__":  # pragma: no cover - the detached supervisor
    sys.exit(supervise(Path(sys.argv[1])))
