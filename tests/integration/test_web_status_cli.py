"""`ckbpool status` points to the miners' page: a real pool process (accounting role, real Redis, [web] on)
answers /status with the page's URL, and the status command, probing it over HTTP as it probes any target,
prints that URL (table and --json). The target object is the one seam replaced: which machine the pool runs on
is not what this checks (the rendered deployments turn [web] on with issue 17's item 3)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckbpool.cli import deploy_cmds
from ckbpool.cli.app import app
from ckbpool.deploy.target import ServiceHealth
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.service import Pool
from support.redis import RedisServer

pytestmark = pytest.mark.integration


class PoolOnlyTarget:
    """Stands for wherever the pool runs: its HTTP status address is the real pool's."""

    def __init__(self, pool_http: str) -> None:
        self.pool_http = pool_http
        self.rpc_url = "http://127.0.0.1:1"  # no node here: status says it is unreachable

    def health(self) -> list[ServiceHealth]:
        return [ServiceHealth("pool", "running", True)]


async def test_status_prints_the_page_url(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "ckbpool.yaml"
    init = CliRunner().invoke(app, ["init", "-c", str(project), "--non-interactive", "--name", "webtest"])
    assert init.exit_code == 0, init.stdout + init.stderr
    config = PoolConfig.model_validate(
        {
            "roles": ["accounting"],
            "redis": {"url": redis_server.url},
            "blocks": {"data_dir": str(tmp_path / "blocks")},
            "http": {"listen_host": "127.0.0.1", "listen_port": 0},
            "web": {"enabled": True, "listen_host": "0.0.0.0", "listen_port": 0},
        }
    )
    async with Pool(config) as pool:
        assert pool.status_server is not None and pool.web_server is not None
        url = f"http://127.0.0.1:{pool.web_server.port}/"
        target = PoolOnlyTarget(f"http://127.0.0.1:{pool.status_server.port}")
        monkeypatch.setattr(deploy_cmds, "_target", lambda *args, **kwargs: target)

        def status(*flags: str) -> str:
            result = CliRunner().invoke(app, ["status", "-c", str(project), *flags])
            assert result.exit_code == 0, result.stdout + result.stderr
            return result.stdout

        table = await asyncio.to_thread(status)
        machine = json.loads(await asyncio.to_thread(status, "--json"))
    assert "miners' page" in table and url in table
    assert machine["pool"]["web"] == url
