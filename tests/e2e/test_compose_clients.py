"""The compose target on both compose clients the product supports, each selected explicitly (``CKBPOOL_COMPOSE``):

* ``v1``: docker-compose 1.29 (Debian's ``docker-compose``), the fallback ``compose_command()`` keeps;
* ``plugin``: the Compose v2+ CLI plugin run by the docker client (``<docker> compose``; Compose v5.6.0, built from
  its Go module by scripts/compose-deps.sh and linked into ``~/.docker/cli-plugins``).

For each: the rendered compose.yaml is read the same way (every profile parses, each service keeps its healthcheck
and its ``depends_on: condition: service_healthy``, the ``${CKBPOOL_UID:?...}`` guard stops the client with its
message when the variable is missing), and ``deploy --target compose`` of the smallest stack (ckb, pool, redis; no
page) comes up healthy in dependency order, a miner outside the stack gets a block accepted by the node, and
``destroy`` leaves no container or network. A client that is not installed skips its half and says how to get it.

Without the monitoring profile a run costs about a minute (mostly the ckb and pool healthchecks); the rest of the
compose e2e runs on whichever client ``compose_command()`` picks (the plugin, when it is installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ckbpool.deploy.compose import ComposeTarget, compose_command
from ckbpool.deploy.config import load_config
from ckbpool.deploy.image import docker_binary
from ckbpool.deploy.target import Paths

from .test_compose import (
    _containers,
    _networks,
    cli,
    compose_env,
    docker_engine,
    images,
    mine_a_block_from_outside,
    ports,
    secrets_to_an_operator,
)

pytestmark = pytest.mark.e2e
__all__ = ["compose_env", "docker_engine", "images"]  # session fixtures shared with test_compose.py

PROFILE_SETS = (["core"], ["core", "monitoring"], ["core", "monitoring", "testnet"])


def client_command(kind: str) -> str:
    """The ``CKBPOOL_COMPOSE`` value that selects ``kind``; skips when that client is not installed."""
    if kind == "v1":
        v1 = shutil.which("docker-compose")
        if v1 is None:
            pytest.skip("docker-compose v1 is not installed (scripts/docker-deps.sh installs Debian's)")
        return v1
    docker = docker_binary()
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(
            f"`{docker} compose` does not answer (no Compose v2+ plugin where the docker CLI looks; "
            f"scripts/compose-deps.sh builds and links it): {(probe.stderr or probe.stdout).strip()[-200:]}"
        )
    return f"{docker} compose"


@pytest.fixture(params=["v1", "plugin"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Selects one compose client for the product (``CKBPOOL_COMPOSE``) and returns its command."""
    monkeypatch.setenv("CKBPOOL_COMPOSE", client_command(request.param))
    command = compose_command()
    version = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0, version.stderr
    print(f"compose client: {' '.join(command)}: {version.stdout.strip().splitlines()[0]}")
    return command


def rendered_project(tmp_path: Path, prefix: str, *flags: str, web: bool = True) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "-y", "--name", f"{prefix}{os.getpid() % 10000}", "--bind-public", "127.0.0.1",
        "--share-interval", "0.5", *flags, *ports(),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    if not web:  # the miners' page is test_compose.py's; the client test keeps the stack small
        doc = yaml.safe_load(config.read_text())
        doc["web"] = {**(doc.get("web") or {}), "enabled": False}
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
    secrets_to_an_operator(config)
    assert cli("render", "-c", str(config), "--no-diff").exit_code == 0
    return config


def test_both_clients_read_the_rendered_file_alike(client: list[str], tmp_path: Path) -> None:
    """Profiles, healthchecks, depends_on conditions and the ``${VAR:?}`` guard, as each client reads them."""
    compose_dir = rendered_project(tmp_path, "cfg", "--no-grafana").parent / "workspace" / "compose"

    def config(*flags: str, env_file: Path | None = None) -> subprocess.CompletedProcess[str]:
        extra = ["--env-file", str(env_file)] if env_file else []
        environment = {k: v for k, v in os.environ.items() if k not in ("CKBPOOL_UID", "CKBPOOL_GID")}
        return subprocess.run(
            [*client, *extra, "-f", "compose.yaml", *flags, "config"],
            cwd=compose_dir, env=environment, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    for profiles in PROFILE_SETS:
        result = config(*(f for p in profiles for f in ("--profile", p)))
        assert result.returncode == 0, (profiles, result.stderr)
        services = yaml.safe_load(result.stdout)["services"]
        assert {"ckb", "pool", "redis"} <= set(services), (profiles, sorted(services))
        # (v1's `config` lists every service whatever the profiles; which ones start is checked by the deploy)
        assert ("prometheus" in services) >= ("monitoring" in profiles), (profiles, sorted(services))
        assert ("miner" in services) >= ("testnet" in profiles), (profiles, sorted(services))
        for name, service in services.items():
            assert service.get("healthcheck", {}).get("test"), name
            for dep, how in (service.get("depends_on") or {}).items():
                assert how["condition"] == "service_healthy", (name, dep, how)
        assert services["pool"]["depends_on"]["ckb"]["condition"] == "service_healthy"

    # no .env (an operator's plain `compose up` elsewhere): the guard stops the client, with its own message
    empty = tmp_path / "empty.env"
    empty.write_text("")
    guarded = config("--profile", "core", env_file=empty)
    assert guarded.returncode != 0, guarded.stdout[-400:]
    assert "CKBPOOL_UID" in guarded.stderr and "is not set" in guarded.stderr, guarded.stderr


def test_deploy_healthy_block_accepted_destroy_on_each_client(
    client: list[str], compose_env: dict[str, str], tmp_path: Path
) -> None:
    config = rendered_project(tmp_path, "cc", "--no-monitoring", "--no-miner", web=False)
    cfg = load_config(config)
    target = ComposeTarget(cfg, Paths.of(config, cfg))
    assert target.command("ps")[: len(client)] == client  # the product runs the selected client
    try:
        deployed = cli("deploy", "-c", str(config), "--target", "compose", "--timeout", "300")
        assert deployed.exit_code == 0, deployed.stdout + deployed.stderr
        health = {h.name: h.healthy for h in target.health()}
        assert health == {"ckb": True, "pool": True, "redis": True}, health

        block = mine_a_block_from_outside(target)
        assert block["status"] == "accepted"
        status = cli("status", "-c", str(config), "--target", "compose")
        assert status.exit_code == 0 and "accepted" in status.stdout, status.stdout
    finally:
        destroyed = cli("destroy", "-c", str(config), "--purge", "--yes")
    assert destroyed.exit_code == 0, destroyed.stdout + destroyed.stderr
    assert _containers(target.project) == [] and _networks(target.project) == []
