"""The aws target's managed services against a local moto server (issue 20 item 3), on ``terraform`` and ``tofu``.

What moto 5.2.5 can carry, applied for real: RDS PostgreSQL with ``manage_master_user_password`` (CreateDBInstance,
DescribeDBInstances, the master user secret in Secrets Manager, and KMS, EC2 subnets and groups). The deploy reads
RDS's secret back into ``secrets/`` (0600) and the hosts' rendered stacks run no PostgreSQL and point the ledger at
the RDS endpoint.

What it cannot, and where it stops (so those paths stay in the mock-provider ``terraform test`` of
``terraform/aws/tests/managed.tftest.hcl``):

* Amazon MSK: ``aws_msk_cluster`` waits for the cluster to become ACTIVE, and moto's DescribeClusterV2 answers
  ``CREATING`` forever (moto/kafka/models.py creates every cluster in that state); moto has no GetBootstrapBrokers
  nor BatchAssociateScramSecret either, which the provider calls next.
* ElastiCache: CreateCacheParameterGroup is not implemented (``NotImplementedError: The
  create_cache_parameter_group action has not been implemented``); with an existing group
  (``managed_redis_parameter_group``) CreateReplicationGroup succeeds, but the provider then reads the member
  cluster ``<id>-001`` with DescribeCacheClusters and moto, which creates no member clusters, answers 404
  ``CacheClusterNotFound``.

Those two are planned here against moto (the plan needs only EC2 and STS reads) to check what reaches Terraform:
the switches in tfvars, the credentials only in the environment.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_terraform_aws_moto import ADMIN, KEY, MOTO_INPUTS, TESTNET_ADDRESS, aws_env, moto

from ckbpool.deploy.cloud import CloudTarget
from ckbpool.deploy.config import parse_config
from ckbpool.deploy.hostfiles import Placement, host_plan
from ckbpool.deploy.secrets import generate_secrets
from ckbpool.deploy.target import Paths
from support.terraform_binaries import tf_binary

pytestmark = pytest.mark.integration
__all__ = ["aws_env", "moto", "tf_binary"]  # fixtures: moto server, its environment, terraform and tofu

boto3 = pytest.importorskip("boto3")


def managed_project(tmp_path: Path, name: str, managed: dict[str, bool], **extra: Any) -> tuple[Any, Paths]:
    key = tmp_path / "admin.pub"
    key.write_text(KEY + "\n")
    data: dict[str, Any] = {
        "name": name,
        "network": "testnet",
        "payout_address": TESTNET_ADDRESS,
        "payouts": {"enabled": True, "database": "postgres"},
        "managed": managed,
        "cloud": {
            "region": "us-east-1",
            "instance_type": "c6i.large",
            "allowed_ssh_cidrs": [ADMIN],
            "ssh_public_key_file": str(key),
        },
        **extra,
    }
    config = parse_config(data)
    paths = Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "workspace")
    generate_secrets(config, paths.secrets_dir)  # what `ckbpool init --payouts` writes (wallet key, CA, ...)
    return config, paths


def rendered_stacks(target: CloudTarget, inventory: Path) -> dict[str, Any]:
    """Each host's plan as the btcpool role's lookup renders it, from the inventory Terraform's outputs made."""
    doc = yaml.safe_load(inventory.read_text())
    hosts = doc["all"]["hosts"]
    groups = {g: sorted((body or {}).get("hosts") or {}) for g, body in doc["all"]["children"].items()}
    addresses = {h: str(v.get("private_ip")) for h, v in hosts.items()}
    placement = Placement.from_inventory(target.config, groups, addresses)
    return {
        h: host_plan(
            target.config, placement, h, install_dir="/opt/ckbpool", controller_secrets_dir=target.paths.secrets_dir
        )
        for h in placement.roles
    }


