"""A minimal secp256k1_blake160_sighash_all wallet for dev chains.

Used by the demo and the tests to put real, signed, non-cellbase transactions into mined blocks, which proves
transactions_root beyond the cellbase. Keys here are the dev chain's published test keys — never for real funds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey

from . import molecule as mol
from .address import secp256k1_lock
from .hashing import ckb_hash, ckb_hasher
from .jsonhex import parse_bytes, parse_uint
from .structures import CellDep, CellInput, CellOutput, OutPoint, Script, Transaction

# The dev chain spec (ckb's specs/dev.toml) issues genesis cells to this well-known test key (docs/dev-miner.md).
DEV_GENESIS_PRIVATE_KEY = bytes.fromhex("d00c06bfd800d27397002dca6fb0993d5ba6399b4238b2f29ee9deb97593d2bc")
SHANNONS_PER_CKB = 100_000_000
MIN_CELL_CAPACITY = 61 * SHANNONS_PER_CKB


@dataclass(frozen=True)
class DevKey:
    private_key: bytes

    @property
    def pubkey(self) -> bytes:
        return PrivateKey(self.private_key).public_key.format(compressed=True)

    @property
    def blake160(self) -> bytes:
        return ckb_hash(self.pubkey)[:20]

    @property
    def lock(self) -> Script:
        return secp256k1_lock(self.blake160)

    def sign_sighash_all(self, tx: Transaction) -> Transaction:
        """Sign all inputs as one group (all inputs use this key's lock): witness 0 carries the signature."""
        zero_witness = witness_args(lock=bytes(65))
        hasher = ckb_hasher()
        hasher.update(tx.hash())
        hasher.update(mol.u64(len(zero_witness)))
        hasher.update(zero_witness)
        for extra in tx.witnesses[1:]:
            hasher.update(mol.u64(len(extra)))
            hasher.update(extra)
        signature = PrivateKey(self.private_key).sign_recoverable(hasher.digest(), hasher=None)
        witnesses = (witness_args(lock=signature), *tx.witnesses[1:])
        return Transaction(
            version=tx.version,
            cell_deps=tx.cell_deps,
            header_deps=tx.header_deps,
            inputs=tx.inputs,
            outputs=tx.outputs,
            outputs_data=tx.outputs_data,
            witnesses=witnesses,
        )


def witness_args(lock: bytes | None = None, input_type: bytes | None = None, output_type: bytes | None = None) -> bytes:
    """Molecule WitnessArgs: a table of three optional Bytes."""

    def opt(value: bytes | None) -> bytes:
        return mol.option(None if value is None else mol.bytes_(value))

    return mol.table([opt(lock), opt(input_type), opt(output_type)])


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
        witnesses=(witness_args(lock=bytes(65)),),
    )
    return key.sign_sighash_all(unsigned)
