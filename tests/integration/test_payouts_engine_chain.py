"""The payout engine end to end (issue 16, "Must show"): a real ckb dev node (cellbase maturity shortened to a few
blocks, its block assembler paying the payout wallet), the real pool (embedded, Redis accounting) with two SV2
CPU miners of different addresses, a real PostgreSQL ledger, and the engine as ``ckbpool payouts run``
subprocesses -- killed with SIGKILL at the two moments "never pay twice" is about.

- the pool finds >= 5 blocks; a side block of ours ends as an uncle: void, credited nothing;
- the pool restarts; the ledger (a database of its own) is unchanged by it;
- pass 1 dies (kill -9, test-only crash point) right after recording batch 1, before sending it: the chain has
  never seen it; pass 2 finds it recorded and unknown to the node and sends the SAME signed bytes (same hash);
- pass 3 dies right after the node took batch 2, before the ledger says sent; pass 4 finds it committed;
- at the end the node's indexer shows each miner's address holding exactly its PPLNS credits (to the shannon,
  pool fee applied), every ledger transaction committed once on chain, and payable + payment lines ==
  rewards of the credited blocks, where the lines are the miners' outputs + the operator's output + the
  transaction fees (charged to the operator).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pool_e2e import POOL_TEST_COMPACT_TARGET, pool_config, pool_keys

from ckbpool.bus.events import BlockOutcome
from ckbpool.ckb.address import encode_address, parse_address
from ckbpool.ckb.indexer import live_cells_capacity
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.signing import Secp256k1Key
from ckbpool.ckb.structures import Transaction
from ckbpool.ckb.template import job_from_template
from ckbpool.miner.solo import current_template, mine_block, solve
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.payouts.engine import CRASH_ENV
from ckbpool.payouts.ledger import Ledger
from ckbpool.payouts.pplns import split_reward
from ckbpool.payouts.wallet import PayoutWallet, TxState, create_key_file, load_key_file
from ckbpool.pool.accounting import ShareAccounting, connect_redis
from ckbpool.pool.config import MIN_PAYMENT_SHANNONS, PayoutSettings
from ckbpool.pool.service import Pool
from conftest import start_dev_node
from support.chain import indexed, until
from support.postgres import PostgresServer, fresh_database, postgres_server  # noqa: F401  (fixture)
from support.redis import RedisServer

pytestmark = pytest.mark.integration

MATURITY_BLOCKS = 4
FEE_BPS = 150
REPO = Path(__file__).resolve().parents[2]


def address(n: int) -> str:
    return encode_address(Secp256k1Key(bytes(30) + bytes([7, n])).lock, "dev")


MINER_A, MINER_B, OPERATOR = address(1), address(2), address(3)


@pytest.fixture(scope="module")
def wallet_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "payout-wallet.key"
    create_key_file(path)
    return path


@pytest.fixture(scope="module")
def node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, wallet_key_file: Path) -> Iterator[CkbNode]:
    """Easy PoW (CPU miners find blocks in well under a second), rewards to the payout wallet, short maturity."""
    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb-payouts"), load_key_file(wallet_key_file),
        genesis_compact_target=POOL_TEST_COMPACT_TARGET, cellbase_maturity_blocks=MATURITY_BLOCKS,
    )  # fmt: skip
    try:
        yield node
    finally:
        node.stop()


async def _mine_until_committed(client: CkbRpcClient, wallet: PayoutWallet, tx_hash: str) -> None:
    for _ in range(30):  # proposal (>= 2 blocks) then commit: a handful of dev blocks
        if (await wallet.status(bytes.fromhex(tx_hash))).state == TxState.COMMITTED:
            return
        await mine_block(client)
    raise AssertionError(f"payout {tx_hash} not committed after 30 blocks")


def _run_engine(config: Path, log: Path, crash_at: str | None = None) -> int:
    """One ``ckbpool payouts run`` pass in a subprocess (what an operator or a timer runs); its return code."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at is not None:
        env[CRASH_ENV] = crash_at
    with log.open("a") as out:
        out.write(f"\n=== payouts run (crash at {crash_at}) ===\n")
        out.flush()
        proc = subprocess.run(
            [sys.executable, "-m", "ckbpool.cli", "payouts", "run", "-c", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, timeout=120, check=False,
        )  # fmt: skip
    return proc.returncode


def _write_config(path: Path, node: CkbNode, redis_url: str, db_url: str, key_file: Path, threshold: int) -> None:
    path.write_text(
        f"""network = "dev"
[node]
rpc_url = "{node.config.rpc_url}"
[redis]
url = "{redis_url}"
[payouts]
enabled = true
database_url = "{db_url}"
wallet_key_file = "{key_file}"
pplns_n = 2
fee_bps = {FEE_BPS}
fee_address = "{OPERATOR}"
threshold_shannons = {threshold}
batch_size = 1
metrics_port = 0
"""
    )


async def test_two_miners_are_paid_exactly_once_through_two_kill_9s(
    node: CkbNode,
    redis_server: RedisServer,
    postgres_server: PostgresServer,  # noqa: F811
    wallet_key_file: Path,
    tmp_path: Path,
) -> None:
    db_url = fresh_database(postgres_server)
    threshold = MIN_PAYMENT_SHANNONS + PayoutSettings(batch_size=1).max_batch_fee()
    config = tmp_path / "pool.toml"
    _write_config(config, node, redis_server.url, db_url, wallet_key_file, threshold)
    engine_log = tmp_path / "payouts.log"
    credentials, authority = pool_keys()
    pool_cfg = pool_config(node, tmp_path, redis={"url": redis_server.url})
    redis = connect_redis(redis_server.url)
    ledger = Ledger.open(db_url)
    try:
        async with node.client() as client:
            wallet = PayoutWallet(load_key_file(wallet_key_file), client, "dev")
            # -- the pool finds >= 5 blocks for two miners, one of them with a full window behind it ------------
            # (blocks come at random: 5 of them can all come before 2 x a block's work is done -- P ~ 5% -- and
            # then every window is rightly incomplete; so mining goes on until a block is accepted after the
            # miners hashed 3 x a block's work, share work being an estimate of the hashes)
            block_work = (1 << 256) // job_from_template(await current_template(client)).target
            pool = Pool(pool_cfg, credentials=credentials)
            await pool.start()
            try:
                assert pool.server is not None
                host, port = pool.server.address
                miners = [Sv2Miner(host, port, f"{a}.rig", authority_public_key=authority) for a in (MINER_A, MINER_B)]
                tasks = [asyncio.create_task(m.run(duration=120)) for m in miners]
                blocks_when_window_full: list[int] = []

                def done() -> bool:
                    count = sum(b.status == "accepted" for b in pool.recent_blocks)
                    if not blocks_when_window_full and sum(m.stats.hashes for m in miners) >= 3 * block_work:
                        blocks_when_window_full.append(count)
                    return count >= 5 and bool(blocks_when_window_full) and count > blocks_when_window_full[0]

                try:
                    await until(done, 110, "5 blocks, one after 3 x a block's work")
                finally:
                    for m in miners:
                        m.stop()
                    await asyncio.gather(*tasks)
                ours = [b for b in pool.recent_blocks if b.status == "accepted"]
                assert all(m.stats.accepted > 0 for m in miners), [m.stats.accepted for m in miners]
            finally:
                await pool.close()

            # -- a side block of ours that loses its height (the other solution wins): it will be an uncle -----
            template = await current_template(client)
            job = job_from_template(template)
            first_nonce, _ = await solve(job)
            second_nonce, _ = await solve(job, start=first_nonce + 1)
            winner = await client.submit_block(job.work_id, job.block(first_nonce))
            side = await client.submit_block(job.work_id, job.block(second_nonce))
            assert winner != side and (await client.get_tip_header()).hash() == winner
            await ShareAccounting(redis).record_block(
                BlockOutcome(
                    block_hash=side, height=job.height, status="stale", reason="", submitted_at=time.time(),
                    latency_ms=1.0, user=MINER_B, worker="rig",
                )
            )  # fmt: skip

            # -- first engine pass: blocks accepted with their PPLNS windows (nothing payable yet) -------------
            assert _run_engine(config, engine_log) == 0, engine_log.read_text()
            accepted = {b.block_hash for b in ledger.blocks(("accepted",))}
            assert {b.block_hash.hex() for b in ours} <= accepted
            views = ledger.blocks(("accepted",))
            # the first blocks of a young pool have less than 2 x difficulty of shares behind them (flagged
            # incomplete, shared out over what exists); later ones have a full window
            assert any(v.window_complete for v in views), views
            assert all(v.window_work is not None and 0 < v.window_work <= v.window_target_work for v in views)
            before_restart = ledger.blocks()

            # -- the pool restarts; the ledger is what it was ------------------------------------------------
            pool = Pool(pool_cfg, credentials=credentials)
            await pool.start()
            await pool.close()
            reopened = Ledger.open(db_url)
            assert reopened.blocks() == before_restart
            reopened.close()

            # -- finalization (11 blocks) and maturity ----------------------------------------------------
            last = max(max(b.height for b in ours), job.height)
            while await client.get_tip_block_number() < last + 11 + MATURITY_BLOCKS + 2:
                await mine_block(client)
            await indexed(client)

            # -- pass 1: kill -9 after recording batch 1, before sending it -----------------------------------
            assert _run_engine(config, engine_log, "after-record") == -9, engine_log.read_text()
            (t1,) = ledger.payouts()
            assert t1.status == "recorded"
            assert (await wallet.status(bytes.fromhex(t1.tx_hash))).state == TxState.UNKNOWN
            assert {b.block_hash.hex() for b in ours} <= {b.block_hash for b in ledger.blocks(("credited",))}
            uncle = ledger.block(side)
            assert uncle is not None and uncle.status == "void" and uncle.void_reason.startswith("uncle"), uncle
            assert uncle.credits == ()

            # -- pass 2: the same signed transaction is sent (same hash), nothing new is built ---------------
            assert _run_engine(config, engine_log) == 0, engine_log.read_text()
            assert [(p.tx_hash, p.status) for p in ledger.payouts()] == [(t1.tx_hash, "sent")]
            await _mine_until_committed(client, wallet, t1.tx_hash)

            # -- pass 3: kill -9 after the node took batch 2, before the ledger says sent ---------------------
            assert _run_engine(config, engine_log, "after-send") == -9, engine_log.read_text()
            t1_, t2 = ledger.payouts()
            assert (t1_.tx_hash, t1_.status) == (t1.tx_hash, "committed")
            assert t2.status == "recorded"
            assert (await wallet.status(bytes.fromhex(t2.tx_hash))).state in (TxState.PENDING, TxState.PROPOSED)
            await _mine_until_committed(client, wallet, t2.tx_hash)

            # -- passes until nothing is due: each finds the last one committed and pays the next -----------
            for _ in range(6):
                assert _run_engine(config, engine_log) == 0, engine_log.read_text()
                open_txs = ledger.payouts(("recorded", "sent"))
                if not open_txs:
                    break
                for tx in open_txs:
                    await _mine_until_committed(client, wallet, tx.tx_hash)
            assert ledger.payouts(("recorded", "sent")) == []
            await indexed(client)

            # -- the chain proves it: every ledger payout committed once, each miner holds its credits ---------
            payouts = ledger.payouts()
            assert [p.status for p in payouts] == ["committed"] * len(payouts)
            assert len({p.tx_hash for p in payouts}) == len(payouts) >= 3
            credits: dict[str, int] = {}
            rewards = 0
            for view in ledger.blocks(("credited",)):
                assert view.reward_total is not None
                rewards += view.reward_total
                # the credits are the PPLNS split of the node's reward over the window stored at acceptance, to
                # the shannon: recomputed here from the stored weights and the configured fee policy
                weights = dict(view.window)
                assert set(weights) <= {MINER_A, MINER_B} and sum(weights.values()) == view.window_work, view
                assert (view.fee_bps, view.fee_address) == (FEE_BPS, OPERATOR), view
                expected = split_reward(view.reward_total, weights, FEE_BPS, OPERATOR)
                assert sorted(view.credits) == sorted((c.address, c.kind, c.amount) for c in expected), view
                # the fee policy: floor(reward x bps / 10^4) to the operator, the rest to the miners by work
                # (a window without work, which a pool's blocks cannot have, would give the operator all of it)
                fee = view.reward_total * FEE_BPS // 10_000 if any(weights.values()) else view.reward_total
                assert [(a, amount) for a, kind, amount in view.credits if kind == "fee"] == [(OPERATOR, fee)], view
                shares = sum(amount for _, kind, amount in view.credits if kind == "share")
                assert shares == view.reward_total - fee, view
                for addr, _kind, amount in view.credits:
                    credits[addr] = credits.get(addr, 0) + amount
            assert set(credits) == {MINER_A, MINER_B, OPERATOR}, credits
            chain_outputs: dict[str, int] = {}
            fees = 0
            for p in payouts:
                status = await wallet.status(bytes.fromhex(p.tx_hash))
                assert status.state == TxState.COMMITTED and status.block_hash is not None
                block = await client.get_block(status.block_hash)
                assert block is not None
                assert sum(t["hash"] == "0x" + p.tx_hash for t in block["transactions"]) == 1
                tx = Transaction.from_json(json.loads(p.raw_tx), "raw_tx")
                fees += p.fee
                for output in tx.outputs:
                    if output.lock != wallet.lock:
                        owner = encode_address(output.lock, "dev")
                        chain_outputs[owner] = chain_outputs.get(owner, 0) + output.capacity
            for miner in (MINER_A, MINER_B):
                held, _ = await live_cells_capacity(client, parse_address(miner, "dev"))
                assert held == credits[miner] == chain_outputs[miner], (miner, held, credits[miner])
                assert ledger.balance(miner).paid == credits[miner] and ledger.balance(miner).payable == 0
            op_held, _ = await live_cells_capacity(client, parse_address(OPERATOR, "dev"))
            assert op_held == chain_outputs.get(OPERATOR, 0)
            balances = ledger.balances()
            payable = sum(b.payable for b in balances.values())
            lines = sum(amount for p in payouts for _a, amount in p.outputs)
            assert lines == sum(chain_outputs.values()) + fees
            assert payable + lines == rewards, (payable, lines, rewards)
            assert balances[OPERATOR].payable + op_held + fees == credits[OPERATOR]
            assert ledger.check_invariants() == []
    finally:
        ledger.close()
        await redis.aclose()
