"""The hosts target's side of ansible-runner: events folded into per-host progress lines and the summary table,
failures named with host and task, the inventory remembered between deploy and destroy, and the CLI's
``--target hosts`` errors as one line."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy.config import load_config
from ckbpool.deploy.hosts import HostsTarget, RunView, ansible_dir
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit


def event(kind: str, host: str | None = None, **data: Any) -> dict[str, Any]:
    return {"event": kind, "event_data": {**({"host": host} if host else {}), **data}}


def test_events_become_progress_lines_and_a_summary_table() -> None:
    lines: list[tuple[str, str]] = []
    view = RunView(lambda host, text: lines.append((host, text)))
    for e in [
        event("playbook_on_play_start", play="Deploy the ckbpool mining pool"),
        event("runner_on_start", "node-1", task="btcpool : Preflight | Check the memory"),
        event("runner_on_ok", "node-1", task="x", res={"changed": False}),
        event("runner_on_start", "node-1", task="btcpool : Configure | Configuration files"),
        event("runner_on_ok", "node-1", res={"changed": True}),
        event("runner_on_start", "pool-1", task="btcpool : Deploy | Bring up the services of this host"),
        event("runner_on_failed", "pool-1", res={"msg": "non-zero return code", "stderr": "ERROR: for pool\nboom"}),
        event("runner_on_skipped", "node-1"),
        event("playbook_on_stats", ok={"node-1": 2, "pool-1": 0}, changed={"node-1": 1}, failures={"pool-1": 1}),
    ]:
        view.handle(e)
    assert view.play == "Deploy the ckbpool mining pool"
    assert ("node-1", "Configure | Configuration files (ok 1, changed 0)") in lines
    assert ("node-1", "Configure | Configuration files (ok 2, changed 1)") in lines
    assert view.hosts["node-1"].changed_tasks == ["Configure | Configuration files"]
    assert view.failures == [
        "pool-1: Deploy | Bring up the services of this host: non-zero return code: ERROR: for pool / boom"
    ]
    assert view.changed() == 1
    assert view.hosts["pool-1"].state == "failed" and view.hosts["node-1"].state == "done"
    buffer = io.StringIO()
    Console(file=buffer, width=120).print(view.summary_table("mypool"))
    table = buffer.getvalue()
    assert "node-1" in table and "pool-1" in table and "failed" in table and "done" in table


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(app, ["init", "-c", str(config), "-y", "--name", "ht", "--no-miner"])
    assert result.exit_code == 0, result.stderr
    return config


def test_inventory_is_remembered_and_addresses_come_from_it(project: Path, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[all]\nnode-1 ansible_host=203.0.113.1 private_ip=10.7.0.1\n"
        "pool-1 ansible_host=203.0.113.2 private_ip=10.7.0.2\n"
        "[ckb_node]\nnode-1\n[pool]\npool-1\n[redis]\npool-1\n[monitoring]\npool-1\n"
    )
    cfg = load_config(project)
    paths = Paths.of(project, cfg)
    first = HostsTarget(cfg, paths, inventory)
    assert first.groups() == {"ckb_node": ["node-1"], "pool": ["pool-1"], "redis": ["pool-1"], "monitoring": ["pool-1"]}
    assert first.rpc_url == f"http://10.7.0.1:{cfg.ports.node_rpc}"
    again = HostsTarget(cfg, paths)  # destroy/status without -i
    assert again.inventory == inventory.resolve()
    assert (ansible_dir() / "roles" / "btcpool" / "meta" / "main.yml").exists()


def test_cli_hosts_target_errors_are_one_line(project: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["deploy", "-c", str(project), "--target", "hosts", "-i", str(tmp_path / "missing.ini")]
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.ini does not exist" in errors[0], result.stderr
