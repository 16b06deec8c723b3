"""The aws target end to end against a local moto server (127.0.0.1, a free port), up to the Ansible step:
input checks -> boto3 preflight -> terraform init/plan (confirmed) -> apply of terraform/aws -> inventory from the
outputs -> destroy. The AWS provider and boto3 both talk to moto (AWS_ENDPOINT_URL); nothing leaves the machine.

Bad input (no admin CIDR, 0.0.0.0/0 for SSH, an unknown region, bad credentials, a declined plan) stops with one
message and creates nothing.

Every test that reaches Terraform runs twice, on ``terraform`` and on OpenTofu's ``tofu`` (``aws_env`` takes the
``tf_binary`` fixture, which selects the binary through ``CKBPOOL_TERRAFORM`` as an operator would).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.table import Table

from ckbpool.deploy.cloud import CloudTarget, DeployCancelled
from ckbpool.deploy.cloud_preflight import PreflightFailed
from ckbpool.deploy.config import parse_config
from ckbpool.deploy.errors import ValidationFailed
from ckbpool.deploy.target import Paths
from ckbpool.deploy.terraform import (
    PlanSummary,
    TerraformError,
    TerraformNotFound,
    default_plugin_mirror,
    find_binary,
    provider_available,
)
from support.terraform_binaries import binary_name, tf_binary

pytestmark = pytest.mark.integration
__all__ = ["tf_binary"]  # the parametrized fixture aws_env takes: terraform and tofu

boto3 = pytest.importorskip("boto3")
MOTO_SERVER = Path(sys.executable).parent / "moto_server"
TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7rQ2k3V1m8T3x8b0m7z3c5Jg2d3d1Q2Xo3t1m8YbQe admin@laptop"
ADMIN = "198.51.100.7/32"
#: moto's image catalogue has Canonical images, not 24.04; moto does not implement MonitorInstances
MOTO_INPUTS = {
    "ami_name_filter": "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*",
    "detailed_monitoring": False,
}
PRIVATE_PORTS = [8114, 18114, 8100, 8180, 6379, 9092, 9093, 9090, 3000, 9100, 9121, 9308, 5432, 9187, 8190]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(tmp: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (tmp / f"moto-{port}.log").open("wb")
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto_server did not start; see {log.name}")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not MOTO_SERVER.exists():
        pytest.skip("moto[server] is not installed")
    try:
        find_binary()
    except TerraformNotFound as exc:
        pytest.skip(str(exc))
    if not provider_available(default_plugin_mirror(), "hashicorp", "aws"):
        pytest.skip("hashicorp/aws is not in the provider mirror: run scripts/terraform-deps.sh")
    proc, url = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def aws_env(moto: str, tf_binary: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """boto3 and the Terraform AWS provider both point at moto; no profile, no instance metadata. Parametrized over
    the binaries (``tf_binary``: terraform, tofu)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    return moto


def project(tmp_path: Path, name: str, **cloud: Any) -> tuple[Any, Paths]:
    key = tmp_path / "admin.pub"
    key.write_text(KEY + "\n")
    settings = {
        "region": "us-east-1",
        "instance_type": "c6i.large",
        "allowed_ssh_cidrs": [ADMIN],
        "ssh_public_key_file": str(key),
        "open_node_p2p": True,
    }
    settings.update(cloud)
    config = parse_config({"name": name, "network": "testnet", "payout_address": TESTNET_ADDRESS, "cloud": settings})
    return config, Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "workspace")


def ec2(url: str) -> Any:
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=url)


