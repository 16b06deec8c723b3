"""What makes a plain ``docker compose up`` work in a rendered ``workspace/compose`` (no ckbpool command, no
extra variables), checked on the rendered files:

* ``.env`` names the project, the profiles, the images and the user the secret-reading services run as: the
  owner of ``secrets_dir`` at render time (not the caller: under sudo that is root);
* secrets owned by root give no user at all: ``.env`` says why, compose.yaml's ``${CKBPOOL_UID:?...}`` stops
  compose, and ``ckbpool deploy`` refuses with the fix;
* modes do not depend on the umask: under 077, rendered files are 0644 and their directories 0755 (ckb and
  Prometheus read them as their image's own user), ``compose/data/<service>`` is 0750 and owned by that user, and
  the secrets stay 0600;
* run as root (sudo), render hands what it writes to the owner of the secrets.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy import render as render_mod
from ckbpool.deploy.compose import ComposeTarget, read_env_file
from ckbpool.deploy.config import load_config
from ckbpool.deploy.errors import TargetError
from ckbpool.deploy.render import DATA_DIR_MODE, DIR_MODE, FILE_MODE, Owner
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit
ROOT = os.geteuid() == 0
#: the operator of these tests when they run as root: neither root nor the usual first user (1000)
OPERATOR = Owner(4242, 4343) if ROOT else Owner(os.getuid(), os.getgid())


def cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + str(result.exception)


@pytest.fixture
def umask077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def give(path: Path, owner: Owner) -> None:
    """``chown -R``, as an operator's own ``ckbpool init`` would have left the secrets."""
    for item in [path, *path.rglob("*")]:
        os.lchown(item, owner.uid, owner.gid)


@pytest.fixture
def project(tmp_path: Path, umask077: None) -> Path:
    config = tmp_path / "ckbpool.yaml"
    cli("init", "-c", str(config), "-y", "--name", "plain", "--no-miner")
    if ROOT:
        give(tmp_path / "secrets", OPERATOR)
    return config


def render(config: Path) -> Paths:
    cli("render", "-c", str(config), "--no-diff")
    cfg = load_config(config)
    return Paths.of(config, cfg)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_env_carries_project_profiles_images_and_the_secrets_owner(project: Path) -> None:
    paths = render(project)
    env = read_env_file(paths.workspace / "compose" / ".env")
    assert env["COMPOSE_PROJECT_NAME"] == "ckbpool-plain"
    assert env["COMPOSE_PROFILES"] == "core,monitoring"  # --no-miner: no testnet profile
    assert env["CKBPOOL_IMAGE_CKB"] == "nervos/ckb:v0.210.0"
    assert (env["CKBPOOL_UID"], env["CKBPOOL_GID"]) == (str(OPERATOR.uid), str(OPERATOR.gid))
    # compose.yaml has no fallback user: without .env (or the environment) compose stops instead of guessing
    compose = (paths.workspace / "compose" / "compose.yaml").read_text()
    users = {svc.get("user") for svc in yaml.safe_load(compose)["services"].values()} - {None}
    assert users and all(u.startswith("${CKBPOOL_UID:?") for u in users), users
    # and the deploy's check is satisfied by .env alone
    ComposeTarget(load_config(project), paths).check_user()


def test_miner_profile_follows_the_config(project: Path) -> None:
    text = project.read_text().replace("enabled: false", "enabled: true", 1)
    assert "miner:\n    enabled: true" in text
    project.write_text(text)
    paths = render(project)
    assert read_env_file(paths.workspace / "compose" / ".env")["COMPOSE_PROFILES"] == "core,monitoring,testnet"


def test_secrets_owned_by_root_give_no_user_and_deploy_refuses(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_mod, "secrets_owner", lambda secrets_dir: Owner(0, 0))
    monkeypatch.delenv("CKBPOOL_UID", raising=False)
    monkeypatch.delenv("CKBPOOL_GID", raising=False)
    monkeypatch.setenv("SUDO_UID", "1001")
    monkeypatch.setenv("SUDO_GID", "1002")
    paths = render(project)
    dotenv = (paths.workspace / "compose" / ".env").read_text()
    env = read_env_file(paths.workspace / "compose" / ".env")
    assert "CKBPOOL_UID" not in env and "CKBPOOL_GID" not in env
    assert "must not run as root" in dotenv and "ckbpool render" in dotenv
    target = ComposeTarget(load_config(project), paths)
    with pytest.raises(TargetError) as refused:
        target.check_user()
    message = str(refused.value)
    assert "owned by root" in message and "must not run as root" in message
    assert f"chown -R 1001:1002 {paths.secrets_dir}" in message  # under sudo: the user who ran it
    # deploy says so before it touches the engine
    with pytest.raises(TargetError, match="owned by root"):
        target.deploy(timeout=1)


