"""The payout engine: one loop that turns found blocks into miners' money on chain, and never pays twice.

Each pass (:meth:`PayoutEngine.run_once`), in this order:

1. **Track** (:class:`~.tracker.BlockTracker`): new outcomes from the pool's block list, then every open block
   found -> accepted (the PPLNS window is read from the share log *now*, while it is still complete, and fixed
   in the ledger) -> finalized (the node's reward; credits written) -> mature -> credited (payable), or void.
2. **Settle** every payout transaction the ledger holds as ``recorded`` or ``sent`` by asking the node about
   that very transaction (``get_transaction``):

   - committed -> ``committed`` (its payments are paid);
   - pending / proposed -> wait (a ``recorded`` one becomes ``sent``: the node has it);
   - unknown / rejected (never sent because we crashed, or dropped by the node) -> send the **same signed
     bytes** again (same hash: if it ever commits, it is the payment we recorded, not a second one). If the
     node refuses it because an input is already consumed by a committed transaction, that transaction can
     never commit any more (a cell is consumed once; ckb refuses the double spend, ``OutPointError::Dead``),
     so it is ``gone`` and its amounts are payable again -- paid by a new transaction in a later pass. Any other
     refusal (fee, pool full) leaves it as it is: it is retried, counted and alerted on, never replaced.
3. **Pay**, only when nothing is left to settle (so no new transaction can conflict with an older one whose
   fate is open): every address whose payable balance reaches the threshold, in batches of ``batch_size``
   outputs from the wallet. For each batch: build and sign (the hash is known), **record** it in the ledger
   (which reserves the amounts against payable in the same database transaction), then **send**, then mark
   sent. A crash between any two of these steps leaves a recorded transaction that step 2 settles at restart.

Who pays the network's fee: the pool. Each transaction's fee is charged to the operator's ``fee_address``
(its payment line in the ledger is its own output, if it is paid in that batch, plus the fee), so a miner's
address receives exactly its credits, and ``sum(payable) + sum(payment lines) == sum(credited rewards)``
with the transaction fees inside the operator's lines.

Why a process of its own (``ckbpool payouts serve``) and not a pool role: it holds the wallet key (only on the
host that pays), it must run once (a second engine is harmless -- the ledger's advisory lock lets one record a
balance -- but pointless), its database and wallet work is slow and synchronous next to the Stratum event loop,
and an operator stops or restarts payouts without touching mining. It reads the pool's Redis (block list,
share log) and the node; it shares nothing else with the pool.

Test-only crash points: ``CKBPOOL_PAYOUTS_TEST_CRASH_AT=after-record`` (or ``after-send``) makes the process
SIGKILL itself right after recording a batch (before sending it), or right after the node took it (before the
ledger says sent) -- the two moments the "never pay twice" rule is about, made reproducible for the
integration test. Never set it in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..ckb.errors import CkbError
from ..ckb.rpc import CkbRpcClient
from ..ckb.structures import Transaction
from ..ckb.txbuild import InsufficientFunds, PaymentError
from ..pool.config import PayoutSettings, PoolConfig
from .ledger import Balance, Ledger, LedgerError, PayoutView
from .tracker import BlockTracker, PayoutPolicy
from .wallet import InputSpent, PayoutWallet, SendRejected, SignedBatch, TxState, load_key_file

log = logging.getLogger(__name__)

#: test-only: the named point at which the engine SIGKILLs its own process (see the module docstring)
CRASH_ENV = "CKBPOOL_PAYOUTS_TEST_CRASH_AT"
CRASH_POINTS = ("after-record", "after-send")


def _crash_point(name: str) -> None:
    """SIGKILL this process if the test asked for a crash here: no cleanup, no flush -- a real kill -9."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("payouts: %s=%s: killing this process (test-only crash point)", CRASH_ENV, name)
        os.kill(os.getpid(), signal.SIGKILL)


