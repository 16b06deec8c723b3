"""The btcpool role as a Galaxy role: ansible-lint (production profile) clean, the example playbooks pass
``--syntax-check``, meta/galaxy_info complete, every variable in argument_specs and documented in defaults with
the config schema's defaults, and the role installs by path and by name (``ansible-galaxy role install`` of a
role tarball, no git or SSH) and is then found by its name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from ckbpool.deploy.config import DeployConfig
from ckbpool.deploy.hostfiles import GROUPS, ROLE_VARS, role_vars
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
ROLE = ANSIBLE / "roles" / "btcpool"
BIN = Path(sys.executable).parent
TESTNET_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (scripts/ansible-deps.sh)")
    return str(path)


def ansible_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_HOST_PATTERN_MISMATCH": "ignore"}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", **extra)
    return env


def load(path: Path) -> object:
    return yaml.safe_load(path.read_text())


def test_ansible_lint_production_profile_is_clean() -> None:
    start = time.monotonic()
    result = subprocess.run(
        [tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor", "."],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=300, env=ansible_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr
    print(f"ansible-lint production: clean in {time.monotonic() - start:.1f}s")


@pytest.mark.parametrize("example", ["single-host", "multi-host"])
@pytest.mark.parametrize("playbook", ["site.yml", "destroy.yml"])
def test_example_playbooks_pass_syntax_check(example: str, playbook: str) -> None:
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", f"examples/{example}/inventory.ini", playbook, "--syntax-check"],
        cwd=ANSIBLE, capture_output=True, text=True, timeout=120, env=ansible_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_meta_galaxy_info_is_complete() -> None:
    meta = load(ROLE / "meta" / "main.yml")
    assert isinstance(meta, dict)
    info = meta["galaxy_info"]
    for key in ("role_name", "namespace", "author", "description", "license", "min_ansible_version", "platforms"):
        assert info.get(key), key
    assert info["role_name"] == "btcpool"
    platforms = {p["name"]: set(p["versions"]) for p in info["platforms"]}
    assert platforms == {"Debian": {"bookworm"}, "Ubuntu": {"jammy", "noble"}}
    assert meta["dependencies"] == []
    # the minimum in meta is the one preflight checks
    internal = load(ROLE / "vars" / "main.yml")
    assert isinstance(internal, dict)
    assert internal["btcpool__ansible_core_min"].startswith(info["min_ansible_version"])
    assert set(internal["btcpool__supported_os"]) == set(platforms)


def _defaults() -> dict[str, object]:
    data = load(ROLE / "defaults" / "main.yml")
    assert isinstance(data, dict)
    return data


def _documented_required() -> set[str]:
    text = (ROLE / "defaults" / "main.yml").read_text()
    return {line.split(":")[0].lstrip("# ").strip() for line in text.splitlines() if line.startswith("# btcpool_")}


def test_every_variable_is_prefixed_specified_and_documented() -> None:
    specs = load(ROLE / "meta" / "argument_specs.yml")
    assert isinstance(specs, dict)
    options = specs["argument_specs"]["main"]["options"]
    defaults = _defaults()
    required = {name for name, spec in options.items() if spec.get("required")}
    assert required == {"btcpool_network", "btcpool_payout_address", "btcpool_secrets_dir"}
    # every default has a spec, every spec a default or a documented "required" line
    assert set(defaults) - set(options) == set()
    assert set(options) - set(defaults) == required
    assert required <= _documented_required()
    for name, spec in options.items():
        assert name.startswith("btcpool_") and not name.startswith("btcpool__"), name
        assert spec.get("description"), name
        assert spec.get("type"), name
    # a comment above or beside every default
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("btcpool_"):
            above = lines[i - 1].lstrip()
            assert above.startswith("#") or "#" in line or lines[i - 1].startswith("btcpool_"), line
    # the config keys the lookup reads are the ones the role lists
    internal = load(ROLE / "vars" / "main.yml")
    assert isinstance(internal, dict)
    assert internal["btcpool__config_vars"] == list(ROLE_VARS)
    assert tuple(internal["btcpool__groups"]) == GROUPS


def test_defaults_equal_the_config_schema_defaults(tmp_path: Path) -> None:
    """The role's documented defaults are the values ckbpool.yaml would default to (no drift between the two)."""
    config = DeployConfig(name="ckbpool", network="dev", payout_address=TESTNET_ADDRESS)
    expected = role_vars(config, Paths(tmp_path / "c.yaml", tmp_path, tmp_path))
    defaults = _defaults()
    for var in ROLE_VARS:
        if var in ("btcpool_network", "btcpool_payout_address"):
            continue
        assert defaults[var] == expected[var], var
    specs = load(ROLE / "meta" / "argument_specs.yml")
    assert isinstance(specs, dict)
    options = specs["argument_specs"]["main"]["options"]
    assert set(options["btcpool_ports"]["options"]) == set(config.ports.model_dump())
    assert set(options["btcpool_images"]["options"]) == set(config.images.model_dump())
    for name, spec in options.items():
        if "default" in spec and name in defaults:
            assert spec["default"] == defaults[name], name


def test_role_installs_from_a_tarball_by_name_and_is_found_by_it(tmp_path: Path) -> None:
    """What an operator without our checkout does: ansible-galaxy installs the role under its name; a playbook
    that says `role: btcpool` finds it through roles_path. No git, no SSH."""
    tarball = tmp_path / "btcpool-0.1.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(ROLE, arcname="btcpool", filter=lambda t: None if "__pycache__" in t.name else t)
    requirements = tmp_path / "requirements.yml"
    requirements.write_text(yaml.safe_dump({"roles": [{"src": str(tarball), "name": "btcpool"}]}))
    roles = tmp_path / "roles"
    result = subprocess.run(
        [tool("ansible-galaxy"), "role", "install", "-r", str(requirements), "-p", str(roles)],
        capture_output=True, text=True, timeout=120, env=ansible_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (roles / "btcpool" / "meta" / "argument_specs.yml").exists()
    playbooks = tmp_path / "elsewhere"
    playbooks.mkdir()
    shutil.copy(ANSIBLE / "site.yml", playbooks / "site.yml")
    shutil.copytree(ANSIBLE / "examples", playbooks / "examples")
    check = subprocess.run(
        [tool("ansible-playbook"), "-i", "examples/multi-host/inventory.ini", "site.yml", "--syntax-check"],
        cwd=playbooks, capture_output=True, text=True, timeout=120, env=ansible_env(ANSIBLE_ROLES_PATH=str(roles)),
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # and without it, the error names the role (what the predecessor's users saw, now only when misconfigured)
    missing = subprocess.run(
        [tool("ansible-playbook"), "-i", "examples/multi-host/inventory.ini", "site.yml", "--syntax-check"],
        cwd=playbooks, capture_output=True, text=True, timeout=120,
        env=ansible_env(ANSIBLE_ROLES_PATH=str(tmp_path / "none")),
    )  # fmt: skip
    assert missing.returncode != 0 and "btcpool" in missing.stdout + missing.stderr


def test_requirements_file_pins_and_uses_no_ssh_git() -> None:
    text = (ANSIBLE / "requirements.yml").read_text()
    data = yaml.safe_load(text)
    assert "git@" not in text and "ssh://" not in text
    assert data["collections"] == []  # the role needs ansible.builtin only
    for role in data["roles"]:
        assert role.get("version"), role
