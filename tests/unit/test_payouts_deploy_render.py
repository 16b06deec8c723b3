"""The payouts ledger in every deploy target, checked on the rendered files (issue 16, item 1, deploy side):

* off by default: no PostgreSQL, no ``[payouts]``, no wallet key or database password;
* compose: a ``postgres`` service (pinned image, password only as a secret file, internal network only, named
  volume, pg_isready healthcheck, memory caps) and ``postgres-exporter`` (monitoring), the pool waiting for it and
  reading the same secret; pool.toml's ``[payouts]`` loads as the pool's own config and names the service; the
  block assembler pays the payout wallet; no rendered file holds the password;
* local: SQLite under the workspace's data directory, which the real ledger code migrates;
* hosts: PostgreSQL on the Redis host unless a ``postgres`` group says otherwise, published on its private
  address to the accounting host (and the monitoring host for the exporter) and admitted only from there;
  the wallet key and ``[payouts]`` only on the accounting host.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy import secrets as sec
from ckbpool.deploy.config import DeployConfig, load_config
from ckbpool.deploy.hostfiles import Placement, config_from_role_vars, host_plan, role_vars
from ckbpool.deploy.render import render_files
from ckbpool.deploy.target import Paths
from ckbpool.pool.config import load_pool_config

pytestmark = pytest.mark.unit

THREE = {"ckb_node": ["node-1"], "kafka": ["data-1"], "redis": ["data-1"], "pool": ["pool-1"], "monitoring": ["pool-1"]}
ADDRESSES = {"node-1": "10.231.0.1", "data-1": "10.231.0.2", "pool-1": "10.231.0.3"}


def _init(tmp_path: Path, *flags: str) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "-y", "--name", "pay", "--no-miner", "--workspace", str(tmp_path), *flags]
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    return config


def _cfg(config: Path) -> tuple[DeployConfig, Paths]:
    cfg = load_config(config)
    return cfg, Paths.of(config, cfg)


def _with(cfg: DeployConfig, **payouts: Any) -> DeployConfig:
    return cfg.model_copy(update={"payouts": cfg.payouts.model_copy(update=payouts)})


@pytest.fixture
def paying(tmp_path: Path) -> Path:
    return _init(tmp_path, "--payouts", "--kafka")


def test_payouts_are_off_by_default_and_leave_no_trace(tmp_path: Path) -> None:
    cfg, paths = _cfg(_init(tmp_path))
    assert not cfg.payouts.enabled and not cfg.runs_postgres
    assert "postgres" not in cfg.enabled_roles()
    assert not (paths.secrets_dir / sec.POSTGRES_PASSWORD).exists()
    assert not (paths.secrets_dir / sec.PAYOUT_WALLET_KEY).exists()
    files = render_files(cfg, paths)
    compose = yaml.safe_load(files["compose/compose.yaml"])
    assert not {"postgres", "postgres-exporter"} & set(compose["services"])
    assert "postgres-data" not in compose.get("volumes", {})
    for path in ("compose/pool/pool.toml", "local/pool.toml"):
        assert "payouts" not in tomllib.loads(files[path]), path
    prom = yaml.safe_load(files["compose/prometheus/prometheus.yml"])
    assert "postgres" not in {job["job_name"] for job in prom["scrape_configs"]}


def test_init_generates_the_wallet_key_and_the_password_once(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    assert cfg.payouts.enabled and cfg.payouts.database == "postgres" and cfg.runs_postgres
    assert {sec.POSTGRES_PASSWORD, sec.PAYOUT_WALLET_KEY} <= set(sec.required_files(cfg))
    before = {}
    for name in (sec.POSTGRES_PASSWORD, sec.PAYOUT_WALLET_KEY):
        path = paths.secrets_dir / name
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
        before[name] = path.read_bytes()
    assert len(before[sec.POSTGRES_PASSWORD].strip()) >= 40  # 256 bits, url-safe
    assert sec.generate_secrets(cfg, paths.secrets_dir) == []  # nothing rotated by a second init
    for name, content in before.items():
        assert (paths.secrets_dir / name).read_bytes() == content, name
    assert sec.check_secrets(cfg, paths.secrets_dir).errors == []
    (paths.secrets_dir / sec.POSTGRES_PASSWORD).unlink()
    assert any(sec.POSTGRES_PASSWORD in e for e in sec.check_secrets(cfg, paths.secrets_dir).errors)


def test_compose_runs_postgres_on_the_internal_network_with_its_password_as_a_file(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    files = render_files(cfg, paths)
    compose = yaml.safe_load(files["compose/compose.yaml"])
    services = compose["services"]
    pg = services["postgres"]
    assert pg["image"] == f"${{CKBPOOL_IMAGE_POSTGRES:-{cfg.images.postgres}}}"
    assert cfg.images.postgres.startswith("postgres:15.") and cfg.images.postgres.endswith("-bookworm")
    assert pg["profiles"] == ["core"]
    assert pg["environment"] == {
        "POSTGRES_USER": "ckbpool",
        "POSTGRES_DB": "ckbpool",
        "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
    }
    assert pg["secrets"] == ["postgres_password"]
    assert pg["networks"] == ["backend"] and "ports" not in pg  # internal only, nothing published
    assert compose["networks"]["backend"]["internal"] is True
    assert pg["volumes"] == ["postgres-data:/var/lib/postgresql/data"] and "postgres-data" in compose["volumes"]
    assert "user" not in pg  # the entrypoint reads the secret as root, then runs postgres as 999
    assert pg["healthcheck"]["test"][:4] == ["CMD", "pg_isready", "-h", "127.0.0.1"]
    assert pg["command"] == ["postgres", "-c", "shared_buffers=128MB", "-c", "max_connections=50"]
    assert pg["logging"]["options"]["max-size"] == "10m" and pg["restart"] == "unless-stopped"
    secret_file = compose["secrets"]["postgres_password"]["file"]
    assert (paths.workspace / "compose" / secret_file).resolve() == paths.secrets_dir / sec.POSTGRES_PASSWORD
    # the pool waits for it and reads the same secret, plus the wallet key
    pool = services["pool"]
    assert pool["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert {"postgres_password", "payout_wallet_key"} <= set(pool["secrets"])
    # the exporter: monitoring profile, the secret's owner, the ledger's role, scraped by Prometheus
    exporter = services["postgres-exporter"]
    assert exporter["profiles"] == ["monitoring"]
    assert exporter["image"] == f"${{CKBPOOL_IMAGE_POSTGRES_EXPORTER:-{cfg.images.postgres_exporter}}}"
    assert exporter["user"].startswith("${CKBPOOL_UID")
    assert exporter["environment"] == {
        "DATA_SOURCE_URI": "postgres:5432/ckbpool?sslmode=disable",
        "DATA_SOURCE_USER": "ckbpool",
        "DATA_SOURCE_PASS_FILE": "/run/secrets/postgres_password",
    }
    assert exporter["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert exporter["networks"] == ["backend"]
    prom = yaml.safe_load(files["compose/prometheus/prometheus.yml"])
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]}
    assert jobs["postgres"] == ["postgres-exporter:9187"]
    env = dict(line.split("=", 1) for line in files["compose/.env"].splitlines() if "=" in line and line[0] != "#")
    assert env["CKBPOOL_IMAGE_POSTGRES"] == cfg.images.postgres
    # no rendered file holds a secret's value
    password = (paths.secrets_dir / sec.POSTGRES_PASSWORD).read_text().strip()
    key = (paths.secrets_dir / sec.PAYOUT_WALLET_KEY).read_text().strip()
    for path, text in files.items():
        assert password not in text and key not in text, path


def test_pool_toml_points_the_ledger_at_the_service_and_the_rewards_at_the_wallet(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    files = render_files(cfg, paths)
    pool = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"]))
    payouts = pool.payouts
    assert payouts.enabled
    assert (payouts.db_host, payouts.db_port) == ("postgres", 5432)
    assert (payouts.db_name, payouts.db_user) == ("ckbpool", "ckbpool")
    assert payouts.db_password_file == Path("/run/secrets/postgres_password")
    assert payouts.wallet_key_file == Path("/run/secrets/payout_wallet_key")
    assert payouts.fee_address == cfg.payout_address
    assert (payouts.fee_bps, payouts.pplns_n) == (cfg.payouts.fee_bps, cfg.payouts.pplns_n)
    assert payouts.database_url is None and payouts.sqlite_path is None
    # the node's block assembler pays the payout wallet (which pays the miners), in both ckb.toml files
    wallet = sec.payout_wallet_lock(paths.secrets_dir)
    assert wallet is not None
    for path in ("compose/ckb/ckb.toml", "local/ckb/ckb.toml"):
        assembler = tomllib.loads(files[path])["block_assembler"]
        assert assembler["args"] == "0x" + wallet.args.hex(), path
    off = render_files(_with(cfg, enabled=False), paths)
    assert tomllib.loads(off["compose/ckb/ckb.toml"])["block_assembler"]["args"] != "0x" + wallet.args.hex()


def test_local_target_keeps_the_ledger_in_sqlite_that_the_ledger_code_migrates(paying: Path) -> None:
    from ckbpool.payouts.ledger import Ledger, current_revision, head_revision

    cfg, paths = _cfg(paying)
    files = render_files(cfg, paths)
    pool = load_pool_config(data=tomllib.loads(files["local/pool.toml"]))
    sqlite_path = pool.payouts.sqlite_path
    assert sqlite_path == paths.workspace / "local" / "data" / "payouts" / "ledger.sqlite"
    assert pool.payouts.db_host is None
    assert pool.payouts.wallet_key_file == paths.secrets_dir / sec.PAYOUT_WALLET_KEY
    url = pool.payouts.database()
    assert url == f"sqlite:///{sqlite_path}"
    sqlite_path.parent.mkdir(parents=True)
    ledger = Ledger.open(url)
    try:
        assert current_revision(ledger.engine) == head_revision()
    finally:
        ledger.close()


def test_sqlite_on_compose_runs_no_postgres(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    cfg = _with(cfg, database="sqlite")
    assert cfg.payouts.enabled and not cfg.runs_postgres
    assert sec.POSTGRES_PASSWORD not in sec.required_files(cfg)
    files = render_files(cfg, paths)
    compose = yaml.safe_load(files["compose/compose.yaml"])
    assert not {"postgres", "postgres-exporter"} & set(compose["services"])
    assert "postgres_password" not in compose["secrets"] and "payout_wallet_key" in compose["secrets"]
    pool = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"]))
    assert pool.payouts.sqlite_path == Path("/var/lib/ckbpool/ledger.sqlite")  # the pool's data volume


def _plans(cfg: DeployConfig, paths: Paths, groups: dict[str, list[str]], addresses: dict[str, str]) -> dict[str, Any]:
    placement = Placement.from_inventory(cfg, groups, addresses)
    return {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/pay", controller_secrets_dir=paths.secrets_dir)
        for h in placement.roles
    }


def test_hosts_put_postgres_with_redis_and_open_it_to_the_accounting_host_only(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    plans = _plans(cfg, paths, THREE, ADDRESSES)
    p = cfg.ports
    assert plans["data-1"].services == [
        "redis", "kafka", "postgres", "node-exporter", "redis-exporter", "kafka-exporter", "postgres-exporter",
        "scrape-gateway",
    ]  # fmt: skip
    assert "postgres" not in plans["pool-1"].services
    # published on the private address, each port admitted from the one host that dials it
    published = {(x["address"], x["port"]) for x in plans["data-1"].published}
    assert ("10.231.0.2", p.postgres) in published and ("10.231.0.2", p.postgres_exporter) not in published
    rules = {r["port"]: r for r in plans["data-1"].firewall}
    assert rules[p.postgres]["sources"] == ["10.231.0.3"] and not rules[p.postgres]["public"]
    assert rules[p.scrape_gateway]["sources"] == ["10.231.0.3"]  # the exporter: through the scrape gateway
    # the accounting host's pool dials it there, with the password and the wallet key it alone gets
    pool = load_pool_config(data=tomllib.loads(plans["pool-1"].files["compose/pool/pool.toml"]))
    assert (pool.payouts.db_host, pool.payouts.db_port) == ("10.231.0.2", p.postgres)
    assert {sec.POSTGRES_PASSWORD, sec.PAYOUT_WALLET_KEY} <= set(plans["pool-1"].secrets)
    assert sec.POSTGRES_PASSWORD in plans["data-1"].secrets and sec.PAYOUT_WALLET_KEY not in plans["data-1"].secrets
    # the node's host: only its RPC filter's and scrape gateway's certificates and tokens, nothing of the payouts
    assert [s for s in plans["node-1"].secrets if not s.startswith("tls-scrape-")] == [
        "tls-rpc-filter.pem", "rpc-filter.token", "scrape.token",
    ]  # fmt: skip
    prom = yaml.safe_load(plans["pool-1"].files["compose/prometheus/prometheus.yml"])
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]}
    assert jobs["postgres-gateway"] == [f"10.231.0.2:{p.scrape_gateway}"]


def test_hosts_a_postgres_group_moves_it_and_split_pool_roles_keep_the_wallet_on_accounting(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    groups = {
        "ckb_node": ["node-1"], "kafka": ["data-1"], "redis": ["data-1"], "postgres": ["pool-1"],
        "jobmaker": ["node-1"], "blockmaker": ["node-1"], "stratum": ["node-1"], "accounting": ["pool-1"],
        "monitoring": ["pool-1"],
    }  # fmt: skip
    plans = _plans(cfg, paths, groups, ADDRESSES)
    assert "postgres" in plans["pool-1"].services and "postgres" not in plans["data-1"].services
    # on the same host: reached by service name, published to nobody
    pool = load_pool_config(data=tomllib.loads(plans["pool-1"].files["compose/pool/pool.toml"]))
    assert (pool.payouts.db_host, pool.payouts.db_port) == ("postgres", 5432)
    assert cfg.ports.postgres not in {x["port"] for x in plans["pool-1"].published}
    # a pool host without accounting has no [payouts], no wallet key, no database password
    other = tomllib.loads(plans["node-1"].files["compose/pool/pool.toml"])
    assert "payouts" not in other
    assert not {sec.POSTGRES_PASSWORD, sec.PAYOUT_WALLET_KEY} & set(plans["node-1"].secrets)
    compose = yaml.safe_load(plans["node-1"].files["compose/compose.yaml"])
    assert not {"postgres_password", "payout_wallet_key"} & set(compose.get("secrets", {}))


def test_inventory_and_role_variables_carry_the_payouts(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    variables = role_vars(cfg, paths)
    assert variables["btcpool_payouts"]["enabled"] is True
    assert config_from_role_vars(variables).payouts == cfg.payouts
    inventory = render_files(cfg, paths)["hosts/inventory.ini"]
    assert "[postgres]\nlocalhost" in inventory
    with pytest.raises(Exception, match=r"btcpool_payouts\.database"):
        config_from_role_vars({**variables, "btcpool_payouts": {"enabled": True, "database": "mysql"}})


def test_multi_host_topology_with_payouts_validates_and_places_postgres_with_redis(tmp_path: Path) -> None:
    from ckbpool.deploy.hostfiles import RoleVarsError
    from ckbpool.deploy.validate import check_config

    config = _init(
        tmp_path, "--payouts", "--kafka", "--host", "node-1=10.231.0.1:ckb_node",
        "--host", "data-1=10.231.0.2:redis,kafka", "--host", "pool-1=10.231.0.3:pool,monitoring",
    )  # fmt: skip
    cfg, paths = _cfg(config)
    assert check_config(cfg).errors == []
    assert "postgres" not in cfg.enabled_roles()  # hosts carry no postgres role (nor do the cloud modules)
    inventory = render_files(cfg, paths)["hosts/inventory.ini"]
    assert "[postgres]\ndata-1\n" in inventory
    # a postgres group while payouts are off is refused, naming the switch
    off = _with(cfg, enabled=False)
    with pytest.raises(RoleVarsError, match=r"inventory group postgres: data-1 .*btcpool_payouts\.enabled"):
        Placement.from_inventory(off, {**THREE, "postgres": ["data-1"]}, ADDRESSES)
    with pytest.raises(RoleVarsError, match="inventory group postgres: 2 hosts"):
        Placement.from_inventory(cfg, {**THREE, "postgres": ["data-1", "pool-1"]}, ADDRESSES)


#: payment settings an operator might deploy, none of them a default (so a key the renderer drops shows up)
PAYMENTS = {
    "threshold_shannons": 250 * 100_000_000,
    "fee_rate": 2_500,
    "batch_size": 50,
    "interval_s": 30.0,
    "unconfirmed_alert_s": 900.0,
}


def test_payment_settings_reach_every_rendered_pool_toml(paying: Path) -> None:
    """fee_rate, threshold, batch size, pass interval and the unconfirmed alert limit set in ckbpool.yaml are
    what the pool's own config loads from compose, local and the hosts' accounting host -- and the schema's
    defaults are the pool's, so an operator who sets nothing gets what PayoutSettings documents."""
    from ckbpool.pool.config import PayoutSettings

    pool_defaults = PayoutSettings()
    deploy_defaults = DeployConfig(name="x", network="dev", payout_address=cfg_address(paying)).payouts
    for key in PAYMENTS:
        assert getattr(deploy_defaults, key) == getattr(pool_defaults, key), key
    raw = yaml.safe_load(paying.read_text())
    raw["payouts"].update(PAYMENTS)
    paying.write_text(yaml.safe_dump(raw))
    cfg, paths = _cfg(paying)
    files = render_files(cfg, paths)
    plans = _plans(cfg, paths, THREE, ADDRESSES)
    rendered = {
        "compose": files["compose/pool/pool.toml"],
        "local": files["local/pool.toml"],
        "hosts": plans["pool-1"].files["compose/pool/pool.toml"],
    }
    for where, text in rendered.items():
        payouts = load_pool_config(data=tomllib.loads(text)).payouts
        got = {key: getattr(payouts, key) for key in PAYMENTS}
        assert got == PAYMENTS, where
        assert payouts.max_batch_fee() == -(-(2_000 + 50 * 110) * 2_500 // 1000), where
    # the role carries them too (the role variables round-trip into the same schema), and its argument spec
    # and defaults name exactly the schema's keys with the schema's defaults
    assert config_from_role_vars(role_vars(cfg, paths)).payouts == cfg.payouts
    role = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "btcpool"
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    spec = specs["argument_specs"]["main"]["options"]["btcpool_payouts"]["options"]
    assert set(spec) == set(deploy_defaults.model_dump())
    role_defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())["btcpool_payouts"]
    assert role_defaults == deploy_defaults.model_dump()


