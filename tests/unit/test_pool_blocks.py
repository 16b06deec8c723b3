"""BlockMaker with a stand-in node: one outcome per found block, whoever submits it and however often.

The finder and the block maker both submit a block, the bus may deliver a FoundBlock twice, and a process may
die between writing a block and submitting it: in every case the node may see the block more than once (ckb
answers a known block with its hash), but ``on_outcome`` runs once per block hash. The real node and processes:
tests/integration/test_pool_found_blocks.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ckbpool.bus.events import BlockOutcome, FoundBlock
from ckbpool.ckb.errors import NodeUnavailable
from ckbpool.pool.blocks import BlockMaker, BlockRecord, BlockStore

pytestmark = pytest.mark.unit


class FakeNode:
    """submit_block answers the block's hash (also for a block it has: like ckb); ``down`` raises instead."""

    def __init__(self) -> None:
        self.submitted: list[bytes] = []
        self.main_chain: dict[int, bytes] = {}
        self.down = False
        self.delay = 0.0

    async def submit_block(self, work_id: int, block: dict[str, Any]) -> bytes:
        if self.down:
            raise NodeUnavailable("rpc", "http://fake", "connection refused")
        await asyncio.sleep(self.delay)
        block_hash = bytes.fromhex(block["hash"])
        self.submitted.append(block_hash)
        self.main_chain.setdefault(block["height"], block_hash)
        return block_hash

    async def call(self, method: str, params: list[Any] | None = None, retries: int | None = None) -> Any:
        if self.down:
            raise NodeUnavailable("rpc", "http://fake", "connection refused")
        if method == "get_header_by_number":
            assert params is not None
            block_hash = self.main_chain.get(int(params[0], 16))
            return None if block_hash is None else {"hash": "0x" + block_hash.hex()}
        return "0x1"


def found(n: int, height: int = 100) -> FoundBlock:
    block_hash = bytes([n]) * 32
    return FoundBlock(
        server_id="stratum-1", job_id=n, height=height, block_hash=block_hash, work_id=n,
        block_json=json.dumps({"hash": block_hash.hex(), "height": height}).encode(), user="alice", worker="rig",
        found_at=time.time(),
    )  # fmt: skip


def maker(node: FakeNode, directory: Path, outcomes: list[BlockOutcome], **kwargs: Any) -> BlockMaker:
    return BlockMaker(
        node,  # type: ignore[arg-type]
        BlockStore(directory),
        retry_backoff=0.001,
        settle_s=0.0,
        on_outcome=outcomes.append,
        **kwargs,
    )


async def test_the_same_block_from_the_finder_and_the_bus_gets_one_outcome(tmp_path: Path) -> None:
    node, outcomes = FakeNode(), []
    node.delay = 0.05
    bm = maker(node, tmp_path, outcomes)
    record = await bm.persist(found(1))
    # the finder's own submission, the same block back from the bus (twice), all at once
    results = await asyncio.gather(bm.submit_record(record), bm.submit(found(1)), bm.submit(found(1)))
    assert [r is not None for r in results] == [True, False, False]
    assert [(o.block_hash, o.status) for o in outcomes] == [(found(1).block_hash, "accepted")]
    # later duplicates (a redelivered event, a replay) change nothing
    assert await bm.submit(found(1)) is None
    assert await bm.replay_pending() == []
    assert len(outcomes) == 1 and node.submitted == [found(1).block_hash]
    on_disk = json.loads((tmp_path / f"{found(1).block_hash.hex()}.json").read_text())
    assert (on_disk["status"], on_disk["announced"], on_disk["reported"]) == ("accepted", True, True)


