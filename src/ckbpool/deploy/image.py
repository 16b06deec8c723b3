"""The pool's container image, built by the product itself from the installed package (``ckbpool image build``).

No registry serves a ckbpool image, and a deploy must never pull one: an image named after somebody else's registry
namespace could be registered and served by a stranger, and it would run with the pool's Noise key and the Redis
password mounted. So the default name lives under ``ckbpool.invalid`` -- ``.invalid`` is reserved (RFC 2606) and
can never resolve, so even an accidental ``docker pull`` reaches nobody -- and every target builds the image
locally when it is missing (or when the installed ckbpool changed since it was built: the image carries a digest
of its build inputs as a label).

The build context is assembled from the INSTALLED package, so a wheel without a checkout builds it:

* ``context/src/ckbpool``: the package's files (sources, templates, the Eaglesong C source), without compiled
  objects, caches, or the Ansible role and Terraform modules (the image never deploys);
* ``context/pyproject.toml``: generated from the installed distribution's metadata (name, version, dependencies,
  console scripts), so it cannot drift from what was installed; ``context/setup.py``: the extension's build, the
  very file the checkout's setup.py runs (``ckbpool/image/setup.py``);
* ``context/constraints.txt``: every installed dependency (transitively) pinned to the version this controller
  runs, so the image runs the code the operator's ckbpool was tested with.

The multi-stage Dockerfile (``ckbpool/image/Dockerfile``, shipped as package data) compiles all of it with the
runtime image's own Python. BuildKit is required for the CA-bundle secret (``DOCKER_BUILDKIT=1``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from .. import __version__
from .errors import TargetError, TargetUnavailable

PACKAGE_DIR = Path(__file__).resolve().parent.parent
DOCKERFILE = PACKAGE_DIR / "image" / "Dockerfile"
SETUP_PY = PACKAGE_DIR / "image" / "setup.py"
DISTRIBUTION = "ckbpool"
#: the reserved, unresolvable registry host under which locally built images are named (never pulled)
LOCAL_REGISTRY = "ckbpool.invalid"
DEFAULT_POOL_IMAGE = f"{LOCAL_REGISTRY}/pool:{__version__}"
#: the official image whose Python the pool runs on (``images.pool_base``)
DEFAULT_POOL_BASE = "python:3.12-slim-bookworm"
LABEL_INPUTS = "io.ckbpool.build-inputs"
LABEL_VERSION = "io.ckbpool.version"
#: package subdirectories the image does not need (the deploy toolkit's role and modules)
_SKIP_DIRS = {"ansible", "terraform", "__pycache__"}
_SKIP_SUFFIXES = {".so", ".pyc", ".pyd", ".pyo"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
#: a BuildKit plain-progress step header: "#7 [builder 3/4] RUN ..."
_STEP = re.compile(r"^#\d+ \[([^\]]+)\] (.*)$")


class ImageError(TargetError):
    """An image could not be built, pulled, saved or pushed; the message names the image and the reason."""


@dataclass(frozen=True)
class BuiltImage:
    """A local image: its name (tag), its content-addressed id, and whether this call built it."""

    name: str
    id: str
    built: bool


def is_local_image(name: str) -> bool:
    """True for images the product builds itself (never pulled from anywhere)."""
    return name.startswith(LOCAL_REGISTRY + "/")


def docker_binary() -> str:
    """The docker client every ckbpool command runs: ``CKBPOOL_DOCKER`` if set, else ``docker`` on PATH.

    One choice for building, saving, pulling and composing, so that the client that built an image is the one
    that deploys it. The override exists for machines with several clients (e.g. Debian's /usr/bin/docker next
    to a newer one without the buildx plugin, which BuildKit builds then need).
    """
    explicit = os.environ.get("CKBPOOL_DOCKER")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise TargetUnavailable(f"CKBPOOL_DOCKER={explicit}: no such executable")
        return found
    found = shutil.which("docker")
    if found is None:
        raise TargetUnavailable("docker is not installed (install Docker Engine, e.g. Debian's docker.io)")
    return found


def _log_dir() -> Path:
    base = Path(os.environ.get("CKBPOOL_CACHE", Path.home() / ".cache" / "ckbpool"))
    path = base / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -------------------------------------------------------------------------------------------- context


def _requirement_name(requirement: str) -> str | None:
    match = _NAME.match(requirement)
    return match.group(1) if match else None


def _is_extra(requirement: str) -> bool:
    _, _, marker = requirement.partition(";")
    return "extra" in marker


def runtime_requirements() -> list[str]:
    """The installed ckbpool's own dependencies (Requires-Dist without the optional extras), as written."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise ImageError(
            "ckbpool is not installed as a distribution (pip install it) -- cannot read its metadata"
        ) from None
    return [r for r in requires if not _is_extra(r)]


