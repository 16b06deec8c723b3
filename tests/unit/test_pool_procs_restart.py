"""The stratum worker supervisor's restart waits come from the shared retry policy (ckbpool.retry.Backoff):
a worker that keeps dying at once is started again after growing, capped waits; one that lived past
STABLE_AFTER_S starts the count again. The workers are real child processes that exit with an error."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

import pytest

from ckbpool.pool import procs
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.procs import RESTART_BACKOFF, StratumProcesses
from ckbpool.retry import Backoff

pytestmark = [pytest.mark.unit]

STABLE_S = 0.4  # STABLE_AFTER_S for the test (30 s in production)


class Supervised(StratumProcesses):
    """The real supervisor; its worker ``i``-th run is a real child that lives ``lives[i]`` s and exits with 3."""

    def __init__(self, lives: list[float]) -> None:
        super().__init__(PoolConfig(), None, 1)
        self.lives = lives
        self.runs = 0

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        life = self.lives[self.runs]
        self.runs += 1
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"import time; time.sleep({life}); raise SystemExit(3)"
        )


@dataclass
class Spy:
    """Records what the supervisor asks of the real policy; stops the supervisor after ``deaths`` restarts."""

    policy: Backoff
    supervisor: Supervised
    deaths: int
    asked: list[int] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def delay(self, failures: int) -> float:
        self.asked.append(failures)
        self.waits.append(self.policy.delay(failures))
        if len(self.asked) == self.deaths:
            self.supervisor._stopping = True
        return self.waits[-1]


async def _supervise(monkeypatch: pytest.MonkeyPatch, policy: Backoff, lives: list[float]) -> Spy:
    supervisor = Supervised(lives)
    spy = Spy(policy, supervisor, len(lives))
    monkeypatch.setattr(procs, "RESTART_BACKOFF", spy)
    monkeypatch.setattr(procs, "STABLE_AFTER_S", STABLE_S)
    try:
        await asyncio.wait_for(supervisor._keep_running(0), 60)
    finally:
        supervisor.run_dir.rmdir()
    assert supervisor.restarts == [len(lives)]
    assert supervisor.restarts_total == len(lives)
    assert supervisor.processes[0] is not None and supervisor.processes[0].returncode == 3
    return spy


async def test_quick_deaths_wait_longer_each_time_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Backoff(initial=0.01, maximum=0.05, jitter=0.0)
    started = time.monotonic()
    spy = await _supervise(monkeypatch, policy, [0.0] * 5)
    assert spy.asked == [1, 2, 3, 4, 5]
    assert spy.waits == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])
    assert time.monotonic() - started >= sum(spy.waits)  # the supervisor really waited them


async def test_a_worker_that_lived_long_starts_the_count_again(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = Backoff(initial=0.01, maximum=1.0, jitter=0.0)
    spy = await _supervise(monkeypatch, policy, [0.0, 0.0, 0.0, STABLE_S + 0.3, 0.0])
    assert spy.asked == [1, 2, 3, 1, 2]


def test_the_production_policy_restarts_promptly_and_caps_at_ten_seconds() -> None:
    assert RESTART_BACKOFF.delay(1) <= 1.0
    assert RESTART_BACKOFF.delay(20) == 10.0
