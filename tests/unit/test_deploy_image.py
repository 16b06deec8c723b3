"""The pool image's build context and the pure parts of ckbpool.deploy.image (the engine side runs in the e2e tests:
tests/e2e/test_compose_from_wheel.py builds the image from an installed wheel and deploys it)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

from ckbpool import __version__
from ckbpool.deploy import image
from ckbpool.deploy.config import Images

pytestmark = pytest.mark.unit


def test_default_pool_image_is_local_only_and_never_a_registry_namespace() -> None:
    name = Images().pool
    assert name == image.DEFAULT_POOL_IMAGE == f"ckbpool.invalid/pool:{__version__}"
    registry = name.split("/", 1)[0]
    assert registry.endswith(".invalid")  # RFC 2606: reserved, never resolves, nobody can serve it
    assert image.is_local_image(name)
    assert not image.is_local_image("ckbpool/pool:0.1.0") and not image.is_local_image("redis:7.4.2")


def test_context_is_the_installed_package_with_generated_build_files(tmp_path: Path) -> None:
    digest = image.build_context(tmp_path, "base:1")
    ctx = tmp_path / "context"
    pkg = ctx / "src" / "ckbpool"
    assert (pkg / "ckb" / "_eaglesong.c").is_file() and (pkg / "templates").is_dir()
    assert (pkg / "sv2" / "_chacha.c").is_file() and (pkg / "bus" / "_sharecodec.c").is_file()
    assert (pkg / "image" / "Dockerfile").read_bytes() == (tmp_path / "Dockerfile").read_bytes()
    # no compiled objects from the controller's Python, no caches, no deploy-only directories
    files = [p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".so", ".pyc")) or "__pycache__" in f]
    assert not (pkg / "ansible").exists() and not (pkg / "terraform").exists()

    project = tomllib.loads((ctx / "pyproject.toml").read_text())["project"]
    assert project["name"] == "ckbpool" and project["version"] == importlib.metadata.version("ckbpool")
    assert project["scripts"] == {"ckbpool": "ckbpool.cli:main"}
    deps = project["dependencies"]
    assert any(d.startswith("pydantic") for d in deps) and any(d.startswith("coincurve") for d in deps)
    assert not [d for d in deps if "extra" in d]  # hosts/cloud/dev extras stay out of the image
    assert not [d for d in deps if d.startswith(("ansible", "boto3", "pytest"))]
    setup_py = (ctx / "setup.py").read_text()
    assert all(c in setup_py for c in ("ckb/_eaglesong.c", "sv2/_chacha.c", "bus/_sharecodec.c"))
    assert len(digest) == 64


def test_constraints_pin_what_the_controller_runs() -> None:
    pins = dict(line.split("==") for line in image.constraints())
    for name in ("pydantic", "coincurve", "cryptography", "aiokafka"):
        assert pins[name] == importlib.metadata.version(name), name
    assert "pydantic_core" in pins or "pydantic-core" in pins  # transitive dependencies are pinned too
    assert "pytest" not in pins and "ansible-core" not in pins and "boto3" not in pins


def test_digest_is_stable_and_names_the_base(tmp_path: Path) -> None:
    first = image.build_context(tmp_path / "a", "base:1")
    assert image.build_context(tmp_path / "b", "base:1") == first
    assert image.build_context(tmp_path / "c", "base:2") != first


def test_digest_follows_the_package_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    copy = tmp_path / "pkg"
    shutil.copytree(image.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("ansible", "terraform", "__pycache__"))
    monkeypatch.setattr(image, "PACKAGE_DIR", copy)
    monkeypatch.setattr(image, "DOCKERFILE", copy / "image" / "Dockerfile")
    before = image.build_context(tmp_path / "a", "base:1")
    (copy / "pool" / "stratum.py").write_text((copy / "pool" / "stratum.py").read_text() + "\n# changed\n")
    assert image.build_context(tmp_path / "b", "base:1") != before
    (copy / "ckb" / "_eaglesong.c").unlink()
    with pytest.raises(image.ImageError, match=r"_eaglesong\.c is missing"):
        image.build_context(tmp_path / "c", "base:1")


def test_build_progress_and_failure_reason_come_from_buildkit_lines() -> None:
    assert image.build_step("#9 [builder 4/4] RUN --mount=type=secret,id=ca_bundle pip install") == (
        "[builder 4/4] RUN --mount=type=secret,id=ca_bundle pip install"
    )
    assert image.build_step("#9 0.512 Collecting pydantic") is None
    tail = [
        "#3 [internal] load metadata for ckbpool.invalid/no-such-base:1",
        "#3 ERROR: failed to do request: dial tcp: lookup ckbpool.invalid: no such host",
        "------",
        "error: failed to solve: ckbpool.invalid/no-such-base:1: failed to do request",
    ]
    assert image._build_reason(tail).startswith("error: failed to solve: ckbpool.invalid/no-such-base:1")
    assert image._build_reason(["just one line"]) == "just one line"


def test_push_refuses_the_local_only_name() -> None:
    with pytest.raises(image.ImageError, match="local-only name"):
        image.push_image("ckbpool.invalid/pool:0.1.0", "ckbpool.invalid/pool")


def test_ca_bundle_defaults_to_what_pip_trusts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    other = tmp_path / "other.pem"
    other.write_text("-----BEGIN CERTIFICATE-----\n")
    for var in ("CKBPOOL_BUILD_CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\ncert = {other}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    assert image.default_ca_bundle() == other  # pip's configuration file
    monkeypatch.setenv("PIP_CERT", str(bundle))
    assert image.default_ca_bundle() == bundle  # pip's environment wins over its files
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "missing.pem"))
    assert image.default_ca_bundle() == other  # a bundle that does not exist is skipped
    monkeypatch.setenv("CKBPOOL_BUILD_CA_BUNDLE", str(bundle))
    assert image.default_ca_bundle() == bundle


def test_docker_client_is_ckbpool_docker_when_set_else_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One client for build, save, pull and compose: CKBPOOL_DOCKER wins, PATH otherwise, clear errors for both."""
    from ckbpool.deploy.errors import TargetUnavailable
    from ckbpool.deploy.image import docker_binary

    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.delenv("CKBPOOL_DOCKER", raising=False)
    assert docker_binary() == str(fake)
    other = tmp_path / "other-docker"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv("CKBPOOL_DOCKER", str(other))
    assert docker_binary() == str(other)
    monkeypatch.setenv("CKBPOOL_DOCKER", str(tmp_path / "missing"))
    with pytest.raises(TargetUnavailable, match=r"CKBPOOL_DOCKER=.*missing: no such executable"):
        docker_binary()
    monkeypatch.delenv("CKBPOOL_DOCKER")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(TargetUnavailable, match="docker is not installed"):
        docker_binary()
