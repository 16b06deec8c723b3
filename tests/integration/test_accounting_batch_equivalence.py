"""Batched accounting == one share at a time, against a real Redis (issue 15: the books' throughput).

The accounting script sums each (source, user.worker)'s accepted shares in the consumer and applies one record
per identity when all of its shares are new, and decides shares one by one only when a redelivery overlaps the
identity's high-water mark or a batch repeats shares. Whatever the batching, the books must be the ones that
applying the very same deliveries one share per script gives: same counters (accepted, rejected per reason,
last share), same hashrate buckets, same share log (IDs, fields, running ``cum``), same dedup marks and indexes,
same counted / duplicate / ignored totals. Float sums (difficulty, work, hashrate) may differ in the last bits
(one sum of many vs many increments), so they are compared to 1e-12 relative; everything else exactly.

Hypothesis draws a stream of shares (three sources, one without ids; identities including two that spell the
same ``user.worker``; accepted and rejected; times spread over minutes and up to 2 minutes in the future) and
a delivery of it: ranges of the stream (so redeliveries, partial overlaps with what was counted, repeats inside
one batch, out-of-order ranges) cut into batches at drawn points.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckbpool.bus import Share
from ckbpool.payouts.pplns import entry_shares, read_shares
from ckbpool.pool.accounting import PREFIX, ShareAccounting, connect_redis
from ckbpool.retry import Backoff
from support.redis import RedisServer

pytestmark = pytest.mark.integration

NOW = 1_764_888_000.0
# "a.b" + "c" and "a" + "b.c" are one user.worker string: one dedup mark field, one worker key
IDENTITIES = [("alice", "r1"), ("alice", "r2"), ("bob", "r1"), ("a.b", "c"), ("a", "b.c")]
SOURCES = ["s-1", "s-2", ""]
TARGETS = [1 << 240, 1 << 238, (1 << 244) + 12345]
DIFFICULTIES = [1.0, 0.25, 3.0, 0.1]
REASONS = ["stale-share", "invalid-job-id", ""]
FLOAT_FIELDS = {"difficulty", "work"}
# a script error fails the example instead of being retried for ever (the consumer's policy in production)
ONCE = Backoff(initial=0.01, maximum=0.01, jitter=0.0, attempts=1)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis-eq")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


share_spec = st.tuples(
    st.integers(0, len(SOURCES) - 1),
    st.integers(0, len(IDENTITIES) - 1),
    st.booleans() | st.just(True),  # mostly accepted
    st.integers(0, len(TARGETS) - 1),
    st.integers(0, len(DIFFICULTIES) - 1),
    st.integers(0, len(REASONS) - 1),
    st.floats(-600.0, 120.0, allow_nan=False),  # seconds from NOW: several minutes, some in the future
)


def build_stream(specs: list[tuple[int, int, bool, int, int, int, float]]) -> list[Share]:
    """The shares as stratum servers publish them: each source's seqs rise in publish order."""
    seqs = dict.fromkeys(SOURCES, 0)
    out = []
    for source_i, ident_i, accepted, target_i, diff_i, reason_i, offset in specs:
        source = SOURCES[source_i]
        seqs[source] += 1
        user, worker = IDENTITIES[ident_i]
        out.append(
            Share(
                server_id="stratum-eq", channel_id=1, user=user, worker=worker, job_id=1, height=1000 + len(out),
                nonce=len(out), share_target=TARGETS[target_i], share_difficulty=DIFFICULTIES[diff_i],
                accepted=accepted, reason="" if accepted else REASONS[reason_i], is_block=False, block_hash=b"",
                timestamp=NOW + offset, source=source, seq=seqs[source] if source else 0,
            )
        )  # fmt: skip
    return out


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Share], list[list[Share]]]:
    specs = draw(st.lists(share_spec, min_size=1, max_size=40))
    stream = build_stream(specs)
    n = len(stream)
    ranges = draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, n)), min_size=1, max_size=8).map(
            lambda rs: [(a, max(a + 1, b)) for a, b in rs]
        )
    )
    flat = [share for a, b in ranges for share in stream[a:b]]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(flat) - 1)), max_size=6))))
    batches, start = [], 0
    for cut in [*cuts, len(flat)]:
        if cut > start:
            batches.append(flat[start:cut])
            start = cut
    return flat, batches


