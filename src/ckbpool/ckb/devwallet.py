"""A minimal secp256k1_blake160_sighash_all wallet for dev chains.

Used by the demo and the tests to put real, signed, non-cellbase transactions into mined blocks, which proves
transactions_root beyond the cellbase. Keys here are the dev chain's published test keys — never for real funds.
"""

from __future__ import annotations

from typing import Any

from .jsonhex import parse_bytes, parse_uint
from .signing import PLACEHOLDER_WITNESS, Secp256k1Key, witness_args
from .structures import CellDep, CellInput, CellOutput, OutPoint, Script, Transaction
from .txbuild import SHANNONS_PER_CKB, occupied_capacity

__all__ = [
    "DEV_GENESIS_PRIVATE_KEY",
    "MIN_CELL_CAPACITY",
    "SHANNONS_PER_CKB",
    "DevKey",
    "find_genesis_cells",
    "secp256k1_dep_group",
    "transfer",
    "witness_args",
]

# The dev chain spec (ckb's specs/dev.toml) issues genesis cells to this well-known test key (docs/dev-miner.md).
DEV_GENESIS_PRIVATE_KEY = bytes.fromhex("d00c06bfd800d27397002dca6fb0993d5ba6399b4238b2f29ee9deb97593d2bc")

# The dev wallet's keys are public test keys; the signing code is the payout wallet's (ckb/signing.py).
DevKey = Secp256k1Key

# A secp256k1_blake160 cell with no type and no data: 8 (capacity) + 32 + 1 + 20 (lock) = 61 bytes = 61 CKB.
MIN_CELL_CAPACITY = occupied_capacity(CellOutput(capacity=0, lock=DevKey(DEV_GENESIS_PRIVATE_KEY).lock, type=None))


def find_genesis_cells(genesis_block: dict[str, Any], lock: Script) -> list[tuple[OutPoint, int]]:
    """Outputs of the genesis block locked by ``lock``: (out_point, capacity)."""
    found = []
    for tx in genesis_block["transactions"]:
        tx_hash = parse_bytes(tx["hash"], "genesis.tx.hash", 32)
        for index, output in enumerate(tx["outputs"]):
            if Script.from_json(output["lock"], "genesis.output.lock") == lock:
                found.append((OutPoint(tx_hash, index), parse_uint(output["capacity"], "capacity", 64)))
    return found


def secp256k1_dep_group(genesis_block: dict[str, Any]) -> CellDep:
    """The secp256k1 dep group cell: by chain-spec convention, output 0 of the genesis block's second tx."""
    tx_hash = parse_bytes(genesis_block["transactions"][1]["hash"], "genesis.transactions[1].hash", 32)
    return CellDep(out_point=OutPoint(tx_hash, 0), dep_type=1)


def transfer(
    key: DevKey,
    genesis_block: dict[str, Any],
    source: tuple[OutPoint, int],
    to: Script,
    amount: int,
    fee: int = 100_000,
) -> Transaction:
    """A signed transfer of ``amount`` shannons from one of ``key``'s cells to ``to``, change back to ``key``."""
    out_point, capacity = source
    change = capacity - amount - fee
    if amount < MIN_CELL_CAPACITY or change < MIN_CELL_CAPACITY:
        raise ValueError("amount and change must each be at least 61 CKB")
    unsigned = Transaction(
        version=0,
        cell_deps=(secp256k1_dep_group(genesis_block),),
        header_deps=(),
        inputs=(CellInput(since=0, previous_output=out_point),),
        outputs=(
            CellOutput(capacity=amount, lock=to, type=None),
            CellOutput(capacity=change, lock=key.lock, type=None),
        ),
        outputs_data=(b"", b""),
        witnesses=(PLACEHOLDER_WITNESS,),
    )
    return key.sign_sighash_all(unsigned)
