"""``ckbpool`` commands. Errors become one clear line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .. import __version__

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Stratum V2 mining pool for Nervos CKB.")
pool_app = typer.Typer(no_args_is_help=True, help="Run pool services.")
app.add_typer(pool_app, name="pool")
proxy_app = typer.Typer(no_args_is_help=True, help="Run the V1<->V2 translator (CKB Stratum V1 ASICs, ckb miner).")
app.add_typer(proxy_app, name="proxy")
console = Console(stderr=True)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@app.command()
def version() -> None:
    """Print the ckbpool version."""
    typer.echo(__version__)


@pool_app.command("run")
def pool_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="pool configuration (TOML)")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the pool services this config's ``roles`` name (all of them: the embedded pool)."""
    from ..pool.config import ConfigError, load_pool_config
    from ..pool.procs import with_default_workers
    from ..pool.service import Pool

    _setup_logging(log_level)
    try:
        cfg = with_default_workers(load_pool_config(config))  # stratum.workers unset: one per core
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    _install_uvloop()

    async def run() -> None:
        try:
            pool = Pool(cfg)
        except (ValueError, OSError) as exc:
            console.print(f"[red]cannot start the pool: {exc}[/red]")
            raise typer.Exit(2) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await pool.start()
        # SIGHUP: re-read the Noise key and certificate (after `ckbpool keys rotate`); connected miners stay
        loop.add_signal_handler(signal.SIGHUP, pool.reload_credentials)
        where = f" on {pool.server.address[0]}:{pool.server.address[1]}" if pool.server else ""
        if pool.stratum_processes is not None:
            where = " on {}:{} ({} stratum processes)".format(
                *pool.stratum_processes.address, pool.stratum_processes.count
            )
        console.print(f"[green]ckbpool running ({', '.join(sorted(pool.roles))}){where}[/green]")
        if pool.web_server is not None:
            console.print(f"miners' page and API on {pool.web_server.url}")
        try:
            await stop.wait()
        finally:
            await pool.close()

    asyncio.run(run())


