"""The payout engine's pure parts: [payouts] settings validation, the batch plan (threshold, the operator's fee
reserve, ordering, batch size), the metric names the alerts rely on, the values of the gauges behind the alerts
(on a real SQLite ledger), and the test-only crash point (a real SIGKILL of a child process). The chain side is
tests/integration/test_payouts_engine_chain.py."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import update
from sqlalchemy.orm import Session

from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.signing import Secp256k1Key
from ckbpool.payouts.engine import CRASH_ENV, PayoutEngine, PayoutMetrics, PlannedPayment, policy_from
from ckbpool.payouts.ledger import Balance, Ledger, MinerReward
from ckbpool.payouts.models import PayoutTx
from ckbpool.payouts.pplns import Window
from ckbpool.payouts.tracker import BlockTracker
from ckbpool.payouts.wallet import PayoutWallet
from ckbpool.pool.config import MIN_PAYMENT_SHANNONS, ConfigError, PayoutSettings, load_pool_config

pytestmark = pytest.mark.unit

METRIC_NAMES = Path(__file__).resolve().parents[2] / "src" / "ckbpool" / "monitoring" / "metric-names.yml"
CKB = 100_000_000


def _settings(**kw: object) -> PayoutSettings:
    base: dict[str, object] = {"fee_address": "op", "threshold_shannons": 100 * CKB, "batch_size": 2}
    base.update(kw)
    return PayoutSettings.model_validate(base)


def test_payouts_are_off_by_default_and_enabled_needs_database_key_and_fee_address() -> None:
    assert load_pool_config(data={}).payouts.enabled is False
    with pytest.raises(ConfigError) as err:
        load_pool_config(data={"payouts": {"enabled": True}})
    assert "wallet_key_file, fee_address, database_url, db_host or sqlite_path is not set" in str(err.value)
    with pytest.raises(ConfigError, match="fee_bps must be >= 1"):
        load_pool_config(
            data={
                "payouts": {
                    "enabled": True,
                    "fee_bps": 0,
                    "sqlite_path": "l.db",
                    "wallet_key_file": "k",
                    "fee_address": "op",
                }
            }
        )


def test_threshold_must_cover_a_cell_and_one_batch_fee() -> None:
    settings = PayoutSettings()
    floor = MIN_PAYMENT_SHANNONS + settings.max_batch_fee()
    with pytest.raises(ConfigError, match=f"threshold_shannons must be at least {floor}"):
        load_pool_config(data={"payouts": {"threshold_shannons": floor - 1}})
    assert load_pool_config(data={"payouts": {"threshold_shannons": floor}}).payouts.threshold_shannons == floor
    with pytest.raises(ConfigError, match="greater than or equal to 6100000000"):
        load_pool_config(data={"payouts": {"threshold_shannons": 60 * CKB}})


def test_database_url_from_its_parts(tmp_path: Path) -> None:
    password = tmp_path / "db.password"
    password.write_text("p@ss/word\n")
    settings = PayoutSettings(db_host="db", db_password_file=password, db_name="ledger", db_user="pool")
    assert settings.database() == "postgresql+psycopg://pool:p%40ss%2Fword@db:5432/ledger"
    assert PayoutSettings(sqlite_path=tmp_path / "l.db").database() == f"sqlite:///{tmp_path / 'l.db'}"
    assert PayoutSettings().database() is None
    with pytest.raises(ValueError, match="only one of"):
        PayoutSettings(database_url="sqlite://", sqlite_path=tmp_path / "x")
    with pytest.raises(ValueError, match="needs db_password_file"):
        PayoutSettings(db_host="db")


def _plan(settings: PayoutSettings, payable: dict[str, int]) -> list[list[PlannedPayment]]:
    engine = PayoutEngine.__new__(PayoutEngine)  # plan() reads only settings and fee_address
    engine.settings = settings
    engine.fee_address = "op"
    return engine.plan({a: Balance(address=a, payable=v) for a, v in payable.items()})


def test_plan_pays_balances_at_threshold_largest_first_in_batches() -> None:
    settings = _settings()
    batches = _plan(settings, {"a": 100 * CKB, "b": 100 * CKB - 1, "c": 300 * CKB, "d": 200 * CKB, "e": 200 * CKB})
    assert batches == [
        [PlannedPayment("c", 300 * CKB), PlannedPayment("d", 200 * CKB)],
        [PlannedPayment("e", 200 * CKB), PlannedPayment("a", 100 * CKB)],
    ]
    assert _plan(settings, {"a": 99 * CKB}) == []


def test_the_operator_keeps_back_one_batch_fee_for_the_transaction_fees() -> None:
    settings = _settings()
    reserve = settings.max_batch_fee()
    assert _plan(settings, {"op": 100 * CKB}) == [], "below the threshold once the fee reserve is kept back"
    assert _plan(settings, {"op": 100 * CKB + reserve}) == [[PlannedPayment("op", 100 * CKB)]]


def test_the_alerted_metric_names_are_the_engines() -> None:
    listed = set(yaml.safe_load(METRIC_NAMES.read_text())["ckbpool_payouts"]["metrics"])
    exported = {sample.name for family in PayoutMetrics().registry.collect() for sample in family.samples}
    assert listed <= exported, listed - exported


def test_crash_point_kills_the_process_with_sigkill_only_at_the_named_point() -> None:
    code = "from ckbpool.payouts.engine import _crash_point\n_crash_point('after-send')\n_crash_point('after-record')\n"
    run = [sys.executable, "-c", code + "print('alive')"]
    killed = subprocess.run(run, env={CRASH_ENV: "after-record"}, capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9 and "alive" not in killed.stdout
    alive = subprocess.run(run, env={}, capture_output=True, text=True, timeout=60)
    assert alive.returncode == 0 and "alive" in alive.stdout, alive.stderr


# -- the gauges behind the alerts, on a real SQLite ledger -------------------------------------------------------
def _address(n: int) -> str:
    from ckbpool.ckb.address import encode_address, secp256k1_lock

    return encode_address(secp256k1_lock(bytes([n]) * 20), "dev")


ALICE, BOB, OPERATOR = _address(1), _address(2), _address(9)


def _block(ledger: Ledger, n: int, weights: dict[str, int], reward: int, *, credited: bool) -> None:
    """One found block taken through the ledger's own life: accepted with its window, finalized with ``reward``,
    and, if ``credited``, mature and credited (payable); otherwise its credits stay immature."""
    block_hash = f"{n:064x}"
    work = sum(weights.values())
    window = Window(target_work=work, weights=weights, counted_work=work, shares=len(weights), complete=True)
    ledger.record_found(block_hash, n, ALICE, "rig")
    ledger.accept(block_hash, network_difficulty=256, window=window, n=2, fee_bps=100, fee_address=OPERATOR)
    ledger.finalize(block_hash, MinerReward(reward, 0, 0, 0), finalized_by="ff" * 32, cellbase_epoch=0)
    if credited:
        ledger.mark_mature(block_hash)
        ledger.mark_credited(block_hash)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[PayoutEngine]:
    """The real engine on a real (migrated) SQLite ledger. Its wallet and tracker hold a node client that these
    tests never call: the gauges are set from the ledger and a wallet figure passed in (what the node's indexer
    would say), which is what :meth:`PayoutEngine.update_metrics` does after asking the node."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    settings = _settings(fee_address=OPERATOR, unconfirmed_alert_s=900.0)
    try:
        async with CkbRpcClient("http://127.0.0.1:9", retries=0) as client:
            wallet = PayoutWallet(Secp256k1Key(bytes(31) + b"\x05"), client, "dev")
            tracker = BlockTracker(ledger, client, policy_from(settings))
            yield PayoutEngine(settings, ledger, wallet, tracker)
    finally:
        ledger.close()


