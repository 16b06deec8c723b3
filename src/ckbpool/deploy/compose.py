"""The ``compose`` target: ``docker compose up`` of the rendered ``workspace/compose`` stack, then wait for health.

Works with the compose v2 plugin (``docker compose``) and with compose v1 (``docker-compose`` >= 1.28, which
honours profiles and ``depends_on: condition: service_healthy``); ``CKBPOOL_COMPOSE`` picks one explicitly
(e.g. ``CKBPOOL_COMPOSE=docker-compose``). Health comes from the engine (each service's healthcheck), read with
``docker inspect`` through the compose labels, so it does not depend on the compose version either.

Containers that read secrets run as the owner of the secrets (``CKBPOOL_UID``/``CKBPOOL_GID``, which render
writes into ``.env``; never root), so the secret files stay 0600 on the host; their data lives in
``compose/data/`` (bind mounts owned by that user). The others keep their image's user and use named volumes.
``destroy`` is ``down`` (containers and networks); ``--purge`` adds ``-v`` and deletes ``compose/data``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .config import DeployConfig
from .errors import TargetError, TargetUnavailable
from .image import docker_binary
from .render import compose_profiles, compose_project, compose_root_problem, prepare_compose_data
from .target import ConfirmCallback, Paths, ServiceHealth, Target

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

PROJECT_LABEL = "com.docker.compose.project"
#: ``${NAME}`` / ``${NAME:-default}`` in the rendered compose file
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}")
SERVICE_LABEL = "com.docker.compose.service"


def _docker_or_none() -> str | None:
    try:
        return docker_binary()
    except TargetUnavailable:
        return None


def compose_command() -> list[str]:
    """``docker compose`` when the v2 plugin is there, else ``docker-compose``; ``CKBPOOL_COMPOSE`` overrides."""
    explicit = os.environ.get("CKBPOOL_COMPOSE")
    if explicit:
        return shlex.split(explicit)
    docker = _docker_or_none()
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    if v1 is not None:
        return [v1]
    raise TargetUnavailable("neither `docker compose` nor `docker-compose` is installed")


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return env
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


class ComposeTarget:
    name = "compose"

    def __init__(self, config: DeployConfig, paths: Paths) -> None:
        self.config = config
        self.paths = paths
        self.dir = paths.workspace / "compose"
        self.project = compose_project(config)
        p = config.ports
        self.rpc_url = f"http://{config.bind.private}:{p.node_rpc}"
        self.pool_http = f"http://{config.bind.private}:{p.pool_http}"

    # -- plumbing ----------------------------------------------------------------------------------
    def profiles(self) -> list[str]:
        return compose_profiles(self.config)

    def env(self) -> dict[str, str]:
        """The rendered .env, overridden by the caller's environment (CKBPOOL_IMAGE_* for local images).

        CKBPOOL_UID/GID come from .env like everything else (render writes the owner of the secrets there), not
        from our own uid: under sudo that would be root, and a plain ``compose up`` would not see it anyway."""
        env = {**read_env_file(self.dir / ".env"), **os.environ}
        env.setdefault("COMPOSE_PROJECT_NAME", self.project)
        return env

    def command(self, *args: str) -> list[str]:
        flags: list[str] = []
        for profile in self.profiles():
            flags += ["--profile", profile]
        return [*compose_command(), "-p", self.project, "-f", str(self.dir / "compose.yaml"), *flags, *args]

    def run(self, *args: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                self.command(*args),
                cwd=self.dir,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise TargetError(f"compose {' '.join(args)} did not finish within {timeout:.0f}s") from None
        if check and result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise TargetError(f"compose {args[0]} failed: " + " / ".join(last))
        return result

    def check_user(self) -> None:
        """Refuse to run the secret-reading services as root (or as nobody in particular: compose would stop on
        the missing variable, with a less helpful message)."""
        env = self.env()
        uid, gid = env.get("CKBPOOL_UID", "").strip(), env.get("CKBPOOL_GID", "").strip()
        if not uid or not gid:
            raise TargetError(compose_root_problem(self.paths.secrets_dir))
        if uid == "0":
            raise TargetError(
                "CKBPOOL_UID=0 in the environment would run the services that read secrets as root; unset it "
                "(render writes the owner of the secrets into .env) or set the uid that owns them"
            )

    def engine_check(self) -> None:
        result = subprocess.run([docker_binary(), "info"], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise TargetUnavailable(
                "the docker engine is not reachable (start it, e.g. scripts/docker-deps.sh): "
                + (result.stderr.strip().splitlines() or ["no answer"])[-1]
            )

    def _active_services(self) -> dict[str, dict[str, Any]]:
        """The rendered file's services that the active profiles start, by name (one read of compose.yaml)."""
        try:
            doc = yaml.safe_load((self.dir / "compose.yaml").read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TargetError(f"cannot read {self.dir / 'compose.yaml'}: {exc}") from None
        active = set(self.profiles())
        services: dict[str, dict[str, Any]] = doc.get("services", {})
        return {n: svc for n, svc in services.items() if not svc.get("profiles") or active & set(svc["profiles"])}

    def expected_services(self) -> list[str]:
        """Services of the rendered file that the active profiles start."""
        return list(self._active_services())

    def containers(self) -> dict[str, dict[str, Any]]:
        """service -> ``docker inspect`` of its (first) container, found by the compose project label."""
        docker = docker_binary()
        ids = subprocess.run(
            [docker, "ps", "-aq", "--filter", f"label={PROJECT_LABEL}={self.project}"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.split()
        if not ids:
            return {}
        result = subprocess.run([docker, "inspect", *ids], capture_output=True, text=True, timeout=60)
        try:
            inspected: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        except ValueError:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for container in inspected:
            service = container.get("Config", {}).get("Labels", {}).get(SERVICE_LABEL)
            if service and service not in out:
                out[service] = container
        return out

    # -- target ------------------------------------------------------------------------------------
    def health(self) -> list[ServiceHealth]:
        containers = self.containers()
        out = []
        for service in self.expected_services():
            container = containers.get(service)
            if container is None:
                out.append(ServiceHealth(service, "missing", False, "no container"))
                continue
            state = container.get("State", {})
            status = state.get("Status", "?")
            health = (state.get("Health") or {}).get("Status")
            if status != "running":
                detail = status
                if status in ("exited", "restarting"):
                    detail = f"{status}, exit code {state.get('ExitCode')}, {container.get('RestartCount', 0)} restarts"
                out.append(ServiceHealth(service, status, False, detail))
            elif health is None:
                out.append(ServiceHealth(service, status, True, "running (no healthcheck)"))
            else:
                out.append(ServiceHealth(service, status, health == "healthy", health))
        return out

    def service_images(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """image -> the first service that runs it, for the services the active profiles start, with the
        ``${CKBPOOL_IMAGE_X:-default}`` references resolved the way compose resolves them (``env``, default:
        the environment compose gets)."""
        env = self.env() if env is None else env
        out: dict[str, str] = {}
        for service, definition in self._active_services().items():
            raw = str(definition.get("image", ""))
            name = _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(3) or ""), raw)
            if name:
                out.setdefault(name, service)
        return out

    def prepare_images(self, report: Callable[[str, str], None]) -> None:
        """Every image present BEFORE ``up``: the pool image built by ckbpool itself (never pulled), each
        official image pulled when missing. A failure names the image and the reason and nothing has started;
        compose itself then never pulls (it only pulls what is missing)."""
        from .image import build_pool_image, build_step, image_id, is_local_image, pull_image

        env = self.env()
        base = env.get("CKBPOOL_IMAGE_POOL_BASE") or self.config.images.pool_base
        images = self.service_images(env)
        # pulls first: a missing official image fails in seconds, before minutes of building
        for name, service in images.items():
            if not is_local_image(name) and image_id(name) is None:
                report("image", f"pulling {name}")
                pull_image(name, service=service)
        for name in filter(is_local_image, images):
            report("image", f"building {name}")

            def on_line(line: str, name: str = name) -> None:
                step = build_step(line)
                if step:
                    report("image", f"building {name}: {step}")

            built = build_pool_image(name, base=base, on_line=on_line)
            report("image", f"{name} {'built' if built.built else 'up to date'} ({built.id[:19]})")
        report("image", "healthy")

    def deploy(
        self,
        *,
        timeout: float = 300.0,
        on_progress: Callable[[str, str], None] | None = None,
        confirm: ConfirmCallback | None = None,  # unused: containers on this engine have no plan to approve
    ) -> None:
        report = on_progress or (lambda service, state: None)
        self.check_user()
        self.engine_check()
        self.prepare_images(report)
        # compose/data/<service> owned by CKBPOOL_UID (render made them; `destroy --purge` deletes them)
        prepare_compose_data(self.config, self.paths)
        # `up -d` blocks while dependencies become healthy; run it beside the health poll
        result: dict[str, subprocess.CompletedProcess[str] | BaseException] = {}

        def up() -> None:
            try:
                result["up"] = self.run("up", "-d", "--remove-orphans", timeout=timeout, check=False)
            except BaseException as exc:
                result["up"] = exc

        thread = threading.Thread(target=up, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        reported: dict[str, str] = {}
        retried = False
        while True:
            time.sleep(1.0)
            health = self.health()
            for h in health:
                state = "healthy" if h.healthy else h.detail
                if reported.get(h.name) != state:
                    report(h.name, state)
                    reported[h.name] = state
            done = "up" in result
            outcome = result.get("up")
            if isinstance(outcome, BaseException):
                raise TargetError(str(outcome))
            if done and isinstance(outcome, subprocess.CompletedProcess) and outcome.returncode != 0:
                text = outcome.stderr + outcome.stdout
                crashed = any(h.state in ("exited", "dead", "restarting") for h in health)
                if not retried and "is unhealthy" in text and not crashed:
                    # docker-compose v1 gives up on a dependency whose health check failed while a loaded host was
                    # still starting it; if nothing crashed, wait for the services it did start and `up` once more
                    retried = True
                    while time.monotonic() < deadline and not all(h.healthy for h in self.health()):
                        time.sleep(2.0)
                    del result["up"]
                    thread = threading.Thread(target=up, daemon=True)
                    thread.start()
                    continue
                bad = next((h for h in health if not h.healthy), None)
                detail = (outcome.stderr or outcome.stdout).strip().splitlines()[-3:]
                raise TargetError(self._failure(bad, " / ".join(detail)))
            if done and all(h.healthy for h in health):
                return
            if done:
                # a crashed container: exited, dead, or cycling through its restart policy
                dead = next((h for h in health if h.state in ("exited", "dead", "restarting")), None)
                if dead is not None:
                    raise TargetError(self._failure(dead, ""))
            if time.monotonic() > deadline:
                bad = next((h for h in health if not h.healthy), None)
                raise TargetError(self._failure(bad, f"not healthy after {timeout:.0f}s"))

    def _failure(self, bad: ServiceHealth | None, context: str) -> str:
        if bad is None:
            return f"compose up failed: {context}"
        tail = self.log_tail(bad.name, 10)
        why = f"{bad.state}, {bad.detail}" if bad.detail != bad.state else bad.state
        return f"service {bad.name} is unhealthy ({why}){': ' + context if context else ''}" + (
            f"; last log lines:\n{tail}" if tail else ""
        )

    def log_tail(self, service: str, lines: int = 20) -> str:
        result = self.run("logs", "--no-color", "--tail", str(lines), service, timeout=60, check=False)
        return (result.stdout + result.stderr).strip()

    def summary(self) -> RenderableType | None:
        """Nothing beyond the deploy's per-service progress lines (and `ckbpool status` for the details)."""
        return None

    def show_logs(self, service: str | None, *, lines: int, follow: bool, console: Console) -> None:
        """``docker compose logs`` writes to the terminal itself, so ``console`` is not used."""
        args = ["logs", "--no-color", "--tail", str(lines)]
        if follow:
            args.append("--follow")
        if service:
            args.append(service)
        subprocess.run(self.command(*args), cwd=self.dir, env=self.env(), check=False)

    def destroy(self, *, purge: bool = False, timeout: float = 180.0) -> list[str]:
        names = sorted(self.containers())
        args = ["down", "--remove-orphans"]
        if purge:
            args.append("-v")
        self.run(*args, timeout=timeout)
        if purge:
            shutil.rmtree(self.dir / "data", ignore_errors=True)
        return names

    def processes(self) -> list[str]:
        return list(self.containers())


_IS_A_TARGET: type[Target] = ComposeTarget  # mypy: ComposeTarget has every member of the Target protocol
