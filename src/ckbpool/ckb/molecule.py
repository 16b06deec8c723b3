"""Molecule encoding primitives (the serialization CKB hashes), little-endian throughout.

Only the four shapes CKB's block schema uses are needed: fixed arrays/structs (plain concatenation), fixvec
(item count then items), dynvec/table (total size, offsets, items) and option (empty or the value).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def u128(value: int) -> bytes:
    return value.to_bytes(16, "little")


def fixvec(items: Sequence[bytes]) -> bytes:
    """Vector of fixed-size items: item count (u32) then the items."""
    return _U32.pack(len(items)) + b"".join(items)


def bytes_(data: bytes) -> bytes:
    """Molecule ``Bytes``: a fixvec of bytes, i.e. u32 length then the data."""
    return _U32.pack(len(data)) + data


def dynvec(items: Sequence[bytes]) -> bytes:
    """Vector of dynamic-size items, and also the layout of a table (fields in order).

    Header = total size (u32) then one u32 offset per item, measured from the start of the whole.
    An empty dynvec is just its size, 4.
    """
    header_size = 4 + 4 * len(items)
    offsets = []
    position = header_size
    for item in items:
        offsets.append(position)
        position += len(item)
    return _U32.pack(position) + b"".join(_U32.pack(o) for o in offsets) + b"".join(items)


table = dynvec


def option(value: bytes | None) -> bytes:
    """Molecule option: absent encodes as nothing at all."""
    return b"" if value is None else value
