"""The operator's path on a real Docker engine: an installed wheel, no checkout, no ckbpool image anywhere.

* the wheel of this checkout is built and installed into a FRESH venv of another Python than the image's (the
  image's base here is Debian bookworm with its own Python 3.11; the controller is 3.13 or 3.12 when this machine
  has one -- pyenv or PATH -- else the test's own Python, and the test says which it used);
* in a directory outside the checkout, that venv's ``ckbpool init -y`` and ``ckbpool deploy --target compose``
  run as a user runs them: the pool image does not exist (a fresh, never-built name), so deploy builds it itself
  from the installed package, and brings the stack up healthy;
* a miner outside the stack gets a block accepted by the node; ``destroy`` removes everything;
* a build that fails, or an official image that cannot be pulled, is one error naming the image and the reason,
  and no container of the project was created.

The official images are the local stand-ins (tests/e2e/images.py), handed in through ``CKBPOOL_IMAGE_<NAME>``;
the pool image is never handed in.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckbpool.deploy.compose import ComposeTarget
from ckbpool.deploy.config import load_config
from ckbpool.deploy.image import image_id
from ckbpool.deploy.target import Paths
from support.ports import port_flags

from .images import build, docker
from .test_compose import (  # noqa: F401 - docker_engine is a fixture
    _containers,
    docker_engine,
    mine_a_block_from_outside,
    secrets_to_an_operator,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
IMAGE_PYTHON = (3, 11)  # Debian bookworm's python3, the test base's


def _python_version(python: str) -> tuple[int, int] | None:
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def controller_python() -> str:
    """A Python >= 3.11 other than the image's, if this machine has one; else the test's own."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (13, 12)]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[23].*/bin/python3")), reverse=True)
    for candidate in candidates:
        if candidate and (version := _python_version(candidate)) and version >= (3, 12):
            return candidate
    return sys.executable


@pytest.fixture(scope="module")
def operator_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this checkout (built by that venv's own Python) and nothing else of ours."""
    base = tmp_path_factory.mktemp("operator")
    python = controller_python()
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "-q"]
    wheels = base / "wheels"
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True, timeout=900, cwd=base)
    (wheel,) = wheels.glob("ckbpool-*.whl")
    subprocess.run([*pip, "install", str(wheel)], check=True, timeout=1800, cwd=base)
    version = _python_version(str(venv / "bin" / "python"))
    print(f"controller Python {version} ({python}); image Python {IMAGE_PYTHON}")
    located = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ckbpool, sys; print(ckbpool.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=base,
    ).stdout  # fmt: skip
    assert str(venv) in located and str(ROOT) not in located, located
    return venv


