"""SV2 binary data types (sv2-spec section 3.1), byte-compatible with SRI's ``binary_sv2`` 7.0.0.

Each type is an object with two operations:

* ``encode(value, field) -> bytes`` raises :class:`~ckbpool.sv2.errors.EncodeError` (a ``ValueError``)
  naming ``field`` when the value is out of range or the wrong Python type;
* ``decode(data, offset, field) -> (value, new_offset)`` raises
  :class:`~ckbpool.sv2.errors.DecodeError` naming ``field`` when the input is truncated or a length
  prefix exceeds the type's maximum. Lengths are checked before slicing, so a decoder never
  allocates more than the input it was given.

Python representations:

========================  ======================  =============================================
SV2 type                  Python                  wire
========================  ======================  =============================================
U8 U16 U24 U32 U64        ``int``                 little-endian
U256                      ``int``                 32 bytes little-endian (targets)
U256 (as raw bytes)       ``bytes`` (32)          the 32 bytes as-is (hashes: prev_hash, merkle)
BOOL                      ``bool``                1 byte; only bit 0 is read (spec 3.1, SRI)
F32                       ``float``               IEEE754 binary32 little-endian
STR0_255                  ``str``                 U8 length + UTF-8 bytes (at most 255 bytes)
B0_32 B0_255              ``bytes``               U8 length + bytes (max 32 / 255)
B0_64K                    ``bytes``               U16 length + bytes (max 65535)
B0_16M                    ``bytes``               U24 length + bytes (max 2^24-1)
PUBKEY / SIGNATURE        ``bytes``               32 / 64 bytes
SEQ0_255[T] SEQ0_64K[T]   ``tuple[T, ...]``       U8 / U16 count + elements
OPTION[T]                 ``T | None``            U8 count (0 or 1) + element (SRI ``Sv2Option``)
TLV list (spec 3.4.3)     ``tuple[Tlv, ...]``     zero or more TLVs filling the rest of the payload
========================  ======================  =============================================

SRI's U256 is a raw 32-byte array; the spec reads it as a little-endian integer. We offer both
views because SV2 uses U256 for two things: numbers (targets) and hashes (``prev_hash``,
``merkle_root``, merkle path). A hash is kept as the exact 32 wire bytes so no byte order is ever
applied to it by accident.

Strings: SRI does not validate STR0_255 as UTF-8; we decode strictly and reject invalid UTF-8
with a DecodeError (the spec recommends UTF-8 and error codes are printable ASCII).

TLV fields (sv2-spec 3.4.3, SRI ``parsers_sv2`` 0.6.0 ``Tlv``): an extension appends them after a
message's fixed fields, each ``extension_type U16 | field_type U8 | length U16 | value``, all
little-endian like every SV2 integer (the spec's example bytes ``00 02 01 00 0A`` are written
big-endian; SRI, and so the wire, has ``02 00 01 0A 00``). :data:`TLV_LIST` is only structure:
a truncated header or a length running past the payload is a DecodeError, but which TLVs a
connection may carry (negotiation, duplicates, order, value rules) is judged by
:mod:`ckbpool.sv2.extensions`, which knows the connection's negotiated extensions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ckbpool.sv2.errors import DecodeError, EncodeError

__all__ = [
    "B0_16M",
    "B0_32",
    "B0_64K",
    "B0_255",
    "BOOL",
    "F32",
    "PUBKEY",
    "SIGNATURE",
    "STR0_255",
    "TLV_HEADER_SIZE",
    "TLV_LIST",
    "U8",
    "U16",
    "U24",
    "U32",
    "U64",
    "U256",
    "U256_BYTES",
    "Bytes",
    "Option",
    "Seq0_64K",
    "Seq0_255",
    "Sv2Type",
    "Tlv",
]

T = TypeVar("T")


def _need(data: bytes, offset: int, size: int, field: str) -> None:
    """Raise DecodeError unless ``size`` bytes are available at ``offset``."""
    if offset + size > len(data):
        raise DecodeError(field, f"truncated: need {size} bytes at offset {offset}, have {len(data) - offset}")


class Sv2Type(Generic[T]):
    """A binary SV2 type. ``min_size`` is its shortest encoding (used to bound sequence counts)."""

    __slots__ = ("min_size", "name")

    def __init__(self, name: str, min_size: int) -> None:
        self.name = name
        self.min_size = min_size

    def encode(self, value: T, field: str) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, offset: int, field: str) -> tuple[T, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class _UInt(Sv2Type[int]):
    __slots__ = ("_struct", "limit", "size")

    def __init__(self, name: str, size: int, fmt: str | None) -> None:
        super().__init__(name, size)
        self.size = size
        self.limit = 1 << (8 * size)
        self._struct = struct.Struct(fmt) if fmt else None

    def check(self, value: int, field: str) -> None:
        if type(value) is not int:
            raise EncodeError(field, f"{self.name} needs an int, got {type(value).__name__}")
        if not 0 <= value < self.limit:
            raise EncodeError(field, f"{value} out of range for {self.name}")

    def encode(self, value: int, field: str) -> bytes:
        self.check(value, field)
        if self._struct is not None:
            return self._struct.pack(value)
        return value.to_bytes(self.size, "little")

    def decode(self, data: bytes, offset: int, field: str) -> tuple[int, int]:
        _need(data, offset, self.size, field)
        if self._struct is not None:
            return self._struct.unpack_from(data, offset)[0], offset + self.size
        end = offset + self.size
        return int.from_bytes(data[offset:end], "little"), end


class _Bool(Sv2Type[bool]):
    __slots__ = ()

    def encode(self, value: bool, field: str) -> bytes:
        if type(value) is not bool:
            raise EncodeError(field, f"BOOL needs a bool, got {type(value).__name__}")
        return b"\x01" if value else b"\x00"

    def decode(self, data: bytes, offset: int, field: str) -> tuple[bool, int]:
        _need(data, offset, 1, field)
        # Spec 3.1: recipients MUST NOT interpret bits other than the least significant (SRI agrees).
        return bool(data[offset] & 1), offset + 1


class _F32(Sv2Type[float]):
    __slots__ = ()
    _S = struct.Struct("<f")

    def encode(self, value: float, field: str) -> bytes:
        if type(value) not in (float, int):
            raise EncodeError(field, f"F32 needs a float, got {type(value).__name__}")
        try:
            return self._S.pack(value)
        except OverflowError:
            raise EncodeError(field, f"{value} does not fit an F32") from None

    def decode(self, data: bytes, offset: int, field: str) -> tuple[float, int]:
        _need(data, offset, 4, field)
        return self._S.unpack_from(data, offset)[0], offset + 4


class _U256Int(Sv2Type[int]):
    """U256 as a number (targets): 32 bytes, little-endian."""

    __slots__ = ()

    def encode(self, value: int, field: str) -> bytes:
        if type(value) is not int:
            raise EncodeError(field, f"U256 needs an int, got {type(value).__name__}")
        if not 0 <= value < 1 << 256:
            raise EncodeError(field, "value out of range for U256")
        return value.to_bytes(32, "little")

    def decode(self, data: bytes, offset: int, field: str) -> tuple[int, int]:
        _need(data, offset, 32, field)
        end = offset + 32
        return int.from_bytes(data[offset:end], "little"), end


class _FixedBytes(Sv2Type[bytes]):
    """Exactly ``size`` raw bytes: U256 hashes, PUBKEY, SIGNATURE."""

    __slots__ = ("size",)

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, size)
        self.size = size

    def encode(self, value: bytes, field: str) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise EncodeError(field, f"{self.name} needs bytes, got {type(value).__name__}")
        if len(value) != self.size:
            raise EncodeError(field, f"{self.name} needs exactly {self.size} bytes, got {len(value)}")
        return bytes(value)

    def decode(self, data: bytes, offset: int, field: str) -> tuple[bytes, int]:
        _need(data, offset, self.size, field)
        end = offset + self.size
        return bytes(data[offset:end]), end


class _VarBytes(Sv2Type[bytes]):
    """Length-prefixed bytes: B0_32, B0_255, B0_64K, B0_16M."""

    __slots__ = ("header", "max_len")

    def __init__(self, name: str, header: int, max_len: int) -> None:
        super().__init__(name, header)
        self.header = header
        self.max_len = max_len

    def encode(self, value: bytes, field: str) -> bytes:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise EncodeError(field, f"{self.name} needs bytes, got {type(value).__name__}")
        n = len(value)
        if n > self.max_len:
            raise EncodeError(field, f"{n} bytes exceed the {self.name} maximum of {self.max_len}")
        return n.to_bytes(self.header, "little") + bytes(value)

    def decode(self, data: bytes, offset: int, field: str) -> tuple[bytes, int]:
        _need(data, offset, self.header, field)
        start = offset + self.header
        n = int.from_bytes(data[offset:start], "little")
        if n > self.max_len:
            raise DecodeError(field, f"length {n} exceeds the {self.name} maximum of {self.max_len}")
        _need(data, start, n, field)
        end = start + n
        return bytes(data[start:end]), end


class _Str0_255(Sv2Type[str]):
    __slots__ = ()

    def encode(self, value: str, field: str) -> bytes:
        if not isinstance(value, str):
            raise EncodeError(field, f"STR0_255 needs a str, got {type(value).__name__}")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodeError(field, "string is not encodable as UTF-8") from None
        if len(raw) > 255:
            raise EncodeError(field, f"{len(raw)} UTF-8 bytes exceed the STR0_255 maximum of 255")
        return bytes((len(raw),)) + raw

    def decode(self, data: bytes, offset: int, field: str) -> tuple[str, int]:
        _need(data, offset, 1, field)
        n = data[offset]
        start = offset + 1
        _need(data, start, n, field)
        end = start + n
        try:
            return bytes(data[start:end]).decode("utf-8"), end
        except UnicodeDecodeError:
            raise DecodeError(field, "string is not valid UTF-8") from None


class _Seq(Sv2Type[tuple[T, ...]]):
    """SEQ0_255[T] / SEQ0_64K[T]: a count prefix then the elements."""

    __slots__ = ("element", "header", "max_count")

    def __init__(self, name: str, header: int, max_count: int, element: Sv2Type[T]) -> None:
        super().__init__(f"{name}[{element.name}]", header)
        self.header = header
        self.max_count = max_count
        self.element = element

    def encode(self, value: tuple[T, ...], field: str) -> bytes:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise EncodeError(field, f"{self.name} needs a sequence, got {type(value).__name__}")
        n = len(value)
        if n > self.max_count:
            raise EncodeError(field, f"{n} elements exceed the {self.name} maximum of {self.max_count}")
        enc = self.element.encode
        parts = [n.to_bytes(self.header, "little")]
        parts.extend(enc(item, f"{field}[{i}]") for i, item in enumerate(value))
        return b"".join(parts)

    def decode(self, data: bytes, offset: int, field: str) -> tuple[tuple[T, ...], int]:
        _need(data, offset, self.header, field)
        pos = offset + self.header
        n = int.from_bytes(data[offset:pos], "little")
        # Every element takes at least min_size bytes: refuse a count the input cannot hold
        # before building anything (this is what stops a 2-byte header from asking for 65535 items).
        if n * self.element.min_size > len(data) - pos:
            raise DecodeError(field, f"count {n} does not fit in the remaining {len(data) - pos} bytes")
        dec = self.element.decode
        items: list[T] = []
        for i in range(n):
            item, pos = dec(data, pos, f"{field}[{i}]")
            items.append(item)
        return tuple(items), pos


class _Option(Sv2Type["T | None"]):
    """OPTION[T]: SRI's ``Sv2Option`` -- a U8 count that must be 0 or 1, then the element if 1."""

    __slots__ = ("element",)

    def __init__(self, element: Sv2Type[T]) -> None:
        super().__init__(f"OPTION[{element.name}]", 1)
        self.element = element

    def encode(self, value: T | None, field: str) -> bytes:
        if value is None:
            return b"\x00"
        return b"\x01" + self.element.encode(value, field)

    def decode(self, data: bytes, offset: int, field: str) -> tuple[T | None, int]:
        _need(data, offset, 1, field)
        flag = data[offset]
        if flag == 0:
            return None, offset + 1
        if flag != 1:
            raise DecodeError(field, f"OPTION count must be 0 or 1, got {flag}")
        return self.element.decode(data, offset + 1, field)


