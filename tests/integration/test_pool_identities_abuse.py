"""100k distinct worker names against the real pool (issue 15, "Must show": abuse runs), while an honest miner mines.

A real dev ckb node (genesis target 2^220: shares flow, no CPU finds a block), the real Pool with its books in a
real Redis, one honest CPU miner (``honest.rig1``) the whole time, and an abuser on a few connections that tags
each share with a fresh worker name (extension 0x0002, as a proxy tags its devices):
half of the names each get one *valid* share (the difficulty floor is lowered for the run so that every hash is a
share: the worst case, the abuser paid nothing), the other half one *invalid* share each (an unknown job id: free
for anyone). Checked after the pool has drained its books:

- every name answered valid is in the books with TTLs on its keys (``worker:`` hash, ``idle_ttl_s``), and no other
  name is: a rejected-only name leaves no key, no ``workers`` member and no dedup mark;
- the honest miner's accepted shares are all in the books (its Successes == its ``accepted`` counter there);
- the work trimmer ran over the abuser's share log and exported its figures.

The abuser runs in the pool's own process and event loop (one process, so RSS covers both, and the abuser's
bursts take loop time from the honest miner's connection too): the honest share *rate* here says nothing about
the pool (benchmarks.abuse_pool measures it out of process); its *correctness* is what is asserted.

The figures (names/s, pool process RSS before/after, Redis memory and keys) are printed (``-s``) and asserted only
for correctness, never for speed. Bounded: fixed name counts, every wait with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from test_pool_e2e import pool_config, pool_keys

from ckbpool.ckb.devwallet import DevKey
from ckbpool.ckb.eaglesong import search
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.target import target_to_compact
from ckbpool.miner.journal import ShareJournal
from ckbpool.miner.sv2 import Sv2Miner, _Job
from ckbpool.payouts.pplns import read_shares
from ckbpool.pool.accounting import PREFIX
from ckbpool.pool.service import Pool
from ckbpool.sv2 import ckb_profile
from support.redis import RedisServer

pytestmark = pytest.mark.integration

HARD_COMPACT_TARGET = target_to_compact(1 << 220)
CONNECTIONS = 4  # per kind (valid names / invalid names)
NAMES_PER_CONNECTION = 12_500  # 4 x 12,500 x 2 kinds = 100,000 distinct worker names
IDLE_TTL_S = 30 * 86400
DEADLINE_S = 240.0


@pytest.fixture(scope="module")
def hard_node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey) -> Iterator[CkbNode]:
    from conftest import start_dev_node

    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb-names"), dev_key, genesis_compact_target=HARD_COMPACT_TARGET
    )
    try:
        yield node
    finally:
        node.stop()


class NameMiner(Sv2Miner):
    """An abuser: each share it finds goes out under the next of its worker names, then it stops. With
    ``valid=False`` each share names a job the pool never sent (rejected: invalid-job-id)."""

    def __init__(self, *args: object, names: list[str], valid: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.names = names
        self.valid = valid
        self.by_seq: dict[int, str] = {}
        self._next = 0

    async def _mine_loop(self, worker: int) -> None:
        """Shares in bursts on the event loop (at the lowered floor each one costs a hash or a few): no thread
        hand-off per share, so the run measures the pool, not this client."""
        await self.ready.wait()
        counter = worker << 56
        while not self._stop.is_set():
            job = self._active
            if job is None:
                self._job_changed.clear()
                await self._job_changed.wait()
                continue
            prefix = self.prefix + bytes(self.extranonce_size)
            for _ in range(64):
                found = search(job.pow_hash, counter, 1 << 16, self.target, blake2b=self.blake2b, nonce_prefix=prefix)
                if found is None:
                    counter += 1 << 16
                    continue
                counter = (found >> (8 * len(prefix))) + 1
                self._submit(job, found.to_bytes(16, "little"))
                if self._stop.is_set():
                    break
            await asyncio.sleep(0)  # the session writes (and reads answers) between bursts

    def _submit(self, job: _Job, nonce16: bytes) -> None:
        if self._next >= len(self.names):
            self.stop()
            return
        name = self.names[self._next]
        self._next += 1
        assert self.channel_id is not None and self.journal is not None
        parts = ckb_profile.split_nonce16(nonce16, len(self.prefix))
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        job_id = job.job_id if self.valid else job.job_id ^ 0x5A5A0000
        self.session.submit_extended(
            self.channel_id, self._seq, job_id, parts.nonce, job.min_ntime or 0, parts.version, parts.extranonce, name
        )
        self.by_seq[self._seq] = name
        self.stats.submitted += 1
        self.journal.submitted(self._seq, str(job_id), int.from_bytes(nonce16, "little"))

    def answered(self, answer: str) -> set[str]:
        assert self.journal is not None
        return {self.by_seq[s.key] for s in self.journal.shares if s.answer == answer}


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def pool(hard_node: CkbNode, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[tuple[Pool, str]]:
    credentials, authority = pool_keys()
    config = pool_config(
        hard_node,
        tmp_path,
        stratum={
            "listen_host": "127.0.0.1",
            "listen_port": 0,
            # the limits that would slow the run down are not under test here (test_pool_abuse.py tests them)
            "max_messages_per_second": 100_000.0,
            "message_burst": 200_000,
        },
        # every hash a share for the abuser (declares ~0 H/s, no retarget during the run); the honest miner
        # declares its paced rate and gets ~2 shares/s
        vardiff={
            "share_interval_s": 0.5,
            "retarget_interval_s": 3600.0,
            "min_hashrate": 1e-9,
            "min_share_difficulty": 1e-15,
            "initial_hashrate": 1e-9,
        },
        redis={"url": redis_server.url, "idle_ttl_s": IDLE_TTL_S},
    )
    pool = Pool(config, credentials=credentials)
    await pool.start()
    try:
        await wait_for(lambda: pool.watcher is not None and pool.watcher.current is not None, 20, "a first job")
        yield pool, authority
    finally:
        await pool.close()


async def test_100k_worker_names_leave_bounded_books_and_the_honest_miner_is_fully_counted(
    pool: tuple[Pool, str],
) -> None:
    the_pool, authority = pool
    assert the_pool.server is not None and the_pool.accounting is not None
    host, port = the_pool.server.address
    redis = the_pool.accounting.redis
    honest = Sv2Miner(
        host, port, "honest.rig1", authority_public_key=authority, nominal_hash_rate=1e5, max_hashrate=1e5,
        journal=ShareJournal("honest", "rig1"), drain_s=10.0,
    )  # fmt: skip
    honest_task = asyncio.create_task(honest.run(duration=DEADLINE_S))
    await wait_for(lambda: honest.stats.accepted > 0 or honest_task.done(), 30, "the honest miner's first share")
    assert not honest_task.done(), honest_task
    rss_before = rss_kb()

    abusers = [
        NameMiner(
            host,
            port,
            "abuser.rig",
            authority_public_key=authority,
            extended=True,
            nominal_hash_rate=1e-9,
            user_identity_tlv="x",
            journal=ShareJournal("abuser", "x"),
            drain_s=30.0,
            names=[f"{'v' if valid else 'r'}{c}-{i}" for i in range(NAMES_PER_CONNECTION)],
            valid=valid,
        )
        for valid in (True, False)
        for c in range(CONNECTIONS)
    ]
    started = time.monotonic()
    accepted_before = honest.stats.accepted
    results = await asyncio.wait_for(
        asyncio.gather(*(a.run(duration=DEADLINE_S) for a in abusers), return_exceptions=True), DEADLINE_S + 30
    )
    abuse_s = time.monotonic() - started
    rss_peak = rss_kb()
    for abuser, result in zip(abusers, results, strict=True):
        assert not isinstance(result, BaseException), result
        assert abuser.journal is not None and abuser.journal.waiting == 0, "every share was answered"
        assert abuser.stats.submitted == NAMES_PER_CONNECTION
    valid_names = set().union(*(a.answered("success") for a in abusers if a.valid))
    rejected_names = set().union(*(a.answered("error") for a in abusers))
    refused_valid = set().union(*(a.answered("error") for a in abusers if a.valid))
    assert len(rejected_names - refused_valid) == CONNECTIONS * NAMES_PER_CONNECTION  # every invalid one refused
    assert len(valid_names) + len(refused_valid) == CONNECTIONS * NAMES_PER_CONNECTION
    assert len(valid_names) >= 0.99 * CONNECTIONS * NAMES_PER_CONNECTION, f"{len(refused_valid)} valid refused"

    # the honest miner kept mining through it; then it stops and waits for its last answers
    await wait_for(lambda: honest.stats.accepted > accepted_before or honest_task.done(), 30, "an honest share")
    honest.stop()
    await asyncio.wait_for(honest_task, 30)
    assert honest.journal is not None and honest.journal.waiting == 0
    # the books take everything queued (the stratum server has published it all: every share was answered);
    # then the trimmer makes a pass over what the abuse left
    the_pool.accounting.drain()
    await wait_for(lambda: the_pool.accounting is not None and the_pool.accounting.stopped, 60, "accounting drained")
    assert the_pool.share_log_trimmer is not None
    await the_pool.share_log_trimmer.run_once()

    # the honest miner's shares: every Success is in the books
    honest_books = await the_pool.accounting.worker_stats("honest", "rig1")
    assert int(honest_books["accepted"]) == honest.stats.accepted > 0

    # names in the books: exactly the valid ones (and the honest miner), each with a TTL
    workers: set[str] = set()
    async for raw in redis.scan_iter(match=f"{PREFIX}worker:*", count=10_000):
        workers.add(raw.decode().removeprefix(f"{PREFIX}worker:"))
    expected = {f"abuser.{name}" for name in valid_names} | {"honest.rig1"}
    assert workers == expected, (len(workers), len(expected))
    members = {m.decode() for m in await redis.zrange(f"{PREFIX}workers", 0, -1)}
    assert members == expected
    pipe = redis.pipeline(transaction=False)
    for name in sorted(workers):
        pipe.ttl(f"{PREFIX}worker:{name}")
    ttls = await pipe.execute()
    assert all(0 < ttl <= IDLE_TTL_S for ttl in ttls), "every identity's key expires when idle"
    assert 0 < await redis.ttl(f"{PREFIX}user:abuser") <= IDLE_TTL_S
    # rejected-only names: no key, no member, no dedup mark
    marks: set[str] = set()
    async for raw in redis.scan_iter(match=f"{PREFIX}hwm:*", count=1000):
        key = raw.decode()
        if not key.endswith(":seen"):
            marks |= {f.decode() for f in await redis.hkeys(key)}
    rejected_only = {f"abuser.{name}" for name in rejected_names - valid_names}
    assert not rejected_only & marks
    assert not rejected_only & workers
    assert len(rejected_only) == CONNECTIONS * NAMES_PER_CONNECTION + len(refused_valid)

    # the share log holds each valid name's one share (+ the honest miner's), measured by the trimmer
    trimmer = the_pool.share_log_trimmer
    assert trimmer.entries == len(await read_shares(redis)) >= len(valid_names)  # shares, not entries
    registry = the_pool.metrics.registry
    assert registry.get_sample_value("ckbpool_accounting_share_log_entries") == trimmer.entries
    assert (registry.get_sample_value("ckbpool_accounting_share_log_window_work_hashes") or 0) > 0
    info = await redis.info("memory")
    keys = await redis.dbsize()
    print(
        f"\n100k names: {len(valid_names)} valid + {len(rejected_names)} rejected names in {abuse_s:.1f}s "
        f"({(len(valid_names) + len(rejected_names)) / abuse_s:.0f} names/s over {2 * CONNECTIONS} connections); "
        f"honest miner {honest.stats.accepted} accepted ({honest.stats.accepted - accepted_before} during/after); "
        f"pool+clients RSS {rss_before / 1024:.0f} -> {rss_peak / 1024:.0f} MiB (one process); "
        f"Redis {info['used_memory'] / 2**20:.1f} MiB, {keys} keys; share log {trimmer.entries} entries, "
        f"window ratio {trimmer.window_ratio():.3g}"
    )
