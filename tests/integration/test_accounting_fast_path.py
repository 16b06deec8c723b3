"""The accounting script's fast path writes the very books its per-share path writes (issue 19).

A batch whose (source, user.worker) seqs all rise goes to the script as its share log -- chunks of
``SHARE_LOG_CHUNK`` lines of accepted shares built by the consumer, with their share count, work and newest time
-- and its rejected shares; the script, when every record is all new, XADDs the chunks (the IDs from the last
entry and the clock, the running sums from the newest entry) and counts the rejects: no per-accepted-share work
in Redis. Any other batch (a repeat, two records on one mark field), or a chunked one the script refuses (a
redelivery overlapping the marks), goes share by share as before. Here the same deliveries go through a
consumer with the fast path and one without (``fast_path=False``: every batch share by share), on two databases
of one real Redis, and the whole of both books must be byte for byte the same: every hash field, sorted-set
member and score, dedup mark, share-log entry (ID and every field: ``n``, ``s``, ``work``, ``cum``, ``ncum``,
``ecum``), list, TTL presence and the counted / duplicate / ignored totals.

The deliveries (seeded): runs of fresh batches of up to ~2.6 chunks, some with rejected shares (of known
workers, of a name before its first accepted share, of a name with no accepted share at all), some with a
repeat or both spellings of one ``user.worker``, some from a source without ids; names with a tab, newline or
backslash; works of ~2^56 hashes (so summing them as doubles rounds); shares late by tens of seconds and stamped
minutes past the clock (clamped IDs); redeliveries of a whole batch and of a batch's tail with new shares after
it; with and without a ``share_log_maxlen`` and a short ``share_log_keep_s``. A spy on the script counts which form
each call took, so the test fails if the fast path never ran (or never was refused) rather than passing vacuously.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ckbpool.bus import Share
from ckbpool.pool.accounting import PREFIX, SHARE_LOG_CHUNK, ShareAccounting, connect_redis
from ckbpool.retry import Backoff
from support.redis import RedisServer

pytestmark = pytest.mark.integration

NOW = 1_764_888_000.0
ONCE = Backoff(initial=0.01, maximum=0.01, jitter=0.0, attempts=1)
SOURCES = ["s-1", "s-2"]
# names a share-log line escapes (tab, newline, backslash), and the two spellings of one user.worker
PLAIN = [("ckt1alice", "rig1"), ("ckt1alice", "rig2"), ("ckt1bob", "r\t1"), ("ta\\b", "w\nx"), ("solo:erin", "")]
COLLIDING = [("a.b", "c"), ("a", "b.c")]
# works 2^16 .. ~2^56 hashes: sums of the large ones as doubles round
TARGETS = [1 << 240, (1 << 244) + 12345, 1 << 200, (1 << 200) + 987_654_321]
DIFFICULTIES = [1.0, 0.25, 3.0, 0.1]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class ScriptSpy:
    """Wraps the real script: counts the form of each call's shares ('C' chunks, with rejects or not; 'L' lines)
    and refusals."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.forms: Counter[str] = Counter()

    async def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        result = await self.script(keys=keys, args=args)
        form = args[8 + 4 * int(args[7])]
        if form == "C" and args[-1]:
            form = "C with rejects"
        self.forms[form + (" refused" if int(result[0]) == -1 else "")] += 1
        return result


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis-fast")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def deliveries(seed: int) -> list[tuple[float, list[Share]]]:
    """(the consumer's clock, batch) in delivery order -- see the module docstring."""
    rng = random.Random(seed)
    seqs = dict.fromkeys(SOURCES, 0)
    t = NOW - 60.0
    out: list[tuple[float, list[Share]]] = []
    clock = NOW

    def share(source: str, user: str, worker: str, accepted: bool) -> Share:
        nonlocal t
        t += rng.uniform(0.0, 0.004)
        ts = t + rng.uniform(-0.05, 0.01)
        roll = rng.random()
        if roll < 0.01:
            ts = t - rng.uniform(5, 40)  # late
        elif roll < 0.015:
            ts = clock + rng.uniform(70, 300)  # a stratum host's clock ahead of the consumer's: clamped
        seq = 0
        if source:
            seqs[source] += 1
            seq = seqs[source]
        return Share(
            server_id="stratum-fast", channel_id=1, user=user, worker=worker, job_id=1, height=1000, nonce=seq,
            share_target=rng.choice(TARGETS), share_difficulty=rng.choice(DIFFICULTIES), accepted=accepted,
            reason="" if accepted else rng.choice(["stale-share", "invalid-job-id"]), is_block=False,
            block_hash=b"", timestamp=ts, source=source, seq=seq,
        )  # fmt: skip

    kinds = ["clean"] * 5 + ["rejects", "repeat", "colliding", "no-id"]
    for index in range(14):
        clock += rng.uniform(0.1, 2.0)
        kind = "clean" if index < 2 else "rejects" if index == 2 else rng.choice(kinds)
        size = rng.randint(1, int(SHARE_LOG_CHUNK * 2.6))
        names = PLAIN + COLLIDING if kind == "colliding" else PLAIN
        if kind == "rejects":
            # a name the books do not know yet (its rejects before its first accepted share are ignored) and one
            # with nothing but rejects (ignored, no key, no mark)
            names = [*PLAIN, (f"ckt1new{index}", "rig"), (f"ckt1ghost{index}", "rig")]
        source_of = (lambda: "") if kind == "no-id" else (lambda: rng.choice(SOURCES))
        batch = []
        for _ in range(size):
            user, worker = rng.choice(names)
            ok = kind != "rejects" or (not user.startswith("ckt1ghost") and rng.random() > 0.1)
            batch.append(share(source_of(), user, worker, accepted=ok))
        if kind == "repeat":
            batch.insert(rng.randrange(len(batch) + 1), rng.choice(batch))
        out.append((clock, batch))
        roll = rng.random()
        if roll < 0.2 or index == 3:
            out.append((clock, list(batch)))  # the whole batch again
        elif roll < 0.4 or index == 5:
            # its tail again, then new shares: the chunks overlap the marks
            tail = batch[rng.randrange(len(batch)) :]
            fresh = [share(rng.choice(SOURCES), *rng.choice(PLAIN), accepted=True) for _ in range(rng.randint(1, 900))]
            out.append((clock, tail + fresh))
    return out


