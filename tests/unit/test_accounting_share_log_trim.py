"""The share log kept by work, without Redis (issue 15, build 3): where the trimmer cuts (the binary search over
entry times against a brute-force answer), when it refuses to cut (legacy entries, too little work), the figures it
exports, the difficulty it keeps when the node does not answer, and the [redis] settings that drive it. The same
trimmer against a real Redis and a real node is tests/integration/test_accounting_share_log_work.py."""

from __future__ import annotations

import asyncio
import bisect
import math
import random

import pytest
import redis.asyncio as aioredis

from ckbpool.pool.accounting import LogEntry, ShareLogTrimmer, find_cut_ms
from ckbpool.pool.config import ConfigError, RedisSettings, load_pool_config

pytestmark = pytest.mark.unit


def log_of(works: list[float], times_ms: list[int], *, legacy: int = 0) -> list[LogEntry]:
    """Entries as the script writes them: cum = running sum; the first ``legacy`` ones without it."""
    entries, cum = [], 0.0
    for i, (work, ms) in enumerate(zip(works, times_ms, strict=True)):
        if i < legacy:
            entries.append(LogEntry(ms, None, work))
            continue
        cum += work
        entries.append(LogEntry(ms, cum, work))
    return entries


def prober(entries: list[LogEntry]) -> tuple[list[int], object]:
    """probe(t) = the first entry at or after t, as XRANGE t + COUNT 1; counts the calls."""
    calls: list[int] = []
    times = [e.ms for e in entries]

    async def probe(ms: int) -> LogEntry | None:
        calls.append(ms)
        i = bisect.bisect_left(times, ms)
        return entries[i] if i < len(entries) else None

    return calls, probe


def held_from(entries: list[LogEntry], ms: int) -> float:
    return sum(e.work for e in entries if e.ms >= ms)


async def cut(entries: list[LogEntry], needed: float) -> tuple[int | None, int]:
    calls, probe = prober(entries)
    result = await find_cut_ms(probe, entries[0], entries[-1], needed)  # type: ignore[arg-type]
    return result, len(calls)


async def test_the_cut_keeps_the_needed_work_and_not_one_more_entry() -> None:
    entries = log_of([10, 10, 10, 10, 10], [1000, 2000, 3000, 4000, 5000])
    # 25 needed: the newest three entries (30) hold it, the newest two (20) do not -> cut at entry 3000's time
    position, _ = await cut(entries, 25)
    assert position == 3000
    assert held_from(entries, position) == 30
    # exactly the work of the newest two: they alone are kept
    assert (await cut(entries, 20))[0] == 4000
    # the whole log needed: nothing is cut
    assert (await cut(entries, 50))[0] == 1000
    # the newest entry alone holds more than needed
    assert (await cut(entries, 3))[0] == 5000


async def test_no_cut_when_the_log_holds_less_than_needed_or_starts_with_legacy_entries() -> None:
    entries = log_of([10, 10, 10], [1000, 2000, 3000])
    assert (await cut(entries, 31))[0] is None
    legacy = log_of([10, 10, 10, 10], [1000, 2000, 3000, 4000], legacy=2)
    # how much the legacy entries hold is unknown: they go by the time cap, never by work
    assert (await cut(legacy, 5))[0] is None
    no_cum = [LogEntry(1000, None, 5.0), LogEntry(2000, None, 5.0)]
    assert (await cut(no_cum, 1))[0] is None


@pytest.mark.parametrize("seed", range(40))
async def test_the_binary_search_agrees_with_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 400)
    times, t = [], 1_700_000_000_000
    for _ in range(n):
        t += rng.choice([0, 0, 1, 7, 250, 60_000])  # several entries may share a millisecond
        times.append(t)
    works = [float(rng.choice([1, 3, 1000, 2**40, 5 * 2**40])) for _ in range(n)]
    entries = log_of(works, times)
    total = sum(works)
    needed = rng.uniform(0.01, 1.2) * total
    position, probes = await cut(entries, needed)
    if total < needed:
        assert position is None
        return
    assert position is not None
    # the entries kept (ID time >= position) hold the needed work ...
    assert held_from(entries, position) >= needed * (1 - 1e-12)
    # ... and cutting one millisecond later would not: the cut is as late as it may be
    assert held_from(entries, position + 1) < needed * (1 + 1e-12)
    # a binary search: about log2(time span) probes, whatever the entry count
    assert probes <= math.ceil(math.log2(times[-1] - times[0] + 2)) + 1


async def test_a_week_of_milliseconds_takes_about_thirty_probes() -> None:
    week_ms = 7 * 86400 * 1000
    entries = log_of([1.0] * 1000, [i * (week_ms // 1000) for i in range(1000)])
    position, probes = await cut(entries, 100)
    assert position == entries[900].ms
    assert probes <= 31


def trimmer(**kwargs: object) -> ShareLogTrimmer:
    # a client that never connects: these checks do not reach Redis
    return ShareLogTrimmer(aioredis.Redis(host="127.0.0.1", port=1), **kwargs)  # type: ignore[arg-type]


async def test_difficulty_is_refreshed_and_the_last_known_one_kept_when_the_node_fails() -> None:
    answers: list[object] = [1000, RuntimeError("node down"), "hang", 4000]

    async def source() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer == "hang":
            await asyncio.sleep(60)
        assert isinstance(answer, int)
        return answer

    t = trimmer(difficulty=source, pplns_n=2, keep_windows=3, difficulty_timeout_s=0.2)
    assert math.isnan(t.window_ratio())  # nothing known yet: no ratio (and no alert)
    assert await t.refresh_difficulty() == 1000
    assert t.window_work() == 2000 and t.keep_work() == 6000
    assert await t.refresh_difficulty() == 1000  # raised: kept
    assert await t.refresh_difficulty() == 1000  # hung past the bound: kept
    assert t.errors == 2
    assert await t.refresh_difficulty() == 4000
    t.covered_work = 6000.0
    assert t.window_ratio() == pytest.approx(0.75)


async def test_no_difficulty_source_means_no_work_to_keep() -> None:
    t = trimmer(difficulty=None)
    assert await t.refresh_difficulty() is None
    assert t.keep_work() == 0


def test_settings_defaults_and_their_checks() -> None:
    s = RedisSettings()
    assert (s.share_log_keep_windows, s.share_log_min_keep_s, s.share_log_trim_interval_s) == (3.0, 3600, 60.0)
    assert s.share_log_keep_s == 7 * 86400  # the time cap stays
    t = ShareLogTrimmer.from_settings(aioredis.Redis(host="127.0.0.1", port=1), s, None, pplns_n=5)
    assert (t.pplns_n, t.keep_windows, t.min_keep_s, t.interval_s) == (5, 3.0, 3600, 60.0)
    with pytest.raises(ConfigError, match=r"share_log_min_keep_s .* must not exceed share_log_keep_s"):
        load_pool_config(data={"redis": {"share_log_keep_s": 3600, "share_log_min_keep_s": 7200}})
    with pytest.raises(ConfigError, match=r"redis\.share_log_keep_windows"):
        load_pool_config(data={"redis": {"share_log_keep_windows": 0.5}})
    with pytest.raises(ConfigError, match=r"redis\.share_log_trim_interval_s"):
        load_pool_config(data={"redis": {"share_log_trim_interval_s": 0}})
