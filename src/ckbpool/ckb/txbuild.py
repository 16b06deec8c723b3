"""Capacity, size and fee rules of CKB transactions, and the plan of a batch payment (inputs, outputs, change, fee).

Pure functions, no I/O: the payout wallet (payouts/wallet.py) feeds them the live cells it got from the node.
Every rule below is the node's own; the sources are nervosnetwork/ckb (tag v0.205 and later, unchanged in 0.210):

- Occupied capacity (util/gen-types/src/extension/capacity.rs, ``CellOutput::occupied_capacity``): a cell must
  hold at least 1 CKB (10^8 shannons) per byte of ``capacity`` (8) + lock (32 code_hash + 1 hash_type + args)
  + type script (same rule, if any) + data. A secp256k1_blake160 cell: 8 + 32 + 1 + 20 = 61 bytes = 61 CKB.
  Less than that and the transaction fails with ``InsufficientCellCapacity``.
- Size for fees (tx-pool/src/process.rs: ``tx.data().serialized_size_in_block()``; util/gen-types/src/extension/
  serialized_size.rs): the molecule ``Transaction`` bytes **plus 4**, the u32 offset the transaction takes in
  its block's ``transactions`` dynvec.
- Fee floor (tx-pool/src/util.rs ``check_tx_fee``; util/types/src/core/fee_rate.rs ``FeeRate::fee``): a
  transaction is refused (-1104 PoolRejectedTransactionByMinFeeRate) when inputs - outputs <
  ``min_fee_rate * size / 1000`` (integer division), ``[tx_pool] min_fee_rate`` = 1000 shannons/KB by default
  (resource/ckb.toml). We round up, so our fee is never below the node's floor.
- Size limit: ``TRANSACTION_SIZE_LIMIT`` = 512,000 bytes (util/types/src/core/tx_pool.rs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import molecule as mol
from .errors import CkbError
from .jsonhex import parse_bytes
from .signing import PLACEHOLDER_WITNESS
from .structures import CellDep, CellInput, CellOutput, OutPoint, Script, Transaction

SHANNONS_PER_CKB = 100_000_000
TX_SIZE_OFFSET = 4  # molecule NUMBER_SIZE: the transaction's offset in Block.transactions
TRANSACTION_SIZE_LIMIT = 512_000
DEFAULT_FEE_RATE = 1_000  # shannons per 1000 bytes: ckb's default tx_pool.min_fee_rate
MAX_CAPACITY = (1 << 64) - 1
# One more input of the same lock group: a CellInput (8 since + 36 out point) and its empty witness
# (4-byte dynvec offset + 4-byte Bytes length).
_EXTRA_INPUT_SIZE = 44 + 8


class PaymentError(CkbError):
    """A payment cannot be built or was refused; the message says what is wrong, with the numbers."""


class OutputBelowMinimum(PaymentError):
    def __init__(self, index: int, label: str, capacity: int, minimum: int) -> None:
        self.index = index
        self.label = label
        self.capacity = capacity
        self.minimum = minimum
        super().__init__(
            f"output {index} to {label}: {ckb(capacity)} CKB is below the cell's occupied capacity "
            f"{ckb(minimum)} CKB ({minimum // SHANNONS_PER_CKB} bytes at 1 CKB per byte)"
        )


class InsufficientFunds(PaymentError):
    def __init__(self, needed: int, available: int, detail: str = "") -> None:
        self.needed = needed
        self.available = available
        message = (
            f"insufficient funds: need {ckb(needed)} CKB ({needed} shannons: outputs + fee), "
            f"the wallet can spend {ckb(available)} CKB ({available} shannons)"
        )
        super().__init__(message + (f"; {detail}" if detail else ""))


class TransactionTooLarge(PaymentError):
    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(
            f"the transaction would be {size} bytes, above the node's limit of {TRANSACTION_SIZE_LIMIT}: "
            "split the batch"
        )


def ckb(shannons: int) -> str:
    """Shannons as an exact decimal CKB amount for messages (no floats)."""
    whole, frac = divmod(shannons, SHANNONS_PER_CKB)
    return f"{whole}.{frac:08d}".rstrip("0").rstrip(".") if frac else str(whole)


def script_occupied_bytes(script: Script) -> int:
    return 32 + 1 + len(script.args)


def occupied_capacity(output: CellOutput, data: bytes = b"") -> int:
    """The least capacity (shannons) ``output`` with ``data`` may hold (ckb's ``CellOutput::occupied_capacity``)."""
    size = 8 + len(data) + script_occupied_bytes(output.lock)
    if output.type is not None:
        size += script_occupied_bytes(output.type)
    return size * SHANNONS_PER_CKB


def tx_size_in_block(tx: Transaction) -> int:
    """The size the tx-pool's fee check uses: serialized Transaction + the 4-byte offset in the block."""
    return len(tx.serialize()) + TX_SIZE_OFFSET


def fee_for_size(size: int, fee_rate: int) -> int:
    """The fee for ``size`` bytes at ``fee_rate`` shannons/KB, rounded up (ckb's floor is the same product
    rounded down, so this always passes ``min_fee_rate`` when ``fee_rate`` >= it)."""
    return -(-size * fee_rate // 1000)


def secp256k1_dep_group(genesis_block: dict[str, Any]) -> CellDep:
    """The secp256k1_blake160 dep group cell: by chain-spec convention output 0 of the genesis block's second
    transaction (specs' ``[[genesis.dep_groups]]``; on mainnet 0x71a7ba8f…e46c:0, on testnet 0xf8de3bb4…5d37:0)."""
    tx_hash = parse_bytes(genesis_block["transactions"][1]["hash"], "genesis.transactions[1].hash", 32)
    return CellDep(out_point=OutPoint(tx_hash, 0), dep_type=1)


@dataclass(frozen=True, slots=True)
class LiveCell:
    """A spendable cell of the wallet (no type script, no data), as the indexer reports it."""

    out_point: OutPoint
    capacity: int
    block_number: int
    tx_index: int  # 0 = the block's cellbase

    @property
    def is_cellbase(self) -> bool:
        return self.tx_index == 0 and self.block_number > 0


@dataclass(frozen=True, slots=True)
class PaymentOutput:
    """One payment: ``capacity`` shannons to ``lock``; ``label`` (the address) names it in errors."""

    lock: Script
    capacity: int
    label: str


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """An unsigned batch: its transaction carries the placeholder witness, so its size is the signed size."""

    tx: Transaction
    inputs: tuple[LiveCell, ...]
    outputs: tuple[PaymentOutput, ...]
    change: int  # 0 when no change cell is made
    fee: int  # inputs - outputs - change: what the miner gets
    required_fee: int  # fee_for_size(size, fee_rate); fee exceeds it only when a too-small change went to the fee
    size: int  # tx_size_in_block
    fee_rate: int

    @property
    def input_capacity(self) -> int:
        return sum(cell.capacity for cell in self.inputs)

    @property
    def paid(self) -> int:
        return sum(out.capacity for out in self.outputs)


def plan_batch(
    outputs: Sequence[PaymentOutput],
    cells: Iterable[LiveCell],
    *,
    change_lock: Script,
    cell_deps: Sequence[CellDep],
    fee_rate: int = DEFAULT_FEE_RATE,
    spendable_note: str = "",
) -> BatchPlan:
    """Choose inputs from ``cells`` (in the order given) to pay every output plus the fee.

    Inputs are added until the remainder after outputs and fee can form a change cell back to ``change_lock``
    (at least its occupied capacity, 61 CKB for a secp256k1 lock). If the cells run out first but cover outputs
    + fee without a change cell, the remainder (less than 61 CKB) is left to the fee: a cell below its occupied
    capacity cannot exist, so it goes to the block's miner rather than back to the wallet.
    """
    if not outputs:
        raise PaymentError("a batch needs at least one output")
    if fee_rate < 0:
        raise PaymentError(f"fee rate must be >= 0 shannons/KB, got {fee_rate}")
    cell_outputs = []
    for index, out in enumerate(outputs):
        cell_output = CellOutput(capacity=out.capacity, lock=out.lock, type=None)
        minimum = occupied_capacity(cell_output)
        if out.capacity < minimum:
            raise OutputBelowMinimum(index, out.label, out.capacity, minimum)
        if out.capacity > MAX_CAPACITY:
            raise PaymentError(f"output {index} to {out.label}: {out.capacity} shannons does not fit a u64")
        cell_outputs.append(cell_output)
    total_out = sum(out.capacity for out in outputs)
    change_minimum = occupied_capacity(CellOutput(capacity=0, lock=change_lock, type=None))

    def build(inputs: Sequence[LiveCell], change: int | None) -> Transaction:
        outs = list(cell_outputs)
        if change is not None:
            outs.append(CellOutput(capacity=change, lock=change_lock, type=None))
        return Transaction(
            version=0,
            cell_deps=tuple(cell_deps),
            header_deps=(),
            inputs=tuple(CellInput(since=0, previous_output=c.out_point) for c in inputs),
            outputs=tuple(outs),
            outputs_data=(b"",) * len(outs),
            witnesses=(PLACEHOLDER_WITNESS, *([b""] * (len(inputs) - 1))),
        )

    # Sizes of the one-input transactions (with and without a change cell); each further input adds a fixed
    # number of bytes, so the loop below never re-serializes a transaction of a thousand outputs.
    probe = LiveCell(OutPoint(bytes(32), 0), 0, 0, 0)
    size_with_change_1 = tx_size_in_block(build([probe], 0))
    size_without_change_1 = size_with_change_1 - _change_output_size(change_lock)

    selected: list[LiveCell] = []
    available = 0
    plan: tuple[int | None, int, int] | None = None  # (change or None, fee, size)
    fallback: tuple[int, int] | None = None
    for cell in cells:
        selected.append(cell)
        available += cell.capacity
        extra = _EXTRA_INPUT_SIZE * (len(selected) - 1)
        size_c = size_with_change_1 + extra
        fee_c = fee_for_size(size_c, fee_rate)
        change = available - total_out - fee_c
        if change >= change_minimum:
            plan = (change, fee_c, size_c)
            break
        size_n = size_without_change_1 + extra
        fee_n = fee_for_size(size_n, fee_rate)
        fallback = (fee_n, size_n) if available - total_out >= fee_n else None
    if plan is None and fallback is not None:
        plan = (None, fallback[0], fallback[1])
    if plan is None:
        size = size_with_change_1 + _EXTRA_INPUT_SIZE * max(0, len(selected) - 1)
        needed = total_out + fee_for_size(size, fee_rate)
        raise InsufficientFunds(needed, available, spendable_note)
    change_or_none, required_fee, size = plan
    if size > TRANSACTION_SIZE_LIMIT:
        raise TransactionTooLarge(size)
    tx = build(selected, change_or_none)
    actual = tx_size_in_block(tx)
    if actual != size:  # the arithmetic above must match the bytes; never send a tx whose fee was guessed
        raise AssertionError(f"planned size {size} != serialized size {actual}")
    change_amount = change_or_none or 0
    return BatchPlan(
        tx=tx,
        inputs=tuple(selected),
        outputs=tuple(outputs),
        change=change_amount,
        fee=available - total_out - change_amount,
        required_fee=required_fee,
        size=size,
        fee_rate=fee_rate,
    )


def _change_output_size(lock: Script) -> int:
    """Bytes one change cell adds: the CellOutput, its outputs dynvec offset, and its empty data (4 + 4)."""
    return len(CellOutput(capacity=0, lock=lock, type=None).serialize()) + 4 + len(mol.bytes_(b"")) + 4