async def dump(client: Any) -> dict[str, Any]:
    """Every key of the books, exactly: hashes, sorted sets (with scores), streams (IDs and fields), lists."""
    out: dict[str, Any] = {}
    for raw in sorted(await client.keys(f"{PREFIX}*")):
        key = raw.decode()
        kind = (await client.type(key)).decode()
        value: Any
        if kind == "hash":
            value = await client.hgetall(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await client.xrange(key)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        else:
            value = await client.get(key)
        out[key] = (kind, value, await client.ttl(key) > 0)
    return out


async def scenario(url: str, seed: int, maxlen: int | None, keep_s: float) -> Counter[str]:
    fast_client = connect_redis(url, timeout_s=10)
    slow_client = connect_redis(url.rsplit("/", 1)[0] + "/1", timeout_s=10)
    try:
        await fast_client.flushdb()
        await slow_client.flushdb()
        clock = Clock()
        options: dict[str, Any] = {"clock": clock, "policy": ONCE, "share_log_maxlen": maxlen}
        fast = ShareAccounting(fast_client, share_log_keep_s=keep_s, **options)
        slow = ShareAccounting(slow_client, share_log_keep_s=keep_s, fast_path=False, **options)
        spies = ScriptSpy(fast._script), ScriptSpy(slow._script)
        fast._script, slow._script = spies  # type: ignore[assignment]
        for now, batch in deliveries(seed):
            clock.now = now
            assert await fast.record(batch) == await slow.record(batch)
        assert (fast.written, fast.duplicates, fast.ignored) == (slow.written, slow.duplicates, slow.ignored)
        fast_books, slow_books = await dump(fast_client), await dump(slow_client)
        assert list(fast_books) == list(slow_books)
        for key, value in fast_books.items():
            assert value == slow_books[key], key
        assert set(spies[1].forms) == {"L"}  # the reference never took the fast path
        return spies[0].forms
    finally:
        await fast_client.aclose()
        await slow_client.aclose()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("maxlen", "keep_s"), [(None, 7 * 86400.0), (3000, 30.0)])
def test_the_fast_path_writes_the_books_of_the_per_share_path(
    redis_server: RedisServer, seed: int, maxlen: int | None, keep_s: float
) -> None:
    forms = asyncio.run(scenario(redis_server.url, seed, maxlen, keep_s))
    # every form ran: chunks applied, chunks refused (a redelivery) then lines, lines from the start
    assert forms["C"] >= 2 and forms["C with rejects"] >= 1, forms
    assert forms["C refused"] + forms["C with rejects refused"] >= 2, forms
    assert forms["L"] >= forms["C refused"] + forms["C with rejects refused"], forms


def test_a_refused_chunked_batch_counts_its_new_shares_once(redis_server: RedisServer) -> None:
    """A redelivered tail plus new shares: the chunks are refused with nothing written, the lines count only
    the new shares (the refusal must not have written the first half of anything)."""

    async def run() -> None:
        client = connect_redis(redis_server.url, timeout_s=10)
        try:
            await client.flushdb()
            acc = ShareAccounting(client, clock=lambda: NOW, policy=ONCE)
            spy = ScriptSpy(acc._script)
            acc._script = spy  # type: ignore[assignment]
            stream = [
                Share(
                    server_id="s",
                    channel_id=1,
                    user="ckt1alice",
                    worker="rig1",
                    job_id=1,
                    height=1,
                    nonce=i,
                    share_target=1 << 240,
                    share_difficulty=1.0,
                    accepted=True,
                    reason="",
                    is_block=False,
                    block_hash=b"",
                    timestamp=NOW - 10 + i * 0.001,
                    source="s-1",
                    seq=i + 1,
                )
                for i in range(3000)
            ]
            assert await acc.record(stream[:2000]) == (2000, 0)
            assert await acc.record(stream[1500:]) == (1000, 500)
            assert spy.forms == Counter({"C": 1, "C refused": 1, "L": 1})
            entries = await client.xrange(f"{PREFIX}sharelog")
            assert [int(f[b"n"]) for _, f in entries] == [1024, 976, 1000]
            assert [int(f[b"ncum"]) for _, f in entries] == [1024, 2000, 3000]
            assert [int(f[b"ecum"]) for _, f in entries] == [1, 2, 3]
            assert float(entries[-1][1][b"cum"]) == 3000 * 65536
            assert (await client.hget(f"{PREFIX}worker:ckt1alice.rig1", "accepted")) == b"3000"
            assert (await client.hget(f"{PREFIX}hwm:s-1", "ckt1alice.rig1")) == b"3000"
        finally:
            await client.aclose()

    asyncio.run(run())
