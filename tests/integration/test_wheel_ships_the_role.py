"""An installed ckbpool deploys to hosts with the role of its own version: the wheel carries ``ckbpool/ansible``
(site.yml, destroy.yml, roles/btcpool with its plugins), ``ansible_dir()`` finds it there, and the shipped copy
passes ``ansible-playbook --syntax-check`` on its own example inventory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_the_wheel_carries_the_btcpool_role_and_finds_it(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("ckbpool-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    role = {n.removeprefix("ckbpool/ansible/") for n in names if n.startswith("ckbpool/ansible/")}
    tracked = subprocess.run(
        ["git", "ls-files", "ansible"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    expected = {
        p.removeprefix("ansible/") for p in tracked if not p.startswith("ansible/testing/")
    }  # everything but the test hosts' Dockerfiles
    assert expected <= role, sorted(expected - role)
    assert {"site.yml", "destroy.yml", "roles/btcpool/lookup_plugins/btcpool_render.py"} <= role

    unpacked = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(unpacked)
    env = {**os.environ, "PYTHONPATH": str(unpacked), "CKBPOOL_ANSIBLE_DIR": ""}
    found = subprocess.run(
        [sys.executable, "-c", "from ckbpool.deploy.hosts import ansible_dir; print(ansible_dir())"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    shipped = Path(found.stdout.strip())
    assert shipped == unpacked / "ckbpool" / "ansible"
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed (scripts/ansible-deps.sh)")
    check = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "examples/multi-host/inventory.ini", "site.yml", "--syntax-check"],
        cwd=shipped, capture_output=True, text=True, timeout=120,
        env={**env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
