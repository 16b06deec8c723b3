"""Share accounting in Redis: the books miners are paid from, each share counted exactly once.

What is guaranteed
------------------
Every share event that reaches this consumer is counted **exactly once** in Redis -- per (user, worker), per
user, in the per-minute hashrate buckets and in the share log -- through:

- Redis errors, timeouts, a hung or restarted Redis (with AOF, ``appendfsync always``): every Redis call has a
  socket timeout, and a failed batch is retried with backoff (:mod:`ckbpool.retry`) until it lands -- never
  skipped, never given up. Meanwhile ``/health`` turns false and ``ckbpool_accounting_lag_seconds`` grows.
- A batch written but not known to be written (the connection dropped after EXEC), a batch written twice, any
  bus redelivery (Kafka: a consumer crash after the Redis write and before the offset commit, a rebalance, a
  producer resending in-doubt records after its crash; the spool replay): each share carries a stable id
  ``(source, seq)`` (``Share.source`` = one run of one stratum server, ``Share.seq`` = its publish order), and
  the batch's write is **one Lua script**, atomic in Redis, that moves a high-water mark per
  (source, ``user.worker``) together with the counters: a share whose seq is not above its mark is a duplicate
  and changes nothing. The same batch applied twice counts once; half of a batch can never be applied (a
  script runs whole or, if the server dies mid-way, AOF loading drops the unfinished transaction).
- The Kafka offset (``manual_ack``) moves only after the batch's script returned, so a crash of this consumer
  never skips a share it had copied into memory; on restart those records come again and dedup drops the
  ones already counted.

Why per (source, user.worker) and not per source: the Kafka record key of a share is ``user.worker``, so one
such stream lives in one partition and reaches the consumers in publish order, while one source's shares are
spread over every partition. A later seq seen first would hide an earlier one only if the producer reordered a
partition, which neither aiokafka's idempotent producer nor the spool (strictly in order) does.

What is *not* guaranteed
------------------------
- Shares without an id (``source == ""``, producers from before ids) are counted, not deduplicated.
- Dedup marks expire ``dedup_ttl_s`` (7 days) after a source's last share: a redelivery older than that would
  count again (Kafka retention and spool outages are far shorter).
- Embedded mode (in-process bus): a ``kill -9`` of the pool process loses the shares still in its memory
  (taken from miners, not yet in Redis); a clean shutdown does not (see ``Pool.close``: the stratum server
  flushes first, then accounting drains, and SubmitShares.Success goes out only for shares handed to the bus).
- Redis itself must keep what it acknowledged: AOF with ``appendfsync always`` (``everysec`` can lose the last
  second on a power loss, and with it the dedup marks of that second).
- A Redis command failing at run time inside the script (a key of the wrong type, edited by hand) is not
  rolled back by Redis: the batch then fails and is retried (health false) until an operator fixes the key.
- Redis Cluster: the script builds its keys from ``ckbpool:`` itself, so it needs a single Redis (or a
  cluster slot for the whole prefix).

Keys (prefix ``ckbpool:``):
- ``worker:{user}.{worker}`` / ``user:{user}`` hashes: accepted, rejected, rejected:{reason}, difficulty (sum),
  work (hashes), last_share
- ``hashrate:{minute}`` hash: field ``{user}.{worker}`` -> expected hashes in that minute (expires after 2 h)
- ``sharelog`` stream: one entry per accepted share (user, worker, difficulty, height, ts, id), capped (MAXLEN ~)
- ``hwm:{source}`` hash: field ``{user}.{worker}`` -> highest seq counted (expires ``dedup_ttl_s`` after use)
- ``users`` / ``workers`` sets; ``blocks`` list: the latest block outcomes as JSON
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..bus.base import Subscription
from ..bus.events import BlockOutcome, Share
from ..retry import FOREVER, REDIS_READ, Backoff, retry

log = logging.getLogger(__name__)
PREFIX = "ckbpool:"
HASHRATE_BUCKET_TTL_S = 2 * 3600
DEDUP_TTL_S = 7 * 86400
REDIS_TIMEOUT_S = 5.0
#: errors a Redis call is retried on when it may only fail loudly (status reads); writes retry on anything
TRANSIENT = (
    rexc.ConnectionError,  # BusyLoadingError (a restarted Redis loading its AOF) is one
    rexc.TimeoutError,
    rexc.ReadOnlyError,
    rexc.TryAgainError,
    TimeoutError,
    OSError,
)

# ARGV: prefix, share log maxlen, dedup ttl, hashrate bucket ttl, then FIELDS values per share.
# Returns {counted, duplicates}.
_FIELDS = 11
_RECORD_LUA = """
local prefix = ARGV[1]
local maxlen = ARGV[2]
local dedup_ttl = ARGV[3]
local rate_ttl = ARGV[4]
local counted, duplicates = 0, 0
local marks, buckets = {}, {}
for i = 5, #ARGV, 11 do
  local source, seq, user, worker = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ident = user .. '.' .. worker
  local fresh = true
  if source ~= '' then
    local mark = prefix .. 'hwm:' .. source
    local last = redis.call('HGET', mark, ident)
    if last and tonumber(seq) <= tonumber(last) then
      fresh = false
    else
      redis.call('HSET', mark, ident, seq)
      marks[mark] = true
    end
  end
  if fresh then
    counted = counted + 1
    local accepted, difficulty, work = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
    local ts, minute, height, reason = ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10]
    local keys = {prefix .. 'worker:' .. ident, prefix .. 'user:' .. user}
    for _, key in ipairs(keys) do
      if accepted == '1' then
        redis.call('HINCRBY', key, 'accepted', 1)
        redis.call('HINCRBYFLOAT', key, 'difficulty', difficulty)
        redis.call('HINCRBYFLOAT', key, 'work', work)
        local previous = redis.call('HGET', key, 'last_share')
        if not previous or tonumber(previous) < tonumber(ts) then
          redis.call('HSET', key, 'last_share', ts)
        end
      else
        redis.call('HINCRBY', key, 'rejected', 1)
        redis.call('HINCRBY', key, 'rejected:' .. reason, 1)
      end
    end
    if accepted == '1' then
      local bucket = prefix .. 'hashrate:' .. minute
      redis.call('HINCRBYFLOAT', bucket, ident, work)
      buckets[bucket] = true
      redis.call('XADD', prefix .. 'sharelog', 'MAXLEN', '~', maxlen, '*', 'user', user, 'worker', worker,
        'difficulty', difficulty, 'height', height, 'ts', ts, 'id', source .. ':' .. seq)
    end
    redis.call('SADD', prefix .. 'users', user)
    redis.call('SADD', prefix .. 'workers', ident)
  else
    duplicates = duplicates + 1
  end
