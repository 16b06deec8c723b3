"""The aws/alicloud target's pure parts: module inputs from ``ckbpool.yaml``, the generated root module, the input
checks that stop a deploy before the cloud is asked, and the Alibaba Cloud preflight against a scripted API."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ckbpool.deploy.cloud import (
    CloudTarget,
    check_cloud_inputs,
    module_inputs,
    plan_table,
    root_module,
    terraform_modules_dir,
)
from ckbpool.deploy.cloud_preflight import AlicloudApiError, AlicloudRequest, PreflightFailed, preflight_alicloud
from ckbpool.deploy.config import DeployConfig, parse_config
from ckbpool.deploy.errors import ValidationFailed
from ckbpool.deploy.target import Paths
from ckbpool.deploy.terraform import PlanSummary

pytestmark = pytest.mark.unit

TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"


def config(**overrides: Any) -> DeployConfig:
    data: dict[str, Any] = {
        "name": "pool",
        "network": "testnet",
        "payout_address": TESTNET_ADDRESS,
        "cloud": {"region": "eu-central-1", "allowed_ssh_cidrs": ["198.51.100.7/32"]},
    }
    data.update(overrides)
    return parse_config(data)


def paths(tmp_path: Path) -> Paths:
    return Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "workspace")


def test_single_host_inputs_carry_every_enabled_role(tmp_path: Path) -> None:
    cfg = config(services={"kafka": False, "proxy": True})
    inputs = module_inputs(cfg, paths(tmp_path), "aws", KEY + "\n")
    assert inputs["hosts"] == [{"name": "pool", "roles": ["ckb_node", "pool", "redis", "proxy", "monitoring"]}]
    assert inputs["ssh_public_key"] == KEY
    assert inputs["region"] == "eu-central-1" and inputs["network"] == "testnet"
    assert inputs["allowed_ssh_cidrs"] == ["198.51.100.7/32"]
    assert inputs["stratum_port"] == 34255 and inputs["proxy_port"] == 3333
    assert "node_rpc" in inputs["private_ports"] and "stratum" not in inputs["private_ports"]


def test_multi_host_inputs_keep_the_topology(tmp_path: Path) -> None:
    cfg = config(
        services={"kafka": True},
        topology={
            "mode": "multi",
            "hosts": [
                {"name": "node", "address": "10.0.0.1", "roles": ["ckb_node"]},
                {"name": "core", "address": "10.0.0.2", "roles": ["pool", "redis", "kafka", "monitoring"]},
            ],
        },
    )
    inputs = module_inputs(cfg, paths(tmp_path), "aws", KEY)
    assert [h["name"] for h in inputs["hosts"]] == ["node", "core"]
    assert inputs["hosts"][1]["roles"][0] == "pool"


def test_alicloud_logs_in_as_root(tmp_path: Path) -> None:
    cfg = config(
        cloud={"region": "cn-hangzhou", "instance_type": "ecs.c7.xlarge", "allowed_ssh_cidrs": ["198.51.100.7/32"]}
    )
    assert module_inputs(cfg, paths(tmp_path), "alicloud", KEY)["ssh_user"] == "root"


@pytest.mark.parametrize(
    ("cidrs", "cloud", "instance_type", "fragment"),
    [
        ([], "aws", "c6i.xlarge", "cloud.allowed_ssh_cidrs: required for the aws target"),
        (["0.0.0.0/0"], "aws", "c6i.xlarge", "would open SSH to the internet"),
        (["10.0.0.0/4"], "aws", "c6i.xlarge", "would open SSH to the internet"),
        (["my-laptop"], "aws", "c6i.xlarge", "is not a CIDR block"),
        (["2001:db8::/32"], "aws", "c6i.xlarge", "IPv4 only"),
        (["198.51.100.7/32"], "alicloud", "c6i.xlarge", "is not an ECS instance type"),
        (["198.51.100.7/32"], "aws", "ecs.c7.xlarge", "is not an EC2 instance type"),
    ],
)
def test_bad_cloud_inputs(cidrs: list[str], cloud: Any, instance_type: str, fragment: str) -> None:
    cfg = config(cloud={"region": "eu-central-1", "allowed_ssh_cidrs": cidrs, "instance_type": instance_type})
    problems = check_cloud_inputs(cfg, cloud)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_good_inputs_have_no_problem() -> None:
    assert check_cloud_inputs(config(), "aws") == []


def test_missing_public_key_stops_with_one_message(tmp_path: Path) -> None:
    cfg = config(
        cloud={"region": "eu-central-1", "allowed_ssh_cidrs": ["198.51.100.7/32"], "ssh_public_key_file": "no-such.pub"}
    )
    target = CloudTarget(cfg, paths(tmp_path), "aws")
    with pytest.raises(ValidationFailed) as info:
        target.inputs()
    assert "cloud.ssh_public_key_file: cannot read" in str(info.value)
    assert not (tmp_path / "workspace").exists()  # nothing written, nothing created


def test_root_module_passes_every_input_and_pins_the_provider(tmp_path: Path) -> None:
    inputs = {"name": "pool", "region": "us-east-1", "hosts": []}
    root = root_module("aws", "../../../terraform/aws", inputs)
    assert root["provider"] == {"aws": {"region": "${var.region}"}}
    assert root["module"]["ckbpool"]["source"] == "../../../terraform/aws"
    assert root["module"]["ckbpool"]["hosts"] == "${var.hosts}"
    assert set(root["variable"]) == set(inputs)
    assert root["terraform"]["required_providers"]["aws"] == {"source": "hashicorp/aws", "version": "~> 5.100"}
    assert root["output"]["inventory"] == {"value": "${module.ckbpool.inventory}"}
    ali = root_module("alicloud", "../x", inputs)
    assert ali["provider"] == {"alicloud": {"region": "${var.region}"}}
    assert ali["terraform"]["required_providers"]["alicloud"]["source"] == "aliyun/alicloud"


def test_write_root_uses_a_relative_local_source(tmp_path: Path) -> None:
    key = tmp_path / "admin.pub"
    key.write_text(KEY + "\n")
    cfg = config(
        cloud={"region": "eu-central-1", "allowed_ssh_cidrs": ["198.51.100.7/32"], "ssh_public_key_file": str(key)}
    )
    target = CloudTarget(cfg, paths(tmp_path), "aws")
    tfvars = target.write_root(target.inputs())
    main = json.loads((target.workdir / "main.tf.json").read_text())
    source = main["module"]["ckbpool"]["source"]
    assert source.startswith("../") and (target.workdir / source / "main.tf").is_file()
    assert (target.workdir / source).resolve() == terraform_modules_dir() / "aws"
    assert json.loads(tfvars.read_text())["ssh_public_key"] == KEY


def test_plan_table_lists_changes() -> None:
    summary = PlanSummary.from_show_json(
        {
            "resource_changes": [
                {"address": "a.b", "change": {"actions": ["create"]}},
                {"address": "c.d", "change": {"actions": ["no-op"]}},
            ]
        }
    )
    table = plan_table(summary)
    assert table.row_count == 1 and "1 to add" in str(table.title)


# ------------------------------------------------------------------------------ Alibaba Cloud preflight


def ecs_api(**changes: Any) -> Any:
    """A scripted ECS API: the answers of a healthy account, with ``changes`` per action."""
    answers: dict[str, Any] = {
        "DescribeRegions": {"Regions": {"Region": [{"RegionId": "cn-hangzhou"}, {"RegionId": "cn-shanghai"}]}},
        "DescribeImages": {
            "Images": {
                "Image": [
                    {"ImageId": "ubuntu_24_04_x64_20G_alibase_20240812.vhd", "CreationTime": "2024-08-12T00:00:00Z"},
                    {"ImageId": "ubuntu_24_04_x64_20G_alibase_20250101.vhd", "CreationTime": "2025-01-01T00:00:00Z"},
                    {"ImageId": "centos_7_9_x64_20G_alibase_20240628.vhd", "CreationTime": "2024-06-28T00:00:00Z"},
                ]
            }
        },
        "DescribeAvailableResource": {
            "AvailableZones": {
                "AvailableZone": [
                    {
                        "ZoneId": "cn-hangzhou-k",
                        "AvailableResources": {
                            "AvailableResource": [
                                {
                                    "SupportedResources": {
                                        "SupportedResource": [
                                            {"Value": "ecs.c7.xlarge", "Status": "Available"},
                                            {"Value": "ecs.g7.xlarge", "Status": "SoldOut"},
                                        ]
                                    }
                                }
                            ]
                        },
                    }
                ]
            }
        },
        "DescribeAccountAttributes": {
            "AccountAttributeItems": {
                "AccountAttributeItem": [
                    {
                        "AttributeName": "max-postpaid-instance-vcpu-count",
                        "AttributeValues": {"ValueItem": [{"Value": "500"}]},
                    },
                    {
                        "AttributeName": "used-postpaid-instance-vcpu-count",
                        "AttributeValues": {"ValueItem": [{"Value": "8"}]},
                    },
                ]
            }
        },
        "DescribeInstanceTypes": {
            "InstanceTypes": {"InstanceType": [{"InstanceTypeId": "ecs.c7.xlarge", "CpuCoreCount": 4}]}
        },
    }
    answers.update(changes)
    seen: list[tuple[str, Mapping[str, Any]]] = []

    def call(action: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        seen.append((action, params))
        answer = answers[action]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    call.seen = seen  # type: ignore[attr-defined]
    return call


def test_alicloud_preflight_passes_on_a_healthy_account() -> None:
    report = preflight_alicloud(AlicloudRequest("cn-hangzhou", {"ecs.c7.xlarge": 2}), call=ecs_api())
    assert [c.name for c in report.checks] == ["credentials", "region", "image", "instance_type", "quota"]
    assert all(c.ok for c in report.checks)
    assert report.image_id == "ubuntu_24_04_x64_20G_alibase_20250101.vhd"
    assert "vCPUs 8 needed, 8 of 500 used" in report.checks[-1].detail


@pytest.mark.parametrize(
    ("request_", "api", "fragment"),
    [
        (
            AlicloudRequest("cn-hangzhou", {"ecs.c7.xlarge": 1}),
            {"DescribeRegions": AlicloudApiError("InvalidAccessKeyId.NotFound", "Specified access key is not found.")},
            "credentials: Alibaba Cloud rejected the access key (InvalidAccessKeyId.NotFound",
        ),
        (
            AlicloudRequest("cn-hangzhuo", {"ecs.c7.xlarge": 1}),
            {},
            "region: unknown region 'cn-hangzhuo' (did you mean",
        ),
        (AlicloudRequest("cn-hangzhou", {"ecs.g7.xlarge": 1}), {}, "instance_type: ecs.g7.xlarge not available"),
        (
            AlicloudRequest("cn-hangzhou", {"ecs.c7.xlarge": 1}, image_id="ubuntu_99"),
            {"DescribeImages": {"Images": {"Image": []}}},
            "image: no available image ubuntu_99",
        ),
        (AlicloudRequest("cn-hangzhou", {"ecs.c7.xlarge": 200}), {}, "quota: needs 800 pay-as-you-go vCPUs"),
    ],
)
def test_alicloud_preflight_stops_at_the_first_failure(
    request_: AlicloudRequest, api: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(PreflightFailed) as info:
        preflight_alicloud(request_, call=ecs_api(**api))
    assert str(info.value).startswith("alicloud preflight: ") and fragment in str(info.value), str(info.value)


def test_alicloud_preflight_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ALICLOUD_ACCESS_KEY",
        "ALICLOUD_SECRET_KEY",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(PreflightFailed, match="set ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY"):
        preflight_alicloud(AlicloudRequest("cn-hangzhou", {"ecs.c7.xlarge": 1}))


def test_alicloud_sdk_request_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real SDK path builds signed ECS RPC requests; check the request without sending it."""
    from aliyunsdkcore.client import AcsClient  # type: ignore[import-untyped]

    from ckbpool.deploy.cloud_preflight import alicloud_sdk_call

    sent: list[Any] = []

    def fake_do_action(self: Any, request: Any) -> bytes:
        sent.append(request)
        return b'{"Regions": {"Region": [{"RegionId": "cn-hangzhou"}]}}'

    monkeypatch.setattr(AcsClient, "do_action_with_exception", fake_do_action)
    call = alicloud_sdk_call("cn-hangzhou", "AKID", "SECRET")
    assert call("DescribeRegions", {"AcceptLanguage": "en-US"})["Regions"]["Region"][0]["RegionId"] == "cn-hangzhou"
    request = sent[0]
    assert request.get_action_name() == "DescribeRegions" and request.get_version() == "2014-05-26"
    assert request.get_query_params()["AcceptLanguage"] == "en-US"