def vpcs_of(url: str, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ec2(url).describe_vpcs(Filters=[{"Name": "tag:ckbpool", "Values": [name]}])["Vpcs"]
    return found


def instances_of(url: str, name: str, states: tuple[str, ...] = ("pending", "running")) -> list[dict[str, Any]]:
    reservations = ec2(url).describe_instances(
        Filters=[{"Name": "tag:ckbpool", "Values": [name]}, {"Name": "instance-state-name", "Values": list(states)}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def test_deploy_and_destroy_against_moto(aws_env: str, tmp_path: Path) -> None:
    config, paths = project(tmp_path, "motopool")
    target = CloudTarget(config, paths, "aws", aws_endpoint_url=aws_env, extra_inputs=MOTO_INPUTS)
    try:
        _deploy_and_destroy(aws_env, target)
    except BaseException:
        # the moto server is the module's: what a failed run left there (a key pair, a VPC) would fail the other
        # binary's run on its duplicates, hiding which failure is the real one
        target.auto_approve = True
        with contextlib.suppress(Exception):
            target.destroy()
        raise


def _deploy_and_destroy(aws_env: str, target: CloudTarget) -> None:
    lines: list[str] = []
    progress: list[tuple[str, str]] = []
    plans: list[PlanSummary] = []
    handed: list[Path] = []
    target.on_line = lines.append

    def confirm(summary: PlanSummary) -> bool:
        plans.append(summary)
        return True

    target.deploy(
        on_progress=lambda step, state: progress.append((step, state)), confirm=confirm, run_hosts=handed.append
    )
    outputs = target.outputs()

    # the plan shown before anything was created
    assert len(plans) == 1 and plans[0].destroy == 0 and plans[0].change == 0
    planned = {c.address for c in plans[0].changes}
    assert 'module.ckbpool.aws_instance.host["motopool"]' in planned and "module.ckbpool.aws_vpc.this" in planned
    assert ("preflight credentials", "healthy") in progress and (f"{binary_name()} apply", "healthy") in progress
    assert any("Apply complete!" in line for line in lines)  # Terraform's own lines were streamed

    # one host with every role, in the inventory handed to the Ansible step
    assert list(outputs["hosts"]) == ["motopool"]
    host = outputs["hosts"]["motopool"]
    assert handed == [target.inventory_path]
    inventory = yaml.safe_load(target.inventory_path.read_text())
    children = inventory["all"]["children"]
    assert set(children) == {"ckb_node", "pool", "jobmaker", "stratum", "blockmaker", "accounting", "redis", "kafka",
                             "proxy", "monitoring"}  # fmt: skip
    for group in ("ckb_node", "pool", "stratum", "redis", "monitoring"):
        assert list(children[group]["hosts"]) == ["motopool"], group
    assert not children["kafka"]["hosts"] and not children["proxy"]["hosts"]
    host_vars = inventory["all"]["hosts"]["motopool"]
    assert host_vars["ansible_host"] == host["public_ip"] and host_vars["private_ip"] == host["private_ip"]
    assert host_vars["ansible_user"] == "ubuntu"
    assert "[ckb_node]\nmotopool\n" in (target.workdir / "inventory.ini").read_text()

    # the btcpool role accepts this inventory as it is: its placement rules, and the hosts target's reading of it
    from ckbpool.deploy.hostfiles import Placement

    groups = {g: list(v["hosts"]) for g, v in children.items()}
    placement = Placement.from_inventory(target.config, groups, {"motopool": host["private_ip"]})
    assert placement.is_single and placement.addresses == {"motopool": host["private_ip"]}
    if (Path(sys.executable).parent / "ansible-inventory").exists():
        hosts_target = target.hosts_target()
        assert hosts_target.groups()["ckb_node"] == ["motopool"]
        assert hosts_target.rpc_url == f"http://{host['private_ip']}:8114"

    # what moto holds: one running instance, and the security rules
    running = instances_of(aws_env, "motopool")
    assert len(running) == 1 and running[0]["InstanceType"] == "c6i.large"
    vpc = vpcs_of(aws_env, "motopool")
    assert len(vpc) == 1
    groups = ec2(aws_env).describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc[0]["VpcId"]]}])
    by_name = {g["GroupName"]: g for g in groups["SecurityGroups"]}
    ssh = by_name["motopool-ssh"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in ssh] == [(22, 22, [ADMIN])]
    stratum = by_name["motopool-stratum"]["IpPermissions"]
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in stratum] == [(34255, ["0.0.0.0/0"])]
    web = by_name["motopool-web"]["IpPermissions"]  # the miners' page, on the host that runs accounting
    assert [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in web] == [
        (8080, 8080, ["0.0.0.0/0"])
    ]
    internal = by_name["motopool-internal"]["IpPermissions"]
    assert all(not p["IpRanges"] and p["UserIdGroupPairs"] for p in internal)
    for group in groups["SecurityGroups"]:
        for perm in group["IpPermissions"]:
            if not perm["IpRanges"]:
                continue
            low, high = perm.get("FromPort", 0), perm.get("ToPort", 65535)
            everything = perm["IpProtocol"] == "-1"
            exposed = [p for p in PRIVATE_PORTS if everything or low <= p <= high]
            assert not exposed, f"{group['GroupName']} opens {exposed} to {perm['IpRanges']}"
    interface_groups = [g for nic in running[0].get("NetworkInterfaces", []) for g in nic.get("Groups", [])]
    attached = {g["GroupName"] for g in running[0]["SecurityGroups"] or interface_groups}
    assert attached == {"motopool-ssh", "motopool-internal", "motopool-stratum", "motopool-node-p2p", "motopool-web"}

    # a second plan recreates nothing (moto does not read an instance's security groups back, so the AWS provider
    # plans to re-attach them in place: the one update allowed here)
    _, again = target.plan()
    assert again.add == 0 and again.destroy == 0, again.line()
    assert {c.address for c in again.changes if c.action == "update"} <= {
        'module.ckbpool.aws_instance.host["motopool"]'
    }

    # destroy asks like deploy: unattended, without --yes, it changes nothing
    with pytest.raises(DeployCancelled, match="re-run with --yes"):
        target.destroy()
    assert len(instances_of(aws_env, "motopool")) == 1
    summary = target.summary()
    assert isinstance(summary, Table) and "motopool" in str(summary.columns[0]._cells)

    # destroy removes everything it created
    target.auto_approve = True
    removed = target.destroy()
    assert removed[0] == "1 aws host(s)"
    assert instances_of(aws_env, "motopool") == []
    assert vpcs_of(aws_env, "motopool") == []
    assert not target.inventory_path.exists()
    assert target.destroy() == [] or instances_of(aws_env, "motopool") == []  # idempotent


