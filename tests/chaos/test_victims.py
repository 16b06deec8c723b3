"""The worker-kill victim's safety check: a pid is only ever killed while it is a child of the stratum process
that listed it (a stale ``/status`` row must not SIGKILL a pid the OS handed to something else)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import Service, live_workers, parent_pid

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
