"""Strict parsing and formatting of the node's JSON hex encodings.

The node rejects numbers with leading zeros ("0x01") and unknown fields, so formatting must be exact; parsing is
strict so that a malformed template fails with the path of the bad field instead of producing a wrong block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import MalformedError

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def hex_uint(value: int) -> str:
    """Format an unsigned integer the way the node wants it: 0x-prefixed, no leading zeros."""
    return hex(value)


def hex_bytes(data: bytes) -> str:
    return "0x" + data.hex()


def field(obj: Mapping[str, Any], key: str, path: str) -> Any:
    """Fetch a required key, naming the full path when it is missing."""
    if not isinstance(obj, Mapping):
        raise MalformedError(path, f"expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise MalformedError(f"{path}.{key}", "missing field")
    return obj[key]


def parse_uint(value: Any, path: str, bits: int) -> int:
    """Parse a 0x-prefixed hex unsigned integer that must fit ``bits`` bits."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) < 3:
        raise MalformedError(path, f"expected a 0x-prefixed hex number, got {value!r}")
    digits = value[2:]
    if not _HEX_DIGITS.issuperset(digits):
        raise MalformedError(path, f"invalid hex digits in {value!r}")
    if len(digits) > 1 and digits[0] == "0":
        raise MalformedError(path, f"hex number {value!r} has leading zeros")
    number = int(digits, 16)
    if number >> bits:
        raise MalformedError(path, f"{value!r} does not fit in {bits} bits")
    return number


def parse_bytes(value: Any, path: str, length: int | None = None) -> bytes:
    """Parse 0x-prefixed hex bytes, optionally of an exact length."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise MalformedError(path, f"expected 0x-prefixed hex bytes, got {value!r}")
    digits = value[2:]
    if len(digits) % 2 or not _HEX_DIGITS.issuperset(digits):
        raise MalformedError(path, f"invalid hex bytes {value[:80]!r}")
    data = bytes.fromhex(digits)
    if length is not None and len(data) != length:
        raise MalformedError(path, f"expected {length} bytes, got {len(data)}")
    return data


def parse_list(value: Any, path: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise MalformedError(path, f"expected a list, got {type(value).__name__}")
    return value


def parse_int(value: Any, path: str) -> int:
    """Parse a plain JSON integer, also accepting the hex form some RPC results use."""
    if isinstance(value, bool):
        raise MalformedError(path, "expected an integer, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise MalformedError(path, "expected a non-negative integer")
        return value
    if isinstance(value, str):
        return parse_uint(value, path, 64)
    raise MalformedError(path, f"expected an integer, got {value!r}")
