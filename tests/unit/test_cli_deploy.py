"""``ckbpool init / validate / render`` through Typer's CliRunner: happy paths, and each error path prints one
clear line on stderr and exits non-zero (bad YAML, unknown key, invalid address, wrong network, port clash,
missing hosts for a role, missing or unsafe secrets)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from ckbpool.cli.app import app

pytestmark = pytest.mark.unit

TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
MAINNET_ADDRESS = "ckb1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqdnnw7qkdnnclfkg59uzn8umtfd2kwxceqxwquc4"


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_error_line(result: Result) -> str:
    assert result.exit_code != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return errors[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = run("init", "-c", str(config), "--non-interactive", "--name", "unit")
    assert result.exit_code == 0, result.stderr
    return config


def edit(config: Path, **changes: object) -> None:
    data = yaml.safe_load(config.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    config.write_text(yaml.safe_dump(data))


# ------------------------------------------------------------------------------------------ happy paths


def test_init_writes_config_and_private_secrets(project: Path) -> None:
    data = yaml.safe_load(project.read_text())
    assert data["network"] == "dev" and data["name"] == "unit"
    secrets = project.parent / "secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in secrets.iterdir()}
    assert {"authority.key", "pool-static.key", "pool-certificate.hex", "redis.password"} <= files.keys()
    assert set(files.values()) == {0o600}
    # no secret value appears in the config file
    for name in ("authority.key", "pool-static.key", "redis.password", "grafana-admin.password"):
        assert (secrets / name).read_text().strip() not in project.read_text()


def test_init_twice_refuses_and_force_keeps_secrets(project: Path) -> None:
    key = (project.parent / "secrets" / "pool-static.key").read_text()
    assert "exists" in one_error_line(run("init", "-c", str(project), "--non-interactive"))
    result = run("init", "-c", str(project), "--non-interactive", "--force", "--name", "renamed")
    assert result.exit_code == 0, result.stderr
    assert (project.parent / "secrets" / "pool-static.key").read_text() == key
    assert "none changed" in result.stdout


def test_init_output_never_contains_secrets(tmp_path: Path) -> None:
    config = tmp_path / "ckbpool.yaml"
    result = run("init", "-c", str(config), "--non-interactive")
    secrets = tmp_path / "secrets"
    for name in ("authority.key", "pool-static.key", "redis.password", "grafana-admin.password"):
        assert (secrets / name).read_text().strip() not in result.stdout + result.stderr


def test_init_non_interactive_flags(tmp_path: Path) -> None:
    config = tmp_path / "ckbpool.yaml"
    result = run(
        "init", "-c", str(config), "-y", "--name", "pool-b", "--network", "testnet",
        "--payout-address", TESTNET_ADDRESS, "--port", "stratum=3400", "--no-monitoring", "--kafka",
        "--host", "a=10.0.0.1:ckb_node,pool,redis,kafka",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(config.read_text())
    assert data["ports"]["stratum"] == 3400
    assert data["monitoring"]["enabled"] is False
    assert data["topology"]["mode"] == "multi"
    assert data["topology"]["hosts"][0]["roles"] == ["ckb_node", "pool", "redis", "kafka"]
    assert not (tmp_path / "secrets" / "grafana-admin.password").exists()


def test_init_testnet_without_address_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(run("init", "-c", str(tmp_path / "c.yaml"), "-y", "--network", "testnet"))
    assert "--payout-address is required" in line


def test_validate_ok(project: Path) -> None:
    result = run("validate", "-c", str(project))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok ")


def test_render_writes_workspace_then_shows_diff(project: Path) -> None:
    first = run("render", "-c", str(project))
    assert first.exit_code == 0, first.stderr
    ws = project.parent / "workspace"
    for rel in (
        "local/ckb/ckb.toml", "local/ckb/specs/dev.toml", "local/pool.toml", "compose/compose.yaml",
        "compose/prometheus/prometheus.yml", "hosts/inventory.ini", "hosts/group_vars/all.yml",
        "terraform/terraform.tfvars.json",
    ):  # fmt: skip
        assert (ws / rel).is_file(), rel
    assert run("render", "-c", str(project)).stdout.startswith("no changes")
    edit(project, ports__stratum=34999)
    second = run("render", "-c", str(project))
    assert second.exit_code == 0
    assert "changed" in second.stdout and "34999" in second.stdout and "-listen_port = 34255" in second.stdout
    manifest = json.loads((ws / "render.json").read_text())
    assert "local/pool.toml" in manifest["files"]


def test_render_dry_run_writes_nothing(project: Path) -> None:
    result = run("render", "-c", str(project), "--dry-run")
    assert result.exit_code == 0
    assert "would render" in result.stdout
    assert not (project.parent / "workspace").exists()


def test_render_removes_files_no_longer_rendered(project: Path) -> None:
    assert run("render", "-c", str(project)).exit_code == 0
    assert (project.parent / "workspace" / "local" / "redis.conf").exists()
    edit(project, services__redis=False)
    result = run("render", "-c", str(project))
    assert result.exit_code == 0, result.stderr
    assert "removed" in result.stdout
    assert not (project.parent / "workspace" / "local" / "redis.conf").exists()


# ------------------------------------------------------------------------------------------ error paths


def test_missing_file(tmp_path: Path) -> None:
    line = one_error_line(run("validate", "-c", str(tmp_path / "none.yaml")))
    assert "file not found" in line


def test_bad_yaml(project: Path) -> None:
    project.write_text("name: [unclosed\nnetwork: dev\n")
    line = one_error_line(run("validate", "-c", str(project)))
    assert "not valid YAML" in line and "line" in line


def test_not_a_mapping(project: Path) -> None:
    project.write_text("- just\n- a list\n")
    assert "expected a mapping" in one_error_line(run("render", "-c", str(project)))


def test_unknown_key_names_its_path(project: Path) -> None:
    edit(project, ports__stratun=1234)
    line = one_error_line(run("validate", "-c", str(project)))
    assert "ports.stratun: unknown key" in line and "stratum" in line


def test_unknown_top_level_key(project: Path) -> None:
    edit(project, passwords="hunter2")
    assert "passwords: unknown key" in one_error_line(run("render", "-c", str(project)))


def test_invalid_address(project: Path) -> None:
    edit(project, payout_address="ckt1qyqnotanaddress")
    line = one_error_line(run("validate", "-c", str(project)))
    assert line.startswith("error: ") and "payout_address: not a valid CKB address" in line


def test_address_on_the_wrong_network(project: Path) -> None:
    edit(project, payout_address=MAINNET_ADDRESS)
    line = one_error_line(run("validate", "-c", str(project)))
    assert "payout_address: a ckb address cannot receive dev rewards" in line


def test_port_clash(project: Path) -> None:
    edit(project, ports__node_rpc=34255)
    line = one_error_line(run("validate", "-c", str(project)))
    assert "ports.stratum: 34255 is also used by ports.node_rpc" in line


def test_port_out_of_range(project: Path) -> None:
    edit(project, ports__stratum=70000)
    assert "ports.stratum: Input should be less than or equal to 65535" in one_error_line(
        run("validate", "-c", str(project))
    )


def test_wrong_type_names_its_path(project: Path) -> None:
    edit(project, services__redis="maybe")
    assert "services.redis:" in one_error_line(run("validate", "-c", str(project)))


def test_unpinned_image(project: Path) -> None:
    edit(project, images__redis="redis:latest")
    assert "images.redis:" in one_error_line(run("validate", "-c", str(project)))


def test_hosts_missing_for_a_role(project: Path) -> None:
    edit(project, topology={"mode": "multi", "hosts": [{"name": "a", "address": "10.0.0.1", "roles": ["pool"]}]})
    result = run("validate", "-c", str(project))
    assert result.exit_code == 2
    assert "error:" in result.stderr and "no host has the role ckb_node" in result.stderr


def test_split_pool_roles_need_kafka(project: Path) -> None:
    edit(
        project,
        topology={
            "mode": "multi",
            "hosts": [
                {"name": "a", "address": "10.0.0.1", "roles": ["ckb_node", "jobmaker", "blockmaker", "redis"]},
                {"name": "b", "address": "10.0.0.2", "roles": ["stratum", "accounting", "monitoring"]},
            ],
        },
    )
    line = one_error_line(run("validate", "-c", str(project)))
    assert "services.kafka: pool roles run on 2 hosts" in line


def test_role_placed_but_disabled(project: Path) -> None:
    edit(
        project,
        topology={
            "mode": "multi",
            "hosts": [
                {"name": "a", "address": "10.0.0.1", "roles": ["ckb_node", "pool", "redis", "monitoring", "kafka"]}
            ],
        },
    )
    line = one_error_line(run("validate", "-c", str(project)))
    assert "topology.hosts.0.roles.4: kafka is placed on a but services.kafka is off" in line


def test_multi_host_ok_and_inventory(project: Path) -> None:
    edit(
        project,
        services__kafka=True,
        topology={
            "mode": "multi",
            "hosts": [
                {"name": "node", "address": "10.0.0.1", "roles": ["ckb_node", "redis", "kafka", "monitoring"]},
                {"name": "s1", "address": "10.0.0.2", "roles": ["stratum"]},
                {"name": "s2", "address": "10.0.0.3", "roles": ["jobmaker", "blockmaker", "accounting"]},
            ],
        },
    )
    # Kafka turned on after init, across hosts: the secured bus's CA and passwords are init's to make
    result = run("render", "-c", str(project))
    assert result.exit_code == 2 and "Kafka principals' passwords" in result.stderr, result.stderr
    from ckbpool.deploy.config import load_config
    from ckbpool.deploy.secrets import generate_secrets

    generate_secrets(load_config(project), project.parent / "secrets")
    result = run("render", "-c", str(project))
    assert result.exit_code == 0, result.stderr
    inventory = (project.parent / "workspace" / "hosts" / "inventory.ini").read_text()
    assert "node ansible_host=10.0.0.1" in inventory
    assert "[stratum]\ns1" in inventory and "[kafka]\nnode" in inventory
    props = (project.parent / "workspace" / "hosts" / "kafka" / "server.properties").read_text()
    assert "process.roles=broker,controller" in props and "zookeeper" not in props
    # pool roles on other hosts than the broker: the bus is secured (TLS + SCRAM, deny-by-default ACLs)
    assert "CLIENT:SASL_SSL" in props and "allow.everyone.if.no.acl.found=false" in props
    tfvars = json.loads((project.parent / "workspace" / "terraform" / "terraform.tfvars.json").read_text())
    assert tfvars["stratum_port"] == 34255 and len(tfvars["hosts"]) == 3
    assert "stratum" not in tfvars["private_ports"] and tfvars["private_ports"]["node_rpc"] == 8114


def test_missing_secret(project: Path) -> None:
    (project.parent / "secrets" / "pool-static.key").unlink()
    assert "pool-static.key is missing" in one_error_line(run("validate", "-c", str(project)))


def test_world_readable_secret(project: Path) -> None:
    (project.parent / "secrets" / "redis.password").chmod(0o644)
    line = one_error_line(run("render", "-c", str(project)))
    assert "redis.password has mode 0644" in line


def test_unknown_target(project: Path) -> None:
    assert "unknown target" in one_error_line(run("deploy", "-c", str(project), "--target", "moon"))


def test_unknown_target_is_one_clear_error(project: Path) -> None:
    assert "unknown target" in one_error_line(run("deploy", "-c", str(project), "--target", "gcp"))


def test_tfvars_use_only_variables_the_aws_module_declares(project: Path) -> None:
    import re

    module = Path(__file__).resolve().parents[2] / "terraform" / "aws" / "variables.tf"
    if not module.exists():
        pytest.skip("terraform/aws is not in this checkout")
    declared = set(re.findall(r'^variable "([a-z0-9_]+)"', module.read_text(), re.M))
    edit(
        project,
        topology={
            "mode": "multi",
            "hosts": [{"name": "a", "address": "10.0.0.1", "roles": ["ckb_node", "pool", "redis", "monitoring"]}],
        },
    )
    assert run("render", "-c", str(project)).exit_code == 0
    tfvars = json.loads((project.parent / "workspace" / "terraform" / "terraform.tfvars.json").read_text())
    assert set(tfvars) <= declared, set(tfvars) - declared


def test_compose_example_config_validates_and_renders(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "compose" / "ckbpool.example.yaml"
    config = tmp_path / "ckbpool.yaml"
    config.write_text(example.read_text())
    from ckbpool.deploy.config import load_config
    from ckbpool.deploy.secrets import generate_secrets

    generate_secrets(load_config(config), tmp_path / "secrets")
    result = run("render", "-c", str(config), "--no-diff")
    assert result.exit_code == 0, result.stderr
    compose = yaml.safe_load((tmp_path / "workspace" / "compose" / "compose.yaml").read_text())
    assert {"ckb", "pool", "redis", "prometheus", "node-exporter", "redis-exporter", "grafana", "miner"} == set(
        compose["services"]
    )
    profiles = {name: svc["profiles"] for name, svc in compose["services"].items()}
    assert profiles["pool"] == ["core"] and profiles["grafana"] == ["monitoring"] and profiles["miner"] == ["testnet"]
    assert compose["services"]["pool"]["ports"][0].startswith("0.0.0.0:34255:")
    assert all(p.startswith("127.0.0.1:") for p in compose["services"]["prometheus"]["ports"])


def test_init_interactive_prompts_with_defaults(tmp_path: Path) -> None:
    config = tmp_path / "ckbpool.yaml"
    answers = "\n".join(
        [
            "mine",  # pool name
            "testnet",  # network
            TESTNET_ADDRESS,  # payout address
            "3456",  # stratum port
            "",  # redis (default yes)
            "",  # kafka (default no)
            "",  # proxy (default yes on testnet and mainnet: CKB ASICs speak V1)
            "y",  # CPU miners
            "n",  # monitoring
            "",  # several hosts (default no)
        ]
    )
    result = CliRunner().invoke(app, ["init", "-c", str(config)], input=answers + "\n")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = yaml.safe_load(config.read_text())
    assert data["name"] == "mine" and data["network"] == "testnet" and data["ports"]["stratum"] == 3456
    assert data["services"]["redis"] is True and data["services"]["miner"]["enabled"] is True
    assert data["services"]["proxy"] is True
    assert data["monitoring"]["enabled"] is False


def test_init_interactive_asks_again_for_an_address_of_another_network(tmp_path: Path) -> None:
    answers = "\n".join(["p", "mainnet", TESTNET_ADDRESS, MAINNET_ADDRESS, "34255", "", "", "", "", "", ""])
    result = CliRunner().invoke(app, ["init", "-c", str(tmp_path / "c.yaml")], input=answers + "\n")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "a ckt address cannot be used on mainnet; try again" in result.stderr
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["payout_address"] == MAINNET_ADDRESS


def test_init_non_interactive_address_of_another_network_is_one_line(tmp_path: Path) -> None:
    result = run(
        "init", "-c", str(tmp_path / "c.yaml"), "-y", "--network", "mainnet", "--payout-address", TESTNET_ADDRESS
    )
    line = one_error_line(result)
    assert "payout_address: a ckt address cannot receive mainnet rewards" in line
    assert not (tmp_path / "c.yaml").exists()


def test_v1_miners_need_the_proxy(project: Path) -> None:
    edit(project, services__miner={"enabled": True, "protocol": "v1"})
    assert "services.miner.protocol: v1 miners connect through the proxy" in one_error_line(
        run("validate", "-c", str(project))
    )


@pytest.mark.parametrize("network", ["testnet", "mainnet"])
def test_init_offers_and_enables_the_v1_proxy_by_default_on_real_networks(tmp_path: Path, network: str) -> None:
    """Every CKB ASIC in the field speaks Stratum V1 only (issue 14): on testnet and mainnet ``init`` asks with
    yes as the default, and ``-y`` enables it; the proxy then credits each V1 miner to its own address."""
    address = MAINNET_ADDRESS if network == "mainnet" else TESTNET_ADDRESS
    config = tmp_path / "ckbpool.yaml"
    # every answer the default: name, network, address, stratum port, then the yes/no questions
    answers = "\n".join(["p", network, address, "34255", *[""] * 10])
    result = CliRunner().invoke(app, ["init", "-c", str(config)], input=answers + "\n")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "V1 proxy for Stratum V1 miners (CKB ASICs)? [Y/n]" in result.stdout
    data = yaml.safe_load(config.read_text())
    assert data["network"] == network and data["services"]["proxy"] is True
    from ckbpool.deploy.config import load_config

    assert load_config(config).proxy.identity == "per-worker"

    quiet = tmp_path / "quiet.yaml"
    result = run("init", "-c", str(quiet), "-y", "--network", network, "--payout-address", address)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert yaml.safe_load(quiet.read_text())["services"]["proxy"] is True


def test_init_leaves_the_v1_proxy_off_by_default_on_a_dev_chain(tmp_path: Path) -> None:
    config = tmp_path / "ckbpool.yaml"
    assert run("init", "-c", str(config), "-y").exit_code == 0
    assert yaml.safe_load(config.read_text())["services"]["proxy"] is False