async def test_a_second_submitter_sees_the_node_answer_with_the_hash_and_reports_once(tmp_path: Path) -> None:
    """Finder and block maker in different processes: both submit, each reports to its own on_outcome once;
    the block maker's on_outcome is the pool's record."""
    node, finder_outcomes, recorder_outcomes = FakeNode(), [], []
    finder = maker(node, tmp_path / "stratum", finder_outcomes)
    recorder = maker(node, tmp_path / "blockmaker", recorder_outcomes)
    await finder.submit_record(await finder.persist(found(2)))
    await recorder.submit(found(2))
    await recorder.submit(found(2))
    assert node.submitted == [found(2).block_hash] * 2  # ckb: the second is a known block, answered with its hash
    assert [o.status for o in finder_outcomes] == ["accepted"]
    assert [o.status for o in recorder_outcomes] == ["accepted"]


async def test_a_block_written_but_never_submitted_is_submitted_by_the_next_run(tmp_path: Path) -> None:
    node, outcomes = FakeNode(), []
    first = maker(node, tmp_path, outcomes)
    await first.persist(found(3))  # ... and the process dies here
    assert node.submitted == [] and first.pending_count == 1
    assert [r.found.block_hash for r in maker(node, tmp_path, []).unannounced()] == [found(3).block_hash]
    second = maker(node, tmp_path, outcomes)
    assert [(o.block_hash, o.status) for o in await second.replay_pending()] == [(found(3).block_hash, "accepted")]
    assert node.submitted == [found(3).block_hash] and len(outcomes) == 1 and second.pending_count == 0
    assert await maker(node, tmp_path, outcomes).replay_pending() == []  # a third run has nothing to do


async def test_an_outcome_decided_but_not_reported_is_reported_at_the_next_start_without_resubmitting(
    tmp_path: Path,
) -> None:
    store = BlockStore(tmp_path)
    store.save(BlockRecord(found=found(4), status="stale", reason="side branch", announced=True, reported=False))
    node, outcomes = FakeNode(), []
    assert [o.status for o in await maker(node, tmp_path, outcomes).replay_pending()] == ["stale"]
    assert node.submitted == [] and len(outcomes) == 1


async def test_a_node_down_longer_than_the_retries_gives_no_outcome_until_it_answers(tmp_path: Path) -> None:
    node, outcomes = FakeNode(), []
    node.down = True
    bm = maker(node, tmp_path, outcomes, retries=2, resubmit_interval_s=0.05, settle_timeout_s=0.3)
    assert await bm.submit_record(await bm.persist(found(5))) is None
    assert outcomes == [] and bm.pending_count == 1  # "pending" is not an outcome: nothing reported
    resubmitter = asyncio.create_task(bm.keep_resubmitting())
    try:
        await asyncio.sleep(0.1)
        node.down = False
        async with asyncio.timeout(5):
            while not outcomes:
                await asyncio.sleep(0.01)
    finally:
        resubmitter.cancel()
    assert [o.status for o in outcomes] == ["accepted"] and bm.pending_count == 0


async def test_a_block_that_lost_its_height_is_stale(tmp_path: Path) -> None:
    node, outcomes = FakeNode(), []
    node.main_chain[100] = b"\xee" * 32  # another block won height 100
    bm = maker(node, tmp_path, outcomes)
    await bm.submit_record(await bm.persist(found(6)))
    assert [o.status for o in outcomes] == ["stale"]


def test_records_from_before_announced_and_reported_existed_are_not_published_again(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    store.save(BlockRecord(found=found(7), status="accepted"))
    store.save(BlockRecord(found=found(8)))
    for path in tmp_path.glob("*.json"):
        data = json.loads(path.read_text())
        del data["announced"], data["reported"]
        path.write_text(json.dumps(data))
    records = {r.found.block_hash[0]: r for r in store.load_all()}
    assert (records[7].announced, records[7].reported) == (True, True)
    assert (records[8].announced, records[8].reported) == (True, False)  # pending: still to be submitted


def test_a_record_is_fsynced_file_and_directory_before_save_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    BlockStore(tmp_path).save(BlockRecord(found=found(9)))
    assert synced == [str(tmp_path / f"{found(9).block_hash.hex()}.tmp"), str(tmp_path)]
    assert not list(tmp_path.glob("*.tmp"))
