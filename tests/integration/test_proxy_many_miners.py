"""100 CKB Stratum V1 CPU miners through one proxy on ONE upstream SV2 channel.

Real dev ckb node -> real Pool (encrypted SV2) -> Proxy -> 100 V1Miner connections. The proxy forwards every share
it accepts and answers the miner with the pool's verdict, so the miners' accepted shares, the proxy's count and the
pool's count for the channel are one number; the blocks the miners find are accepted by the node.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)

from ckbpool.ckb.node import CkbNode
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy, load_proxy_config

pytestmark = pytest.mark.integration

ACCOUNT = "ckt1qmanyminersaccount"
MINERS = 100
MINING_S = 20.0


async def test_100_v1_miners_share_one_upstream_channel_and_the_counts_agree(
    pool_node: CkbNode,  # noqa: F811
    tmp_path: Path,
) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    credentials, authority = pool_keys()
    # the aggregated channel aims at ~50 shares/s for all 100 miners together
    config = pool_config(pool_node, tmp_path, vardiff={"share_interval_s": 0.02, "retarget_interval_s": 1.0})
    async with Pool(config, credentials=credentials) as pool:
        assert pool.server is not None
        host, port = pool.server.address
        proxy_config = load_proxy_config(
            data={
                "identity": "aggregated",  # account names here are not addresses
                "http": {"listen_port": 0},  # /metrics on a free port
                "upstream": {
                    "host": host,
                    "port": port,
                    "authority_public_key": authority,
                    "user_identity": f"{ACCOUNT}.farm",
                },
                "v1": {
                    "listen_host": "127.0.0.1",
                    "listen_port": 0,
                    # ~20 kH/s a miner (two hashing threads for 100 of them): a share every 2 s to start with
                    "vardiff": {"initial_difficulty": 4e4, "share_interval_s": 2.0, "retarget_interval_s": 5.0},
                },
            }
        )
        async with Proxy(proxy_config) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            v1_host, v1_port = proxy.v1.address
            async with pool_node.client() as client:
                start_tip = await client.get_tip_block_number()
            # the miners run in their own process (a farm next to the proxy), hashing on two threads
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ckbpool.miner.v1",
                f"{v1_host}:{v1_port}",
                "--user",
                ACCOUNT,
                "--count",
                str(MINERS),
                "--duration",
                str(MINING_S),
                "--hashing-threads",
                "2",
                "--chunk",
                "10000",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(process.communicate(), MINING_S + 60)
            elapsed = time.monotonic() - started
            assert process.returncode == 0
            results = [SimpleNamespace(**r) for r in json.loads(out)]
            assert len(results) == MINERS
            # every miner kept its one connection and got its answers before it hung up (drain)
            assert all(r.unanswered == 0 and r.connects == 1 for r in results)
            await asyncio.sleep(0.5)  # let the pool's last accounting tasks run

            channels = [c for s in pool.server.sessions for c in s.channels.values() if c.user == ACCOUNT]
            assert len(channels) == 1, "all 100 miners share one upstream channel"
            pool_channel = channels[0]
            miners_accepted = sum(r.accepted for r in results)
            stats = proxy.v1.stats()
            print(
                f"\n{MINERS} miners, {elapsed:.1f}s: accepted {miners_accepted} (pool channel {pool_channel.accepted}, "
                f"proxy {stats['accepted']}), rejected {sum(r.rejected for r in results)} "
                f"{stats['rejected']} (pool {pool_channel.rejected}), blocks {stats['blocks']}, "
                f"upstream {stats['upstream']['bytes_out']} B out, targets {len(results[0].targets)}"
            )
            assert miners_accepted > MINERS  # on average more than one each
            assert miners_accepted == pool_channel.accepted == stats["accepted"]
            assert sum(r.rejected for r in results) == sum(stats["rejected"].values())
            codes = {code: sum(r.rejected_codes.get(str(code), 0) for r in results) for code in (21, 22, 23, 24, 27)}
            assert set().union(*(r.rejected_codes for r in results)) <= {"21", "23"}, codes
            # 21: a share that met a job the next block made stale. 23: the pool's vardiff (aggressive here: a
            # retarget a second) moved the channel's target twice while a share was in flight -- rare, bounded
            assert codes[23] <= max(5, miners_accepted // 20), codes
            assert sum(1 for r in results if r.accepted) >= MINERS * 0.8  # nearly every miner got shares in
            assert len(stats["workers"]) == MINERS

            # the proxy's /metrics says the same, with no per-worker series
            assert proxy.status_server is not None
            async with httpx.AsyncClient() as http:
                exposition = (await http.get(f"http://127.0.0.1:{proxy.status_server.port}/metrics")).text
                health = await http.get(f"http://127.0.0.1:{proxy.status_server.port}/health")
            assert health.status_code == 200
            samples = {
                (family.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(exposition)
                for sample in family.samples
                if family.name.startswith("ckbpool_proxy_")
            }
            assert samples[("ckbpool_proxy_shares", (("result", "accepted"), ("service", "v1")))] == stats["accepted"]
            rejected_21 = samples.get(("ckbpool_proxy_shares", (("result", "job_not_found"), ("service", "v1"))), 0)
            assert rejected_21 == stats["rejected"].get("21", 0)
            assert samples[("ckbpool_proxy_upstream_up", (("service", "v1"),))] == 1.0
            assert samples[("ckbpool_proxy_upstream_connects", (("service", "v1"),))] == 1.0
            assert samples[("ckbpool_proxy_traffic_bytes", (("direction", "out"), ("side", "upstream")))] > 0
            assert not any(ACCOUNT in str(key) for key in samples)

            accepted_blocks = [b for b in pool.recent_blocks if b.status == "accepted"]
            assert accepted_blocks, "the miners found no block"
            assert stats["blocks"] >= len([b for b in accepted_blocks if b.worker == "farm"]) > 0
            async with pool_node.client() as client:
                for block in accepted_blocks:
                    header = await client.call("get_header_by_number", [hex(block.height)])
                    assert header["hash"] == "0x" + block.block_hash.hex(), "the pool says accepted, the node not"
                assert await client.get_tip_block_number() >= start_tip + len(accepted_blocks)
