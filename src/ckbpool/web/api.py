"""What the public API answers, independent of HTTP: the books (Redis), the node, the payouts ledger.

Nothing private leaves here: pool totals, the pool's blocks (no finder named: that would be another miner's
data), and for one address only that address's own figures -- its PPLNS mining and, apart, its SOLO mining
(workers ``solo:<address>.<worker>``, booked under the account ``solo:<address>`` by the same accounting, so the
same reads answer both; :mod:`ckbpool.pool.solo`). Addresses are checked as the pool checks them
(:func:`ckbpool.ckb.address.parse_address` for the pool's network) and looked up as the books key them
(lower case, :func:`ckbpool.pool.identity.parse_identity`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypedDict

from ..ckb.address import parse_address
from ..ckb.errors import MalformedError
from ..ckb.rpc import CkbRpcClient
from ..ckb.target import compact_to_target, target_to_difficulty
from ..pool.config import PayoutSettings, WebSettings
from ..pool.identity import SOLO_PREFIX
from .books import BooksReader, Rates, WorkerRow
from .models import (
    AddressStats,
    Balance,
    Block,
    BlockList,
    Hashrate,
    HashrateHistory,
    Network,
    Payment,
    PoolOverview,
    SoloStats,
    Worker,
)

log = logging.getLogger(__name__)

#: workers listed on an address page (newest first); a farm with more sees its most recent ones
MAX_WORKERS = 500
BLOCKS_ON_OVERVIEW = 20
MAX_BLOCKS = 200
#: longest string worth parsing as an address (a full-format address with long args is ~100-200 characters)
MAX_ADDRESS_CHARS = 1000
NO_LEDGER = "balances and payments are not shown: this pool has no payouts ledger configured"


class ApiError(Exception):
    """An answer other than 200: ``status``, a short ``error`` code and a ``detail`` sentence."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def check_address(text: str, network: str) -> str:
    """The books' key of a CKB address of ``network``; :class:`ApiError` 400 naming what is wrong."""
    if len(text) > MAX_ADDRESS_CHARS:
        raise ApiError(400, "invalid-address", f"{len(text)} characters is too long for a CKB address")
    if text != text.strip() or not text:
        raise ApiError(400, "invalid-address", "empty, or spaces around the address")
    shown = text if len(text) <= 40 else text[:40] + "..."
    try:
        parse_address(text)
    except MalformedError as exc:
        raise ApiError(400, "invalid-address", f"{shown!r} is not a CKB address: {exc.problem}") from None
    try:
        parse_address(text, network)
    except MalformedError as exc:
        raise ApiError(
            400,
            "address-wrong-network",
            f"{shown!r} is not an address of this pool's network ({network}): {exc.problem}",
        ) from None
    return text.lower()


def _hashrate(rates: Rates) -> Hashrate:
    return Hashrate(h10m=rates.windows["10m"], h1h=rates.windows["1h"], h24h=rates.windows["24h"])


def _history(rates: Rates) -> HashrateHistory:
    return HashrateHistory(minutes=rates.minutes, hours=rates.hours)


def _no_rates() -> Rates:
    return Rates(windows={"10m": 0.0, "1h": 0.0, "24h": 0.0}, minutes=[0.0] * 60, hours=[0.0] * 24)


def _workers(rows: list[WorkerRow], online_since: float) -> list[Worker]:
    return [
        Worker(
            name=r.name,
            hashrate=Hashrate(h10m=r.hashrate["10m"], h1h=r.hashrate["1h"], h24h=r.hashrate["24h"]),
            accepted=r.accepted,
            rejected=r.rejected,
            last_share=r.last_share,
            online=r.last_share is not None and r.last_share >= online_since,
        )
        for r in rows
    ]


class _Figures(TypedDict):
    hashrate: Hashrate
    history: HashrateHistory
    accepted: int
    rejected: int
    last_share: float | None
    workers: list[Worker]
    workers_online: int


def _account_figures(
    totals: dict[str, str] | None, rates: Rates, rows: list[WorkerRow], online_since: float
) -> _Figures:
    """One books account's figures as the page shows them: the address's PPLNS account and its ``solo:`` one alike."""
    last = (totals or {}).get("last_share")
    return _Figures(
        hashrate=_hashrate(rates),
        history=_history(rates),
        accepted=int((totals or {}).get("accepted", 0)),
        rejected=int((totals or {}).get("rejected", 0)),
        last_share=float(last) if last is not None else None,
        workers=_workers(rows, online_since),
        workers_online=sum(1 for r in rows if r.last_share is not None and r.last_share >= online_since),
    )


