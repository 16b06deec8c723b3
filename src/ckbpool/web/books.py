"""Reading the books (Redis, written by :mod:`ckbpool.pool.accounting`) for the public page, plus the rollups
that make its questions cheap.

The books answer "how many shares" directly (``worker:``/``user:`` hashes, the ``users``/``workers`` sorted
sets by last share, the ``blocks`` list) but two of the page's questions not:

- **Which workers does this address have?** ``workers`` is one sorted set over every identity, ordered by
  time; finding one address's members is a scan of all of them (30k members at 10k addresses).
- **Hashrate over 24 h.** The per-minute ``hashrate:{minute}`` buckets expire after 2 h.

So :class:`Rollup` (run every few seconds by the web listener; one Lua script, atomic, safe from several
processes) derives, in keys of its own under ``ckbpool:web:`` and never touching the books' keys:

- ``web:m:{minute}`` hash ``{user}`` -> work, and ``web:m:{minute}:total`` (work of the whole pool), for each
  minute two or more minutes old (late shares have landed), once -- the ``:total`` key is the "rolled" mark;
  expire with the minute buckets (2 h);
- ``web:h:{hour}`` hash ``{user}`` and ``{user}.{worker}`` -> work, and ``web:h:{hour}:total``: the same
  minutes summed per hour, kept 25 h;
- ``web:workers:{user}`` sorted set ``worker`` -> last minute with work (seconds), refreshed from the current
  minutes at every run and pruned after the books' idle TTL: an address's workers in one ZRANGE.

Minutes not rolled yet (the current one and the one before) are read from ``hashrate:{minute}`` itself, so the
windows are exact to the minute. Identities: ``user`` never contains a dot (it is split at the first one, see
:mod:`ckbpool.pool.identity`), so a user field and a ``user.worker`` field cannot collide.

Cost: each run reads the newest minutes' buckets (HGETALL; one entry per identity that mined in them), each
completed minute is rolled once. At 30k identities that is a few tens of milliseconds of Redis per run
(benchmarks/bench_web.py measures the page's reads next to it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from ..payouts.pplns import as_text
from ..pool.accounting import HASHRATE_BUCKET_TTL_S, PREFIX, TRANSIENT
from ..retry import REDIS_READ, retry

#: rolled keys live under this prefix (inside the books' ``ckbpool:``)
WEB = PREFIX + "web:"
#: minutes younger than this many are not rolled (shares of a minute still arrive for a few seconds)
ROLL_DELAY_MIN = 2
HOUR_TTL_S = 25 * 3600
#: the windows the page shows, in seconds
WINDOWS_S = {"10m": 600, "1h": 3600, "24h": 86400}

# ARGV: prefix, now (s), bucket ttl, hour ttl, idle ttl, roll delay (min). Returns minutes rolled.
_ROLLUP_LUA = """
local prefix, now = ARGV[1], tonumber(ARGV[2])
local bucket_ttl, hour_ttl, idle_ttl, delay = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local web = prefix .. 'web:'
local current = math.floor(now / 60)
local rolled = 0
local seen = {}
local function split(ident)
  local dot = string.find(ident, '.', 1, true)
  if not dot then return nil, nil end
  return string.sub(ident, 1, dot - 1), string.sub(ident, dot + 1)
end
local function index(minute, data)
  for i = 1, #data, 2 do
    local user, worker = split(data[i])
    if user then
      local key = web .. 'workers:' .. user
      redis.call('ZADD', key, 'GT', minute * 60, worker)
      seen[key] = true
    end
  end
end
for minute = current - math.floor(bucket_ttl / 60) + 1, current do
  local bucket = prefix .. 'hashrate:' .. minute
  if minute > current - delay then
    index(minute, redis.call('HGETALL', bucket))
  elseif redis.call('EXISTS', web .. 'm:' .. minute .. ':total') == 0 then
    local data = redis.call('HGETALL', bucket)
    index(minute, data)
    local hour = math.floor(minute / 60)
    local mkey, hkey = web .. 'm:' .. minute, web .. 'h:' .. hour
    local per_user, total = {}, 0
    for i = 1, #data, 2 do
      local user = split(data[i])
      local work = tonumber(data[i + 1])
      if user and work then
        per_user[user] = (per_user[user] or 0) + work
        total = total + work
        redis.call('HINCRBYFLOAT', hkey, data[i], work)
      end
    end
    for user, work in pairs(per_user) do
      redis.call('HINCRBYFLOAT', mkey, user, work)
      redis.call('HINCRBYFLOAT', hkey, user, work)
    end
    redis.call('SET', mkey .. ':total', string.format('%.17g', total), 'EX', bucket_ttl)
    redis.call('INCRBYFLOAT', hkey .. ':total', total)
    if next(per_user) ~= nil then redis.call('EXPIRE', mkey, bucket_ttl) end
    redis.call('EXPIRE', hkey, hour_ttl)
    redis.call('EXPIRE', hkey .. ':total', hour_ttl)
    rolled = rolled + 1
  end