def cfg_address(config: Path) -> str:
    return load_config(config).payout_address


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"fee_rate": 0}, r"payouts\.fee_rate"),
        ({"batch_size": 1001}, r"payouts\.batch_size"),
        ({"threshold_shannons": 60 * 100_000_000}, r"payouts\.threshold_shannons"),
        ({"interval_s": 0}, r"payouts\.interval_s"),
        ({"unconfirmed_alert_s": -1}, r"payouts\.unconfirmed_alert_s"),
        # above 61 CKB, but not above 61 CKB + a full batch's fee at this rate: the pool would refuse to load
        ({"threshold_shannons": 61 * 100_000_000 + 1_000, "fee_rate": 10_000, "batch_size": 1_000},
         r"payouts: threshold_shannons must be at least 6101120000 .*fee_rate 10000 and batch_size 1000"),
    ],
)  # fmt: skip
def test_payment_settings_out_of_the_pools_bounds_are_refused_naming_the_key(
    paying: Path, update: dict[str, Any], match: str
) -> None:
    raw = yaml.safe_load(paying.read_text())
    raw["payouts"].update(update)
    paying.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match=match):
        load_config(paying)


def test_an_imported_wallet_key_is_kept_by_init_and_paid_by_the_block_assembler(tmp_path: Path) -> None:
    """docs/payouts.md's import: the operator writes ``secrets/payout-wallet.key`` (64 hex digits, an optional
    0x, mode 0600) before ``ckbpool init --payouts``; init keeps it byte for byte, the checks accept it, and the
    rendered nodes pay the block rewards to its lock. A key others can read is refused by the checks."""
    from ckbpool.ckb.signing import Secp256k1Key

    imported = Secp256k1Key(bytes(31) + b"\x2a")
    key_file = tmp_path / "secrets" / sec.PAYOUT_WALLET_KEY
    key_file.parent.mkdir(mode=0o700)
    key_file.write_text("0x" + imported.private_key.hex() + "\n")
    key_file.chmod(0o600)
    before = key_file.read_bytes()
    cfg, paths = _cfg(_init(tmp_path, "--payouts", "--kafka"))
    assert paths.secrets_dir / sec.PAYOUT_WALLET_KEY == key_file
    assert key_file.read_bytes() == before
    assert sec.check_secrets(cfg, paths.secrets_dir).errors == []
    assert sec.payout_wallet_lock(paths.secrets_dir) == imported.lock
    files = render_files(cfg, paths)
    for path in ("compose/ckb/ckb.toml", "local/ckb/ckb.toml"):
        assert tomllib.loads(files[path])["block_assembler"]["args"] == "0x" + imported.lock.args.hex(), path
    key_file.chmod(0o644)
    errors = sec.check_secrets(cfg, paths.secrets_dir).errors
    assert any(sec.PAYOUT_WALLET_KEY in e and "0600" in e for e in errors), errors
