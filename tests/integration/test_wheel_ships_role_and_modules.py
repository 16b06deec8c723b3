"""An installed ckbpool deploys to hosts and clouds with the role and modules of its own version: the wheel carries
``ckbpool/ansible`` (site.yml, destroy.yml, roles/btcpool with its plugins) and ``ckbpool/terraform`` (the aws and
alicloud modules and the shared ones), ``ansible_dir()`` and ``terraform_modules_dir()`` find them there, and the
shipped role passes ``ansible-playbook --syntax-check`` on its own example inventory. The wheel also carries the pool
image's Dockerfile and the Eaglesong C source, and the image's build context can be assembled from it alone."""

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


def test_the_wheel_carries_the_role_the_terraform_modules_and_the_image_recipe(tmp_path: Path) -> None:
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
    modules = {n.removeprefix("ckbpool/terraform/") for n in names if n.startswith("ckbpool/terraform/")}
    tracked_tf = subprocess.run(
        ["git", "ls-files", "terraform"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    # what a deploy reads: every module file, not the examples, tests or lint settings
    needed = {
        p.removeprefix("terraform/")
        for p in tracked_tf
        if p.endswith((".tf", ".tftpl")) and "/examples/" not in p and "/tests/" not in p
    }
    assert needed and needed <= modules, sorted(needed - modules)
    assert not any(".terraform" in n for n in modules), sorted(modules)

    unpacked = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(unpacked)
    env = {**os.environ, "PYTHONPATH": str(unpacked), "CKBPOOL_ANSIBLE_DIR": "", "CKBPOOL_TERRAFORM_DIR": ""}
    found = subprocess.run(
        [sys.executable, "-c", "from ckbpool.deploy.hosts import ansible_dir; from ckbpool.deploy.cloud import "
         "terraform_modules_dir; print(ansible_dir()); print(terraform_modules_dir())"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    shipped, shipped_tf = (Path(line) for line in found.stdout.split())
    assert shipped == unpacked / "ckbpool" / "ansible"
    assert shipped_tf == unpacked / "ckbpool" / "terraform"

    # the pool image's recipe: the Dockerfile and the C source, and a build context assembled from the wheel alone
    sources = {"ckbpool/ckb/_eaglesong.c", "ckbpool/sv2/_chacha.c", "ckbpool/bus/_sharecodec.c"}
    assert {"ckbpool/image/Dockerfile", *sources} <= names
    context = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from ckbpool.deploy.image import build_context; "
         "print(build_context(Path(sys.argv[1]), 'base:1'))", str(tmp_path / "image")],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert context.returncode == 0, context.stderr
    ctx = tmp_path / "image" / "context"
    assert (tmp_path / "image" / "Dockerfile").is_file() and (ctx / "src/ckbpool/ckb/_eaglesong.c").is_file()
    assert (ctx / "src/ckbpool/sv2/_chacha.c").is_file() and (ctx / "src/ckbpool/bus/_sharecodec.c").is_file()
    assert not (ctx / "src/ckbpool/ansible").exists() and not list(ctx.rglob("*.so"))
    assert 'name = "ckbpool"' in (ctx / "pyproject.toml").read_text()
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed (scripts/ansible-deps.sh)")
    check = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "examples/multi-host/inventory.ini", "site.yml", "--syntax-check"],
        cwd=shipped, capture_output=True, text=True, timeout=120,
        env={**env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1"},
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