async def dump(client: Any) -> dict[str, Any]:
    """Every key of the books with its content (and whether it has a TTL)."""
    out: dict[str, Any] = {}
    for raw in await client.keys(f"{PREFIX}*"):
        key = raw.decode()
        kind = (await client.type(key)).decode()
        if kind == "hash":
            value: Any = {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}
        elif kind == "zset":
            value = [(m.decode(), s) for m, s in await client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            # the share log's shares in order (entries differ: one per batch chunk, not per share), the newest
            # entry's time and the running sums of work and shares
            entries = await client.xrange(key)
            newest = {k.decode(): v.decode() for k, v in entries[-1][1].items()}
            value = {
                "shares": [share for i, f in entries for share in entry_shares(i, f)],
                "newest_ms": entries[-1][0].decode().split("-")[0],
                "cum": newest["cum"],
                "ncum": newest["ncum"],
            }
        else:
            value = (await client.get(key)).decode()
        out[key] = (kind, value, await client.ttl(key) > 0)
    return out


def assert_same_books(batched: dict[str, Any], single: dict[str, Any]) -> None:
    assert set(batched) == set(single)
    for key, (kind, value, has_ttl) in batched.items():
        ref_kind, ref_value, ref_ttl = single[key]
        assert (kind, has_ttl) == (ref_kind, ref_ttl), key
        if kind == "hash":
            assert set(value) == set(ref_value), key
            for field, text in value.items():
                if field in FLOAT_FIELDS or key.startswith(f"{PREFIX}hashrate:"):
                    assert math.isclose(float(text), float(ref_value[field]), rel_tol=1e-12), (key, field)
                else:
                    assert text == ref_value[field], (key, field)
        else:
            assert value == ref_value, key


async def scenario(url: str, batches: list[list[Share]], flat: list[Share]) -> None:
    batched_client = connect_redis(url, timeout_s=10)
    single_client = connect_redis(url.rsplit("/", 1)[0] + "/1", timeout_s=10)
    try:
        await batched_client.flushdb()
        await single_client.flushdb()
        batched = ShareAccounting(batched_client, clock=lambda: NOW, policy=ONCE)
        single = ShareAccounting(single_client, clock=lambda: NOW, policy=ONCE)
        for batch in batches:
            await batched.record(batch)
        for share in flat:
            await single.record([share])
        assert (batched.written, batched.duplicates, batched.ignored) == (
            single.written,
            single.duplicates,
            single.ignored,
        )
        assert_same_books(await dump(batched_client), await dump(single_client))
    finally:
        await batched_client.aclose()
        await single_client.aclose()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delivery=deliveries())
def test_batches_redeliveries_and_overlaps_give_the_books_of_one_share_at_a_time(
    redis_server: RedisServer, delivery: tuple[list[Share], list[list[Share]]]
) -> None:
    flat, batches = delivery
    asyncio.run(scenario(redis_server.url, batches, flat))


def test_the_fast_and_the_one_by_one_paths_both_run(redis_server: RedisServer) -> None:
    """The property above would pass vacuously if every record took one path: a fresh batch is summed by the
    consumer, a batch overlapping the mark is split by the script -- and both count what they should."""

    async def run() -> None:
        client = connect_redis(redis_server.url, timeout_s=10)
        try:
            await client.flushdb()
            acc = ShareAccounting(client, clock=lambda: NOW, policy=ONCE)
            stream = build_stream([(0, 0, True, 0, 0, 0, float(-i)) for i in range(10)])
            assert await acc.record(stream[:6]) == (6, 0)  # fresh: one record, summed here
            assert await acc.record(stream[3:10]) == (4, 3)  # overlaps the mark at seq 6: split in the script
            assert await acc.record(stream[8:] + stream[:10]) == (0, 12)  # repeats inside the batch
            stats = await acc.worker_stats("alice", "r1")
            assert stats["accepted"] == "10" and float(stats["difficulty"]) == 10.0
            assert len(await read_shares(client)) == 10
            assert (await client.hget(f"{PREFIX}hwm:s-1", "alice.r1")) == b"10"
        finally:
            await client.aclose()

    asyncio.run(run())
