"""The harness's handling of stratum worker children: a pid is only ever killed while it is a child of the stratum
process that listed it (a stale ``/status`` row must not SIGKILL a pid the OS handed to something else), and the
blocks the workers found (in their own stores) are part of the audit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckbpool.bus.events import FoundBlock
from ckbpool.pool.blocks import BlockRecord, BlockStore

from .harness import Service, finder_records, live_workers, parent_pid

pytestmark = pytest.mark.unit


def test_parent_pid_reads_the_parent_of_a_live_process_and_none_for_a_gone_one() -> None:
    assert parent_pid(os.getpid()) == os.getppid()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert parent_pid(child.pid) is None  # reaped: no /proc entry (unless reused, which would not be our child)


def test_a_stratum_process_not_running_has_no_workers_to_kill(tmp_path: Path) -> None:
    service = Service("stratum-1", [sys.executable, "-c", "pass"], tmp_path / "s.log", http_port=1)
    assert live_workers(service) == ([], 0)  # never started
    service.start()
    assert service.popen is not None
    service.popen.wait(10)
    assert live_workers(service) == ([], 0)  # exited


def test_finder_records_include_the_worker_childrens_stores(tmp_path: Path) -> None:
    """With worker processes a stratum host's blocks are found and written under ``stratum-worker-<i>``."""

    def record(n: int) -> BlockRecord:
        found = FoundBlock(
            server_id="s", job_id=n, height=n, block_hash=bytes([n]) * 32, work_id=n, block_json=b"{}",
            user="u", worker="w", found_at=0.0,
        )  # fmt: skip
        return BlockRecord(found, status="accepted")

    BlockStore(tmp_path, fsync=False).save(record(1))
    BlockStore(tmp_path / "stratum-worker-0", fsync=False).save(record(2))
    BlockStore(tmp_path / "stratum-worker-1", fsync=False).save(record(3))
    assert sorted(r.found.height for r in finder_records(tmp_path)) == [1, 2, 3]