def test_uid_0_from_the_environment_is_refused(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = render(project)
    monkeypatch.setenv("CKBPOOL_UID", "0")
    with pytest.raises(TargetError, match="CKBPOOL_UID=0"):
        ComposeTarget(load_config(project), paths).check_user()


def test_modes_under_umask_077(project: Path) -> None:
    paths = render(project)
    ws = paths.workspace
    files = [p for p in ws.rglob("*") if p.is_file()]
    dirs = [p for p in ws.rglob("*") if p.is_dir()]
    assert len(files) > 20
    assert {str(p.relative_to(ws)): oct(mode(p)) for p in files if mode(p) != FILE_MODE} == {}
    data = ws / "compose" / "data"
    owned_dirs = [d for d in dirs if data not in d.parents]
    assert {str(d.relative_to(ws)): oct(mode(d)) for d in owned_dirs if mode(d) != DIR_MODE} == {}
    assert mode(ws) == DIR_MODE  # render created it
    for sub in ("pool", "redis"):
        st = os.lstat(data / sub)
        assert stat.S_IMODE(st.st_mode) == DATA_DIR_MODE
        assert (st.st_uid, st.st_gid) == (OPERATOR.uid, OPERATOR.gid)
    # every bind mount source of compose.yaml exists with the mode its container's user needs
    compose = yaml.safe_load((ws / "compose" / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("./"):
                continue
            path = ws / "compose" / source
            assert path.exists(), (name, source)
            if volume.endswith(":ro"):  # config: read by whichever user the image runs as
                expected = DIR_MODE if path.is_dir() else FILE_MODE
            else:  # data: written by CKBPOOL_UID only
                expected = DATA_DIR_MODE
            assert mode(path) == expected, (name, source, oct(mode(path)))
    # the secrets are untouched: 0600, the operator's
    for secret in paths.secrets_dir.iterdir():
        st = os.lstat(secret)
        assert stat.S_IMODE(st.st_mode) == 0o600, secret
        assert (st.st_uid, st.st_gid) == (OPERATOR.uid, OPERATOR.gid)


def test_rerender_restores_modes_of_unchanged_files(project: Path) -> None:
    paths = render(project)
    pool_toml = paths.workspace / "compose" / "pool" / "pool.toml"
    ckb_dir = paths.workspace / "compose" / "ckb"
    os.chmod(pool_toml, 0o600)
    os.chmod(ckb_dir, 0o700)
    os.chmod(paths.workspace / "compose" / "data" / "pool", 0o777)
    render(project)
    assert mode(pool_toml) == FILE_MODE
    assert mode(ckb_dir) == DIR_MODE
    assert mode(paths.workspace / "compose" / "data" / "pool") == DATA_DIR_MODE


@pytest.mark.skipif(not ROOT, reason="only root renders for another user")
def test_render_as_root_hands_the_workspace_to_the_secrets_owner(project: Path) -> None:
    paths = render(project)
    foreign = [
        str(p.relative_to(paths.workspace))
        for p in [paths.workspace, *paths.workspace.rglob("*")]
        if (os.lstat(p).st_uid, os.lstat(p).st_gid) != (OPERATOR.uid, OPERATOR.gid)
    ]
    assert foreign == []
    # data an earlier deploy left as root is handed over too
    stray = paths.workspace / "compose" / "data" / "pool" / "blocks"
    stray.mkdir()
    os.lchown(stray, 0, 0)
    os.lchown(stray.parent, 0, 0)
    render(project)
    assert os.lstat(stray).st_uid == OPERATOR.uid and os.lstat(stray.parent).st_uid == OPERATOR.uid