def _gauge(engine: PayoutEngine, name: str) -> float:
    value = engine.metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_wallet_shortfall_is_payable_minus_spendable_when_the_wallet_cannot_cover(engine: PayoutEngine) -> None:
    ledger = engine.ledger
    _block(ledger, 1, {ALICE: 3, BOB: 1}, 1_000 * CKB, credited=True)
    _block(ledger, 2, {ALICE: 1}, 700 * CKB, credited=False)  # immature: not owed yet, not in the shortfall
    balances = ledger.balances()
    payable = sum(b.payable for b in balances.values())
    assert payable == 1_000 * CKB  # every shannon of the credited block, the operator's fee included
    assert sum(b.immature for b in balances.values()) == 700 * CKB

    engine.observe(wallet_spendable=400 * CKB)
    assert _gauge(engine, "ckbpool_payouts_payable_shannons") == payable
    assert _gauge(engine, "ckbpool_payouts_immature_shannons") == 700 * CKB
    assert _gauge(engine, "ckbpool_payouts_wallet_spendable_shannons") == 400 * CKB
    assert _gauge(engine, "ckbpool_payouts_wallet_shortfall_shannons") == payable - 400 * CKB
    engine.observe(wallet_spendable=payable - 1)
    assert _gauge(engine, "ckbpool_payouts_wallet_shortfall_shannons") == 1
    for covered in (payable, payable + 1, 5_000 * CKB):
        engine.observe(wallet_spendable=covered)
        assert _gauge(engine, "ckbpool_payouts_wallet_shortfall_shannons") == 0, covered

    # a recorded payout holds alice's amount: no longer payable, so no longer part of what the wallet must cover
    alice = balances[ALICE].payable
    ledger.record_payout("ab" * 32, "{}", 1_000, {ALICE: alice, OPERATOR: 1_000})
    engine.observe(wallet_spendable=100 * CKB)
    assert _gauge(engine, "ckbpool_payouts_in_flight_shannons") == alice + 1_000
    assert _gauge(engine, "ckbpool_payouts_wallet_shortfall_shannons") == payable - alice - 1_000 - 100 * CKB


