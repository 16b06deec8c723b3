"""A recorded payout that can never commit is ``gone``, and its balances are paid by a new transaction (issue 16,
"never pay twice", the "refuses the resend: input consumed" row of docs/payouts.md), on a real ckb dev node.

- three real blocks (mined to the payout wallet) are in a SQLite ledger with their PPLNS windows; the engine
  (``ckbpool payouts run`` subprocesses) finalizes, matures and credits them from the node;
- pass 1 dies (kill -9, test-only crash point) right after recording the batch, before sending it;
- one of that batch's inputs is then spent by a different transaction signed by the same wallet key, which the
  node commits: the recorded transaction can never commit any more;
- pass 2 resends the recorded bytes, the node refuses them (input consumed), the engine marks the payout gone,
  which releases its reservation, and pays the same balances in a new transaction that commits;
- the old hash is never committed (``get_transaction``), each miner's address holds exactly its credits, once
  (indexer), and ``Ledger.check_invariants()`` is clean.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_payouts_engine_chain import _mine_until_committed, _run_engine, address
from test_pool_e2e import POOL_TEST_COMPACT_TARGET

from ckbpool.ckb.address import encode_address, parse_address
from ckbpool.ckb.indexer import live_cells_capacity
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.structures import Transaction
from ckbpool.ckb.txbuild import PaymentOutput, plan_batch
from ckbpool.miner.solo import mine_block
from ckbpool.payouts.ledger import Ledger
from ckbpool.payouts.pplns import Window
from ckbpool.payouts.wallet import PayoutWallet, TxState, create_key_file, load_key_file
from ckbpool.pool.config import MIN_PAYMENT_SHANNONS, PayoutSettings
from conftest import start_dev_node
from support.chain import indexed

pytestmark = pytest.mark.integration

MATURITY_BLOCKS = 4
FEE_BPS = 150
CKB = 100_000_000
MINER_A, MINER_B, OPERATOR, STRANGER = address(11), address(12), address(13), address(14)
WEIGHTS = {MINER_A: 3, MINER_B: 1}


@pytest.fixture(scope="module")
def wallet_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "payout-wallet.key"
    create_key_file(path)
    return path


@pytest.fixture(scope="module")
def node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, wallet_key_file: Path) -> Iterator[CkbNode]:
    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb-gone"), load_key_file(wallet_key_file),
        genesis_compact_target=POOL_TEST_COMPACT_TARGET, cellbase_maturity_blocks=MATURITY_BLOCKS,
    )  # fmt: skip
    try:
        yield node
    finally:
        node.stop()


def _write_config(path: Path, node: CkbNode, db_url: str, key_file: Path, threshold: int) -> None:
    path.write_text(
        f"""network = "dev"