def nothing_created(url: str, name: str, target: CloudTarget) -> None:
    assert vpcs_of(url, name) == []
    assert instances_of(url, name) == []
    assert (
        not (target.workdir / "terraform.tfstate").exists()
        or '"resources": []' in (target.workdir / "terraform.tfstate").read_text()
    )


@pytest.mark.parametrize(
    ("cloud", "error", "message"),
    [
        ({"allowed_ssh_cidrs": []}, ValidationFailed, "cloud.allowed_ssh_cidrs: required for the aws target"),
        ({"allowed_ssh_cidrs": ["0.0.0.0/0"]}, ValidationFailed, "0.0.0.0/0 would open SSH to the internet"),
        ({"region": "eu-west-9"}, PreflightFailed, "aws preflight: region: unknown region 'eu-west-9'"),
        ({"instance_type": "zz9.huge"}, PreflightFailed, "aws preflight: instance_type: zz9.huge not offered"),
    ],
    ids=["no-admin-cidr", "ssh-open-to-all", "unknown-region", "unknown-instance-type"],
)
def test_bad_input_stops_before_anything_is_created(
    aws_env: str, tmp_path: Path, cloud: dict[str, Any], error: type[Exception], message: str
) -> None:
    config, paths = project(tmp_path, "badpool", **cloud)
    target = CloudTarget(config, paths, "aws", aws_endpoint_url=aws_env, extra_inputs=MOTO_INPUTS)
    with pytest.raises(error) as info:
        target.deploy(confirm=lambda _s: True, run_hosts=lambda _p: None)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    nothing_created(aws_env, "badpool", target)


def test_terraform_validation_is_the_second_line_of_defence(aws_env: str, tmp_path: Path) -> None:
    """Even when the module is given 0.0.0.0/0 directly, its validation refuses it: nothing is created."""
    config, paths = project(tmp_path, "tfpool")
    target = CloudTarget(
        config, paths, "aws", aws_endpoint_url=aws_env, extra_inputs={**MOTO_INPUTS, "allowed_ssh_cidrs": ["0.0.0.0/0"]}
    )
    with pytest.raises(TerraformError) as info:
        target.deploy(confirm=lambda _s: True, run_hosts=lambda _p: None)
    assert str(info.value).startswith(f"`{binary_name()} plan` failed (exit 1): Error: Invalid value for variable")
    assert "must not open SSH to the internet" in str(info.value)
    nothing_created(aws_env, "tfpool", target)


def test_declined_plan_changes_nothing(aws_env: str, tmp_path: Path) -> None:
    config, paths = project(tmp_path, "nopool")
    target = CloudTarget(config, paths, "aws", aws_endpoint_url=aws_env, extra_inputs=MOTO_INPUTS)
    with pytest.raises(DeployCancelled, match=r"plan not applied \(\d+ to add, 0 to change, 0 to destroy\)"):
        target.deploy(confirm=lambda _s: False, run_hosts=lambda _p: None)
    nothing_created(aws_env, "nopool", target)


def test_bad_credentials_stop_at_preflight(moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A moto server that checks credentials (INITIAL_NO_AUTH_ACTION_COUNT=0) rejects an unknown key."""
    proc, url = start_moto(tmp_path, INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        config, paths = project(tmp_path, "credpool")
        target = CloudTarget(config, paths, "aws", aws_endpoint_url=url, extra_inputs=MOTO_INPUTS)
        with pytest.raises(PreflightFailed) as info:
            target.deploy(confirm=lambda _s: True, run_hosts=lambda _p: None)
        assert str(info.value).startswith("aws preflight: credentials: AWS rejected the credentials (")
        assert not (target.workdir / "main.tf.json").exists()  # stopped before Terraform was even set up
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_unattended_deploy_without_yes_applies_nothing(aws_env: str, tmp_path: Path) -> None:
    """No confirm callback, no --yes and no terminal: the plan is shown to nobody, so it is not applied. Terraform's
    lines went into the progress view meanwhile."""
    config, paths = project(tmp_path, "ttypool")
    progress: list[tuple[str, str]] = []
    target = CloudTarget(config, paths, "aws", aws_endpoint_url=aws_env, extra_inputs=MOTO_INPUTS)
    with pytest.raises(DeployCancelled, match="re-run with --yes"):
        target.deploy(on_progress=lambda step, state: progress.append((step, state)), run_hosts=lambda _p: None)
    assert any(step == f"{binary_name()} plan" and "Plan:" in state for step, state in progress), progress[-5:]
    nothing_created(aws_env, "ttypool", target)
