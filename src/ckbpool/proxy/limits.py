"""The V1 port's abuse limits, as small pure parts: a message rate limit, the miner-id (extranonce1) space, the
per-IP connection count, and the refusal reasons the ``ckbpool_proxy_v1_refusals`` metric is labelled with.

Why these exist: the V1 port is open to the internet (ASICs cannot do Noise), and each connection can pin scarce
things -- a file descriptor and, once subscribed, one of the channel's miner ids (65,536 with the usual 4-byte
pool prefix and ``extranonce2_size = 10``). Without limits a few thousand idle sockets hold ids forever and a
single peer can stream lines as fast as the proxy parses them. The policy that uses these parts (timeouts per
phase, caps at accept, close on flood) lives in :mod:`.downstream`; the numbers are in :mod:`.config`.
"""

from __future__ import annotations

import enum
import logging
import resource
import time
from collections import deque

__all__ = [
    "FD_RESERVE",
    "ExtranonceIds",
    "PerIpCount",
    "Refusal",
    "TokenBucket",
    "connection_cap",
    "raise_nofile_limit",
]

#: descriptors kept free of V1 miners: the upstream channels, the getwork and HTTP listeners and their clients,
#: log files, the accept that is about to be refused
FD_RESERVE = 256

log = logging.getLogger(__name__)


class Refusal(enum.StrEnum):
    """Why the proxy refused or closed a V1 connection: the fixed ``reason`` label values (a peer cannot mint
    new ones)."""

    MAX_CONNECTIONS = "max_connections"  # the global cap, counted at accept
    PER_IP = "per_ip"  # max_connections_per_ip from one source address
    SUBSCRIBE_TIMEOUT = "subscribe_timeout"  # no mining.subscribe within subscribe_timeout_s of connecting
    AUTHORIZE_TIMEOUT = "authorize_timeout"  # no accepted mining.authorize within authorize_timeout_s of subscribe
    IDLE_TIMEOUT = "idle_timeout"  # authorized, then silent for idle_timeout_s
    RATE_LIMIT = "rate_limit"  # more lines than the token bucket allows
    NO_MINER_ID = "no_miner_id"  # every extranonce1 of the channel is held by a live connection
    BAD_REQUESTS = "bad_requests"  # a line over max_line_bytes, or max_bad_requests refusals in a row
    SLOW_READER = "slow_reader"  # does not read what we send (write buffer over its cap)
    NO_UPSTREAM = "no_upstream"  # the pool has been away longer than upstream_loss_grace_s: no work to give


class TokenBucket:
    """Message rate limit of one connection: ``rate`` lines per second on average, bursts up to ``burst``.

    ``take`` is called once per read with the number of complete lines in it, so the cost is one clock read
    per read, not per line."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float | None = None) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic() if now is None else now

    def take(self, count: int, now: float | None = None) -> bool:
        """Spend ``count`` tokens; False when the bucket went below zero (the caller closes the connection)."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= count
        return self.tokens >= 0


class ExtranonceIds:
    """The miner ids of one extranonce prefix (``capacity`` = 256 ** id_bytes), handed out and taken back.

    Fresh ids go first, then freed ones oldest-first: an id just given back is the last to be reused, so a share
    its previous owner still had in flight is not judged a duplicate of the new owner's. ``allocate`` returns
    None when every id is held; the caller refuses the subscribe (nothing here can fail harder than that)."""

    __slots__ = ("_free", "_next", "capacity", "in_use")

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._next = 0
        self._free: deque[int] = deque()

    def reset(self, capacity: int) -> None:
        """A new prefix: every id is free again (the connections that held the old ones have been closed)."""
        self.capacity = capacity
        self.in_use = 0
        self._next = 0
        self._free.clear()

    def allocate(self) -> int | None:
        if self._next < self.capacity:
            self._next += 1
            self.in_use += 1
            return self._next - 1
        if self._free:
            self.in_use += 1
            return self._free.popleft()
        return None

    def release(self, miner_id: int) -> None:
        """Give an id back. Ids from before a ``reset`` (a larger space) are dropped, not reused."""
        if miner_id < self._next and self.in_use > 0:
            self.in_use -= 1
            self._free.append(miner_id)

    @property
    def available(self) -> int:
        return self.capacity - self.in_use


class PerIpCount:
    """Open connections per source address, to cap what one address can hold. A farm behind one NAT shares an
    address, so the cap is large; it bounds a single host, the global cap bounds everyone."""

    __slots__ = ("_counts", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def add(self, host: str) -> bool:
        """Count a new connection from ``host``; False (not counted) when the address is at its limit."""
        count = self._counts.get(host, 0)
        if count >= self.limit:
            return False
        self._counts[host] = count + 1
        return True

    def remove(self, host: str) -> None:
        count = self._counts.get(host, 0)
        if count <= 1:
            self._counts.pop(host, None)
        else:
            self._counts[host] = count - 1

    def __getitem__(self, host: str) -> int:
        return self._counts.get(host, 0)

    def __len__(self) -> int:
        return len(self._counts)


def raise_nofile_limit(want: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want`` (never past the hard limit); return the soft limit.

    Distributions start processes with a soft limit of 1024 while the V1 port's connection cap is far higher; a
    listener out of descriptors cannot accept (asyncio backs off and retries), so the cap would be a lie. The hard
    limit is the operator's (systemd ``LimitNOFILE``, ``docker --ulimit``) and is left alone."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise RLIMIT_NOFILE to %d: %s", target, exc)
    return soft


def connection_cap(configured: int, nofile: int) -> int:
    """The V1 connection cap actually enforced: the configured one, lowered to what the descriptor limit can hold
    with :data:`FD_RESERVE` to spare. Past the descriptor limit ``accept`` itself fails (EMFILE): the listener
    backs off blindly, new miners hang in the backlog, and the upstream reconnect or an HTTP scrape fails too.
    Below it every extra connection is accepted and refused, counted as ``max_connections``."""
    return max(1, min(configured, nofile - FD_RESERVE))
