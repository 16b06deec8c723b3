"""Find or install the pinned ``ckb`` binary.

Order (architecture.md): an explicit path or ``ckb`` on PATH with the pinned version -> the cache -> the official
release archive, verified against its published SHA-256 -> ``cargo install`` from crates.io. The last step is what
machines without access to release archives (like our CI) use; it is slow, so it shows progress and caches.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import platform
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import NodeSetupError

log = logging.getLogger(__name__)

CKB_VERSION = "0.210.0"
RELEASE_BASE_URL = "https://github.com/nervosnetwork/ckb/releases/download/v{version}"
ARCHIVE_NAME = "ckb_v{version}_{triple}.tar.gz"


def cache_dir() -> Path:
    return Path(os.environ.get("CKBPOOL_CACHE", Path.home() / ".cache" / "ckbpool"))


def cached_binary(version: str = CKB_VERSION) -> Path:
    return cache_dir() / f"ckb-{version}" / "bin" / "ckb"


def binary_version(path: Path) -> str | None:
    """The version a ckb binary reports (``ckb 0.210.0 (...)``), or None if it does not run."""
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"ckb (\d+\.\d+\.\d+)", out.stdout)
    return match.group(1) if match else None


def _host_triple() -> str:
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{arch}-unknown-linux-gnu"


def download_release(
    version: str = CKB_VERSION,
    base_url: str | None = None,
    dest: Path | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the release archive, verify it against the release's checksums file, install the binary.

    The checksum is checked before anything is unpacked: a tampered or truncated archive never runs.
    """
    base = (base_url or RELEASE_BASE_URL).format(version=version).rstrip("/")
    archive = ARCHIVE_NAME.format(version=version, triple=_host_triple())
    dest = dest or cached_binary(version)
    try:
        with urllib.request.urlopen(f"{base}/checksums.txt", timeout=timeout) as resp:
            checksums = resp.read().decode()
        with urllib.request.urlopen(f"{base}/{archive}", timeout=timeout) as resp:
            payload = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise NodeSetupError(f"cannot download ckb {version} from {base}: {exc}") from exc
    expected = None
    for line in checksums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*").endswith(archive):
            expected = parts[0].lower()
    if expected is None:
        raise NodeSetupError(f"{base}/checksums.txt has no entry for {archive}")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise NodeSetupError(f"checksum mismatch for {archive}: expected {expected}, got {actual}")
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "ckb"), None)
        if member is None:
            raise NodeSetupError(f"{archive} contains no ckb binary")
        extracted = tar.extractfile(member)
        assert extracted is not None
        data = extracted.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    tmp.replace(dest)
    return dest


#: cargo profile overrides for the ckb build: no LTO, many codegen units, no debug info -- a cold build on 2 cores
#: in ~25 min instead of over an hour. scripts/build-ckb.sh (make deps) exports the same (a unit test compares).
CARGO_PROFILE: dict[str, str] = {
    "CARGO_PROFILE_RELEASE_LTO": "false",
    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "256",
    "CARGO_PROFILE_RELEASE_DEBUG": "0",
    "CARGO_PROFILE_RELEASE_INCREMENTAL": "false",
}
DEFAULT_OPT_LEVEL = "2"  # CKB_OPT_LEVEL overrides it


def cargo_install(version: str = CKB_VERSION, progress: Callable[[str], None] | None = None) -> Path:
    """Build ckb from crates.io into the cache (same settings as scripts/build-ckb.sh)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        raise NodeSetupError("ckb is not installed and cargo is missing: install Rust, or put ckb on PATH")
    root = cache_dir() / f"ckb-{version}"
    env = dict(os.environ)
    env.update(CARGO_PROFILE)
    env["CARGO_PROFILE_RELEASE_OPT_LEVEL"] = env.get("CKB_OPT_LEVEL", DEFAULT_OPT_LEVEL)
    env["CARGO_TARGET_DIR"] = str(cache_dir() / f"ckb-target-{version}")
    cmd = [cargo, "install", "ckb", "--version", version, "--locked", "--root", str(root)]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-30:], line]
        if progress is not None and line.strip().startswith(("Compiling", "Finished", "Installing")):
            progress(f"[{time.monotonic() - start:5.0f}s] {line.strip()}")
    if proc.wait() != 0:
        raise NodeSetupError("cargo install ckb failed:\n" + "\n".join(tail))
    return root / "bin" / "ckb"


def find_or_install_ckb(
    version: str = CKB_VERSION,
    explicit: Path | None = None,
    *,
    allow_download: bool = True,
    allow_build: bool = True,
    release_base_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Return a path to a ckb binary of ``version``, installing it if needed."""
    if explicit is not None:
        found = binary_version(explicit)
        if found is None:
            raise NodeSetupError(f"configured ckb binary {explicit} does not run")
        if found != version:
            raise NodeSetupError(f"configured ckb binary {explicit} is {found}, ckbpool pins {version}")
        return explicit
    on_path = shutil.which("ckb")
    if on_path and binary_version(Path(on_path)) == version:
        return Path(on_path)
    cached = cached_binary(version)
    if cached.exists() and binary_version(cached) == version:
        return cached
    if allow_download:
        try:
            if progress:
                progress(f"downloading ckb {version} release archive")
            return download_release(version, release_base_url)
        except NodeSetupError as exc:
            log.warning("release download failed (%s); falling back to cargo install", exc)
    if allow_build:
        if progress:
            progress(f"building ckb {version} from crates.io (long on the first run, cached afterwards)")
        return cargo_install(version, progress)
    raise NodeSetupError(f"ckb {version} not found on PATH or in {cached.parent}")
