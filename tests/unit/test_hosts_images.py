"""How the pool image reaches the hosts of the ``hosts`` / cloud targets, without a Docker engine:

* the controller's image step (:func:`ckbpool.deploy.hosts.pool_image_vars`), with the engine calls of
  ``ckbpool.deploy.image`` replaced: without a registry it builds once, saves one archive per image id (older
  ones removed) and hands the role name + id + archive; with ``images.registry`` it pushes and hands the hosts
  the reference by digest, which the config schema accepts; registry credentials must be private;
* the role's images phase (tasks/images.yml) run by ansible-playbook on this machine against a stand-in
  ``docker`` that keeps its images in a directory: the archive is copied and loaded only where the id is missing
  (a second run changes nothing and copies nothing), a ``ckbpool.invalid/`` image is never pulled, a failed
  pull names the image and its service, registry credentials exist on the host only during the pulls;
* the render lookup resolves each host's images as compose does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckbpool.deploy.image as image_mod
from ckbpool.cli.app import app
from ckbpool.deploy.config import DeployConfig, load_config
from ckbpool.deploy.errors import TargetError
from ckbpool.deploy.hostfiles import Placement, config_from_role_vars, host_plan, role_vars
from ckbpool.deploy.hosts import IMAGES_SUBDIR, REGISTRY_AUTH_FILE, pool_image_vars
from ckbpool.deploy.image import BuiltImage
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "ansible" / "roles" / "btcpool"
BIN = Path(sys.executable).parent
ID_A = "sha256:" + "a" * 64
ID_B = "sha256:" + "b" * 64
DIGEST = "sha256:" + "d" * 64
POOL = "ckbpool.invalid/pool:0.1.0"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[DeployConfig, Paths]:
    monkeypatch.delenv("CKBPOOL_IMAGE_POOL", raising=False)
    monkeypatch.delenv("CKBPOOL_IMAGE_POOL_BASE", raising=False)
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(app, ["init", "-c", str(config), "-y", "--name", "im", "--kafka", "--no-miner"])
    assert result.exit_code == 0, result.stderr
    cfg = load_config(config)
    return cfg, Paths.of(config, cfg)


class FakeEngine:
    """The engine calls of ckbpool.deploy.image, recorded."""

    def __init__(self, image_id: str = ID_A, *, have: dict[str, str] | None = None) -> None:
        self.id = image_id
        self.have = dict(have or {})
        self.calls: list[tuple[str, ...]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
        def build(name: str, *, base: str, on_line: Any = None, **_: Any) -> BuiltImage:
            self.calls.append(("build", name, base))
            if on_line is not None:
                on_line("#7 [builder 3/4] RUN pip install")
            self.have[name] = self.id
            return BuiltImage(name, self.id, built=True)

        def save(name: str, dest: Path) -> Path:
            self.calls.append(("save", name, dest.name))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(f"{name} {self.have[name]}\n")
            return dest

        def push(name: str, repository: str, **_: Any) -> str:
            self.calls.append(("push", name, repository))
            return f"{repository}@{DIGEST}"

        monkeypatch.setattr(image_mod, "build_pool_image", build)
        monkeypatch.setattr(image_mod, "save_image", save)
        monkeypatch.setattr(image_mod, "push_image", push)
        monkeypatch.setattr(image_mod, "image_id", lambda name: self.have.get(name))
        return self


def _with_images(cfg: DeployConfig, **images: str) -> DeployConfig:
    return cfg.model_copy(update={"images": cfg.images.model_copy(update=images)})


def test_without_a_registry_the_controller_builds_once_and_saves_one_archive_per_id(
    project: tuple[DeployConfig, Paths], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, paths = project
    cfg = _with_images(cfg, pool_base="local/debian:bookworm")
    engine = FakeEngine().install(monkeypatch)
    progress: list[str] = []
    out = pool_image_vars(cfg, paths, lambda item, state: progress.append(f"{item}: {state}"))
    archive = paths.workspace / IMAGES_SUBDIR / f"{'a' * 64}.tar"
    assert out["btcpool_pool_image_id"] == ID_A
    assert out["btcpool_pool_image_archive"] == str(archive) and archive.is_file()
    assert out["btcpool_images"]["pool"] == POOL
    assert out["btcpool_registry_auth_file"] == ""
    assert engine.calls == [("build", POOL, "local/debian:bookworm"), ("save", POOL, archive.name)]
    assert any("[builder 3/4]" in line for line in progress), progress
    # the same image again: nothing saved again
    pool_image_vars(cfg, paths)
    assert [c[0] for c in engine.calls] == ["build", "save", "build"]
    # a new build: its archive, and the old one is gone
    engine.id = ID_B
    out = pool_image_vars(cfg, paths)
    names = sorted(p.name for p in (paths.workspace / IMAGES_SUBDIR).iterdir())
    assert names == [f"{'b' * 64}.tar"] and out["btcpool_pool_image_id"] == ID_B
    # what the role gets is a valid deployment (the schema checks btcpool_images)
    config_from_role_vars({**role_vars(cfg, paths), **out})


def test_with_a_registry_the_hosts_get_the_pushed_digest(
    project: tuple[DeployConfig, Paths], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, paths = project
    cfg = _with_images(cfg, registry="registry.example.com:5000/ckbpool/pool")
    engine = FakeEngine().install(monkeypatch)
    out = pool_image_vars(cfg, paths)
    ref = f"registry.example.com:5000/ckbpool/pool@{DIGEST}"
    assert out["btcpool_images"]["pool"] == ref
    assert out["btcpool_pool_image_id"] == "" and out["btcpool_pool_image_archive"] == ""
    assert [c[0] for c in engine.calls] == ["build", "push"]
    assert not (paths.workspace / IMAGES_SUBDIR).exists()
    # the digest is accepted where the product produced it, and lands in the host's compose file
    variables = {**role_vars(cfg, paths), **out}
    config = config_from_role_vars(variables)
    assert config.images.pool == ref
    placement = Placement.from_inventory(config, {"ckb_node": ["h"], "pool": ["h"], "kafka": ["h"], "redis": ["h"],
                                                  "monitoring": ["h"]}, {"h": "10.0.0.1"})  # fmt: skip
    plan = host_plan(config, placement, "h", install_dir="/opt/x", controller_secrets_dir=paths.secrets_dir)
    assert f"${{CKBPOOL_IMAGE_POOL:-{ref}}}" in plan.files["compose/compose.yaml"]
    assert ref in json.dumps(lookup().host_images(plan.files, plan.services))


def test_registry_credentials_must_be_private_and_are_only_referenced(
    project: tuple[DeployConfig, Paths], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, paths = project
    cfg = _with_images(cfg, registry="ghcr.io/example/pool")
    FakeEngine().install(monkeypatch)
    auth = paths.secrets_dir / REGISTRY_AUTH_FILE
    auth.write_text('{"auths": {"ghcr.io": {"auth": "c2VjcmV0"}}}')
    auth.chmod(0o644)
    with pytest.raises(TargetError, match="chmod 600"):
        pool_image_vars(cfg, paths)
    auth.chmod(0o600)
    out = pool_image_vars(cfg, paths)
    assert out["btcpool_registry_auth_file"] == str(auth)
    assert "c2VjcmV0" not in json.dumps(out)


def test_images_pinned_by_digest_or_not_on_this_machine_are_the_hosts_to_pull(
    project: tuple[DeployConfig, Paths], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, paths = project
    engine = FakeEngine().install(monkeypatch)
    pinned = f"registry.example.com/pool@{DIGEST}"
    out = pool_image_vars(_with_images(cfg, pool=pinned), paths)
    assert out["btcpool_images"]["pool"] == pinned and out["btcpool_pool_image_id"] == ""
    out = pool_image_vars(_with_images(cfg, pool="registry.example.com/pool:1.0"), paths)
    assert out["btcpool_pool_image_archive"] == "" and engine.calls == []
    # an image of another name that this machine has (built by hand) is transferred like the built one
    engine.have["registry.example.com/pool:1.0"] = ID_B
    out = pool_image_vars(_with_images(cfg, pool="registry.example.com/pool:1.0"), paths)
    assert out["btcpool_pool_image_id"] == ID_B and [c[0] for c in engine.calls] == ["save"]


def test_environment_overrides_name_and_base_as_for_compose(
    project: tuple[DeployConfig, Paths], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, paths = project
    engine = FakeEngine().install(monkeypatch)
    monkeypatch.setenv("CKBPOOL_IMAGE_POOL", "ckbpool.invalid/pool:test")
    monkeypatch.setenv("CKBPOOL_IMAGE_POOL_BASE", "local/debian:bookworm")
    out = pool_image_vars(cfg, paths)
    assert engine.calls[0] == ("build", "ckbpool.invalid/pool:test", "local/debian:bookworm")
    assert out["btcpool_images"]["pool"] == "ckbpool.invalid/pool:test"


# ------------------------------------------------------------------------------------------------ lookup


def lookup() -> Any:
    spec = importlib.util.spec_from_file_location("btcpool_render", ROLE / "lookup_plugins" / "btcpool_render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lookup_lists_each_hosts_images_as_compose_resolves_them(project: tuple[DeployConfig, Paths]) -> None:
    cfg, paths = project
    groups = {"ckb_node": ["node-1"], "kafka": ["data-1"], "redis": ["data-1"], "pool": ["pool-1"],
              "monitoring": ["pool-1"]}  # fmt: skip
    placement = Placement.from_inventory(
        cfg, groups, {"node-1": "10.0.0.1", "data-1": "10.0.0.2", "pool-1": "10.0.0.3"}
    )
    by_host = {}
    for host in ("node-1", "data-1", "pool-1"):
        plan = host_plan(cfg, placement, host, install_dir="/opt/x", controller_secrets_dir=paths.secrets_dir)
        by_host[host] = {i["name"]: i["services"] for i in lookup().host_images(plan.files, plan.services)}
    assert by_host["pool-1"][POOL] == ["pool"]
    # the node's RPC filter for pool-1, and each scraped host's scrape gateway (issue 18)
    assert by_host["node-1"][POOL] == ["rpc-filter", "scrape-gateway"]
    assert by_host["data-1"][POOL] == ["scrape-gateway"]
    assert by_host["node-1"][cfg.images.ckb] == ["ckb"]
    assert by_host["data-1"][cfg.images.kafka] == ["kafka"]


# ------------------------------------------------------------------------------------------- role phase

FAKE_DOCKER = textwrap.dedent(
    r"""
    #!/usr/bin/env bash
    # a stand-in engine: $FAKE_DOCKER_STATE/<name with / and : as _> holds the image id of each name
    set -u
    state="$FAKE_DOCKER_STATE"
    echo "$*" >>"$state/calls.log"
    key() { printf '%s' "$1" | tr '/:@' '___'; }
    config=""
    if [ "$1" = "--config" ]; then config=$2; shift 2; fi
    case "$1 ${2:-}" in
      "image inspect")
        ref="${@: -1}"
        if [ -f "$state/$(key "$ref")_img" ]; then cat "$state/$(key "$ref")_img"; exit 0; fi
        if grep -rqx -- "$ref" "$state" --include='*_img' 2>/dev/null; then echo "$ref"; exit 0; fi
        echo "Error: No such image: $ref" >&2; exit 1 ;;
    esac
    case "$1" in
      tag)
        if grep -rqx -- "$2" "$state" --include='*_img' 2>/dev/null; then
          echo "$2" >"$state/$(key "$3")_img"; exit 0
        fi
        echo "Error response from daemon: No such image: $2" >&2; exit 1 ;;
      load)
        while read -r name id; do echo "$id" >"$state/$(key "$name")_img"; done <"${@: -1}"
        echo "Loaded image"; exit 0 ;;
      pull)
        ref="${@: -1}"
        if [ -n "$config" ]; then [ -f "$config/config.json" ] && echo "auth present" >>"$state/calls.log"; fi
        case " $FAKE_DOCKER_PULLABLE " in *" $ref "*)
          echo "sha256:$(printf '%s' "$ref" | sha256sum | cut -c1-64)" >"$state/$(key "$ref")_img"; exit 0 ;;
        esac
        echo "Error response from daemon: pull access denied for $ref, repository does not exist" >&2; exit 1 ;;
    esac
    echo "fake docker: unexpected $*" >&2; exit 2
    """
).lstrip()


class RolePhase:
    """ansible-playbook running the role's images phase on this machine, against the stand-in docker."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "engine"
        self.state.mkdir()
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        docker = bin_dir / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
        self.bin = bin_dir
        self.install_dir = tmp / "install"
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

    def fake_image(self, name: str, image_id: str) -> None:
        (self.state / (re.sub(r"[/:@]", "_", name) + "_img")).write_text(image_id + "\n")

    def id_of(self, name: str) -> str | None:
        path = self.state / (re.sub(r"[/:@]", "_", name) + "_img")
        return path.read_text().strip() if path.exists() else None

    def calls(self) -> list[str]:
        log = self.state / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return lines

    def run(self, plan: dict[str, Any], pullable: Sequence[str] = (), **variables: Any) -> tuple[int, int, str]:
        extra = {
            "btcpool__plan": plan,
            "btcpool_install_dir": str(self.install_dir),
            "ansible_python_interpreter": sys.executable,
            **variables,
        }
        (self.tmp / "vars.json").write_text(json.dumps(extra))
        env = {
            **os.environ,
            "PATH": f"{self.bin}:{BIN}:{os.environ.get('PATH', '')}",
            "ANSIBLE_ROLES_PATH": str(ROLE.parent),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
            "FAKE_DOCKER_STATE": str(self.state),
            "FAKE_DOCKER_PULLABLE": " ".join(pullable),
        }
        result = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", "localhost,", str(self.tmp / "play.yml"), "-e",
             f"@{self.tmp / 'vars.json'}"],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", result.stdout)
        assert recap, result.stdout + result.stderr
        return int(recap.group(2)), int(recap.group(3)), result.stdout


