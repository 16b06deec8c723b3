"""Per-client rate limit and the answer cache of the public listener.

Both are small and in memory, on purpose: the listener is one process's, and what they protect is that
process's event loop and the Redis behind it. A client is an IPv4 address or an IPv6 /64 (one host's
addresses); behind a reverse proxy, the address X-Forwarded-For names, believed only from the configured
proxies (anyone can send that header).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


def client_key(peer: str | None, forwarded_for: str | None, trusted: frozenset[str]) -> str:
    """The rate limit's key of a request: its client's IPv4 address or IPv6 /64."""
    address = peer or "unknown"
    if forwarded_for and address in trusted:
        # the right-most address the trusted proxy appended is the one it saw
        address = forwarded_for.split(",")[-1].strip() or address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per client: ``burst`` requests at once, then ``rate`` per second.

    Memory is bounded: at most ``max_clients`` buckets, the least recently used forgotten first (a forgotten
    client starts again with a full bucket, which only a flood of spoofed-source connections -- impossible
    over TCP -- could exploit)."""

    def __init__(
        self, rate: float, burst: int, *, max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.limited = 0  # requests refused

    def take(self, key: str) -> float:
        """Take one token: 0.0 if the request may go, else the seconds until a token is there (Retry-After)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        self.limited += 1
        return (1.0 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))


class AnswerCache:
    """Encoded answers by key for ``ttl_s``; concurrent misses of one key share one computation (a crowd
    arriving at once costs one read of the books). At most ``max_entries`` (the oldest dropped first)."""

    def __init__(self, ttl_s: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, int, bytes]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[tuple[int, bytes]]] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, key: str, compute: Callable[[], Awaitable[tuple[int, bytes]]]) -> tuple[int, bytes]:
        """(status, body) of ``key``: from the cache while fresh, else computed once for every waiter."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self.ttl_s:
            self.hits += 1
            return entry[1], entry[2]
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            status, body = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._pending.pop(key, None)
        future.set_result((status, body))
        if self.ttl_s > 0 and status < 500:
            self._entries[key] = (self.clock(), status, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return status, body
