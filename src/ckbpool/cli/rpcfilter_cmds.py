"""``ckbpool rpc-filter run -c filter.toml``: the node's RPC behind a method allowlist, over TLS
(:mod:`ckbpool.rpcfilter`). Runs on the node's host (in the pool image), in front of the node's loopback RPC."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

rpcfilter_app = typer.Typer(no_args_is_help=True, help="The node's RPC filter (allowlist + TLS) for other hosts.")
console = Console(stderr=True)


@rpcfilter_app.command("run")
def rpcfilter_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="filter configuration (TOML)")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Serve the allowed node RPC methods over HTTPS (and the new-tip subscription over TLS) until SIGTERM."""
    from ..pool.config import ConfigError
    from ..rpcfilter import ALLOWED_METHODS, RpcFilter, load_filter_config
    from .app import _setup_logging

    _setup_logging(log_level)
    try:
        cfg = load_filter_config(config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None

    async def run() -> None:
        rpc_filter = RpcFilter(cfg)
        try:
            await rpc_filter.start()
        except (ValueError, OSError, ConfigError) as exc:
            await rpc_filter.close()
            console.print(f"[red]cannot start the RPC filter: {exc}[/red]")
            raise typer.Exit(2) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        tcp = f", subscriptions on {rpc_filter.tcp_port}" if rpc_filter.tcp_port else ""
        console.print(
            f"[green]RPC filter on https://{cfg.listen_host}:{rpc_filter.http_port}/{tcp} -> {cfg.upstream_url} "
            f"({len(ALLOWED_METHODS)} methods allowed)[/green]"
        )
        try:
            await stop.wait()
        finally:
            await rpc_filter.close()

    asyncio.run(run())
