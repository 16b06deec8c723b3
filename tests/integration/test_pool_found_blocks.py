"""Found blocks in the Kafka topology (issue 15, item 2): the stratum process that finds a block writes it to its
own disk, submits it to the node itself and announces it on the bus's block lane; the block maker records
exactly one outcome per block. Real ckb dev node, real Kafka (KRaft), real Redis, the pool's roles as separate
``ckbpool pool run`` processes (helpers from test_pool_kafka).

- Kafka down while a stratum-only process finds a block: the block is on the stratum's disk and on the node's
  main chain before Kafka is back (the block maker cannot have seen it), its event waits in the block spool
  while shares pile up in the share spool; once Kafka is back the block maker, the metrics and the books hold
  exactly one outcome for it.
- kill -9 of the stratum process after it wrote a block and before the node answered its submit_block (a
  proxy in front of the node holds the call): the block is on disk, pending, not on the chain; the restarted
  process submits it from disk, the node accepts it, and a block maker started afterwards records it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from aiohttp import ClientSession, web
from test_pool_e2e import pool_node  # noqa: F401  (module-scoped node fixture)
from test_pool_kafka import Proc, _metric, _wait, kafka, redis_server, write_config  # noqa: F401

from ckbpool.ckb.node import CkbNode, free_port
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.keys import Keypair, encode_secret_key
from support.kafka import KafkaBroker
from support.redis import RedisServer

pytestmark = pytest.mark.integration


class Cluster:
    """Writes one config per pool process (own blocks dir, spool, topic prefix per test) and runs them."""

    def __init__(self, tmp: Path, node: CkbNode, broker: KafkaBroker, redis: RedisServer) -> None:
        self.tmp = tmp
        self.node = node
        self.kafka = broker
        self.redis = redis
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.authority, static = Keypair.generate(), Keypair.generate()
        self.key_file = tmp / "pool-static.key"
        self.key_file.write_text(encode_secret_key(static.secret))
        self.cert_file = tmp / "pool-certificate.hex"
        now = int(time.time())
        cert = Certificate.issue(self.authority, static.xonly_public, now - 60, now + 3600)
        self.cert_file.write_text(cert.to_bytes().hex())
        self.redis_password = tmp / "redis.pass"
        self.redis_password.write_text(redis.password)
        self.procs: dict[str, Proc] = {}
        self._configs: dict[str, tuple[Path, int, int | None]] = {}

    def blocks_dir(self, name: str) -> Path:
        return self.tmp / f"blocks-{name}"

    def spawn(self, name: str, roles: list[str], *, rpc_url: str | None = None) -> Proc:
        """Start (or restart, with the same config and ports) the process ``name``."""
        if name not in self._configs:
            http_port = free_port()
            stratum_port = free_port() if "stratum" in roles else None
            bus = self.kafka.url(
                client_id=name, spool_dir=str(self.tmp / f"spool-{name}"), connect_timeout="3",
                topic_prefix=self.prefix,
            )  # fmt: skip
            sections: dict[str, object] = {
                "network": "dev",
                "roles": roles,
                "node": {
                    "rpc_url": rpc_url or self.node.config.rpc_url,
                    "subscribe_address": f"127.0.0.1:{self.node.config.tcp_rpc_port}",
                    "poll_interval_ms": 200,
                },
                "stratum": {
                    "listen_host": "127.0.0.1",
                    "listen_port": stratum_port or 0,
                    "server_id": 1,
                    # one stratum process: these tests read the finder's own blocks directory (workers would each
                    # keep theirs under it, stratum-worker-<i>)
                    "workers": 1,
                    "static_key_file": str(self.key_file),
                    "certificate_file": str(self.cert_file),
                },
                "vardiff": {"share_interval_s": 0.1, "retarget_interval_s": 1.0, "initial_hashrate": 1e6},
                "blocks": {"data_dir": str(self.blocks_dir(name))},
                "bus": {"url": bus},
                "redis": {
                    "url": self.redis.url.replace(f":{self.redis.password}@", ""),
                    "password_file": str(self.redis_password),
                    "share_log_maxlen": 1000,
                },
                "http": {"listen_host": "127.0.0.1", "listen_port": http_port},
                "success_batch_ms": 20,
            }
            path = write_config(self.tmp / f"{name}.toml", sections)
            self._configs[name] = (path, http_port, stratum_port)
        path, http_port, stratum_port = self._configs[name]
        log = self.tmp / f"{name}.log"
        if log.exists():
            log.rename(self.tmp / f"{name}.{len(list(self.tmp.glob(f'{name}.*log')))}.log")
        proc = Proc(name, path, log, http_port, stratum_port)
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def miner(self, stratum: Proc, user: str) -> Sv2Miner:
        assert stratum.stratum_port is not None
        return Sv2Miner(
            "127.0.0.1", stratum.stratum_port, f"{user}.rig", authority_public_key=self.authority.authority_public_key
        )


def records(directory: Path) -> dict[str, dict[str, Any]]:
    """The block records a process wrote, by block hash (hex, no 0x)."""
    out = {}
    for path in directory.glob("*.json"):
        with contextlib.suppress(ValueError, OSError):
            out[path.stem] = json.loads(path.read_text())
    return out


async def status(http: httpx.AsyncClient, proc: Proc) -> dict[str, Any]:
    result: dict[str, Any] = (await http.get(f"http://127.0.0.1:{proc.http_port}/status")).json()
    return result


async def healthy(http: httpx.AsyncClient, procs: list[Proc]) -> bool:
    for proc in procs:
        try:
            if (await http.get(f"http://127.0.0.1:{proc.http_port}/health")).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
    return True


async def on_main_chain(node: CkbNode, height: int, block_hash: str) -> bool:
    async with node.client() as client:
        header = await client.call("get_header_by_number", [hex(height)])
    return isinstance(header, dict) and header.get("hash") == "0x" + block_hash


async def metric_sum(http: httpx.AsyncClient, proc: Proc, name: str) -> float:
    text = (await http.get(f"http://127.0.0.1:{proc.http_port}/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.fixture
async def cluster(
    pool_node: CkbNode,  # noqa: F811
    kafka: KafkaBroker,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, pool_node, kafka, redis_server)
    try:
        yield c
    finally:
        c.stop()
        if kafka.process is None:  # a test stopped it: the module's other tests need it
            await asyncio.to_thread(kafka.start)


async def test_a_block_found_while_kafka_is_down_is_on_disk_and_on_chain_at_once_and_recorded_once(
    cluster: Cluster,
) -> None:
    procs = [
        cluster.spawn("jobmaker", ["jobmaker"]),
        cluster.spawn("stratum-1", ["stratum"]),
        cluster.spawn("blockmaker", ["blockmaker"]),
        cluster.spawn("accounting", ["accounting"]),
    ]
    _jobmaker, stratum, blockmaker, _accounting = procs
    rds = redis.Redis.from_url(cluster.redis.url)
    miner: Sv2Miner | None = None
    task: asyncio.Task[Any] | None = None
    async with httpx.AsyncClient(timeout=2) as http:
        try:
            await _wait(lambda: healthy(http, procs), 60, "every process to be healthy", procs)
            miner = cluster.miner(stratum, "erin")
            task = asyncio.create_task(miner.run(duration=240))

            # the whole path works with Kafka up: a block found, recorded by the block maker
            async def recorded_any() -> bool:
                return bool((await status(http, blockmaker))["last_blocks"])

            await _wait(recorded_any, 90, "a first block outcome at the block maker", procs)
            miner.stop()
            await task

            # the stratum's job is on the node's tip (nobody mines now), so the next block it finds is on the
            # main chain even though no new job can reach it during the outage
            async def job_on_tip() -> bool:
                async with cluster.node.client() as client:
                    tip = await client.get_tip_block_number()
                return await _metric(http, stratum.http_port, "ckbpool_job_height") == tip + 1

            await _wait(job_on_tip, 30, "the stratum's job to be on the node's tip", procs)
            await asyncio.to_thread(cluster.kafka.stop, keep_data=True)
            before = set(records(cluster.blocks_dir("stratum-1")))
            miner = cluster.miner(stratum, "erin")
            task = asyncio.create_task(miner.run(duration=240))

            def found_during_outage() -> set[str]:
                return set(records(cluster.blocks_dir("stratum-1"))) - before

            await _wait(lambda: found_during_outage(), 90, "a block found while Kafka is down", procs)
            miner.stop()
            await task
            new = found_during_outage()
            on_disk = records(cluster.blocks_dir("stratum-1"))

            # submitted by the stratum process itself, while Kafka is still down: on the node's main chain
            async def submitted_directly() -> bool:
                recs = records(cluster.blocks_dir("stratum-1"))
                return all(recs[h]["status"] != "pending" for h in new)

            await _wait(submitted_directly, 30, "the stratum's own submissions to get the node's answer", procs)
            on_disk = records(cluster.blocks_dir("stratum-1"))
            first = min(new, key=lambda h: on_disk[h]["found_at"])
            assert on_disk[first]["status"] == "accepted", on_disk[first]
            assert await on_main_chain(cluster.node, on_disk[first]["height"], first)
            assert cluster.kafka.process is None, "Kafka is back: the outage part of the test is over"
            answered = [h for h, r in on_disk.items() if r["status"] != "pending"]  # before and during the outage
            assert await metric_sum(http, stratum, "ckbpool_block_submissions_total") == len(answered)
            assert await metric_sum(http, stratum, "ckbpool_blocks_total") == 0  # the block maker's to count

            # the bus took the event (publish returned after its ack timeout): it waits in the block lane's
            # own spool, while shares pile up in theirs
            async def announced() -> bool:
                found = {b["hash"][2:]: b for b in (await status(http, stratum))["found_blocks"]}
                return all(found[h]["announced"] for h in new)

            await _wait(announced, 30, "the bus to take the found block events", procs)
            bus = (await status(http, stratum))["bus"]
            assert bus["block_spool_depth"] == len(new), bus
            assert bus["spool_depth"] > 0, bus
            recorded = {b["hash"][2:] for b in (await status(http, blockmaker))["last_blocks"]}
            assert not new & recorded, "the block maker heard of a block while Kafka was down"
            assert cluster.kafka.process is None

            await asyncio.to_thread(cluster.kafka.start)

            # the block maker records each block found during the outage, once
            async def recorded_all() -> bool:
                hashes = [b["hash"][2:] for b in (await status(http, blockmaker))["last_blocks"]]
                return new <= set(hashes)

            await _wait(recorded_all, 90, "the block maker to record the blocks found during the outage", procs)

            async def spools_drained() -> bool:
                bus = (await status(http, stratum))["bus"]
                return bus["spool_depth"] == 0 and bus["block_spool_depth"] == 0

            await _wait(spools_drained, 90, "the stratum's spools to drain", procs)
            await asyncio.sleep(5)  # a duplicate outcome would show up by now
            last = (await status(http, blockmaker))["last_blocks"]
            hashes = [b["hash"][2:] for b in last]
            for block_hash in new:
                assert hashes.count(block_hash) == 1, last
            outcome = next(b for b in last if b["hash"][2:] == first)
            assert outcome["status"] == "accepted", outcome
            assert len(hashes) == len(set(hashes)), last
            assert await metric_sum(http, blockmaker, "ckbpool_blocks_total") == len(hashes)
            books = [json.loads(e)["block_hash"] for e in rds.lrange("ckbpool:blocks", 0, -1)]
            for block_hash in new:
                assert books.count(block_hash) == 1, books
        finally:
            if miner is not None:
                miner.stop()
            if task is not None:
                with contextlib.suppress(Exception):
                    await task


class HoldingRpcProxy:
    """JSON-RPC proxy in front of the node: forwards every call, except that while ``hold`` is set a
    submit_block is never answered (the node never sees it) -- the moment to kill the process."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold = True
        self.held = asyncio.Event()
        self.forwarded_submits = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with contextlib.suppress(ValueError, AttributeError):
            if json.loads(body).get("method") == "submit_block":
                if self.hold:
                    self.held.set()
                    await asyncio.sleep(3600)
                self.forwarded_submits += 1
        assert self._session is not None
        async with self._session.post(self.upstream, data=body, headers={"content-type": "application/json"}) as r:
            return web.Response(body=await r.read(), status=r.status, content_type="application/json")

    async def __aenter__(self) -> HoldingRpcProxy:
        self._session = ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


