"""The project's one retry helper: exponential backoff with jitter, optional attempt/time limits.

Why one helper: the pool used to carry a hand-written ``sleep; backoff *= 2`` loop per service (Kafka
reconnect, spool replay, consumer start, node RPC, tip subscription, block submit), each with its own bugs
(no jitter, so every process reconnects in lock-step after an outage; no cap on total time; no single place to
see what is being retried). Here the policy is a value (:class:`Backoff`), the looping is `stamina
<https://stamina.hynek.me>`_ (a small, well-kept wrapper around tenacity by the attrs/structlog author: async
support, jittered exponential backoff by default, retry hooks that log every scheduled retry, and a testing
switch that removes the waits), and call sites only say *what* is retried *on which errors*.

    await retry(lambda: client.call(...), on=(ConnectionError, TimeoutError), policy=REDIS, what="redis write")

    async for attempt in attempts(on=OSError, policy=FOREVER, what="kafka connect"):
        with attempt:
            await connect()

Cancellation is never retried (``CancelledError`` is not an ``Exception``), so shutdown stays prompt.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import stamina

log = logging.getLogger(__name__)
T = TypeVar("T")
#: what to retry on: exception types, or a predicate that sees each failure (and may log or count it)
Errors = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try again: waits grow ``initial * 2**n`` up to ``maximum``, plus up to ``jitter`` s at random.

    ``attempts`` / ``timeout`` bound the whole retrying (``None``: no bound; the caller then stops it by
    cancelling). ``attempt_timeout`` bounds one attempt (``None``: the call's own timeouts decide).
    """

    initial: float = 0.2
    maximum: float = 5.0
    jitter: float = 0.5
    attempts: int | None = None
    timeout: float | None = None
    attempt_timeout: float | None = None

    def bounded(self, *, attempts: int | None = None, timeout: float | None = None) -> Backoff:
        return replace(self, attempts=attempts, timeout=timeout)

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after the ``failures``-th failure in a row (1 = the first): the same formula stamina uses
        between attempts (``min(maximum, initial * 2**(failures - 1) + uniform(0, jitter))``).

        For loops that cannot be written as "retry this call" -- a supervisor restarting a child process that
        ran for a while before dying, where a long life resets the count -- so they share this policy value and
        its jitter instead of carrying their own doubling arithmetic. Like stamina, no wait at all while
        ``stamina.set_testing`` is on.
        """
        if failures < 1:
            raise ValueError(f"failures counts from 1, got {failures}")
        if stamina.is_testing():
            return 0.0
        jitter = (rng or random).uniform(0, self.jitter) if self.jitter else 0.0
        try:
            return min(self.maximum, self.initial * 2.0 ** (failures - 1) + jitter)
        except OverflowError:
            return self.maximum


#: Until it works (reconnect loops, the accounting write: giving up would lose data; the owner cancels).
FOREVER = Backoff()
#: A Redis call on a path that can answer "unavailable" instead (status reads): a few seconds at most.
REDIS_READ = Backoff(initial=0.1, maximum=1.0, jitter=0.2, attempts=4, timeout=10.0, attempt_timeout=5.0)


def attempts(*, on: Errors, policy: Backoff = FOREVER, what: str = "") -> AsyncIterator[stamina.Attempt]:
    """Attempts to run inside ``with attempt:``; an ``on`` error in the block schedules the next one.

    After the last allowed attempt the error propagates. ``what`` names the operation in the debug log. Do not
    let StopAsyncIteration out of the block (it would end the ``async for`` silently); :func:`retry` handles it.
    """
    if what:
        log.debug("retrying %s with %s", what, policy)
    return stamina.retry_context(
        on=on,
        attempts=policy.attempts,
        timeout=policy.timeout,
        wait_initial=policy.initial,
        wait_max=policy.maximum,
        wait_jitter=policy.jitter,
    ).__aiter__()


async def retry(call: Callable[[], Awaitable[T]], *, on: Errors, policy: Backoff = FOREVER, what: str = "") -> T:
    """``await call()`` until it returns, retrying on ``on`` errors per ``policy``; the last error propagates.

    With ``policy.attempt_timeout``, an attempt that takes longer fails with TimeoutError, retried only if
    ``on`` covers it (it should: a hung server is the case timeouts exist for).
    """
    try:
        async for attempt in attempts(on=on, policy=policy, what=what):
            with attempt:
                try:
                    if policy.attempt_timeout is None:
                        return await call()
                    async with asyncio.timeout(policy.attempt_timeout):
                        return await call()
                except StopAsyncIteration as exc:
                    # re-raised from the attempt iterator's __anext__ it would silently end the loop
                    raise _Ended from exc
    except _Ended:
        raise StopAsyncIteration from None
    raise AssertionError("unreachable: stamina either returns an attempt or raises")  # pragma: no cover


class _Ended(BaseException):
    """Carries a StopAsyncIteration of the retried call past the attempt iterator (never retried)."""


__all__ = ["FOREVER", "REDIS_READ", "Backoff", "attempts", "retry"]