def _plan(pool: str, *others: tuple[str, str]) -> dict[str, Any]:
    images = [{"name": pool, "services": ["pool"]}] + [{"name": n, "services": [s]} for n, s in others]
    return {"pool_image": pool, "images": images}


def test_role_loads_the_archive_once_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    role = RolePhase(tmp_path)
    archive = tmp_path / "controller" / f"{'a' * 64}.tar"
    archive.parent.mkdir()
    archive.write_text(f"{POOL} {ID_A}\n")
    plan = _plan(POOL, ("nervos/ckb:v0.210.0", "ckb"))
    args = {"btcpool_pool_image_id": ID_A, "btcpool_pool_image_archive": str(archive)}

    changed, failed, out = role.run(plan, ["nervos/ckb:v0.210.0"], **args)
    assert failed == 0, out
    calls = role.calls()
    assert any(c.startswith("load ") for c in calls), calls
    assert "pull --quiet nervos/ckb:v0.210.0" in calls
    assert not any(c.startswith("pull") and "ckbpool.invalid" in c for c in calls), calls
    assert role.id_of(POOL) == ID_A and changed >= 2
    assert list((role.install_dir / "images").iterdir()) == []  # the copy on the host is removed after the load

    changed, failed, out = role.run(plan, ["nervos/ckb:v0.210.0"], **args)
    assert (changed, failed) == (0, 0), out
    calls = role.calls()
    assert all(c.startswith("image inspect") for c in calls), calls  # no copy, load, tag or pull

    # a new build: loaded again, once
    archive.write_text(f"{POOL} {ID_B}\n")
    changed, failed, out = role.run(plan, ["nervos/ckb:v0.210.0"], **{**args, "btcpool_pool_image_id": ID_B})
    assert failed == 0 and changed >= 1, out
    assert role.id_of(POOL) == ID_B and any(c.startswith("load ") for c in role.calls())