@dataclass(frozen=True, slots=True)
class Tlv:
    """One TLV field: ``value`` of field ``field_type`` defined by extension ``extension_type``.

    Kept as raw bytes: what a value means (and whether it is allowed on a connection) depends on
    the extension and on negotiation, which :mod:`ckbpool.sv2.extensions` checks.
    """

    extension_type: int
    field_type: int
    value: bytes


TLV_HEADER_SIZE = 5
_TLV_HEAD = struct.Struct("<HBH")


class _TlvList(Sv2Type[tuple[Tlv, ...]]):
    """Zero or more TLVs up to the end of the payload: only ever the last field of a message.

    Decoding consumes every remaining byte, so a message with this field has no "bytes after the
    last field" -- instead a stray byte is a TLV header cut short, still a DecodeError.
    """

    __slots__ = ()

    def encode(self, value: tuple[Tlv, ...], field: str) -> bytes:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise EncodeError(field, f"a TLV list needs a sequence of Tlv, got {type(value).__name__}")
        parts = []
        for i, tlv in enumerate(value):
            name = f"{field}[{i}]"
            if not isinstance(tlv, Tlv):
                raise EncodeError(name, f"needs a Tlv, got {type(tlv).__name__}")
            if type(tlv.extension_type) is not int or not 0 <= tlv.extension_type <= 0xFFFF:
                raise EncodeError(name, f"extension_type {tlv.extension_type!r} out of range for U16")
            if type(tlv.field_type) is not int or not 0 <= tlv.field_type <= 0xFF:
                raise EncodeError(name, f"field_type {tlv.field_type!r} out of range for U8")
            if not isinstance(tlv.value, bytes | bytearray | memoryview):
                raise EncodeError(name, f"value needs bytes, got {type(tlv.value).__name__}")
            n = len(tlv.value)
            if n > 0xFFFF:
                raise EncodeError(name, f"value of {n} bytes exceeds the U16 length maximum of 65535")
            parts.append(_TLV_HEAD.pack(tlv.extension_type, tlv.field_type, n))
            parts.append(bytes(tlv.value))
        return b"".join(parts)

    def decode(self, data: bytes, offset: int, field: str) -> tuple[tuple[Tlv, ...], int]:
        end = len(data)
        pos = offset
        tlvs: list[Tlv] = []
        while pos < end:
            name = f"{field}[{len(tlvs)}]"
            if end - pos < TLV_HEADER_SIZE:
                raise DecodeError(name, f"truncated TLV header: {end - pos} of {TLV_HEADER_SIZE} bytes")
            ext, field_type, n = _TLV_HEAD.unpack_from(data, pos)
            start = pos + TLV_HEADER_SIZE
            if n > end - start:
                raise DecodeError(name, f"TLV length {n} runs past the payload ({end - start} bytes left)")
            pos = start + n
            tlvs.append(Tlv(ext, field_type, bytes(data[start:pos])))
        return tuple(tlvs), end


