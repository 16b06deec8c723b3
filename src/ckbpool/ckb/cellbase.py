"""The cellbase witness, and jobs whose cellbase names another miner's lock (SOLO mining, non-custodial).

What ckb says (nervosnetwork/ckb, read at 5ebbc39, 0.20x):

- The block assembler builds the cellbase as one cellbase input, at most one output and one witness, the
  serialized ``CellbaseWitness { lock: Script, message: Bytes }`` (util/gen-types/schemas/blockchain.mol),
  whose lock is ``[block_assembler]``'s and whose message is the versionbits signal plus the configured message
  (tx-pool/src/block_assembler/mod.rs, ``build_cellbase_witness`` / ``build_cellbase``).
- The reward of block N is paid by the cellbase of block N + ``finalization_delay_length`` (11) to the lock in
  **block N's cellbase witness**: ``RewardCalculator::block_reward_internal`` reads
  ``CellbaseWitness::from_slice(target cellbase witnesses[0]).lock()`` (util/reward-calculator/src/lib.rs).
  Block N's own cellbase *output* pays block N - 11's finder. So a pool that puts a miner's lock into the
  witness of the job it hands that miner makes the node pay that miner directly; the pool never holds the coins.
- The witness is not part of the tx hash (``tx_hash`` = hash of the RawTransaction), so the cellbase's tx hash,
  the transactions' hash merkle root, the outputs and the DAO field stay the template's; only the cellbase's
  witness hash, hence the witnesses' merkle root and ``transactions_root``, hence ``pow_hash``, change.
- Verification of the witness: ``CellbaseVerifier`` (verification/src/block_verifier.rs) wants it to parse as
  a CellbaseWitness whose lock's hash_type is enabled (``ENABLED_SCRIPT_HASH_TYPE``: data, type, data1, data2,
  util/constant/src/consensus.rs) -- no other rule on the lock. ``--ba-advanced`` only concerns the node's own
  ``[block_assembler]`` config, not blocks it verifies.
- **No fee output is possible**: the same verifier refuses a cellbase with more than one output
  (``InvalidOutputQuantity``), and ``RewardVerifier`` (verification/contextual/src/contextual_block_verifier.rs)
  wants the outputs' capacity to equal the finalized reward exactly (``InvalidRewardAmount``) and output 0's lock
  to be the target block's witness lock (``InvalidRewardTarget``). A SOLO block's whole reward therefore goes to
  its finder: SOLO is fee-free.
- The block size limit (``BlockBytesVerifier``) counts the witness, so a longer lock than the template's could
  push a full block over ``bytes_limit``: :class:`CellbaseRewriter` refuses that instead of making an invalid
  block.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import struct
from dataclasses import dataclass

from . import molecule as mol
from .errors import MalformedError
from .hashing import ckb_hash
from .jsonhex import hex_bytes
from .structures import HASH_TYPES, Block, Script, Transaction
from .template import MiningJob

_U32 = struct.Struct("<I")
#: ckb's ENABLED_SCRIPT_HASH_TYPE (util/constant/src/consensus.rs)
ENABLED_HASH_TYPES = frozenset(HASH_TYPES.values())


class SoloJobError(ValueError):
    """A job for this lock cannot be built from this template (the reason says why)."""


@dataclass(frozen=True, slots=True)
class CellbaseWitness:
    """``table CellbaseWitness { lock: Script, message: Bytes }``."""

    lock: Script
    message: bytes

    def serialize(self) -> bytes:
        return mol.table([self.lock.serialize(), mol.bytes_(self.message)])


def _table_fields(data: bytes, count: int, path: str) -> list[bytes]:
    """The fields of a molecule table with exactly ``count`` fields (total size, offsets, bodies)."""
    if len(data) < 4 + 4 * count:
        raise MalformedError(path, f"{len(data)} bytes cannot hold a table of {count} fields")
    (total,) = _U32.unpack_from(data, 0)
    if total != len(data):
        raise MalformedError(path, f"table size {total} != {len(data)} bytes")
    offsets = [_U32.unpack_from(data, 4 + 4 * i)[0] for i in range(count)]
    if offsets[0] != 4 + 4 * count:
        raise MalformedError(path, f"table has {(offsets[0] - 4) // 4} fields, expected {count}")
    bounds = [*offsets, total]
    if any(a > b for a, b in itertools.pairwise(bounds)):
        raise MalformedError(path, "table offsets out of order")
    return [data[bounds[i] : bounds[i + 1]] for i in range(count)]


def _fixvec_bytes(data: bytes, path: str) -> bytes:
    if len(data) < 4 or _U32.unpack_from(data, 0)[0] != len(data) - 4:
        raise MalformedError(path, "malformed Bytes")
    return data[4:]


def parse_script(data: bytes, path: str = "script") -> Script:
    code_hash, hash_type, args = _table_fields(data, 3, path)
    if len(code_hash) != 32 or len(hash_type) != 1:
        raise MalformedError(path, "code_hash must be 32 bytes and hash_type 1 byte")
    return Script(code_hash=code_hash, hash_type=hash_type[0], args=_fixvec_bytes(args, f"{path}.args"))


def parse_cellbase_witness(data: bytes, path: str = "cellbase.witnesses[0]") -> CellbaseWitness:
    """Decode a cellbase's witness (what ckb's ``CellbaseWitness::from_slice`` reads)."""
    lock, message = _table_fields(data, 2, path)
    return CellbaseWitness(parse_script(lock, f"{path}.lock"), _fixvec_bytes(message, f"{path}.message"))


def leaf0_path(leaves: list[bytes]) -> tuple[tuple[bytes, bool], ...]:
    """The siblings on the way from leaf 0 to the root of ckb's CBMT (RFC 0006; ``merkle.merkle_root``), each
    with whether the running node is the *left* input of the merge. Leaf i sits at nodes[n - 1 + i]; a node j
    has parent (j - 1) // 2, and it is the left child iff j is odd."""
    n = len(leaves)
    if n <= 1:
        return ()
    nodes: list[bytes] = [b""] * (n - 1) + list(leaves)
    for i in range(n - 2, -1, -1):
        nodes[i] = ckb_hash(nodes[2 * i + 1] + nodes[2 * i + 2])
    path = []
    j = n - 1
    while j > 0:
        left = j % 2 == 1
        path.append((nodes[j + 1] if left else nodes[j - 1], left))
        j = (j - 1) // 2
    return tuple(path)


