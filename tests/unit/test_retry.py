"""The shared retry helper (ckbpool.retry): retries the listed errors with growing waits, gives up where the
policy says, never retries other errors or cancellation, and bounds a hung attempt."""

from __future__ import annotations

import asyncio
import time

import pytest

from ckbpool.retry import Backoff, attempts, retry

pytestmark = [pytest.mark.unit]

FAST = Backoff(initial=0.01, maximum=0.04, jitter=0.0)


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.error = error
        self.calls: list[float] = []

    async def __call__(self) -> str:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise self.error(f"failure {len(self.calls)}")
        return "ok"


async def test_retries_listed_errors_until_it_works_with_growing_waits() -> None:
    flaky = Flaky(4)
    assert await retry(flaky, on=ConnectionError, policy=FAST) == "ok"
    assert len(flaky.calls) == 5
    waits = [b - a for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert waits[0] >= 0.009
    assert waits[2] >= 0.035  # 0.01, 0.02, 0.04, capped at 0.04
    assert max(waits) < 0.5


async def test_gives_up_after_the_policy_attempts_with_the_last_error() -> None:
    flaky = Flaky(10)
    with pytest.raises(ConnectionError, match="failure 3"):
        await retry(flaky, on=ConnectionError, policy=FAST.bounded(attempts=3))
    assert len(flaky.calls) == 3


async def test_other_errors_are_not_retried() -> None:
    flaky = Flaky(1, error=ValueError)
    with pytest.raises(ValueError):
        await retry(flaky, on=ConnectionError, policy=FAST)
    assert len(flaky.calls) == 1


async def test_a_hung_attempt_times_out_and_is_retried() -> None:
    calls = 0

    async def hangs_once() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(60)
        return calls

    policy = Backoff(initial=0.01, maximum=0.01, jitter=0.0, attempt_timeout=0.05)
    started = time.monotonic()
    assert await retry(hangs_once, on=(ConnectionError, TimeoutError), policy=policy) == 2
    assert time.monotonic() - started < 2


async def test_cancellation_is_never_retried() -> None:
    flaky = Flaky(1_000_000)
    task = asyncio.create_task(retry(flaky, on=ConnectionError, policy=FAST))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(flaky.calls)
    await asyncio.sleep(0.1)
    assert len(flaky.calls) == count


async def test_attempt_blocks_for_loops_that_are_not_one_call() -> None:
    seen = []
    async for attempt in attempts(on=OSError, policy=FAST, what="test"):
        with attempt:
            seen.append(attempt.num)
            if attempt.num < 3:
                raise OSError("not yet")
    assert seen == [1, 2, 3]


async def test_a_stop_async_iteration_of_the_call_propagates_untouched() -> None:
    async def ended() -> None:
        raise StopAsyncIteration

    with pytest.raises(StopAsyncIteration):
        await retry(ended, on=ConnectionError, policy=FAST)


def test_backoff_delay_is_stamina_formula_with_bounded_jitter() -> None:
    import random

    import stamina

    policy = Backoff(initial=0.5, maximum=10.0, jitter=0.25)
    rng = random.Random(7)
    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)]:
        for _ in range(50):
            assert base <= policy.delay(failures, rng) <= base + 0.25
    assert policy.delay(6, rng) == 10.0  # 16 s capped
    assert policy.delay(10_000, rng) == 10.0  # no overflow
    assert Backoff(initial=0.1, maximum=1.0, jitter=0.0).delay(2) == pytest.approx(0.2)  # no jitter: exact
    with pytest.raises(ValueError):
        policy.delay(0)
    stamina.set_testing(True)
    try:
        assert policy.delay(3) == 0.0  # the test switch removes the waits, as for retry()
    finally:
        stamina.set_testing(False)
