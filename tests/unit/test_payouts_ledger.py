"""The ledger on SQLite (the local target's embedded default): migrations, block life, balances, payouts.

The same code and migrations run on PostgreSQL in tests/integration/test_payouts_ledger_postgres.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ckbpool.payouts.ledger import (
    Ledger,
    LedgerError,
    MinerReward,
    create_ledger_engine,
    current_revision,
    head_revision,
)
from ckbpool.payouts.models import Base
from ckbpool.payouts.pplns import Window

pytestmark = pytest.mark.unit

H = [f"{i:064x}" for i in range(1, 40)]
T = [f"{i:064x}" for i in range(1000, 1040)]
REWARD = MinerReward(primary=1_000_000_000, secondary=250_000_001, committed=7, proposal=3)


def window(weights: dict[str, int], target: int | None = None) -> Window:
    total = sum(weights.values())
    target = total if target is None else target
    return Window(
        target_work=target, weights=dict(weights), counted_work=total, shares=len(weights), complete=total >= target
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        yield ledger
    finally:
        ledger.close()


def credited_block(
    ledger: Ledger, block_hash: str, height: int, weights: dict[str, int], reward: MinerReward = REWARD
) -> None:
    ledger.record_found(block_hash, height, "finder", "rig")
    ledger.accept(block_hash, network_difficulty=256, window=window(weights), n=2, fee_bps=100, fee_address="op")
    ledger.finalize(block_hash, reward, finalized_by=H[-1], cellbase_epoch=0)
    ledger.mark_mature(block_hash)
    ledger.mark_credited(block_hash)


def test_migrations_build_exactly_the_models_schema(tmp_path: Path) -> None:
    engine = create_ledger_engine(f"sqlite:///{tmp_path / 'l.db'}")
    assert current_revision(engine) is None
    Ledger.open(f"sqlite:///{tmp_path / 'l.db'}").close()
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    engine.dispose()


def test_a_block_through_its_whole_life(ledger: Ledger) -> None:
    found_at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert ledger.record_found("0x" + H[0].upper(), 100, "alice", "rig1", found_at=found_at)
    assert not ledger.record_found(bytes.fromhex(H[0]), 100, "alice", "rig1"), "a redelivered outcome adds nothing"
    with pytest.raises(LedgerError):
        ledger.record_found(H[0], 101, "alice")
    view = ledger.block(H[0])
    assert view is not None and view.status == "found" and view.found_at == found_at

    assert ledger.accept(
        H[0], network_difficulty=1 << 200, window=window({"alice": 3, "bob": 1}, 8), n=2, fee_bps=100, fee_address="op"
    )
    assert not ledger.accept(H[0], network_difficulty=1, window=window({"x": 1}), n=2, fee_bps=0, fee_address="op")
    view = ledger.block(H[0])
    assert view is not None and view.status == "accepted" and view.network_difficulty == 1 << 200
    assert view.window_complete is False and view.window_work == 4 and view.window_target_work == 8
    assert ledger.balances() == {}, "nothing is owed before the reward is known"

    assert ledger.finalize(H[0], REWARD, finalized_by="0x" + H[5], cellbase_epoch=7)
    assert not ledger.finalize(H[0], REWARD, finalized_by=H[5], cellbase_epoch=7)
    with pytest.raises(LedgerError):
        ledger.finalize(H[0], MinerReward(1, 2, 3, 4), finalized_by=H[5], cellbase_epoch=7)
    total = REWARD.total
    fee = total // 100
    view = ledger.block(H[0])
    assert view is not None and view.reward_total == total and view.finalized_by == H[5] and view.cellbase_epoch == 7
    credits = {(a, k): v for a, k, v in view.credits}
    assert sum(credits.values()) == total and credits[("op", "fee")] == fee
    assert credits[("alice", "share")] + credits[("bob", "share")] == total - fee
    assert abs(credits[("alice", "share")] - 3 * credits[("bob", "share")]) <= 4
    balances = ledger.balances()
    assert balances["alice"].immature == credits[("alice", "share")] and balances["alice"].payable == 0

    assert ledger.mark_mature(H[0]) and not ledger.mark_mature(H[0])
    assert ledger.balances()["alice"].immature == credits[("alice", "share")]
    assert ledger.mark_credited(H[0]) and not ledger.mark_credited(H[0])
    balances = ledger.balances()
    assert (balances["alice"].immature, balances["alice"].payable) == (0, credits[("alice", "share")])
    assert balances["op"].payable == fee
    assert ledger.check_invariants() == []
    with pytest.raises(LedgerError):
        ledger.mark_void(H[0], "too late: credited")


def test_transitions_cannot_skip_or_leave_void(ledger: Ledger) -> None:
    ledger.record_found(H[1], 5, "a")
    with pytest.raises(LedgerError):
        ledger.finalize(H[1], REWARD, finalized_by=H[2], cellbase_epoch=0)
    with pytest.raises(LedgerError):
        ledger.mark_credited(H[1])
    with pytest.raises(LedgerError):
        ledger.accept(H[1], network_difficulty=1, window=None, n=2, fee_bps=0, fee_address="op")  # PPLNS without window
    assert ledger.mark_void(H[1], "orphaned") and not ledger.mark_void(H[1], "again")
    with pytest.raises(LedgerError):
        ledger.accept(H[1], network_difficulty=1, window=window({"a": 1}), n=2, fee_bps=0, fee_address="op")
    view = ledger.block(H[1])
    assert view is not None and (view.status, view.void_reason) == ("void", "orphaned")
    with pytest.raises(LedgerError):
        ledger.mark_mature(H[9])  # unknown block


def test_a_block_voided_after_finalization_credits_nobody(ledger: Ledger) -> None:
    ledger.record_found(H[3], 9, "a")
    ledger.accept(H[3], network_difficulty=2, window=window({"a": 2}), n=2, fee_bps=0, fee_address="op")
    ledger.finalize(H[3], REWARD, finalized_by=H[4], cellbase_epoch=0)
    assert ledger.balances()["a"].immature == REWARD.total
    ledger.mark_void(H[3], "reorganised away")
    assert ledger.balances() == {}
    assert ledger.check_invariants() == []


def test_solo_blocks_are_tracked_without_credits(ledger: Ledger) -> None:
    ledger.record_found(H[6], 12, "solo-finder", mode="solo")
    ledger.accept(H[6], network_difficulty=2, window=None, n=2, fee_bps=0, fee_address="op")
    ledger.finalize(H[6], REWARD, finalized_by=H[7], cellbase_epoch=0)
    ledger.mark_mature(H[6])
    ledger.mark_credited(H[6])
    view = ledger.block(H[6])
    assert view is not None and view.credits == () and view.reward_total == REWARD.total
    assert ledger.balances() == {} and ledger.check_invariants() == []


def test_payouts_hold_balance_from_recording_and_never_exceed_it(ledger: Ledger) -> None:
    credited_block(ledger, H[0], 1, {"alice": 1, "bob": 1})
    alice = ledger.balance("alice").payable
    assert alice > 0
    with pytest.raises(LedgerError):
        ledger.record_payout(T[0], "{}", 1000, {"alice": alice + 1})
    assert ledger.payouts() == [], "a refused payout writes nothing"
    assert ledger.record_payout(T[0], '{"tx": 1}', 1000, {"alice": alice - 5, "bob": 10})
    assert not ledger.record_payout("0x" + T[0], '{"tx": 1}', 1000, {"alice": alice - 5, "bob": 10}), "idempotent"
    with pytest.raises(LedgerError):
        ledger.record_payout(T[0], '{"tx": 1}', 1000, {"alice": alice - 6, "bob": 10})
    balance = ledger.balance("alice")
    assert (balance.payable, balance.in_flight, balance.paid) == (5, alice - 5, 0)
    with pytest.raises(LedgerError):
        ledger.record_payout(T[1], "{}", 1, {"alice": 6}), "the held amount cannot be paid again"

    assert [p.status for p in ledger.payouts(("recorded", "sent"))] == ["recorded"]
    assert ledger.mark_sent(T[0]) and not ledger.mark_sent(T[0])
    assert ledger.mark_committed(T[0], H[20]) and not ledger.mark_committed(T[0], H[20])
    assert not ledger.mark_sent(T[0])
    with pytest.raises(LedgerError):
        ledger.mark_gone(T[0], "too late")
    balance = ledger.balance("alice")
    assert (balance.payable, balance.in_flight, balance.paid) == (5, 0, alice - 5)

    # a transaction that can never commit gives its amounts back
    ledger.record_payout(T[2], "{}", 1, {"alice": 5})
    assert ledger.balance("alice").payable == 0
    assert ledger.mark_gone(T[2], "inputs spent elsewhere") and not ledger.mark_gone(T[2], "again")
    with pytest.raises(LedgerError):
        ledger.mark_committed(T[2], H[21])
    with pytest.raises(LedgerError):
        ledger.mark_sent(T[2])
    assert ledger.balance("alice").payable == 5
    assert ledger.check_invariants() == []
    with pytest.raises(ValueError):
        ledger.record_payout(T[3], "{}", 1, {"alice": 0})


def test_the_database_itself_refuses_broken_rows(ledger: Ledger) -> None:
    """The constraints hold even for writes that bypass the repository (a bug, a hand edit)."""
    credited_block(ledger, H[0], 1, {"alice": 1})
    with ledger.engine.begin() as conn:
        block_id = conn.execute(sa.text("SELECT id FROM found_blocks")).scalar_one()
    bad = [
        f"INSERT INTO credits (block_id, address, kind, amount) VALUES ({block_id}, 'x', 'share', -1)",
        f"INSERT INTO credits (block_id, address, kind, amount) VALUES ({block_id}, 'alice', 'share', 1)",
        "INSERT INTO credits (block_id, address, kind, amount) VALUES (999, 'x', 'share', 1)",
        "UPDATE found_blocks SET reward_total = reward_total + 1",
        "UPDATE found_blocks SET status = 'paid'",
        "UPDATE found_blocks SET status = 'finalized', reward_total = NULL, reward_primary = NULL",
        f"INSERT INTO found_blocks (block_hash, height, finder, worker, mode, status, void_reason, found_at)"
        f" VALUES ('{H[0]}', 2, 'f', '', 'pplns', 'found', '', '2026-01-01 00:00:00')",
    ]
    for statement in bad:
        with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
            conn.execute(sa.text(statement))


def test_invariant_check_finds_books_that_do_not_add_up(ledger: Ledger) -> None:
    credited_block(ledger, H[0], 1, {"alice": 1, "bob": 2})
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE credits SET amount = amount - 1 WHERE address = 'bob'"))
    problems = ledger.check_invariants()
    assert len(problems) == 1 and "credits" in problems[0] and H[0] in problems[0]


# -- a random walk through the ledger: the invariants hold after every step ----------------------------------
ADDRS = ["alice", "bob", "carol", "op"]


class LedgerMachine(RuleBasedStateMachine):
    """Random orders of block transitions and payouts, with the repository's own refusals allowed; after every
    step the books add up and no address is paid more than it was credited."""

    def __init__(self) -> None:
        super().__init__()
        engine = create_ledger_engine("sqlite://", poolclass=sa.pool.StaticPool)
        Base.metadata.create_all(engine)  # the schema of the migrations (test_migrations_build_exactly...)
        self.ledger = Ledger(engine)
        self.txs: list[str] = []

    def teardown(self) -> None:
        self.ledger.close()

    @rule(i=st.integers(0, 7), weights=st.dictionaries(st.sampled_from(ADDRS[:3]), st.integers(0, 10**6), max_size=3))
    def found_and_accepted(self, i: int, weights: dict[str, int]) -> None:
        self.ledger.record_found(H[i], i, "finder")
        with contextlib.suppress(LedgerError):
            self.ledger.accept(
                H[i], network_difficulty=10**6, window=window(weights, 10**6), n=2, fee_bps=150, fee_address="op"
            )

    @rule(
        i=st.integers(0, 7),
        reward=st.integers(0, 10**12),
        step=st.sampled_from(["finalize", "mature", "credit", "void"]),
    )
    def move(self, i: int, reward: int, step: str) -> None:
        try:
            if step == "finalize":
                self.ledger.finalize(H[i], MinerReward(reward, 0, 0, 0), finalized_by=H[30], cellbase_epoch=0)
            elif step == "mature":
                self.ledger.mark_mature(H[i])
            elif step == "credit":
                self.ledger.mark_credited(H[i])
            else:
                self.ledger.mark_void(H[i], "orphaned")
        except LedgerError:
            pass

    @rule(address=st.sampled_from(ADDRS), fraction=st.floats(0.01, 1.5))
    def pay(self, address: str, fraction: float) -> None:
        amount = int(self.ledger.balance(address).payable * fraction)
        if amount <= 0:
            return
        tx = T[len(self.txs) % len(T)] if len(self.txs) < len(T) else None
        if tx is None:
            return
        try:
            self.ledger.record_payout(tx, "{}", 100, {address: amount})
            self.txs.append(tx)
        except LedgerError:
            assert fraction > 1, "a payout within payable must be recorded"

    @rule(k=st.integers(0, 39), outcome=st.sampled_from(["sent", "committed", "gone"]))
    def settle(self, k: int, outcome: str) -> None:
        if not self.txs:
            return
        tx = self.txs[k % len(self.txs)]
        try:
            if outcome == "sent":
                self.ledger.mark_sent(tx)
            elif outcome == "committed":
                self.ledger.mark_committed(tx, H[31])
            else:
                self.ledger.mark_gone(tx, "dropped")
        except LedgerError:
            pass

    @invariant()
    def books_add_up(self) -> None:
        assert self.ledger.check_invariants() == []
        for balance in self.ledger.balances().values():
            assert min(balance.immature, balance.payable, balance.in_flight, balance.paid) >= 0


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_ledger_random_walk = LedgerMachine.TestCase
