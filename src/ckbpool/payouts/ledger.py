"""The ledger's repository: found blocks through their life, credits, balances, payout transactions.

Why it looks like this:

- **Idempotent writes.** Every write names its row by a natural key (block hash, transaction hash) and is a
  no-op when repeated: the tracker and the payment engine may crash after a write and do it again at restart,
  and redelivered block outcomes are normal. A repeat that *disagrees* with what is stored (another reward for
  the same block, other outputs for the same transaction) raises :class:`LedgerError` instead of overwriting.
- **Checked transitions.** A block moves only forward along found -> accepted -> finalized -> mature ->
  credited, or to void before it is credited; a payout transaction only recorded -> sent -> committed, or to
  gone before it is committed. Asking for a state the row already has or has passed is a no-op (restart-safe);
  anything else raises.
- **Balances are derived, never stored**: immature = credits of finalized or mature blocks; payable = credits of
  credited blocks minus the payments of transactions that are not gone; paid = payments of committed
  transactions. There is no second copy that can drift, and :meth:`Ledger.check_invariants` re-checks the
  sums (credits == reward for every PPLNS block, no address paid more than it was credited).
- **Never pay twice** is built from: a transaction is recorded with its hash and signed bytes, and the amounts
  it pays are taken from payable *in the same database transaction* as the check that they are payable, before
  it is sent (:meth:`Ledger.record_payout`). On PostgreSQL that check holds a transaction-scoped advisory lock,
  so two engines cannot both spend one balance; on SQLite the database's single writer does the same.
- Synchronous SQLAlchemy, one short session per call: the same code serves the CLI (``payouts status``) and
  the async engine (through ``asyncio.to_thread``), with the stdlib's sqlite3 and psycopg 3.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, and_, create_engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from .models import BLOCK_LIFE, BLOCK_MODES, Credit, FoundBlock, Payment, PayoutTx, WindowShare
from .pplns import Window, split_reward

log = logging.getLogger(__name__)

#: advisory lock key (PostgreSQL) serialising payout recording: "ckbpayou" as a 64-bit number
PAYOUT_LOCK_KEY = int.from_bytes(b"ckbpayou", "big") & 0x7FFF_FFFF_FFFF_FFFF


class LedgerError(RuntimeError):
    """A write that contradicts the books (a different reward for a known block, a forbidden transition,
    a payment above payable): refused, nothing written."""


@dataclass(frozen=True)
class MinerReward:
    """``get_block_economic_state(hash).miner_reward`` in shannons (ckb ``core::MinerReward``)."""

    primary: int
    secondary: int
    committed: int
    proposal: int

    @property
    def total(self) -> int:
        return self.primary + self.secondary + self.committed + self.proposal


@dataclass(frozen=True)
class BlockView:
    """A found block as read from the ledger (plain values: safe to keep after the session closed)."""

    block_hash: str
    height: int
    finder: str
    worker: str
    mode: str
    status: str
    void_reason: str
    found_at: dt.datetime
    network_difficulty: int | None
    window_complete: bool | None
    window_work: int | None
    window_target_work: int | None
    reward_total: int | None
    finalized_by: str | None
    cellbase_epoch: int | None
    credits: tuple[tuple[str, str, int], ...]  # (address, kind, amount)
    # the PPLNS window fixed at acceptance, (address, work) by address -- the weights the credits were split by
    # -- and the fee policy of that moment (an audit recomputes a block's credits from these three alone)
    window: tuple[tuple[str, int], ...] = ()
    fee_bps: int | None = None
    fee_address: str | None = None


@dataclass(frozen=True)
class Balance:
    address: str
    immature: int = 0
    payable: int = 0
    in_flight: int = 0  # held by recorded or sent transactions
    paid: int = 0  # in committed transactions


@dataclass(frozen=True)
class PayoutView:
    tx_hash: str
    status: str
    fee: int
    raw_tx: str
    outputs: tuple[tuple[str, int], ...]
    gone_reason: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _hex(value: str | bytes) -> str:
    """Normalise a hash: bytes or hex with or without 0x -> 64 lowercase hex digits."""
    text_value = value.hex() if isinstance(value, bytes) else value.lower().removeprefix("0x")
    if len(text_value) != 64 or any(c not in "0123456789abcdef" for c in text_value):
        raise ValueError(f"not a 32-byte hash: {value!r}")
    return text_value


# -- engine and migrations ----------------------------------------------------------------------------------
def create_ledger_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``postgresql+psycopg://...`` or ``sqlite:///path``.

    SQLite gets what a ledger needs from it: foreign keys enforced (off by default in SQLite), WAL (readers do
    not block the writer), a busy timeout instead of instant "database is locked", and connections usable from
    the worker threads ``asyncio.to_thread`` runs the ledger on."""
    if url.startswith("sqlite"):
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", 30)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's config pointing at the migrations inside this package (works from an installed wheel)."""
    cfg = Config()
    location = resources.files("ckbpool.payouts") / "migrations"
    cfg.set_main_option("script_location", str(location))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (idempotent: an up-to-date database is left alone)."""
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


# -- the repository ---------------------------------------------------------------------------------------
_RANK = {status: i for i, status in enumerate(BLOCK_LIFE)}


class Ledger:
    """The books. Each method is one database transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, migrate_to: str | None = "head") -> Ledger:
        """Open (and by default migrate) the ledger at ``url``."""
        engine = create_ledger_engine(url)
        if migrate_to is not None:
            migrate(engine, migrate_to)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- blocks -------------------------------------------------------------------------------------------
    def record_found(
        self,
        block_hash: str | bytes,
        height: int,
        finder: str,
        worker: str = "",
        *,
        found_at: dt.datetime | None = None,
        mode: str = "pplns",
    ) -> bool:
        """Record a block the pool found (status ``found``). Returns False if it was already known: an outcome
        seen twice (bus redelivery, the tracker re-reading the block list) must not add a row."""
        if mode not in BLOCK_MODES:
            raise ValueError(f"mode must be one of {BLOCK_MODES}")
        key = _hex(block_hash)
        with self._tx() as session:
            existing = session.scalar(select(FoundBlock).where(FoundBlock.block_hash == key))
            if existing is not None:
                if existing.height != height or existing.finder != finder:
                    raise LedgerError(
                        f"block {key} is recorded at height {existing.height} by {existing.finder!r}, "
                        f"not {height} by {finder!r}"
                    )
                return False
            session.add(
                FoundBlock(
                    block_hash=key, height=height, finder=finder, worker=worker, mode=mode, status="found",
                    void_reason="", found_at=found_at or _now(),
                )
            )  # fmt: skip
        return True

    def _block(self, session: Session, block_hash: str | bytes, *, lock: bool = True) -> FoundBlock:
        stmt = select(FoundBlock).where(FoundBlock.block_hash == _hex(block_hash))
        if lock and session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        block = session.scalar(stmt)
        if block is None:
            raise LedgerError(f"unknown block {_hex(block_hash)}")
        return block

    @staticmethod
    def _advance(block: FoundBlock, to: str) -> bool:
        """True if ``block`` should move to ``to``; False if it is there or past it; raise if it cannot."""
        if block.status == "void":
            raise LedgerError(f"block {block.block_hash} is void ({block.void_reason}); it cannot become {to}")
        current, target = _RANK[block.status], _RANK[to]
        if current >= target:
            return False
        if target != current + 1:
            raise LedgerError(f"block {block.block_hash} is {block.status}; it cannot skip to {to}")
        return True

    def accept(
        self,
        block_hash: str | bytes,
        *,
        network_difficulty: int,
        window: Window | None,
        n: int | float,
        fee_bps: int,
        fee_address: str,
    ) -> bool:
        """found -> accepted: the block is on the main chain. For a PPLNS block its window (weights per
        address) and the fee policy are fixed here, in the same transaction, so no accepted block is ever
        without the window its credits will come from. A SOLO block passes ``window=None``."""
        with self._tx() as session:
            block = self._block(session, block_hash)
            if not self._advance(block, "accepted"):
                return False
            if block.mode == "pplns":
                if window is None:
                    raise LedgerError(f"PPLNS block {block.block_hash} needs its window to be accepted")
                for address, work in sorted(window.weights.items()):
                    session.add(WindowShare(block_id=block.id, address=address, work=work))
                block.window_target_work = window.target_work
                block.window_work = window.counted_work
                block.window_shares = window.shares
                block.window_complete = window.complete
                block.window_n = int(n) if float(n).is_integer() else None
            if not 0 <= fee_bps <= 10_000:
                raise ValueError("fee_bps must be within 0..10000")
            block.network_difficulty = network_difficulty
            block.fee_bps = fee_bps
            block.fee_address = fee_address
            block.status = "accepted"
            block.accepted_at = _now()
        return True

    def finalize(
        self, block_hash: str | bytes, reward: MinerReward, *, finalized_by: str | bytes, cellbase_epoch: int
    ) -> bool:
        """accepted -> finalized: the node told the reward (``get_block_economic_state``). The credits are
        computed here from the window fixed at acceptance, and written in the same transaction; they are
        immature until the block is credited. A repeated call with another reward raises."""
        with self._tx() as session:
            block = self._block(session, block_hash)
            if block.reward_total is not None and (
                (block.reward_primary, block.reward_secondary, block.reward_committed, block.reward_proposal)
                != (reward.primary, reward.secondary, reward.committed, reward.proposal)
            ):
                raise LedgerError(f"block {block.block_hash} has another reward recorded ({block.reward_total})")
            if not self._advance(block, "finalized"):
                return False
            block.reward_primary = reward.primary
            block.reward_secondary = reward.secondary
            block.reward_committed = reward.committed
            block.reward_proposal = reward.proposal
            block.reward_total = reward.total
            block.finalized_by = _hex(finalized_by)
            block.cellbase_epoch = cellbase_epoch
            block.status = "finalized"
            block.finalized_at = _now()
            if block.mode == "pplns":
                weights = {w.address: w.work for w in block.window}
                assert block.fee_bps is not None and block.fee_address is not None
                for line in split_reward(reward.total, weights, block.fee_bps, block.fee_address):
                    session.add(Credit(block_id=block.id, address=line.address, kind=line.kind, amount=line.amount))
        return True

    def mark_mature(self, block_hash: str | bytes) -> bool:
        """finalized -> mature: the paying cellbase output can be spent (cellbase maturity has passed)."""
        with self._tx() as session:
            block = self._block(session, block_hash)
            if not self._advance(block, "mature"):
                return False
            block.status = "mature"
            block.mature_at = _now()
        return True

    def mark_credited(self, block_hash: str | bytes) -> bool:
        """mature -> credited: the block's credits become payable."""
        with self._tx() as session:
            block = self._block(session, block_hash)
            if not self._advance(block, "credited"):
                return False
            block.status = "credited"
            block.credited_at = _now()
        return True

    def mark_void(self, block_hash: str | bytes, reason: str) -> bool:
        """Any state before credited -> void (orphaned, an uncle, rejected): its credits then count nowhere.
        A credited block cannot be voided -- its credits may already be paid; that raises for an operator."""
        with self._tx() as session:
            block = self._block(session, block_hash)
            if block.status == "void":
                return False
            if block.status == "credited":
                raise LedgerError(f"block {block.block_hash} is credited; it cannot become void ({reason})")
            block.status = "void"
            block.void_reason = reason
            block.voided_at = _now()
        return True

    def block(self, block_hash: str | bytes) -> BlockView | None:
        with self._tx() as session:
            block = session.scalar(select(FoundBlock).where(FoundBlock.block_hash == _hex(block_hash)))
            return None if block is None else _view(block)

    def blocks(self, statuses: Sequence[str] | None = None) -> list[BlockView]:
        """Blocks (optionally of some statuses), lowest height first."""
        with self._tx() as session:
            stmt = select(FoundBlock).order_by(FoundBlock.height, FoundBlock.id)
            if statuses is not None:
                stmt = stmt.where(FoundBlock.status.in_(list(statuses)))
            return [_view(b) for b in session.scalars(stmt)]

    # -- balances -----------------------------------------------------------------------------------------
    def balances(self) -> dict[str, Balance]:
        """Every address's immature / payable / in-flight / paid shannons (derived from credits and payments)."""
        with self._tx() as session:
            immature: dict[str, int] = {}
            credited: dict[str, int] = {}
            rows = session.execute(
                select(Credit.address, FoundBlock.status, func.sum(Credit.amount))
                .join(FoundBlock, Credit.block_id == FoundBlock.id)
                .where(FoundBlock.status.in_(["finalized", "mature", "credited"]))
                .group_by(Credit.address, FoundBlock.status)
            )
            for address, status, amount in rows:
                bucket = credited if status == "credited" else immature
                bucket[address] = bucket.get(address, 0) + int(amount)
            in_flight: dict[str, int] = {}
            paid: dict[str, int] = {}
            rows = session.execute(
                select(Payment.address, PayoutTx.status, func.sum(Payment.amount))
                .join(PayoutTx, Payment.tx_id == PayoutTx.id)
                .where(PayoutTx.status != "gone")
                .group_by(Payment.address, PayoutTx.status)
            )
            for address, status, amount in rows:
                bucket = paid if status == "committed" else in_flight
                bucket[address] = bucket.get(address, 0) + int(amount)
        addresses = sorted(set(immature) | set(credited) | set(in_flight) | set(paid))
        return {
            a: Balance(
                address=a,
                immature=immature.get(a, 0),
                payable=credited.get(a, 0) - in_flight.get(a, 0) - paid.get(a, 0),
                in_flight=in_flight.get(a, 0),
                paid=paid.get(a, 0),
            )
            for a in addresses
        }

    def balance(self, address: str) -> Balance:
        return self.balances().get(address, Balance(address=address))

    # -- payouts ------------------------------------------------------------------------------------------
    def record_payout(self, tx_hash: str | bytes, raw_tx: str, fee: int, outputs: Mapping[str, int]) -> bool:
        """Record a signed payout transaction *before* it is sent: its hash, its bytes, its fee and what it
        pays each address. Refused (LedgerError, nothing written) if any amount exceeds that address's payable
        balance. The same transaction recorded again is a no-op (False); the same hash with other outputs
        raises."""
        key = _hex(tx_hash)
        if fee < 0:
            raise ValueError("fee must not be negative")
        if not outputs or any(amount <= 0 for amount in outputs.values()):
            raise ValueError("a payout pays at least one address, each a positive amount")
        with self._tx() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PAYOUT_LOCK_KEY})
            existing = session.scalar(select(PayoutTx).where(PayoutTx.tx_hash == key))
            if existing is not None:
                have = {p.address: p.amount for p in existing.payments}
                if have != dict(outputs) or existing.fee != fee:
                    raise LedgerError(f"transaction {key} is recorded with other outputs or fee")
                return False
            for address, amount in outputs.items():
                payable = self._payable(session, address)
                if amount > payable:
                    raise LedgerError(f"{address} would be paid {amount} shannons but only {payable} are payable")
            tx = PayoutTx(tx_hash=key, status="recorded", fee=fee, raw_tx=raw_tx, created_at=_now(), gone_reason="")
            session.add(tx)
            session.flush()
            for address, amount in sorted(outputs.items()):
                session.add(Payment(tx_id=tx.id, address=address, amount=amount))
        return True

    @staticmethod
    def _payable(session: Session, address: str) -> int:
        credited = session.scalar(
            select(func.coalesce(func.sum(Credit.amount), 0))
            .join(FoundBlock, Credit.block_id == FoundBlock.id)
            .where(and_(Credit.address == address, FoundBlock.status == "credited"))
        )
        held = session.scalar(
            select(func.coalesce(func.sum(Payment.amount), 0))
            .join(PayoutTx, Payment.tx_id == PayoutTx.id)
            .where(and_(Payment.address == address, PayoutTx.status != "gone"))
        )
        return int(credited or 0) - int(held or 0)

    def _tx_row(self, session: Session, tx_hash: str | bytes) -> PayoutTx:
        row = session.scalar(select(PayoutTx).where(PayoutTx.tx_hash == _hex(tx_hash)))
        if row is None:
            raise LedgerError(f"unknown payout transaction {_hex(tx_hash)}")
        return row

    def mark_sent(self, tx_hash: str | bytes) -> bool:
        """recorded -> sent (the node took it into its pool). A no-op once sent or committed."""
        with self._tx() as session:
            row = self._tx_row(session, tx_hash)
            if row.status in ("sent", "committed"):
                return False
            if row.status != "recorded":
                raise LedgerError(f"transaction {row.tx_hash} is {row.status}; it cannot be sent")
            row.status = "sent"
            row.sent_at = _now()
        return True

    def mark_committed(self, tx_hash: str | bytes, block_hash: str | bytes) -> bool:
        """recorded | sent -> committed (in a main-chain block): its payments count as paid.
        From recorded too: after a crash between sending and marking, the node may already have committed it."""
        with self._tx() as session:
            row = self._tx_row(session, tx_hash)
            if row.status == "committed":
                return False
            if row.status == "gone":
                raise LedgerError(f"transaction {row.tx_hash} is gone; it cannot be committed")
            row.status = "committed"
            row.committed_at = _now()
            row.committed_in = _hex(block_hash)
        return True

    def mark_gone(self, tx_hash: str | bytes, reason: str) -> bool:
        """recorded | sent -> gone (the node rejected or dropped it and its inputs are spent elsewhere or it
        can never be committed): its amounts are payable again. Only the engine that has *proved* the
        transaction can never commit should call this -- a gone transaction that later commits pays twice."""
        with self._tx() as session:
            row = self._tx_row(session, tx_hash)
            if row.status == "gone":
                return False
            if row.status == "committed":
                raise LedgerError(f"transaction {row.tx_hash} is committed; it cannot be gone")
            row.status = "gone"
            row.gone_at = _now()
            row.gone_reason = reason
        return True

    def payouts(self, statuses: Sequence[str] | None = None) -> list[PayoutView]:
        """Payout transactions, oldest first; ``statuses=("recorded", "sent")`` is what a restart must settle."""
        with self._tx() as session:
            stmt = select(PayoutTx).order_by(PayoutTx.id)
            if statuses is not None:
                stmt = stmt.where(PayoutTx.status.in_(list(statuses)))
            return [
                PayoutView(
                    tx_hash=row.tx_hash, status=row.status, fee=row.fee, raw_tx=row.raw_tx,
                    outputs=tuple((p.address, p.amount) for p in row.payments), gone_reason=row.gone_reason,
                )
                for row in session.scalars(stmt)
            ]  # fmt: skip

    def oldest_open_payout(self) -> dt.datetime | None:
        """When the oldest payout transaction still open (recorded or sent, not committed nor gone) was
        recorded, in UTC; None when none is open. The unconfirmed-payout alert is its age."""
        with self._tx() as session:
            oldest: dt.datetime | None = session.scalar(
                select(PayoutTx.created_at)
                .where(PayoutTx.status.in_(["recorded", "sent"]))
                .order_by(PayoutTx.created_at)
                .limit(1)
            )
        return oldest

    # -- invariants ---------------------------------------------------------------------------------------
    def check_invariants(self) -> list[str]:
        """Every broken rule of the books, as sentences (empty = the books are right):
        credits of each finalized-or-later PPLNS block add up to its reward exactly; no credits on SOLO,
        found, accepted blocks (void blocks keep theirs, counted nowhere); no address has more held or paid than
        credited; every recorded transaction pays someone."""
        problems: list[str] = []
        with self._tx() as session:
            sums: dict[int, int] = {
                block_id: int(amount or 0)
                for block_id, amount in session.execute(
                    select(Credit.block_id, func.sum(Credit.amount)).group_by(Credit.block_id)
                )
            }
            for block in session.scalars(select(FoundBlock)):
                credited = int(sums.get(block.id, 0) or 0)
                has_reward = block.status in ("finalized", "mature", "credited") or (
                    block.status == "void" and block.reward_total is not None
                )
                if block.mode == "pplns" and has_reward and credited != block.reward_total:
                    problems.append(f"block {block.block_hash}: credits {credited} != reward {block.reward_total}")
                if (block.mode == "solo" or not has_reward) and credited:
                    problems.append(f"block {block.block_hash} ({block.mode}, {block.status}) has credits")
            for tx in session.scalars(select(PayoutTx)):
                if not tx.payments:
                    problems.append(f"transaction {tx.tx_hash} pays nobody")
        for balance in self.balances().values():
            if balance.payable < 0:
                problems.append(
                    f"{balance.address}: paid or held {balance.paid + balance.in_flight} above credited "
                    f"{balance.paid + balance.in_flight + balance.payable}"
                )
        return problems


def _view(block: FoundBlock) -> BlockView:
    return BlockView(
        block_hash=block.block_hash,
        height=block.height,
        finder=block.finder,
        worker=block.worker,
        mode=block.mode,
        status=block.status,
        void_reason=block.void_reason,
        found_at=block.found_at,
        network_difficulty=block.network_difficulty,
        window_complete=block.window_complete,
        window_work=block.window_work,
        window_target_work=block.window_target_work,
        reward_total=block.reward_total,
        finalized_by=block.finalized_by,
        cellbase_epoch=block.cellbase_epoch,
        credits=tuple((c.address, c.kind, c.amount) for c in block.credits),
        window=tuple(sorted((w.address, w.work) for w in block.window)),
        fee_bps=block.fee_bps,
        fee_address=block.fee_address,
    )