async def test_a_stratum_killed_after_writing_a_block_and_before_submitting_it_submits_it_at_restart(
    cluster: Cluster,
) -> None:
    async with HoldingRpcProxy(cluster.node.config.rpc_url) as proxy, httpx.AsyncClient(timeout=2) as http:
        jobmaker = cluster.spawn("jobmaker", ["jobmaker"])
        stratum = cluster.spawn("stratum-1", ["stratum"], rpc_url=proxy.url)
        procs = [jobmaker, stratum]
        await _wait(lambda: healthy(http, procs), 60, "jobmaker and stratum to be healthy", procs)
        miner = cluster.miner(stratum, "frank")
        task = asyncio.create_task(miner.run(duration=240))
        try:
            await _wait(proxy.held.is_set, 90, "the stratum to submit a found block", procs)
            os.kill(stratum.popen.pid, signal.SIGKILL)
            stratum.popen.wait(10)
        finally:
            miner.stop()
            with contextlib.suppress(Exception):
                await task
        # the block is on the stratum's disk, not on the chain
        on_disk = records(cluster.blocks_dir("stratum-1"))
        assert len(on_disk) >= 1 and all(r["status"] == "pending" for r in on_disk.values()), on_disk
        block_hash, record = min(on_disk.items(), key=lambda item: item[1]["found_at"])
        assert not await on_main_chain(cluster.node, record["height"], block_hash)

        # restart: the block is submitted from disk and accepted
        proxy.hold = False
        stratum = cluster.spawn("stratum-1", ["stratum"], rpc_url=proxy.url)
        procs = [jobmaker, stratum]

        def replayed() -> bool:
            return records(cluster.blocks_dir("stratum-1"))[block_hash]["status"] != "pending"

        await _wait(replayed, 60, "the restarted stratum to submit the block from disk", procs)
        assert records(cluster.blocks_dir("stratum-1"))[block_hash]["status"] == "accepted"
        assert await on_main_chain(cluster.node, record["height"], block_hash)
        assert proxy.forwarded_submits >= 1

        async def announced() -> bool:
            return all(r["announced"] for r in records(cluster.blocks_dir("stratum-1")).values())

        await _wait(announced, 30, "the block's event to reach Kafka", procs)

        # a block maker started now receives the event (once or twice: announced before the kill and maybe
        # again at restart) and records exactly one outcome
        blockmaker = cluster.spawn("blockmaker", ["blockmaker"])
        procs.append(blockmaker)

        async def recorded() -> bool:
            try:
                return any(b["hash"][2:] == block_hash for b in (await status(http, blockmaker))["last_blocks"])
            except httpx.HTTPError:
                return False

        await _wait(recorded, 60, "the block maker to record the block", procs)
        await asyncio.sleep(5)
        last = (await status(http, blockmaker))["last_blocks"]
        mine = [b for b in last if b["hash"][2:] == block_hash]
        assert len(mine) == 1 and mine[0]["status"] == "accepted", last
        assert await metric_sum(http, blockmaker, "ckbpool_blocks_total") == len(last)
