"""``ckbpool scrape-gateway run -c gateway.toml``: this host's exporters for the monitoring host, over TLS with a
bearer token (:mod:`ckbpool.scrapegw`). Runs on each scraped host of the hosts target (in the pool image)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

scrapegw_app = typer.Typer(no_args_is_help=True, help="The scrape gateway (TLS + token) for the monitoring host.")
console = Console(stderr=True)


@scrapegw_app.command("run")
def scrapegw_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="gateway configuration (TOML)")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Serve this host's exporters at https://<address>:<port>/scrape/<job> until SIGTERM."""
    from ..pool.config import ConfigError
    from ..scrapegw import ScrapeGateway, load_gateway_config
    from .app import _setup_logging
    from .serve import serve_until_signal

    _setup_logging(log_level)
    try:
        cfg = load_gateway_config(config)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None

    def started(gateway: ScrapeGateway) -> str:
        jobs = ", ".join(sorted(cfg.targets))
        return f"scrape gateway on https://{cfg.listen_host}:{gateway.port}/scrape/<job> ({jobs})"

    serve_until_signal(lambda: ScrapeGateway(cfg), "scrape gateway", started, console)
