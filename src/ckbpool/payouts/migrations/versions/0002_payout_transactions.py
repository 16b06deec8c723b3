"""payout transactions and their payments

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ckbpool.payouts.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payout_txs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("raw_tx", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("committed_at", UtcDateTime(), nullable=True),
        sa.Column("committed_in", sa.String(64), nullable=True),
        sa.Column("gone_at", UtcDateTime(), nullable=True),
        sa.Column("gone_reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_txs")),
        sa.UniqueConstraint("tx_hash", name=op.f("uq_payout_txs_tx_hash")),
        sa.CheckConstraint("status IN ('recorded', 'sent', 'committed', 'gone')", name=op.f("ck_payout_txs_status")),
        sa.CheckConstraint("fee >= 0", name=op.f("ck_payout_txs_fee")),
    )
    op.create_index(op.f("ix_payout_txs_status"), "payout_txs", ["status"])

    op.create_table(
        "payments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tx_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(256), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.ForeignKeyConstraint(
            ["tx_id"], ["payout_txs.id"], name=op.f("fk_payments_tx_id_payout_txs"), ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("tx_id", "address", name=op.f("uq_payments_tx_id")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_payments_amount")),
    )
    op.create_index(op.f("ix_payments_tx_id"), "payments", ["tx_id"])
    op.create_index(op.f("ix_payments_address"), "payments", ["address"])


def downgrade() -> None:
    op.drop_table("payments")
    op.drop_table("payout_txs")