class PublicApi:
    """Builds the answers; the HTTP layer (:mod:`ckbpool.web.app`) caches and serves them."""

    def __init__(
        self,
        settings: WebSettings,
        payouts: PayoutSettings,
        network: str,
        books: BooksReader | None,
        rpc: CkbRpcClient | None,
        ledger: Any | None = None,  # ckbpool.payouts.ledger.Ledger (imported lazily: SQLAlchemy is heavy)
    ) -> None:
        self.settings = settings
        self.payouts = payouts
        self.network = network
        self.books = books
        self.rpc = rpc
        self.ledger = ledger

    # -- pieces ----------------------------------------------------------------------------------------------
    async def _network(self, notes: list[str]) -> Network:
        if self.rpc is None:
            notes.append("network figures unavailable: no node configured")
            return Network(height=None, difficulty=None, tip_hash=None)
        try:
            header = await self.rpc.get_tip_header()
        except Exception as exc:  # the page stays up while the node is away
            log.warning("public API: node tip unavailable: %r", exc)
            notes.append("network figures unavailable: the node did not answer")
            return Network(height=None, difficulty=None, tip_hash=None)
        difficulty = target_to_difficulty(compact_to_target(header.raw.compact_target))
        return Network(height=header.raw.number, difficulty=str(difficulty), tip_hash="0x" + header.hash().hex())

    async def _blocks(self, limit: int) -> list[Block]:
        if self.books is None:
            return []
        return await self._as_blocks(await self.books.blocks(limit))

    async def _address_blocks(self, user: str, limit: int) -> tuple[list[Block], list[Block]]:
        """The address's PPLNS blocks and its SOLO ones (found as ``solo:<address>``), from one read of the
        books' block list (its newest MAX_BLOCKS entries) and one of the ledger."""
        if self.books is None:
            return [], []
        entries = await self.books.blocks(MAX_BLOCKS)
        pplns = [e for e in entries if e.get("user") == user][:limit]
        solo = [e for e in entries if e.get("user") == SOLO_PREFIX + user][:limit]
        blocks = await self._as_blocks(pplns + solo)
        return blocks[: len(pplns)], blocks[len(pplns) :]

    async def _as_blocks(self, entries: list[dict[str, Any]]) -> list[Block]:
        ledger_views: dict[str, Any] = {}
        if self.ledger is not None and entries:
            ledger_views = await asyncio.to_thread(self._ledger_blocks, [str(e["block_hash"]) for e in entries])
        blocks = []
        for e in entries:
            view = ledger_views.get(str(e["block_hash"]))
            blocks.append(
                Block(
                    height=int(e.get("height", 0)),
                    hash="0x" + str(e["block_hash"]).lower().removeprefix("0x"),
                    status=str(view.status if view is not None else e.get("status", "unknown")),
                    reward=view.reward_total if view is not None else None,
                    found_at=float(e["submitted_at"]) if e.get("submitted_at") else None,
                )
            )
        return blocks

    def _ledger_blocks(self, hashes: list[str]) -> dict[str, Any]:
        assert self.ledger is not None
        out = {}
        for block_hash in hashes:
            view = self.ledger.block(block_hash)
            if view is not None:
                out[block_hash] = view
        return out

    def _ledger_account(self, address: str) -> tuple[Balance, list[Payment]]:
        assert self.ledger is not None
        balance = self.ledger.balance(address)
        payments = []
        for tx in self.ledger.payouts():
            amount = sum(a for to, a in tx.outputs if to == address)
            if amount:
                payments.append(Payment(tx_hash="0x" + tx.tx_hash.removeprefix("0x"), amount=amount, status=tx.status))
        payments.reverse()  # newest first
        return Balance(immature=balance.immature, payable=balance.payable, paid=balance.paid), payments

    # -- answers ---------------------------------------------------------------------------------------------
    async def pool(self) -> PoolOverview:
        notes: list[str] = []
        now = time.time()
        if self.books is None:
            notes.append("share accounting is off on this pool (no Redis): no hashrate or miners")
            rates = _no_rates()
            users = workers = 0
        else:
            rates = await self.books.pool_rates(now)
            users, workers = await self.books.online(now - self.settings.online_window_s)
        if not self.payouts.enabled:
            notes.append("this pool has no payouts configured: no fee, scheme or block rewards shown")
        return PoolOverview(
            network_name=self.network,  # type: ignore[arg-type]
            hashrate=_hashrate(rates),
            history=_history(rates),
            miners_online=users,
            workers_online=workers,
            online_window_s=self.settings.online_window_s,
            network=await self._network(notes),
            payout_scheme="PPLNS" if self.payouts.enabled else None,
            fee_percent=self.payouts.fee_bps / 100 if self.payouts.enabled else None,
            blocks=await self._blocks(BLOCKS_ON_OVERVIEW),
            updated_at=now,
            notes=notes,
        )

    async def blocks(self, limit: int) -> BlockList:
        return BlockList(blocks=await self._blocks(limit), updated_at=time.time())

    async def address(self, text: str) -> AddressStats:
        user = check_address(text, self.network)
        now = time.time()
        notes: list[str] = []
        totals = solo_totals = None
        rates = solo_rates = _no_rates()
        rows: list[WorkerRow] = []
        solo_rows: list[WorkerRow] = []
        if self.books is not None:
            (totals, rates, rows), (solo_totals, solo_rates, solo_rows) = await asyncio.gather(
                self.books.address(user, MAX_WORKERS, now), self.books.address(SOLO_PREFIX + user, MAX_WORKERS, now)
            )
        blocks, solo_blocks = await self._address_blocks(user, BLOCKS_ON_OVERVIEW)
        balance: Balance | None = None
        payments: list[Payment] | None = None
        if self.ledger is not None:
            balance, payments = await asyncio.to_thread(self._ledger_account, user)
        else:
            notes.append(NO_LEDGER)
        known_to_ledger = balance is not None and (balance.immature or balance.payable or balance.paid or payments)
        if totals is None and solo_totals is None and not solo_blocks and not known_to_ledger:
            raise ApiError(
                404,
                "unknown-address",
                f"this pool has no shares, balance or payments of {text} (shares are "
                "forgotten 30 days after the last one)",
            )
        online_since = now - self.settings.online_window_s
        solo: SoloStats | None = None
        if solo_totals is not None or solo_blocks:
            solo = SoloStats(
                account=SOLO_PREFIX + user,
                **_account_figures(solo_totals, solo_rates, solo_rows, online_since),
                blocks=solo_blocks,
            )
        return AddressStats(
            address=user,
            **_account_figures(totals, rates, rows, online_since),
            blocks=blocks,
            solo=solo,
            balance=balance,
            payments=payments,
            updated_at=now,
            notes=notes,
        )