def run_ckbpool(venv: Path, cwd: Path, env: dict[str, str], *args: str, timeout: float = 1800) -> str:
    result = subprocess.run(
        [str(venv / "bin" / "ckbpool"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, f"ckbpool {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def stand_ins(docker_engine: str) -> dict[str, str]:  # noqa: F811
    """The official images' local stand-ins (never the pool image) and the test base for the pool image."""
    env = build(["ckb", "redis"])
    env["CKBPOOL_IMAGE_POOL_BASE"] = os.environ.get("CKBPOOL_BASE_IMAGE", "local/debian:bookworm")
    return env


@pytest.fixture
def operator_dir(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "operator-laptop"
    work.mkdir()
    yield work


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CKBPOOL_IMAGE_", "VIRTUAL_ENV", "PYTHONPATH"))}
    return {**env, **extra}


def test_installed_wheel_builds_its_image_and_deploys_a_mining_stack(
    operator_venv: Path, operator_dir: Path, stand_ins: dict[str, str]
) -> None:
    pool_image = f"ckbpool.invalid/pool-e2e:{uuid.uuid4().hex[:12]}"  # never built before: deploy must build it
    assert image_id(pool_image) is None
    env = _clean_env(stand_ins)
    name = f"w{os.getpid() % 10000}"
    run_ckbpool(
        operator_venv, operator_dir, env,
        "init", "-y", "--name", name, "--bind-public", "127.0.0.1", "--no-monitoring", "--no-miner",
        "--share-interval", "0.5", *port_flags("stratum", "pool_http", "node_rpc", "web"),
    )  # fmt: skip
    config = operator_dir / "ckbpool.yaml"
    secrets_to_an_operator(config)  # as an operator's own init leaves them: not root's
    assert load_config(config).images.pool.startswith("ckbpool.invalid/pool:")  # init's default: never pulled
    _set_pool_image(config, pool_image)
    cfg = load_config(config)
    target = ComposeTarget(cfg, Paths.of(config, cfg))
    try:
        run_ckbpool(operator_venv, operator_dir, env, "deploy", "--target", "compose", "--timeout", "300")
        built = image_id(pool_image)
        assert built is not None  # deploy built it
        # the image's ckbpool was compiled on the image's Python, not copied from the controller's
        python = subprocess.run(
            [docker(), "run", "--rm", "--entrypoint", "python3", pool_image, "-c",
             "import sys, ckbpool.ckb._eaglesong as e; print(sys.version_info[:2], e.__file__)"],
            capture_output=True, text=True, timeout=120,
        ).stdout  # fmt: skip
        assert f"({IMAGE_PYTHON[0]}, {IMAGE_PYTHON[1]})" in python and "cpython-311" in python, python
        health = {h.name: h.healthy for h in target.health()}
        assert health == {"ckb": True, "pool": True, "redis": True}, health
        # the name a deploy runs was never pulled: no repo digest of that repository (the same image id may
        # carry digests of other repositories it was pushed to, e.g. by the registry e2e)
        digests = subprocess.run(
            [docker(), "image", "inspect", "--format", "{{json .RepoDigests}}", pool_image],
            capture_output=True, text=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        repository = pool_image.rsplit(":", 1)[0]
        assert not [d for d in json.loads(digests) if d.startswith(repository + "@")], digests
        mine_a_block_from_outside(target)  # the pool reports it accepted, and the node's chain has it
        # a second deploy reuses the image (same inputs)
        run_ckbpool(operator_venv, operator_dir, env, "deploy", "--target", "compose", "--timeout", "300")
        assert image_id(pool_image) == built
    finally:
        run_ckbpool(operator_venv, operator_dir, env, "destroy", "--purge", "--yes", timeout=300)
        subprocess.run([docker(), "rmi", "-f", pool_image], capture_output=True, timeout=120)
    assert _containers(target.project) == []


def _set_pool_image(config: Path, image: str) -> None:
    import yaml

    data = yaml.safe_load(config.read_text())
    data.setdefault("images", {})["pool"] = image
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def test_failed_build_and_failed_pull_name_the_image_and_start_nothing(
    operator_venv: Path, operator_dir: Path, stand_ins: dict[str, str]
) -> None:
    env = _clean_env(stand_ins)
    name = f"f{os.getpid() % 10000}"
    run_ckbpool(
        operator_venv, operator_dir, env,
        "init", "-y", "--name", name, "--bind-public", "127.0.0.1", "--no-monitoring", "--no-miner",
        *port_flags("stratum", "pool_http", "node_rpc", "web"),
    )  # fmt: skip
    config = operator_dir / "ckbpool.yaml"
    secrets_to_an_operator(config)
    cfg = load_config(config)
    project = ComposeTarget(cfg, Paths.of(config, cfg)).project

    def deploy(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(operator_venv / "bin" / "ckbpool"), "deploy", "--target", "compose", "--timeout", "120"],
            cwd=operator_dir, env={**env, **extra}, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    # a base image that does not exist: the build fails, the error names the image and why
    bad_image = f"ckbpool.invalid/pool-e2e:{uuid.uuid4().hex[:12]}"
    _set_pool_image(config, bad_image)
    failed = deploy({"CKBPOOL_IMAGE_POOL_BASE": "ckbpool.invalid/no-such-base:1"})
    message = failed.stderr.replace("\n", " ")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"building {bad_image} failed" in message and "no-such-base" in message, message
    assert _containers(project) == []

    # an official image that no registry serves here: the pull fails, the error names image and service
    missing = f"redis:0.0.{uuid.uuid4().int % 1000}-ckbpool-e2e-missing"
    pulled = deploy({"CKBPOOL_IMAGE_REDIS": missing})
    message = pulled.stderr.replace("\n", " ")
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr
    assert f"cannot pull {missing} for service redis" in message, message
    assert _containers(project) == []
