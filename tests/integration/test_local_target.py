"""The local target end to end, driven like a user through the CLI:
``init --non-interactive`` -> ``deploy --target local`` -> a CPU miner gets shares accepted and the node accepts
a block -> ``status`` shows it -> ``destroy`` leaves no process running.

Also: the rendered ckb.toml is the one the real node runs with, testnet/mainnet ckb.toml files load in ckb
(``ckb list-hashes`` parses the config and resolves the bundled spec, without touching the network), and the
rendered prometheus.yml files pass ``promtool check config``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from ckbpool.cli.app import app
from ckbpool.deploy.config import load_config
from ckbpool.deploy.local import LocalTarget, pid_alive, read_state
from ckbpool.deploy.target import Paths
from support.ports import port_flags

pytestmark = pytest.mark.integration

TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
MAINNET_ADDRESS = "ckb1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw7qkdnnclfkg59uzn8umtfd2kwxceqxwquc4"
TESTNET_GENESIS = "0x10639e0895502b5688a6be8cf69460d76541bfa4821629d86d62ba0aae3f9606"
MAINNET_GENESIS = "0x92b197aa1fba0f63633922c61c92375c9c074a93e85963554f5499fe1450d0e5"


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def deployed(tmp_path: Path, ckb_binary: Path) -> Iterator[tuple[Path, LocalTarget]]:
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "--non-interactive", "--name", "local-e2e", "--miner", "--no-monitoring",
        "--share-interval", "0.5",
        *port_flags("stratum", "pool_http", "node_rpc", "node_tcp_rpc", "node_p2p", "node_metrics", "redis"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    cfg = load_config(config)
    target = LocalTarget(cfg, Paths.of(config, cfg))
    try:
        yield config, target
    finally:
        target.destroy()


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_init_deploy_mine_status_destroy(deployed: tuple[Path, LocalTarget]) -> None:
    config, target = deployed
    start = time.monotonic()
    result = cli("deploy", "-c", str(config), "--target", "local", "--timeout", "180")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "is up on the local target" in result.stdout
    deploy_s = time.monotonic() - start

    # the node runs the rendered ckb.toml of the workspace
    state = read_state(target.paths)
    assert state is not None and state["running"]
    ckb_pid = state["services"]["ckb"]["pid"]
    cmdline = Path(f"/proc/{ckb_pid}/cmdline").read_bytes().split(b"\0")
    assert str(target.paths.workspace / "local" / "ckb").encode() in cmdline

    # a CPU miner's shares are accepted and the node accepts a block found through the pool
    def pool_status() -> dict[str, object]:
        status = cli("status", "-c", str(config), "--json")
        return json.loads(status.stdout)  # type: ignore[no-any-return]

    def mined() -> bool:
        pool = pool_status()["pool"]
        assert isinstance(pool, dict)
        return bool(pool["shares"].get("accepted", 0) > 0 and pool["blocks"].get("accepted", 0) >= 1)

    wait_for(mined, 90, "accepted shares and an accepted block")
    status = pool_status()
    pool = status["pool"]
    assert isinstance(pool, dict)
    accepted = [b for b in pool["status"]["last_blocks"] if b["status"] == "accepted"]
    assert accepted and accepted[0]["worker"].endswith(".local-1")
    header = httpx.post(
        target.rpc_url,
        json={"id": 1, "jsonrpc": "2.0", "method": "get_header_by_number", "params": [hex(accepted[-1]["height"])]},
        timeout=5,
    ).json()["result"]
    assert header["hash"] == accepted[-1]["hash"], "the pool says accepted, the node has another block"

    # the human table shows every service healthy, the tip and the blocks
    table = cli("status", "-c", str(config))
    assert table.exit_code == 0, table.stdout
    for text in ("redis", "ckb", "pool", "miner-1", "healthy", "node tip", "last blocks", "accepted"):
        assert text in table.stdout, text
    logs = cli("logs", "pool", "-c", str(config), "-n", "5")
    assert logs.exit_code == 0 and "==> pool <==" in logs.stdout

    # a config change re-deployed onto the running stack restarts it with the new files
    import yaml

    data = yaml.safe_load(config.read_text())
    data["pool"]["share_interval_s"] = 1.0
    config.write_text(yaml.safe_dump(data))
    old_pool_pid = state["services"]["pool"]["pid"]
    redeploy = cli("deploy", "-c", str(config), "--timeout", "120")
    assert redeploy.exit_code == 0, redeploy.stdout + redeploy.stderr
    new_state = read_state(target.paths)
    assert new_state is not None and new_state["services"]["pool"]["pid"] != old_pool_pid
    assert not pid_alive(old_pool_pid)
    assert "share_interval_s = 1.0" in (target.paths.workspace / "local" / "pool.toml").read_text()

    # destroy: nothing left running, data kept
    pids = target.pids()
    assert len(pids) >= 5  # supervisor, redis, ckb, pool, miner
    destroyed = cli("destroy", "-c", str(config))
    assert destroyed.exit_code == 0, destroyed.stderr
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "every process to exit")
    assert (target.paths.workspace / "local" / "ckb" / "data").is_dir()
    assert "unhealthy" in cli("status", "-c", str(config)).stdout
    print(f"deploy took {deploy_s:.1f}s")

    # a second deploy continues the same chain (data kept), then --purge deletes it
    again = cli("deploy", "-c", str(config), "--timeout", "120")
    assert again.exit_code == 0, again.stdout + again.stderr
    tip = httpx.post(
        target.rpc_url, json={"id": 1, "jsonrpc": "2.0", "method": "get_tip_block_number", "params": []}, timeout=5
    ).json()["result"]
    assert int(tip, 16) >= accepted[-1]["height"]
    pids = target.pids()
    assert cli("destroy", "-c", str(config), "--purge", "--yes").exit_code == 0
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10, "every process to exit")
    assert not (target.paths.workspace / "local" / "ckb" / "data").exists()


def test_deploy_reports_a_failing_service_with_its_log(tmp_path: Path, ckb_binary: Path) -> None:
    """A port already taken: deploy names the service that failed and shows its last log lines."""
    import socket

    config = tmp_path / "ckbpool.yaml"
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    flags = port_flags("stratum", "node_rpc", "node_tcp_rpc", "node_p2p", "node_metrics")
    assert cli("init", "-c", str(config), "-y", "--name", "fails", "--no-redis", "--no-monitoring",
               "--port", f"pool_http={taken}", *flags).exit_code == 0  # fmt: skip
    cfg = load_config(config)
    target = LocalTarget(cfg, Paths.of(config, cfg))
    try:
        result = cli("deploy", "-c", str(config), "--target", "local", "--timeout", "60")
        assert result.exit_code == 1
        assert "error: pool is" in result.stderr
        assert "address already in use" in result.stderr.lower() or "errno 98" in result.stderr.lower()
    finally:
        target.destroy()
        blocker.close()
    assert not target.pids()


@pytest.mark.parametrize(
    ("network", "address", "genesis"),
    [("testnet", TESTNET_ADDRESS, TESTNET_GENESIS), ("mainnet", MAINNET_ADDRESS, MAINNET_GENESIS)],
    ids=["testnet", "mainnet"],
)
def test_rendered_ckb_toml_loads_in_ckb(
    tmp_path: Path, ckb_binary: Path, network: str, address: str, genesis: str
) -> None:
    config = tmp_path / "ckbpool.yaml"
    init = cli("init", "-c", str(config), "-y", "--network", network, "--payout-address", address)
    assert init.exit_code == 0, init.stderr
    assert cli("render", "-c", str(config), "--no-diff").exit_code == 0
    for place in ("local/ckb", "compose/ckb"):
        out = subprocess.run(
            [str(ckb_binary), "list-hashes", "-C", str(tmp_path / "workspace" / place)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0 and "Error" not in out.stdout + out.stderr, out.stdout + out.stderr
        assert f'genesis = "{genesis}"' in out.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (apt-get install prometheus)")
def test_rendered_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    config = tmp_path / "ckbpool.yaml"
    assert cli("init", "-c", str(config), "-y", "--kafka").exit_code == 0
    assert cli("render", "-c", str(config), "--no-diff").exit_code == 0
    for place in ("local", "compose"):
        path = tmp_path / "workspace" / place / "prometheus" / "prometheus.yml"
        out = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        rules = yaml.safe_load((path.parent / "rules" / "ckbpool.yml").read_text())
        count = sum(len(group["rules"]) for group in rules["groups"])
        assert count >= 10 and f"SUCCESS: {count} rules found" in out.stdout  # the rules shipped with the render


def test_make_demo_bounded_run(ckb_binary: Path) -> None:
    """`make demo`'s program with the bounds CI uses: blocks accepted, clean shutdown, nothing left running."""
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ckbpool.demo", "--blocks", "2", "--duration", "90", "--miners", "1"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "everything stopped" in out.stdout
    assert "blocks accepted by the node" in out.stdout
    accepted = int(out.stdout.rsplit("shares accepted, ", 1)[1].split()[0])
    assert accepted >= 2


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path, ckb_binary: Path) -> None:
    """Unbounded demo, then SIGINT (Ctrl-C): every process of the stack is gone, exit code 0."""
    import signal
    import sys

    from ckbpool.deploy.local import read_state as read

    work = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ckbpool.demo", "--miners", "1", "--dir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        cfg_file = work / "ckbpool.yaml"

        def mining() -> bool:
            if not cfg_file.exists():
                return False
            cfg = load_config(cfg_file)
            state = read(Paths.of(cfg_file, cfg))
            return bool(state and "miner-1" in state["services"] and state["services"]["miner-1"]["pid"])

        wait_for(mining, 120, "the demo's miner to start")
        cfg = load_config(cfg_file)
        state = read(Paths.of(cfg_file, cfg))
        assert state is not None
        pids = [state["pid"]] + [r["pid"] for r in state["services"].values() if r["pid"]]
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-2000:]
    assert "stopping..." in out and "everything stopped" in out
    assert not any(pid_alive(p) for p in pids)