def root_from_leaf0(leaf: bytes, path: tuple[tuple[bytes, bool], ...]) -> bytes:
    """The CBMT root with leaf 0 replaced: log2(n) hashes instead of n."""
    node = leaf
    for sibling, left in path:
        node = ckb_hash(node + sibling) if left else ckb_hash(sibling + node)
    return node


class CellbaseRewriter:
    """Jobs of one template whose cellbase witness carries another lock; everything that does not depend on
    the lock (tx hashes root, the witness tree's other leaves, the template's message) is computed once.

    Per lock: serialize one witness and one cellbase, hash it, log2(n) merges, one header hash."""

    def __init__(self, job: MiningJob) -> None:
        self.job = job
        template = job.template
        cellbase = template.cellbase
        if not cellbase.witnesses:
            raise MalformedError("template.cellbase.witnesses", "the cellbase has no witness")
        self.template_witness = parse_cellbase_witness(cellbase.witnesses[0])
        tx_hashes = [cellbase.hash(), *(t.tx_hash for t in template.transactions)]
        witness_hashes = [cellbase.witness_hash(), *(t.tx.witness_hash() for t in template.transactions)]
        self._tx_root = root_from_leaf0(tx_hashes[0], leaf0_path(tx_hashes))
        self._witness_path = leaf0_path(witness_hashes)
        self._block_size: int | None = None

    def witness_for(self, lock: Script) -> bytes:
        """The template's witness with ``lock`` in place of the pool's; the message (versionbits signal and the
        node's configured message) is kept as the node built it."""
        if lock.hash_type not in ENABLED_HASH_TYPES:
            raise SoloJobError(f"hash_type {lock.hash_type} is not enabled on CKB")
        return CellbaseWitness(lock, self.template_witness.message).serialize()

    def job_for(self, lock: Script) -> MiningJob:
        """The template's job with ``lock`` as the finder's lock: the header commits to it through
        transactions_root, and ``block(nonce)`` yields the block with this cellbase."""
        base = self.job
        template = base.template
        witness = self.witness_for(lock)
        old_witness = template.cellbase.witnesses[0]
        growth = len(witness) - len(old_witness)
        if growth > 0:
            if self._block_size is None:
                self._block_size = len(base.block(0).serialize())
            if self._block_size + growth > template.bytes_limit:
                raise SoloJobError(
                    f"the block would be {self._block_size + growth} bytes with this lock, over the template's "
                    f"bytes_limit {template.bytes_limit}"
                )
        cellbase = dataclasses.replace(template.cellbase, witnesses=(witness, *template.cellbase.witnesses[1:]))
        witness_root = root_from_leaf0(cellbase.witness_hash(), self._witness_path)
        raw = dataclasses.replace(base.raw_header, transactions_root=ckb_hash(self._tx_root + witness_root))
        body = base.block(0)
        return MiningJob(
            template=dataclasses.replace(template, cellbase=cellbase),
            raw_header=raw,
            pow_hash=raw.pow_hash(),
            target=base.target,
            _body=Block(
                header=body.header,
                uncles=body.uncles,
                transactions=(cellbase, *body.transactions[1:]),
                proposals=body.proposals,
                extension=body.extension,
            ),
        )


def patch_template_json(template_json: bytes, cellbase: Transaction) -> bytes:
    """The node's template JSON with the cellbase's witnesses replaced (its ``hash`` -- the tx hash -- does not
    change): what a client of the CKB template extension must build the block from for a SOLO job."""
    obj = json.loads(template_json)
    obj["cellbase"]["data"]["witnesses"] = [hex_bytes(w) for w in cellbase.witnesses]
    return json.dumps(obj, separators=(",", ":")).encode()
