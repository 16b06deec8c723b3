"""Hardened compose services (issue 18, item 5), checked on the rendered compose.yaml of a stack with every
service on (payouts on PostgreSQL, Kafka, the V1 proxy, the testnet miner, monitoring with Grafana):

* every service drops every capability, runs with no-new-privileges and has a memory and a pids limit;
* each service is read-only exactly where ckbpool.deploy.hardening declares it, with its tmpfs mounts; only
  PostgreSQL (root entrypoint that drops to uid 999) gets capabilities back, and only those;
* ``resources.<service>`` in ckbpool.yaml overrides a limit; limits that follow from other settings (Redis's
  maxmemory, PostgreSQL's buffers) move with them;
* bad overrides are refused with the key named: an unknown service, a non-positive or tiny value, a Redis limit
  below its own maxmemory, a PostgreSQL pids limit below its connections;
* the hosts target's per-host stacks carry the same keys (one template, one ``compose_stack``);
* the secret readers still run as CKBPOOL_UID and the hardening keys do not replace the ``user:`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy import hardening
from ckbpool.deploy import render as render_mod
from ckbpool.deploy.config import DeployConfig, Resources, load_config, parse_config
from ckbpool.deploy.errors import ConfigFileError
from ckbpool.deploy.render import compose_stack, render_files
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit

#: every service compose.yaml.j2 can run
ALL = {
    "ckb", "pool", "redis", "kafka", "postgres", "payouts", "proxy", "miner", "prometheus", "node-exporter",
    "redis-exporter", "kafka-exporter", "postgres-exporter", "grafana",
}  # fmt: skip
SECRET_READERS = {"pool", "redis", "payouts", "proxy", "redis-exporter", "postgres-exporter", "grafana"}


def _init(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "-y", "--name", "hard", "--payouts", "--kafka", "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    return config


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[DeployConfig, Paths]:
    config = _init(tmp_path_factory.mktemp("hard"))
    cfg = load_config(config)
    cfg = cfg.model_copy(update={"services": cfg.services.model_copy(update={"proxy": True})})
    return cfg, Paths.of(config, cfg)


def _with_resources(cfg: DeployConfig, resources: dict[str, Any], **more: Any) -> DeployConfig:
    """``cfg`` as ckbpool.yaml with ``resources`` (and other top-level keys) added: through the loader, so its
    validation runs."""
    data = cfg.model_dump(mode="json")
    data["resources"] = resources
    data.update(more)
    return parse_config(data, "ckbpool.yaml")


def _services(cfg: DeployConfig, paths: Paths) -> dict[str, dict[str, Any]]:
    files = render_files(cfg, paths)
    doc = yaml.safe_load(files["compose/compose.yaml"])
    services: dict[str, dict[str, Any]] = doc["services"]
    return services


def test_every_service_drops_all_capabilities_and_has_limits(project: tuple[DeployConfig, Paths]) -> None:
    services = _services(*project)
    assert set(services) == ALL, "the fixture must run every service, or this test checks less than it says"
    for name, svc in services.items():
        assert svc["cap_drop"] == ["ALL"], name
        assert svc["security_opt"] == ["no-new-privileges:true"], name
        assert isinstance(svc["pids_limit"], int) and svc["pids_limit"] >= 16, name
        assert str(svc["mem_limit"]).endswith("m") and int(str(svc["mem_limit"])[:-1]) >= 32, name
        assert svc.get("cap_add", []) == list(hardening.CONFINEMENT[name].cap_add), name


def test_read_only_where_declared_with_its_tmpfs(project: tuple[DeployConfig, Paths]) -> None:
    services = _services(*project)
    for name, svc in services.items():
        declared = hardening.CONFINEMENT[name]
        assert svc.get("read_only", False) is declared.read_only, name
        assert svc.get("tmpfs", []) == (list(declared.tmpfs) if declared.read_only else []), name
    # what the images write outside their volumes (the module docstring says why)
    assert any(t.startswith("/opt/kafka/config:") for t in services["kafka"]["tmpfs"])
    assert any(t.startswith("/opt/kafka/logs:") for t in services["kafka"]["tmpfs"])
    assert any(t.startswith("/var/run/postgresql:") for t in services["postgres"]["tmpfs"])
    assert services["postgres"]["cap_add"] == ["CHOWN", "DAC_READ_SEARCH", "FOWNER", "SETGID", "SETUID"]
    # no service but PostgreSQL gets a capability back
    assert {n for n, s in services.items() if s.get("cap_add")} == {"postgres"}


def test_secured_kafka_keeps_the_images_config_dir(project: tuple[DeployConfig, Paths]) -> None:
    """The secured bus (services.kafka_security: always) starts the broker without the run script: nothing
    writes /opt/kafka/config, whose tools-log4j2.yaml the JVM reads, so no tmpfs hides it; /tmp stays."""
    cfg, paths = project
    data = cfg.model_dump(mode="json")
    data["services"]["kafka_security"] = "always"
    secured = _services(parse_config(data, "ckbpool.yaml"), paths)["kafka"]
    assert secured["read_only"] is True
    assert secured["tmpfs"] == list(hardening.KAFKA_SECURED_TMPFS)
    assert not any(t.startswith("/opt/kafka/") for t in secured["tmpfs"])
    assert secured["cap_drop"] == ["ALL"] and secured["user"].startswith("${CKBPOOL_UID:?")


def test_secret_readers_still_run_as_the_secrets_owner(project: tuple[DeployConfig, Paths]) -> None:
    services = _services(*project)
    for name in SECRET_READERS:
        assert services[name]["user"].startswith("${CKBPOOL_UID:?"), name
    assert "user" not in services["postgres"], "postgres starts as root and drops to 999 itself"


def test_defaults_follow_the_settings_that_size_them(project: tuple[DeployConfig, Paths]) -> None:
    cfg, paths = project
    services = _services(cfg, paths)
    assert services["redis"]["mem_limit"] == f"{hardening.redis_memory_mb(cfg.redis.maxmemory_mb)}m"
    assert services["ckb"]["mem_limit"] == f"{hardening.LIMITS['ckb'].memory_mb}m"
    bigger = _with_resources(cfg, {}, redis={"maxmemory_mb": 4096}, payouts={
        **cfg.payouts.model_dump(mode="json"), "postgres_shared_buffers_mb": 1024, "postgres_max_connections": 200,
    })  # fmt: skip
    moved = _services(bigger, paths)
    assert moved["redis"]["mem_limit"] == f"{4096 * 3 // 2 + 256}m"
    assert moved["postgres"]["mem_limit"] == f"{1024 + 10 * 200 + 256}m"
    assert moved["postgres"]["pids_limit"] == 200 + 64


def test_overrides_from_ckbpool_yaml(project: tuple[DeployConfig, Paths]) -> None:
    cfg, paths = project
    over = _with_resources(
        cfg,
        {"ckb": {"memory_mb": 8192}, "node_exporter": {"pids": 64}, "redis": {"memory_mb": 4000, "pids": 200}},
    )
    services = _services(over, paths)
    assert services["ckb"]["mem_limit"] == "8192m"
    assert services["ckb"]["pids_limit"] == hardening.LIMITS["ckb"].pids  # only what is given changes
    assert services["node-exporter"]["pids_limit"] == 64
    assert services["node-exporter"]["mem_limit"] == f"{hardening.LIMITS['node-exporter'].memory_mb}m"
    assert (services["redis"]["mem_limit"], services["redis"]["pids_limit"]) == ("4000m", 200)
    assert services["pool"]["mem_limit"] == f"{hardening.LIMITS['pool'].memory_mb}m"


@pytest.mark.parametrize(
    ("resources", "key"),
    [
        ({"ckbnode": {"memory_mb": 1024}}, "resources.ckbnode: unknown key"),
        ({"ckb": {"memory": 1024}}, "resources.ckb.memory: unknown key"),
        ({"ckb": {"memory_mb": 0}}, "resources.ckb.memory_mb:"),
        ({"pool": {"memory_mb": "lots"}}, "resources.pool.memory_mb:"),
        ({"grafana": {"pids": 4}}, "resources.grafana.pids:"),
        ({"redis": {"memory_mb": 512}}, "resources.redis.memory_mb: 512 MiB is below"),
        ({"kafka": {"memory_mb": 600}}, "resources.kafka.memory_mb: 600 MiB is below"),
        ({"postgres": {"memory_mb": 200}}, "resources.postgres.memory_mb: 200 MiB is below"),
        ({"postgres": {"pids": 40}}, "resources.postgres.pids: 40 is below"),
    ],
)
def test_bad_overrides_are_refused_naming_the_key(
    project: tuple[DeployConfig, Paths], resources: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigFileError) as err:
        _with_resources(project[0], resources)
    assert key in str(err.value), str(err.value)


def test_hosts_stacks_carry_the_same_keys(project: tuple[DeployConfig, Paths]) -> None:
    """The hosts target renders each host's stack from compose_stack with a subset of the services."""
    cfg, _ = project
    stack = compose_stack(cfg, services=["redis", "kafka", "postgres"], host="data-1")
    assert set(stack["services"]) == {"redis", "kafka", "postgres"}
    for name, svc in stack["services"].items():
        assert svc["hardening"] == hardening.for_service(name, cfg), name


def test_every_service_the_stacks_can_run_is_declared(project: tuple[DeployConfig, Paths]) -> None:
    """A new compose service must come with its confinement, its limits and a ``resources`` key (render refuses
    a service without one rather than running it unconfined)."""
    cfg, _ = project
    every = set(render_mod._compose_services(cfg))  # this config turns every option on (rpc-filter: hosts target)
    assert every >= ALL
    assert every <= set(hardening.CONFINEMENT)
    for name in hardening.CONFINEMENT:
        assert name in hardening.LIMITS or name in ("redis", "postgres"), name  # those two are computed
        assert name.replace("-", "_") in Resources.model_fields, name
        assert hardening.limits(name, cfg).memory_mb >= 32


def test_an_unknown_service_has_no_silent_default(project: tuple[DeployConfig, Paths]) -> None:
    with pytest.raises(ValueError, match="no hardening is defined for compose service 'mystery'"):
        hardening.for_service("mystery", project[0])
