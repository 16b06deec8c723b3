"""The payout wallet against a real ckb dev node: funded by its own mined cellbase, it pays three addresses in
one transaction, the node commits it, and the indexer shows each address holding exactly its amount.

The node's block assembler pays the wallet's own lock, and the dev spec's cellbase maturity is shortened to a few
blocks, so the wallet holds both mature and immature cellbase cells: the test checks it spends only the former.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckbpool.ckb.address import encode_address
from ckbpool.ckb.indexer import indexer_tip, live_cells_capacity
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.signing import Secp256k1Key
from ckbpool.ckb.structures import Transaction
from ckbpool.ckb.txbuild import (
    SHANNONS_PER_CKB,
    InsufficientFunds,
    PaymentOutput,
    fee_for_size,
    plan_batch,
    tx_size_in_block,
)
from ckbpool.miner.solo import mine_block
from ckbpool.payouts.wallet import (
    InputSpent,
    PayoutWallet,
    TxState,
    create_key_file,
    load_key_file,
)
from conftest import start_dev_node

pytestmark = pytest.mark.integration

MATURITY_BLOCKS = 5
CKB = SHANNONS_PER_CKB


@pytest.fixture(scope="module")
def wallet_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Secp256k1Key]:
    path = tmp_path_factory.mktemp("secrets") / "payout.key"
    create_key_file(path)
    return path, load_key_file(path)


@pytest.fixture(scope="module")
def wallet_node(
    ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, wallet_key: tuple[Path, Secp256k1Key]
) -> Iterator[CkbNode]:
    """A dev node whose block rewards go to the payout wallet, with a 5-block cellbase maturity."""
    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb"), wallet_key[1], cellbase_maturity_blocks=MATURITY_BLOCKS
    )
    try:
        yield node
    finally:
        node.stop()


async def wait_indexed(client: CkbRpcClient, number: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        tip = await indexer_tip(client)
        if tip is not None and tip >= number:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"indexer stuck at {tip}, waiting for block {number}")
        await asyncio.sleep(0.1)


def recipient(n: int) -> str:
    return encode_address(Secp256k1Key(bytes(31) + bytes([n])).lock, "dev")


async def test_batch_of_three_is_committed_and_each_address_holds_exactly_its_amount(
    wallet_node: CkbNode, wallet_key: tuple[Path, Secp256k1Key]
) -> None:
    async with wallet_node.client() as client:
        wallet = PayoutWallet(load_key_file(wallet_key[0]), client, "dev")
        assert wallet.lock == wallet_key[1].lock
        # Rewards of block N arrive in block N + 11's cellbase: mine until several have, the last few immature.
        for _ in range(22):
            await mine_block(client)
        tip = await client.get_tip_block_number()
        await wait_indexed(client, tip)

        cells = await wallet.live_cells()
        cellbase_cells = [c for c in cells if c.is_cellbase]
        assert cellbase_cells, "the wallet should hold the cellbase outputs of the blocks it mined"
        last_mature = await wallet.last_mature_block()
        assert last_mature == tip - MATURITY_BLOCKS
        balance = await wallet.balance()
        expected_immature = sum(c.capacity for c in cellbase_cells if c.block_number > tip - MATURITY_BLOCKS)
        assert expected_immature > 0
        assert balance.immature == expected_immature
        assert balance.total == sum(c.capacity for c in cells) == balance.spendable + balance.immature

        payments = [(recipient(1), 61 * CKB), (recipient(2), 1000 * CKB + 12_345_678), (recipient(3), 2000 * CKB)]
        batch = await wallet.build_batch(payments)
        # the hash is final before anything is sent: it is what the engine records first
        assert batch.tx_hash == batch.tx.hash()
        assert (await wallet.status(batch.tx_hash)).state == TxState.UNKNOWN
        assert len(batch.plan.inputs) >= 2, "a 3061 CKB batch needs more than one ~2500 CKB cellbase input"
        assert all(c.block_number <= last_mature for c in batch.plan.inputs if c.is_cellbase)
        size = tx_size_in_block(batch.tx)
        assert size == batch.plan.size
        assert batch.fee == fee_for_size(size, wallet.fee_rate)
        assert batch.plan.input_capacity == sum(a for _, a in payments) + batch.change + batch.fee

        assert await wallet.send(batch) == batch.tx_hash
        assert await wallet.send(batch) == batch.tx_hash, "a resend of a pending transaction is harmless"
        seen = [(await wallet.status(batch.tx_hash)).state]
        assert seen[0] in (TxState.PENDING, TxState.PROPOSED)
        for _ in range(20):
            await mine_block(client)
            state = (await wallet.status(batch.tx_hash)).state
            if state != seen[-1]:
                seen.append(state)
            if state == TxState.COMMITTED:
                break
        assert seen[-1] == TxState.COMMITTED, f"states seen: {seen}"
        order = [TxState.PENDING, TxState.PROPOSED, TxState.COMMITTED]
        assert [order.index(s) for s in seen] == sorted({order.index(s) for s in seen}), f"states seen: {seen}"
        status = await wallet.status(batch.tx_hash)
        assert status.block_hash is not None and status.block_number is not None
        block = await client.get_block(status.block_hash)
        assert block is not None and any(t["hash"] == "0x" + batch.tx_hash.hex() for t in block["transactions"])

        await wait_indexed(client, await client.get_tip_block_number())
        for address, amount in payments:
            capacity, _ = await live_cells_capacity(client, wallet.payment_outputs([(address, 1)])[0].lock)
            assert capacity == amount, f"{address} holds {capacity}, paid {amount}"
        change_cells = [c for c in await wallet.live_cells() if c.out_point.tx_hash == batch.tx_hash]
        assert [(c.out_point.index, c.capacity) for c in change_cells] == [(3, batch.change)]
        assert await wallet.send(batch.tx) == batch.tx_hash, "a resend of a committed transaction is harmless"

        # The same inputs again, to someone else: the node refuses it, and we say which input is spent.
        outputs = [PaymentOutput(wallet.payment_outputs([(recipient(4), 100 * CKB)])[0].lock, 100 * CKB, "r4")]
        double = wallet.sign(
            plan_batch(outputs, batch.plan.inputs, change_lock=wallet.lock, cell_deps=await wallet.cell_deps())
        )
        with pytest.raises(InputSpent) as err:
            await wallet.send(double)
        spent = {c.out_point for c in batch.plan.inputs}
        assert err.value.spent and set(err.value.spent) <= spent and not err.value.unknown, str(err.value)
        assert "already spent" in str(err.value) and double.tx_hash.hex() in str(err.value)
        assert (await wallet.status(double.tx_hash)).state in (TxState.UNKNOWN, TxState.REJECTED)


async def test_a_recorded_transaction_read_back_from_json_sends_the_same_hash(
    wallet_node: CkbNode, wallet_key: tuple[Path, Secp256k1Key]
) -> None:
    """What the engine records (tx JSON) is enough to resend after a crash: same bytes, same hash. An unfunded
    wallet says how much it lacks."""
    async with wallet_node.client() as client:
        empty = PayoutWallet(Secp256k1Key(bytes(31) + b"\x09"), client, "dev")
        await wait_indexed(client, await client.get_tip_block_number())
        assert await empty.live_cells() == []
        with pytest.raises(InsufficientFunds, match=r"need 61\.\d+ CKB .* can spend 0 CKB"):
            await empty.build_batch([(recipient(5), 61 * CKB)])

        funded = PayoutWallet(load_key_file(wallet_key[0]), client, "dev")
        batch = await funded.build_batch([(empty.address, 500 * CKB)])
        restored = Transaction.from_json(batch.tx_json(), "recorded")
        assert restored == batch.tx and restored.hash() == batch.tx_hash
        assert await funded.send(restored) == batch.tx_hash
        for _ in range(20):
            await mine_block(client)
            if (await funded.status(batch.tx_hash)).state == TxState.COMMITTED:
                break
        await wait_indexed(client, await client.get_tip_block_number())
        assert (await empty.balance()).total == 500 * CKB
