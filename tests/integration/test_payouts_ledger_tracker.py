"""Block life against a real ckb dev node, real Redis (the pool's share log and block list, written by the
pool's own accounting code) and a real PostgreSQL ledger: a block of ours goes found -> accepted (PPLNS window
from the share log) -> finalized (the node's reward) -> mature (the dev spec's cellbase maturity is 0) ->
credited, to the shannon; a side block that ends as an uncle is void; a restarted tracker changes nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ckbpool.bus.events import BlockOutcome, Share
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.target import compact_to_target, target_to_difficulty
from ckbpool.ckb.template import job_from_template
from ckbpool.miner.solo import current_template, mine_block, solve
from ckbpool.payouts.ledger import Ledger
from ckbpool.payouts.pplns import read_window
from ckbpool.payouts.tracker import BlockTracker, PayoutPolicy
from ckbpool.pool.accounting import ShareAccounting, connect_redis
from support.postgres import PostgresServer, fresh_database, postgres_server  # noqa: F401  (fixture)
from support.redis import RedisServer

pytestmark = pytest.mark.integration

FEE_BPS = 100


@pytest.fixture
async def accounting(redis_server: RedisServer) -> AsyncIterator[ShareAccounting]:
    client = connect_redis(redis_server.url)
    try:
        yield ShareAccounting(client)
    finally:
        await client.aclose()


def _share(seq: int, user: str, work: int, ts: float) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user=user, worker="rig", job_id=1, height=1, nonce=seq,
        share_target=(1 << 256) // work, share_difficulty=1.0, accepted=True, reason="", is_block=False,
        block_hash=b"", timestamp=ts, source="payouts-test", seq=seq,
    )  # fmt: skip


def _outcome(block_hash: bytes, height: int, status: str, user: str) -> BlockOutcome:
    return BlockOutcome(
        block_hash=block_hash, height=height, status=status, reason="", submitted_at=time.time(), latency_ms=1.0,
        user=user, worker="rig",
    )  # fmt: skip


async def _difficulty(client: CkbRpcClient) -> int:
    return target_to_difficulty(compact_to_target((await client.get_tip_header()).raw.compact_target))


async def test_read_window_walks_the_share_log_in_pages_and_says_when_it_is_short(
    accounting: ShareAccounting,
) -> None:
    now = time.time()
    shares = [_share(i, ["alice", "bob", "carol"][i % 3], 100, now - 50 + i) for i in range(30)]
    shares.append(_share(30, "late", 100, now + 5))  # after the find time: the next block's
    for first in range(0, len(shares), 3):  # entries of 3 shares (one per write): pages of ~4 shares cut them
        await accounting.record(shares[first : first + 3])
    window = await read_window(accounting.redis, now, 1000, page=4)
    assert window.complete and window.counted_work == 1000 and window.shares == 10
    assert window.weights == {"alice": 300, "bob": 300, "carol": 400}  # seq 29..20, newest first
    short = await read_window(accounting.redis, now, 5000, page=7)
    assert not short.complete and short.counted_work == 3000 and short.shares == 30
    assert "late" not in short.weights


async def test_a_found_block_is_credited_to_the_shannon_and_an_uncle_is_void(
    dev_node: CkbNode,
    accounting: ShareAccounting,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    url = fresh_database(postgres_server)
    ledger = Ledger.open(url)
    async with dev_node.client() as client:
        difficulty = await _difficulty(client)
        unit = difficulty // 4  # window = 2 x difficulty = 8 shares of a quarter difficulty
        now = time.time()
        old = [_share(i, "carol", unit, now - 100 + i) for i in range(10)]  # older than the window
        recent = [_share(10 + i, "alice" if i % 4 else "bob", unit, now - 50 + i) for i in range(8)]
        await accounting.record(old + recent)

        found = await mine_block(client)
        await accounting.record_block(_outcome(found.block_hash, found.number, "accepted", "alice"))

        # a side block at the next height (two solutions of one template; the second loses the height)
        template = await current_template(client)
        job = job_from_template(template)
        first_nonce, _ = await solve(job)
        second_nonce, _ = await solve(job, start=first_nonce + 1)
        first = await client.submit_block(job.work_id, job.block(first_nonce))
        side = await client.submit_block(job.work_id, job.block(second_nonce))
        assert first != side and (await client.get_tip_header()).hash() == first
        await accounting.record_block(_outcome(side, job.height, "stale", "bob"))

        policy = PayoutPolicy(fee_address="op", fee_bps=FEE_BPS, pplns_n=2)
        tracker = BlockTracker(ledger, client, policy, accounting.redis)
        states = await tracker.step()
        assert states == {found.block_hash.hex(): "accepted", side.hex(): "found"}
        view = ledger.block(found.block_hash)
        assert view is not None and view.network_difficulty == difficulty
        assert view.window_complete and view.window_work == 2 * difficulty

        delay = (await tracker.consensus()).finalization_delay
        assert delay == 11, "the dev spec's proposal window farthest is 10"
        for _ in range(60):  # bounded: a few more than the delay
            tip = await client.get_tip_block_number()
            if tip >= job.height + delay:
                break
            await mine_block(client)
        states = await tracker.step()
        assert states[found.block_hash.hex()] == "credited", states
        assert states[side.hex()] == "void", states

        state = await client.call("get_block_economic_state", ["0x" + found.block_hash.hex()])
        reward = sum(int(state["miner_reward"][k], 16) for k in ("primary", "secondary", "committed", "proposal"))
        view = ledger.block(found.block_hash)
        assert view is not None and view.reward_total == reward > 0
        assert view.finalized_by == state["finalized_at"].removeprefix("0x")
        credits = {(a, k): v for a, k, v in view.credits}
        fee = reward * FEE_BPS // 10_000
        assert sum(credits.values()) == reward
        assert credits[("op", "fee")] == fee
        assert ("carol", "share") not in credits, "carol's shares are older than the window"
        assert credits[("alice", "share")] * 1 == pytest.approx(3 * credits[("bob", "share")], abs=3)
        balances = ledger.balances()
        assert {a: b.payable for a, b in balances.items()} == {
            "alice": credits[("alice", "share")], "bob": credits[("bob", "share")], "op": fee,
        }  # fmt: skip
        uncle = ledger.block(side)
        assert uncle is not None and uncle.status == "void" and uncle.void_reason.startswith("uncle"), uncle
        assert uncle.credits == ()
        assert ledger.check_invariants() == []
        assert tracker.stats.incomplete_windows == 0

        # restart: a new ledger connection and a new tracker find nothing to do
        ledger.close()
        ledger = Ledger.open(url)
        again = BlockTracker(ledger, client, policy, accounting.redis)
        assert await again.step() == {}
        assert ledger.block(found.block_hash) == view
        assert ledger.balances() == balances
    ledger.close()


async def test_a_block_with_no_share_log_is_flagged_incomplete_and_goes_to_the_operator(
    dev_node: CkbNode, accounting: ShareAccounting, tmp_path: Path
) -> None:
    """No share in the window (the share log lost or shorter than the window): the block is still credited
    in full -- to the operator's address, since no miner's work can be shown -- and flagged incomplete.
    On SQLite, the local target's default."""
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    async with dev_node.client() as client:
        found = await mine_block(client)
        await accounting.record_block(_outcome(found.block_hash, found.number, "accepted", "alice"))
        tracker = BlockTracker(
            ledger, client, PayoutPolicy(fee_address="op", fee_bps=0), accounting.redis, sharelog_key="ckbpool:none"
        )
        assert await tracker.step() == {found.block_hash.hex(): "accepted"}
        assert tracker.stats.incomplete_windows == 1
        for _ in range(60):
            if await client.get_tip_block_number() >= found.number + 11:
                break
            await mine_block(client)
        assert await tracker.step() == {found.block_hash.hex(): "credited"}
        view = ledger.block(found.block_hash)
        assert view is not None and view.window_complete is False and view.window_work == 0
        assert view.credits == (("op", "fee", view.reward_total),)
        assert ledger.check_invariants() == []
    ledger.close()