[node]
rpc_url = "{node.config.rpc_url}"
[payouts]
enabled = true
database_url = "{db_url}"
wallet_key_file = "{key_file}"
pplns_n = 2
fee_bps = {FEE_BPS}
fee_address = "{OPERATOR}"
threshold_shannons = {threshold}
metrics_port = 0
"""
    )


async def test_a_recorded_payout_whose_input_is_spent_is_gone_and_paid_by_a_new_transaction(
    node: CkbNode, wallet_key_file: Path, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    threshold = MIN_PAYMENT_SHANNONS + PayoutSettings().max_batch_fee()
    config = tmp_path / "pool.toml"
    _write_config(config, node, db_url, wallet_key_file, threshold)
    engine_log = tmp_path / "payouts.log"
    ledger = Ledger.open(db_url)
    try:
        async with node.client() as client:
            wallet = PayoutWallet(load_key_file(wallet_key_file), client, "dev")
            # -- three real blocks of "the pool", accepted with their windows; the engine does the rest --------
            ours = [await mine_block(client) for _ in range(3)]
            for mined in ours:
                block_hash = mined.block_hash.hex()
                ledger.record_found(block_hash, mined.number, MINER_A, "rig")
                window = Window(target_work=4, weights=dict(WEIGHTS), counted_work=4, shares=4, complete=True)
                ledger.accept(
                    block_hash, network_difficulty=1, window=window, n=2, fee_bps=FEE_BPS, fee_address=OPERATOR
                )
            last = max(b.height for b in ledger.blocks())
            while await client.get_tip_block_number() < last + 11 + MATURITY_BLOCKS + 8:
                await mine_block(client)
            await indexed(client)

            # -- pass 1: credits the blocks, records the batch, dies before sending it ------------------------
            assert _run_engine(config, engine_log, "after-record") == -9, engine_log.read_text()
            assert len(ledger.blocks(("credited",))) == 3, ledger.blocks()
            (t1,) = ledger.payouts()
            assert t1.status == "recorded"
            assert {a for a, _ in t1.outputs} >= set(WEIGHTS)
            old_hash = bytes.fromhex(t1.tx_hash)
            assert (await wallet.status(old_hash)).state == TxState.UNKNOWN
            for miner in WEIGHTS:
                assert ledger.balance(miner).in_flight > 0 and ledger.balance(miner).payable == 0

            # -- the same key spends one of its inputs elsewhere; the chain commits that --------------------------
            old_tx = Transaction.from_json(json.loads(t1.raw_tx), "raw_tx")
            victim = old_tx.inputs[0].previous_output
            (cell,) = [c for c in await wallet.live_cells() if c.out_point == victim]
            stranger_lock = parse_address(STRANGER, "dev")
            rival = wallet.sign(
                plan_batch([PaymentOutput(stranger_lock, 100 * CKB, "stranger")], [cell],
                           change_lock=wallet.lock, cell_deps=await wallet.cell_deps())
            )  # fmt: skip
            assert rival.tx_hash != old_hash
            await wallet.send(rival)
            await _mine_until_committed(client, wallet, rival.tx_hash.hex())
            await indexed(client)

            # -- pass 2: resend refused (input consumed) -> gone; the balances go out in a new transaction --------
            assert _run_engine(config, engine_log) == 0, engine_log.read_text()
            t1_, t2 = ledger.payouts()
            assert (t1_.tx_hash, t1_.status) == (t1.tx_hash, "gone"), t1_
            assert victim.tx_hash.hex() in t1_.gone_reason, t1_.gone_reason
            assert t2.tx_hash != t1.tx_hash and t2.status == "sent", t2
            assert dict(t2.outputs).keys() >= set(WEIGHTS)
            for a in WEIGHTS:
                assert dict(t2.outputs)[a] == dict(t1.outputs)[a]
            new_tx = Transaction.from_json(json.loads(t2.raw_tx), "raw_tx")
            assert victim not in {i.previous_output for i in new_tx.inputs}
            await _mine_until_committed(client, wallet, t2.tx_hash)

            # -- passes until nothing is open (the new one committed; the operator maybe paid later) -------------
            for _ in range(4):
                assert _run_engine(config, engine_log) == 0, engine_log.read_text()
                open_txs = ledger.payouts(("recorded", "sent"))
                if not open_txs:
                    break
                for open_tx in open_txs:
                    await _mine_until_committed(client, wallet, open_tx.tx_hash)
            assert ledger.payouts(("recorded", "sent")) == []
            for _ in range(3):  # some more blocks: the old bytes still never commit
                await mine_block(client)
            await indexed(client)

            # -- the chain proves it ------------------------------------------------------------------------------
            assert (await wallet.status(old_hash)).state in (TxState.UNKNOWN, TxState.REJECTED)
            payouts = ledger.payouts()
            assert payouts[0].status == "gone"
            assert all(p.status == "committed" for p in payouts[1:]), payouts
            credits: dict[str, int] = {}
            for view in ledger.blocks(("credited",)):
                for addr, _kind, amount in view.credits:
                    credits[addr] = credits.get(addr, 0) + amount
            assert set(credits) == {MINER_A, MINER_B, OPERATOR}, credits
            chain_outputs: dict[str, int] = {}
            for p in payouts[1:]:
                status = await wallet.status(bytes.fromhex(p.tx_hash))
                assert status.state == TxState.COMMITTED
                paid_tx = Transaction.from_json(json.loads(p.raw_tx), "raw_tx")
                for output in paid_tx.outputs:
                    if output.lock != wallet.lock:
                        owner = encode_address(output.lock, "dev")
                        chain_outputs[owner] = chain_outputs.get(owner, 0) + output.capacity
            for miner in WEIGHTS:
                held, _ = await live_cells_capacity(client, parse_address(miner, "dev"))
                assert held == credits[miner] == chain_outputs[miner], (miner, held, credits[miner])
                balance = ledger.balance(miner)
                assert (balance.paid, balance.payable, balance.in_flight) == (credits[miner], 0, 0)
            op_held, _ = await live_cells_capacity(client, parse_address(OPERATOR, "dev"))
            assert op_held == chain_outputs.get(OPERATOR, 0)
            stranger_held, _ = await live_cells_capacity(client, stranger_lock)
            assert stranger_held == 100 * CKB
            assert ledger.check_invariants() == []
    finally:
        ledger.close()