def Bytes(length: int) -> Sv2Type[bytes]:
    """BYTES[length]: exactly ``length`` raw bytes (spec 3.1 ``BYTES``), for extension messages."""
    return _FixedBytes(f"BYTES[{length}]", length)


def Seq0_255(element: Sv2Type[T]) -> Sv2Type[tuple[T, ...]]:
    """SEQ0_255[element]."""
    return _Seq("SEQ0_255", 1, 255, element)


def Seq0_64K(element: Sv2Type[T]) -> Sv2Type[tuple[T, ...]]:
    """SEQ0_64K[element]."""
    return _Seq("SEQ0_64K", 2, 0xFFFF, element)


def Option(element: Sv2Type[T]) -> Sv2Type[T | None]:
    """OPTION[element] (SRI ``Sv2Option``)."""
    return _Option(element)


U8: _UInt = _UInt("U8", 1, "<B")
U16: _UInt = _UInt("U16", 2, "<H")
U24: _UInt = _UInt("U24", 3, None)
U32: _UInt = _UInt("U32", 4, "<I")
U64: _UInt = _UInt("U64", 8, "<Q")
U256: Sv2Type[int] = _U256Int("U256", 32)
U256_BYTES: Sv2Type[bytes] = _FixedBytes("U256", 32)
BOOL: Sv2Type[bool] = _Bool("BOOL", 1)
F32: Sv2Type[float] = _F32("F32", 4)
STR0_255: Sv2Type[str] = _Str0_255("STR0_255", 1)
B0_32: Sv2Type[bytes] = _VarBytes("B0_32", 1, 32)
B0_255: Sv2Type[bytes] = _VarBytes("B0_255", 1, 255)
B0_64K: Sv2Type[bytes] = _VarBytes("B0_64K", 2, 0xFFFF)
B0_16M: Sv2Type[bytes] = _VarBytes("B0_16M", 3, 0xFFFFFF)
PUBKEY: Sv2Type[bytes] = _FixedBytes("PUBKEY", 32)
SIGNATURE: Sv2Type[bytes] = _FixedBytes("SIGNATURE", 64)
TLV_LIST: Sv2Type[tuple[Tlv, ...]] = _TlvList("TLV_LIST", 0)
