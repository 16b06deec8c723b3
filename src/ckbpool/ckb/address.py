"""CKB addresses (RFC 0021): the pool's payout address <-> the lock script of the block assembler.

Full format (0x00, bech32m) is what wallets show today; the deprecated short (0x01) and old full (0x02/0x04)
formats (bech32) are still accepted on input because operators paste whatever their wallet shows.
"""

from __future__ import annotations

from .errors import MalformedError
from .structures import HASH_TYPES, Script

SECP256K1_BLAKE160_CODE_HASH = bytes.fromhex("9bd7e06f3ecf4be0f2fcd2188b23f1b9fcc88e5d4b65a8637b17723bbda3cce8")
MULTISIG_CODE_HASH = bytes.fromhex("5c5069eb0857efc65e1bca0c07df34c31663b3622fd3876c876320fc9634e2a8")
_SHORT_CODE_HASHES = {0x00: SECP256K1_BLAKE160_CODE_HASH, 0x01: MULTISIG_CODE_HASH}
NETWORK_PREFIX = {"mainnet": "ckb", "testnet": "ckt", "dev": "ckt"}

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


def _polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise ValueError("invalid padding")
    return out


def _bech32_decode(address: str) -> tuple[str, bytes, int]:
    if address.lower() != address and address.upper() != address:
        raise MalformedError("address", "mixed case")
    address = address.lower()
    pos = address.rfind("1")
    if pos < 1 or pos + 7 > len(address):
        raise MalformedError("address", "no bech32 separator or too short")
    hrp, data_part = address[:pos], address[pos + 1 :]
    try:
        data = [_CHARSET.index(c) for c in data_part]
    except ValueError:
        raise MalformedError("address", "invalid bech32 character") from None
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        raise MalformedError("address", "bad checksum")
    try:
        payload = bytes(_convertbits(data[:-6], 5, 8, False))
    except ValueError as exc:
        raise MalformedError("address", str(exc)) from None
    return hrp, payload, const


def _bech32_encode(hrp: str, payload: bytes, const: int) -> str:
    data = _convertbits(payload, 8, 5, True)
    values = _hrp_expand(hrp) + data
    polymod = _polymod([*values, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[d] for d in data + checksum)


def parse_address(address: str, network: str | None = None) -> Script:
    """Decode an address into its lock script; with ``network``, also check the prefix matches it."""
    hrp, payload, const = _bech32_decode(address.strip())
    if hrp not in ("ckb", "ckt"):
        raise MalformedError("address", f"unknown prefix {hrp!r} (expected ckb or ckt)")
    if network is not None and NETWORK_PREFIX[network] != hrp:
        raise MalformedError("address", f"a {hrp} address cannot be used on {network}")
    if not payload:
        raise MalformedError("address", "empty payload")
    kind = payload[0]
    if kind == 0x00:
        if const != _BECH32M_CONST:
            raise MalformedError("address", "full-format address must use bech32m")
        if len(payload) < 34:
            raise MalformedError("address", "full-format payload too short")
        hash_type = payload[33]
        if hash_type not in HASH_TYPES.values():
            raise MalformedError("address", f"unknown hash_type {hash_type}")
        return Script(code_hash=payload[1:33], hash_type=hash_type, args=payload[34:])
    if const != _BECH32_CONST:
        raise MalformedError("address", "deprecated address formats use bech32, not bech32m")
    if kind == 0x01:
        if len(payload) < 2 or payload[1] not in _SHORT_CODE_HASHES:
            raise MalformedError("address", "unknown short-format code hash index")
        args = payload[2:]
        if len(args) != 20:
            raise MalformedError("address", f"short-format args must be 20 bytes, got {len(args)}")
        return Script(code_hash=_SHORT_CODE_HASHES[payload[1]], hash_type=1, args=args)
    if kind in (0x02, 0x04):
        if len(payload) < 33:
            raise MalformedError("address", "old full-format payload too short")
        return Script(code_hash=payload[1:33], hash_type=0 if kind == 0x02 else 1, args=payload[33:])
    raise MalformedError("address", f"unknown address format {kind:#04x}")


def encode_address(lock: Script, network: str) -> str:
    """Full-format (bech32m) address of a lock script."""
    payload = b"\x00" + lock.code_hash + bytes([lock.hash_type]) + lock.args
    return _bech32_encode(NETWORK_PREFIX[network], payload, _BECH32M_CONST)


def secp256k1_lock(args20: bytes) -> Script:
    """The default single-signature lock for a 20-byte blake160 public-key hash."""
    if len(args20) != 20:
        raise MalformedError("lock.args", f"expected 20 bytes, got {len(args20)}")
    return Script(code_hash=SECP256K1_BLAKE160_CODE_HASH, hash_type=1, args=args20)
