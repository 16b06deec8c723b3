"""A stratum worker process loads only what the stratum role needs (issue 19: the memory goal counts every
process of the pool; the accounting, job maker, status and web modules were ~16 MiB of each worker's RSS:
81 -> 65 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: what a worker never runs: the parent's roles and endpoints, and the libraries only they use
NOT_IN_A_WORKER = (
    "aiohttp",
    "redis",
    "ckbpool.pool.accounting",
    "ckbpool.pool.status",
    "ckbpool.pool.templates",
    "ckbpool.web.app",
)


@pytest.mark.unit
def test_a_stratum_worker_imports_none_of_the_parents_roles() -> None:
    # what run_worker imports before it starts the stratum-only Pool, in a fresh interpreter
    code = (
        "import json, sys; import ckbpool.pool.procs, ckbpool.pool.service; "
        f"print(json.dumps([m for m in {list(NOT_IN_A_WORKER)!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == [], "a worker would load these modules it never runs"
