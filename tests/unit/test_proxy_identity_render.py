"""The stack's proxy credits each V1 miner to its own address by default (issue 14): ``proxy.identity`` in
ckbpool.yaml (per-worker | aggregated) reaches every rendered ``proxy.toml`` (local, compose, hosts and k8s targets
render the same template), with the pool's network -- the miners' addresses are checked against it -- and the
pool next to it requires address identities, so what the proxy tags is what the pool credits.

``aggregated`` stays available for a farm paid to one address; the role variable ``btcpool_proxy_identity``
carries the same key (tests/unit/test_ansible_role.py checks that the role's defaults and argument spec mirror the
schema; here, that the variable maps onto the key and a bad value is reported under the variable's name).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy.config import DeployConfig, load_config
from ckbpool.deploy.errors import ConfigFileError
from ckbpool.deploy.hostfiles import RoleVarsError, config_from_role_vars, role_vars
from ckbpool.deploy.k8s import rendered_files
from ckbpool.deploy.render import render_files
from ckbpool.deploy.target import Paths
from ckbpool.pool.config import load_pool_config
from ckbpool.proxy.config import ProxyConfig

pytestmark = pytest.mark.unit

TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``ckbpool init`` of a testnet pool with the proxy (as an operator would)."""
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app,
        ["init", "-c", str(config), "-y", "--name", "pid", "--network", "testnet", "--payout-address",
         TESTNET_ADDRESS, "--proxy", "--no-miner", "--workspace", str(tmp_path / "workspace")],
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    return config


def _set_identity(project: Path, identity: str) -> DeployConfig:
    data = yaml.safe_load(project.read_text())
    data["proxy"] = {"identity": identity}
    project.write_text(yaml.safe_dump(data))
    return load_config(project)


def _proxy_tomls(config: DeployConfig, project: Path) -> dict[str, ProxyConfig]:
    """Every proxy.toml the targets render (workspace files and the k8s chart's), loaded as the proxy loads it."""
    paths = Paths.of(project, config)
    texts = {path: text for path, text in render_files(config, paths).items() if path.endswith("proxy.toml")}
    texts["k8s:proxy.toml"] = rendered_files(config, paths)["proxy"]["proxy.toml"]
    return {path: ProxyConfig.model_validate(tomllib.loads(text)) for path, text in texts.items()}


def test_the_rendered_proxy_credits_each_v1_miner_by_default(project: Path) -> None:
    config = load_config(project)
    assert config.services.proxy and config.proxy.identity == "per-worker"
    proxies = _proxy_tomls(config, project)
    assert len(proxies) >= 3, sorted(proxies)  # local, compose (+ hosts) and k8s
    for path, proxy in proxies.items():
        assert proxy.identity == "per-worker" and proxy.per_worker, path
        assert proxy.network == config.network == "testnet", path  # V1 usernames: testnet addresses
        assert proxy.upstream.user_identity == f"{TESTNET_ADDRESS}.proxy", path
    # the pool the proxy forwards to refuses what is not an address of its network, on channels and share tags
    pool_tomls = {p: t for p, t in render_files(config, Paths.of(project, config)).items() if p.endswith("pool.toml")}
    assert pool_tomls
    for path, text in pool_tomls.items():
        pool = load_pool_config(data=tomllib.loads(text))
        assert pool.stratum.require_address_identity is True, path
        assert pool.network == "testnet", path


def test_aggregated_identity_is_a_stack_setting(project: Path) -> None:
    config = _set_identity(project, "aggregated")
    for path, proxy in _proxy_tomls(config, project).items():
        assert proxy.identity == "aggregated" and not proxy.per_worker, path
        assert proxy.upstream.user_identity == f"{TESTNET_ADDRESS}.proxy", path  # the one account credited


def test_a_bad_identity_mode_names_its_key(project: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        _set_identity(project, "per-device")
    assert any(line.startswith("proxy.identity:") and "per-worker" in line for line in info.value.problems), (
        info.value.problems
    )


def test_the_role_variable_maps_onto_the_key(project: Path) -> None:
    config = _set_identity(project, "aggregated")
    variables = role_vars(config, Paths.of(project, config))
    assert variables["btcpool_proxy_identity"] == "aggregated"
    assert config_from_role_vars(variables).proxy.identity == "aggregated"
    with pytest.raises(RoleVarsError) as info:
        config_from_role_vars({**variables, "btcpool_proxy_identity": "per-device"})
    assert any(p.startswith("btcpool_proxy_identity:") for p in info.value.problems), info.value.problems