@proxy_app.command("run")
def proxy_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="proxy configuration (TOML)")],
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Serve CKB Stratum V1 (and, if enabled, ckb miner's getwork RPC) on one SV2 upstream channel each."""
    from ..proxy import Proxy, ProxyConfigError, load_proxy_config
    from .serve import serve_until_signal

    _setup_logging(log_level)
    try:
        cfg = load_proxy_config(config)
    except ProxyConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    _install_uvloop()

    def started(proxy: Proxy) -> str:
        where = []
        if proxy.v1 is not None:
            where.append("V1 on {}:{}".format(*proxy.v1.address))
        if proxy.getwork is not None:
            where.append("getwork on http://{}:{}/".format(*proxy.getwork.address))
        if proxy.status_server is not None:
            where.append(f"metrics on http://{proxy.status_server.host}:{proxy.status_server.port}/metrics")
        up = cfg.upstream
        return f"ckbpool proxy running ({', '.join(where)}) -> pool {up.host}:{up.port}"

    # a start that fails (a port taken) closes what had started, e.g. the V1 listener before getwork's bind failed
    serve_until_signal(lambda: Proxy(cfg), "proxy", started, console)


@app.command()
def miner(
    url: Annotated[str, typer.Option(help="pool address, host:port")],
    user: Annotated[str, typer.Option(help="user identity, e.g. <ckb address>.<worker>")],
    authority_key: Annotated[
        str | None, typer.Option(help="the pool's authority public key (Base58Check); required unless --no-noise")
    ] = None,
    protocol: Annotated[str, typer.Option(help="v2 (Stratum V2) or v1 (CKB Stratum V1, e.g. via the proxy)")] = "v2",
    extended: Annotated[bool, typer.Option(help="open an extended channel instead of a standard one")] = False,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    duration: Annotated[float | None, typer.Option(help="seconds to mine (default: until Ctrl-C)")] = None,
    noise: Annotated[bool, typer.Option(help="encrypt (Noise NX); off only for plaintext test pools")] = True,
    log_level: str = "info",
) -> None:
    """CPU miner (Eaglesong batch search in C) for demos, tests and load."""
    from ..miner.sv2 import MinerError, Sv2Miner

    _setup_logging(log_level)
    if protocol == "v1":
        _miner_v1(url, user, threads, duration)
        return
    if protocol != "v2":
        console.print(f"[red]--protocol must be v1 or v2, got {protocol!r}[/red]")
        raise typer.Exit(2)
    if noise and not authority_key:
        console.print("[red]--authority-key is required: miners must authenticate the pool (or pass --no-noise)[/red]")
        raise typer.Exit(2)
    host, _, port = url.removeprefix("stratum2+tcp://").rpartition(":")
    if not host or not port.isdigit():
        console.print(f"[red]--url must be host:port, got {url!r}[/red]")
        raise typer.Exit(2)
    sv2_miner = Sv2Miner(
        host, int(port), user, authority_public_key=authority_key, extended=extended, threads=threads, noise=noise
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sv2_miner.stop)
        stats = await sv2_miner.run(duration=duration)
        console.print(
            f"submitted {stats.submitted}, accepted {stats.accepted}, rejected {stats.rejected} "
            f"{stats.rejected_reasons or ''}, {stats.hashes} hashes"
        )

    try:
        asyncio.run(run())
    except (MinerError, OSError) as exc:
        console.print(f"[red]miner stopped: {exc}[/red]")
        raise typer.Exit(1) from None


def _miner_v1(url: str, user: str, threads: int, duration: float | None) -> None:
    """The CKB Stratum V1 CPU miner (what the proxy's ASIC port expects)."""
    from ..miner.sv2 import MinerError
    from ..miner.v1 import V1Miner

    host, _, port = url.removeprefix("stratum+tcp://").rpartition(":")
    if not host or not port.isdigit():
        console.print(f"[red]--url must be host:port, got {url!r}[/red]")
        raise typer.Exit(2)
    v1_miner = V1Miner(host, int(port), user, threads=threads)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, v1_miner.stop)
        stats = await v1_miner.run(duration=duration)
        console.print(
            f"submitted {stats.submitted}, accepted {stats.accepted}, rejected {stats.rejected} "
            f"{stats.rejected_codes or ''}, {stats.hashes} hashes"
        )

    try:
        asyncio.run(run())
    except (MinerError, OSError) as exc:
        console.print(f"[red]miner stopped: {exc}[/red]")
        raise typer.Exit(1) from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def keys(ctx: typer.Context) -> None:
    """Pool key material: generate | issue-cert | rotate | show-pub (see `ckbpool keys -- --help`); `keys rotate
    kafka --bootstrap H:P --secrets-dir D [--principal P ...]` rotates the bus's SCRAM passwords instead."""
    if ctx.args[:2] == ["rotate", "kafka"]:
        # the running broker learns the new credentials (admin API) before the files change: see
        # ckbpool.deploy.kafka_security.rotate_scram for the order and the window it leaves
        from ..deploy.kafka_security import _main as kafka_main

        raise typer.Exit(kafka_main(["rotate", *ctx.args[2:]]))
    from ..sv2.keys import main as keys_main

    raise typer.Exit(keys_main(ctx.args))


from .deploy_cmds import register as _register_deploy_commands  # noqa: E402 - init, render, deploy, ...

_register_deploy_commands(app)

from .image_cmds import image_app  # noqa: E402 - image build, image push

app.add_typer(image_app, name="image")

from .payouts_cmds import payouts_app  # noqa: E402 - payouts status, run, history, serve

app.add_typer(payouts_app, name="payouts")

from .rpcfilter_cmds import rpcfilter_app  # noqa: E402 - rpc-filter run

app.add_typer(rpcfilter_app, name="rpc-filter")

from .scrapegw_cmds import scrapegw_app  # noqa: E402 - scrape-gateway run

app.add_typer(scrapegw_app, name="scrape-gateway")


def main() -> None:
    app()
