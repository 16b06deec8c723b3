"""Fairness of per-worker identity through the proxy, measured: credited work per hash and share rate per device.

Real dev ckb node -> real Pool (encrypted SV2, Redis accounting) -> Proxy (``identity = "per-worker"``) -> V1 CPU
miners, and an SV2 CPU miner on its own channel. The miners' hash rates are capped (``max_hashrate``, far below
what one core does: ~3 MH/s), so the ratios are the test's, not the shared machine's load; each miner counts
the hashes it really did.

Why the tolerances hold (the statistics)
----------------------------------------
Each hash of a device on target ``T`` earns ``w = 2^256 / T`` with probability ``1 / w``: the credited work of a
device that did ``H`` hashes has mean ``H`` and variance ``H * w``, i.e. a relative standard deviation of
``1 / sqrt(N)`` for ``N = H / w`` shares, whatever the vardiff does with ``T`` on the way. At a configured share
interval of 0.05 s over 40 s each device sends about ``N = 800`` shares (fewer while vardiff converges), so:

- the credited-work ratio of two devices has a relative deviation of ``sqrt(1/N1 + 1/N2)`` ~ 5 %: ±20 % is
  about 4 standard deviations (fails about 1 run in 15,000);
- the pool's hashrate figure of one device (``/status`` ``users``, over the ~35 s since its first share,
  ~700 shares) deviates ~4 %: ±30 % is over 7 standard deviations;
- a device's share interval, counted over the 30 s after an 8 s warm-up (~600 shares), deviates ~4 %: "within
  2x" is far outside chance; only a vardiff that aims wrong can fail it.

All of this assumes each device's target stays near its rate's (``w`` ~ rate x interval). A device put on a
target ``k`` times too hard sends ``k`` times fewer, ``k`` times larger shares: still credited its work on average,
but with ``k`` times the variance while it lasts. Under CPU load that is what made the V1 device of the second test
fail 1 run in 5 (0.82 credited work per hash vs 1.05 for the SV2 miner, issue 14): a backlog of shares (a stalled
event loop, the pool's batched verdicts) looked like a flood to the pool's and the proxy's vardiff, which set a
1,000-hash/share device on 5,853 and then 30,601 hashes per share. So both tests also check that premise: no
device's target was ever more than 3x harder than its rate needs -- by chance a 2 s window of ~40 shares cannot
say "3x faster"; only a vardiff that misjudges a backlog can.

Systematic losses both kinds of device share (shares in flight when a new block arrives are stale; the V1 miner
drops shares that miss a target made harder meanwhile) are a few percent at these rates.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_pool_e2e import pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)
from test_proxy_worker_identity import (
    dev_address,
    identity_pool_config,
    proxy_config,
    redis_hash,
    settle_accounting,
)

from ckbpool.ckb.node import CkbNode
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.miner.v1 import V1Miner
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy
from support.redis import RedisServer

pytestmark = pytest.mark.integration

INTERVAL_S = 0.05  # the configured share interval, at the pool and at the proxy
RETARGET_S = 2.0
DURATION_S = 40.0
WARM_UP_S = 8.0
# the pool's share-difficulty floor as a hashrate (default 10 kH/s): below the slow device's 4 kH/s, else that
# device could not be given a target easy enough for one share per interval
MIN_HASHRATE = 1_000.0  # vardiff converging: not counted in the share-interval figures
TOO_HARD = 3.0  # a target this many times harder than the device's rate needs breaks the statistics above


def hardest_hashes_per_share(targets: list[int]) -> float:
    """The hardest target a miner was given, as expected hashes per share."""
    return max(((1 << 256) / t for t in targets), default=0.0)


def assert_targets_sized(name: str, targets: list[int], rate: float) -> None:
    """The premise of the tolerances: the device's target never went far harder than its rate needs."""
    hardest = hardest_hashes_per_share(targets)
    assert hardest <= TOO_HARD * rate * INTERVAL_S, (
        f"{name}: given a target of {hardest:.0f} hashes/share at {rate:.0f} H/s ({rate * INTERVAL_S:.0f} needed)"
    )


async def http_status(pool: Pool) -> dict[str, Any]:
    """The operator's /status, over HTTP as an operator reads it."""
    assert pool.status_server is not None
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"http://127.0.0.1:{pool.status_server.port}/status")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def worker_figures(status: dict[str, Any], name: str) -> dict[str, Any]:
    user, _, worker = name.partition(".")
    figures: dict[str, Any] = status["users"][user]["workers"][worker]
    return figures


