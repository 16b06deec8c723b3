"""The founding claim: blocks our Python code assembles and mines are accepted by a real ckb node.

Every block here goes through get_block_template -> our header/commitments -> our Eaglesong search ->
submit_block, and counts only when the node stores it (tip advances, get_block returns our hash).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from ckbpool.ckb.devwallet import DevKey, find_genesis_cells, transfer
from ckbpool.ckb.eaglesong import check_pow, search
from ckbpool.ckb.errors import BlockRejected
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.structures import Header, RawHeader
from ckbpool.ckb.template import job_from_template
from ckbpool.miner.solo import current_template, mine_block, solve

pytestmark = pytest.mark.integration


async def _tip_hash(client: CkbRpcClient) -> bytes:
    return (await client.get_tip_header()).hash()


async def test_twenty_consecutive_blocks_including_an_uncle_and_a_transfer_are_accepted(
    dev_node: CkbNode, dev_key: DevKey
) -> None:
    async with dev_node.client() as client:
        start_height = await client.get_tip_block_number()
        mined: list[bytes] = []

        async def mine_and_check() -> bytes:
            block = await mine_block(client)
            assert await _tip_hash(client) == block.block_hash, "our block did not become the tip"
            stored = await client.get_block(block.block_hash)
            assert stored is not None and stored["header"]["hash"] == "0x" + block.block_hash.hex()
            mined.append(block.block_hash)
            return block.block_hash

        for _ in range(3):
            await mine_and_check()

        # An uncle: two valid blocks at one height (same template, two nonces); the second stays on a side branch.
        template = await current_template(client)
        job = job_from_template(template)
        first_nonce, _ = await solve(job)
        second_nonce, _ = await solve(job, start=first_nonce + 1)
        first = await client.submit_block(job.work_id, job.block(first_nonce))
        second = await client.submit_block(job.work_id, job.block(second_nonce))
        assert first != second
        assert await _tip_hash(client) == first
        assert await client.get_block(second) is None, "get_block serves the main chain only"
        fork = await client.call("get_fork_block", ["0x" + second.hex()])
        assert fork is not None and fork["header"]["hash"] == "0x" + second.hex(), "the node should keep the side block"
        mined.append(first)

        # A real transfer signed with the dev chain's genesis key.
        genesis = await client.get_block_by_number(0)
        assert genesis is not None
        cells = find_genesis_cells(genesis, dev_key.lock)
        assert cells, "dev chain spec should issue genesis cells to the well-known dev key"
        tx = transfer(dev_key, genesis, cells[0], DevKey(bytes(31) + b"\x01").lock, 1000 * 100_000_000)
        tx_hash = await client.call("send_transaction", [tx.to_json(), "passthrough"])
        assert tx_hash == "0x" + tx.hash().hex()

        uncle_included_in: bytes | None = None
        tx_included_in: bytes | None = None
        while len(mined) < 20:
            block_hash = await mine_and_check()
            body = await client.get_block(block_hash)
            assert body is not None
            if any(u["header"]["hash"] == "0x" + second.hex() for u in body["uncles"]):
                uncle_included_in = block_hash
            if any(t["hash"] == tx_hash for t in body["transactions"][1:]):
                tx_included_in = block_hash

        assert await client.get_tip_block_number() == start_height + 20
        assert uncle_included_in is not None, "no mined block included the side block as an uncle"
        assert tx_included_in is not None, "the transfer was not committed in any mined block"
        status = await client.call("get_transaction", [tx_hash])
        assert status["tx_status"]["status"] == "committed"


async def test_block_with_wrong_nonce_is_refused_and_reported(dev_node: CkbNode) -> None:
    async with dev_node.client() as client:
        job = job_from_template(await current_template(client))
        bad = next(n for n in range(10_000) if not check_pow(job.pow_hash, n.to_bytes(16, "little"), job.target))
        with pytest.raises(BlockRejected) as err:
            await client.submit_block(job.work_id, job.block(bad))
        assert err.value.method == "submit_block"
        assert "InvalidNonce" in str(err.value) or "PowError" in str(err.value), str(err.value)


async def _submit_tampered(client: CkbRpcClient, **changes: object) -> BlockRejected:
    """Mine a block whose header was changed after assembly (valid PoW over the wrong header)."""
    job = job_from_template(await current_template(client))
    raw: RawHeader = dataclasses.replace(job.raw_header, **changes)  # type: ignore[arg-type]
    nonce = await asyncio.to_thread(search, raw.pow_hash(), 0, 1 << 24, job.target)
    assert nonce is not None
    block = dataclasses.replace(job.block(0), header=Header(raw=raw, nonce=nonce))
    with pytest.raises(BlockRejected) as err:
        await client.submit_block(job.work_id, block)
    return err.value


async def test_block_with_wrong_transactions_root_is_refused(dev_node: CkbNode) -> None:
    """The node rebuilds transactions_root from the body it is given, so a header whose root does not match the
    body fails the PoW check of the rebuilt header: the refusal reads InvalidNonce (seen in its ckb-pow debug log,
    which shows the recomputed root)."""
    async with dev_node.client() as client:
        err = await _submit_tampered(client, transactions_root=b"\x11" * 32)
        assert err.code == -3 and "InvalidNonce" in err.message, str(err)


async def test_block_on_unknown_parent_is_refused(dev_node: CkbNode) -> None:
    async with dev_node.client() as client:
        err = await _submit_tampered(client, parent_hash=b"\x22" * 32)
        assert "UnknownParent" in str(err), str(err)


async def test_block_with_timestamp_too_far_ahead_is_refused(dev_node: CkbNode) -> None:
    async with dev_node.client() as client:
        job = job_from_template(await current_template(client))
        err = await _submit_tampered(client, timestamp=job.timestamp + 3_600_000)
        assert "BlockTimeTooNew" in str(err) or "TooNew" in str(err), str(err)


async def test_block_from_a_stale_job_is_kept_off_the_main_chain(dev_node: CkbNode) -> None:
    """The node does not refuse an old work_id: a valid block on an old parent is stored on a side branch.

    Staleness is the pool's judgement (a later issue); here we prove such a block never moves the tip.
    """
    async with dev_node.client() as client:
        stale = job_from_template(await current_template(client))
        await mine_block(client)
        await mine_block(client)
        tip_before = await _tip_hash(client)
        nonce, _ = await solve(stale)
        block_hash = await client.submit_block(stale.work_id, stale.block(nonce))
        assert block_hash == stale.block_hash(nonce)
        assert await _tip_hash(client) == tip_before