end
for key in pairs(seen) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - idle_ttl))
  redis.call('EXPIRE', key, idle_ttl)
end
return rolled
"""


# ARGV: prefix, current minute, current hour, roll delay. Returns JSON {minutes: [60], hours: [25]} of work:
# rolled minutes from their totals, the others summed from the books' buckets; hours from the rolled totals.
_POOL_LUA = """
local prefix, current, hour, delay = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local web = prefix .. 'web:'
local minutes, hours = {}, {}
for minute = current - 59, current do
  local work = 0
  if minute <= current - delay then
    work = tonumber(redis.call('GET', web .. 'm:' .. minute .. ':total') or '0') or 0
  else
    for _, v in ipairs(redis.call('HVALS', prefix .. 'hashrate:' .. minute)) do work = work + (tonumber(v) or 0) end
  end
  minutes[#minutes + 1] = work
end
for h = hour - 24, hour do hours[#hours + 1] = tonumber(redis.call('GET', web .. 'h:' .. h .. ':total') or '0') or 0 end
return cjson.encode({minutes = minutes, hours = hours})
"""

# ARGV: prefix, user, current minute, current hour, roll delay, max workers. Returns JSON {totals: the user: hash
# as [field, value, ...] (empty: the books do not know the user), minutes: [60] and
# hours: [25] of the user's rolled work, workers: [{name, books: [field, value, ...], minutes: [60], hours: [25]}]}
# (the caller adds the workers' unrolled minutes to the user's).
_ADDRESS_LUA = """
local prefix, user, current, hour = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local delay, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local web = prefix .. 'web:'
local function num(v) return tonumber(v or '0') or 0 end
local minutes, hours, workers = {}, {}, {}
for minute = current - 59, current do
  local work = 0
  if minute <= current - delay then work = num(redis.call('HGET', web .. 'm:' .. minute, user)) end
  minutes[#minutes + 1] = work
end
for h = hour - 24, hour do hours[#hours + 1] = num(redis.call('HGET', web .. 'h:' .. h, user)) end
for _, name in ipairs(redis.call('ZREVRANGE', web .. 'workers:' .. user, 0, limit - 1)) do
  local ident = user .. '.' .. name
  local wm, wh = {}, {}
  for minute = current - 59, current do
    wm[#wm + 1] = num(redis.call('HGET', prefix .. 'hashrate:' .. minute, ident))
  end
  for h = hour - 24, hour do wh[#wh + 1] = num(redis.call('HGET', web .. 'h:' .. h, ident)) end
  workers[#workers + 1] = {name = name, books = redis.call('HGETALL', prefix .. 'worker:' .. ident), minutes = wm,
    hours = wh}
end
local totals = redis.call('HGETALL', prefix .. 'user:' .. user)
return cjson.encode({totals = totals, minutes = minutes, hours = hours, workers = workers})
"""


class Rollup:
    """Runs the rollup script (see the module docstring); :meth:`run_once` is idempotent."""

    def __init__(self, client: aioredis.Redis, *, idle_ttl_s: int, clock: Any = time.time) -> None:
        self.redis = client
        self.idle_ttl_s = idle_ttl_s
        self.clock = clock
        self._script = client.register_script(_ROLLUP_LUA)

    async def run_once(self, now: float | None = None) -> int:
        """Roll what is due; returns how many minutes were rolled."""
        now = self.clock() if now is None else now
        args: list[str | int] = [
            PREFIX,
            repr(float(now)),
            HASHRATE_BUCKET_TTL_S,
            HOUR_TTL_S,
            self.idle_ttl_s,
            ROLL_DELAY_MIN,
        ]
        return int(await self._script(keys=[], args=args))


@dataclass(frozen=True)
class WorkerRow:
    name: str
    hashrate: dict[str, float]  # window -> H/s
    accepted: int
    rejected: int
    last_share: float | None


@dataclass(frozen=True)
class Rates:
    """Hashrate windows and chart series of the pool, an address or a worker (H/s)."""

    windows: dict[str, float]  # "10m" / "1h" / "24h"
    minutes: list[float]  # the last 60 minutes, oldest first (the current, partial one last)
    hours: list[float]  # the last 24 hours, oldest first (the current one over its elapsed part)


def _f(value: Any) -> float:
    return float(as_text(value)) if value is not None else 0.0


def rates_from(minute_work: list[float], hour_work: list[float], now: float) -> Rates:
    """Windows and series from work (hashes): ``minute_work`` for the 60 minutes ending with the current one,
    ``hour_work`` for the 25 hours ending with the current one, each hour holding only its *rolled* minutes
    (the current hour's unrolled minutes are taken from ``minute_work``)."""
    current = int(now // 60)
    hour = current // 60
    unrolled = sum(
        work
        for offset, work in enumerate(minute_work)
        if (m := current - 59 + offset) > current - ROLL_DELAY_MIN and m // 60 == hour
    )
    hours = list(hour_work)
    hours[-1] += unrolled
    # 24 h: the part of the oldest hour inside the window, then every later hour whole
    start = now - WINDOWS_S["24h"]
    inside = max(0.0, min(1.0, ((hour - 23) * 3600 - start) / 3600))
    day = hours[0] * inside + sum(hours[1:])
    elapsed = max(60.0, now - hour * 3600)
    return Rates(
        windows={
            "10m": sum(minute_work[-10:]) / WINDOWS_S["10m"],
            "1h": sum(minute_work) / WINDOWS_S["1h"],
            "24h": day / WINDOWS_S["24h"],
        },
        minutes=[w / 60 for w in minute_work],
        hours=[w / 3600 for w in hours[1:-1]] + [hours[-1] / elapsed],
    )


class BooksReader:
    """Every read the page makes, each a pipelined round trip or two, retried on transient errors like the
    operator's status reads (:data:`ckbpool.retry.REDIS_READ`)."""

    def __init__(self, client: aioredis.Redis, *, clock: Any = time.time) -> None:
        self.redis = client
        self.clock = clock
        self._pool_script = client.register_script(_POOL_LUA)
        self._address_script = client.register_script(_ADDRESS_LUA)

    async def _read(self, call: Any) -> Any:
        return await retry(call, on=TRANSIENT, policy=REDIS_READ)

    # -- hashrate --------------------------------------------------------------------------------------------
    async def pool_rates(self, now: float | None = None) -> Rates:
        """The whole pool: rolled minute totals, the unrolled minutes summed (in Redis) from the books' buckets."""
        now = self.clock() if now is None else now
        current = int(now // 60)
        args: list[str | int] = [PREFIX, current, current // 60, ROLL_DELAY_MIN]
        raw = await self._read(lambda: self._pool_script(keys=[], args=args))
        data = json.loads(as_text(raw))
        return rates_from([float(v) for v in data["minutes"]], [float(v) for v in data["hours"]], now)

    async def address(
        self, user: str, limit: int, now: float | None = None
    ) -> tuple[dict[str, str] | None, Rates, list[WorkerRow]]:
        """One address: its ``user:`` hash (None: the books do not know it), its rates (rolled per-user
        figures, plus its workers' unrolled minutes) and its workers (newest first, at most ``limit``) with
        counters and their own rates.

        One script call: a few hundred reads of small values are cheap inside Redis and costly as separate
        replies in Python (benchmarks/bench_web.py measured 5.6 ms of the server's CPU per call pipelined)."""
        now = self.clock() if now is None else now
        current = int(now // 60)
        args: list[str | int] = [PREFIX, user, current, current // 60, ROLL_DELAY_MIN, limit]
        raw = await self._read(lambda: self._address_script(keys=[], args=args))
        data = json.loads(as_text(raw))
        user_minutes = [float(v) for v in data["minutes"]]
        rows = []
        for worker in data["workers"] or []:
            minutes = [float(v) for v in worker["minutes"]]
            for offset, work in enumerate(minutes):
                if current - 59 + offset > current - ROLL_DELAY_MIN:
                    user_minutes[offset] += work  # not rolled into the user's figures yet
            books = dict(zip(worker["books"][::2], worker["books"][1::2], strict=True)) if worker["books"] else {}
            if not books:
                continue  # expired from the books (idle), not yet pruned from the index
            last = books.get("last_share")
            rows.append(
                WorkerRow(
                    name=worker["name"],
                    hashrate=rates_from(minutes, [float(v) for v in worker["hours"]], now).windows,
                    accepted=int(books.get("accepted", 0)),
                    rejected=int(books.get("rejected", 0)),
                    last_share=float(last) if last is not None else None,
                )
            )
        totals = dict(zip(data["totals"][::2], data["totals"][1::2], strict=True)) if data["totals"] else None
        return totals, rates_from(user_minutes, [float(v) for v in data["hours"]], now), rows

    # -- identities -------------------------------------------------------------------------------------------
    async def online(self, since: float) -> tuple[int, int]:
        """(users, workers) with an accepted share since ``since`` (the books' sorted sets by last share)."""

        async def read() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcount(f"{PREFIX}users", since, "+inf")
            pipe.zcount(f"{PREFIX}workers", since, "+inf")
            result: list[Any] = await pipe.execute()
            return result

        users, workers = await self._read(read)
        return int(users), int(workers)

    # -- blocks -----------------------------------------------------------------------------------------------
    async def blocks(self, limit: int) -> list[dict[str, Any]]:
        """The latest block outcomes, newest first (the books' ``blocks`` list, one entry per block hash)."""
        raw = await self._read(lambda: self.redis.lrange(f"{PREFIX}blocks", 0, limit - 1))
        out = []
        for item in raw:
            try:
                entry = json.loads(as_text(item))
            except ValueError:
                continue
            if isinstance(entry, dict) and "block_hash" in entry:
                out.append(entry)
        return out
