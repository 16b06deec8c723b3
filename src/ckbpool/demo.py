"""`make demo`: the whole pool on this machine, live.

The local deploy target on a fresh dev chain (ckb node with Eaglesong PoW, the pool over encrypted Stratum V2,
Redis accounting when redis-server is installed) plus CPU miners, and a live view of hashrate, shares and blocks
until Ctrl-C; then everything is stopped cleanly. It goes through the same code as ``ckbpool init`` /
``render`` / ``deploy --target local`` / ``destroy``, in a throwaway directory on free loopback ports.

``--duration`` and ``--blocks`` bound the run (for CI); without them it runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from .ckb.address import encode_address
from .ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, DevKey
from .ckb.install import find_or_install_ckb
from .ckb.node import free_port
from .deploy.config import DeployConfig, dump_config, parse_config
from .deploy.errors import DeployError
from .deploy.local import LocalTarget
from .deploy.probe import NodeProbe, PoolProbe, format_hashrate, probe_node, probe_pool
from .deploy.render import render
from .deploy.secrets import generate_secrets
from .deploy.target import Paths


def demo_config(miners: int, threads: int, redis: bool) -> DeployConfig:
    ports = {
        key: free_port()
        for key in ("stratum", "pool_http", "node_rpc", "node_tcp_rpc", "node_p2p", "node_metrics", "redis")
    }
    return parse_config(
        {
            "name": "demo",
            "network": "dev",
            "payout_address": encode_address(DevKey(DEV_GENESIS_PRIVATE_KEY).lock, "dev"),
            "ports": ports,
            "bind": {"public": "127.0.0.1"},
            "pool": {"share_interval_s": 1.0},
            # ~4 M hashes a block: a block every few seconds from two CPU miners, several shares per block
            "node": {"block_message": "ckbpool demo", "dev_difficulty": 1 << 22},
            "services": {"redis": redis, "miner": {"enabled": True, "workers": miners, "threads": threads}},
            "monitoring": {"enabled": False},
        },
        "demo",
    )


def view(config: DeployConfig, node: NodeProbe, pool: PoolProbe, started: float, first_tip: int | None) -> Group:
    st = pool.status if pool.reachable else {}
    summary = Table.grid(padding=(0, 3))
    for _ in range(4):
        summary.add_column()
    elapsed = time.monotonic() - started
    found = int(sum(pool.blocks.values()))
    summary.add_row(
        "[bold]pool hashrate[/bold]",
        format_hashrate(float(st.get("hashrate_hps", 0.0))),
        "[bold]node tip[/bold]",
        str(node.tip) if node.reachable else "[red]unreachable[/red]",
    )
    summary.add_row(
        "[bold]shares accepted[/bold]",
        str(pool.accepted_shares),
        "[bold]blocks accepted[/bold]",
        f"{pool.accepted_blocks} of {found} found",
    )
    rejected = {k: int(v) for k, v in pool.shares.items() if k != "accepted" and v}
    summary.add_row(
        "[bold]shares rejected[/bold]",
        ", ".join(f"{k} {v}" for k, v in rejected.items()) or "0",
        "[bold]miners[/bold]",
        f"{st.get('connections', 0)} connected",
    )
    rate = 0.0
    if node.tip is not None and first_tip is not None and elapsed > 0:
        rate = 60 * (node.tip - first_tip) / elapsed
    summary.add_row("[bold]running[/bold]", f"{elapsed:.0f} s", "[bold]blocks/min[/bold]", f"{rate:.1f}")
    blocks = Table(title="last blocks found by the pool", expand=True)
    blocks.add_column("height", min_width=6, no_wrap=True)
    blocks.add_column("block hash", overflow="ellipsis", no_wrap=True, ratio=3)
    blocks.add_column("status", min_width=8, no_wrap=True)
    blocks.add_column("worker", min_width=8, no_wrap=True)
    for b in st.get("last_blocks", [])[:6]:
        colour = "green" if b["status"] == "accepted" else "yellow"
        worker = str(b.get("worker", "")).rpartition(".")[2]
        blocks.add_row(str(b["height"]), b["hash"], f"[{colour}]{b['status']}[/{colour}]", worker)
    title = f"ckbpool demo: dev chain, Stratum V2 (Noise) on 127.0.0.1:{config.ports.stratum} -- Ctrl-C to stop"
    return Group(Panel(summary, title=title), blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--miners", type=int, default=2, help="CPU miner processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="threads per miner (default 1)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--blocks", type=int, default=None, help="stop after this many accepted blocks")
    parser.add_argument("--dir", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (chain, logs)")
    args = parser.parse_args(argv)
    console = Console()

    with console.status("finding or building the pinned ckb binary...") as spinner:
        binary = find_or_install_ckb(progress=lambda line: spinner.update(line))
    console.print(f"ckb binary: {binary}")
    work = args.dir or Path(tempfile.mkdtemp(prefix="ckbpool-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    config = demo_config(args.miners, args.threads, redis=shutil.which("redis-server") is not None)
    config_file = work / "ckbpool.yaml"
    config_file.write_text(dump_config(config))
    paths = Paths.of(config_file, config)
    generate_secrets(config, paths.secrets_dir)
    render(config, paths)
    console.print(f"workspace: {paths.workspace} (the same files `ckbpool render` writes)")
    target = LocalTarget(config, paths)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored
    code = 0
    pool = PoolProbe(False)
    try:
        with console.status("starting the local stack...") as spinner:
            target.deploy(timeout=180, on_progress=lambda s, state: spinner.update(f"{s}: {state}"))
        started = time.monotonic()
        first_tip = probe_node(target.rpc_url).tip
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:
                node = probe_node(target.rpc_url, timeout=2)
                pool = probe_pool(target.pool_http, timeout=2)
                live.update(view(config, node, pool, started, first_tip))
                if args.blocks is not None and pool.accepted_blocks >= args.blocks:
                    break
                if args.duration is not None and time.monotonic() - started >= args.duration:
                    break
                time.sleep(1.0)
        console.print()
    except KeyboardInterrupt:
        console.print("\nstopping...")
    except DeployError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        code = 1
    finally:
        with console.status("stopping the node, the pool and the miners..."), contextlib.suppress(Exception):
            target.destroy()
        left = target.pids()
        if left:
            console.print(f"[red]processes still running: {left}[/red]")
            code = 1
        if args.keep or args.dir is not None:
            console.print(f"everything stopped; data and logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            console.print("everything stopped")
    console.print(
        f"demo result: {pool.accepted_shares} shares accepted, {pool.accepted_blocks} blocks accepted by the node"
    )
    if args.blocks is not None and pool.accepted_blocks < args.blocks:
        code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
