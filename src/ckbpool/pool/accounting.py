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
- A batch gives the books that applying its shares one at a time, in order, gives (same counters, buckets,
  share log, marks; float sums to rounding): the consumer sums each (source, ``user.worker``)'s shares of the
  batch, and the script applies such a record whole -- a few Redis calls per identity instead of ~16 per share
  -- only when every one of its shares is new (seqs rising, the first above the mark); a record overlapping
  the mark (a partial redelivery) or repeating seqs is decided share by share in the script against a mark
  that moves as they count. The share log gets one entry per chunk of up to ``SHARE_LOG_CHUNK`` accepted shares
  (one line each, in batch order), not one per share: the per-share XADD (and its own AOF record) was most of
  Redis' CPU per share. ``tests/integration/test_accounting_batch_equivalence.py`` checks it all (the log share by
  share) with random batchings, redeliveries and overlaps.
- The common batch (each record's seqs rising, all of them new) costs Redis no per-share work: the consumer
  sends its share log already chunked -- each entry's lines, share count, work and newest share time -- plus one
  short line per rejected share, and the script only XADDs the chunks (their IDs and running sums from the log's
  newest entry and the clock) and counts the rejects. A batch the consumer cannot vouch for (a repeat inside it,
  two records on one mark) goes share by share as above; one the script finds overlapping a mark (a
  redelivery) is refused before anything is written and sent again share by share (two calls, the second
  today's). The books are byte for byte those of the share-by-share path
  (``tests/integration/test_accounting_fast_path.py`` runs the same deliveries both ways).

Why per (source, user.worker) and not per source: the Kafka record key of a share is ``user.worker``, so one
such stream lives in one partition and reaches the consumers in publish order, while one source's shares are
spread over every partition. A later seq seen first would hide an earlier one only if the producer reordered a
partition, which neither aiokafka's idempotent producer nor the spool (strictly in order) does.

What is *not* guaranteed
------------------------
- Shares without an id (``source == ""``, producers from before ids) are counted, not deduplicated.
- A dedup mark goes ``dedup_ttl_s`` (7 days) after its (source, ``user.worker``)'s last share: a redelivery
  older than that would count again (Kafka retention and spool outages are far shorter).
- Embedded mode (in-process bus): a ``kill -9`` of the pool process loses the shares still in its memory
  (taken from miners, not yet in Redis); a clean shutdown does not (see ``Pool.close``: the stratum server
  flushes first, then accounting drains, and SubmitShares.Success goes out only for shares handed to the bus).
- Redis itself must keep what it acknowledged: AOF with ``appendfsync always`` (``everysec`` can lose the last
  second on a power loss, and with it the dedup marks of that second).
- A Redis command failing at run time inside the script (a key of the wrong type, edited by hand; an OOM
  refusal when Redis reached ``maxmemory``) is not rolled back by Redis: the batch then fails and is retried
  (health false, the lag alert fires) until an operator fixes the key or gives Redis memory. With
  ``maxmemory-policy noeviction`` an OOM is refused at the script's first write, before anything changed.
- Redis Cluster: the script builds its keys from ``ckbpool:`` itself, so it needs a single Redis (or a
  cluster slot for the whole prefix).

Bounded memory (abuse: any number of identities, any share rate)
-----------------------------------------------------------------
Nothing in the books grows without bound, and none of it is evicted (``maxmemory-policy noeviction``: a
full Redis refuses the batch, which is retried while the lag alert fires -- never a silent loss):

- Identities expire when idle: ``worker:``/``user:`` hashes get ``EXPIRE idle_ttl_s`` (30 days) at each
  accepted share, and the ``users``/``workers`` sorted sets (score = last accepted share time) drop members
  older than that at each batch. A forgotten worker that comes back starts from zero counters; payouts do not
  read these counters (they are statistics), they read the share log.
- Rejected shares never create a key nor refresh one: a rejected share of a worker the books know (it had an
  accepted share within ``idle_ttl_s``) is counted on its (and its user's) hash; a rejected share of an unknown
  identity (a stream of garbage names, each share invalid) is *ignored* in Redis -- counted only in the stratum
  server's ``ckbpool_shares_total{result}`` and in :attr:`ShareAccounting.ignored` -- and leaves no dedup mark.
  So every key costs its creator at least one valid share at the difficulty floor.
- The share log is kept by the *work* PPLNS needs, not by count: :class:`ShareLogTrimmer` (every
  ``share_log_trim_interval_s``, a task of its own next to the consumer) drops the entries older than the newest
  ``share_log_keep_windows`` x N x network difficulty of work (the difficulty read from the node, the last one
  known kept while it does not answer), never younger than ``share_log_min_keep_s``; the script caps it by time
  at each batch (``share_log_keep_s``, 7 days). So a burst of shares cannot push the PPLNS window out, and a busy
  pool keeps hours, not 7 days of shares (7 days at 1,000 shares/s would be ~130 GB). The metrics
  ``ckbpool_accounting_share_log_{entries,oldest_age_seconds,work_hashes,window_ratio}`` show what it holds;
  a ratio < 1 is an incomplete window. ``share_log_maxlen`` (off by default) adds a count cap as a last resort
  (in shares, turned into entries by each batch's shares per entry: approximate, as Redis' ``MAXLEN ~`` is).
- Dedup marks are pruned per (source, ``user.worker``) once idle ``dedup_ttl_s`` (a long-running stratum server
  seeing 100k names does not keep 100k marks forever); hashrate buckets expire after 2 h; the ``blocks`` list
  keeps the latest 1,000 outcomes, one per block hash.

Keys (prefix ``ckbpool:``):
- ``worker:{user}.{worker}`` / ``user:{user}`` hashes: accepted, rejected, rejected:{reason}, difficulty (sum),
  work (hashes), last_share; expire ``idle_ttl_s`` after the last accepted share
- ``users`` / ``workers`` sorted sets: ``user`` / ``user.worker`` -> time of its last accepted share (members
  idle for ``idle_ttl_s`` removed). Books written before these were sets are converted by the script once.
- ``hashrate:{minute}`` hash: field ``{user}.{worker}`` -> expected hashes in that minute (expires after 2 h)
- ``sharelog`` stream: one entry per chunk of up to ``SHARE_LOG_CHUNK`` (1,024) accepted shares of a batch, in
  batch order: ``n`` (its shares), ``s`` (one line per share, ``user\\tworker\\tts\\tsource:seq\\twork``, work =
  expected hashes as an integer; a tab, newline or backslash in a name is escaped as ``\\t \\n \\\\``), ``work``
  (their sum, as doubles in batch order), and the log's running sums after it: ``cum`` (work: the previous
  entry's ``cum`` plus this one's ``work``, a float written with 17 significant digits),
  ``ncum`` (shares), ``ecum`` (such entries) -- only the trimmer reads those. The entry's ID is its newest share's
  time in ms as a per-share entry had it (the running maximum of the shares' times, each clamped to at most 60 s
  ahead of the consumer's clock; increasing), so ``XRANGE sharelog <from_ms> +`` reads by share time, give or take
  the shares of the one entry that straddles the bound (:func:`ckbpool.payouts.pplns.read_window` reads it share
  by share). Entries written before this format hold one share each (user, worker, ts, id, work, cum; older ones
  difficulty and height too), with the same IDs; a pool upgraded in place holds both, and every reader
  (:func:`ckbpool.payouts.pplns.entry_shares` / ``read_shares`` / ``read_window``, :meth:`ShareAccounting.share_log`,
  :class:`ShareLogTrimmer`) takes both, share by share. Trimmed by work (:class:`ShareLogTrimmer`, whole entries)
  and by time (``share_log_keep_s``, at each batch)
- ``hwm:{source}`` hash: field ``{user}.{worker}`` -> highest seq counted; ``hwm:{source}:seen`` sorted set:
  the same field -> when it was last written (the pruning index); both expire ``dedup_ttl_s`` after use
- ``blocks`` list: the latest block outcomes as JSON, newest first, one per block hash; ``blocks:index`` hash:
  block hash -> its entry (the dedup guard, see :meth:`ShareAccounting.record_block`)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc

from ..bus.base import Subscription
from ..bus.events import BlockOutcome, Share
from ..ckb.rpc import CkbRpcClient
from ..ckb.target import compact_to_target, target_to_difficulty
from ..payouts.pplns import DEFAULT_N as DEFAULT_PPLNS_N
from ..payouts.pplns import as_text, entry_fields, entry_shares
from ..retry import FOREVER, REDIS_READ, Backoff, retry
from .config import DEDUP_TTL_S, IDLE_TTL_S, SHARE_LOG_KEEP_S, RedisSettings
from .redis_conn import connect_redis as connect_redis  # moved there; the name stays importable from here

log = logging.getLogger(__name__)
PREFIX = "ckbpool:"
HASHRATE_BUCKET_TTL_S = 2 * 3600
#: found blocks kept in the ``blocks`` list (and deduplicated by hash)
BLOCKS_KEPT = 1000
REDIS_TIMEOUT_S = 5.0
#: the most shares one write takes (``RedisSettings.max_batch`` says why)
DEFAULT_BATCH: int = RedisSettings.model_fields["max_batch"].default
#: the least time between two writes' starts (``RedisSettings.write_interval_ms`` says why)
DEFAULT_WRITE_INTERVAL_S: float = RedisSettings.model_fields["write_interval_ms"].default / 1000
#: how often a consumer waiting out the write interval looks for a full batch (which does not wait)
TOP_UP_SLICE_S = 0.01
#: errors a Redis call is retried on when it may only fail loudly (status reads); writes retry on anything
TRANSIENT = (
    rexc.ConnectionError,  # BusyLoadingError (a restarted Redis loading its AOF) is one
    rexc.TimeoutError,
    rexc.ReadOnlyError,
    rexc.TryAgainError,
    TimeoutError,
    OSError,
)

#: accepted shares per share-log entry at most (one XADD each; see the module docstring's Keys). Measured with
#: ``benchmarks.bench_accounting``: Redis CPU per share falls with the chunk until the XADD is a small part of the
#: script; larger chunks only make each entry (one Redis allocation, one read by PPLNS) bigger.
SHARE_LOG_CHUNK = 1024

# ARGV: prefix, now (s), share log keep (s), share log maxlen (0: none), dedup ttl, hashrate bucket ttl, idle ttl,
# the number of identity records, the records (source, user, worker, their sums as one string), then the shares in
# one of two forms (see _batch_args): 'L' and one string of lines, one per share in batch order; or 'C', the number
# of share-log chunks and per chunk its shares, their work (%.17g), the newest share's time and the entry's text.
# Returns {counted, duplicates, ignored, oldest share log entry (ms, 0: empty)} -- or {-1, 0, 0, 0}, having
# written nothing, when chunks came and a record is not all new (the consumer then sends the lines).
_RECORD_LUA = """
local prefix, now, keep, maxlen = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local dedup_ttl, rate_ttl, idle_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local nident = tonumber(ARGV[8])
local users, workers, sharelog = prefix .. 'users', prefix .. 'workers', prefix .. 'sharelog'
local counted, duplicates, ignored = 0, 0, 0
local newest = redis.call('XREVRANGE', sharelog, '+', '-', 'COUNT', 1)
-- the log's running sums, carried on by each entry: cum (work, a double grown by each entry's work: the trimmer's
-- position need not be exact), ncum (shares) and ecum (batched entries) -- the trimmer's figures; they start again
-- at 0 on an empty log or one whose newest entry predates them
local last_ms, cum, ncum, ecum = 0, 0, 0, 0
if #newest > 0 then
  last_ms = tonumber(string.match(newest[1][1], '^(%d+)'))
  local f = newest[1][2]
  for j = 1, #f - 1, 2 do
    local name = f[j]
    if name == 'cum' then cum = tonumber(f[j + 1]) or 0
    elseif name == 'ncum' then ncum = tonumber(f[j + 1]) or 0
    elseif name == 'ecum' then ecum = tonumber(f[j + 1]) or 0 end
  end
end
-- 1. identity records (one per (source, user, worker) of the batch): read each high-water mark once. A record is
-- "fast" when every one of its shares is new: its seqs rise (checked by the consumer) and the first is above the
-- mark; then the consumer's sums are applied as they are. Otherwise (a redelivery overlapping the mark, repeats
-- inside the batch) its shares are decided one by one below, against a mark that moves as they are counted --
-- exactly what applying the shares one at a time does -- and summed here instead.
local src, user_of, worker_of, ident_of, wkey_of, ukey_of, mark_of = {}, {}, {}, {}, {}, {}, {}
local fast, sums, marks, marks_s, wanted = {}, {}, {}, {}, {}
local i = 9
for k = 1, nident do
  local source, user, worker = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ident = user .. '.' .. worker
  src[k], user_of[k], worker_of[k], ident_of[k] = source, user, worker, ident
  wkey_of[k], ukey_of[k] = prefix .. 'worker:' .. ident, prefix .. 'user:' .. user
  -- "first_seq monotone n difficulty work last_ts last_accepted_seq('-': none)[ minute work]...": the consumer's sums
  local first, monotone, n, difficulty, work, ts, last_seq, minutes =
    string.match(ARGV[i + 3], '^(%-?%d+) (%d) (%d+) (%S+) (%S+) (%S+) (%S+)(.*)$')
  sums[k] = {first = tonumber(first), monotone = monotone == '1', n = tonumber(n), difficulty = difficulty,
    work = work, ts_s = ts, last_seq = last_seq, minutes = minutes}
  if source ~= '' then
    local mark = prefix .. 'hwm:' .. source
    mark_of[k] = mark
    if not marks[mark] then marks[mark], marks_s[mark], wanted[mark] = {}, {}, {} end
    if marks[mark][ident] == nil then
      marks[mark][ident] = false
      wanted[mark][#wanted[mark] + 1] = ident
    end
  end
  i = i + 4
end
-- each record's parts of a share-log line ("user\\tworker\\tts\\tsource:seq\\twork"), built at its first logged
-- share; a tab, newline or backslash in a name (parse_identity lets none through) is escaped as \\t \\n \\\\
local function esc(v)
  if not string.find(v, '[\\t\\n\\\\]') then return v end
  return (string.gsub(v, '[\\t\\n\\\\]', {['\\t'] = '\\\\t', ['\\n'] = '\\\\n', ['\\\\'] = '\\\\\\\\'}))
end
local logp, logm = {}, {}
-- the marks: one HMGET per source (in chunks: Lua's unpack has a limit)
for mark, fields in pairs(wanted) do
  local m = marks[mark]
  for c = 1, #fields, 1000 do
    local chunk = {}
    for f = c, math.min(c + 999, #fields) do chunk[#chunk + 1] = fields[f] end
    local values = redis.call('HMGET', mark, unpack(chunk))
    for f = 1, #chunk do m[chunk[f]] = tonumber(values[f]) or false end
  end
end
for k = 1, nident do
  local mark = mark_of[k]
  if mark then
    local last = marks[mark][ident_of[k]]
    fast[k] = sums[k].monotone and (last == false or sums[k].first > last)
  else
    fast[k] = true
  end
end
-- the shares came as share-log chunks and rejected shares (the consumer saw each record's seqs rising): valid only
-- if every record is all new -- else nothing is written and the consumer sends the lines instead
local chunked = ARGV[i] == 'C'
if chunked then
  for k = 1, nident do
    if not fast[k] then return {-1, 0, 0, 0} end
  end
end
-- once, on books written before v2 of this script: the users/workers SETs become sorted sets (by last share),
-- and the hashes they name, which had no TTL, get one (as if their last share were now)
for _, legacy in ipairs({{users, 'user:'}, {workers, 'worker:'}}) do
  if redis.call('TYPE', legacy[1]).ok == 'set' then
    local members = redis.call('SMEMBERS', legacy[1])
    redis.call('DEL', legacy[1])
    for i = 1, #members, 500 do
      local args = {}
      for j = i, math.min(i + 499, #members) do
        args[#args + 1] = now
        args[#args + 1] = members[j]
        redis.call('EXPIRE', prefix .. legacy[2] .. members[j], idle_ttl, 'NX')
      end
      redis.call('ZADD', legacy[1], unpack(args))
    end
  end
end
-- 2. the shares, in batch order: dedup (slow records), the share log, rejected shares
local exists = {}
local function known(key)
  local v = exists[key]
  if v == nil then v = redis.call('EXISTS', key) == 1; exists[key] = v end
  return v
end
local rejected, slow, counted_seq = {}, {}, {}
local function reject(key, reason)
  local r = rejected[key]
  if not r then r = {n = 0, reasons = {}}; rejected[key] = r end
  r.n = r.n + 1
  r.reasons[reason] = (r.reasons[reason] or 0) + 1
end
local clamp = math.floor(now * 1000) + 60000
-- the share log: one entry per chunk of up to @CHUNK@ accepted shares, in batch order (one XADD and one AOF record
-- per chunk, not per share: the per-share XADD was most of this script's cost). Its ID is the chunk's newest
-- share's time as the per-share entries had it: ms, never before the last entry, never past the consumer's clock
-- + 60 s (so one stratum host with a clock in the future cannot hold the log's trimming back)
-- cum grows by each entry's work (a double summed share by share in batch order) -- the same number whether the
-- script or the consumer summed the chunk
local entries, logged = 0, 0
local function xadd(n, s, work)
  cum, ncum, ecum, entries, logged = cum + work, ncum + n, ecum + 1, entries + 1, logged + n
  redis.call('XADD', sharelog, string.format('%.0f', last_ms) .. '-*', 'n', n, 's', s,
    'work', string.format('%.17g', work), 'cum', string.format('%.17g', cum), 'ncum', ncum, 'ecum', ecum)
end
if chunked then
  -- the fast path: every share is new, so the log is every accepted share in batch order, chunked and written
  -- out by the consumer exactly as the loop below would (tests/integration/test_accounting_fast_path.py compares
  -- the two); only what needs the books is done here: the entry's ID from the last one and the clock (the clamp
  -- is monotone, so the chunk's newest share decides it), the running sums
  local j = i + 2
  for _ = 1, tonumber(ARGV[i + 1]) do
    local n = tonumber(ARGV[j])
    last_ms = math.max(last_ms, math.min(math.floor(tonumber(ARGV[j + 2]) * 1000), clamp))
    xadd(n, ARGV[j + 3], tonumber(ARGV[j + 1]))
    counted = counted + n
    j = j + 4
  end
  for k = 1, nident do
    if sums[k].last_seq ~= '-' then counted_seq[k] = sums[k].last_seq end
  end
  -- then the rejected shares, in batch order, as below; "k\\tseq\\treason\\tWU\\n", W (U): an accepted share of
  -- this user.worker (user) came earlier in the batch -- the loop below knows that by its exists table
  for k, seq, reason, w_seen, u_seen in string.gmatch(ARGV[j], '(%d+)\\t(%-?%d+)\\t([^\\t\\n]*)\\t(%d)(%d)\\n') do
    k = tonumber(k)
    if w_seen == '1' or known(wkey_of[k]) then
      reject(wkey_of[k], reason)
      if u_seen == '1' or known(ukey_of[k]) then reject(ukey_of[k], reason) end
      counted = counted + 1
      local c = counted_seq[k]
      if not c or tonumber(seq) > tonumber(c) then counted_seq[k] = seq end  -- seqs rise: the later share's
    else
      ignored = ignored + 1
    end
  end
else
  local parts, chunk_n, chunk_work = {}, 0, 0
  local function flush()
    if chunk_n == 0 then return end
    parts[#parts] = nil  -- the last line's newline
    xadd(chunk_n, table.concat(parts), chunk_work)
    parts, chunk_n, chunk_work = {}, 0, 0
  end
  -- one line per share: "k\\tseq\\treason ('' = accepted)\\tdifficulty\\twork\\tts\\n"
  local field = '([^\\t\\n]*)'
  local line = '(%d+)\\t(%-?%d+)' .. string.rep('\\t' .. field, 4) .. '\\n'
  for k, seq, reason, difficulty, work, ts in string.gmatch(ARGV[i + 1], line) do
    k = tonumber(k)
    local is_fast = fast[k]
    local fresh = true
    if not is_fast then
      local last = marks[mark_of[k]][ident_of[k]]
      if last and tonumber(seq) <= last then fresh = false end
    end
    if not fresh then
      duplicates = duplicates + 1
    elseif reason == '' then
      local t = tonumber(ts)
      last_ms = math.max(last_ms, math.min(math.floor(t * 1000), clamp))
      local w = tonumber(work) or 0
      chunk_work, chunk_n = chunk_work + w, chunk_n + 1
      -- the share's line: what PPLNS reads (user, ts, id, work) and the worker
      if not logp[k] then
        logp[k], logm[k] = esc(user_of[k]) .. '\\t' .. esc(worker_of[k]) .. '\\t', '\\t' .. esc(src[k]) .. ':'
      end
      local p = #parts
      parts[p + 1], parts[p + 2], parts[p + 3], parts[p + 4], parts[p + 5], parts[p + 6], parts[p + 7] =
        logp[k], ts, logm[k], seq, '\\t', work, '\\n'
      if chunk_n >= @CHUNK@ then flush() end
      exists[wkey_of[k]], exists[ukey_of[k]] = true, true
      counted = counted + 1
      counted_seq[k] = seq
      if not is_fast then
        marks[mark_of[k]][ident_of[k]], marks_s[mark_of[k]][ident_of[k]] = tonumber(seq), seq
        local a = slow[k]
        if not a then a = {n = 0, difficulty = 0, work = 0, ts = -1, ts_s = '0', buckets = {}}; slow[k] = a end
        local w = tonumber(work) or 0
        a.n, a.difficulty, a.work = a.n + 1, a.difficulty + tonumber(difficulty), a.work + w
        if t > a.ts then a.ts, a.ts_s = t, ts end
        local minute = string.format('%.0f', math.floor(t / 60))
        a.buckets[minute] = (a.buckets[minute] or 0) + w
      end
    elseif known(wkey_of[k]) then
      -- a rejected share of a worker the books know (accepted a share within the idle TTL): counted there,
      -- without refreshing its TTL -- rejected shares alone never keep a key alive or create one
      reject(wkey_of[k], reason)
      if known(ukey_of[k]) then reject(ukey_of[k], reason) end
      counted = counted + 1
      counted_seq[k] = seq
      if not is_fast then
        marks[mark_of[k]][ident_of[k]], marks_s[mark_of[k]][ident_of[k]] = tonumber(seq), seq
      end
    else
      ignored = ignored + 1
    end
  end
  flush()
end
-- 3. the sums: per worker (one record's, or its shares' added up above), per user (its records' added up here)
local live, buckets, seen, last_user, last_ident, per_user = {}, {}, {}, {}, {}, {}
local function add_accepted(key, n, difficulty, work, ts, ts_s)
  redis.call('HINCRBY', key, 'accepted', n)
  redis.call('HINCRBYFLOAT', key, 'difficulty', difficulty)
  redis.call('HINCRBYFLOAT', key, 'work', work)
  local previous = redis.call('HGET', key, 'last_share')
  if not previous or tonumber(previous) < ts then redis.call('HSET', key, 'last_share', ts_s) end
  live[key] = true
end
for k = 1, nident do
  local n, difficulty, work, ts, ts_s = 0, '0', '0', -1, '0'
  local ident = ident_of[k]
  if fast[k] then
    local a = sums[k]
    n, difficulty, work, ts_s = a.n, a.difficulty, a.work, a.ts_s
    ts = tonumber(ts_s)
    for minute, w in string.gmatch(a.minutes, ' (%d+) (%d+)') do
      local bucket = prefix .. 'hashrate:' .. minute
      redis.call('HINCRBYFLOAT', bucket, ident, w)
      buckets[bucket] = true
    end
  elseif slow[k] then
    local a = slow[k]
    n, difficulty, work, ts, ts_s = a.n, string.format('%.17g', a.difficulty), string.format('%.17g', a.work), a.ts,
      a.ts_s
    for minute, w in pairs(a.buckets) do
      local bucket = prefix .. 'hashrate:' .. minute
      redis.call('HINCRBYFLOAT', bucket, ident, string.format('%.17g', w))
      buckets[bucket] = true
    end
  end
  if n > 0 then
    add_accepted(wkey_of[k], n, difficulty, work, ts, ts_s)
    local ukey = ukey_of[k]
    local u = per_user[ukey]
    if not u then u = {n = 0, difficulty = 0, work = 0, ts = -1, ts_s = '0'}; per_user[ukey] = u end
    u.n, u.difficulty, u.work = u.n + n, u.difficulty + tonumber(difficulty), u.work + tonumber(work)
    if ts > u.ts then u.ts, u.ts_s = ts, ts_s end
    local user = user_of[k]
    if (last_user[user] or -1) < ts then last_user[user] = ts end
    if (last_ident[ident] or -1) < ts then last_ident[ident] = ts end
  end
  local mark = mark_of[k]
  if mark and counted_seq[k] then
    -- the highest seq counted (a fast record's last share; a slow one's moving mark)
    seen[mark] = seen[mark] or {}
    seen[mark][ident] = fast[k] and counted_seq[k] or marks_s[mark][ident]
  end
end
for ukey, u in pairs(per_user) do
  add_accepted(ukey, u.n, string.format('%.17g', u.difficulty), string.format('%.17g', u.work), u.ts, u.ts_s)
end
for key, r in pairs(rejected) do
  redis.call('HINCRBY', key, 'rejected', r.n)
  for reason, c in pairs(r.reasons) do redis.call('HINCRBY', key, 'rejected:' .. reason, c) end
end
-- one ZADD per distinct member (a batch is mostly a few busy workers)
local function zadd_all(key, scores, flag)
  local args = {}
  for member, score in pairs(scores) do
    args[#args + 1] = score
    args[#args + 1] = member
    if #args >= 1000 then redis.call('ZADD', key, flag, unpack(args)); args = {} end
  end
  if #args > 0 then redis.call('ZADD', key, flag, unpack(args)) end
end
zadd_all(users, last_user, 'GT')
zadd_all(workers, last_ident, 'GT')
for mark, idents in pairs(seen) do
  local scores, args = {}, {}
  for ident, seq in pairs(idents) do
    scores[ident] = now
    args[#args + 1] = ident
    args[#args + 1] = seq
    if #args >= 1000 then redis.call('HSET', mark, unpack(args)); args = {} end
  end
  if #args > 0 then redis.call('HSET', mark, unpack(args)) end
  zadd_all(mark .. ':seen', scores, 'CH')
  -- marks of idents silent for dedup_ttl go (a bounded number per batch), then the whole source when it stops
  local stale = redis.call('ZRANGEBYSCORE', mark .. ':seen', '-inf', now - dedup_ttl, 'LIMIT', 0, 1000)
  if #stale > 0 then
    redis.call('HDEL', mark, unpack(stale))
    redis.call('ZREM', mark .. ':seen', unpack(stale))
  end
  redis.call('EXPIRE', mark, dedup_ttl)
  redis.call('EXPIRE', mark .. ':seen', dedup_ttl)
end
for bucket in pairs(buckets) do redis.call('EXPIRE', bucket, rate_ttl) end
for key in pairs(live) do redis.call('EXPIRE', key, idle_ttl) end
redis.call('ZREMRANGEBYSCORE', users, '-inf', '(' .. (now - idle_ttl))
redis.call('ZREMRANGEBYSCORE', workers, '-inf', '(' .. (now - idle_ttl))
redis.call('XTRIM', sharelog, 'MINID', string.format('%.0f', math.max(0, now - keep) * 1000))
-- the count cap is in shares; the stream's length is in entries: by this batch's shares per entry (about)
if maxlen > 0 and entries > 0 then
  redis.call('XTRIM', sharelog, 'MAXLEN', '~', math.max(1, math.ceil(maxlen * entries / logged)))
end
local oldest = redis.call('XRANGE', sharelog, '-', '+', 'COUNT', 1)
local oldest_ms = 0
if #oldest > 0 then oldest_ms = tonumber(string.match(oldest[1][1], '^(%d+)')) end
return {counted, duplicates, ignored, oldest_ms}
""".replace("@CHUNK@", str(SHARE_LOG_CHUNK))


# ARGV: prefix, block hash (hex), status, entry JSON, how many to keep. Returns 1 if listed or updated, else 0.
_BLOCK_LUA = """
local blocks, index = ARGV[1] .. 'blocks', ARGV[1] .. 'blocks:index'
local hash, status, entry, keep = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('EXISTS', index) == 0 then
  -- books from before the index: index what the list holds (at most keep entries)
  for _, old in ipairs(redis.call('LRANGE', blocks, 0, -1)) do
    local ok, decoded = pcall(cjson.decode, old)
    if ok and type(decoded) == 'table' and decoded.block_hash then
      redis.call('HSET', index, decoded.block_hash, old)
    end
  end
end
local listed = redis.call('HGET', index, hash)
if listed then
  local ok, decoded = pcall(cjson.decode, listed)
  local was = ok and type(decoded) == 'table' and decoded.status or ''
  if not (was == 'pending' and status ~= 'pending') then return 0 end
  redis.call('LREM', blocks, 1, listed)  -- a final outcome replaces its pending one
end
redis.call('HSET', index, hash, entry)
redis.call('LPUSH', blocks, entry)
for _, old in ipairs(redis.call('LRANGE', blocks, keep, -1)) do
  local ok, decoded = pcall(cjson.decode, old)
  if ok and type(decoded) == 'table' and decoded.block_hash then redis.call('HDEL', index, decoded.block_hash) end
end
redis.call('LTRIM', blocks, 0, keep - 1)
return 1
"""


def share_work(share_target: int) -> float:
    """Expected hashes behind one share at this target."""
    return float(share_work_int(share_target))


def share_work_int(share_target: int) -> int:
    """Expected hashes behind one share at this target, exactly (the share log's ``work`` field)."""
    return (1 << 256) // max(1, share_target)


class _Identity:
    """What the consumer sums for one (source, user, worker) of a batch (see :func:`_batch_args`)."""

    __slots__ = ("buckets", "difficulty", "first_seq", "index", "last_accepted", "last_seq", "log_mid", "log_prefix",
                 "monotone", "n", "source", "ts", "ts_s", "user", "work", "worker")  # fmt: skip

    def __init__(self, index: int, share: Share) -> None:
        self.index = index
        self.source, self.user, self.worker = share.source, share.user, share.worker
        # its share-log line's parts around the time and the seq: "user\tworker\t" ts "\tsource:" seq "\twork"
        self.log_prefix = f"{_escape(share.user)}\t{_escape(share.worker)}\t"
        self.log_mid = f"\t{_escape(share.source)}:"
        self.first_seq = self.last_seq = share.seq
        self.last_accepted: int | None = None  # the seq of its last accepted share
        self.monotone = True
        self.n = 0
        self.difficulty = 0.0
        self.work = 0
        self.ts = -1.0
        self.ts_s = "0"
        self.buckets: dict[int, int] = {}

    def args(self) -> list[str | int]:
        """source, user, worker (arguments of their own: any characters), then the numbers in one string."""
        sums = (
            f"{self.first_seq} {int(self.monotone)} {self.n} {self.difficulty!r} {self.work} {self.ts_s} "
            f"{'-' if self.last_accepted is None else self.last_accepted}"
        )
        minutes = "".join(f" {minute} {work}" for minute, work in self.buckets.items())
        return [self.source, self.user, self.worker, sums + minutes]


def _escape(name: str) -> str:
    """A name as a share-log line carries it: tab, newline and backslash escaped (as the script's ``esc``)."""
    if "\\" in name or "\t" in name or "\n" in name:
        return name.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return name


def _batch_args(shares: Sequence[Share], chunks: bool = True) -> list[str | int]:
    """The script's arguments after its header: the number of identity records, the records, then the shares.

    The consumer does the per-share arithmetic the script would otherwise do with one Redis call each: per
    (source, user, worker) it sums the accepted shares' count, difficulty and work, their latest time and the work
    of each hashrate minute, and checks that the seqs rise. The script applies such a record as a whole when all
    of its shares are new (the first seq above the identity's high-water mark), else decides its shares one by
    one (a redelivery overlapping the mark). A record's numbers are one string: packing ~60k separate arguments
    per batch cost the consumer more than everything else it does (redis-py encodes each argument in Python).

    The shares go along in one of two forms. A batch whose records' seqs all rise (and ``chunks``) goes as
    ``C``: its share log, built here -- per chunk of ``SHARE_LOG_CHUNK`` accepted shares in batch order the
    entry's shares, its work (summed share by share as doubles, as the script does, written ``%.17g``), its newest
    share's time and its text (``s``, the lines the script would build) -- then its rejected shares, one line each
    (``k seq reason WU``: W, U = an accepted share of the same ``user.worker``, user came earlier in the batch).
    The script does no per-accepted-share work for it (issue 19: the gmatch and the line building were most of
    Redis' CPU per share) if every record is all new, and refuses it unwritten otherwise (a redelivery: ``-1``).
    Any other batch, or a refused one, goes as ``L``: one line per share in batch order, ``k seq reason
    difficulty work ts`` (``k`` = its record), for its share-log line (accepted), its reason (rejected) and the
    one-by-one decisions. The lines thus go once per script call, never twice.

    The minute of a share is ``floor(ts / 60)`` in IEEE doubles on both sides, so a record summed here and one
    summed in the script put a share in the same minute."""
    records: dict[tuple[str, str, str], _Identity] = {}
    order: list[_Identity] = []
    lines: list[str] = []
    line = lines.append
    rejects: list[str] = []
    # the records by user.worker and by user (the keys a rejected share counts on), for the C form's W and U
    by_worker: dict[str, list[_Identity]] = {}
    by_user: dict[str, list[_Identity]] = {}
    chunk_args: list[str | int] = []
    chunk_work = 0.0
    newest, newest_s = -math.inf, repr(-math.inf)
    # per distinct (target, difficulty): the work and the line's middle "difficulty\twork\t", the work as a
    # double and a log line's tail "\twork" -- a batch has a few of each, and a float's repr and a 256-bit
    # division per share were most of this function's cost (issue 19)
    credited: dict[tuple[int, float], tuple[int, float, str, float, str]] = {}
    floor = math.floor
    for share in shares:
        (_server, _channel, user, worker, _job, _height, _nonce, target, difficulty, accepted, reason, _block, _hash,
         timestamp, source, seq) = share  # fmt: skip
        key = (source, user, worker)
        ident = records.get(key)
        if ident is None:
            ident = records[key] = _Identity(len(order) + 1, share)
            order.append(ident)
            by_worker.setdefault(f"{user}.{worker}", []).append(ident)
            by_user.setdefault(user, []).append(ident)
        elif seq <= ident.last_seq:
            ident.monotone = False  # a repeat inside the batch: the script decides these shares one by one
        else:
            ident.last_seq = seq
        if accepted:
            known = credited.get((target, difficulty))
            if known is None:
                d = float(difficulty)
                w = share_work_int(target)
                known = credited[(target, difficulty)] = (w, d, f"{d!r}\t{w}\t", float(w), f"\t{w}")
            work, d, middle, work_f, tail = known
            ts = float(timestamp)
            ts_s = repr(ts)
            ident.n += 1
            ident.last_accepted = seq
            ident.difficulty += d
            ident.work += work
            if ts > ident.ts:
                ident.ts, ident.ts_s = ts, ts_s
            minute = floor(ts / 60)
            buckets = ident.buckets
            buckets[minute] = buckets.get(minute, 0) + work
            if chunks:
                line(f"{ident.log_prefix}{ts_s}{ident.log_mid}{seq}{tail}")
                chunk_work += work_f
                if ts > newest:  # the script's clamp is monotone: the chunk's newest share gives its ID
                    newest, newest_s = ts, ts_s
                if len(lines) == SHARE_LOG_CHUNK:
                    chunk_args += [len(lines), f"{chunk_work:.17g}", newest_s, "\n".join(lines)]
                    lines.clear()
                    chunk_work, newest, newest_s = 0.0, -math.inf, repr(-math.inf)
            else:
                line(f"{ident.index}\t{seq}\t\t{middle}{ts_s}\n")
        elif chunks:
            w_seen = any(r.n for r in by_worker[f"{user}.{worker}"])
            u_seen = any(r.n for r in by_user[user])
            rejects.append(f"{ident.index}\t{seq}\t{_reason(reason)}\t{int(w_seen)}{int(u_seen)}\n")
        else:
            line(f"{ident.index}\t{seq}\t{_reason(reason)}\t0\t0\t0\n")
    # two records sharing a high-water mark field (user "a.b" + worker "c" and user "a" + worker "b.c"): one
    # stream to the mark, so their shares are decided one by one, in batch order, against it
    fields: dict[tuple[str, str], _Identity] = {}
    for ident in order:
        if not ident.source:
            continue
        other = fields.setdefault((ident.source, f"{ident.user}.{ident.worker}"), ident)
        if other is not ident:
            other.monotone = ident.monotone = False
    if chunks and not all(ident.monotone or not ident.source for ident in order):
        return _batch_args(shares, chunks=False)  # a repeat or a shared mark: one by one (a source "" has no mark)
    args: list[str | int] = [len(order)]
    for ident in order:
        args += ident.args()
    if chunks:
        if lines:
            chunk_args += [len(lines), f"{chunk_work:.17g}", newest_s, "\n".join(lines)]
        args += ["C", len(chunk_args) // 4, *chunk_args, "".join(rejects)]
    else:
        args += ["L", "".join(lines)]
    return args


def _reason(reason: str) -> str:
    """A reject reason as the share lines carry it (a field of its own: no tab or newline; never empty)."""
    if "\t" in reason or "\n" in reason:
        reason = reason.replace("\t", " ").replace("\n", " ")
    return reason or "unknown"


class ShareAccounting:
    """Writes share batches to Redis exactly once; :meth:`run` is the bus consumer (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        share_log_keep_s: float = SHARE_LOG_KEEP_S,
        share_log_maxlen: int | None = None,
        idle_ttl_s: int = IDLE_TTL_S,
        batch: int = DEFAULT_BATCH,
        dedup_ttl_s: int = DEDUP_TTL_S,
        max_lag_s: float = 30.0,
        policy: Backoff = FOREVER,
        clock: Callable[[], float] = time.time,
        fast_path: bool = True,
        write_interval_s: float = DEFAULT_WRITE_INTERVAL_S,
    ) -> None:
        self.redis = client
        self.share_log_keep_s = share_log_keep_s
        self.share_log_maxlen = share_log_maxlen
        self.idle_ttl_s = idle_ttl_s
        self.batch = batch
        self.dedup_ttl_s = dedup_ttl_s
        self.max_lag_s = max_lag_s
        self.policy = policy
        self.clock = clock  # the books' "now" (TTL pruning, share log trimming); tests move it
        # False: every batch through the script's per-share path (tests compare it with the fast path's books)
        self.fast_path = fast_path
        self.write_interval_s = write_interval_s  # the least time between two writes' starts (see run)
        self._script = client.register_script(_RECORD_LUA)
        self._block_script = client.register_script(_BLOCK_LUA)
        self.written = 0  # shares counted (not duplicates)
        self.duplicates = 0  # shares dropped as already counted
        self.ignored = 0  # rejected shares of identities the books do not know (metrics only, no key)
        self.errors = 0  # failed Redis attempts (each retried)
        self.stopped = False  # run() ended (subscription over, drained, cancelled or crashed)
        self.last_write_at = time.time()
        self.share_log_oldest_ms = 0  # ID time of the share log's oldest entry after the last batch (0: empty)
        self._pending_since: float | None = None  # oldest share timestamp of the batch being written
        self._last_lag = 0.0  # end-to-end delay of the last batch written
        self._draining = False

    @classmethod
    def from_settings(cls, client: aioredis.Redis, settings: RedisSettings) -> ShareAccounting:
        """The consumer ``[redis]`` describes (one place that maps settings to arguments)."""
        return cls(
            client,
            share_log_keep_s=settings.share_log_keep_s,
            share_log_maxlen=settings.share_log_maxlen,
            idle_ttl_s=settings.idle_ttl_s,
            dedup_ttl_s=settings.dedup_ttl_s,
            max_lag_s=settings.max_lag_s,
            batch=settings.max_batch,
            write_interval_s=settings.write_interval_ms / 1000,
        )

    # -- writes -----------------------------------------------------------------------------------
    async def apply(self, shares: Sequence[Share]) -> tuple[int, int]:
        """One attempt at one batch: one atomic script. Returns (counted, duplicates). No retry."""
        counted, duplicates, _ignored = await self._apply(shares)
        return counted, duplicates

    async def _apply(self, shares: Sequence[Share]) -> tuple[int, int, int]:
        if not shares:
            return 0, 0, 0
        args: list[str | int] = [
            PREFIX,
            repr(float(self.clock())),
            repr(float(self.share_log_keep_s)),
            self.share_log_maxlen or 0,
            self.dedup_ttl_s,
            HASHRATE_BUCKET_TTL_S,
            self.idle_ttl_s,
        ]
        counted, duplicates, ignored, oldest_ms = await self._script(
            keys=[], args=args + _batch_args(shares, self.fast_path)
        )
        if counted == -1:
            # the chunks were refused (a record not all new: a redelivery), nothing written: the shares one by one
            counted, duplicates, ignored, oldest_ms = await self._script(
                keys=[], args=args + _batch_args(shares, False)
            )
        self.share_log_oldest_ms = int(oldest_ms)
        return int(counted), int(duplicates), int(ignored)

    async def record(self, shares: Iterable[Share]) -> tuple[int, int]:
        """Write one batch, retrying (any error, per ``policy``: by default until it lands); idempotent.

        Returns (counted, duplicates); rejected shares of unknown identities are neither (see :attr:`ignored`)."""
        batch = list(shares)
        if not batch:
            return 0, 0
        self._pending_since = min(s.timestamp for s in batch)
        counted, duplicates, ignored = await retry(lambda: self._apply(batch), on=self._failed, policy=self.policy)
        now = time.time()
        self._last_lag = max(0.0, now - self._pending_since)
        self._pending_since = None
        self.last_write_at = now
        self.written += counted
        self.duplicates += duplicates
        self.ignored += ignored
        if duplicates:
            log.info("accounting: %d of %d shares were already counted (redelivery)", duplicates, len(batch))
        return counted, duplicates

    def share_log_age_s(self, now: float | None = None) -> float:
        """Age of the share log's oldest entry as of the last batch (0 when empty or not yet known): it should
        sit near ``share_log_keep_s`` on a pool that has run that long; far below means entries are trimmed
        early (a ``share_log_maxlen`` too small for the share rate), far above means no batch came to trim."""
        if not self.share_log_oldest_ms:
            return 0.0
        now = self.clock() if now is None else now
        return max(0.0, now - self.share_log_oldest_ms / 1000)

    def _failed(self, exc: Exception) -> bool:
        """Retry hook: count and log every failed attempt; every error is retried (losing shares is worse)."""
        self.errors += 1
        level = logging.WARNING if isinstance(exc, TRANSIENT) else logging.ERROR
        log.log(level, "accounting: Redis write failed (%r); retrying with backoff", exc)
        return True

    async def record_block(self, outcome: BlockOutcome) -> bool:
        """Add a found block's outcome to the ``blocks`` list once per block hash; returns whether it was new.

        The same block is reported more than once on purpose (the finder's own submit and the block maker's,
        a replay of pending blocks after a restart, a bus redelivery), so the list is guarded by a set of the
        hashes already listed (``blocks:index``, hash -> its entry, trimmed with the list): one atomic script, so a
        retry after an in-doubt write cannot list it twice either. The first outcome recorded for a hash is the
        one kept, except that a final one (accepted / stale / rejected) replaces a ``pending`` one."""
        entry = {
            "block_hash": outcome.block_hash.hex(),
            "height": outcome.height,
            "status": outcome.status,
            "reason": outcome.reason,
            "user": outcome.user,
            "worker": outcome.worker,
            "submitted_at": outcome.submitted_at,
        }
        args: list[str | int] = [PREFIX, outcome.block_hash.hex(), outcome.status, json.dumps(entry), BLOCKS_KEPT]
        added = await retry(lambda: self._block_script(keys=[], args=args), on=self._failed, policy=self.policy)
        return bool(int(added))

    # -- the consumer -----------------------------------------------------------------------------
    async def run(self, subscription: Subscription, *, poll_s: float = 0.5) -> None:
        """Consume Share events until cancelled, the subscription ends, or :meth:`drain` finds nothing left.

        Reads no further ahead than one batch: wait for the first event, then take everything already queued
        (up to ``batch``), write it (retrying), then ``ack()`` -- so a Kafka offset never passes a share that is
        not in Redis yet. Whatever queued up during one write goes into the next, so batches grow exactly when
        the share rate needs them to: a write costs a round trip and the script's fixed part whatever its size,
        so a consumer that fell behind catches up with bigger batches instead of queueing without bound.

        A write starts no sooner than ``write_interval_s`` after the previous one started (while the batch is not
        full and the consumer is not draining): Redis' cost of a write is mostly per write (the AOF's fsync, the
        script's fixed part, each identity's keys), so a consumer that keeps up easily would otherwise write
        small batches back to back and spend Redis' CPU -- on the cores the stratum shares -- on those fixed
        parts (issue 19: with two stratum workers the parent idles between writes and its batches were half the
        size of a one-process pool's, redis-server's CPU per share twice). A quiet pool's shares are written at
        once: the interval counts from the previous write."""
        self.stopped = False
        loop = asyncio.get_running_loop()
        last_start = -math.inf
        try:
            while True:
                events = await subscription.next_batch(self.batch, 0.0 if self._draining else poll_s)
                if events is None:
                    return
                ended = False
                # top up with what is there already (one next_batch hands out at most one Kafka fetch, ~500),
                # and with what comes before the write interval is over: looked at every TOP_UP_SLICE_S, not at
                # each event's arrival (a wake-up per publish cost a one-process pool a third of its share rate)
                due = last_start + self.write_interval_s
                # bounded: each round adds at least one event, or sleeps a slice of the interval, or stops
                for _ in range(self.batch + int(self.write_interval_s / TOP_UP_SLICE_S) + 2):
                    if not events or len(events) >= self.batch:
                        break
                    more = await subscription.next_batch(self.batch - len(events), 0.0)
                    if more is None:
                        ended = True
                        break
                    if more:
                        events += more
                        continue
                    wait = 0.0 if self._draining else due - loop.time()
                    if wait <= 0:
                        break
                    await asyncio.sleep(min(wait, TOP_UP_SLICE_S))
                shares = [e for e in events if isinstance(e, Share)]
                if shares:
                    last_start = loop.time()
                    await self.record(shares)
                if events:
                    await subscription.ack()
                elif self._draining:
                    return
                if ended:
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
        return entry_fields(raw)

    async def user_stats(self, user: str) -> dict[str, str]:
        raw = await self._read(lambda: self.redis.hgetall(f"{PREFIX}user:{user}"))
        return entry_fields(raw)

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
        """The newest ``count`` shares of the log, newest first, one dict each whatever the entry's format
        (:func:`ckbpool.payouts.pplns.entry_shares`)."""

        async def read() -> list[dict[str, str]]:
            out: list[dict[str, str]] = []
            upper, page = "+", min(count, 8)
            for _ in range(count + 1):  # bounded: each round adds an entry's shares or ends
                entries = await self.redis.xrevrange(SHARELOG_KEY, max=upper, min="-", count=page) or []
                for raw_id, raw_fields in entries:
                    out += reversed(entry_shares(raw_id, raw_fields))
                if len(out) >= count or len(entries) < page:
                    break
                upper = "(" + as_text(entries[-1][0])
            return out[:count]

        result: list[dict[str, str]] = await self._read(read)
        return result


# -- keeping the share log by work ------------------------------------------------------------------------------

SHARELOG_KEY = PREFIX + "sharelog"
#: bounds one trimmer pass's difficulty read (the node client's own retries sit inside it)
DIFFICULTY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class LogEntry:
    """What the trimmer needs of one share-log entry: its ID time (ms), running work sum (None: an entry from
    before ``cum`` was written), own work (a batched entry's: its shares' sum), its shares (``n``, 1 for a
    per-share entry) and the running sums of shares and batched entries (None: a per-share entry)."""

    ms: int
    cum: float | None
    work: float
    n: int = 1
    ncum: int | None = None
    ecum: int | None = None

    def covered(self, newest_cum: float) -> float | None:
        """Work held from this entry (included) to the newest one; None when it cannot be told (legacy entry)."""
        if self.cum is None:
            return None
        return newest_cum - self.cum + self.work


async def find_cut_ms(
    probe: Callable[[int], Awaitable[LogEntry | None]],
    oldest: LogEntry,
    newest: LogEntry,
    needed: float,
) -> int | None:
    """The latest time ``t`` (ms) such that the entries at or after ``t`` still hold ``needed`` work: trimming
    below ``t`` (``XTRIM MINID t``) keeps the newest ``needed`` of work and drops what is older.

    ``probe(t)`` returns the first entry whose ID time is ``>= t`` (None if none). Entries' running sums grow with
    their IDs, so "work held from t on" only shrinks as t grows: a binary search over the times between the oldest
    and the newest entry (~30 probes for 7 days of milliseconds). None when the whole log holds less than
    ``needed``, or its oldest entry predates ``cum`` (legacy entries are never trimmed by work: how much they
    hold is unknown, so they go by the time cap)."""
    if newest.cum is None:
        return None
    total = oldest.covered(newest.cum)
    if total is None or total < needed:
        return None
    lo, hi = oldest.ms, newest.ms + 1  # invariant: holds(lo), not holds(hi)
    for _ in range(64):  # bounded: the range halves each step (2^64 ms is far beyond any log)
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        entry = await probe(mid)
        covered = None if entry is None or newest.cum is None else entry.covered(newest.cum)
        if covered is not None and covered >= needed:
            lo = mid
        else:
            hi = mid
    return lo


def _entry(raw_id: Any, raw_fields: Any) -> LogEntry:
    fields = entry_fields(raw_fields)
    ms = int(as_text(raw_id).split("-")[0])
    try:
        work = float(fields.get("work", "0"))
    except ValueError:
        work = 0.0
    try:
        cum: float | None = float(fields["cum"]) if "cum" in fields else None
    except ValueError:
        cum = None
    try:
        n = int(fields.get("n", "1"))
        ncum: int | None = int(fields["ncum"]) if "ncum" in fields else None
        ecum: int | None = int(fields["ecum"]) if "ecum" in fields else None
    except ValueError:
        n, ncum, ecum = 1, None, None
    return LogEntry(ms, cum, work, n, ncum, ecum)


class ShareLogTrimmer:
    """Keeps the share log to the work PPLNS needs (module docstring; ``RedisSettings`` says why each number).

    One pass (:meth:`run_once`): read the network difficulty from the node (bounded; on failure the last known
    one stays), find the oldest entry still needed -- the newest ``keep_windows x N x difficulty`` of work, but
    nothing younger than ``min_keep_s`` -- and ``XTRIM MINID`` to it. The books' exactness does not depend on
    where it cuts (it only drops whole old entries; the script appends new ones concurrently, atomically), so
    the position may be approximate. It also measures what the log holds for the metrics: entries, work,
    window ratio (work held / N x difficulty: < 1 = the next block's window would be incomplete), whether the
    log has ever lost entries (Redis' ``entries-added`` above its length) and the accepted blocks the books list."""

    def __init__(
        self,
        client: aioredis.Redis,
        difficulty: Callable[[], Awaitable[int]] | None,
        *,
        pplns_n: float = DEFAULT_PPLNS_N,
        keep_windows: float = 3.0,
        min_keep_s: float = 3600.0,
        interval_s: float = 60.0,
        difficulty_timeout_s: float = DIFFICULTY_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        key: str = SHARELOG_KEY,
    ) -> None:
        self.redis = client
        self.difficulty_source = difficulty
        self.pplns_n = pplns_n
        self.keep_windows = keep_windows
        self.min_keep_s = min_keep_s
        self.interval_s = interval_s
        self.difficulty_timeout_s = difficulty_timeout_s
        self.clock = clock
        self.key = key
        self.network_difficulty: int | None = None  # last known (None: never read)
        self.entries = 0  # shares in the log after the last pass (see _count_shares)
        self.covered_work = 0.0  # work the log holds after the last pass (cum-bearing entries)
        self.trimmed = 0  # entries this trimmer dropped
        self.ever_trimmed = False  # the log has lost entries (by any trim, any process): entries-added > length
        self.blocks_accepted = 0  # accepted blocks in the books' ``blocks`` list
        self.passes = 0
        self.errors = 0

    @classmethod
    def from_settings(
        cls, client: aioredis.Redis, settings: RedisSettings, difficulty: Callable[[], Awaitable[int]] | None,
        *, pplns_n: float,
    ) -> ShareLogTrimmer:  # fmt: skip
        return cls(
            client,
            difficulty,
            pplns_n=pplns_n,
            keep_windows=settings.share_log_keep_windows,
            min_keep_s=settings.share_log_min_keep_s,
            interval_s=settings.share_log_trim_interval_s,
        )

    # -- figures ----------------------------------------------------------------------------------------------
    def window_work(self) -> float:
        """N x network difficulty: one PPLNS window of work (0 while the difficulty is unknown)."""
        return float(self.network_difficulty or 0) * self.pplns_n

    def keep_work(self) -> float:
        """Work the trimmer keeps: ``keep_windows`` windows."""
        return self.window_work() * self.keep_windows

    def window_ratio(self) -> float:
        """Work the log holds / one window (>= 1: a block found now has a complete window); NaN while the
        difficulty is unknown (a comparison with NaN is false: no alert on a node not yet read)."""
        window = self.window_work()
        return self.covered_work / window if window > 0 else math.nan

    # -- one pass ---------------------------------------------------------------------------------------------
    async def refresh_difficulty(self) -> int | None:
        """Ask the node (bounded); keep the last known difficulty when it does not answer."""
        if self.difficulty_source is None:
            return self.network_difficulty
        try:
            value = await asyncio.wait_for(self.difficulty_source(), self.difficulty_timeout_s)
        except Exception as exc:  # node down, slow, malformed: the last known value stays
            self.errors += 1
            log.warning("share log trimmer: cannot read the network difficulty (%r); keeping %s", exc,
                        self.network_difficulty)  # fmt: skip
            return self.network_difficulty
        if value > 0:
            self.network_difficulty = int(value)
        return self.network_difficulty

    async def _probe(self, ms: int) -> LogEntry | None:
        entries = await self.redis.xrange(self.key, min=str(ms), max="+", count=1)
        return _entry(*entries[0]) if entries else None

    async def _ends(self) -> tuple[LogEntry, LogEntry] | None:
        oldest = await self.redis.xrange(self.key, min="-", max="+", count=1)
        newest = await self.redis.xrevrange(self.key, max="+", min="-", count=1)
        if not oldest or not newest:
            return None
        return _entry(*oldest[0]), _entry(*newest[0])

    async def trim(self) -> int:
        """Trim by work with the difficulty known now; returns the entries dropped. Updates the figures."""
        dropped = 0
        needed = self.keep_work()
        ends = await self._ends()
        if ends is not None and needed > 0:
            oldest, newest = ends
            cut = await find_cut_ms(self._probe, oldest, newest, needed)
            if cut is not None:
                cut = min(cut, int((self.clock() - self.min_keep_s) * 1000))
                if cut > oldest.ms:
                    dropped = int(await self.redis.xtrim(self.key, minid=str(cut), approximate=False))
                    ends = await self._ends()
        self.trimmed += dropped
        await self._measure(ends)
        return dropped

    async def _count_shares(self, length: int, ends: tuple[LogEntry, LogEntry] | None) -> int:
        """Shares the log holds, from its ends' running sums (no walk): the batched entries hold ``ncum`` (newest)
        - ``ncum`` + ``n`` (the oldest batched one) shares in ``ecum`` - ``ecum`` + 1 entries, every other entry
        (per-share, older) one. The oldest batched entry is the oldest entry, or is found by a binary search while
        per-share entries from before an upgrade remain. A log whose newest entry is per-share (written by an
        older consumer) counts its entries."""
        if ends is None:
            return 0
        oldest, newest = ends
        if newest.ncum is None or newest.ecum is None:
            return length
        first: LogEntry | None = oldest
        if oldest.ncum is None:
            first = await self._first_with(lambda e: e.ncum is not None, oldest.ms, newest.ms)
        if first is None or first.ncum is None or first.ecum is None:
            return length
        batched = newest.ecum - first.ecum + 1
        if not 0 < batched <= length:  # the running sums restarted (an older consumer wrote in between)
            return length
        return newest.ncum - first.ncum + first.n + (length - batched)

    async def _measure(self, ends: tuple[LogEntry, LogEntry] | None) -> None:
        length = int(await self.redis.xlen(self.key))
        self.entries = await self._count_shares(length, ends)
        self.covered_work = 0.0
        if ends is not None and ends[1].cum is not None:
            oldest, newest = ends
            covered = oldest.covered(newest.cum) if newest.cum is not None else None
            if covered is None:  # legacy entries at the old end: count from the first entry with a running sum
                first = await self._first_with(lambda e: e.cum is not None, oldest.ms, newest.ms)
                covered = first.covered(newest.cum) if first is not None and newest.cum is not None else None
            self.covered_work = max(0.0, covered or 0.0)
        if length or await self.redis.exists(self.key):
            # entries-added counts every XADD since the stream began (Redis >= 7.0; XTRIM does not move
            # max-deleted-entry-id, only XDEL does): more added than held = some were trimmed
            info: dict[Any, Any] = await self.redis.xinfo_stream(self.key)
            added = int(info.get("entries-added") or 0)
            self.ever_trimmed = added > int(info.get("length") or 0)
        blocks = await self.redis.lrange(PREFIX + "blocks", 0, BLOCKS_KEPT - 1)
        accepted = 0
        for raw in blocks:
            try:
                accepted += json.loads(raw).get("status") == "accepted"
            except (ValueError, AttributeError):
                continue
        self.blocks_accepted = accepted

    async def _first_with(self, has: Callable[[LogEntry], bool], lo: int, hi: int) -> LogEntry | None:
        """The oldest entry that ``has`` a field (``cum``, ``ncum``: the entries without it are all older): a
        binary search."""
        found: LogEntry | None = None
        hi += 1
        for _ in range(64):
            if hi - lo <= 0:
                break
            mid = (lo + hi) // 2
            entry = await self._probe(mid)
            if entry is not None and has(entry):
                found, hi = entry, mid
            else:
                lo = mid + 1
        return found

    async def run_once(self) -> int:
        await self.refresh_difficulty()
        dropped = await retry(self.trim, on=TRANSIENT, policy=REDIS_READ)
        self.passes += 1
        if dropped:
            log.info("share log: trimmed %d entries older than %.3g work (%.2f windows held, %d entries)",
                     dropped, self.keep_work(), self.window_ratio(), self.entries)  # fmt: skip
        return dropped

    async def run(self) -> None:
        """Every ``interval_s`` until cancelled; a failed pass is logged and the next one tries again."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                log.warning("share log trimmer: pass failed (%r); next in %.0fs", exc, self.interval_s)
            await asyncio.sleep(self.interval_s)


def node_difficulty(rpc: CkbRpcClient) -> Callable[[], Awaitable[int]]:
    """The network difficulty of the node's tip (``2^256 // target`` of its compact target, as ckb's
    ``compact_to_difficulty``): the same unit as a share's work and as the payouts' window."""

    async def read() -> int:
        header = await rpc.get_tip_header()
        return target_to_difficulty(compact_to_target(header.raw.compact_target))

    return read