class Sampler:
    """/status and the miners' own hash counters at two moments of the run: after the warm-up and near its end."""

    def __init__(self, pool: Pool, miners: dict[str, V1Miner | Sv2Miner]) -> None:
        self.pool = pool
        self.miners = miners
        self.samples: list[tuple[float, dict[str, Any], dict[str, int]]] = []

    async def run(self) -> None:
        for at in (WARM_UP_S, DURATION_S - 2.0):
            await asyncio.sleep(at - (time.monotonic() - self.started))
            hashes = {name: m.stats.hashes for name, m in self.miners.items()}
            self.samples.append((time.monotonic(), await http_status(self.pool), hashes))

    def start(self) -> asyncio.Task[None]:
        self.started = time.monotonic()
        return asyncio.create_task(self.run())

    def interval(self, name: str) -> float:
        """Seconds per accepted share at the pool between the two samples."""
        (t0, s0, _), (t1, s1, _) = self.samples
        shares = worker_figures(s1, name)["accepted"] - worker_figures(s0, name)["accepted"]
        return (t1 - t0) / max(1, shares)

    def real_hashrate(self, name: str) -> float:
        """What the miner really hashed per second between the two samples (its own count)."""
        (t0, _, h0), (t1, _, h1) = self.samples
        return (h1[name] - h0[name]) / (t1 - t0)

    def pool_hashrate(self, name: str) -> float:
        """The pool's figure for the worker at the second sample."""
        rate: float = worker_figures(self.samples[1][1], name)["hashrate_hps"]
        return rate


