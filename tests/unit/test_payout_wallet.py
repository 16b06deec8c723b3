"""Payment transactions without a node: capacity, size and fee rules, input selection, change, signing, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from coincurve import PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.ckb import molecule as mol
from ckbpool.ckb.address import encode_address, secp256k1_lock
from ckbpool.ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, MIN_CELL_CAPACITY, DevKey, transfer
from ckbpool.ckb.epoch import EpochNumberWithFraction, cellbase_is_mature
from ckbpool.ckb.errors import RpcError
from ckbpool.ckb.hashing import ckb_hash
from ckbpool.ckb.node import dev_cellbase_maturity
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.signing import PLACEHOLDER_WITNESS, Secp256k1Key, sighash_all_message, witness_args
from ckbpool.ckb.structures import CellDep, CellOutput, OutPoint, Script
from ckbpool.ckb.txbuild import (
    SHANNONS_PER_CKB,
    TRANSACTION_SIZE_LIMIT,
    InsufficientFunds,
    LiveCell,
    OutputBelowMinimum,
    PaymentError,
    PaymentOutput,
    TransactionTooLarge,
    fee_for_size,
    occupied_capacity,
    plan_batch,
    tx_size_in_block,
)
from ckbpool.payouts.wallet import (
    InputSpent,
    InvalidRecipient,
    KeyFileError,
    PayoutWallet,
    SendRejected,
    WalletSettings,
    _explain_refusal,
    create_key_file,
    load_key_file,
)

pytestmark = pytest.mark.unit

CKB = SHANNONS_PER_CKB
KEY = Secp256k1Key(bytes.fromhex("11" * 32))
DEPS = (CellDep(OutPoint(b"\x22" * 32, 0), 1),)


def cell(n: int, ckb: int, block: int = 100, tx_index: int = 1) -> LiveCell:
    return LiveCell(OutPoint(bytes([n]) * 32, n), ckb * CKB, block, tx_index)


def pay(n: int, shannons: int) -> PaymentOutput:
    return PaymentOutput(secp256k1_lock(bytes([n]) * 20), shannons, f"addr{n}")


# -- rules from ckb ----------------------------------------------------------------------------------------------


def test_occupied_capacity_is_one_ckb_per_byte_of_the_cell() -> None:
    secp = CellOutput(0, secp256k1_lock(bytes(20)), None)
    assert occupied_capacity(secp) == 61 * CKB == MIN_CELL_CAPACITY  # 8 + 32 + 1 + 20
    acp = CellOutput(0, Script(b"\x01" * 32, 1, bytes(22)), None)
    assert occupied_capacity(acp) == 63 * CKB
    typed = CellOutput(0, secp256k1_lock(bytes(20)), Script(b"\x02" * 32, 1, bytes(32)))
    assert occupied_capacity(typed, data=bytes(16)) == (61 + 65 + 16) * CKB


def test_size_in_block_adds_the_4_byte_offset_and_the_fee_rounds_up() -> None:
    plan = plan_batch([pay(1, 100 * CKB)], [cell(1, 1000)], change_lock=KEY.lock, cell_deps=DEPS)
    assert tx_size_in_block(plan.tx) == len(plan.tx.serialize()) + 4 == plan.size
    assert fee_for_size(1000, 1000) == 1000
    assert fee_for_size(1001, 1000) == 1001
    assert fee_for_size(999, 1) == 1  # ckb's floor would be 0: we never go below it
    assert fee_for_size(12345, 0) == 0


# -- planning a batch ----------------------------------------------------------------------------------------------


def test_a_batch_pays_every_output_and_returns_change_with_the_exact_fee() -> None:
    outputs = [pay(1, 61 * CKB), pay(2, 100 * CKB + 1), pay(3, 250 * CKB)]
    plan = plan_batch(outputs, [cell(1, 300), cell(2, 300), cell(3, 300)], change_lock=KEY.lock, cell_deps=DEPS)
    assert [c.out_point.index for c in plan.inputs] == [1, 2]  # in the order given, no more than needed
    assert plan.fee == plan.required_fee == fee_for_size(plan.size, 1000)
    assert plan.change == 600 * CKB - (411 * CKB + 1) - plan.fee
    assert plan.input_capacity == plan.paid + plan.change + plan.fee
    tx_outputs = plan.tx.outputs
    assert [o.capacity for o in tx_outputs] == [61 * CKB, 100 * CKB + 1, 250 * CKB, plan.change]
    assert tx_outputs[-1].lock == KEY.lock and plan.tx.outputs_data == (b"",) * 4
    assert plan.tx.witnesses == (PLACEHOLDER_WITNESS, b"")
    assert plan.tx.cell_deps == DEPS


def test_a_remainder_too_small_for_a_change_cell_goes_to_the_fee() -> None:
    # 161 CKB in, 100 CKB out: 61 CKB minus the fee is left, less than a change cell can hold
    plan = plan_batch([pay(1, 100 * CKB)], [cell(1, 161)], change_lock=KEY.lock, cell_deps=DEPS)
    assert plan.change == 0 and len(plan.tx.outputs) == 1
    assert plan.fee == 61 * CKB and plan.required_fee == fee_for_size(plan.size, 1000)
    # with one more cell available, the planner takes it to make change instead
    plan = plan_batch([pay(1, 100 * CKB)], [cell(1, 161), cell(2, 70)], change_lock=KEY.lock, cell_deps=DEPS)
    assert len(plan.inputs) == 2 and plan.change == 131 * CKB - plan.fee and plan.fee == plan.required_fee


def test_insufficient_funds_names_the_numbers() -> None:
    with pytest.raises(InsufficientFunds) as err:
        plan_batch(
            [pay(1, 100 * CKB), pay(2, 61 * CKB)],
            [cell(1, 80), cell(2, 80)],
            change_lock=KEY.lock,
            cell_deps=DEPS,
            spendable_note="2000 CKB more is still immature",
        )
    assert err.value.available == 160 * CKB and err.value.needed > 161 * CKB
    message = str(err.value)
    assert (
        "need 161.0000" in message and "can spend 160 CKB" in message and "2000 CKB more is still immature" in message
    )


def test_an_output_below_its_occupied_capacity_is_refused_by_index_and_address() -> None:
    with pytest.raises(OutputBelowMinimum, match=r"output 1 to addr2: 60\.99999999 CKB is below .* 61 CKB"):
        plan_batch([pay(1, 61 * CKB), pay(2, 61 * CKB - 1)], [cell(1, 1000)], change_lock=KEY.lock, cell_deps=DEPS)
    with pytest.raises(PaymentError, match="at least one output"):
        plan_batch([], [cell(1, 1000)], change_lock=KEY.lock, cell_deps=DEPS)


def test_a_batch_above_the_node_size_limit_is_refused() -> None:
    outputs = [pay(i % 250, 61 * CKB) for i in range(5000)]
    with pytest.raises(TransactionTooLarge) as err:
        plan_batch(outputs, [cell(1, 400_000)], change_lock=KEY.lock, cell_deps=DEPS)
    assert err.value.size > TRANSACTION_SIZE_LIMIT


@settings(max_examples=60, deadline=None)
@given(
    amounts=st.lists(st.integers(61 * CKB, 5000 * CKB), min_size=1, max_size=12),
    cells=st.lists(st.integers(61, 20_000), min_size=1, max_size=12),
    fee_rate=st.integers(0, 5000),
)
def test_every_plan_balances_to_the_shannon(amounts: list[int], cells: list[int], fee_rate: int) -> None:
    outputs = [pay(i + 1, a) for i, a in enumerate(amounts)]
    live = [cell(i + 1, c) for i, c in enumerate(cells)]
    try:
        plan = plan_batch(outputs, live, change_lock=KEY.lock, cell_deps=DEPS, fee_rate=fee_rate)
    except InsufficientFunds as exc:
        assert exc.available == sum(c.capacity for c in live)
        assert exc.available < sum(amounts) + fee_for_size(0, fee_rate) or exc.needed > exc.available
        return
    assert plan.input_capacity == sum(amounts) + plan.change + plan.fee
    assert plan.size == tx_size_in_block(plan.tx)
    assert plan.fee >= fee_for_size(plan.size, fee_rate)
    assert plan.change == 0 or plan.change >= 61 * CKB
    if plan.change:
        assert plan.fee == fee_for_size(plan.size, fee_rate)
    else:
        assert plan.fee - fee_for_size(plan.size, fee_rate) < 61 * CKB
    signed = KEY.sign_sighash_all(plan.tx)
    assert tx_size_in_block(signed) == plan.size  # the fee was computed on the final size


# -- signing ---------------------------------------------------------------------------------------------------


def test_signing_matches_the_dev_wallet_vector() -> None:
    """Recorded from the dev wallet before its signing moved to ckb/signing.py; the node accepted such
    transactions in test_dev_chain_mining, and RFC 6979 makes the signature deterministic."""
    genesis = {"transactions": [{"hash": "0x" + "11" * 32, "outputs": []}, {"hash": "0x" + "22" * 32, "outputs": []}]}
    key = DevKey(DEV_GENESIS_PRIVATE_KEY)
    tx = transfer(key, genesis, (OutPoint(b"\x33" * 32, 7), 20_000 * CKB), DevKey(bytes(31) + b"\x01").lock, 1000 * CKB)
    assert tx.hash().hex() == "4d487bada6b43b3d346e66aa759e37f9c5e672c97118de99223b13fbf334796d"
    assert tx.witnesses[0].hex() == (
        "5500000010000000550000005500000041000000da2ccf6864793b483b6f6af3e276fca0c143175c301697f82db2e8b9594f0bf6"
        "2773d08670c247386dbaaf43604713e774f1d3c106318ec9a069e4f7a9b4c99a00"
    )
    assert len(tx.serialize()) == 460


def test_a_multi_input_signature_recovers_the_key_over_the_whole_group() -> None:
    plan = plan_batch(
        [pay(1, 500 * CKB)], [cell(1, 300), cell(2, 300), cell(3, 300)], change_lock=KEY.lock, cell_deps=DEPS
    )
    signed = KEY.sign_sighash_all(plan.tx)
    assert len(signed.witnesses) == 2 and signed.witnesses[1] == b""
    # rebuild the message by hand: tx_hash, then each witness of the group as u64 length || bytes
    message = ckb_hash(signed.hash() + mol.u64(len(PLACEHOLDER_WITNESS)) + PLACEHOLDER_WITNESS + mol.u64(0))
    assert message == sighash_all_message(signed.hash(), [PLACEHOLDER_WITNESS, b""], [0, 1], 2)
    signature = signed.witnesses[0][20:85]
    assert signed.witnesses[0] == witness_args(lock=signature)
    recovered = PublicKey.from_signature_and_message(signature, message, hasher=None)
    assert ckb_hash(recovered.format(compressed=True))[:20] == KEY.lock.args
    # a different tx (another output amount) gives another signature
    other = KEY.sign_sighash_all(
        plan_batch([pay(1, 501 * CKB)], [cell(1, 900)], change_lock=KEY.lock, cell_deps=DEPS).tx
    )
    assert other.witnesses[0] != signed.witnesses[0]


def test_the_private_key_never_shows_in_a_repr() -> None:
    assert "11" * 32 not in repr(KEY) and KEY.private_key.hex() not in repr(KEY)
    wallet = PayoutWallet(KEY, CkbRpcClient("http://127.0.0.1:1"), "dev")
    assert KEY.private_key.hex() not in repr(wallet) and wallet.address in repr(wallet)
    with pytest.raises(ValueError, match="not a valid secp256k1 secret"):
        Secp256k1Key(bytes(32))


# -- addresses, key files, settings, refusals -------------------------------------------------------------------


def test_payments_to_another_network_or_bad_amounts_are_refused_by_index() -> None:
    wallet = PayoutWallet(KEY, CkbRpcClient("http://127.0.0.1:1"), "mainnet")
    good = encode_address(secp256k1_lock(bytes(20)), "mainnet")
    testnet = encode_address(secp256k1_lock(bytes(20)), "testnet")
    assert wallet.address.startswith("ckb1")
    assert wallet.payment_outputs([(good, 61 * CKB)])[0].capacity == 61 * CKB
    with pytest.raises(InvalidRecipient, match=r"payment 1 to 'ckt1.*': not a mainnet address: a ckt address cannot"):
        wallet.payment_outputs([(good, 61 * CKB), (testnet, 61 * CKB)])
    with pytest.raises(InvalidRecipient, match=r"payment 0 .* bad checksum"):
        wallet.payment_outputs([(good[:-1] + ("q" if good[-1] != "q" else "p"), 61 * CKB)])
    with pytest.raises(InvalidRecipient, match="integer shannons"):
        wallet.payment_outputs([(good, 61.5)])  # type: ignore[list-item]
    with pytest.raises(InvalidRecipient, match="must be positive"):
        wallet.payment_outputs([(good, 0)])


def test_key_files_are_created_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "payout.key"
    key = create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key_file(path) == key
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(path)
    assert load_key_file(path) == key


def test_an_unsafe_or_malformed_key_file_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "payout.key"
    path.write_text("0x" + "ab" * 32 + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match=r"mode 0644\): run `chmod 600 .*payout.key`") as err:
        load_key_file(path)
    assert "ab" * 32 not in str(err.value)
    os.chmod(path, 0o600)
    assert load_key_file(path).private_key == bytes.fromhex("ab" * 32)
    path.write_text("cd" * 31 + "\n")
    with pytest.raises(KeyFileError, match="64 hex digits") as err:
        load_key_file(path)
    assert "cd" * 31 not in str(err.value)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key_file(tmp_path / "missing.key")


def test_settings_forbid_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    ok = WalletSettings(key_file=tmp_path / "k", network="dev")
    assert ok.fee_rate == 1000 and ok.outputs_validator == "well_known_scripts_only"
    with pytest.raises(ValueError, match="fee_rat"):
        WalletSettings(key_file=tmp_path / "k", network="dev", fee_rat=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="fee_rate"):
        WalletSettings(key_file=tmp_path / "k", network="dev", fee_rate=-1)
    with pytest.raises(ValueError, match="outputs_validator"):
        WalletSettings(key_file=tmp_path / "k", network="dev", outputs_validator="anything")  # type: ignore[arg-type]


def test_the_nodes_refusals_become_sentences() -> None:
    plan = plan_batch([pay(1, 100 * CKB)], [cell(7, 1000)], change_lock=KEY.lock, cell_deps=DEPS)
    op = plan.inputs[0].out_point
    raw = (op.tx_hash + op.index.to_bytes(4, "little")).hex()
    node = f"TransactionFailedToResolve: Resolve failed Dead(OutPoint(0x{raw}))"
    refusal = _explain_refusal(b"\x01" * 32, plan.tx, RpcError("send_transaction", -301, node))
    assert isinstance(refusal, InputSpent) and refusal.out_points == (op,)
    assert f"0x{'07' * 32}:7" in str(refusal)
    low = _explain_refusal(
        b"\x01" * 32, plan.tx, RpcError("send_transaction", -1104, "PoolRejectedTransactionByMinFeeRate")
    )
    assert isinstance(low, SendRejected) and "below the node's tx_pool.min_fee_rate" in str(low)
    immature = _explain_refusal(
        b"\x01" * 32,
        plan.tx,
        RpcError("send_transaction", -302, "Verification failed Transaction(CellbaseImmaturity(Inputs[0]))"),
    )
    assert "before its maturity" in str(immature)


# -- epochs and maturity ------------------------------------------------------------------------------------------


def test_epoch_fractions_and_cellbase_maturity_follow_ckb() -> None:
    mainnet_maturity = EpochNumberWithFraction(4, 0, 1).full_value()
    assert mainnet_maturity == 0x10000000004  # ckb's CELLBASE_MATURITY (4 epochs), as get_consensus shows it
    assert EpochNumberWithFraction.from_full_value(mainnet_maturity) == EpochNumberWithFraction(4, 0, 1)
    assert EpochNumberWithFraction.from_full_value(0).to_rational() == 0
    header_epoch = EpochNumberWithFraction(7, 120, 1800).full_value()
    assert cellbase_is_mature(header_epoch, EpochNumberWithFraction(11, 120, 1800).full_value(), mainnet_maturity)
    assert not cellbase_is_mature(header_epoch, EpochNumberWithFraction(11, 119, 1800).full_value(), mainnet_maturity)
    five_blocks = dev_cellbase_maturity(5, 1000)
    assert EpochNumberWithFraction.from_full_value(five_blocks) == EpochNumberWithFraction(0, 5, 1000)
    assert cellbase_is_mature(
        EpochNumberWithFraction(0, 12, 1000).full_value(),
        EpochNumberWithFraction(0, 17, 1000).full_value(),
        five_blocks,
    )
    assert not cellbase_is_mature(
        EpochNumberWithFraction(0, 12, 1000).full_value(),
        EpochNumberWithFraction(0, 16, 1000).full_value(),
        five_blocks,
    )
