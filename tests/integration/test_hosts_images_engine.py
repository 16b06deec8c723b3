"""The role's images phase against this machine's real Docker engine (the local connection), with a tiny image:

* ``docker save`` by name on the controller -> the role copies it and runs ``docker load`` where the id is missing,
  the name comes back with the controller's id, and a second run changes nothing;
* through a real OCI registry (CNCF distribution from scripts/registry-deps.sh, on 127.0.0.1, which the engine
  accepts over plain HTTP): ``push_image`` returns ``repository@sha256:...``, the config schema accepts it, and
  the role pulls it by digest to the very image id that was pushed;
* a pull that fails is named with its image and service.

The multi-host e2e test (tests/e2e/test_ansible_multihost.py) runs the same path on test hosts with their own
engines; this one needs only the engine and takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ckbpool.deploy.config import Images
from ckbpool.deploy.image import docker_binary, image_id, push_image, save_image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "ansible" / "roles" / "btcpool"
BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("CKBPOOL_CACHE", Path.home() / ".cache" / "ckbpool"))


def _docker(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([docker_binary(), *argv], capture_output=True, text=True, timeout=300, **kw)
    assert not check or result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def engine() -> None:
    try:
        ok = subprocess.run([docker_binary(), "info"], capture_output=True, timeout=30).returncode == 0
    except Exception:
        ok = False
    if not ok:
        pytest.skip("no Docker engine answers (scripts/docker-deps.sh starts one)")


@pytest.fixture
def tiny(engine: None, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A small image of its own (a unique file, FROM scratch) named like the pool image; (name, id)."""
    mark = uuid.uuid4().hex[:12]
    name = f"ckbpool.invalid/pool:itest-{mark}"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "marker").write_text(mark)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY marker /marker\n")
    _docker("build", "-q", "-t", name, str(ctx))
    found = image_id(name)
    assert found is not None
    try:
        yield name, found
    finally:
        _docker("rmi", "-f", found, check=False)


def run_phase(tmp: Path, plan: dict[str, Any], **variables: Any) -> tuple[int, int, str]:
    """ansible-playbook: the role's images phase on this machine (local connection, the real engine)."""
    (tmp / "play.yml").write_text(
        textwrap.dedent(
            """
            - hosts: localhost
              connection: local
              gather_facts: false
              tasks:
                - ansible.builtin.include_role:
                    name: btcpool
                    tasks_from: images
            """
        )
    )
    extra = {
        "btcpool__plan": plan,
        "btcpool_install_dir": str(tmp / "install"),
        "ansible_python_interpreter": sys.executable,
        **variables,
    }
    (tmp / "vars.json").write_text(json.dumps(extra))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_ROLES_PATH": str(ROLE.parent),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}  # fmt: skip
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(tmp / "play.yml"), "-e", f"@{tmp / 'vars.json'}"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    recap = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", result.stdout)
    assert recap, result.stdout + result.stderr
    return int(recap.group(1)), int(recap.group(2)), result.stdout


def test_archive_is_loaded_where_the_id_is_missing_and_only_there(tiny: tuple[str, str], tmp_path: Path) -> None:
    name, built = tiny
    archive = save_image(name, tmp_path / "controller" / f"{built.removeprefix('sha256:')}.tar")
    _docker("rmi", name)
    assert image_id(name) is None
    plan = {"pool_image": name, "images": [{"name": name, "services": ["pool"]}]}
    args = {"btcpool_pool_image_id": built, "btcpool_pool_image_archive": str(archive)}
    changed, failed, out = run_phase(tmp_path, plan, **args)
    assert failed == 0 and changed >= 2, out
    assert image_id(name) == built  # the tag came back with the archive, on the controller's id
    assert not list((tmp_path / "install" / "images").glob("*.tar"))
    changed, failed, out = run_phase(tmp_path, plan, **args)
    assert (changed, failed) == (0, 0), out


@pytest.fixture
def registry(engine: None, tmp_path: Path) -> Iterator[str]:
    binary = CACHE / "bin" / "registry"
    if not binary.is_file():
        pytest.skip(f"no OCI registry at {binary}: run scripts/registry-deps.sh (make deps does)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    proc = subprocess.Popen([str(binary), "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the registry did not listen"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_registry_push_gives_a_digest_the_role_pulls_to_the_same_id(
    tiny: tuple[str, str], registry: str, tmp_path: Path
) -> None:
    name, built = tiny
    repository = f"{registry}/ckbpool/pool"
    ref = push_image(name, repository)
    assert re.fullmatch(rf"{re.escape(repository)}@sha256:[0-9a-f]{{64}}", ref), ref
    assert Images(pool=ref, registry=repository).pool == ref
    # forget it locally (every name), so the role must pull it
    tags = json.loads(_docker("image", "inspect", "--format", "{{json .RepoTags}}", built).stdout)
    _docker("rmi", *tags)
    assert image_id(ref) is None
    plan = {"pool_image": ref, "images": [{"name": ref, "services": ["pool"]}]}
    changed, failed, out = run_phase(tmp_path, plan)
    assert failed == 0 and changed == 1, out
    assert image_id(ref) == built
    changed, failed, out = run_phase(tmp_path, plan)
    assert (changed, failed) == (0, 0), out


def test_a_failed_pull_is_named_with_its_service(engine: None, tmp_path: Path) -> None:
    missing = "ckbpool-test.invalid/nothing:1"
    plan = {"pool_image": "ckbpool.invalid/pool:unused", "images": [{"name": missing, "services": ["prometheus"]}]}
    _, failed, out = run_phase(tmp_path, plan)
    assert failed == 1, out
    assert f"cannot pull {missing} (for prometheus)" in " ".join(out.split()), out
