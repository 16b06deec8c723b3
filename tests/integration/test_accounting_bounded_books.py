"""Bounded books against a real Redis (issue 15, build 3): idle identities expire, rejected shares of unknown
identities leave no key, the share log is trimmed by time (not count), dedup marks are pruned, legacy sets are
converted, and a found block reported twice is listed once.

The clock of the books is :attr:`ShareAccounting.clock`: tests move it forward instead of waiting days.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from ckbpool.bus import BlockOutcome, Share
from ckbpool.payouts.pplns import read_shares
from ckbpool.pool.accounting import PREFIX, ShareAccounting, connect_redis
from ckbpool.retry import Backoff
from support.redis import RedisServer

pytestmark = pytest.mark.integration

FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.05)
DAY = 86400


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def share(
    seq: int, user: str = "alice", worker: str = "rig1", *, accepted: bool = True, source: str = "s-1", ts: float
) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user=user, worker=worker, job_id=1, height=100, nonce=seq,
        share_target=1 << 240, share_difficulty=1.0, accepted=accepted, reason="" if accepted else "stale-share",
        is_block=False, block_hash=b"", timestamp=ts, source=source, seq=seq,
    )  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def accounting(redis_server: RedisServer, clock: Clock) -> AsyncIterator[ShareAccounting]:
    client = connect_redis(redis_server.url, timeout_s=2.0)
    try:
        yield ShareAccounting(
            client, policy=FAST, share_log_keep_s=7 * DAY, idle_ttl_s=30 * DAY, dedup_ttl_s=7 * DAY, clock=clock
        )
    finally:
        await client.aclose()


async def keys(acc: ShareAccounting) -> set[str]:
    return {k.decode() for k in await acc.redis.keys(f"{PREFIX}*")}


async def test_rejected_shares_of_unknown_identities_create_no_key(accounting: ShareAccounting, clock: Clock) -> None:
    before = await keys(accounting)
    garbage = [share(n, "mallory", f"w{n}", accepted=False, ts=clock.now) for n in range(1, 501)]
    assert await accounting.record(garbage) == (0, 0)
    assert accounting.ignored == 500
    # the script's own keys aside (none for rejected shares), nothing was created
    assert await keys(accounting) == before == set()
    # a known worker's rejected share is counted on it, and does not refresh its TTL
    assert await accounting.record([share(1, ts=clock.now)]) == (1, 0)
    ttl = await accounting.redis.ttl(f"{PREFIX}worker:alice.rig1")
    assert 29 * DAY < ttl <= 30 * DAY
    await accounting.redis.expire(f"{PREFIX}worker:alice.rig1", 1000)
    assert await accounting.record([share(2, accepted=False, ts=clock.now)]) == (1, 0)
    stats = await accounting.worker_stats("alice", "rig1")
    assert (stats["accepted"], stats["rejected"], stats["rejected:stale-share"]) == ("1", "1", "1")
    assert await accounting.redis.ttl(f"{PREFIX}worker:alice.rig1") <= 1000
    assert (await accounting.user_stats("alice"))["rejected"] == "1"


async def test_idle_identities_expire_and_active_ones_stay(accounting: ShareAccounting, clock: Clock) -> None:
    start = clock.now
    await accounting.record([share(1, "alice", "old", ts=start), share(1, "bob", "busy", ts=start)])
    for key in ("worker:alice.old", "user:alice", "worker:bob.busy", "user:bob"):
        assert 29 * DAY < await accounting.redis.ttl(f"{PREFIX}{key}") <= 30 * DAY, key
    # 31 days on, bob still mining: alice's sorted-set members go at the next batch (her hashes by their TTL)
    clock.now = start + 31 * DAY
    await accounting.record([share(2, "bob", "busy", ts=clock.now)])
    assert await accounting.redis.zrange(f"{PREFIX}users", 0, -1) == [b"bob"]
    assert await accounting.redis.zrange(f"{PREFIX}workers", 0, -1) == [b"bob.busy"]
    assert await accounting.redis.zscore(f"{PREFIX}workers", "bob.busy") == pytest.approx(clock.now)
    assert 29 * DAY < await accounting.redis.ttl(f"{PREFIX}worker:bob.busy") <= 30 * DAY  # refreshed


async def test_share_log_is_trimmed_by_time_not_count(accounting: ShareAccounting, clock: Clock) -> None:
    start = clock.now
    first = [share(n, ts=start) for n in range(1, 2001)]
    await accounting.record(first)
    # 2,000 more entries within the window: nothing trimmed (a count cap of 1,000 would have)
    clock.now = start + 6 * DAY
    await accounting.record([share(n, ts=clock.now) for n in range(2001, 4001)])
    assert len(await read_shares(accounting.redis)) == 4000
    assert 6 * DAY - 60 < accounting.share_log_age_s() <= 6 * DAY + 60
    entry = (await accounting.share_log(1))[0]
    assert set(entry) == {"user", "worker", "ts", "id", "work"}
    assert entry["work"] == str((1 << 256) // (1 << 240)) and entry["id"] == "s-1:4000"
    newest = (await accounting.redis.xrevrange(f"{PREFIX}sharelog", count=1))[0][1]
    assert float(newest[b"cum"]) == 4000 * (1 << 16)  # the log's running work sum (for the work trimmer)
    # past the keep: the first batch's entries go, exactly (entry IDs are the shares' times)
    clock.now = start + 7 * DAY + 120
    await accounting.record([share(4001, ts=clock.now)])
    assert len(await read_shares(accounting.redis)) == 2001
    assert accounting.share_log_age_s() == pytest.approx(DAY + 120, abs=1)
    # a share stamped in the future (a stratum host's bad clock) is logged at most 60 s ahead of the consumer
    await accounting.record([share(4002, ts=clock.now + 365 * DAY)])
    newest = (await accounting.redis.xrevrange(f"{PREFIX}sharelog", count=1))[0][0].decode()
    assert int(newest.split("-")[0]) <= (clock.now + 60) * 1000


async def test_dedup_marks_of_idle_identities_are_pruned(accounting: ShareAccounting, clock: Clock) -> None:
    start = clock.now
    await accounting.record([share(n, "alice", f"w{n}", ts=start) for n in range(1, 301)])
    assert await accounting.redis.hlen(f"{PREFIX}hwm:s-1") == 300
    clock.now = start + 8 * DAY
    await accounting.record([share(301, "alice", "w1", ts=clock.now)])
    assert await accounting.redis.hgetall(f"{PREFIX}hwm:s-1") == {b"alice.w1": b"301"}
    assert await accounting.redis.zcard(f"{PREFIX}hwm:s-1:seen") == 1
    # within the dedup window a redelivery still counts once
    assert await accounting.record([share(301, "alice", "w1", ts=clock.now)]) == (0, 1)


async def test_legacy_sets_are_converted_once_and_their_keys_get_a_ttl(
    accounting: ShareAccounting, clock: Clock
) -> None:
    r = accounting.redis
    await r.sadd(f"{PREFIX}users", "old", "alice")
    await r.sadd(f"{PREFIX}workers", "old.w", "alice.rig1")
    await r.hset(f"{PREFIX}worker:old.w", "accepted", 5)
    await r.hset(f"{PREFIX}user:old", "accepted", 5)
    await accounting.record([share(1, ts=clock.now)])
    assert await r.type(f"{PREFIX}users") == b"zset" and await r.type(f"{PREFIX}workers") == b"zset"
    assert set(await r.zrange(f"{PREFIX}workers", 0, -1)) == {b"old.w", b"alice.rig1"}
    assert 29 * DAY < await r.ttl(f"{PREFIX}worker:old.w") <= 30 * DAY
    assert 29 * DAY < await r.ttl(f"{PREFIX}user:old") <= 30 * DAY


def outcome(block_hash: bytes, status: str) -> BlockOutcome:
    return BlockOutcome(
        block_hash=block_hash, height=7, status=status, reason="", submitted_at=1.0, latency_ms=1.0,
        user="alice", worker="rig1",
    )  # fmt: skip


async def test_a_block_reported_twice_is_listed_once(accounting: ShareAccounting) -> None:
    a, b = b"\xaa" * 32, b"\xbb" * 32
    assert await accounting.record_block(outcome(a, "accepted"))
    assert not await accounting.record_block(outcome(a, "accepted"))  # the block maker's report of the finder's
    assert not await accounting.record_block(outcome(a, "stale"))  # the first final outcome stays
    assert await accounting.record_block(outcome(b, "pending"))
    assert await accounting.record_block(outcome(b, "accepted"))  # a final outcome replaces the pending one
    assert not await accounting.record_block(outcome(b, "pending"))
    listed = [e.decode() for e in await accounting.redis.lrange(f"{PREFIX}blocks", 0, -1)]
    assert [(e.split('"block_hash": "')[1][:2], '"accepted"' in e) for e in listed] == [("bb", True), ("aa", True)]


async def test_block_index_follows_the_list_trim_and_legacy_lists(accounting: ShareAccounting) -> None:
    r = accounting.redis
    legacy = outcome(b"\x01" * 32, "accepted")
    await r.lpush(f"{PREFIX}blocks", '{"block_hash": "' + legacy.block_hash.hex() + '", "status": "accepted"}')
    assert not await accounting.record_block(legacy)  # listed before the index existed: still once
    for n in range(1, 1006):
        await accounting.record_block(outcome(n.to_bytes(32, "big"), "accepted"))
    assert await r.llen(f"{PREFIX}blocks") == 1000
    assert await r.hlen(f"{PREFIX}blocks:index") == 1000