def test_role_names_an_image_it_already_has_instead_of_transferring_it(tmp_path: Path) -> None:
    role = RolePhase(tmp_path)
    role.fake_image("ckbpool.invalid/pool:old", ID_A)
    changed, failed, out = role.run(
        _plan(POOL), btcpool_pool_image_id=ID_A, btcpool_pool_image_archive=str(tmp_path / "missing.tar")
    )
    assert failed == 0 and changed == 1, out
    calls = role.calls()
    assert f"tag {ID_A} {POOL}" in calls and not any(c.startswith("load") for c in calls), calls
    assert role.id_of(POOL) == ID_A


def test_role_never_pulls_a_ckbpool_invalid_image(tmp_path: Path) -> None:
    role = RolePhase(tmp_path)
    _, failed, out = role.run(_plan(POOL), [POOL])
    assert failed == 1, out
    assert "never pulls it" in out and "ckbpool deploy --target hosts" in out
    assert not any(c.startswith("pull") for c in role.calls())


def test_role_names_the_image_a_pull_failed_for_before_anything_starts(tmp_path: Path) -> None:
    role = RolePhase(tmp_path)
    role.fake_image(POOL, ID_A)
    plan = _plan(POOL, ("redis:7.4.2", "redis"), ("prom/prometheus:v2.53.2", "prometheus"))
    _, failed, out = role.run(plan, ["redis:7.4.2"], btcpool_pool_image_id=ID_A)
    assert failed == 1, out
    assert "cannot pull prom/prometheus:v2.53.2 (for prometheus)" in out
    assert "pull access denied" in out and "redis:7.4.2 (for" not in out


def test_role_pulls_a_registry_digest_with_credentials_present_only_meanwhile(tmp_path: Path) -> None:
    role = RolePhase(tmp_path)
    ref = f"registry.example.com/ckbpool/pool@{DIGEST}"
    auth = tmp_path / "registry-auth.json"
    auth.write_text('{"auths": {}}')
    changed, failed, out = role.run(_plan(ref), [ref], btcpool_registry_auth_file=str(auth))
    assert failed == 0, out
    calls = role.calls()
    assert f"--config {role.install_dir}/registry pull --quiet {ref}" in calls and "auth present" in calls, calls
    assert not (role.install_dir / "registry").exists()
    changed, failed, out = role.run(_plan(ref), [ref], btcpool_registry_auth_file=str(auth))
    assert (changed, failed) == (0, 0), out
