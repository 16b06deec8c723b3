"""found blocks, their PPLNS windows and credits

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ckbpool.payouts.models import BigNat, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "status IN ('found', 'accepted', 'finalized', 'mature', 'credited', 'void')"


def upgrade() -> None:
    op.create_table(
        "found_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("block_hash", sa.String(64), nullable=False),
        sa.Column("height", sa.BigInteger(), nullable=False),
        sa.Column("finder", sa.String(256), nullable=False),
        sa.Column("worker", sa.String(256), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("void_reason", sa.Text(), nullable=False),
        sa.Column("found_at", UtcDateTime(), nullable=False),
        sa.Column("accepted_at", UtcDateTime(), nullable=True),
        sa.Column("finalized_at", UtcDateTime(), nullable=True),
        sa.Column("mature_at", UtcDateTime(), nullable=True),
        sa.Column("credited_at", UtcDateTime(), nullable=True),
        sa.Column("voided_at", UtcDateTime(), nullable=True),
        sa.Column("network_difficulty", BigNat(), nullable=True),
        sa.Column("window_n", sa.Integer(), nullable=True),
        sa.Column("window_target_work", BigNat(), nullable=True),
        sa.Column("window_work", BigNat(), nullable=True),
        sa.Column("window_shares", sa.BigInteger(), nullable=True),
        sa.Column("window_complete", sa.Boolean(), nullable=True),
        sa.Column("fee_bps", sa.Integer(), nullable=True),
        sa.Column("fee_address", sa.String(256), nullable=True),
        sa.Column("reward_primary", sa.BigInteger(), nullable=True),
        sa.Column("reward_secondary", sa.BigInteger(), nullable=True),
        sa.Column("reward_committed", sa.BigInteger(), nullable=True),
        sa.Column("reward_proposal", sa.BigInteger(), nullable=True),
        sa.Column("reward_total", sa.BigInteger(), nullable=True),
        sa.Column("finalized_by", sa.String(64), nullable=True),
        sa.Column("cellbase_epoch", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_found_blocks")),
        sa.UniqueConstraint("block_hash", name=op.f("uq_found_blocks_block_hash")),
        sa.CheckConstraint(STATUSES, name=op.f("ck_found_blocks_status")),
        sa.CheckConstraint("mode IN ('pplns', 'solo')", name=op.f("ck_found_blocks_mode")),
        sa.CheckConstraint("height >= 0", name=op.f("ck_found_blocks_height")),
        sa.CheckConstraint(
            "fee_bps IS NULL OR (fee_bps >= 0 AND fee_bps <= 10000)", name=op.f("ck_found_blocks_fee_bps")
        ),
        sa.CheckConstraint(
            "reward_total IS NULL OR (reward_primary >= 0 AND reward_secondary >= 0 AND reward_committed >= 0"
            " AND reward_proposal >= 0"
            " AND reward_total = reward_primary + reward_secondary + reward_committed + reward_proposal)",
            name=op.f("ck_found_blocks_reward_parts"),
        ),
        sa.CheckConstraint(
            "status NOT IN ('finalized', 'mature', 'credited') OR reward_total IS NOT NULL",
            name=op.f("ck_found_blocks_reward_known"),
        ),
    )
    op.create_index(op.f("ix_found_blocks_height"), "found_blocks", ["height"])
    op.create_index(op.f("ix_found_blocks_status"), "found_blocks", ["status"])

    op.create_table(
        "window_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("block_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(256), nullable=False),
        sa.Column("work", BigNat(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_window_shares")),
        sa.ForeignKeyConstraint(
            ["block_id"], ["found_blocks.id"], name=op.f("fk_window_shares_block_id_found_blocks"),
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("block_id", "address", name=op.f("uq_window_shares_block_id")),
    )  # fmt: skip
    op.create_index(op.f("ix_window_shares_block_id"), "window_shares", ["block_id"])

    op.create_table(
        "credits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("block_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credits")),
        sa.ForeignKeyConstraint(
            ["block_id"], ["found_blocks.id"], name=op.f("fk_credits_block_id_found_blocks"), ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("block_id", "address", "kind", name=op.f("uq_credits_block_id")),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_credits_amount")),
        sa.CheckConstraint("kind IN ('share', 'fee')", name=op.f("ck_credits_kind")),
    )
    op.create_index(op.f("ix_credits_block_id"), "credits", ["block_id"])
    op.create_index(op.f("ix_credits_address"), "credits", ["address"])


def downgrade() -> None:
    op.drop_table("credits")
    op.drop_table("window_shares")
    op.drop_table("found_blocks")