# One binary for the real RDS apply: ~200 s each, almost all the AWS provider's own create/delete waits; tofu runs
# the same module in the mock-provider tests (test_terraform_managed_modules) and the plan test below.
@pytest.mark.parametrize("tf_binary", ["terraform"], indirect=True)
def test_rds_ledger_applied_on_moto_and_the_hosts_run_no_postgres(aws_env: str, tmp_path: Path) -> None:
    config, paths = managed_project(tmp_path, "mgd-rds", {"postgres": True})
    lines: list[str] = []
    target = CloudTarget(
        config, paths, "aws", on_line=lines.append, aws_endpoint_url=aws_env,
        extra_inputs={**MOTO_INPUTS, "managed_deletion_protection": False},
    )  # fmt: skip
    seen: dict[str, Any] = {}
    target.deploy(confirm=lambda _s: True, run_hosts=lambda inventory: seen.update(rendered_stacks(target, inventory)))
    try:
        rds = boto3.client("rds", region_name="us-east-1", endpoint_url=aws_env)
        (db,) = [d for d in rds.describe_db_instances()["DBInstances"] if d["DBInstanceIdentifier"] == "mgd-rds-ledger"]
        assert db["StorageEncrypted"] and not db["PubliclyAccessible"] and db["Engine"] == "postgres"
        secret = json.loads(
            boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=aws_env).get_secret_value(
                SecretId=db["MasterUserSecret"]["SecretArn"]
            )["SecretString"]
        )
        # the endpoints reached the config the hosts step renders from
        endpoint = f"{db['Endpoint']['Address']}:{db['Endpoint']['Port']}"
        assert target.config.managed.endpoints.postgres == endpoint
        assert target.config.managed.endpoints.postgres_user == secret["username"]
        # RDS's own password, read back from Secrets Manager into secrets/, mode 0600
        password_file = paths.secrets_dir / "managed-postgres.password"
        assert password_file.read_text().strip() == secret["password"]
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        # the one host runs no PostgreSQL; its pool and payout engine use the RDS ledger with the password file
        (plan,) = seen.values()
        assert "postgres" not in plan.services and "postgres-exporter" not in plan.services
        assert "payouts" in plan.services and "managed-postgres.password" in plan.secrets
        assert all(r["key"] not in ("postgres", "postgres_exporter") for r in plan.firewall)
        pool_toml = plan.files["compose/pool/pool.toml"]
        assert f'db_host = "{db["Endpoint"]["Address"]}"' in pool_toml
        assert f"db_port = {db['Endpoint']['Port']}" in pool_toml
        assert 'db_password_file = "/run/secrets/managed_postgres_password"' in pool_toml
        assert "sqlite_path" not in pool_toml
        compose = yaml.safe_load(plan.files["compose/compose.yaml"])
        assert "postgres" not in compose["services"]
        assert compose["secrets"]["managed_postgres_password"]["file"].endswith("managed-postgres.password")
        # the password is in no rendered file, no Terraform input and not in the state
        for path in [*target.workdir.iterdir()]:
            if path.is_file():
                assert secret["password"] not in path.read_text(errors="replace"), path
        assert not any(secret["password"] in text for text in plan.files.values())
        assert target.outputs()["managed"]["postgres_secret_arn"] == db["MasterUserSecret"]["SecretArn"]
    finally:
        assert target.destroy(confirm=lambda _s: True)
    remaining = boto3.client("rds", region_name="us-east-1", endpoint_url=aws_env).describe_db_instances()
    assert not [d for d in remaining["DBInstances"] if d["DBInstanceIdentifier"] == "mgd-rds-ledger"]


def test_msk_and_elasticache_reach_terraform_as_switches_and_environment_only(aws_env: str, tmp_path: Path) -> None:
    """A plan of every managed service on moto (apply stops in moto for MSK and ElastiCache: module docstring):
    the tfvars carry the switches, the credentials are generated into secrets/ and passed in the environment."""
    config, paths = managed_project(
        tmp_path, "mgd-all", {"kafka": True, "redis": True, "postgres": True}, services={"kafka": True}
    )
    target = CloudTarget(config, paths, "aws", aws_endpoint_url=aws_env, extra_inputs=MOTO_INPUTS)
    tf, summary = target.plan()
    created = {c.address for c in summary.changes if c.action == "create"}
    for address in (
        "module.ckbpool.aws_msk_cluster.kafka[0]",
        "module.ckbpool.aws_msk_scram_secret_association.kafka[0]",
        "module.ckbpool.aws_secretsmanager_secret_version.kafka[0]",
        "module.ckbpool.aws_elasticache_replication_group.redis[0]",
        "module.ckbpool.aws_db_instance.postgres[0]",
    ):
        assert address in created, sorted(created)
    # no host carries kafka or redis: the single host is node + pool + monitoring
    hosts = [c for c in created if c.startswith("module.ckbpool.aws_instance.host")]
    assert len(hosts) == 1
    tfvars = json.loads((target.workdir / "terraform.tfvars.json").read_text())
    assert tfvars["managed_kafka"] and tfvars["managed_redis"] and tfvars["managed_postgres"]
    assert tfvars["hosts"] == [{"name": "mgd-all", "roles": ["ckb_node", "pool", "monitoring"]}]
    kafka_password = (paths.secrets_dir / "managed-kafka.password").read_text().strip()
    redis_token = (paths.secrets_dir / "managed-redis.token").read_text().strip()
    for path in (paths.secrets_dir / "managed-kafka.password", paths.secrets_dir / "managed-redis.token"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(kafka_password) == 40 and kafka_password.isalnum() and redis_token != kafka_password
    assert tf.env["TF_VAR_managed_kafka_password"] == kafka_password
    assert tf.env["TF_VAR_managed_redis_auth_token"] == redis_token
    for name in ("terraform.tfvars.json", "main.tf.json"):
        text = (target.workdir / name).read_text()
        assert kafka_password not in text and redis_token not in text, name
    # the Kafka password is an ephemeral variable: not even the saved plan keeps it
    assert kafka_password.encode() not in (target.workdir / "ckbpool.tfplan").read_bytes()
    # a second plan reuses the same credentials (generated once)
    assert target.managed_credentials()["TF_VAR_managed_kafka_password"] == kafka_password
