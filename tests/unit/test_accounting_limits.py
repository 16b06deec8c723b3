"""Limits of the books that need no Redis (issue 15, build 3): worker names, the [redis] settings, and the Redis
configuration every deployment renders (maxmemory + noeviction). The behaviour of the limits in Redis itself
(TTLs, rejected shares, share log trimming, block dedup) is tests/integration/test_accounting_bounded_books.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy.config import DeployConfig, load_config
from ckbpool.deploy.hostfiles import RoleVarsError, config_from_role_vars, role_vars
from ckbpool.deploy.render import render_files
from ckbpool.deploy.target import Paths
from ckbpool.pool.config import ConfigError, load_pool_config
from ckbpool.pool.identity import ERROR_INVALID_WORKER, IdentityError, check_worker, parse_identity

pytestmark = pytest.mark.unit


# --- worker names -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["rig1", "S19-07", "farm_a.rack2", "a", "x" * 32, "0", "A.B-C_d"])
def test_worker_names_of_the_charset_pass(worker: str) -> None:
    check_worker(worker)
    assert parse_identity(f"alice.{worker}", None).worker == worker


@pytest.mark.parametrize(
    ("worker", "why"),
    [
        ("rig 1", "' ' at position 4"),
        ("rig:1", "':' at position 4"),
        ("rïg", "'ï' at position 2"),  # look-alike / non-ASCII
        ("rig\x00", "position 4"),
        ("a/b", "'/'"),
        ("x" * 33, "33 characters exceeds 32"),
        ("", "empty"),
    ],
)
def test_worker_names_outside_the_charset_are_refused_with_the_reason(worker: str, why: str) -> None:
    with pytest.raises(IdentityError) as info:
        check_worker(worker)
    assert info.value.code == ERROR_INVALID_WORKER and why in info.value.message


def test_parse_identity_applies_the_worker_rule_with_and_without_a_network() -> None:
    for text in ("alice.rig 1", "alice.r@g", f"alice.{'w' * 33}", "alice."):
        with pytest.raises(IdentityError) as info:
            parse_identity(text, None)
        assert info.value.code == ERROR_INVALID_WORKER, text


# --- [redis] settings -------------------------------------------------------------------------------------------


def test_redis_settings_defaults_cover_a_pplns_window_and_expire_idle_identities() -> None:
    redis = load_pool_config(data={}).redis
    assert redis.share_log_keep_s == 7 * 86400 and redis.share_log_maxlen is None
    assert redis.idle_ttl_s == 30 * 86400 and redis.dedup_ttl_s == 7 * 86400


@pytest.mark.parametrize(
    ("key", "value"),
    [("share_log_keep_s", 10), ("idle_ttl_s", 60), ("share_log_maxlen", 5), ("dedup_ttl_s", 0)],
)
def test_redis_settings_refuse_values_that_would_trim_the_books(key: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"redis.{key}"):
        load_pool_config(data={"redis": {key: value}})


# --- the rendered Redis configuration ---------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "-y", "--name", "mem", "--no-miner", "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 0, result.stderr
    return config


def _redis_confs(cfg: DeployConfig, paths: Paths) -> dict[str, str]:
    return {k: v for k, v in render_files(cfg, paths).items() if k.endswith("redis.conf")}


def _directives(conf: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in conf.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key] = value
    return out


def test_every_rendered_redis_conf_has_maxmemory_and_noeviction(project: Path) -> None:
    cfg = load_config(project)
    confs = _redis_confs(cfg, Paths.of(project, cfg))
    assert {"local/redis.conf", "compose/redis/redis.conf"} <= set(confs)
    for name, conf in confs.items():
        directives = _directives(conf)
        assert directives["maxmemory"] == "1024mb", name
        assert directives["maxmemory-policy"] == "noeviction", name
        # the books' durability (accounting.py's guarantees assume it), and AOF rewrites that do not compress
        assert (directives["appendonly"], directives["appendfsync"], directives["save"]) == ("yes", "always", '""')
        assert directives["rdbcompression"] == "no", name
    # configurable, and the role variable maps onto the same key
    sized = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"maxmemory_mb": 4096})})
    for name, conf in _redis_confs(sized, Paths.of(project, sized)).items():
        assert _directives(conf)["maxmemory"] == "4096mb", name
    variables = role_vars(sized, Paths.of(project, sized))
    assert variables["btcpool_redis_maxmemory_mb"] == 4096
    assert config_from_role_vars(variables).redis.maxmemory_mb == 4096


def test_maxmemory_too_small_for_the_books_is_refused(project: Path) -> None:
    cfg = load_config(project)
    variables = role_vars(cfg, Paths.of(project, cfg)) | {"btcpool_redis_maxmemory_mb": 8}
    with pytest.raises(RoleVarsError, match="btcpool_redis_maxmemory_mb"):
        config_from_role_vars(variables)
