"""The managed services of terraform/alicloud read statically (issue 20 item 3): its provider cannot be had here
(test_terraform_modules.py says why), so neither ``validate`` nor ``terraform test`` runs on it. What the HCL must
say: every managed resource is behind its switch, TLS and authentication are on, the allow-lists name only the
deployment's hosts, the passwords come from sensitive variables and no output carries one. (terraform/aws's managed
services run in ``terraform test`` with a mock provider: tests/managed.tftest.hcl, through test_terraform_modules.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_terraform_modules import _hcl

pytestmark = pytest.mark.integration

TF = Path(__file__).resolve().parents[2] / "terraform"


def _resources(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{kind}.{name}": body for block in doc.get("resource", []) for kind, named in block.items()
            for name, body in named.items()}  # fmt: skip


def _variables(cloud: str) -> dict[str, dict[str, Any]]:
    return {name: body for block in _hcl(TF / cloud / "variables.tf")["variable"] for name, body in block.items()}


def test_every_alicloud_managed_resource_is_behind_its_switch() -> None:
    resources = _resources(_hcl(TF / "alicloud" / "managed.tf"))
    switch = {"alikafka": "managed_kafka", "kvstore": "managed_redis", "db_": "managed_postgres",
              "rds_": "managed_postgres"}  # fmt: skip
    assert len(resources) >= 10
    for address, body in resources.items():
        guard = str(body.get("count", body.get("for_each", "")))
        wanted = [var for key, var in switch.items() if f"alicloud_{key}" in address]
        if address == "alicloud_kms_key.managed":
            wanted = ["managed_redis", "managed_postgres"]
        assert wanted and all(f"var.{w}" in guard for w in wanted), (address, guard)


def test_alicloud_managed_services_are_encrypted_authenticated_and_allow_listed() -> None:
    r = _resources(_hcl(TF / "alicloud" / "managed.tf"))
    kafka = r["alicloud_alikafka_instance.kafka"]
    assert kafka["deploy_type"] == 5  # the SSL endpoint (SASL_SSL) exists on internet + VPC instances only
    assert "enable.acl" in str(kafka["config"])
    assert r["alicloud_alikafka_sasl_user.ckbpool"]["type"] == "scram"
    allowed = r["alicloud_alikafka_instance_allowed_ip_attachment.kafka"]
    assert allowed["allowed_type"] == "internet" and allowed["port_range"] == "9093/9093"
    assert "local.kafka_clients" in str(allowed["for_each"])
    redis = r["alicloud_kvstore_instance.redis"]
    assert redis["ssl_enable"] == "Enable" and redis["vpc_auth_mode"] == "Open" and redis["tde_status"] == "Enabled"
    assert redis["security_ips"] == "${local.managed_clients}"
    assert redis["password"] == "${var.managed_redis_auth_token}"
    assert redis["config"] == {"maxmemory-policy": "noeviction"}
    pg = r["alicloud_db_instance.postgres"]
    assert pg["ssl_action"] == "Open" and pg["security_ips"] == "${local.managed_clients}"
    assert "alicloud_kms_key.managed" in pg["encryption_key"]
    assert pg["deletion_protection"] == "${var.managed_deletion_protection}"
    assert r["alicloud_rds_account.ckbpool"]["account_password"] == "${var.managed_postgres_password}"
    # the allow-lists: the hosts' own addresses, /32 each
    doc = _hcl(TF / "alicloud" / "managed.tf")
    local = {k: v for block in doc["locals"] for k, v in block.items()}
    assert "alicloud_instance.host[k].private_ip}/32" in local["managed_clients"]
    assert "alicloud_instance.host[k].public_ip}/32" in local["kafka_clients"]


@pytest.mark.parametrize("cloud", ["aws", "alicloud"])
def test_credentials_are_sensitive_and_no_output_carries_one(cloud: str) -> None:
    variables = _variables(cloud)
    secrets = [n for n in variables if n.endswith(("_password", "_auth_token"))]
    assert {"managed_kafka_password", "managed_redis_auth_token"} <= set(secrets)
    for name in secrets:
        assert variables[name]["sensitive"] is True and variables[name]["default"] is None, name
    # AWS takes the SCRAM password ephemeral (write-only into Secrets Manager): no plan or state keeps it
    assert variables["managed_kafka_password"].get("ephemeral") is (True if cloud == "aws" else None)
    outputs = {n: b for block in _hcl(TF / cloud / "outputs.tf")["output"] for n, b in block.items()}
    text = str(outputs["managed"]["value"])
    assert not any(f"var.{name}" in text for name in secrets)
    assert "password" not in text.replace("_secret_arn", "").replace("postgres_user", "")


def test_both_clouds_take_the_same_managed_switches() -> None:
    aws, ali = _variables("aws"), _variables("alicloud")
    shared = {"managed_kafka", "managed_redis", "managed_postgres", "managed_kafka_password",
              "managed_redis_auth_token", "managed_deletion_protection"}  # fmt: skip
    assert shared <= set(aws) and shared <= set(ali)
    for name in shared:
        assert aws[name]["type"] == ali[name]["type"] and aws[name].get("default") == ali[name].get("default"), name
