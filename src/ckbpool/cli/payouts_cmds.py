"""``ckbpool payouts ...``: the operator's view of and hand on the payout engine (:mod:`ckbpool.payouts.engine`).

All of them read the pool's config (``--config``, the ``[payouts]`` section): ``status`` and ``history`` only read
(the ledger and the node; they do not need payouts enabled, so an operator can look before turning it on), ``run``
does one pass (``--dry-run``: track blocks and settle nothing -- only print what would be paid), ``serve`` runs
the engine until SIGINT/SIGTERM with /metrics on ``payouts.metrics_port``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from ..pool.config import PoolConfig

payouts_app = typer.Typer(no_args_is_help=True, help="PPLNS payouts: status, history, one pass, the engine.")
out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="pool configuration (TOML) with [payouts]")]


def _ckb(shannons: int) -> str:
    whole, frac = divmod(abs(shannons), 100_000_000)
    return f"{'-' if shannons < 0 else ''}{whole:,}.{frac:08d} CKB"


def _load(config: Path, *, need_enabled: bool) -> PoolConfig:
    from ..pool.config import ConfigError, load_pool_config

    try:
        cfg = load_pool_config(config)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if need_enabled and not cfg.payouts.enabled:
        err.print(f"[red]{config}: payouts are off ([payouts] enabled = false); nothing is paid[/red]")
        raise typer.Exit(2)
    if cfg.payouts.database() is None or cfg.payouts.wallet_key_file is None or cfg.payouts.fee_address is None:
        err.print(f"[red]{config}: [payouts] needs a database, wallet_key_file and fee_address[/red]")
        raise typer.Exit(2)
    return cfg


def _run(coro: object) -> None:
    from ..ckb.errors import CkbError
    from ..ckb.txbuild import PaymentError
    from ..payouts.ledger import LedgerError

    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except (CkbError, PaymentError, LedgerError, OSError, ValueError) as exc:
        err.print(f"[red]payouts: {exc}[/red]")
        raise typer.Exit(1) from None


@payouts_app.command("status")
def status(config: ConfigOption) -> None:
    """Wallet address and balance, immature / payable / in flight / paid totals, and the next batch."""
    cfg = _load(config, need_enabled=False)
    from ..payouts.engine import open_engine

    async def show() -> None:
        async with open_engine(cfg) as engine:
            balances = await asyncio.to_thread(engine.ledger.balances)
            wallet = await engine.wallet.balance()
            blocks = await asyncio.to_thread(engine.ledger.blocks)
            open_txs = await asyncio.to_thread(engine.ledger.payouts, ("recorded", "sent"))
            out.print(f"payouts: {'enabled' if cfg.payouts.enabled else 'DISABLED (enabled = false)'}")
            out.print(f"wallet:  {engine.wallet.address}")
            out.print(f"         spendable {_ckb(wallet.spendable)}, immature {_ckb(wallet.immature)} "
                      f"(indexer at block {wallet.indexer_tip})")  # fmt: skip
            totals = {
                k: sum(getattr(b, k) for b in balances.values()) for k in ("immature", "payable", "in_flight", "paid")
            }
            out.print(f"ledger:  immature {_ckb(totals['immature'])}, payable {_ckb(totals['payable'])}, "
                      f"in flight {_ckb(totals['in_flight'])}, paid {_ckb(totals['paid'])}")  # fmt: skip
            by_status: dict[str, int] = {}
            for block in blocks:
                by_status[block.status] = by_status.get(block.status, 0) + 1
            out.print("blocks:  " + (", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"))
            if totals["payable"] > wallet.spendable:
                out.print(f"[red]the wallet is short by {_ckb(totals['payable'] - wallet.spendable)}[/red]")
            if open_txs:
                out.print(f"open:    {len(open_txs)} payout transaction(s) not yet committed: "
                          + ", ".join(f"{t.tx_hash[:16]}.. ({t.status})" for t in open_txs))  # fmt: skip
            batches = engine.plan(balances)
            if not batches:
                out.print(f"next:    nothing (no balance reaches {_ckb(cfg.payouts.threshold_shannons)})")
            for i, batch in enumerate(batches):
                out.print(f"next:    batch {i + 1}: {len(batch)} outputs, {_ckb(sum(p.amount for p in batch))}")

    _run(show())


@payouts_app.command("history")
def history(
    config: ConfigOption,
    limit: Annotated[int, typer.Option(min=1, help="newest N transactions")] = 20,
    address: Annotated[str | None, typer.Option(help="only payments to this address")] = None,
) -> None:
    """Payout transactions, newest first: hash, status, fee and each payment line."""
    cfg = _load(config, need_enabled=False)
    from ..payouts.ledger import Ledger

    url = cfg.payouts.database()
    assert url is not None
    ledger = Ledger.open(url)
    try:
        rows = ledger.payouts()
    finally:
        ledger.close()
    shown = 0
    for row in reversed(rows):
        lines = [(a, amount) for a, amount in row.outputs if address is None or a == address]
        if not lines:
            continue
        out.print(
            f"{row.tx_hash}  {row.status:<9} fee {row.fee} shannons"
            + (f"  ({row.gone_reason})" if row.gone_reason else "")
        )
        for a, amount in lines:
            note = " (includes the transaction fee)" if a == cfg.payouts.fee_address else ""
            out.print(f"    {a}  {_ckb(amount)}{note}")
        shown += 1
        if shown >= limit:
            break
    if not shown:
        out.print("no payout transactions")


@payouts_app.command("run")
def run(
    config: ConfigOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="track and show what would be paid; send nothing")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """One pass of the engine: track blocks, settle open payouts, pay balances over the threshold."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    cfg = _load(config, need_enabled=not dry_run)
    from ..payouts.engine import open_engine

    async def once() -> None:
        async with open_engine(cfg) as engine:
            report = await engine.run_once(dry_run=dry_run)
        for block_hash, state in sorted(report.blocks.items()):
            out.print(f"block {block_hash}: {state}")
        for tx_hash, state in report.settled.items():
            out.print(f"payout {tx_hash}: {state}")
        for i, batch in enumerate(report.planned):
            verb = "would pay" if dry_run else "due"
            out.print(f"batch {i + 1} {verb}: " + ", ".join(f"{p.address} {_ckb(p.amount)}" for p in batch))
        for tx_hash, outputs, amount in report.paid:
            out.print(f"sent {tx_hash}: {outputs} outputs, {_ckb(amount)}")
        if report.skipped:
            out.print(f"not paid: {report.skipped}")

    _run(once())


@payouts_app.command("serve")
def serve(
    config: ConfigOption,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run the payout engine until SIGINT/SIGTERM (one per pool: the process that holds the wallet key)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    cfg = _load(config, need_enabled=True)
    from prometheus_client import start_http_server

    from ..payouts.engine import PayoutMetrics, open_engine

    async def loop() -> None:
        metrics = PayoutMetrics()
        if cfg.payouts.metrics_port is not None:
            start_http_server(cfg.payouts.metrics_port, cfg.payouts.metrics_host, registry=metrics.registry)
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(sig, stop.set)
        async with open_engine(cfg, metrics=metrics) as engine:
            await engine.serve(stop)

    _run(loop())
