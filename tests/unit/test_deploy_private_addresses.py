"""Internal ports only on private addresses (issue 18 item 4).

* ``bind.private`` refuses every-interface (0.0.0.0, ::) and public addresses, naming the key, the value and what
  to use instead; loopback (the default) and RFC 1918 / ULA addresses pass.
* With more than one host, each needs a private address: ``topology.hosts[].private_ip`` in ckbpool.yaml (or an
  ``address`` that is itself private), ``private_ip`` / ``btcpool_private_address`` in an inventory. One message
  names every host without one; the SSH address is never used for internal ports then. One host keeps the
  fallback to its inventory address.
* The cloud inventory carries Terraform's private IPs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ckbpool.deploy.cloud import CloudTarget
from ckbpool.deploy.config import DeployConfig, parse_config
from ckbpool.deploy.errors import ConfigFileError, TargetError
from ckbpool.deploy.hostfiles import Placement, RoleVarsError
from ckbpool.deploy.hosts import HostsTarget
from ckbpool.deploy.render import hosts_context
from ckbpool.deploy.target import Paths
from ckbpool.deploy.validate import check_config

pytestmark = pytest.mark.unit

TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
THREE = {"ckb_node": ["node-1"], "kafka": ["data-1"], "redis": ["data-1"], "pool": ["pool-1"], "monitoring": ["pool-1"]}


def _config(**extra: Any) -> DeployConfig:
    return parse_config({"name": "pa", "network": "testnet", "payout_address": TESTNET_ADDRESS, **extra})


def _multi(hosts: list[dict[str, Any]]) -> DeployConfig:
    return _config(services={"kafka": True}, topology={"mode": "multi", "hosts": hosts})


PUBLIC_HOSTS: list[dict[str, Any]] = [
    {"name": "node-1", "address": "203.0.113.11", "roles": ["ckb_node"]},
    {"name": "data-1", "address": "203.0.113.12", "roles": ["redis", "kafka"]},
    {"name": "pool-1", "address": "203.0.113.13", "roles": ["pool", "monitoring"]},
]


# ---------------------------------------------------------------------------------------------- bind.private


@pytest.mark.parametrize("value", ["0.0.0.0", "::", "::ffff:0.0.0.0"])
def test_bind_private_refuses_every_interface(value: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        _config(bind={"private": value})
    (line,) = caught.value.problems
    assert line.startswith(f"bind.private: {value} means every interface")
    assert "127.0.0.1" in line and "10.0.0.0/8" in line and "fc00::/7" in line


@pytest.mark.parametrize("value", ["8.8.8.8", "203.0.113.7", "100.64.0.1", "2606:4700::1111"])
def test_bind_private_refuses_public_addresses(value: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        _config(bind={"private": value})
    (line,) = caught.value.problems
    assert line.startswith(f"bind.private: {value} is not a private address; use 127.0.0.1 or a private address")


@pytest.mark.parametrize("value", ["127.0.0.1", "::1", "10.0.0.5", "172.16.4.4", "192.168.1.2", "fd12:3456::1"])
def test_bind_private_accepts_loopback_and_private(value: str) -> None:
    assert _config(bind={"private": value}).bind.private == value


def test_bind_private_default_stays_loopback_and_bind_public_may_be_every_interface() -> None:
    config = _config(bind={"public": "0.0.0.0"})
    assert config.bind.private == "127.0.0.1" and config.bind.public == "0.0.0.0"


# ---------------------------------------------------------------------------------------------- ckbpool.yaml


def test_several_hosts_without_private_ip_are_refused_in_one_message() -> None:
    # a warning from the config (aws / alicloud fill the addresses from Terraform); the hosts target refuses
    report = check_config(_multi(PUBLIC_HOSTS))
    lines = [w for w in report.warnings if "private address" in w]
    assert lines == [
        "topology.hosts: 3 hosts need a private address each, and node-1, data-1, pool-1 have none: set private_ip "
        "(an RFC 1918 / ULA address the other hosts reach it on) for each; internal ports are never published on "
        "the SSH address, so the hosts target refuses them (aws / alicloud take the private IPs Terraform assigns)"
    ]


def test_only_the_hosts_missing_a_private_address_are_named() -> None:
    hosts = [
        dict(PUBLIC_HOSTS[0], private_ip="10.20.0.11"),
        PUBLIC_HOSTS[1],
        dict(PUBLIC_HOSTS[2], address="10.20.0.13"),
    ]
    (line,) = [w for w in check_config(_multi(hosts)).warnings if "private address" in w]
    assert "and data-1 has none" in line and "node-1" not in line and "pool-1" not in line


def test_several_hosts_with_private_ips_pass_and_reach_the_rendered_inventory(tmp_path: Path) -> None:
    hosts = [dict(h, private_ip=f"10.20.0.{11 + i}") for i, h in enumerate(PUBLIC_HOSTS)]
    config = _multi(hosts)
    report = check_config(config)
    assert report.ok and not [w for w in report.warnings if "private" in w], report
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "authority.pub").write_text("00" * 32 + "\n")  # the only secret hosts_context reads
    context = hosts_context(config, Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "ws"))
    listed = {h["name"]: h["vars"] for h in context["hosts"]["list"]}
    assert listed["node-1"].startswith("ansible_host=203.0.113.11 ") and listed["node-1"].endswith(
        " private_ip=10.20.0.11"
    )
    assert context["ansible_vars"]["btcpool_ckb_rpc_host"] == "10.20.0.11"
    assert context["ansible_vars"]["btcpool_kafka_bootstrap"] == f"10.20.0.12:{config.ports.kafka}"


@pytest.mark.parametrize("value", ["127.0.0.1", "0.0.0.0", "198.51.100.4", "not-an-ip"])
def test_a_host_private_ip_must_be_private(value: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        _multi([dict(PUBLIC_HOSTS[0], private_ip=value)])
    (line,) = caught.value.problems
    assert line.startswith("topology.hosts.0.private_ip: ") and value in line


def test_one_host_needs_no_private_ip() -> None:
    config = _config(topology={"mode": "single", "hosts": [dict(PUBLIC_HOSTS[0], roles=["ckb_node", "pool"])]})
    report = check_config(config)
    assert not [line for line in report.errors + report.warnings if "private" in line]


# ---------------------------------------------------------------------------------------------- inventory


def test_placement_of_several_hosts_never_falls_back_to_the_ssh_address() -> None:
    config = _config(services={"kafka": True})
    ssh = {"node-1": "203.0.113.11", "data-1": "203.0.113.12", "pool-1": "203.0.113.13"}
    with pytest.raises(RoleVarsError) as caught:
        Placement.from_inventory(config, THREE, {"node-1": "10.20.0.11", "data-1": "", "pool-1": ""}, fallback=ssh)
    (line,) = [p for p in caught.value.problems if "private" in p]
    assert "data-1, pool-1 have none" in line and "ansible_host" in line and "203.0.113" not in line


def test_placement_refuses_a_public_or_loopback_private_address() -> None:
    config = _config(services={"kafka": True})
    given = {"node-1": "10.20.0.11", "data-1": "203.0.113.12", "pool-1": "127.0.0.1"}
    with pytest.raises(RoleVarsError) as caught:
        Placement.from_inventory(config, THREE, given)
    (line,) = caught.value.problems
    assert "data-1 (203.0.113.12), pool-1 (127.0.0.1) are not private" in line


def test_placement_of_several_hosts_uses_their_private_addresses() -> None:
    config = _config(services={"kafka": True})
    given = {"node-1": "10.20.0.11", "data-1": "fd00::12", "pool-1": "data.internal"}
    placement = Placement.from_inventory(config, THREE, given, fallback={"node-1": "203.0.113.11"})
    assert placement.addresses == given


def test_one_host_keeps_the_ssh_address_fallback() -> None:
    config = _config(services={"kafka": True})
    groups = {g: ["solo"] for g in THREE}
    placement = Placement.from_inventory(config, groups, {"solo": ""}, fallback={"solo": "203.0.113.20"})
    assert placement.addresses == {"solo": "203.0.113.20"}


def _hosts_target(tmp_path: Path, inventory: str) -> HostsTarget:
    config = _config(services={"kafka": True})
    path = tmp_path / "inventory.ini"
    path.write_text(inventory)
    return HostsTarget(config, Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "ws"), inventory=path)


GROUPS_INI = "\n[ckb_node]\nnode-1\n[redis]\ndata-1\n[kafka]\ndata-1\n[pool]\npool-1\n[monitoring]\npool-1\n"


def test_hosts_target_refuses_an_inventory_without_private_addresses_before_building(tmp_path: Path) -> None:
    target = _hosts_target(
        tmp_path,
        "[all]\nnode-1 ansible_host=203.0.113.11 private_ip=10.20.0.11\ndata-1 ansible_host=203.0.113.12\n"
        "pool-1 ansible_host=203.0.113.13\n" + GROUPS_INI,
    )
    if not target.inventory_data():
        pytest.skip("ansible-inventory is not installed next to this Python")
    with pytest.raises(TargetError) as caught:
        target.deploy(images={})  # the check comes before the image and the playbook
    assert "data-1, pool-1 have none" in str(caught.value) and str(target.inventory) in str(caught.value)


def test_hosts_target_accepts_an_inventory_with_private_addresses(tmp_path: Path) -> None:
    target = _hosts_target(
        tmp_path,
        "[all]\nnode-1 ansible_host=203.0.113.11 private_ip=10.20.0.11\n"
        "data-1 ansible_host=203.0.113.12 btcpool_private_address=10.20.0.12\n"
        "pool-1 ansible_host=203.0.113.13 private_ip=10.20.0.13\n" + GROUPS_INI,
    )
    if not target.inventory_data():
        pytest.skip("ansible-inventory is not installed next to this Python")
    target.check_private_addresses()
    assert target.rpc_url.startswith("http://10.20.0.11:")


# ---------------------------------------------------------------------------------------------- cloud


def _cloud(tmp_path: Path) -> CloudTarget:
    config = _config(cloud={"region": "eu-central-1", "allowed_ssh_cidrs": ["198.51.100.7/32"]})
    return CloudTarget(config, Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "ws"), "aws")


def _outputs(private: dict[str, str | None]) -> dict[str, Any]:
    hosts = {k: {"ansible_host": f"203.0.113.{i}", "ansible_user": "ubuntu", "private_ip": v}
             for i, (k, v) in enumerate(private.items(), 1)}  # fmt: skip
    return {"inventory": {"all": {"hosts": hosts, "children": {}}}, "inventory_ini": "[all]\n"}


def test_cloud_inventory_keeps_terraform_private_ips(tmp_path: Path) -> None:
    target = _cloud(tmp_path)
    target.workdir.mkdir(parents=True)
    path = target.write_inventory(_outputs({"node": "10.0.1.5", "core": "10.0.1.6"}))
    written = yaml.safe_load(path.read_text())["all"]["hosts"]
    assert {k: v["private_ip"] for k, v in written.items()} == {"node": "10.0.1.5", "core": "10.0.1.6"}


def test_cloud_inventory_without_a_private_ip_is_refused(tmp_path: Path) -> None:
    target = _cloud(tmp_path)
    target.workdir.mkdir(parents=True)
    with pytest.raises(TargetError) as caught:
        target.write_inventory(_outputs({"node": "10.0.1.5", "core": None}))
    assert "aws Terraform outputs" in str(caught.value) and "core has none" in str(caught.value)
    assert not target.inventory_path.exists()


def test_terraform_inventory_module_sets_private_ip_on_every_host() -> None:
    """The module both clouds use: the YAML inventory's host variables and the INI line carry private_ip."""
    main = (Path(__file__).parents[2] / "terraform" / "modules" / "inventory" / "main.tf").read_text()
    assert "private_ip   = h.private_ip" in main
    assert "private_ip=${local.host_vars[k].private_ip}" in main
    for cloud, resource in (("aws", "aws_instance"), ("alicloud", "alicloud_instance")):
        root = (Path(__file__).parents[2] / "terraform" / cloud / "main.tf").read_text()
        assert f"private_ip = {resource}.host[k].private_ip" in root
