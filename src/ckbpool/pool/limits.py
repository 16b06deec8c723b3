"""Abuse limits of the Stratum V2 server that are about *who connects* rather than what a message says.

Why here and not in the state machine: these are pool policy (how much one address may cost us), decided at
``accept`` before a single byte is read — in particular before the Noise handshake, whose EC work runs on the
event loop and is the most expensive thing an unauthenticated peer can make the pool do. Everything here is
sans-IO and clock-injectable so each rule is testable on its own (tests/unit/test_pool_limits.py).

Per "IP" means per IPv4 address and per IPv6 /64 (one host usually owns a whole /64, so counting single v6
addresses would be no limit at all). A refused connection is closed at once; the reason goes to
``ckbpool_stratum_limited_total{reason=...}`` (never the address: labels stay low-cardinality).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .metrics import (
    LIMIT_IP_CHANNELS,
    LIMIT_IP_CONNECTIONS,
    LIMIT_IP_HANDSHAKE_RATE,
    LIMIT_IP_HANDSHAKES_IN_PROGRESS,
    LIMIT_MAX_CONNECTIONS,
)

__all__ = [
    "ConnectionLimiter",
    "TokenBucket",
    "ip_key",
]

# the refusal reasons admit() returns are the metric's labels
REASON_MAX_CONNECTIONS = LIMIT_MAX_CONNECTIONS
REASON_IP_CONNECTIONS = LIMIT_IP_CONNECTIONS
REASON_HANDSHAKE_RATE = LIMIT_IP_HANDSHAKE_RATE
REASON_HANDSHAKES_IN_PROGRESS = LIMIT_IP_HANDSHAKES_IN_PROGRESS
REASON_IP_CHANNELS = LIMIT_IP_CHANNELS

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens per second on average, bursts up to ``burst``; starts full."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def take(self, count: int = 1) -> bool:
        """Spend ``count`` tokens; False (and nothing spent) when there are not enough."""
        if self._refill() < count:
            return False
        self.tokens -= count
        return True

    @property
    def full(self) -> bool:
        return self._refill() >= self.burst


def ip_key(host: str) -> str:
    """The address a per-IP limit counts: the IPv4 address, or the /64 of an IPv6 one (v4-mapped v6 = v4)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an IP (a Unix socket path, a test double): count it as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class _Address:
    connections: int = 0
    handshaking: int = 0


class ConnectionLimiter:
    """Connection admission: a global cap counted from accept, and per-address caps on open connections,
    handshakes in progress and handshakes started per second (token bucket); and the per-address channel cap.

    Call :meth:`admit` when a socket is accepted (a refusal reason, or None and the connection is counted),
    :meth:`handshake_done` when its Noise handshake finished or failed, :meth:`release` when it closes.
    Rate buckets outlive the connections (else connect/close/connect would refill them) and are kept for at
    most ``max_tracked`` addresses, least recently seen dropped first.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_ip: int,
        max_handshaking_per_ip: int,
        handshake_rate_per_ip: float,
        handshake_burst_per_ip: int,
        max_channels_per_ip: int | None = None,
        max_tracked: int = 1 << 16,
        clock: Clock = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.max_handshaking_per_ip = max_handshaking_per_ip
        self.handshake_rate_per_ip = handshake_rate_per_ip
        self.handshake_burst_per_ip = handshake_burst_per_ip
        self.max_channels_per_ip = max_channels_per_ip  # None: no cap
        self.max_tracked = max_tracked
        self.clock = clock
        self.connections = 0
        self._addresses: dict[str, _Address] = {}
        # channels open per address over all its connections (its own map: a channel is forgotten while its
        # connection closes, after the connection's release)
        self._channels: dict[str, int] = {}
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, key: str) -> str | None:
        """Count a new connection from ``key`` (see :func:`ip_key`), or say why it is refused."""
        if self.connections >= self.max_connections:
            return REASON_MAX_CONNECTIONS
        state = self._addresses.get(key)
        if state is not None:
            if state.connections >= self.max_per_ip:
                return REASON_IP_CONNECTIONS
            if state.handshaking >= self.max_handshaking_per_ip:
                return REASON_HANDSHAKES_IN_PROGRESS
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.handshake_rate_per_ip, self.handshake_burst_per_ip, self.clock)
            self._buckets[key] = bucket
            self._trim()
        else:
            self._buckets.move_to_end(key)
        if not bucket.take():
            return REASON_HANDSHAKE_RATE
        if state is None:
            state = self._addresses[key] = _Address()
        state.connections += 1
        state.handshaking += 1
        self.connections += 1
        return None

    def handshake_done(self, key: str) -> None:
        """The connection's handshake finished (or failed): it no longer counts as one in progress."""
        state = self._addresses.get(key)
        if state is not None and state.handshaking > 0:
            state.handshaking -= 1

    def release(self, key: str, *, handshaking: bool) -> None:
        """An admitted connection closed (``handshaking``: before :meth:`handshake_done` was called)."""
        self.connections = max(0, self.connections - 1)
        state = self._addresses.get(key)
        if state is None:
            return
        state.connections -= 1
        if handshaking and state.handshaking > 0:
            state.handshaking -= 1
        if state.connections <= 0:
            del self._addresses[key]

    def channel_refusal(self, key: str) -> str | None:
        """Why ``key`` may not open another channel (``max_channels_per_ip`` over all its connections: without
        it one address could hold its connection cap times the per-connection channel cap), or None."""
        if self.max_channels_per_ip is not None and self._channels.get(key, 0) >= self.max_channels_per_ip:
            return REASON_IP_CHANNELS
        return None

    def channel_opened(self, key: str) -> None:
        self._channels[key] = self._channels.get(key, 0) + 1

    def channel_closed(self, key: str) -> None:
        left = self._channels.get(key, 0) - 1
        if left > 0:
            self._channels[key] = left
        else:
            self._channels.pop(key, None)

    def channels_from(self, key: str) -> int:
        return self._channels.get(key, 0)

    def open_from(self, key: str) -> int:
        state = self._addresses.get(key)
        return state.connections if state is not None else 0

    def handshaking_from(self, key: str) -> int:
        state = self._addresses.get(key)
        return state.handshaking if state is not None else 0

    @property
    def tracked(self) -> int:
        """Addresses whose handshake-rate bucket is remembered."""
        return len(self._buckets)

    def _trim(self) -> None:
        """Forget the least recently seen address that has no open connection (its bucket refills anyway;
        a connected one keeps its bucket, so the map is bounded by ``max_tracked`` + connected addresses)."""
        if len(self._buckets) <= self.max_tracked:
            return
        for key in self._buckets:
            if key not in self._addresses:
                del self._buckets[key]
                return
