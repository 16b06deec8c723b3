"""Alembic environment of the payouts ledger: run programmatically by ``ckbpool.payouts.ledger.migrate``.

The engine comes in ``config.attributes["engine"]`` (no alembic.ini, no URL in a file); SQLite runs in batch
mode, because it cannot ALTER most things in place and Alembic then copies the table.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from ckbpool.payouts.models import Base

config = context.config
engine = config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("the payouts migrations run through ckbpool.payouts.ledger.migrate(engine)")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
