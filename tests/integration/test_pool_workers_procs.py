"""Stratum worker processes (``stratum.workers = 2``): two SV2 servers on one port (SO_REUSEPORT), the parent
keeps the job maker, block maker and accounting, the workers reach it over the IPC bus (``ckbpool.bus.ipc``).

(a) With a real ckb dev node and real Redis: encrypted CPU miners land on both workers (the parent's /status lists
    each worker's connections), a block is found and accepted by the node, and after the ordered shutdown the books
    equal the Successes the miners were answered, per user.
(b) kill -9 of the busiest worker under load: the port stays open, its miners reconnect (to the other worker or the
    restarted one), the parent starts the worker again, and no share answered Success is missing from the books.
    The only shares in the books the miners never heard back about are ones the killed worker published just
    before it died (in doubt for its miners by nature); the miners' journals bound them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (module-scoped node fixture)

from ckbpool.bus import JobTemplate, Topic
from ckbpool.ckb.node import CkbNode
from ckbpool.miner.journal import ShareJournal
from ckbpool.miner.sv2 import MinerError, Sv2Miner
from ckbpool.pool.accounting import ShareAccounting
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.service import Pool
from support.redis import RedisServer

pytestmark = pytest.mark.integration

VECTOR = Path(__file__).resolve().parents[1] / "data" / "rfc0031_vector.json"
MAX_MINERS = 12  # connections are spread by the kernel's hash of the 4-tuple: 12 all on one worker is 2^-11


async def _status(pool: Pool) -> dict[str, Any]:
    assert pool.status_server is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{pool.status_server.port}/status", timeout=5)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def _metrics(pool: Pool) -> str:
    assert pool.status_server is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{pool.status_server.port}/metrics", timeout=5)
        response.raise_for_status()
        return response.text


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"not in {timeout:.0f}s: {what}"
        await asyncio.sleep(0.1)


class MinerFleet:
    """Miners that reconnect when their connection drops (as real devices do), each session with its journal."""

    def __init__(self, port: int, authority: str) -> None:
        self.port = port
        self.authority = authority
        self.sessions: list[tuple[str, Sv2Miner]] = []  # every session, in start order
        self.failed: set[int] = set()  # id() of the sessions a dropped connection ended
        self.errors: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def add(self, user: str, index: int) -> Sv2Miner:
        miner = self._miner(user, index)
        self.tasks.append(asyncio.create_task(self._keep_mining(user, index, miner)))
        return miner

    def _miner(self, user: str, index: int) -> Sv2Miner:
        miner = Sv2Miner(
            "127.0.0.1",
            self.port,
            f"{user}.rig{index}",
            authority_public_key=self.authority,
            extended=index % 2 == 1,
            journal=ShareJournal(user, f"rig{index}"),
        )
        self.sessions.append((user, miner))
        return miner

    async def _keep_mining(self, user: str, index: int, miner: Sv2Miner) -> None:
        for _attempt in range(20):  # bounded: a pool that keeps refusing fails the test instead of spinning
            try:
                await miner.run(duration=120)
                return
            except (MinerError, ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self.failed.add(id(miner))
                self.errors.append(repr(exc))
            if self._stop.is_set():
                return
            await asyncio.sleep(0.2)
            miner = self._miner(user, index)
        raise AssertionError(f"{user}.rig{index} could not stay connected: {self.errors[-3:]}")

    def stop(self) -> None:
        self._stop.set()
        for _user, miner in self.sessions:
            miner.stop()

    async def wait(self) -> None:
        for task in self.tasks:
            with contextlib.suppress(MinerError, ConnectionError, asyncio.CancelledError):
                await asyncio.wait_for(task, 15)

    def check_running(self) -> None:
        for task in self.tasks:
            if task.done():
                task.result()

    def answered(self, user: str) -> int:
        """Shares of ``user`` answered Success, over every session."""
        return sum(m.stats.accepted for u, m in self.sessions if u == user)

    def in_doubt(self, user: str) -> int:
        """Shares of ``user`` submitted on a connection that then dropped, never answered."""
        return sum(
            m.journal.waiting for u, m in self.sessions if u == user and id(m) in self.failed and m.journal is not None
        )


async def test_two_workers_share_one_port_mine_a_block_and_keep_exact_books(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    credentials, authority = pool_keys()
    config = pool_config(
        pool_node,
        tmp_path,
        redis={"url": redis_server.url},
        stratum={"listen_host": "127.0.0.1", "listen_port": 0, "workers": 2},
    )
    pool = Pool(config, credentials=credentials)
    await pool.start()
    closed = False
    miners: list[tuple[str, Sv2Miner]] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        assert pool.server is None and pool.stratum_processes is not None and pool.accounting is not None
        port = pool.stratum_processes.port
        status = await _status(pool)
        assert status["stratum"] == f"127.0.0.1:{port}" and "stratum" in status["roles"]
        assert [row["server_id"] for row in status["stratum_processes"]] == [1, 2]
        # the workers do not preempt the parent on wake-up (procs docstring: a new tip reaches both promptly)
        pids = [p.pid for p in pool.stratum_processes.processes if p is not None]
        assert len(pids) == 2 and all(os.sched_getscheduler(pid) == os.SCHED_BATCH for pid in pids)
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the parent keeps the default

        async def on_both_workers() -> bool:
            rows = (await _status(pool))["stratum_processes"]
            return all(row["connections"] >= 1 for row in rows)

        while not await on_both_workers():  # one more miner until the kernel put some on each worker
            assert len(miners) < MAX_MINERS, f"{len(miners)} miners, all on one worker: {status}"
            user = ("alice", "bob")[len(miners) % 2]
            miner = Sv2Miner(
                "127.0.0.1",
                port,
                f"{user}.rig{len(miners)}",
                authority_public_key=authority,
                extended=len(miners) % 2 == 1,
            )
            miners.append((user, miner))
            tasks.append(asyncio.create_task(miner.run(duration=120)))
            await _until(lambda m=miner: _ready(m), 20, "the miner's channel opened")
            await asyncio.sleep(1.2)  # the workers report once a second
        status = await _status(pool)
        rows = status["stratum_processes"]
        assert sum(row["connections"] for row in rows) == status["connections"] == len(miners)
        print("connections per worker:", [row["connections"] for row in rows])

        async def block_accepted() -> bool:
            for task in tasks:
                if task.done():
                    task.result()
            return any(b.status == "accepted" for b in pool.recent_blocks)

        await _until(block_accepted, 60, "a block accepted by the node")
        accepted = [b for b in pool.recent_blocks if b.status == "accepted"]
        async with pool_node.client() as client:
            for block in accepted:
                header = await client.call("get_header_by_number", [hex(block.height)])
                assert header["hash"] == "0x" + block.block_hash.hex()
        # the finder wrote it to its own disk (its worker's directory) before submitting
        records = {p.name for p in (tmp_path / "blocks").glob("stratum-worker-*/*.json")}
        assert {f"{b.block_hash.hex()}.json" for b in accepted} <= records, records

        # the finder lists it in its next report (workers report once a second): wait for that, not the first read
        async def found_listed() -> bool:
            return bool((await _status(pool))["found_blocks"])

        await _until(found_listed, 10, "the finders' own records are listed")
        metrics = await _metrics(pool)
        assert f"ckbpool_open_connections {float(len(miners))}" in metrics
        assert "ckbpool_stratum_processes_up 2.0" in metrics

        await pool.close()  # workers flush shares + Successes, links read to the end, accounting drains
        closed = True
        for task in tasks:
            with contextlib.suppress(MinerError, ConnectionError, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        books = ShareAccounting(aioredis.from_url(redis_server.url))
        try:
            for user in ("alice", "bob"):
                answered = sum(m.stats.accepted for u, m in miners if u == user)
                recorded = int((await books.user_stats(user))["accepted"])
                print(f"{user}: answered Success {answered}, in the books {recorded}")
                assert answered > 0 and recorded == answered
        finally:
            await books.redis.aclose()
    finally:
        for _user, miner in miners:
            miner.stop()
        if not closed:
            await pool.close()


async def _ready(miner: Sv2Miner) -> bool:
    return miner.ready.is_set()


async def test_kill_9_of_a_worker_under_load_loses_no_answered_share(redis_server: RedisServer, tmp_path: Path) -> None:
    """No node needed: the parent runs accounting only and gets the job as a JobTemplate event (the RFC 0031
    template), which its IPC hub hands to the workers -- a restarted worker gets the latest one at once."""
    credentials, authority = pool_keys()
    config = PoolConfig.model_validate(
        {
            "network": "dev",
            "roles": ["stratum", "accounting"],
            "stratum": {"listen_host": "127.0.0.1", "listen_port": 0, "workers": 2},
            "vardiff": {"share_interval_s": 0.05, "retarget_interval_s": 1.0, "initial_hashrate": 1e5},
            "blocks": {"data_dir": str(tmp_path / "blocks")},
            "http": {"listen_host": "127.0.0.1", "listen_port": 0},
            "redis": {"url": redis_server.url},
            "success_batch_ms": 20,
        }
    )
    raw = json.loads(VECTOR.read_text())["template"]
    raw["compact_target"] = "0x1a08a97e"  # ~2^49 hashes a block: shares only (no node to take blocks here)
    template = json.dumps(raw).encode()
    pool = Pool(config, credentials=credentials)
    await pool.start()
    closed = False
    assert pool.stratum_processes is not None
    fleet = MinerFleet(pool.stratum_processes.port, authority)
    try:
        await pool.bus.publish(Topic.TEMPLATES, JobTemplate(1, template, time.time()))
        users = ("alice", "bob")
        for index in range(6):
            miner = fleet.add(users[index % 2], index)
            await _until(lambda m=miner: _ready(m), 20, "a miner's channel opened")

        async def spread() -> bool:
            fleet.check_running()
            rows = (await _status(pool))["stratum_processes"]
            # every miner added so far (index of them) is connected, and each worker has some
            return sum(row["connections"] for row in rows) == index and all(row["connections"] for row in rows)

        index = 6
        while not await _poll(spread, 3):
            assert index < MAX_MINERS, "the kernel put every miner on one worker"
            fleet.add(users[index % 2], index)
            index += 1
        rows = (await _status(pool))["stratum_processes"]
        victim = max(rows, key=lambda row: row["connections"])
        before = {user: fleet.answered(user) for user in users}
        await asyncio.sleep(1.0)
        assert all(fleet.answered(user) > before[user] for user in users), "the miners are not under load"

        os.kill(victim["pid"], signal.SIGKILL)

        async def restarted() -> bool:
            fleet.check_running()
            row = (await _status(pool))["stratum_processes"][victim["index"]]
            return bool(row["restarts"] == 1 and row["alive"] and row["pid"] != victim["pid"])

        await _until(restarted, 30, "the parent restarted the killed worker")
        assert fleet.failed, "no miner lost its connection"
        after_kill = {user: fleet.answered(user) for user in users}

        async def all_back() -> bool:
            fleet.check_running()
            status = await _status(pool)
            return bool(status["connections"] == index and all(fleet.answered(u) > after_kill[u] + 20 for u in users))

        await _until(all_back, 30, "every miner reconnected and mining")
        print(
            "connections per worker after the kill:",
            [r["connections"] for r in (await _status(pool))["stratum_processes"]],
        )

        await pool.close()
        closed = True
        fleet.stop()
        await fleet.wait()
        books = ShareAccounting(aioredis.from_url(redis_server.url))
        try:
            for user in users:
                answered, doubt = fleet.answered(user), fleet.in_doubt(user)
                recorded = int((await books.user_stats(user))["accepted"])
                print(f"{user}: answered Success {answered}, in the books {recorded}, in doubt at the kill {doubt}")
                assert answered <= recorded <= answered + doubt
        finally:
            await books.redis.aclose()
    finally:
        fleet.stop()
        if not closed:
            await pool.close()


async def _poll(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.2)
    return False
