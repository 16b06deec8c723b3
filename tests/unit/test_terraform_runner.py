"""The thin terraform runner against a stand-in binary: arguments, streamed lines, errors that name the command and
quote Terraform's error, timeouts that end the process group, ``show -json`` / ``output -json`` parsing, binary
lookup and the mirror-only CLI configuration."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from ckbpool.deploy.terraform import (
    PlanSummary,
    Terraform,
    TerraformError,
    TerraformNotFound,
    cli_config_text,
    find_binary,
    provider_available,
    summarize_error,
)

pytestmark = pytest.mark.unit

FAKE = r'''#!{python}
"""Stand-in for terraform: records its argv and environment, answers like terraform would."""
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_TF_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "cwd": os.getcwd(), "rc": os.environ.get("TF_CLI_CONFIG_FILE"),
                          "in_automation": os.environ.get("TF_IN_AUTOMATION")}}) + "\n")
mode = os.environ.get("FAKE_TF_MODE", "ok")
cmd = args[0] if args else ""
if cmd == "version":
    print(json.dumps({{"terraform_version": "1.11.4"}}))
elif mode == "sleep":
    print("Still creating...", flush=True)
    time.sleep(60)
elif mode == "fail" and cmd in ("plan", "apply"):
    print("module.ckbpool.aws_vpc.this: Creating...")
    print("")
    print("Error: creating EC2 VPC: operation error EC2: CreateVpc, https response error StatusCode: 400")
    print("")
    print("  with module.ckbpool.aws_vpc.this,")
    print('  on ../../main.tf line 54, in resource "aws_vpc" "this":')
    print('  54: resource "aws_vpc" "this" {{')
    sys.exit(1)
elif cmd == "show":
    print(open(os.environ["FAKE_TF_SHOW"]).read())
elif cmd == "output":
    print(open(os.environ["FAKE_TF_OUTPUT"]).read())
else:
    for i in range(3):
        print(f"{{cmd}} line {{i}}", flush=True)
'''


def _change(address: str, *actions: str, mode: str = "managed") -> dict[str, object]:
    return {"address": address, "mode": mode, "change": {"actions": list(actions)}}


SHOW = {
    "format_version": "1.2",
    "resource_changes": [
        _change("module.ckbpool.aws_vpc.this", "create"),
        _change('module.ckbpool.aws_instance.host["pool"]', "delete", "create"),
        _change("module.ckbpool.aws_security_group.ssh", "update"),
        _change("module.ckbpool.aws_key_pair.old", "delete"),
        _change("module.ckbpool.data.aws_ami.ubuntu[0]", "read", mode="data"),
        _change("module.ckbpool.aws_subnet.hosts", "no-op"),
    ],
    "planned_values": {"outputs": {"inventory": {}, "hosts": {}}},
}
OUTPUT = {"stratum_endpoints": {"sensitive": False, "type": ["list", "string"], "value": ["203.0.113.5:34255"]}}


@pytest.fixture
def fake_tf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = tmp_path / "bin" / "terraform"
    binary.parent.mkdir()
    binary.write_text(FAKE.format(python=sys.executable))
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_TF_LOG", str(tmp_path / "calls.jsonl"))
    (tmp_path / "show.json").write_text(json.dumps(SHOW))
    (tmp_path / "output.json").write_text(json.dumps(OUTPUT))
    monkeypatch.setenv("FAKE_TF_SHOW", str(tmp_path / "show.json"))
    monkeypatch.setenv("FAKE_TF_OUTPUT", str(tmp_path / "output.json"))
    monkeypatch.delenv("CKBPOOL_TERRAFORM", raising=False)
    return binary


def calls(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def make(tmp_path: Path, fake_tf: Path, **kw: object) -> Terraform:
    return Terraform(tmp_path / "root", binary=str(fake_tf), plugin_mirror=tmp_path / "mirror", **kw)  # type: ignore[arg-type]


def test_init_streams_lines_and_uses_the_mirror_config(tmp_path: Path, fake_tf: Path) -> None:
    seen: list[str] = []
    tf = make(tmp_path, fake_tf, on_line=seen.append)
    tf.init()
    assert seen == ["init line 0", "init line 1", "init line 2"]
    call = calls(tmp_path)[0]
    assert call["args"] == ["init", "-input=false", "-no-color"]
    assert call["cwd"] == str(tmp_path / "root")
    assert call["in_automation"] == "1"
    config = Path(str(call["rc"])).read_text()
    assert f'path    = "{tmp_path / "mirror"}"' in config and "filesystem_mirror" in config
    assert "direct" not in config  # never a registry


def test_explicit_cli_config_is_respected(tmp_path: Path, fake_tf: Path) -> None:
    tf = make(tmp_path, fake_tf, env={"TF_CLI_CONFIG_FILE": "/dev/null"})
    tf.init(backend=False, upgrade=True)
    call = calls(tmp_path)[0]
    assert call["rc"] == "/dev/null"
    assert call["args"] == ["init", "-input=false", "-no-color", "-backend=false", "-upgrade"]


def test_plan_writes_a_plan_file_and_summarizes_show_json(tmp_path: Path, fake_tf: Path) -> None:
    tf = make(tmp_path, fake_tf)
    summary = tf.plan("x.tfplan", var_files=["terraform.tfvars.json"], variables={"region": "us-east-1"})
    plan_call, show_call = calls(tmp_path)
    assert plan_call["args"] == [
        "plan",
        "-input=false",
        "-no-color",
        "-out=x.tfplan",
        "-var-file=terraform.tfvars.json",
        "-var=region=us-east-1",
    ]
    assert show_call["args"] == ["show", "-json", "x.tfplan"]
    assert (summary.add, summary.change, summary.destroy) == (2, 1, 2)
    assert summary.line() == "2 to add, 1 to change, 2 to destroy"
    assert [c.action for c in summary.changes] == ["create", "replace", "update", "delete", "no-op"]
    assert summary.output_names == ("hosts", "inventory")
    assert not summary.empty


def test_apply_output_destroy_arguments(tmp_path: Path, fake_tf: Path) -> None:
    tf = make(tmp_path, fake_tf)
    tf.apply("x.tfplan")
    assert tf.output() == {"stratum_endpoints": ["203.0.113.5:34255"]}
    tf.destroy(var_files=["v.json"])
    args = [c["args"] for c in calls(tmp_path)]
    assert args == [
        ["apply", "-input=false", "-no-color", "-auto-approve", "x.tfplan"],
        ["output", "-json", "-no-color"],
        ["destroy", "-input=false", "-no-color", "-auto-approve", "-var-file=v.json"],
    ]
    assert tf.version() == "1.11.4"


def test_failure_names_the_command_and_terraforms_error(
    tmp_path: Path, fake_tf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TF_MODE", "fail")
    seen: list[str] = []
    tf = make(tmp_path, fake_tf, on_line=seen.append)
    with pytest.raises(TerraformError) as info:
        tf.apply("x.tfplan")
    message = str(info.value)
    assert message.startswith("`terraform apply` failed (exit 1): Error: creating EC2 VPC")
    assert "\n" not in message
    assert info.value.returncode == 1
    assert info.value.last_lines[-1].strip().startswith("54: resource")
    assert seen[0] == "module.ckbpool.aws_vpc.this: Creating..."  # streamed before the failure


def test_timeout_ends_the_process(tmp_path: Path, fake_tf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TF_MODE", "sleep")
    tf = make(tmp_path, fake_tf, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TerraformError) as info:
        tf.apply("x.tfplan")
    assert time.monotonic() - started < 15
    assert "timed out" in str(info.value) and info.value.returncode is None


def test_find_binary(tmp_path: Path, fake_tf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(fake_tf.parent))
    assert find_binary() == str(fake_tf)
    monkeypatch.setenv("CKBPOOL_TERRAFORM", str(fake_tf))
    assert find_binary() == str(fake_tf)
    monkeypatch.setenv("CKBPOOL_TERRAFORM", "no-such-terraform")
    with pytest.raises(TerraformNotFound, match="CKBPOOL_TERRAFORM"):
        find_binary()
    monkeypatch.delenv("CKBPOOL_TERRAFORM")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("CKBPOOL_CACHE", str(tmp_path / "cache"))  # no tofu built there either
    with pytest.raises(TerraformNotFound, match="neither terraform nor tofu"):
        find_binary()


def test_find_binary_takes_tofu_by_name_and_alone(
    tmp_path: Path, fake_tf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenTofu: ``CKBPOOL_TERRAFORM=tofu`` picks it next to terraform; a machine with only tofu (on PATH, or built
    into the cache by scripts/tofu-deps.sh) needs no setting; terraform wins when both are there."""
    tofu = tmp_path / "cache" / "bin" / "tofu"
    tofu.parent.mkdir(parents=True)
    tofu.write_bytes(fake_tf.read_bytes())
    tofu.chmod(0o755)
    monkeypatch.setenv("CKBPOOL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(fake_tf.parent))
    assert find_binary() == str(fake_tf)  # both: terraform
    monkeypatch.setenv("CKBPOOL_TERRAFORM", "tofu")
    assert find_binary() == str(tofu)  # by name, from the cache
    monkeypatch.delenv("CKBPOOL_TERRAFORM")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_binary() == str(tofu)  # tofu alone
    tf = Terraform(tmp_path / "root", plugin_mirror=tmp_path / "mirror")
    assert tf.name == "tofu"
    monkeypatch.setenv("FAKE_TF_MODE", "fail")
    with pytest.raises(TerraformError, match=r"^`tofu apply` failed \(exit 1\): Error: creating EC2 VPC"):
        tf.apply("missing.tfplan")


def test_provider_available_reads_the_mirror_layout(tmp_path: Path) -> None:
    assert not provider_available(tmp_path, "hashicorp", "aws")
    target = tmp_path / "registry.terraform.io/hashicorp/aws/5.100.0/linux_amd64/terraform-provider-aws_v5.100.0_x5"
    target.parent.mkdir(parents=True)
    target.write_text("")
    assert provider_available(tmp_path, "hashicorp", "aws")
    assert not provider_available(tmp_path, "aliyun", "alicloud")


def test_cli_config_names_only_the_mirror(tmp_path: Path) -> None:
    text = cli_config_text(tmp_path / 'with "quote"')
    assert 'path    = "' in text and '\\"quote\\"' in text
    assert "disable_checkpoint = true" in text


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [
                "Error: Invalid value for variable",
                "",
                "  on main.tf line 3:",
                '   3:   allowed_ssh_cidrs = ["0.0.0.0/0"]',
                "    ├────────────────",
                "    │ var.allowed_ssh_cidrs is list of string with 1 element",
                "",
                "allowed_ssh_cidrs must not open SSH to the internet: 0.0.0.0/0 is refused.",
                "",
                "This was checked by the validation rule at variables.tf:40,3-13.",
            ],
            "Error: Invalid value for variable: "
            "allowed_ssh_cidrs must not open SSH to the internet: 0.0.0.0/0 is refused.",
        ),
        (["some output", "Error: No valid credential sources found"], "Error: No valid credential sources found"),
        (["just a line", "  "], "just a line"),
        ([], "no output"),
    ],
)
def test_summarize_error(lines: list[str], expected: str) -> None:
    assert summarize_error(lines) == expected


def test_plan_summary_of_an_empty_plan() -> None:
    summary = PlanSummary.from_show_json({"resource_changes": [{"address": "a", "change": {"actions": ["no-op"]}}]})
    assert summary.empty and summary.line() == "0 to add, 0 to change, 0 to destroy"
    assert PlanSummary.from_show_json({}).empty


def test_environment_is_not_leaked_from_the_parent(tmp_path: Path, fake_tf: Path) -> None:
    tf = make(tmp_path, fake_tf, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})
    env = tf.environment()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
    assert env["TF_INPUT"] == "0" and env["CHECKPOINT_DISABLE"] == "1"
    assert "AWS_ENDPOINT_URL" not in os.environ or os.environ["AWS_ENDPOINT_URL"] != "http://127.0.0.1:1"
