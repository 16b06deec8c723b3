"""The share log kept by the work PPLNS needs (issue 15 build 3, issue 16 build 2), on a real Redis with the
network difficulty read from a real ckb dev node: shares of known work go through the production Lua script
(which writes each entry's running work sum), the trimmer keeps the newest ``keep_windows x N x difficulty`` of
work and drops the older entries, never the last ``min_keep_s`` of them, and the PPLNS window read from the
trimmed log is complete and the same, to the hash, as the one read from the untrimmed log.

The books' clock (:attr:`ShareAccounting.clock`, :attr:`ShareLogTrimmer.clock`) is moved by the test instead of
waiting hours; the entries' IDs are the shares' own times, so a log of three hours is written in a second.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from ckbpool.bus import Share
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.payouts.pplns import read_shares, read_window, window_target
from ckbpool.pool.accounting import (
    PREFIX,
    ShareAccounting,
    ShareLogTrimmer,
    connect_redis,
    node_difficulty,
    share_work_int,
)
from ckbpool.retry import Backoff
from support.redis import RedisServer

pytestmark = pytest.mark.integration

FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.05)
SHARELOG = PREFIX + "sharelog"
N = 2
KEEP_WINDOWS = 3
SHARES = 300
SPACING_S = 36.0  # 300 shares over 3 hours
SHARES_PER_DIFFICULTY = 16  # each share is 1/16 of the network difficulty of work
BATCH = 10  # shares a write, so shares an entry of the log


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def rpc(dev_node: CkbNode) -> AsyncIterator[CkbRpcClient]:
    async with CkbRpcClient(dev_node.config.rpc_url, timeout=5.0, retries=1) as client:
        yield client


def share(seq: int, user: str, target: int, ts: float) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user=user, worker="rig", job_id=1, height=100, nonce=seq,
        share_target=target, share_difficulty=1.0, accepted=True, reason="", is_block=False, block_hash=b"",
        timestamp=ts, source="s-1", seq=seq,
    )  # fmt: skip


async def fill(acc: ShareAccounting, clock: Clock, target: int, start: float) -> list[float]:
    """SHARES shares, one every SPACING_S from ``start``, users taking turns (batches of BATCH, as they come)."""
    times = [start + i * SPACING_S for i in range(SHARES)]
    for first in range(0, SHARES, BATCH):
        batch = [share(i + 1, f"user{i % 3}", target, times[i]) for i in range(first, first + BATCH)]
        clock.now = batch[-1].timestamp + 1
        assert await acc.record(batch) == (BATCH, 0)
    return times


async def entry_ids(acc: ShareAccounting) -> list[str]:
    return [raw.decode() for raw, _ in await acc.redis.xrange(SHARELOG)]


@pytest.mark.parametrize(
    ("min_keep_s", "kept"),
    [
        # the work bound binds: 3 windows x 2 x difficulty = 96 shares (~58 min of them), more than the last 30 min;
        # the log's entries hold a batch (10 shares) each, so the oldest one kept takes the 96th newest share along
        (1800, 100),
        # the minimum time binds: the last 2 h (200 shares) are kept although 96 would hold the work
        (7200, 200),
    ],
)
async def test_the_log_keeps_the_needed_work_and_trims_older_entries(
    redis_server: RedisServer, rpc: CkbRpcClient, min_keep_s: int, kept: int
) -> None:
    difficulty = await node_difficulty(rpc)()
    assert difficulty > 0
    work = difficulty // SHARES_PER_DIFFICULTY
    target = (1 << 256) // work
    assert share_work_int(target) == work, "the dev chain's difficulty should split into whole shares"
    clock = Clock(time.time())
    client = connect_redis(redis_server.url, timeout_s=2.0)
    try:
        acc = ShareAccounting(client, policy=FAST, share_log_keep_s=7 * 86400, clock=clock)
        start = clock.now - 3 * 3600 - 60
        times = await fill(acc, clock, target, start)
        clock.now = times[-1] + 1

        # one entry per batch, and every entry carries the log's running work sum
        all_ids = await entry_ids(acc)
        assert len(all_ids) == SHARES // BATCH and len(await read_shares(client)) == SHARES
        newest = (await client.xrevrange(SHARELOG, count=1))[0][1]
        assert float(newest[b"cum"]) == SHARES * work

        found_at = times[-1] + 0.5
        window_work = window_target(difficulty, N)
        before = await read_window(client, found_at, window_work)
        assert before.complete and before.counted_work == window_work

        trimmer = ShareLogTrimmer(
            client, node_difficulty(rpc), pplns_n=N, keep_windows=KEEP_WINDOWS, min_keep_s=min_keep_s, clock=clock
        )
        dropped = await trimmer.run_once()
        assert trimmer.network_difficulty == difficulty
        assert dropped == (SHARES - kept) // BATCH
        ids = await entry_ids(acc)
        assert ids == all_ids[(SHARES - kept) // BATCH :], "the newest entries are kept, the older ones trimmed"
        assert trimmer.entries == kept == len(await read_shares(client))  # the metric counts shares
        assert trimmer.covered_work == kept * work >= trimmer.keep_work()
        assert trimmer.window_ratio() == pytest.approx(kept * work / (N * difficulty))
        assert trimmer.window_ratio() >= KEEP_WINDOWS
        assert trimmer.ever_trimmed
        # nothing younger than the minimum time was trimmed
        kept_times = [float(s["ts"]) for s in await read_shares(client)]
        assert kept_times == times[SHARES - kept :]
        assert len(kept_times) >= sum(1 for t in times if t * 1000 >= int((clock.now - min_keep_s) * 1000))

        # PPLNS over the trimmed log: complete, and the very same split as before trimming
        after = await read_window(client, found_at, window_work)
        assert after.complete
        assert after.weights == before.weights
        assert after.counted_work == window_work

        # a second pass finds nothing more to drop; new shares carry the running sum on
        assert await trimmer.run_once() == 0
        clock.now += SPACING_S
        assert await acc.record([share(SHARES + 1, "user0", target, clock.now - 1)]) == (1, 0)
        newest = (await client.xrevrange(SHARELOG, count=1))[0][1]
        assert float(newest[b"cum"]) == (SHARES + 1) * work
    finally:
        await client.aclose()


async def test_a_young_log_is_not_trimmed_and_reports_an_incomplete_window(
    redis_server: RedisServer, rpc: CkbRpcClient
) -> None:
    """Less work than the trimmer keeps: nothing goes, and the ratio says how much of a window exists."""
    difficulty = await node_difficulty(rpc)()
    work = difficulty // SHARES_PER_DIFFICULTY
    target = (1 << 256) // work
    clock = Clock(time.time())
    client = connect_redis(redis_server.url, timeout_s=2.0)
    try:
        acc = ShareAccounting(client, policy=FAST, clock=clock)
        batch = [share(i + 1, "user0", target, clock.now - 7200 + i * 100) for i in range(8)]
        assert await acc.record(batch) == (8, 0)
        trimmer = ShareLogTrimmer(client, node_difficulty(rpc), pplns_n=N, min_keep_s=60, clock=clock)
        assert await trimmer.run_once() == 0
        assert trimmer.entries == 8
        assert trimmer.window_ratio() == pytest.approx(8 / (N * SHARES_PER_DIFFICULTY))  # a quarter of a window
        assert not trimmer.ever_trimmed
        window = await read_window(client, clock.now, window_target(difficulty, N))
        assert not window.complete and window.counted_work == 8 * work
    finally:
        await client.aclose()


async def test_a_legacy_log_without_running_sums_is_left_to_the_time_cap(
    redis_server: RedisServer, rpc: CkbRpcClient
) -> None:
    """Entries written before ``cum`` existed: their work is not measured by sums, so the trimmer does not cut
    them by work (the time cap will); the new entries' sums start after them and are measured alone."""
    difficulty = await node_difficulty(rpc)()
    work = difficulty // SHARES_PER_DIFFICULTY
    target = (1 << 256) // work
    clock = Clock(time.time())
    client = connect_redis(redis_server.url, timeout_s=2.0)
    try:
        base_ms = int((clock.now - 5 * 3600) * 1000)
        for i in range(200):
            await client.xadd(SHARELOG, {"user": "old", "worker": "w", "difficulty": "1.0", "height": "1",
                                         "ts": str(base_ms / 1000 + i), "id": f"x:{i}", "work": str(work)},
                              id=f"{base_ms + i * 1000}-0")  # fmt: skip
        acc = ShareAccounting(client, policy=FAST, clock=clock)
        batch = [share(i + 1, "user0", target, clock.now - 3 * 3600 + i * 10) for i in range(100)]
        assert await acc.record(batch) == (100, 0)
        trimmer = ShareLogTrimmer(client, node_difficulty(rpc), pplns_n=N, keep_windows=1, min_keep_s=60, clock=clock)
        assert await trimmer.run_once() == 0
        assert trimmer.entries == 300  # shares: 200 per-share entries and one entry of 100
        assert await client.xlen(SHARELOG) == 201
        assert trimmer.covered_work == 100 * work  # the measured part: the entries with sums
    finally:
        await client.aclose()