def constraints() -> list[str]:
    """``name==version`` of every installed distribution that ckbpool's runtime dependencies pull in, walked by
    name. Markers are not evaluated: a pin of a package the image's Python does not install is harmless."""
    seen: dict[str, str] = {}
    queue = [n for r in runtime_requirements() if (n := _requirement_name(r))]
    while queue:
        name = queue.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            seen[key] = ""
            continue
        seen[key] = f"{dist.metadata['Name']}=={dist.version}"
        queue += [n for r in (dist.requires or []) if not _is_extra(r) and (n := _requirement_name(r))]
    return sorted(pin for pin in seen.values() if pin)


def _pyproject() -> str:
    dist = importlib.metadata.distribution(DISTRIBUTION)
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    doc = {
        "build-system": {"requires": ["setuptools>=69", "wheel"], "build-backend": "setuptools.build_meta"},
        "project": {
            "name": DISTRIBUTION,
            "version": dist.version,
            "requires-python": dist.metadata["Requires-Python"] or ">=3.11",
            "dependencies": runtime_requirements(),
            "scripts": scripts,
        },
        "tool": {
            "setuptools": {
                "packages": {"find": {"where": ["src"]}},
                # non-Python files the image's ckbpool reads at run time: the miners' page (ckbpool.web) and the
                # ledger's Alembic script template beside its migrations
                "package-data": {
                    DISTRIBUTION: [
                        "py.typed",
                        "templates/*.j2",
                        "monitoring/**/*",
                        "image/*",
                        "ckb/*.c",
                        "sv2/*.c",
                        "sv2/*.pyi",
                        "web/static/*",
                        "payouts/migrations/*.mako",
                    ]
                },
            }
        },
    }
    return "# generated by ckbpool.deploy.image from the installed distribution's metadata\n" + tomlkit.dumps(doc)


def _package_files() -> Iterable[tuple[Path, Path]]:
    """(source, path relative to the package) of every file the image's ckbpool needs, in a stable order."""
    for root, dirs, files in os.walk(PACKAGE_DIR, followlinks=False):
        rel_root = Path(root).relative_to(PACKAGE_DIR)
        dirs[:] = sorted(d for d in dirs if not (rel_root == Path(".") and d in _SKIP_DIRS) and d != "__pycache__")
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix in _SKIP_SUFFIXES or ".so" in path.suffixes:
                continue
            yield path, rel_root / name


def build_context(dest: Path, base: str) -> str:
    """Write the build context into ``dest`` (``dest/context`` + ``dest/Dockerfile``); return the digest of
    every input (files, base image name), which labels the image so a changed ckbpool rebuilds it."""
    if not DOCKERFILE.is_file():
        raise ImageError(f"{DOCKERFILE} is missing: this ckbpool was installed without its image/Dockerfile")
    for c_source in ("ckb/_eaglesong.c", "sv2/_chacha.c", "bus/_sharecodec.c"):
        if not (PACKAGE_DIR / c_source).is_file():
            raise ImageError(f"ckbpool/{c_source} is missing: this ckbpool was installed without its C source")
    digest = hashlib.sha256(f"base={base}\n".encode())
    ctx = dest / "context"
    pkg = ctx / "src" / DISTRIBUTION
    for source, rel in _package_files():
        target = pkg / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        target.write_bytes(data)
        digest.update(f"src/{rel.as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    generated = {
        "pyproject.toml": _pyproject(),
        # the same build definition a checkout runs (ckbpool/image/setup.py, shipped in the package)
        "setup.py": SETUP_PY.read_text(),
        "constraints.txt": "\n".join(constraints()) + "\n",
        "README.md": "ckbpool, as installed on the controller that built this image.\n",
    }
    for name, text in generated.items():
        (ctx / name).write_text(text)
        digest.update(f"{name}\0{text}".encode())
    dockerfile = DOCKERFILE.read_bytes()
    (dest / "Dockerfile").write_bytes(dockerfile)
    digest.update(b"Dockerfile\0" + dockerfile)
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------- engine