async def test_a_payout_unconfirmed_past_the_limit_makes_the_gauge_exceed_it(engine: PayoutEngine) -> None:
    ledger = engine.ledger
    _block(ledger, 1, {ALICE: 1, BOB: 1}, 1_000 * CKB, credited=True)
    limit = engine.settings.unconfirmed_alert_s
    assert _gauge(engine, "ckbpool_payouts_unconfirmed_limit_seconds") == limit == 900.0
    engine.observe(0)
    assert _gauge(engine, "ckbpool_payouts_oldest_unconfirmed_seconds") == 0.0  # nothing open

    old, new = "a1" * 32, "b2" * 32
    ledger.record_payout(old, "{}", 1_000, {ALICE: 100 * CKB, OPERATOR: 1_000})
    ledger.record_payout(new, "{}", 1_000, {BOB: 100 * CKB, OPERATOR: 1_000})
    now = dt.datetime.now(dt.UTC)
    engine.observe(0, now=now)
    assert 0.0 <= _gauge(engine, "ckbpool_payouts_oldest_unconfirmed_seconds") < limit  # just recorded

    # back-date the older one (and send it: sent is still unconfirmed) past the alert limit
    recorded_at = now - dt.timedelta(seconds=limit + 600)
    with Session(ledger.engine) as session, session.begin():
        session.execute(update(PayoutTx).where(PayoutTx.tx_hash == old).values(created_at=recorded_at))
    ledger.mark_sent(old)
    engine.observe(0, now=now)
    age = _gauge(engine, "ckbpool_payouts_oldest_unconfirmed_seconds")
    assert age == limit + 600
    assert age > _gauge(engine, "ckbpool_payouts_unconfirmed_limit_seconds")  # the alert's expression

    # committed, it no longer counts: the age is the younger open one's
    ledger.mark_committed(old, "cc" * 32)
    engine.observe(0, now=now)
    assert 0.0 <= _gauge(engine, "ckbpool_payouts_oldest_unconfirmed_seconds") < limit
    ledger.mark_sent(new)
    ledger.mark_committed(new, "dd" * 32)
    engine.observe(0, now=now)
    assert _gauge(engine, "ckbpool_payouts_oldest_unconfirmed_seconds") == 0.0
