"""The k8s target's chart values come from ckbpool.yaml through the same templates as the other targets.

What is checked here needs no cluster and no helm: each pool role's pool.toml loads as the pool's own config
with only that role and the cluster's Service names; the values pass the chart's own values.schema.json (with
the ``jsonschema`` library, the draft helm uses) and a missing payout address or a ``:latest`` image does not;
what the target refuses (payouts on SQLite) and what it never ships (the authority key). The chart in a real
helm and API server: tests/integration/test_k8s_chart.py and test_k8s_target.py.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy.config import DeployConfig, load_config
from ckbpool.deploy.errors import TargetError
from ckbpool.deploy.k8s import K8sTarget, chart_dir, chart_values, expected_workloads, rendered_files
from ckbpool.deploy.secrets import generate_secrets
from ckbpool.deploy.target import Paths, Target
from ckbpool.pool.config import load_pool_config
from ckbpool.proxy.config import load_proxy_config

pytestmark = pytest.mark.unit
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "charts" / "ckbpool" / "values.schema.json").read_text())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "--non-interactive", "--name", "kube", "--network", "dev", "--no-miner"]
    )
    assert result.exit_code == 0, result.stderr
    return config


def configured(project: Path, **changes: dict[str, Any]) -> tuple[DeployConfig, Paths]:
    """The project's config with sections updated (``services={"proxy": True}``), its secrets generated."""
    cfg = load_config(project)
    updates = {key: getattr(cfg, key).model_copy(update=value) for key, value in changes.items()}
    cfg = cfg.model_copy(update=updates)
    paths = Paths.of(project, cfg)
    generate_secrets(cfg, paths.secrets_dir)
    return cfg, paths


def test_each_role_has_its_own_pool_toml_wired_to_the_cluster_services(project: Path) -> None:
    cfg, paths = configured(project, services={"proxy": True}, payouts={"enabled": True})
    files = rendered_files(cfg, paths)
    assert sorted(files["pool"]) == ["accounting.toml", "blockmaker.toml", "jobmaker.toml", "stratum.toml"]
    for role in ("stratum", "jobmaker", "blockmaker", "accounting"):
        pool = load_pool_config(data=tomllib.loads(files["pool"][f"{role}.toml"]))
        assert list(pool.roles) == [role]
        assert pool.node.rpc_url == "http://kube-ckb:8114"
        assert pool.bus.url.startswith(f"kafka://kube-kafka:9092?client_id=pool-{role}&")
        assert pool.redis.url == "redis://kube-redis:6379/0"
        assert pool.payouts.db_host == "kube-postgres"
        assert str(pool.stratum.static_key_file) == "/run/secrets/pool_static_key"
    proxy = load_proxy_config(data=tomllib.loads(files["proxy"]["proxy.toml"]))
    assert (proxy.upstream.host, proxy.upstream.port) == ("kube-pool-stratum", cfg.ports.stratum)
    kafka = files["kafka"]["server.properties"]
    assert "advertised.listeners=PLAINTEXT://kube-kafka:9092" in kafka
    assert "controller.quorum.voters=1@kube-kafka:9093" in kafka
    assert "specs/dev.toml" in files["ckb"]["ckb.toml"] and "dev.toml" in files["ckb"]


def test_an_external_kafka_replaces_the_statefulset(project: Path) -> None:
    cfg, paths = configured(project, kubernetes={"kafka_bootstrap": "k1.example:9092,k2.example:9092"})
    values = chart_values(cfg, paths)
    assert values["kafka"]["inCluster"] is False
    assert "kafka" not in values["files"]
    stratum = load_pool_config(data=tomllib.loads(values["files"]["pool"]["stratum.toml"]))
    assert stratum.bus.url.startswith("kafka://k1.example:9092,k2.example:9092?")
    assert "kafka" not in [w.component for w in expected_workloads(cfg)]


def test_values_pass_the_chart_schema_and_carry_no_authority_key(project: Path) -> None:
    cfg, paths = configured(project, payouts={"enabled": True}, images={"registry": "registry.example.com/pool"})
    values = chart_values(cfg, paths)
    jsonschema.validate(values, SCHEMA)
    assert values["images"]["pool"] == f"registry.example.com/pool:{cfg.images.pool.rpartition(':')[2]}"
    assert set(values["secrets"]) == {
        "pool_static_key", "pool_certificate", "redis_password", "redis_auth_conf", "postgres_password",
        "payout_wallet_key", "redis_acl",
    }  # fmt: skip
    authority = (paths.secrets_dir / "authority.key").read_text().strip()
    assert authority not in json.dumps(values)
    assert values["postgres"]["enabled"] and values["payouts"]["enabled"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"payoutAddress": ""}, "/payoutAddress"),
        ({"images": {"pool": "registry.example.com/pool:latest"}}, "/images/pool"),
        ({"images": {"redis": "redis"}}, "/images/redis"),
    ],
)
def test_the_schema_refuses_a_missing_address_and_unpinned_images(
    project: Path, change: dict[str, Any], where: str
) -> None:
    cfg, paths = configured(project)
    values = chart_values(cfg, paths)
    for key, value in change.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) else value
    with pytest.raises(jsonschema.ValidationError) as info:
        jsonschema.validate(values, SCHEMA)
    assert "/" + "/".join(str(p) for p in info.value.absolute_path) == where


def test_payouts_on_sqlite_are_refused_with_the_key_path(project: Path) -> None:
    cfg, paths = configured(project, payouts={"enabled": True, "database": "sqlite"})
    with pytest.raises(TargetError, match=r"payouts\.database: the k8s target needs postgres"):
        chart_values(cfg, paths)


def test_more_stratum_pods_than_server_id_ranges_are_refused(project: Path) -> None:
    # stratum pod k takes the server_ids from 1 + 16 k: a sixteenth pod would run past the one-byte id space
    cfg, paths = configured(project, kubernetes={"stratum_replicas": 15})
    assert chart_values(cfg, paths)["stratum"]["replicas"] == 15
    cfg, paths = configured(project, kubernetes={"stratum_replicas": 16})
    with pytest.raises(TargetError, match=r"kubernetes\.stratum_replicas: at most 15"):
        chart_values(cfg, paths)


def test_the_target_is_a_target_and_ships_its_chart(project: Path) -> None:
    cfg, paths = configured(project, kubernetes={"namespace": "mining", "stratum_replicas": 3})
    target = K8sTarget(cfg, paths)
    assert isinstance(target, Target)
    assert target.rpc_url == "http://kube-ckb.mining.svc:8114"
    workloads = {w.component: w for w in expected_workloads(cfg)}
    assert workloads["pool-stratum"].replicas == 3 and workloads["pool-blockmaker"].replicas == 1
    assert workloads["pool-stratum"].kind == "StatefulSet" and workloads["pool-blockmaker"].kind == "Deployment"
    assert (chart_dir() / "Chart.yaml").is_file()
    assert target.kubectl_command("get", "pods")[1:3] == ["--namespace", "mining"]