def _inspect(name: str) -> dict[str, object] | None:
    result = subprocess.run([docker_binary(), "image", "inspect", name], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return None
    try:
        found: list[dict[str, object]] = json.loads(result.stdout)
    except ValueError:
        return None
    return found[0] if found else None


def image_id(name: str) -> str | None:
    """The local image id of ``name`` (``sha256:...``), or None when the engine does not have it."""
    found = _inspect(name)
    value = found.get("Id") if found else None
    return value if isinstance(value, str) else None


def image_label(name: str, label: str) -> str | None:
    found = _inspect(name)
    config = found.get("Config") if found else None
    labels = config.get("Labels") if isinstance(config, dict) else None
    value = labels.get(label) if isinstance(labels, dict) else None
    return value if isinstance(value, str) else None


def default_ca_bundle() -> Path | None:
    """The CA bundle pip on this machine trusts, if one is set: ``$CKBPOOL_BUILD_CA_BUNDLE``, else pip's own
    setting (``$PIP_CERT``, ``cert`` in /etc/pip.conf or the user's pip.conf), else ``$SSL_CERT_FILE`` /
    ``$REQUESTS_CA_BUNDLE``. The builder's pip then trusts what the operator's pip trusts (a TLS-intercepting proxy,
    a private mirror); the bundle is public material, handed in as a BuildKit secret only so no layer keeps it."""
    candidates = [os.environ.get(var) for var in ("CKBPOOL_BUILD_CA_BUNDLE", "PIP_CERT")]
    candidates += _pip_conf_certs()
    candidates += [os.environ.get(var) for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")]
    for value in candidates:
        if value and Path(value).is_file():
            return Path(value)
    return None


def _pip_conf_certs() -> list[str]:
    """``cert`` from pip's configuration files ($PIP_CONFIG_FILE, the user's, the site-wide one)."""
    import configparser

    files = [os.environ.get("PIP_CONFIG_FILE", ""), str(Path.home() / ".config" / "pip" / "pip.conf")]
    files += [str(Path.home() / ".pip" / "pip.conf"), "/etc/pip.conf"]
    out: list[str] = []
    for name in files:
        if not name or not Path(name).is_file():
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(name)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "cert"):
                out.append(parser.get(section, "cert"))
    return out


def build_pool_image(
    name: str = DEFAULT_POOL_IMAGE,
    *,
    base: str = DEFAULT_POOL_BASE,
    ca_bundle: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout: float = 3600.0,
    force: bool = False,
) -> BuiltImage:
    """Build the pool image as ``name`` unless an image of that name was built from the same inputs already.

    ``on_line`` gets each line of BuildKit's plain progress output (the CLI shows the current step); the whole
    output goes to ``$CKBPOOL_CACHE/logs/image-build.log`` and the last lines are in the error on failure.
    """
    report = on_line or (lambda line: None)
    docker = docker_binary()
    ca = ca_bundle if ca_bundle is not None else default_ca_bundle()
    if ca is not None and not ca.is_file():
        raise ImageError(f"--ca-bundle {ca}: no such file")
    with tempfile.TemporaryDirectory(prefix="ckbpool-image-") as tmp:
        work = Path(tmp)
        digest = build_context(work, base)
        if not force and image_label(name, LABEL_INPUTS) == digest:
            found = image_id(name)
            if found is not None:
                return BuiltImage(name, found, built=False)
        iidfile = work / "image-id"
        cmd = [
            docker, "build", "--progress=plain", "--pull=false", "-t", name, "-f", str(work / "Dockerfile"),
            "--build-arg", f"BASE={base}", "--iidfile", str(iidfile),
            "--label", f"{LABEL_INPUTS}={digest}", "--label", f"{LABEL_VERSION}={__version__}",
        ]  # fmt: skip
        if ca is not None:
            cmd += ["--secret", f"id=ca_bundle,src={ca}"]
        cmd.append(str(work))
        log = _log_dir() / "image-build.log"
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        tail: list[str] = []
        with log.open("w", buffering=1) as out:  # line-buffered: the log is readable while the build runs
            try:
                proc = subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
            except OSError as exc:
                raise ImageError(f"cannot run {docker} build for {name}: {exc}") from None
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    out.write(line)
                    line = line.rstrip("\n")
                    tail = [*tail[-29:], line]
                    report(line)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise ImageError(f"building {name} took longer than {timeout:.0f}s (log {log})") from None
            finally:
                if proc.poll() is None:
                    proc.kill()
        if proc.returncode != 0:
            raise ImageError(f"building {name} failed ({_build_reason(tail)}); log {log}:\n" + "\n".join(tail[-12:]))
        built = iidfile.read_text().strip() if iidfile.exists() else image_id(name)
        if not built:
            raise ImageError(f"building {name}: the engine reported no image id (log {log})")
        return BuiltImage(name, built, built=True)


def build_step(line: str, width: int = 80) -> str | None:
    """The step a line of BuildKit's plain progress output starts (``[builder 3/4] RUN ...``), else None: what a
    progress display shows while the build runs."""
    match = _STEP.match(line)
    return f"[{match.group(1)}] {match.group(2)[:width]}" if match else None


def _build_reason(tail: list[str]) -> str:
    """The most telling line of a failed build's output: BuildKit's ``ERROR``/``error:`` line, else the last."""
    for line in reversed(tail):
        text = re.sub(r"^#\d+ [\d.]+ ", "", line).strip()
        if text.startswith(("ERROR", "error:", "failed to solve")) or "ERROR:" in text:
            return text[:300]
        if "buildx" in text:  # a client whose BuildKit builds need the missing buildx plugin
            return f"{text[:200]} (install the buildx plugin, or point CKBPOOL_DOCKER at a client that builds)"
    return (tail[-1] if tail else "no output")[:300]


def pull_image(name: str, *, service: str | None = None, timeout: float = 1800.0) -> str:
    """``docker pull`` of an official image that the engine does not have; the error names image and reason.
    Returns the image id. Never called for images the product builds (``is_local_image``)."""
    if is_local_image(name):
        raise ImageError(f"{name} is built by ckbpool (`ckbpool image build`), never pulled")
    found = image_id(name)
    if found is not None:
        return found
    who = f" for service {service}" if service else ""
    try:
        result = subprocess.run(
            [docker_binary(), "pull", "-q", name], capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ImageError(f"pulling {name}{who} took longer than {timeout:.0f}s") from None
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise ImageError(f"cannot pull {name}{who}: {reason[-1] if reason else 'docker pull failed'}")
    found = image_id(name)
    if found is None:
        raise ImageError(f"pulled {name}{who}, but the engine does not list it")
    return found


def save_image(name: str, dest: Path) -> Path:
    """``docker save`` of one image into ``dest`` (a tar archive that ``docker load`` takes on another host)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    result = subprocess.run(
        [docker_binary(), "save", "-o", str(tmp), name], capture_output=True, text=True, timeout=1800
    )
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(f"cannot save {name}: {(result.stderr or result.stdout).strip()[-300:]}")
    tmp.replace(dest)
    return dest


def push_image(name: str, repository: str, *, timeout: float = 3600.0) -> str:
    """Tag ``name`` as ``repository`` (``host[:port]/path[:tag]``; the tag defaults to the ckbpool version), push
    it, and return the pushed reference by digest (``host/path@sha256:...``), which every host then pulls:
    the digest names the bytes, so no host can end up with another build."""
    if is_local_image(repository):
        raise ImageError(f"{repository}: {LOCAL_REGISTRY} is the local-only name; push to your registry instead")
    last = repository.rsplit("/", 1)[-1]
    tagged = repository if ":" in last else f"{repository}:{__version__}"
    bare = tagged.rsplit(":", 1)[0]
    docker = docker_binary()
    if image_id(name) is None:
        raise ImageError(f"cannot push {name}: the engine does not have it (run `ckbpool image build`)")
    tag = subprocess.run([docker, "tag", name, tagged], capture_output=True, text=True, timeout=60)
    if tag.returncode != 0:
        raise ImageError(f"cannot tag {name} as {tagged}: {tag.stderr.strip()}")
    try:
        push = subprocess.run(
            [docker, "push", tagged], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise ImageError(f"pushing {tagged} took longer than {timeout:.0f}s") from None
    if push.returncode != 0:
        reason = (push.stderr or push.stdout).strip().splitlines()
        raise ImageError(f"cannot push {tagged}: {reason[-1] if reason else 'docker push failed'}")
    match = re.search(r"digest: (sha256:[0-9a-f]{64})", push.stdout + push.stderr)
    if match is None:
        raise ImageError(f"pushed {tagged}, but docker push printed no digest")
    return f"{bare}@{match.group(1)}"
