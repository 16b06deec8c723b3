"""Managed Kafka / Redis / PostgreSQL (issue 20 item 3), the parts without a cloud: the config's rules, the targets
that refuse it, what the hosts' rendered stacks run and where their pool points, and the cloud target's handling of
credentials and of the module's ``managed`` output (the moto e2e applies RDS for real:
tests/integration/test_terraform_managed_aws_moto.py)."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from ckbpool.deploy.cloud import CloudTarget, managed_target_problem, root_module
from ckbpool.deploy.config import DeployConfig, parse_config
from ckbpool.deploy.errors import ConfigFileError, TargetError
from ckbpool.deploy.hostfiles import Placement, host_plan, role_vars
from ckbpool.deploy.render import render_files
from ckbpool.deploy.secrets import generate_secrets
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit

TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
ENDPOINTS = {
    "kafka_bootstrap": "b-1.pool.kafka.us-east-1.amazonaws.com:9096,b-2.pool.kafka.us-east-1.amazonaws.com:9096",
    "kafka_username": "ckbpool",
    "redis": "master.pool-redis.use1.cache.amazonaws.com:6379",
    "postgres": "pool-ledger.abc.us-east-1.rds.amazonaws.com:5432",
    "postgres_user": "ckbpool",
    "postgres_db": "ckbpool",
}
EVERYTHING = {"kafka": True, "redis": True, "postgres": True}


def config(managed: dict[str, Any] | None = None, **overrides: Any) -> DeployConfig:
    data: dict[str, Any] = {
        "name": "pool",
        "network": "testnet",
        "payout_address": TESTNET_ADDRESS,
        "services": {"kafka": True},
        "payouts": {"enabled": True},
        "cloud": {"allowed_ssh_cidrs": ["198.51.100.7/32"]},
        "managed": managed if managed is not None else {**EVERYTHING, "endpoints": ENDPOINTS},
    }
    data.update(overrides)
    return parse_config(data)


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "workspace")


# ------------------------------------------------------------------------------------------------ config


def test_nothing_is_managed_by_default_and_old_configs_stay_valid() -> None:
    cfg = parse_config({"name": "pool", "network": "testnet", "payout_address": TESTNET_ADDRESS})
    assert not cfg.managed.any and cfg.managed.names() == []
    assert "redis" in cfg.enabled_roles()


def test_a_managed_service_must_be_one_the_deployment_uses() -> None:
    with pytest.raises(ConfigFileError) as err:
        config({"kafka": True, "postgres": True}, services={"kafka": False}, payouts={"enabled": False})
    text = "; ".join(err.value.problems)
    assert "managed.kafka needs services.kafka: true" in text
    assert "managed.postgres needs payouts.enabled: true with payouts.database: postgres" in text
    with pytest.raises(ConfigFileError, match=r"managed\.redis needs services\.redis"):
        config({"redis": True}, services={"redis": False})


def test_managed_kafka_and_redis_are_no_host_role_and_a_managed_ledger_is_not_run() -> None:
    cfg = config()
    assert "kafka" not in cfg.enabled_roles() and "redis" not in cfg.enabled_roles()
    assert not cfg.runs_postgres


@pytest.mark.parametrize("endpoint", ["http://db:5432", "db", "db:5432/x", "a:1,b"])
def test_endpoints_are_host_port(endpoint: str) -> None:
    with pytest.raises(ConfigFileError, match=r"managed\.endpoints\.postgres"):
        config({"postgres": True, "endpoints": {"postgres": endpoint}})


@pytest.mark.parametrize("target", ["local", "compose", "hosts", "k8s"])
def test_only_the_cloud_targets_take_managed_services(target: str) -> None:
    problem = managed_target_problem(config(), target)
    assert problem is not None
    assert problem.startswith("managed.kafka, managed.redis, managed.postgres: only the aws and alicloud targets")
    assert f"--target {target} runs them itself" in problem
    assert managed_target_problem(config(), "aws") is None and managed_target_problem(config(), "alicloud") is None
    assert managed_target_problem(config({}), target) is None


def test_the_role_gets_the_managed_section() -> None:
    cfg = config()
    out = role_vars(cfg, Paths(Path("/x/c.yaml"), Path("/x/s"), Path("/x/w")))
    assert out["btcpool_managed"]["endpoints"]["redis"] == ENDPOINTS["redis"]
    assert out["btcpool_managed"]["kafka"] is True


# ------------------------------------------------------------------------------------------------ render


def test_one_host_runs_none_of_the_managed_services_and_points_the_pool_at_them(paths: Paths) -> None:
    cfg = config()
    generate_secrets(cfg, paths.secrets_dir)
    files = render_files(cfg, paths)
    compose = yaml.safe_load(files["compose/compose.yaml"])
    services = set(compose["services"])
    for gone in ("kafka", "redis", "postgres", "kafka-exporter", "redis-exporter", "postgres-exporter"):
        assert gone not in services, gone
    assert {"ckb", "pool", "payouts", "prometheus"} <= services
    pool = tomllib.loads(files["compose/pool/pool.toml"])
    bus = pool["bus"]["url"]
    assert bus.startswith(f"kafka://{ENDPOINTS['kafka_bootstrap']}?")
    for part in ("security_protocol=SASL_SSL", "sasl_mechanism=SCRAM-SHA-512", "username=ckbpool",
                 "password_file=/run/secrets/managed_kafka_password"):  # fmt: skip
        assert part in bus
    assert pool["redis"]["url"] == f"rediss://{ENDPOINTS['redis']}/0"
    assert pool["redis"]["password_file"] == "/run/secrets/managed_redis_token" and "username" not in pool["redis"]
    ledger = pool["payouts"]
    assert (ledger["db_host"], ledger["db_port"]) == ("pool-ledger.abc.us-east-1.rds.amazonaws.com", 5432)
    assert ledger["db_password_file"] == "/run/secrets/managed_postgres_password" and "sqlite_path" not in ledger
    # the credentials are compose secrets of the services that read them, from secrets_dir
    assert {"managed_kafka_password", "managed_redis_token", "managed_postgres_password"} <= set(
        compose["services"]["pool"]["secrets"]
    )
    assert {"managed_redis_token", "managed_postgres_password"} <= set(compose["services"]["payouts"]["secrets"])
    assert compose["secrets"]["managed_redis_token"]["file"].endswith("/secrets/managed-redis.token")
    # no scrape job for an exporter that does not run
    prometheus = yaml.safe_load(files["compose/prometheus/prometheus.yml"])
    jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
    assert not jobs & {"kafka", "redis", "postgres"} and "ckbpool" in jobs


def test_a_managed_service_alone_leaves_the_others_on_the_hosts(paths: Paths) -> None:
    cfg = config({"postgres": True, "endpoints": {"postgres": ENDPOINTS["postgres"]}})
    generate_secrets(cfg, paths.secrets_dir)
    files = render_files(cfg, paths)
    services = set(yaml.safe_load(files["compose/compose.yaml"])["services"])
    assert {"kafka", "redis"} <= services and "postgres" not in services
    pool = tomllib.loads(files["compose/pool/pool.toml"])
    assert pool["bus"]["url"].startswith("kafka://kafka:") and pool["redis"]["url"].startswith("redis://redis:")
    assert pool["payouts"]["db_host"] == "pool-ledger.abc.us-east-1.rds.amazonaws.com"


def test_several_hosts_publish_and_open_nothing_for_the_managed_services(paths: Paths) -> None:
    cfg = config()
    generate_secrets(cfg, paths.secrets_dir)
    groups = {"ckb_node": ["a"], "jobmaker": ["b"], "blockmaker": ["b"], "accounting": ["b"], "stratum": ["b", "c"],
              "monitoring": ["a"]}  # fmt: skip
    placement = Placement.from_inventory(cfg, groups, {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"})
    plans = {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool", controller_secrets_dir=paths.secrets_dir)
        for h in placement.roles
    }
    for host, plan in plans.items():
        assert not {"kafka", "redis", "postgres"} & set(plan.services), host
        assert not {r["key"] for r in plan.firewall} & {"kafka", "redis", "postgres", "redis_exporter"}, host
        if "pool" in plan.services:
            pool = tomllib.loads(plan.files["compose/pool/pool.toml"])
            assert ENDPOINTS["kafka_bootstrap"] in pool["bus"]["url"]
            assert pool["redis"]["url"] == f"rediss://{ENDPOINTS['redis']}/0"
    # the ledger's password only where the payouts run; the bus and Redis credentials on every pool host
    assert "managed-postgres.password" in plans["b"].secrets and "managed-postgres.password" not in plans["c"].secrets
    assert {"managed-kafka.password", "managed-redis.token"} <= set(plans["c"].secrets)
    assert not any(s.startswith("managed-") for s in plans["a"].secrets)


# ------------------------------------------------------------------------------------------- cloud target


def test_root_module_takes_credentials_from_the_environment_only() -> None:
    root = root_module(
        "aws", "../x", {"name": "p"}, {"managed_kafka_password": True, "managed_redis_auth_token": False}
    )
    assert root["variable"]["managed_kafka_password"] == {
        "type": "string", "default": None, "sensitive": True, "ephemeral": True,
    }  # fmt: skip
    assert "ephemeral" not in root["variable"]["managed_redis_auth_token"]
    assert root["module"]["ckbpool"]["managed_kafka_password"] == "${var.managed_kafka_password}"
    assert root["output"]["managed"] == {"value": "${module.ckbpool.managed}"}


@pytest.mark.parametrize(("cloud", "variables"), [
    ("aws", {"managed_kafka_password": True, "managed_redis_auth_token": False}),
    ("alicloud", {"managed_kafka_password": False, "managed_redis_auth_token": False,
                  "managed_postgres_password": False}),
])  # fmt: skip
def test_credentials_are_generated_once_into_secrets(cloud: Any, variables: dict[str, bool], paths: Paths) -> None:
    target = CloudTarget(config({**EVERYTHING}), paths, cloud)
    assert target.credential_variables() == variables
    env = target.managed_credentials()
    assert set(env) == {f"TF_VAR_{v}" for v in variables}
    for value in env.values():
        assert len(value) == 40 and value.isalnum()
    assert len(set(env.values())) == len(env)
    for path in paths.secrets_dir.glob("managed-*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CloudTarget(config({**EVERYTHING}), paths, cloud).managed_credentials() == env


def test_the_module_output_becomes_the_configs_endpoints(paths: Paths) -> None:
    target = CloudTarget(config({**EVERYTHING}), paths, "alicloud")
    out = {
        "kafka_bootstrap": "alikafka-post-cn-1.alikafka.aliyuncs.com:9093", "kafka_username": "ckbpool",
        "kafka_secret_arn": "", "redis": "r-1.redis.rds.aliyuncs.com:6379",
        "postgres": "pgm-1.pg.rds.aliyuncs.com:5432", "postgres_user": "ckbpool", "postgres_db": "ckbpool",
        "postgres_secret_arn": "",
    }  # fmt: skip
    cfg = target.absorb_managed({"managed": out})
    e = cfg.managed.endpoints
    assert target.config is cfg and e.kafka_mechanism == "SCRAM-SHA-256"  # ApsaraMQ for Kafka's SCRAM
    assert (e.kafka_bootstrap, e.redis, e.postgres) == (out["kafka_bootstrap"], out["redis"], out["postgres"])
    with pytest.raises(TargetError, match="name no endpoint for managed redis"):
        CloudTarget(config({**EVERYTHING}), paths, "alicloud").absorb_managed({"managed": {**out, "redis": ""}})


def test_nothing_managed_changes_nothing(paths: Paths) -> None:
    cfg = config({})
    target = CloudTarget(cfg, paths, "aws")
    assert target.managed_credentials() == {} and target.credential_variables() == {}
    assert target.absorb_managed({"managed": {"redis": "x:1"}}) is cfg
    assert not paths.secrets_dir.exists() or not list(paths.secrets_dir.glob("managed-*"))
    assert json.dumps(root_module("aws", "../x", {"name": "p"})).count("managed_") == 0


@pytest.mark.parametrize("target", ["compose", "local"])
def test_the_cli_refuses_managed_services_on_a_target_that_runs_them_itself(tmp_path: Path, target: str) -> None:
    from typer.testing import CliRunner

    from ckbpool.cli.app import app

    project = tmp_path / "ckbpool.yaml"
    assert CliRunner().invoke(app, ["init", "-c", str(project), "--non-interactive", "--name", "unit"]).exit_code == 0
    data = yaml.safe_load(project.read_text())
    data["managed"] = {"redis": True}
    project.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["deploy", "-c", str(project), "--target", target])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and errors[0].startswith("error: managed.redis: only the aws and alicloud targets"), result.stderr
