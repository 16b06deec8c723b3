"""Setting up the node: CkbNode.wait_ready gives up at once, with the node's log, when the process has already
exited, and names the timeout when nothing answers; the installer and scripts/build-ckb.sh build the same ckb."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from ckbpool.ckb.node import CkbNode, NodeConfig, NodeSetupError, free_port
from ckbpool.ckb.structures import Script

pytestmark = pytest.mark.unit


def _node(tmp_path: Path) -> CkbNode:
    config = NodeConfig(data_dir=tmp_path, block_assembler_lock=Script(bytes(32), 1, b""), rpc_port=free_port())
    return CkbNode(config, binary=Path(sys.executable))  # never run: the process is set by the test


def test_a_node_that_exited_fails_fast_with_its_log(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.log_path.write_text("2026-11-26 ERROR ckb_bin: Config error: unknown field `bogus`\n")
    node.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    node.process.wait(10)
    # the exit, not the 30 s timeout, ends the wait (a timeout would say "did not answer")
    with pytest.raises(NodeSetupError, match=r"ckb exited with code 3:\n.*unknown field `bogus`"):
        asyncio.run(node.wait_ready(timeout=30))


def test_a_node_that_never_answers_times_out_naming_it(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(NodeSetupError, match=r"ckb RPC did not answer within 1s"):
            asyncio.run(node.wait_ready(timeout=1))
    finally:
        node.process.kill()
        node.process.wait(10)


def test_build_script_and_installer_build_ckb_alike() -> None:
    """scripts/build-ckb.sh (make deps) and ckbpool.ckb.install.cargo_install (first run without make deps) must
    build the same pinned ckb with the same profile, or the cache would hold two different builds."""
    import re

    from ckbpool.ckb.install import CARGO_PROFILE, CKB_VERSION, DEFAULT_OPT_LEVEL

    script = (Path(__file__).resolve().parents[2] / "scripts" / "build-ckb.sh").read_text()
    exports = dict(re.findall(r"^export (CARGO_PROFILE_RELEASE_\w+)=\"?([^\"\n]+)\"?$", script, re.M))
    assert exports.pop("CARGO_PROFILE_RELEASE_OPT_LEVEL") == "${CKB_OPT_LEVEL:-" + DEFAULT_OPT_LEVEL + "}"
    assert exports == CARGO_PROFILE
    assert f'CKB_VERSION="${{CKB_VERSION:-{CKB_VERSION}}}"' in script
