"""The share log's two formats give PPLNS the same shares (issue 19: one entry per batch chunk).

Before, the accounting script wrote one stream entry per accepted share (ID = the share's time in ms, clamped to
be increasing and at most 60 s past the consumer's clock); now it writes one entry per chunk of up to
``SHARE_LOG_CHUNK`` shares (ID = the newest share's clamped time). A pool upgraded in place holds both. Here the
same batches of shares are written three ways on a real Redis -- per-share entries written by hand exactly as the
old script did (the reference), batched entries by the production script, and the first half per-share then the
rest batched (an upgrade) -- and every reader must see the same shares: ``read_window`` (weights, counted work,
share count, completeness, oldest/newest times) and the reward split to the shannon for many find times and
graces, including find times whose bound falls inside a batched entry, shares out of order by more than the grace
and shares stamped past the consumer's clock (clamped); ``read_shares``, ``ShareAccounting.share_log`` and the
trimmer's share count.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ckbpool.bus import Share
from ckbpool.payouts.pplns import _past_bound, read_shares, read_window, split_reward
from ckbpool.pool.accounting import (
    PREFIX,
    SHARE_LOG_CHUNK,
    ShareAccounting,
    ShareLogTrimmer,
    connect_redis,
    share_work_int,
)
from ckbpool.retry import Backoff
from support.redis import RedisServer

pytestmark = pytest.mark.integration

SHARELOG = PREFIX + "sharelog"
ONCE = Backoff(initial=0.01, maximum=0.01, jitter=0.0, attempts=1)
T0 = 1_764_888_000.0
USERS = ["ckt1alice", "ckt1bob", "ckt1carol", "ckt1dave", "solo:ckt1erin"]
TARGETS = [1 << 240, 1 << 238, (1 << 244) + 12345, 1 << 236]
REWARD = 1_234_567_890_123
FIELDS = ("user", "worker", "ts", "id", "work")  # a share's own fields (per-share entries also carry cum)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make_batches(seed: int) -> list[tuple[float, list[Share]]]:
    """Batches (with the consumer's clock at each) of shares ~10 ms apart, with jitter, some out of order by tens
    of seconds and some stamped minutes ahead of the clock (clamped to +60 s); a few rejected; batches of up to
    ~2.6 chunks."""
    rng = random.Random(seed)
    out: list[tuple[float, list[Share]]] = []
    t, seq = T0, 0
    for _ in range(6):
        batch: list[Share] = []
        for _ in range(rng.randint(300, int(SHARE_LOG_CHUNK * 2.6))):
            t += rng.uniform(0.0, 0.02)
            ts = t + rng.uniform(-0.05, 0.01)
            roll = rng.random()
            if roll < 0.01:
                ts = t - rng.uniform(5, 40)  # late: written after newer shares
            elif roll < 0.015:
                ts = t + rng.uniform(70, 300)  # a stratum host's clock ahead: clamped
            seq += 1
            accepted = rng.random() > 0.03
            batch.append(
                Share(
                    server_id="stratum-f", channel_id=1, user=rng.choice(USERS), worker=f"rig{rng.randint(0, 3)}",
                    job_id=1, height=1000, nonce=seq, share_target=rng.choice(TARGETS), share_difficulty=1.0,
                    accepted=accepted, reason="" if accepted else "stale-share", is_block=False, block_hash=b"",
                    timestamp=ts, source="s-1", seq=seq,
                )
            )  # fmt: skip
        out.append((t + 0.5, batch))
    return out


async def write_per_share(client: Any, now: float, shares: list[Share]) -> None:
    """What the script wrote before batched entries: one XADD per accepted share (user, worker, ts, id, work, cum),
    ID = the running maximum of the shares' times in ms clamped to the consumer's clock + 60 s."""
    newest = await client.xrevrange(SHARELOG, count=1)
    last_ms, cum = 0, 0.0
    if newest:
        last_ms = int(newest[0][0].decode().split("-")[0])
        cum = float(newest[0][1].get(b"cum", b"0"))
    clamp = math.floor(float(repr(float(now))) * 1000) + 60000
    pipe = client.pipeline(transaction=True)
    for share in shares:
        if not share.accepted:
            continue
        ts_s = repr(float(share.timestamp))
        last_ms = max(last_ms, min(math.floor(float(ts_s) * 1000), clamp))
        work = share_work_int(share.share_target)
        cum += work
        fields = {"user": share.user, "worker": share.worker, "ts": ts_s, "id": f"{share.source}:{share.seq}",
                  "work": str(work), "cum": f"{cum:.17g}"}  # fmt: skip
        pipe.xadd(SHARELOG, fields, id=f"{last_ms}-*")
    await pipe.execute()


@pytest.fixture
async def clients(redis_server: RedisServer) -> AsyncIterator[list[Any]]:
    """Three databases of one Redis: per-share (the reference), batched, and upgraded half-way."""
    base = redis_server.url.rsplit("/", 1)[0]
    out = [connect_redis(f"{base}/{db}", timeout_s=10) for db in (0, 1, 2)]
    try:
        for client in out:
            await client.flushdb()
        yield out
    finally:
        for client in out:
            await client.aclose()


@pytest.mark.parametrize("seed", [1, 2])
async def test_both_formats_give_the_same_windows_and_credits(clients: list[Any], seed: int) -> None:
    per_share, batched, upgraded = clients
    batches = make_batches(seed)
    clocks = [Clock(), Clock()]
    accountings = [
        ShareAccounting(c, clock=clock, policy=ONCE) for c, clock in zip((batched, upgraded), clocks, strict=True)
    ]
    for i, (now, shares) in enumerate(batches):
        await write_per_share(per_share, now, shares)
        clocks[0].now = now
        await accountings[0].record(shares)
        if i < len(batches) // 2:
            await write_per_share(upgraded, now, shares)
        else:
            clocks[1].now = now
            await accountings[1].record(shares)

    accepted = sum(s.accepted for _, shares in batches for s in shares)
    lengths = [await c.xlen(SHARELOG) for c in clients]
    assert lengths[0] == accepted and lengths[1] < accepted / 100 < lengths[2] < accepted, lengths

    # every share, in order, whatever the format
    reference = await read_shares(per_share)
    assert len(reference) == accepted
    strip = [{k: s[k] for k in FIELDS} for s in reference]
    for client in (batched, upgraded):
        assert [{k: s[k] for k in FIELDS} for s in await read_shares(client, page=500)] == strip
    for accounting in accountings:
        assert [{k: s[k] for k in FIELDS} for s in await accounting.share_log(1500)] == strip[::-1][:1500]

    # the trimmer's share count (its metric) and work figure
    for client in clients:
        trimmer = ShareLogTrimmer(client, None)
        await trimmer.trim()
        assert trimmer.entries == accepted
    # PPLNS: find times all over the log (each share's own time, a hair either side), several graces and window
    # sizes; the windows and the split must be identical to the per-share reference
    rng = random.Random(seed * 7)
    all_shares = [s for _, shares in batches for s in shares if s.accepted]
    total_work = sum(share_work_int(s.share_target) for s in all_shares)
    past_bound_used = 0
    for _ in range(60):
        found_at = rng.choice(all_shares).timestamp + rng.choice([0.0, 0.0005, -0.0005, 0.003])
        grace_s = rng.choice([0.0, 0.01, 0.5, 3.0, 600.0])
        target = rng.choice([total_work // 50, total_work // 5, total_work * 2])
        page = rng.choice([5000, 300])
        ref = await read_window(per_share, found_at, target, grace_s=grace_s, page=page)
        for client in (batched, upgraded):
            got = await read_window(client, found_at, target, grace_s=grace_s, page=page)
            assert got == ref, (found_at, grace_s, target)
            assert split_reward(REWARD, got.weights, 150, "op") == split_reward(REWARD, ref.weights, 150, "op")
        past_bound_used += bool(await _past_bound(batched, SHARELOG, int((found_at + grace_s) * 1000), found_at))
    # the bound fell inside a batched entry (shares of it read past the bound) in some of these, or the test
    # would not check that case
    assert past_bound_used > 0


def _share(seq: int, ts: float, user: str = "ckt1alice", worker: str = "rig0", source: str = "s-1") -> Share:
    return Share(
        server_id="stratum-f", channel_id=1, user=user, worker=worker, job_id=1, height=1000, nonce=seq,
        share_target=1 << 240, share_difficulty=1.0, accepted=True, reason="", is_block=False, block_hash=b"",
        timestamp=ts, source=source, seq=seq,
    )  # fmt: skip


async def test_names_with_separators_come_back_whole(clients: list[Any]) -> None:
    """A tab, newline or backslash in a name (parse_identity lets none through; the books take any) is escaped in
    a batched entry's line and comes back as it was."""
    client = clients[1]
    clock = Clock()
    accounting = ShareAccounting(client, clock=clock, policy=ONCE)
    names = [("a\tb", "w\n1", "s\\1"), ("c\\\\d", "w", "s-2"), ("plain", "rig", "s-3")]
    shares = [_share(i + 1, T0 + i, user, worker, source) for i, (user, worker, source) in enumerate(names)]
    assert await accounting.record(shares) == (3, 0)
    got = await read_shares(client)
    assert [(s["user"], s["worker"], s["id"]) for s in got] == [(u, w, f"{src}:{i + 1}") for i, (u, w, src) in
                                                                 enumerate(names)]  # fmt: skip
    window = await read_window(client, T0 + 10, 10 * share_work_int(1 << 240))
    assert window.weights == {u: share_work_int(1 << 240) for u, _, _ in names}


async def test_the_count_cap_is_in_shares(clients: list[Any]) -> None:
    """``share_log_maxlen`` caps shares, not entries: about that many shares stay (whole entries: within one)."""
    client = clients[1]
    clock = Clock()
    accounting = ShareAccounting(client, clock=clock, policy=ONCE, share_log_maxlen=3000)
    seq = 0
    for _ in range(5):
        batch = [_share(seq + i + 1, T0 + (seq + i) / 100) for i in range(2000)]
        seq += 2000
        clock.now = batch[-1].timestamp
        assert await accounting.record(batch) == (2000, 0)
    kept = await read_shares(client)
    assert 3000 - SHARE_LOG_CHUNK < len(kept) <= 3000 + SHARE_LOG_CHUNK
    assert kept[-1]["id"] == f"s-1:{seq}"  # the newest stay
    trimmer = ShareLogTrimmer(client, None)
    await trimmer.trim()
    assert trimmer.entries == len(kept)
