"""Payouts: the ledger that says who is owed what, and why.

- :mod:`.models` -- the tables (SQLAlchemy 2 typed ORM), one schema for PostgreSQL (hosts, compose) and SQLite
  (the embedded default of the local target); money in shannons as 64-bit integers, never floats.
- :mod:`.ledger` -- the repository: every write idempotent (unique keys, state checks), every state change of a
  found block or a payout transaction checked against the allowed transitions, and an invariant check.
- :mod:`.migrations` -- Alembic revisions shipped in the package, run by :func:`.ledger.migrate` (an installed
  wheel migrates its own database; no alembic.ini needed).
- :mod:`.pplns` -- the PPLNS window (last N x network difficulty of accepted work, read from the share log) and
  the integer-exact split of a block reward.
- :mod:`.tracker` -- block life from the node: found -> accepted -> finalized -> mature -> credited, or void.
"""
