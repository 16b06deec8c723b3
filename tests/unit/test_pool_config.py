"""The pool's typed config: defaults are safe, unknown keys and bad values are reported with their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckbpool.pool.config import ConfigError, PoolConfig, load_pool_config

pytestmark = pytest.mark.unit


def test_defaults_are_private_and_encrypted() -> None:
    cfg = PoolConfig()
    assert cfg.stratum.noise is True
    assert cfg.http.listen_host == "127.0.0.1"
    assert cfg.node.rpc_url.startswith("http://127.0.0.1")
    assert set(cfg.roles) == {"jobmaker", "stratum", "blockmaker", "accounting"}


def test_unknown_key_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text("[stratum]\nlisten_port = 3333\nlisten_prot = 1\n")
    with pytest.raises(ConfigError) as err:
        load_pool_config(path)
    assert str(path) in str(err.value)
    assert "stratum.listen_prot" in str(err.value)


def test_bad_value_and_bad_toml_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('network = "moonnet"\n')
    with pytest.raises(ConfigError, match="network"):
        load_pool_config(path)
    path.write_text("[stratum\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_pool_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_pool_config(tmp_path / "missing.toml")


def test_testnet_uses_eaglesong_blake2b() -> None:
    assert PoolConfig(network="testnet").pow_blake2b
    assert not PoolConfig(network="mainnet").pow_blake2b


def test_a_payouts_interval_the_stalled_alert_would_fire_on_is_refused(tmp_path: Path) -> None:
    """CkbpoolPayoutsStalled fires 900 s after the last pass: a pass every 900 s or more would keep it firing."""
    path = tmp_path / "pool.toml"
    path.write_text("[payouts]\ninterval_s = 900\n")
    with pytest.raises(ConfigError, match=r"payouts\.interval_s"):
        load_pool_config(path)
    path.write_text("[payouts]\ninterval_s = 600\n")
    assert load_pool_config(path).payouts.interval_s == 600
