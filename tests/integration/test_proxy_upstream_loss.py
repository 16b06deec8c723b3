"""The proxy's pool goes away: V1 miners are held for the grace, then closed and refused until the pool is back.

Real dev ckb node, a real Pool (encrypted SV2), the Proxy and hand-driven V1 clients (plus one CPU miner). The
Pool object is closed (its listener and every SV2 connection go) and a new one is started later on the same port
with the same keys, as a restarted pool would be. Found by the chaos run (docs/chaos.md, "Load note"): a proxy
that keeps its miners connected to a dead job wastes the farm's hashrate, since an ASIC fails over to its backup
pools only when its connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)
from test_proxy_v1_conversation import RE_NOTIFY, RE_SUBSCRIBE, RawV1

from ckbpool.ckb.node import CkbNode
from ckbpool.miner.v1 import V1Miner
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy, load_proxy_config
from ckbpool.proxy.downstream import V1Server
from ckbpool.proxy.limits import Refusal

pytestmark = pytest.mark.integration

USER = "ckt1qupstreamlossaccount"


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Pools:
    """Starts pools on one port with one key pair: the first on a free port, the later ones on the same."""

    def __init__(self, node: CkbNode, tmp_path: Path) -> None:
        self.node, self.tmp_path = node, tmp_path
        self.credentials, self.authority = pool_keys()
        self.port = 0
        self.running: list[Pool] = []

    async def start(self) -> Pool:
        index = len(self.running)
        stratum = {"listen_host": "127.0.0.1", "listen_port": self.port}
        pool = Pool(
            pool_config(self.node, self.tmp_path / f"pool{index}", stratum=stratum), credentials=self.credentials
        )
        await pool.start()
        self.running.append(pool)
        assert pool.server is not None
        self.port = pool.server.address[1]
        return pool

    async def close_all(self) -> None:
        for pool in self.running:
            with contextlib.suppress(Exception):
                await pool.close()


@pytest.fixture
async def pools(pool_node: CkbNode, tmp_path: Path) -> AsyncIterator[Pools]:  # noqa: F811
    pools = Pools(pool_node, tmp_path)
    try:
        yield pools
    finally:
        await pools.close_all()


def proxy_for(pools: Pools, grace_s: float) -> Proxy:
    return Proxy(
        load_proxy_config(
            data={
                "identity": "aggregated",  # account names here are not addresses
                "http": {"listen_port": 0},
                "upstream": {
                    "host": "127.0.0.1",
                    "port": pools.port,
                    "authority_public_key": pools.authority,
                    "user_identity": f"{USER}.farm",
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 0.5,
                },
                "v1": {
                    "listen_host": "127.0.0.1",
                    "listen_port": 0,
                    "upstream_loss_grace_s": grace_s,
                    "vardiff": {"enabled": False},
                },
            }
        )
    )


async def mining_client(v1: V1Server) -> tuple[RawV1, int]:
    """A V1 client subscribed and authorized, with its first job: (client, that job's downstream id)."""
    client = await RawV1.connect(v1.address)
    client.send(1, "mining.subscribe", ["loss-test", None])
    assert RE_SUBSCRIBE.fullmatch(await client.response(1))
    client.send(2, "mining.authorize", [f"{USER}.rig1", "x"])
    assert json.loads(await client.response(2))["result"] is True
    notify = await client.notification(RE_NOTIFY)
    return client, int(notify.group(1), 16)


async def read_until_closed(client: RawV1, timeout: float) -> bool:
    """True if the server closed the connection within ``timeout`` (EOF or reset), False if it stayed open."""
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            data = await asyncio.wait_for(client.reader.read(1 << 16), left)
            if not data:
                return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return False


def metric(proxy: Proxy, line: str) -> bool:
    return line in generate_latest(proxy.registry).decode().splitlines()


async def test_upstream_loss_closes_v1_miners_refuses_until_the_pool_is_back_then_mining_resumes(
    pools: Pools,
) -> None:
    pool = await pools.start()
    grace_s = 1.0
    async with proxy_for(pools, grace_s) as proxy:
        await proxy.wait_upstream(30)
        v1 = proxy.v1
        assert v1 is not None
        client, _ = await mining_client(v1)
        assert v1.upstream_state == "serving"
        assert metric(proxy, 'ckbpool_proxy_v1_upstream_state{state="serving"} 1.0')

        await pool.close()
        # held for the grace, then closed: the client sees its connection end (bounded wait, no timing asserted)
        assert await read_until_closed(client, grace_s + 15), "the V1 connection must be closed after the grace"
        client.close()
        assert v1.upstream_state == "refusing" and not v1.connections
        assert v1.closed_for_upstream_loss == 1 and v1.upstream_losses == 1
        assert metric(proxy, 'ckbpool_proxy_v1_upstream_state{state="refusing"} 1.0')
        assert metric(proxy, "ckbpool_proxy_v1_closed_for_upstream_loss_total 1.0")
        assert proxy.stats()["v1"]["upstream_loss"]["reason"]

        # reconnect attempts are refused at accept while the pool is away (the miner's backup pool takes over)
        for _ in range(2):
            again = await RawV1.connect(v1.address)
            again.send(1, "mining.subscribe", ["loss-test", None])
            assert await read_until_closed(again, 10), "a new V1 connection must be refused without a pool"
            again.close()
        assert v1.refusals[Refusal.NO_UPSTREAM] == 2
        assert metric(proxy, 'ckbpool_proxy_v1_refusals_total{reason="no_upstream"} 2.0')

        # the pool comes back: accepted again, and a miner's share is credited by the new pool
        second = await pools.start()
        await _wait(lambda: v1.upstream_state == "serving", 30, "the proxy to serve again")
        miner = V1Miner(*v1.address, f"{USER}.rig2", chunk=5_000)
        task = asyncio.create_task(miner.run(duration=60))
        try:
            await _wait(lambda: miner.stats.accepted >= 1, 45, "a share accepted after the pool came back")
        finally:
            miner.stop()
            await asyncio.wait_for(task, 30)
        assert miner.stats.connects == 1
        assert second.server is not None
        credited = [c for s in second.server.sessions for c in s.channels.values() if c.user == USER]
        assert len(credited) == 1 and credited[0].accepted >= 1
        assert v1.refusals[Refusal.NO_UPSTREAM] == 2 and v1.upstream_losses == 1


async def test_a_blip_shorter_than_the_grace_keeps_the_miners_and_sends_them_a_clean_job(pools: Pools) -> None:
    pool = await pools.start()
    async with proxy_for(pools, 30.0) as proxy:
        await proxy.wait_upstream(30)
        v1 = proxy.v1
        assert v1 is not None
        client, first_job = await mining_client(v1)
        held = set(v1.connections)
        old_epoch = v1.jobs.epoch

        await pool.close()
        await _wait(lambda: not v1.upstream.connected, 10, "the proxy to notice")
        assert v1.upstream_state == "grace"
        assert metric(proxy, 'ckbpool_proxy_v1_upstream_state{state="grace"} 1.0')
        await pools.start()

        # every notify up to the first job of the new connection is an old one; that first new one is clean
        deadline = time.monotonic() + 30
        while True:
            match = await client.notification(RE_NOTIFY, max(0.1, deadline - time.monotonic()))
            job = v1.jobs.get(int(match.group(1), 16))
            assert job is not None
            if job.epoch > old_epoch:
                break
        assert match.group(5) == b"true", "the first job after a reconnect must be clean_jobs=true"
        assert job.downstream_id > first_job
        assert v1.upstream_state == "serving"
        assert set(v1.connections) == held and v1.closed_for_upstream_loss == 0 and v1.upstream_losses == 1
        assert v1.refusals[Refusal.NO_UPSTREAM] == 0
        client.close()


@pytest.mark.parametrize("keep", [False, True])
async def test_a_pool_never_reached_at_start_up_is_an_upstream_loss_unless_miners_are_kept(keep: bool) -> None:
    """No pool at all (a closed port): after the grace the proxy refuses V1 miners, or with
    ``keep_miners_without_upstream`` holds them (their subscribe unanswered) however long it takes."""
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    config = load_proxy_config(
        data={
            "identity": "aggregated",
            "http": {"enabled": False},
            "upstream": {"host": "127.0.0.1", "port": dead_port, "noise": False, "user_identity": f"{USER}.farm",
                         "reconnect_min_s": 0.2, "reconnect_max_s": 0.5},
            "v1": {"listen_host": "127.0.0.1", "listen_port": 0, "upstream_loss_grace_s": 0.5,
                   "keep_miners_without_upstream": keep},
        }
    )  # fmt: skip
    async with Proxy(config) as proxy:
        v1 = proxy.v1
        assert v1 is not None
        early = await RawV1.connect(v1.address)
        early.send(1, "mining.subscribe", ["loss-test", None])
        await _wait(lambda: v1.upstream.last_error != "", 10, "a failed connection attempt")
        if keep:
            assert not await read_until_closed(early, 2.0), "kept: the miner stays connected"
            assert v1.upstream_state == "grace" and len(v1.connections) == 1
            assert v1.refusals[Refusal.NO_UPSTREAM] == 0 and v1.closed_for_upstream_loss == 0
        else:
            assert await read_until_closed(early, 10.0), "the held miner is closed after the grace"
            assert v1.upstream_state == "refusing" and v1.closed_for_upstream_loss == 1
            late = await RawV1.connect(v1.address)
            assert await read_until_closed(late, 10.0), "and a new one is refused"
            late.close()
            assert v1.refusals[Refusal.NO_UPSTREAM] == 1
        early.close()
