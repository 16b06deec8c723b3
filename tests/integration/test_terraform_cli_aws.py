"""``ckbpool deploy / status / destroy --target aws`` through the CLI against a local moto server, like a user:
init -> cloud settings in ckbpool.yaml -> deploy --yes (preflight, plan, apply, inventory; the Ansible step is
skipped because moto's hosts do not exist) -> status -> destroy --yes; and one clear error line for a missing admin
CIDR. Skips while the CLI does not offer the aws target yet (see CloudTarget in ckbpool.deploy.cloud).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_terraform_aws_moto import ADMIN, KEY, MOTO_INPUTS, TESTNET_ADDRESS, aws_env, instances_of, moto, vpcs_of
from typer.testing import CliRunner, Result

from ckbpool.cli.app import app
from support.terraform_binaries import tf_binary

pytestmark = pytest.mark.integration
__all__ = ["aws_env", "moto", "tf_binary"]  # fixtures shared with the moto test module (terraform and tofu)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = run(
        "init", "-c", str(config), "--non-interactive", "--name", "clipool", "--network", "testnet",
        "--payout-address", TESTNET_ADDRESS, "--no-monitoring",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    key = tmp_path / "admin.pub"
    key.write_text(KEY + "\n")
    data = yaml.safe_load(config.read_text())
    data["cloud"] = {
        "provider": "aws",
        "region": "us-east-1",
        "instance_type": "c6i.large",
        "allowed_ssh_cidrs": [ADMIN],
        "ssh_public_key_file": str(key),
        "module_inputs": MOTO_INPUTS,
    }
    config.write_text(yaml.safe_dump(data))
    check = run("validate", "-c", str(config))
    if check.exit_code != 0 and "module_inputs" in check.stderr:
        pytest.skip("ckbpool.yaml has no cloud.module_inputs yet (needed to point the module at moto's images)")
    assert check.exit_code == 0, check.stderr
    return config


def skip_unless_wired(result: Result) -> None:
    if "not available in this version" in result.stderr:
        pytest.skip("the CLI does not offer --target aws yet")


def test_cli_deploy_status_destroy(aws_env: str, project: Path) -> None:
    result = run("deploy", "-c", str(project), "--target", "aws", "--yes")
    skip_unless_wired(result)
    assert result.exit_code == 0, result.stderr + result.stdout
    assert "skipped: the hosts are emulated" in result.stderr + result.stdout
    assert len(instances_of(aws_env, "clipool")) == 1
    inventory = project.parent / "workspace" / "terraform" / "aws" / "inventory.yml"
    assert "clipool" in yaml.safe_load(inventory.read_text())["all"]["children"]["ckb_node"]["hosts"]

    status = run("status", "-c", str(project), "--target", "aws")
    assert "clipool" in status.stdout

    destroyed = run("destroy", "-c", str(project), "--target", "aws", "--yes")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert instances_of(aws_env, "clipool") == [] and vpcs_of(aws_env, "clipool") == []


def test_cli_missing_admin_cidr_is_one_error_line(aws_env: str, project: Path) -> None:
    data = yaml.safe_load(project.read_text())
    data["cloud"]["allowed_ssh_cidrs"] = []
    project.write_text(yaml.safe_dump(data))
    result = run("deploy", "-c", str(project), "--target", "aws", "--yes")
    skip_unless_wired(result)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cloud.allowed_ssh_cidrs" in errors[0], result.stderr
    assert vpcs_of(aws_env, "clipool") == []
