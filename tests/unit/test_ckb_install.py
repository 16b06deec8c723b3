"""The release-archive path of the ckb installer: download, verify the published SHA-256, install.

Served from a local HTTP server with a test archive (what an operator with internet gets from the release page).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ckbpool.ckb.errors import NodeSetupError
from ckbpool.ckb.install import ARCHIVE_NAME, _host_triple, binary_version, download_release, find_or_install_ckb

pytestmark = pytest.mark.unit
VERSION = "0.210.0"
FAKE_CKB = b"#!/bin/sh\necho 'ckb 0.210.0 (test archive)'\n"


def _archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"ckb_v{VERSION}_{_host_triple()}/ckb")
        info.size = len(FAKE_CKB)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(FAKE_CKB))
    return buf.getvalue()


@pytest.fixture
def release_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "release"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _publish(root: Path, archive: bytes, checksum: str | None = None) -> str:
    name = ARCHIVE_NAME.format(version=VERSION, triple=_host_triple())
    (root / name).write_bytes(archive)
    digest = checksum or hashlib.sha256(archive).hexdigest()
    (root / "checksums.txt").write_text(f"{digest}  {name}\n")
    return name


def test_verified_release_archive_is_installed(release_server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = release_server
    _publish(root, _archive())
    dest = tmp_path / "bin" / "ckb"
    installed = download_release(VERSION, url, dest)
    assert installed == dest
    assert binary_version(dest) == VERSION


def test_archive_with_wrong_checksum_is_refused_and_not_installed(
    release_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = release_server
    _publish(root, _archive(), checksum="00" * 32)
    dest = tmp_path / "bin" / "ckb"
    with pytest.raises(NodeSetupError, match="checksum mismatch"):
        download_release(VERSION, url, dest)
    assert not dest.exists()


def test_missing_checksum_entry_is_refused(release_server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = release_server
    _publish(root, _archive())
    (root / "checksums.txt").write_text("abc  some-other-file.tar.gz\n")
    with pytest.raises(NodeSetupError, match="no entry"):
        download_release(VERSION, url, tmp_path / "ckb")


def test_unreachable_release_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NodeSetupError, match="cannot download"):
        download_release(VERSION, "http://127.0.0.1:9/none", tmp_path / "ckb", timeout=2)


def test_configured_binary_of_the_wrong_version_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "ckb"
    fake.write_text("#!/bin/sh\necho 'ckb 0.100.0'\n")
    fake.chmod(0o755)
    with pytest.raises(NodeSetupError, match=r"pins 0\.210\.0"):
        find_or_install_ckb(VERSION, fake)
