"""CKB's complete binary merkle tree (RFC 0006) and the header commitments built on it.

Not Bitcoin's tree: leaves sit at the end of one array, odd counts are not duplicated, and an empty tree is the
zero hash. transactions_root commits to both tx hashes and witness hashes.
"""

from __future__ import annotations

from collections.abc import Sequence

from .hashing import ZERO_HASH, ckb_hash


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """CBMT root: nodes[n-1+i] = leaf[i]; nodes[i] = merge(nodes[2i+1], nodes[2i+2]) for i = n-2 .. 0."""
    n = len(leaves)
    if n == 0:
        return ZERO_HASH
    if n == 1:
        return leaves[0]
    nodes: list[bytes] = [b""] * (n - 1) + list(leaves)
    for i in range(n - 2, -1, -1):
        nodes[i] = ckb_hash(nodes[2 * i + 1] + nodes[2 * i + 2])
    return nodes[0]


def transactions_root(tx_hashes: Sequence[bytes], witness_hashes: Sequence[bytes]) -> bytes:
    """ckb_hash(merkle_root(tx_hashes) || merkle_root(witness_hashes)), cellbase first in both lists."""
    return ckb_hash(merkle_root(tx_hashes) + merkle_root(witness_hashes))


def proposals_hash(proposal_ids: Sequence[bytes]) -> bytes:
    """Zero when there are no proposals, else ckb_hash of the concatenated 10-byte short ids."""
    if not proposal_ids:
        return ZERO_HASH
    return ckb_hash(b"".join(proposal_ids))


def uncles_hash(uncle_hashes: Sequence[bytes]) -> bytes:
    """Zero when there are no uncles, else ckb_hash of the concatenated uncle block hashes."""
    if not uncle_hashes:
        return ZERO_HASH
    return ckb_hash(b"".join(uncle_hashes))


def extra_hash(uncle_hashes: Sequence[bytes], extension: bytes | None) -> bytes:
    """The header's extra_hash: uncles_hash alone, or combined with the extension's hash when one exists.

    Even with no uncles the combination is used when an extension exists (so a zero uncles_hash is hashed in).
    """
    uhash = uncles_hash(uncle_hashes)
    if extension is None:
        return uhash
    return ckb_hash(uhash + ckb_hash(extension))