def test_local_target_with_the_proxy_and_a_v1_miner(tmp_path: Path, ckb_binary: Path) -> None:
    """services.proxy + a CKB Stratum V1 CPU miner: its blocks reach the node through proxy -> pool."""
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "-y", "--name", "local-v1", "--no-redis", "--no-monitoring", "--proxy", "--miner",
        "--miner-protocol", "v1", "--share-interval", "0.5",
        *port_flags("stratum", "proxy", "proxy_http", "pool_http", "node_rpc", "node_tcp_rpc", "node_p2p",
                    "node_metrics"),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    cfg = load_config(config)
    target = LocalTarget(cfg, Paths.of(config, cfg))
    try:
        deployed = cli("deploy", "-c", str(config), "--timeout", "180")
        assert deployed.exit_code == 0, deployed.stdout + deployed.stderr
        assert {h.name: h.healthy for h in target.health()} == {
            "ckb": True,
            "pool": True,
            "proxy": True,
            "miner-1": True,
        }

        def proxied_block() -> bool:
            assert "Traceback" not in target.log_tail("proxy", 200), target.log_tail("proxy", 12)
            status = json.loads(cli("status", "-c", str(config), "--json").stdout)
            blocks = status["pool"]["status"].get("last_blocks", []) if status["pool"]["reachable"] else []
            # per-worker identity through the proxy: the block is the V1 miner's own (payout address, worker local-1)
            return any(b["status"] == "accepted" and b["worker"] == f"{cfg.payout_address}.local-1" for b in blocks)

        wait_for(proxied_block, 120, "a block mined through the proxy")
        # the proxy's own /metrics, where the rendered proxy.toml put it (the operator's private address)
        metrics = httpx.get(f"http://{cfg.bind.private}:{cfg.ports.proxy_http}/metrics", timeout=5).text
        assert 'ckbpool_proxy_upstream_up{service="v1"} 1.0' in metrics, metrics[:2000]
        assert 'ckbpool_proxy_shares_total{result="accepted",service="v1"}' in metrics
    finally:
        pids = target.pids()
        target.destroy(purge=True)
    assert not any(pid_alive(p) for p in pids)
