"""secp256k1_blake160_sighash_all: keys, WitnessArgs and signing, shared by the dev wallet and the payout wallet.

The lock script (nervosnetwork/ckb-system-scripts, c/secp256k1_blake160_sighash_all.c) verifies one signature per
*script group* (all inputs with the same lock). The message it rebuilds is

    ckb_hash(tx_hash
             || len(w0) u64 LE || w0   where w0 = the group's first witness, a WitnessArgs whose lock is 65 zero bytes
             || len(w) || w            for each further witness of the group (inputs 2, 3, ... of the group)
             || len(w) || w)           for each witness beyond the number of inputs

and the signature is the 65-byte recoverable form (r || s || recovery id) placed in w0's ``lock`` field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from coincurve import PrivateKey

from . import molecule as mol
from .address import secp256k1_lock
from .errors import MalformedError
from .hashing import ckb_hash, ckb_hasher
from .structures import Script, Transaction

SIGNATURE_SIZE = 65


def witness_args(lock: bytes | None = None, input_type: bytes | None = None, output_type: bytes | None = None) -> bytes:
    """Molecule WitnessArgs: a table of three optional Bytes."""

    def opt(value: bytes | None) -> bytes:
        return mol.option(None if value is None else mol.bytes_(value))

    return mol.table([opt(lock), opt(input_type), opt(output_type)])


# The first witness of a group before signing; the same size as after, so a transaction's size (and fee) is known
# before it is signed.
PLACEHOLDER_WITNESS = witness_args(lock=bytes(SIGNATURE_SIZE))


@dataclass(frozen=True)
class Secp256k1Key:
    """A secp256k1 private key and the single-signature lock it unlocks. ``repr`` never shows the secret."""

    private_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.private_key) != 32:
            raise MalformedError("private_key", f"expected 32 bytes, got {len(self.private_key)}")
        try:
            PrivateKey(self.private_key)
        except ValueError as exc:  # zero or >= the group order
            raise MalformedError("private_key", f"not a valid secp256k1 secret: {exc}") from None

    @property
    def pubkey(self) -> bytes:
        """Compressed 33-byte public key (what blake160 hashes)."""
        return PrivateKey(self.private_key).public_key.format(compressed=True)

    @property
    def blake160(self) -> bytes:
        return ckb_hash(self.pubkey)[:20]

    @property
    def lock(self) -> Script:
        return secp256k1_lock(self.blake160)

    def sign_sighash_all(self, tx: Transaction, group: Sequence[int] | None = None) -> Transaction:
        """Sign the script group ``group`` (input indices; default: every input) and put the signature in the
        group's first witness. Witnesses missing up to the number of inputs are added empty."""
        indices = list(range(len(tx.inputs))) if group is None else list(group)
        if not indices:
            raise ValueError("cannot sign an empty script group")
        witnesses = list(tx.witnesses) + [b""] * max(0, len(tx.inputs) - len(tx.witnesses))
        witnesses[indices[0]] = PLACEHOLDER_WITNESS
        message = sighash_all_message(tx.hash(), witnesses, indices, len(tx.inputs))
        signature = PrivateKey(self.private_key).sign_recoverable(message, hasher=None)
        witnesses[indices[0]] = witness_args(lock=signature)
        return Transaction(
            version=tx.version,
            cell_deps=tx.cell_deps,
            header_deps=tx.header_deps,
            inputs=tx.inputs,
            outputs=tx.outputs,
            outputs_data=tx.outputs_data,
            witnesses=tuple(witnesses),
        )


def sighash_all_message(tx_hash: bytes, witnesses: Sequence[bytes], group: Sequence[int], input_count: int) -> bytes:
    """The 32-byte message the lock script checks for one group (see the module docstring)."""
    hasher = ckb_hasher()
    hasher.update(tx_hash)
    for index in [*group, *range(input_count, len(witnesses))]:
        witness = witnesses[index]
        hasher.update(mol.u64(len(witness)))
        hasher.update(witness)
    return hasher.digest()


def generate_private_key() -> bytes:
    """A fresh secret from the OS's CSPRNG (coincurve draws it with ``os.urandom`` and checks its range)."""
    return PrivateKey().secret
