"""Bounded waiting for a condition inside an async test (the event loop keeps running while it waits)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(check: Callable[[], object], what: str, timeout: float, interval: float = 0.05) -> None:
    """Return once ``check()`` is truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(interval)
