"""A real operator's deploy: ``ckbpool init`` + ``ckbpool render`` as an ordinary user (uid 4242, neither root nor
the images' usual 1000) with umask 077, then a plain ``docker compose up -d`` (or ``docker-compose up -d``) in
``workspace/compose`` -- no ckbpool command, no variable but the CKBPOOL_IMAGE_* overrides of the locally built
stand-in images -- until every service's container is healthy; then ``down -v``.

This is what the rendered files alone must get right: the profiles, project name and the user of the
secret-reading services in ``.env`` (the owner of the 0600 secrets), config files that ckb (uid 1000) and
Prometheus (nobody) can read although a 077 umask was in force, and ``compose/data/*`` owned by that user before
the Docker daemon would create them as root.

The renders run in a forked child of this (root) test process that drops to uid 4242: the venv's interpreter
may live where another user cannot execute it (under /root), and the child needs no new executable.
Skipped only when the Docker engine cannot be started on this machine, or when not running as root (which is
needed to render as another user).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy.compose import compose_command, read_env_file
from ckbpool.deploy.errors import TargetUnavailable
from support.ports import port_flags

from .images import build, docker

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
OPERATOR_UID = OPERATOR_GID = 4242
SERVICES = {"ckb", "pool", "redis", "prometheus", "node-exporter", "redis-exporter"}


@pytest.fixture(scope="session")
def stand_in_images() -> dict[str, str]:
    """The engine (started by scripts/docker-deps.sh) and the images of the stack, built from the local base."""
    if os.geteuid() != 0:
        pytest.skip("rendering as another user (uid 4242) needs root")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-deps.sh")], capture_output=True, text=True, timeout=1200
    )
    if result.returncode != 0:
        pytest.skip("docker engine unavailable: " + " / ".join((result.stderr or result.stdout).splitlines()[-5:]))
    return build(["ckb", "pool", "redis", "prometheus", "node-exporter", "redis-exporter"])


def run_as_operator(base: Path, *commands: list[str]) -> list[tuple[int, str]]:
    """Each ``ckbpool`` command line in a child process running as uid/gid 4242 (no supplementary groups), with
    umask 077 and HOME=base; returns (exit code, output) per command."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        results: list[tuple[int, str]] = []
        try:
            os.close(read_end)
            os.environ["HOME"] = str(base)
            os.setgroups([])
            os.setgid(OPERATOR_GID)
            os.setuid(OPERATOR_UID)
            os.umask(0o077)
            os.chdir(base)
            for args in commands:
                result = CliRunner().invoke(app, args)
                results.append((result.exit_code, result.output + (repr(result.exception) if result.exit_code else "")))
                if result.exit_code != 0:
                    break
        except BaseException as exc:  # anything goes back to the parent
            results.append((-1, repr(exc)))
        finally:
            with os.fdopen(write_end, "w") as out:
                out.write(json.dumps(results))
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return [(code, text) for code, text in json.loads(data or "[]")]


@pytest.fixture
def operator_workspace(tmp_path: Path) -> Iterator[Path]:
    """An operator's project directory, rendered by the operator: returns workspace/compose."""
    # warm up this process's imports as root first: the child cannot read the interpreter's stdlib under /root
    warm = tmp_path / "warm"
    for args in (["init", "-c", str(warm / "ckbpool.yaml"), "-y", "--name", "warm", "--no-miner"],
                 ["render", "-c", str(warm / "ckbpool.yaml"), "--no-diff"]):  # fmt: skip
        assert CliRunner().invoke(app, args).exit_code == 0
    base = Path(tempfile.mkdtemp(prefix="ckbpool-operator-", dir="/tmp"))  # /tmp: reachable by uid 4242
    os.chown(base, OPERATOR_UID, OPERATOR_GID)
    config = str(base / "ckbpool.yaml")
    ports = port_flags("stratum", "pool_http", "node_rpc", "prometheus", "web")
    try:
        results = run_as_operator(
            base,
            ["init", "-c", config, "-y", "--name", f"plain{os.getpid() % 10000}", "--bind-public", "127.0.0.1",
             "--no-grafana", "--no-miner", "--share-interval", "0.5", *ports],
            ["render", "-c", config, "--no-diff"],
        )  # fmt: skip
        assert len(results) == 2 and all(code == 0 for code, _ in results), results
        yield base / "workspace" / "compose"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _health(project: str) -> dict[str, str]:
    """service -> health (or state, when it has no health) of the project's containers."""
    ids = subprocess.run(
        [docker(), "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    if not ids:
        return {}
    inspected = json.loads(
        subprocess.run([docker(), "inspect", *ids], capture_output=True, text=True, timeout=60).stdout or "[]"
    )
    out: dict[str, str] = {}
    for container in inspected:
        service = container["Config"]["Labels"].get("com.docker.compose.service", "?")
        state = container["State"]
        out[service] = (state.get("Health") or {}).get("Status") or state.get("Status", "?")
        out[f"{service}:user"] = container["Config"].get("User", "")
    return out


def test_plain_compose_up_as_an_operator_with_umask_077(
    operator_workspace: Path, stand_in_images: dict[str, str]
) -> None:
    try:
        command = compose_command()
    except TargetUnavailable as exc:
        pytest.skip(f"no compose CLI: {exc}")
    compose_dir = operator_workspace
    dotenv = read_env_file(compose_dir / ".env")
    assert (dotenv["CKBPOOL_UID"], dotenv["CKBPOOL_GID"]) == (str(OPERATOR_UID), str(OPERATOR_GID))
    project = dotenv["COMPOSE_PROJECT_NAME"]
    # nothing from this test's environment but how to find programs and the engine, plus the image overrides
    env = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_HOST") if k in os.environ}
    env.update({k: v for k, v in stand_in_images.items() if k.startswith("CKBPOOL_IMAGE_")})

    def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *args], cwd=compose_dir, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        deadline = time.monotonic() + 300
        health: dict[str, str] = {}
        while time.monotonic() < deadline:
            health = _health(project)
            if all(health.get(s) == "healthy" for s in SERVICES):
                break
            time.sleep(3)
        logs = "" if all(health.get(s) == "healthy" for s in SERVICES) else compose("logs", "--tail", "20").stdout
        assert all(health.get(s) == "healthy" for s in SERVICES), (health, logs[-4000:])
        assert {s for s in health if ":" not in s} == SERVICES  # the profiles of .env, nothing more
        for service in ("pool", "redis", "redis-exporter"):
            assert health[f"{service}:user"] == f"{OPERATOR_UID}:{OPERATOR_GID}", service
    finally:
        down = compose("down", "-v", "--remove-orphans", timeout=300)
        assert down.returncode == 0, down.stderr
    assert _health(project) == {}
