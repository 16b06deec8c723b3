"""The payouts ledger on a real PostgreSQL (Debian postgresql-15, a throwaway server per module): migrations
from an empty database and from the previous revision, the schema equal to the models, the books' invariants,
and two payout engines racing for one balance."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ckbpool.payouts.ledger import (
    Ledger,
    LedgerError,
    MinerReward,
    create_ledger_engine,
    current_revision,
    downgrade,
    head_revision,
    migrate,
)
from ckbpool.payouts.models import Base
from ckbpool.payouts.pplns import Window
from support.postgres import PostgresServer, fresh_database, postgres_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

H = [f"{i:064x}" for i in range(1, 20)]
REWARD = MinerReward(primary=1_917_808_21917808 // 8760, secondary=61_369_863, committed=600, proposal=400)


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:  # noqa: F811
    return fresh_database(postgres_server)


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    ledger = Ledger.open(url)
    try:
        yield ledger
    finally:
        ledger.close()


def _schema_diff(engine: sa.Engine) -> list[object]:
    with engine.connect() as conn:
        diff: list[object] = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
        return diff


def test_migrate_from_empty_gives_the_models_schema_and_is_idempotent(url: str) -> None:
    engine = create_ledger_engine(url)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        migrate(engine)
        assert current_revision(engine) == head_revision() == "0002"
        assert _schema_diff(engine) == []
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
        assert {"found_blocks", "window_shares", "credits", "payout_txs", "payments", "alembic_version"} <= tables
    finally:
        engine.dispose()


def test_migrate_from_the_previous_revision_keeps_the_books(url: str) -> None:
    """A database at 0001 with a credited block in it: upgrading to head keeps every row and the balances;
    down to 0001 and up again works too (the payout tables are dropped and re-created empty)."""
    engine = create_ledger_engine(url)
    try:
        migrate(engine, "0001")
        assert current_revision(engine) == "0001"
        ledger = Ledger(engine)
        ledger.record_found(H[0], 10, "alice")
        ledger.accept(
            H[0], network_difficulty=1 << 70, window=Window(1 << 71, {"alice": 3, "bob": 1}, 4, 2, False),
            n=2, fee_bps=200, fee_address="op",
        )  # fmt: skip
        ledger.finalize(H[0], REWARD, finalized_by=H[1], cellbase_epoch=1 << 40)
        ledger.mark_mature(H[0])
        ledger.mark_credited(H[0])
        with pytest.raises(sa.exc.ProgrammingError):  # no payout tables at 0001
            ledger.balances()

        migrate(engine)
        assert current_revision(engine) == "0002"
        balances = ledger.balances()
        assert sum(b.payable for b in balances.values()) == REWARD.total
        view = ledger.block(H[0])
        assert view is not None and view.network_difficulty == 1 << 70 and view.window_target_work == 1 << 71
        assert ledger.record_payout(H[5], "{}", 1000, {"alice": balances["alice"].payable})

        downgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        migrate(engine)
        assert _schema_diff(engine) == []
        assert ledger.payouts() == [], "the payout tables came back empty"
        assert ledger.balances()["alice"].payable == balances["alice"].payable
        assert ledger.check_invariants() == []
    finally:
        engine.dispose()


def test_the_books_add_up_on_postgresql(ledger: Ledger) -> None:
    weights = {f"ckt1q{i:04d}": (i + 1) * 1_000_003 for i in range(50)}
    for n, block_hash in enumerate(H[:5]):
        ledger.record_found(block_hash, 100 + n, "ckt1q0000")
        ledger.accept(
            block_hash, network_difficulty=10**9, window=Window(10**9, weights, sum(weights.values()), 50, True),
            n=2, fee_bps=150, fee_address="op",
        )  # fmt: skip
        ledger.finalize(block_hash, REWARD, finalized_by=H[10], cellbase_epoch=0)
        if n < 3:
            ledger.mark_mature(block_hash)
            ledger.mark_credited(block_hash)
    ledger.mark_void(H[4], "orphaned")
    balances = ledger.balances()
    assert sum(b.payable for b in balances.values()) == 3 * REWARD.total
    assert sum(b.immature for b in balances.values()) == REWARD.total  # H[3] finalized, H[4] void
    assert balances["op"].payable == 3 * (REWARD.total * 150 // 10_000)
    assert ledger.check_invariants() == []
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE credits SET amount = -1 WHERE address = 'op'"))
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        conn.execute(sa.text("UPDATE found_blocks SET reward_total = reward_total + 1"))


def test_two_engines_racing_for_one_balance_pay_it_once(ledger: Ledger, url: str) -> None:
    """Two ledgers (two processes' worth of connections) record different transactions for the whole payable
    balance of one address at the same moment: the advisory lock lets exactly one through."""
    ledger.record_found(H[0], 1, "alice")
    ledger.accept(
        H[0], network_difficulty=1, window=Window(1, {"alice": 1}, 1, 1, True), n=2, fee_bps=0, fee_address="op"
    )
    ledger.finalize(H[0], REWARD, finalized_by=H[1], cellbase_epoch=0)
    ledger.mark_mature(H[0])
    ledger.mark_credited(H[0])
    amount = ledger.balance("alice").payable
    other = Ledger.open(url)
    barrier = threading.Barrier(2)
    results: dict[str, object] = {}

    def pay(name: str, book: Ledger, tx_hash: str) -> None:
        barrier.wait(timeout=10)
        try:
            results[name] = book.record_payout(tx_hash, "{}", 100, {"alice": amount})
        except LedgerError as exc:
            results[name] = exc

    try:
        for _ in range(5):  # a few rounds, each with a fresh balance to race for
            results.clear()
            threads = [
                threading.Thread(target=pay, args=("a", ledger, f"{len(ledger.payouts()) * 2 + 100:064x}")),
                threading.Thread(target=pay, args=("b", other, f"{len(ledger.payouts()) * 2 + 101:064x}")),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(type(r).__name__ for r in results.values()) == ["LedgerError", "bool"], results
            assert ledger.balance("alice").payable == 0
            last = ledger.payouts()[-1]
            ledger.mark_gone(last.tx_hash, "the test releases it for the next round")
        assert ledger.check_invariants() == []
    finally:
        other.close()