class PayoutMetrics:
    """The payouts process' /metrics (names in monitoring/metric-names.yml, section ``ckbpool_payouts``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.payable = Gauge("ckbpool_payouts_payable_shannons", "Payable balances, all addresses", registry=r)
        self.immature = Gauge(
            "ckbpool_payouts_immature_shannons", "Credits of blocks not yet mature, all addresses", registry=r
        )
        self.paid = Gauge("ckbpool_payouts_paid_shannons", "Paid in committed transactions, all time", registry=r)
        self.in_flight = Gauge(
            "ckbpool_payouts_in_flight_shannons", "Held by recorded or sent, not yet committed payouts", registry=r
        )
        self.wallet_spendable = Gauge(
            "ckbpool_payouts_wallet_spendable_shannons", "Mature shannons in the payout wallet", registry=r
        )
        self.wallet_shortfall = Gauge(
            "ckbpool_payouts_wallet_shortfall_shannons",
            "Payable balances the wallet's mature cells cannot cover (0 = covered)",
            registry=r,
        )
        self.oldest_unconfirmed = Gauge(
            "ckbpool_payouts_oldest_unconfirmed_seconds",
            "Age of the oldest recorded or sent payout transaction not yet committed (0 = none)",
            registry=r,
        )
        self.unconfirmed_limit = Gauge(
            "ckbpool_payouts_unconfirmed_limit_seconds",
            "payouts.unconfirmed_alert_s: the alert fires when a payout stays unconfirmed longer",
            registry=r,
        )
        self.last_pass = Gauge(
            "ckbpool_payouts_last_pass_timestamp_seconds", "Unix time of the last successful pass", registry=r
        )
        self.transactions = Counter(
            "ckbpool_payouts_transactions", "Payout transactions by what happened to them", ["event"], registry=r
        )
        self.paid_out = Counter(
            "ckbpool_payouts_sent_shannons", "Shannons sent to miners in payout transactions", registry=r
        )
        self.pass_errors = Counter("ckbpool_payouts_pass_errors", "Engine passes that failed", registry=r)
        for event in ("recorded", "sent", "committed", "resent", "gone", "refused", "unfunded"):
            self.transactions.labels(event=event)


@dataclass(frozen=True)
class PlannedPayment:
    """One output of a batch to come: ``amount`` is what the address receives."""

    address: str
    amount: int


@dataclass
class PassReport:
    """What one pass did (also what ``ckbpool payouts run`` prints)."""

    blocks: dict[str, str] = field(default_factory=dict)
    settled: dict[str, str] = field(default_factory=dict)  # tx hash -> committed | pending | resent | gone | ...
    paid: list[tuple[str, int, int]] = field(default_factory=list)  # (tx hash, outputs, shannons) sent
    planned: list[list[PlannedPayment]] = field(default_factory=list)
    skipped: str = ""  # why nothing was paid, if nothing was


class PayoutEngine:
    """Track, settle, pay -- see the module docstring. One instance per payouts process."""

    def __init__(
        self,
        settings: PayoutSettings,
        ledger: Ledger,
        wallet: PayoutWallet,
        tracker: BlockTracker,
        metrics: PayoutMetrics | None = None,
    ) -> None:
        if settings.fee_address is None:
            raise ValueError("payouts.fee_address is required to pay (it pays the transaction fees)")
        self.settings = settings
        self.fee_address = settings.fee_address
        self.ledger = ledger
        self.wallet = wallet
        self.tracker = tracker
        self.metrics = metrics or PayoutMetrics()
        self.metrics.unconfirmed_limit.set(settings.unconfirmed_alert_s)

    async def _db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- settle --------------------------------------------------------------------------------------------
    async def settle(self) -> dict[str, str]:
        """Ask the node about every recorded / sent payout and act on the answer; returns hash -> outcome."""
        outcome: dict[str, str] = {}
        open_txs: list[PayoutView] = await self._db(self.ledger.payouts, ("recorded", "sent"))
        for view in open_txs:
            outcome[view.tx_hash] = await self._settle_one(view)
        return outcome

    async def _settle_one(self, view: PayoutView) -> str:
        tx_hash = bytes.fromhex(view.tx_hash)
        status = await self.wallet.status(tx_hash)
        if status.state == TxState.COMMITTED:
            assert status.block_hash is not None
            if await self._db(self.ledger.mark_committed, view.tx_hash, status.block_hash):
                self.metrics.transactions.labels(event="committed").inc()
                log.info("payouts: transaction %s committed in block %s", view.tx_hash, status.block_hash.hex())
            return "committed"
        if status.state in (TxState.PENDING, TxState.PROPOSED):
            if view.status == "recorded" and await self._db(self.ledger.mark_sent, view.tx_hash):
                self.metrics.transactions.labels(event="sent").inc()
            return status.state.value
        # unknown (never sent, or forgotten) or rejected (dropped): the same signed bytes again
        tx = Transaction.from_json(json.loads(view.raw_tx), "payout_txs.raw_tx")
        if tx.hash() != tx_hash:
            raise LedgerError(f"transaction {view.tx_hash}: the recorded bytes hash to {tx.hash().hex()}")
        try:
            await self.wallet.send(tx)
        except InputSpent as exc:
            if exc.spent:
                reason = (
                    f"input {exc.spent[0].tx_hash.hex()}:{exc.spent[0].index} is consumed by a committed "
                    f"transaction; this one can never be committed (node: {exc.node_message})"
                )
                if await self._db(self.ledger.mark_gone, view.tx_hash, reason):
                    self.metrics.transactions.labels(event="gone").inc()
                    log.warning("payouts: transaction %s is gone: %s; its amounts are payable again",
                                view.tx_hash, reason)  # fmt: skip
                return "gone"
            # inputs the chain has never seen (a reorg took their creator away?): they may come back; wait
            self.metrics.transactions.labels(event="refused").inc()
            log.warning("payouts: transaction %s: %s; retrying next pass", view.tx_hash, exc)
            return "refused"
        except SendRejected as exc:
            self.metrics.transactions.labels(event="refused").inc()
            log.warning("payouts: transaction %s: %s; retrying next pass", view.tx_hash, exc)
            return "refused"
        self.metrics.transactions.labels(event="resent").inc()
        log.info("payouts: transaction %s (%s) sent again, same bytes", view.tx_hash, status.state.value)
        await self._db(self.ledger.mark_sent, view.tx_hash)
        return "resent"

    # -- plan and pay --------------------------------------------------------------------------------------
    def plan(self, balances: dict[str, Balance]) -> list[list[PlannedPayment]]:
        """The batches due now: every payable balance >= threshold, largest first (ties by address), cut into
        ``batch_size`` outputs. The operator's own line keeps back one batch's fee bound for the fee."""
        threshold = self.settings.threshold_shannons
        due: list[PlannedPayment] = []
        for address, balance in balances.items():
            amount = balance.payable
            if address == self.fee_address:
                amount -= self.settings.max_batch_fee()
            if amount >= threshold:
                due.append(PlannedPayment(address, amount))
        due.sort(key=lambda p: (-p.amount, p.address))
        size = self.settings.batch_size
        return [due[i : i + size] for i in range(0, len(due), size)]

    async def pay(self, *, dry_run: bool = False) -> PassReport:
        """Settle first; then, if nothing is open, pay what is due (``dry_run``: only say what would be paid)."""
        report = PassReport()
        if dry_run:  # look, do not touch: open payouts are listed with their ledger status, not re-sent
            open_txs: list[PayoutView] = await self._db(self.ledger.payouts, ("recorded", "sent"))
            report.settled = {view.tx_hash: f"open ({view.status})" for view in open_txs}
        else:
            report.settled = await self.settle()
        if any(state not in ("committed", "gone") for state in report.settled.values()):
            report.skipped = "a payout transaction is still open (pending or being retried)"
            return report
        balances: dict[str, Balance] = await self._db(self.ledger.balances)
        report.planned = self.plan(balances)
        if dry_run or not report.planned:
            report.skipped = "dry run" if dry_run else "no balance has reached the threshold"
            return report
        for batch in report.planned:
            sent = await self._pay_batch(batch)
            if sent is None:
                report.skipped = "the wallet cannot cover the next batch (see the log)"
                break
            report.paid.append((sent.tx_hash.hex(), len(batch), sum(p.amount for p in batch)))
        return report

    async def _pay_batch(self, batch: Sequence[PlannedPayment]) -> SignedBatch | None:
        try:
            signed = await self.wallet.build_batch([(p.address, p.amount) for p in batch])
        except InsufficientFunds as exc:
            self.metrics.transactions.labels(event="unfunded").inc()
            log.error("payouts: the wallet cannot pay %d outputs: %s", len(batch), exc)
            return None
        lines = {p.address: p.amount for p in batch}
        lines[self.fee_address] = lines.get(self.fee_address, 0) + signed.fee
        try:
            await self._db(self.ledger.record_payout, signed.tx_hash, json.dumps(signed.tx_json()), signed.fee, lines)
        except LedgerError as exc:  # e.g. the operator's balance cannot carry this fee (a change below 61 CKB)
            self.metrics.transactions.labels(event="unfunded").inc()
            log.error("payouts: batch %s not recorded, not sent: %s", signed.tx_hash.hex(), exc)
            return None
        self.metrics.transactions.labels(event="recorded").inc()
        log.info("payouts: recorded %s: %d outputs, %d shannons, fee %d", signed.tx_hash.hex(), len(batch),
                 sum(p.amount for p in batch), signed.fee)  # fmt: skip
        _crash_point("after-record")
        try:
            await self.wallet.send(signed)
        except SendRejected as exc:  # recorded: the next pass settles it (resend, or gone if an input is spent)
            self.metrics.transactions.labels(event="refused").inc()
            log.error("payouts: %s", exc)
            return signed
        _crash_point("after-send")
        await self._db(self.ledger.mark_sent, signed.tx_hash)
        self.metrics.transactions.labels(event="sent").inc()
        self.metrics.paid_out.inc(sum(p.amount for p in batch))
        return signed

    # -- one pass, and the loop ------------------------------------------------------------------------------
    async def run_once(self, *, dry_run: bool = False) -> PassReport:
        """Track blocks, settle open payouts, pay what is due; then refresh the metrics."""
        blocks = await self.tracker.step()
        report = await self.pay(dry_run=dry_run)
        report.blocks = blocks
        await self.update_metrics()
        self.metrics.last_pass.set(time.time())
        return report

    async def update_metrics(self) -> None:
        """Refresh the gauges from the ledger and the wallet (the node's indexer)."""
        wallet = await self.wallet.balance()
        await self._db(self.observe, wallet.spendable)

    def observe(self, wallet_spendable: int, now: dt.datetime | None = None) -> None:
        """Set the gauges from the ledger's balances and the wallet's mature shannons (blocking: database).

        ``wallet_shortfall`` is what the alert ``CkbpoolPayoutWalletShort`` reads: the payable balances of all
        addresses (paid or not yet at the threshold: the pool owes them all) minus what the wallet can spend now,
        0 when it covers them. In-flight payouts are outside both sides: their amounts left payable when they
        were recorded, and the wallet does not count the inputs of the transactions it sent as spendable.
        ``oldest_unconfirmed`` against ``unconfirmed_limit`` is ``CkbpoolPayoutUnconfirmed``."""
        balances = self.ledger.balances()
        payable = sum(max(b.payable, 0) for b in balances.values())
        self.metrics.payable.set(payable)
        self.metrics.immature.set(sum(b.immature for b in balances.values()))
        self.metrics.paid.set(sum(b.paid for b in balances.values()))
        self.metrics.in_flight.set(sum(b.in_flight for b in balances.values()))
        self.metrics.wallet_spendable.set(wallet_spendable)
        self.metrics.wallet_shortfall.set(max(0, payable - wallet_spendable))
        self.metrics.oldest_unconfirmed.set(self.oldest_unconfirmed_s(now))

    def oldest_unconfirmed_s(self, now: dt.datetime | None = None) -> float:
        """Seconds since the oldest open (recorded or sent) payout was recorded; 0 when none is open."""
        oldest = self.ledger.oldest_open_payout()
        if oldest is None:
            return 0.0
        return max(0.0, ((now or dt.datetime.now(dt.UTC)) - oldest).total_seconds())

    async def serve(self, stop: asyncio.Event) -> None:
        """Pass after pass every ``interval_s`` until ``stop`` is set; a failed pass is logged and retried."""
        while not stop.is_set():
            try:
                report = await self.run_once()
                if report.paid:
                    log.info("payouts: paid %s", report.paid)
            except (CkbError, LedgerError, PaymentError, OSError) as exc:
                self.metrics.pass_errors.inc()
                log.warning("payouts: pass failed (%s); retrying in %.0fs", exc, self.settings.interval_s)
            except Exception as exc:  # database driver and Redis errors: the loop must outlive them
                self.metrics.pass_errors.inc()
                log.warning("payouts: pass failed (%r); retrying in %.0fs", exc, self.settings.interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval_s)


# -- wiring from the pool's config ------------------------------------------------------------------------------
def policy_from(settings: PayoutSettings) -> PayoutPolicy:
    if settings.fee_address is None:
        raise ValueError("payouts.fee_address is not set")
    return PayoutPolicy(fee_address=settings.fee_address, pplns_n=settings.pplns_n, fee_bps=settings.fee_bps)


def open_ledger(settings: PayoutSettings) -> Ledger:
    url = settings.database()
    if url is None:
        raise ValueError("payouts: no database configured (database_url, db_host or sqlite_path)")
    return Ledger.open(url)


@contextlib.asynccontextmanager
async def open_engine(config: PoolConfig, *, metrics: PayoutMetrics | None = None) -> AsyncIterator[PayoutEngine]:
    """The engine with everything it needs from ``config`` (ledger migrated, node client, the pool's Redis)."""
    from ..pool.redis_conn import redis_from_settings

    settings = config.payouts
    if settings.wallet_key_file is None:
        raise ValueError("payouts.wallet_key_file is not set")
    key = load_key_file(settings.wallet_key_file)
    ledger = await asyncio.to_thread(open_ledger, settings)
    redis = None
    if config.redis.url is not None:
        redis = redis_from_settings(config.redis)
    try:
        async with CkbRpcClient.from_settings(config.node) as client:
            wallet = PayoutWallet(
                key, client, config.network, fee_rate=settings.fee_rate, outputs_validator=settings.outputs_validator
            )
            tracker = BlockTracker(ledger, client, policy_from(settings), redis)
            yield PayoutEngine(settings, ledger, wallet, tracker, metrics)
    finally:
        if redis is not None:
            await redis.aclose()
        ledger.close()
