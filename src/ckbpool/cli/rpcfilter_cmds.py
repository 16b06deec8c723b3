"""``ckbpool rpc-filter run -c filter.toml``: the node's RPC behind a method allowlist, over TLS
(:mod:`ckbpool.rpcfilter`). Runs on the node's host (in the pool image), in front of the node's loopback RPC."""

from __future__ import annotations

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
    from .serve import serve_until_signal

    _setup_logging(log_level)
    try:
        cfg = load_filter_config(config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None

    def started(rpc_filter: RpcFilter) -> str:
        tcp = f", subscriptions on {rpc_filter.tcp_port}" if rpc_filter.tcp_port else ""
        return (
            f"RPC filter on https://{cfg.listen_host}:{rpc_filter.http_port}/{tcp} -> {cfg.upstream_url} "
            f"({len(ALLOWED_METHODS)} methods allowed)"
        )

    serve_until_signal(lambda: RpcFilter(cfg), "RPC filter", started, console)
