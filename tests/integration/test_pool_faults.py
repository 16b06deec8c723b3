"""Faults the pool must ride through without losing a block: the node going away mid-run, the pool dying
between finding a block and submitting it."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from test_pool_e2e import POOL_TEST_COMPACT_TARGET, pool_config, pool_keys

from ckbpool.bus.events import FoundBlock
from ckbpool.ckb.devwallet import DevKey
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.template import job_from_template
from ckbpool.miner.solo import current_template, solve
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.blocks import BlockMaker, BlockRecord, BlockStore
from ckbpool.pool.service import Pool

pytestmark = pytest.mark.integration


async def test_node_restart_mid_run_loses_no_block(ckb_binary: Path, tmp_path: Path, dev_key: DevKey) -> None:
    from conftest import start_dev_node

    node = start_dev_node(ckb_binary, tmp_path / "ckb", dev_key, genesis_compact_target=POOL_TEST_COMPACT_TARGET)
    try:
        credentials, authority = pool_keys()
        async with Pool(pool_config(node, tmp_path), credentials=credentials) as pool:
            assert pool.server is not None and pool.block_maker is not None
            pool.block_maker.retry_backoff = 0.1
            host, port = pool.server.address
            miner = Sv2Miner(host, port, "carol.rig1", authority_public_key=authority)
            task = asyncio.create_task(miner.run(duration=120))
            try:
                while not any(b.status == "accepted" for b in pool.recent_blocks):
                    await asyncio.sleep(0.05)
                # the node goes away; the miner keeps finding blocks on the job it has
                node.stop()
                down_at = time.time()
                found_before = len(pool.server.found_blocks)
                deadline = time.monotonic() + 60
                while len(pool.server.found_blocks) == found_before:
                    assert time.monotonic() < deadline, "no block found while the node was down"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)
                node.start()
                await node.wait_ready()
                up_at = time.time()
                found_while_down = [f for f in pool.server.found_blocks if down_at <= f.found_at <= up_at]
                assert found_while_down
                # every block found while the node was down gets a final outcome once it is back
                wanted = {f.block_hash for f in found_while_down}
                deadline = time.monotonic() + 60
                while not wanted <= {b.block_hash for b in pool.recent_blocks}:
                    assert time.monotonic() < deadline, "blocks found while the node was down were never resolved"
                    await asyncio.sleep(0.1)
                # and mining goes on after the restart: a block at a new height is accepted
                height_after = max(b.height for b in pool.recent_blocks)
                while not any(b.height > height_after and b.status == "accepted" for b in pool.recent_blocks):
                    assert time.monotonic() < deadline + 30, (
                        f"pool did not recover after the node restart: job height "
                        f"{pool.watcher.current.job.height if pool.watcher and pool.watcher.current else None}, "
                        f"blocks {[(b.height, b.status, b.reason) for b in pool.recent_blocks[-5:]]}, "
                        f"miner {miner.stats}, found {len(pool.server.found_blocks)}"
                    )
                    await asyncio.sleep(0.1)
            finally:
                miner.stop()
                await task
            outcomes = {b.block_hash: b for b in pool.recent_blocks}
            for block_hash in wanted:
                # accepted, or stale when a block found right after the restart won that height: never lost
                assert outcomes[block_hash].status in ("accepted", "stale"), outcomes[block_hash]
            on_disk = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "blocks").glob("*.json")}
            for block_hash in wanted:
                assert on_disk[block_hash.hex()]["status"] in ("accepted", "stale")
    finally:
        node.stop()


async def test_block_persisted_but_never_submitted_is_replayed_at_start_up(dev_node: object, tmp_path: Path) -> None:
    """The pool died after writing a found block and before submitting it: the next start submits it."""
    from ckbpool.ckb.node import CkbNode

    assert isinstance(dev_node, CkbNode)
    async with CkbRpcClient(dev_node.config.rpc_url) as rpc:
        job = job_from_template(await current_template(rpc))
        nonce, _ = await solve(job)
        block = job.block(nonce)
        found = FoundBlock(
            server_id="stratum-1",
            job_id=1,
            height=job.height,
            block_hash=block.hash(),
            work_id=job.work_id,
            block_json=json.dumps(block.to_json()).encode(),
            user="dave",
            worker="rig",
            found_at=time.time(),
        )
        store = BlockStore(tmp_path / "blocks")
        store.save(BlockRecord(found=found))  # what submit() writes first, before the crash
        assert [r.found.block_hash for r in store.pending()] == [found.block_hash]

        outcomes = await BlockMaker(rpc, BlockStore(tmp_path / "blocks")).replay_pending()
        assert [(o.block_hash, o.status) for o in outcomes] == [(found.block_hash, "accepted")]
        assert (await rpc.get_tip_header()).hash() == found.block_hash
        assert store.pending() == []
