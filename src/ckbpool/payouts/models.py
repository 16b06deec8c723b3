"""The ledger's tables: one schema for PostgreSQL and SQLite (SQLAlchemy 2 typed ORM).

Money is shannons (1 CKB = 10^8 shannons) in signed 64-bit integers (``BigInteger``): CKB's whole supply is about
3.4e18 shannons, below 2^63, so any balance or reward fits, and SQLite's INTEGER is 64-bit too. Never floats.
Work and network difficulty are 256-bit quantities (``2^256 // target``): they do not fit 64 bits, and SQLite
has no exact wide NUMERIC (SQLAlchemy warns that it goes through floats there), so they are stored as decimal
text (:class:`BigNat`) -- they are only read back, never summed in SQL.

Constraints carry the rules the code relies on, so a bug (or a hand edit) that breaks them fails loudly in the
database instead of paying wrongly: unique block hashes and transaction hashes (idempotent writes), one credit
per (block, address, kind), one payment per (transaction, address), non-negative amounts, a reward whose parts
add up, and a block that counts as finalized only with its reward known. The constraint names are fixed
(:data:`NAMING`) so that migrations can refer to them on both databases.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

#: constraint and index names, fixed so Alembic (and SQLite's batch mode) can address them
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: the life of a found block, in order; ``void`` (orphaned, uncle, rejected) can end it at any step before credited
BLOCK_LIFE = ("found", "accepted", "finalized", "mature", "credited")
BLOCK_STATUSES = (*BLOCK_LIFE, "void")
#: a payout transaction: recorded (hash known, before sending) -> sent -> committed, or gone (never on chain)
TX_STATUSES = ("recorded", "sent", "committed", "gone")
#: PPLNS blocks are shared out by credits; SOLO blocks pay the finder from the cellbase, with no credits
BLOCK_MODES = ("pplns", "solo")
#: a credit is a miner's share of the reward, or the pool fee to the operator's address
CREDIT_KINDS = ("share", "fee")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class BigNat(TypeDecorator[int]):
    """A non-negative integer of any size, stored as decimal text (exact on every database)."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value < 0:
            raise ValueError(f"BigNat must not be negative: {value}")
        return str(int(value))

    def process_result_value(self, value: str | None, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite hands back naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class FoundBlock(Base):
    """A block the pool found, and where it is in its life.

    The reward parts are the node's ``get_block_economic_state(hash).miner_reward`` (primary, secondary,
    committed, proposal), known once the block is finalized; ``finalized_by`` is the block whose cellbase pays
    it (``finalized_at`` in the RPC answer) and ``cellbase_epoch`` that block's epoch, from which maturity is
    counted. The PPLNS window (``window_*``, ``fee_*``) is fixed when the block is accepted, so a later change
    of N or of the fee never rewrites the books of a block already found."""

    __tablename__ = "found_blocks"
    __table_args__ = (
        CheckConstraint(_in("status", BLOCK_STATUSES), name="status"),
        CheckConstraint(_in("mode", BLOCK_MODES), name="mode"),
        CheckConstraint("height >= 0", name="height"),
        CheckConstraint("fee_bps IS NULL OR (fee_bps >= 0 AND fee_bps <= 10000)", name="fee_bps"),
        CheckConstraint(
            "reward_total IS NULL OR (reward_primary >= 0 AND reward_secondary >= 0 AND reward_committed >= 0"
            " AND reward_proposal >= 0"
            " AND reward_total = reward_primary + reward_secondary + reward_committed + reward_proposal)",
            name="reward_parts",
        ),
        CheckConstraint(
            "status NOT IN ('finalized', 'mature', 'credited') OR reward_total IS NOT NULL", name="reward_known"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    block_hash: Mapped[str] = mapped_column(String(64), unique=True)  # lowercase hex, no 0x
    height: Mapped[int] = mapped_column(BigInteger, index=True)
    finder: Mapped[str] = mapped_column(String(256))  # the identity (address) whose share found it
    worker: Mapped[str] = mapped_column(String(256), default="")
    mode: Mapped[str] = mapped_column(String(8), default="pplns")
    status: Mapped[str] = mapped_column(String(16), default="found", index=True)
    void_reason: Mapped[str] = mapped_column(Text, default="")
    found_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    finalized_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    mature_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    credited_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    voided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    network_difficulty: Mapped[int | None] = mapped_column(BigNat())
    window_n: Mapped[int | None] = mapped_column(Integer)
    window_target_work: Mapped[int | None] = mapped_column(BigNat())
    window_work: Mapped[int | None] = mapped_column(BigNat())
    window_shares: Mapped[int | None] = mapped_column(BigInteger)
    window_complete: Mapped[bool | None] = mapped_column(Boolean)
    fee_bps: Mapped[int | None] = mapped_column(Integer)
    fee_address: Mapped[str | None] = mapped_column(String(256))
    reward_primary: Mapped[int | None] = mapped_column(BigInteger)
    reward_secondary: Mapped[int | None] = mapped_column(BigInteger)
    reward_committed: Mapped[int | None] = mapped_column(BigInteger)
    reward_proposal: Mapped[int | None] = mapped_column(BigInteger)
    reward_total: Mapped[int | None] = mapped_column(BigInteger)
    finalized_by: Mapped[str | None] = mapped_column(String(64))
    cellbase_epoch: Mapped[int | None] = mapped_column(BigInteger)

    window: Mapped[list[WindowShare]] = relationship(back_populates="block", order_by="WindowShare.address")
    credits: Mapped[list[Credit]] = relationship(back_populates="block", order_by="Credit.address")


class WindowShare(Base):
    """The accepted work of one address inside a block's PPLNS window (the split's weights, kept for audit)."""

    __tablename__ = "window_shares"
    __table_args__ = (UniqueConstraint("block_id", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    block_id: Mapped[int] = mapped_column(ForeignKey("found_blocks.id", ondelete="RESTRICT"), index=True)
    address: Mapped[str] = mapped_column(String(256))
    work: Mapped[int] = mapped_column(BigNat())

    block: Mapped[FoundBlock] = relationship(back_populates="window")


class Credit(Base):
    """Shannons one address earns from one block: immature until the block is credited, then payable."""

    __tablename__ = "credits"
    __table_args__ = (
        UniqueConstraint("block_id", "address", "kind"),
        CheckConstraint("amount >= 0", name="amount"),
        CheckConstraint(_in("kind", CREDIT_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    block_id: Mapped[int] = mapped_column(ForeignKey("found_blocks.id", ondelete="RESTRICT"), index=True)
    address: Mapped[str] = mapped_column(String(256), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)

    block: Mapped[FoundBlock] = relationship(back_populates="credits")


class PayoutTx(Base):
    """One payout transaction of the pool's wallet. Its hash and signed body are recorded *before* it is sent,
    so after a crash the engine can ask the node about exactly this transaction (and re-send the same bytes)
    instead of building a second one: the basis of "never pay twice"."""

    __tablename__ = "payout_txs"
    __table_args__ = (
        CheckConstraint(_in("status", TX_STATUSES), name="status"),
        CheckConstraint("fee >= 0", name="fee"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tx_hash: Mapped[str] = mapped_column(String(64), unique=True)  # lowercase hex, no 0x
    status: Mapped[str] = mapped_column(String(16), default="recorded", index=True)
    fee: Mapped[int] = mapped_column(BigInteger)
    raw_tx: Mapped[str] = mapped_column(Text)  # the signed transaction's JSON, as sent
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    committed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    committed_in: Mapped[str | None] = mapped_column(String(64))  # block hash
    gone_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    gone_reason: Mapped[str] = mapped_column(Text, default="")

    payments: Mapped[list[Payment]] = relationship(back_populates="tx", order_by="Payment.address")


class Payment(Base):
    """One output of a payout transaction to a miner's address. It holds the amount against the address's
    payable balance while its transaction is recorded, sent or committed; a gone transaction releases it."""

    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("tx_id", "address"),
        CheckConstraint("amount > 0", name="amount"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tx_id: Mapped[int] = mapped_column(ForeignKey("payout_txs.id", ondelete="RESTRICT"), index=True)
    address: Mapped[str] = mapped_column(String(256), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)

    tx: Mapped[PayoutTx] = relationship(back_populates="payments")