end
for mark in pairs(marks) do redis.call('EXPIRE', mark, dedup_ttl) end
for bucket in pairs(buckets) do redis.call('EXPIRE', bucket, rate_ttl) end
return {counted, duplicates}
"""


def share_work(share_target: int) -> float:
    """Expected hashes behind one share at this target."""
    return float((1 << 256) // max(1, share_target))


def connect_redis(url: str, password: str | None = None, *, timeout_s: float = REDIS_TIMEOUT_S) -> aioredis.Redis:
    """A client whose every call is bounded in time (a hung Redis must not stall accounting for good) and
    that does not retry by itself: retrying is ``ckbpool.retry``'s job, with one policy for the project."""
    return aioredis.from_url(
        url,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )


def _share_args(share: Share) -> list[str | int]:
    return [
        share.source,
        share.seq,
        share.user,
        share.worker,
        "1" if share.accepted else "0",
        repr(float(share.share_difficulty)),
        repr(share_work(share.share_target)) if share.accepted else "0",
        repr(float(share.timestamp)),
        int(share.timestamp // 60),
        share.height,
        share.reason or "unknown",
    ]


class ShareAccounting:
    """Writes share batches to Redis exactly once; :meth:`run` is the bus consumer (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        share_log_maxlen: int = 1_000_000,
        batch: int = 256,
        dedup_ttl_s: int = DEDUP_TTL_S,
        max_lag_s: float = 30.0,
        policy: Backoff = FOREVER,
    ) -> None:
        self.redis = client
        self.share_log_maxlen = share_log_maxlen
        self.batch = batch
        self.dedup_ttl_s = dedup_ttl_s
        self.max_lag_s = max_lag_s
        self.policy = policy
        self._script = client.register_script(_RECORD_LUA)
        self.written = 0  # shares counted (not duplicates)
        self.duplicates = 0  # shares dropped as already counted
        self.errors = 0  # failed Redis attempts (each retried)
        self.stopped = False  # run() ended (subscription over, drained, cancelled or crashed)
        self.last_write_at = time.time()
        self._pending_since: float | None = None  # oldest share timestamp of the batch being written
        self._last_lag = 0.0  # end-to-end delay of the last batch written
        self._draining = False

    # -- writes -----------------------------------------------------------------------------------
    async def apply(self, shares: Sequence[Share]) -> tuple[int, int]:
        """One attempt at one batch: one atomic script. Returns (counted, duplicates). No retry."""
        if not shares:
            return 0, 0
        args: list[str | int] = [PREFIX, self.share_log_maxlen, self.dedup_ttl_s, HASHRATE_BUCKET_TTL_S]
        for share in shares:
            args.extend(_share_args(share))
        counted, duplicates = await self._script(keys=[], args=args)
        return int(counted), int(duplicates)

    async def record(self, shares: Iterable[Share]) -> tuple[int, int]:
        """Write one batch, retrying (any error, per ``policy``: by default until it lands); idempotent."""
        batch = list(shares)
        if not batch:
            return 0, 0
        self._pending_since = min(s.timestamp for s in batch)
        counted, duplicates = await retry(lambda: self.apply(batch), on=self._failed, policy=self.policy)
        now = time.time()
        self._last_lag = max(0.0, now - self._pending_since)
        self._pending_since = None
        self.last_write_at = now
        self.written += counted
        self.duplicates += duplicates
        if duplicates:
            log.info("accounting: %d of %d shares were already counted (redelivery)", duplicates, len(batch))
        return counted, duplicates

    def _failed(self, exc: Exception) -> bool:
        """Retry hook: count and log every failed attempt; every error is retried (losing shares is worse)."""
        self.errors += 1
        level = logging.WARNING if isinstance(exc, TRANSIENT) else logging.ERROR
        log.log(level, "accounting: Redis write failed (%r); retrying with backoff", exc)
        return True

    async def record_block(self, outcome: BlockOutcome) -> None:
        entry = {
            "block_hash": outcome.block_hash.hex(),
            "height": outcome.height,
            "status": outcome.status,
            "reason": outcome.reason,
            "user": outcome.user,
            "worker": outcome.worker,
            "submitted_at": outcome.submitted_at,
        }

        async def write() -> None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.lpush(f"{PREFIX}blocks", json.dumps(entry))
            pipe.ltrim(f"{PREFIX}blocks", 0, 999)
            await pipe.execute()

        await retry(write, on=self._failed, policy=self.policy)

    # -- the consumer -----------------------------------------------------------------------------
    async def run(self, subscription: Subscription, *, poll_s: float = 0.5) -> None:
        """Consume Share events until cancelled, the subscription ends, or :meth:`drain` finds nothing left.

        Reads no further ahead than one batch: take what is queued (up to ``batch``), write it (retrying), then
        ``ack()`` -- so a Kafka offset never passes a share that is not in Redis yet. Whatever queued up during
        one write goes into the next, so batches grow exactly when the share rate needs them to."""
        self.stopped = False
        try:
            while True:
                events = await subscription.next_batch(self.batch, 0.0 if self._draining else poll_s)
                if events is None:
                    return
                shares = [e for e in events if isinstance(e, Share)]
                if shares:
                    await self.record(shares)
                if events:
                    await subscription.ack()
                elif self._draining:
                    return
        finally:
            self.stopped = True

    def drain(self) -> None:
        """Finish what is already queued, then let :meth:`run` return (shutdown, after the stratum flush)."""
        self._draining = True

    # -- health -----------------------------------------------------------------------------------
    def lag_seconds(self, now: float | None = None) -> float:
        """Age of the oldest share being written while a write is pending, else the last batch's delay."""
        now = time.time() if now is None else now
        if self._pending_since is not None:
            return max(0.0, now - self._pending_since)
        return self._last_lag

    def healthy(self) -> bool:
        return not self.stopped and self.lag_seconds() <= self.max_lag_s

    # -- reads (status, tests) --------------------------------------------------------------------
    async def _read(self, call: Any) -> Any:
        return await retry(call, on=TRANSIENT, policy=REDIS_READ)

    async def worker_stats(self, user: str, worker: str) -> dict[str, str]:
        raw = await self._read(lambda: self.redis.hgetall(f"{PREFIX}worker:{user}.{worker}"))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def user_stats(self, user: str) -> dict[str, str]:
        raw = await self._read(lambda: self.redis.hgetall(f"{PREFIX}user:{user}"))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def hashrate(self, minutes: int = 10, identity: str | None = None, now: float | None = None) -> float:
        """Hashes per second over the last ``minutes`` complete-or-current minutes."""
        now = time.time() if now is None else now
        current = int(now // 60)

        async def read() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for minute in range(current - minutes + 1, current + 1):
                key = f"{PREFIX}hashrate:{minute}"
                if identity is None:
                    pipe.hvals(key)
                else:
                    pipe.hget(key, identity)
            result: list[Any] = await pipe.execute()
            return result

        total = 0.0
        for result in await self._read(read):
            if result is None:
                continue
            values = result if isinstance(result, list) else [result]
            total += sum(float(v) for v in values)
        return total / (minutes * 60)

    async def share_log(self, count: int = 100) -> list[dict[str, str]]:
        entries = await self._read(lambda: self.redis.xrevrange(f"{PREFIX}sharelog", count=count)) or []
        return [{_s(k): _s(v) for k, v in (fields or {}).items()} for _id, fields in entries]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
