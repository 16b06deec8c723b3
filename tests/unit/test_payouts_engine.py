"""The payout engine's pure parts: [payouts] settings validation, the batch plan (threshold, the operator's fee
reserve, ordering, batch size), the metric names the alerts rely on, and the test-only crash point (a real
SIGKILL of a child process). The chain side is tests/integration/test_payouts_engine_chain.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ckbpool.payouts.engine import CRASH_ENV, PayoutEngine, PayoutMetrics, PlannedPayment
from ckbpool.payouts.ledger import Balance
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
