"""ckb_hash: blake2b-256 with CKB's personalization, the hash under every CKB identifier."""

from __future__ import annotations

import hashlib

CKB_HASH_PERSONALIZATION = b"ckb-default-hash"
ZERO_HASH = bytes(32)


def ckb_hash(data: bytes) -> bytes:
    """Return blake2b(data, digest_size=32, person=b"ckb-default-hash")."""
    return hashlib.blake2b(data, digest_size=32, person=CKB_HASH_PERSONALIZATION).digest()


def ckb_hasher() -> hashlib.blake2b:
    """A streaming ckb_hash object, for hashing concatenations without building them."""
    return hashlib.blake2b(digest_size=32, person=CKB_HASH_PERSONALIZATION)