async def test_two_devices_of_10x_hashrate_behind_one_proxy_are_credited_10x_and_share_at_the_interval(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """A 40 kH/s and a 4 kH/s V1 device on one proxy (one upstream channel): the work the pool credits them
    (Redis) is 10x apart (±20 %), and each sends about one share per configured interval (within 2x) -- the
    channel aims at the slow one, the proxy makes the fast one's own target 10x harder."""
    fast_rate, slow_rate = 40_000.0, 4_000.0
    credentials, authority = pool_keys()
    config = identity_pool_config(
        pool_node,
        tmp_path,
        redis_server,
        share_interval_s=INTERVAL_S,
        retarget_interval_s=RETARGET_S,
        initial_hashrate=slow_rate,
        min_hashrate=MIN_HASHRATE,
    )
    fast_name, slow_name = f"{dev_address()}.fast", f"{dev_address()}.slow"
    async with Pool(config, credentials=credentials) as pool:
        pc = proxy_config(
            pool,
            authority,
            f"{dev_address()}.proxy",
            vardiff={
                "initial_difficulty": slow_rate * INTERVAL_S,
                "share_interval_s": INTERVAL_S,
                "retarget_interval_s": RETARGET_S,
            },
        )
        async with Proxy(pc) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            fast = V1Miner(*proxy.v1.address, fast_name, chunk=2_000, max_hashrate=fast_rate)
            slow = V1Miner(*proxy.v1.address, slow_name, chunk=200, max_hashrate=slow_rate)
            sampler = Sampler(pool, {fast_name: fast, slow_name: slow})
            sampling = sampler.start()
            fast_stats, slow_stats = await asyncio.gather(fast.run(duration=DURATION_S), slow.run(duration=DURATION_S))
            await sampling
            await settle_accounting(pool)
            books = {name: await redis_hash(pool, f"worker:{name}") for name in (fast_name, slow_name)}

    work = {name: float(b.get("work", 0)) for name, b in books.items()}
    hashes = {fast_name: fast_stats.hashes, slow_name: slow_stats.hashes}
    credited_ratio = work[fast_name] / work[slow_name]
    print(
        f"\nhashes fast {hashes[fast_name]} slow {hashes[slow_name]} "
        f"(ratio {hashes[fast_name] / hashes[slow_name]:.2f});"
        f" credited work ratio {credited_ratio:.2f}; accepted fast {books[fast_name].get('accepted')} slow "
        f"{books[slow_name].get('accepted')}; share interval fast {sampler.interval(fast_name):.3f}s slow "
        f"{sampler.interval(slow_name):.3f}s (configured {INTERVAL_S}s); targets fast {len(fast_stats.targets)} "
        f"(hardest {hardest_hashes_per_share(fast_stats.targets):.0f} hashes/share) slow {len(slow_stats.targets)} "
        f"(hardest {hardest_hashes_per_share(slow_stats.targets):.0f}); rejected {fast_stats.rejected_codes} "
        f"{slow_stats.rejected_codes}"
    )
    assert_targets_sized(fast_name, fast_stats.targets, fast_rate)
    assert_targets_sized(slow_name, slow_stats.targets, slow_rate)
    # the caps held: the machine's load did not decide the ratio (else the next check would say nothing)
    assert 9.0 <= hashes[fast_name] / hashes[slow_name] <= 11.0
    assert 0.8 * 10 <= credited_ratio <= 1.2 * 10
    for name in (fast_name, slow_name):
        assert INTERVAL_S / 2 <= sampler.interval(name) <= INTERVAL_S * 2, name
    assert fast_stats.unanswered == slow_stats.unanswered == 0


async def test_a_v1_device_behind_the_proxy_and_an_sv2_miner_of_equal_hashrate_are_credited_and_measured_alike(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """20 kH/s each: a V1 device through the proxy and an SV2 CPU miner on its own (standard) channel. The work
    the pool credits them (Redis) is within ±20 % of each other, and the pool's hashrate figure for each
    (/status users, per worker) within ±30 % of what the miner really hashed per second."""
    rate = 20_000.0
    credentials, authority = pool_keys()
    config = identity_pool_config(
        pool_node,
        tmp_path,
        redis_server,
        share_interval_s=INTERVAL_S,
        retarget_interval_s=RETARGET_S,
        initial_hashrate=rate,
        min_hashrate=MIN_HASHRATE,
    )
    v1_name, sv2_name = f"{dev_address()}.asic", f"{dev_address()}.cpu"
    async with Pool(config, credentials=credentials) as pool:
        assert pool.server is not None
        pc = proxy_config(
            pool,
            authority,
            f"{dev_address()}.proxy",
            vardiff={
                "initial_difficulty": rate * INTERVAL_S,
                "share_interval_s": INTERVAL_S,
                "retarget_interval_s": RETARGET_S,
            },
        )
        async with Proxy(pc) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            v1 = V1Miner(*proxy.v1.address, v1_name, chunk=1_000, max_hashrate=rate)
            host, port = pool.server.address
            sv2 = Sv2Miner(host, port, sv2_name, authority_public_key=authority, chunk=1_000, max_hashrate=rate)
            sampler = Sampler(pool, {v1_name: v1, sv2_name: sv2})
            sampling = sampler.start()
            v1_stats, sv2_stats = await asyncio.gather(v1.run(duration=DURATION_S), sv2.run(duration=DURATION_S))
            await sampling
            await settle_accounting(pool)
            books = {name: await redis_hash(pool, f"worker:{name}") for name in (v1_name, sv2_name)}

    work = {name: float(b.get("work", 0)) for name, b in books.items()}
    hashes = {v1_name: v1_stats.hashes, sv2_name: sv2_stats.hashes}
    targets = {v1_name: v1_stats.targets, sv2_name: sv2_stats.targets}
    rejected: dict[str, object] = {v1_name: v1_stats.rejected_codes, sv2_name: sv2_stats.rejected_reasons}
    lines = []
    for name in (v1_name, sv2_name):
        lines.append(
            f"{name.partition('.')[2]}: hashes {hashes[name]}, credited work {work[name]:.0f} "
            f"({work[name] / hashes[name]:.3f}/hash), accepted {books[name].get('accepted')}, pool hashrate "
            f"{sampler.pool_hashrate(name):.0f} H/s vs real {sampler.real_hashrate(name):.0f} H/s, share interval "
            f"{sampler.interval(name):.3f}s, targets {len(targets[name])} (hardest "
            f"{hardest_hashes_per_share(targets[name]):.0f} hashes/share), rejected {rejected[name]}"
        )
    print("\n" + "\n".join(lines))
    for name in (v1_name, sv2_name):
        assert_targets_sized(name, targets[name], rate)
    assert 0.9 <= hashes[v1_name] / hashes[sv2_name] <= 1.1  # the caps held
    assert 0.8 <= work[v1_name] / work[sv2_name] <= 1.2
    for name in (v1_name, sv2_name):
        assert 0.7 <= sampler.pool_hashrate(name) / sampler.real_hashrate(name) <= 1.3, name
