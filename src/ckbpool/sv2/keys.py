"""secp256k1 keys for the Stratum V2 Noise handshake, in the encodings SRI uses.

Three encodings matter on the wire and in configuration files:

* **x-only public keys** (32 bytes, BIP340): what the authority signs and what certificates refer to.
* **ElligatorSwift encodings** (64 bytes, BIP324): how ephemeral and static keys travel in the handshake;
  they look like uniform random bytes, and ECDH on them is BIP324's x-only ElligatorSwift ECDH.
* **Base58Check strings**: how people copy keys around. SRI's ``key_utils`` prints an authority public
  key as Base58Check(``01 00`` || x-only key) — a little-endian U16 version 1 — and a secret key as
  Base58Check(32 secret bytes), checksum = first 4 bytes of SHA256(SHA256(payload)).

The ElligatorSwift and ECDH primitives come from libsecp256k1's ``ellswift`` module through coincurve's
cffi binding; nothing here implements curve arithmetic. ``python -m ckbpool.sv2.keys`` is a small CLI
that creates the files a pool operator needs (see :func:`main`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coincurve import PrivateKey, PublicKey
from coincurve._libsecp256k1 import ffi, lib  # type: ignore[import-not-found]  # compiled cffi module
from coincurve.context import GLOBAL_CONTEXT

from ckbpool.sv2.errors import Sv2Error

__all__ = [
    "AUTHORITY_PUBLIC_KEY_VERSION",
    "ELLSWIFT_SIZE",
    "KeyFormatError",
    "Keypair",
    "b58check_decode",
    "b58check_encode",
    "check_xonly",
    "decode_authority_public_key",
    "decode_secret_key",
    "ellswift_create",
    "ellswift_to_xonly",
    "ellswift_xdh",
    "encode_authority_public_key",
    "encode_secret_key",
    "main",
    "xonly_from_secret",
]

ELLSWIFT_SIZE = 64
#: U16 little-endian version that SRI's ``Secp256k1PublicKey`` puts before the x-only key (bytes 01 00).
AUTHORITY_PUBLIC_KEY_VERSION = 1
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_B58_ALPHABET = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_CTX: Any = GLOBAL_CONTEXT.ctx
_BIP324_HASH: Any = lib.secp256k1_ellswift_xdh_hash_function_bip324


class KeyFormatError(Sv2Error, ValueError):
    """A key, key string or key file could not be parsed. The message never contains secret material."""


# --------------------------------------------------------------------------------------------- Base58Check


def b58check_encode(payload: bytes) -> str:
    """Base58Check as Bitcoin (and the ``bs58`` crate's ``with_check``) does it: payload || 4-byte checksum."""
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return (b"1" * zeros + bytes(reversed(out))).decode("ascii")


def b58check_decode(text: str) -> bytes:
    """Inverse of :func:`b58check_encode`; raises :class:`KeyFormatError` on bad characters or checksum."""
    raw = text.strip().encode("ascii", "replace")
    if not raw:
        raise KeyFormatError("empty Base58Check string")
    n = 0
    for c in raw:
        digit = _B58_INDEX.get(c)
        if digit is None:
            raise KeyFormatError("invalid Base58 character")
        n = n * 58 + digit
    zeros = len(raw) - len(raw.lstrip(b"1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    data = b"\x00" * zeros + body
    if len(data) < 4:
        raise KeyFormatError("Base58Check string too short")
    payload, checksum = data[:-4], data[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        raise KeyFormatError("Base58Check checksum mismatch")
    return payload


def encode_authority_public_key(xonly: bytes) -> str:
    """The string users put in their miner/proxy config: Base58Check(01 00 || x-only key), as SRI prints it."""
    check_xonly(xonly)
    return b58check_encode(AUTHORITY_PUBLIC_KEY_VERSION.to_bytes(2, "little") + xonly)


def decode_authority_public_key(text: str) -> bytes:
    """Parse an authority public key string into its 32-byte x-only key (validated to be on the curve)."""
    payload = b58check_decode(text)
    if len(payload) != 34:
        raise KeyFormatError(f"authority public key must decode to 34 bytes, got {len(payload)}")
    version = int.from_bytes(payload[:2], "little")
    if version != AUTHORITY_PUBLIC_KEY_VERSION:
        raise KeyFormatError(f"unknown authority public key version {version} (expected 1)")
    xonly = payload[2:]
    check_xonly(xonly)
    return xonly


def encode_secret_key(secret: bytes) -> str:
    """SRI's textual secret key: Base58Check of the 32 raw bytes, no version prefix."""
    _check_secret(secret)
    return b58check_encode(secret)


def decode_secret_key(text: str) -> bytes:
    """Parse a secret key string (Base58Check, or 64 hex digits for convenience) into 32 bytes."""
    stripped = text.strip()
    if len(stripped) == 64:
        try:
            secret = bytes.fromhex(stripped)
        except ValueError:
            secret = b""
        if secret:
            _check_secret(secret)
            return secret
    secret = b58check_decode(stripped)
    _check_secret(secret)
    return secret


# ------------------------------------------------------------------------------------------------ keys


def _check_secret(secret: bytes) -> None:
    if len(secret) != 32 or not 0 < int.from_bytes(secret, "big") < _CURVE_ORDER:
        raise KeyFormatError("secret key must be 32 bytes in 1..n-1")


def check_xonly(xonly: bytes) -> None:
    """Raise :class:`KeyFormatError` unless ``xonly`` is 32 bytes naming a point on the curve."""
    if len(xonly) != 32:
        raise KeyFormatError("x-only public key must be 32 bytes")
    buf = ffi.new("secp256k1_xonly_pubkey *")
    if not lib.secp256k1_xonly_pubkey_parse(_CTX, buf, xonly):
        raise KeyFormatError("x-only public key is not on the curve")


def xonly_from_secret(secret: bytes) -> bytes:
    """The BIP340 x-only public key of ``secret``."""
    _check_secret(secret)
    return PrivateKey(secret).public_key_xonly.format()


@dataclass(frozen=True, repr=False)
class Keypair:
    """A secp256k1 secret key with its x-only public key.

    ``repr`` shows only the public half, so a keypair can be logged or appear in a traceback safely.
    :meth:`generate` normalises the secret so the public point has an even Y, as SRI's
    ``generate_key`` does; then the secret is also the BIP340 signing secret of the x-only key.
    """

    secret: bytes = field(repr=False)
    xonly_public: bytes

    def __repr__(self) -> str:
        return f"Keypair(xonly_public={self.xonly_public.hex()})"

    @classmethod
    def generate(cls) -> Keypair:
        while True:
            candidate = os.urandom(32)
            if 0 < int.from_bytes(candidate, "big") < _CURVE_ORDER:
                break
        pub = PrivateKey(candidate).public_key.format(compressed=True)
        if pub[0] == 0x03:  # odd Y: negate the secret (n - d) to get the even-Y twin
            candidate = (_CURVE_ORDER - int.from_bytes(candidate, "big")).to_bytes(32, "big")
        return cls.from_secret(candidate)

    @classmethod
    def from_secret(cls, secret: bytes) -> Keypair:
        return cls(secret=bytes(secret), xonly_public=xonly_from_secret(secret))

    @property
    def authority_public_key(self) -> str:
        """The Base58Check string to hand to miners when this keypair is a certificate authority."""
        return encode_authority_public_key(self.xonly_public)


# ------------------------------------------------------------------------------ ElligatorSwift (BIP324)


def ellswift_create(secret: bytes) -> bytes:
    """A fresh random 64-byte ElligatorSwift encoding of ``secret``'s public key.

    Each call returns a different encoding of the same key (libsecp256k1 draws the encoding with fresh
    randomness), which is what BIP324 wants: the bytes on the wire are indistinguishable from random.
    """
    out = ffi.new("unsigned char[64]")
    if not lib.secp256k1_ellswift_create(_CTX, out, secret, os.urandom(32)):
        raise KeyFormatError("invalid secret key for ElligatorSwift")
    return bytes(ffi.buffer(out, 64))


def ellswift_to_xonly(encoding: bytes) -> bytes:
    """Decode a 64-byte ElligatorSwift encoding to the 32-byte x-only public key it stands for.

    Every 64-byte string decodes to some valid point (that is the point of the encoding), so this only
    fails on a wrong length.
    """
    if len(encoding) != ELLSWIFT_SIZE:
        raise KeyFormatError("ElligatorSwift encoding must be 64 bytes")
    pub = ffi.new("secp256k1_pubkey *")
    if not lib.secp256k1_ellswift_decode(_CTX, pub, encoding):  # pragma: no cover - cannot fail
        raise KeyFormatError("undecodable ElligatorSwift encoding")
    xonly = ffi.new("secp256k1_xonly_pubkey *")
    lib.secp256k1_xonly_pubkey_from_pubkey(_CTX, xonly, ffi.NULL, pub)
    out = ffi.new("unsigned char[32]")
    lib.secp256k1_xonly_pubkey_serialize(_CTX, out, xonly)
    return bytes(ffi.buffer(out, 32))


def ellswift_xdh(ell_initiator: bytes, ell_responder: bytes, secret: bytes, *, initiator: bool) -> bytes:
    """BIP324 x-only ElligatorSwift ECDH: the 32-byte shared secret both sides derive.

    The result is SHA256-tagged("bip324_ellswift_xonly_ecdh", ell_A || ell_B || x(shared point)), where A
    is always the initiator's encoding. ``initiator`` tells libsecp256k1 which of the two encodings is
    ours (``party`` 0 = A, 1 = B) so it decodes the *other* one for the multiplication.
    """
    if len(ell_initiator) != ELLSWIFT_SIZE or len(ell_responder) != ELLSWIFT_SIZE:
        raise KeyFormatError("ElligatorSwift encodings must be 64 bytes")
    out = ffi.new("unsigned char[32]")
    party = 0 if initiator else 1
    if not lib.secp256k1_ellswift_xdh(_CTX, out, ell_initiator, ell_responder, secret, party, _BIP324_HASH, ffi.NULL):
        raise KeyFormatError("ElligatorSwift ECDH failed (invalid secret key)")
    return bytes(ffi.buffer(out, 32))


def public_key_from_ellswift(encoding: bytes) -> PublicKey:
    """The full public key (with Y parity) an encoding stands for; used by tests and diagnostics."""
    if len(encoding) != ELLSWIFT_SIZE:
        raise KeyFormatError("ElligatorSwift encoding must be 64 bytes")
    pub = ffi.new("secp256k1_pubkey *")
    lib.secp256k1_ellswift_decode(_CTX, pub, encoding)
    out = ffi.new("unsigned char[33]")
    outlen = ffi.new("size_t *", 33)
    lib.secp256k1_ec_pubkey_serialize(_CTX, out, outlen, pub, 0x0102)  # SECP256K1_EC_COMPRESSED
    return PublicKey(bytes(ffi.buffer(out, 33)))


# ------------------------------------------------------------------------------------------------- CLI


def _write_private(path: Path, text: str, *, force: bool) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SystemExit(f"error: {path} exists (use --force to overwrite)") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")
    os.chmod(path, 0o600)


def _read_secret_file(path: Path) -> bytes:
    try:
        return decode_secret_key(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"error: cannot read {path}: {exc.__class__.__name__}") from None
    except KeyFormatError as exc:
        raise SystemExit(f"error: {path}: {exc}") from None


def _validity(args: argparse.Namespace) -> tuple[int, int]:
    valid_from = int(args.valid_from) if args.valid_from is not None else int(time.time())
    not_valid_after = valid_from + int(args.valid_days * 86400)
    if not 0 <= valid_from <= not_valid_after <= 0xFFFFFFFF:
        raise SystemExit("error: validity window must fit in U32 seconds and end after it starts")
    return valid_from, not_valid_after


def _issue(args: argparse.Namespace, authority: Keypair, static: Keypair) -> None:
    from ckbpool.sv2.certs import Certificate  # local import: certs imports this module

    valid_from, not_valid_after = _validity(args)
    cert = Certificate.issue(authority, static.xonly_public, valid_from, not_valid_after)
    _write_private(args.out_dir / "pool-certificate.hex", cert.to_bytes().hex(), force=args.force)
    print(f"certificate      : {args.out_dir / 'pool-certificate.hex'}")
    print(f"valid            : {valid_from} .. {not_valid_after} (unix seconds)")


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one step (a reader sees the old file or the new one, never half of it), mode 0600."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    _write_private(tmp, text, force=False)
    os.replace(tmp, path)


def rotate_certificate(
    authority_key_file: Path,
    static_key_file: Path,
    certificate_file: Path,
    *,
    valid_days: float = 365.0,
    new_static_key: bool = False,
    now: int | None = None,
) -> tuple[int, int]:
    """Re-issue the pool certificate from the authority key (optionally for a new static key); returns its
    window. Both files are replaced atomically and the new certificate is verified against the authority before
    it is written, so a pool reloading (SIGHUP) never reads a certificate miners would refuse."""
    from ckbpool.sv2.certs import Certificate  # local import: certs imports this module

    authority = Keypair.from_secret(_read_secret_file(authority_key_file))
    static = Keypair.generate() if new_static_key else Keypair.from_secret(_read_secret_file(static_key_file))
    valid_from = int(time.time()) if now is None else now
    not_valid_after = valid_from + int(valid_days * 86400)
    if not 0 <= valid_from <= not_valid_after <= 0xFFFFFFFF:
        raise SystemExit("error: validity window must fit in U32 seconds and end after it starts")
    cert = Certificate.issue(authority, static.xonly_public, valid_from, not_valid_after)
    cert.verify(static.xonly_public, authority.xonly_public, now=valid_from)
    if new_static_key:
        _write_atomic(static_key_file, encode_secret_key(static.secret))
    _write_atomic(certificate_file, cert.to_bytes().hex())
    return valid_from, not_valid_after


_CLI_HELP = """\
Create the key material of a Stratum V2 pool.

generate    writes into --out-dir, each file with mode 0600:
              authority.key         the authority secret (Base58Check); keep it offline, it only signs
              authority.pub         the authority public key string to give to miners and proxies
              pool-static.key       the pool's static Noise secret (Base58Check)
              pool-certificate.hex  the 74-byte certificate (hex) the authority signed for that key
issue-cert  signs a new certificate for an existing static key (rotation without new keys)
rotate      re-issues the pool certificate (--secrets-dir, or each file) from the authority key, replacing it
            atomically; then SIGHUP the pool (it reloads without dropping connected miners). The authority key
            may live outside the deployment (--authority-key /offline/authority.key)
show-pub    prints the authority public key string of a secret key file
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ckbpool.sv2.keys`` (see ``_CLI_HELP``); returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m ckbpool.sv2.keys", description=_CLI_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def window(p: argparse.ArgumentParser) -> None:
        p.add_argument("--valid-from", type=int, default=None, help="unix seconds (default: now)")
        p.add_argument("--valid-days", type=float, default=365.0, help="certificate lifetime in days")
        p.add_argument("--force", action="store_true", help="overwrite existing files")

    gen = sub.add_parser("generate", help="new authority + pool static key + certificate")
    gen.add_argument("--out-dir", type=Path, required=True)
    window(gen)
    iss = sub.add_parser("issue-cert", help="sign a new certificate for an existing static key")
    iss.add_argument("--authority-key", type=Path, required=True)
    iss.add_argument("--static-key", type=Path, required=True)
    iss.add_argument("--out-dir", type=Path, required=True)
    window(iss)
    rot = sub.add_parser("rotate", help="re-issue the pool certificate from the authority key")
    rot.add_argument("--secrets-dir", type=Path, default=None, help="the deployment's secrets/ (default paths)")
    rot.add_argument("--authority-key", type=Path, default=None, help="default: <secrets-dir>/authority.key")
    rot.add_argument("--static-key", type=Path, default=None, help="default: <secrets-dir>/pool-static.key")
    rot.add_argument("--certificate", type=Path, default=None, help="default: <secrets-dir>/pool-certificate.hex")
    rot.add_argument("--valid-days", type=float, default=365.0, help="certificate lifetime in days")
    rot.add_argument("--new-static-key", action="store_true", help="also replace the pool's static Noise key")
    show = sub.add_parser("show-pub", help="print the authority public key string of a secret key file")
    show.add_argument("key_file", type=Path)
    args = parser.parse_args(argv)

    if args.command == "show-pub":
        print(Keypair.from_secret(_read_secret_file(args.key_file)).authority_public_key)
        return 0
    if args.command == "rotate":
        return _rotate(args)
    args.out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.command == "generate":
        _validity(args)  # fail before writing anything
        authority, static = Keypair.generate(), Keypair.generate()
        _write_private(args.out_dir / "authority.key", encode_secret_key(authority.secret), force=args.force)
        _write_private(args.out_dir / "authority.pub", authority.authority_public_key, force=args.force)
        _write_private(args.out_dir / "pool-static.key", encode_secret_key(static.secret), force=args.force)
        print(f"authority public : {authority.authority_public_key}")
        print(f"authority secret : {args.out_dir / 'authority.key'} (keep offline)")
        print(f"pool static key  : {args.out_dir / 'pool-static.key'}")
        _issue(args, authority, static)
    else:
        authority = Keypair.from_secret(_read_secret_file(args.authority_key))
        static = Keypair.from_secret(_read_secret_file(args.static_key))
        _issue(args, authority, static)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    base: Path | None = args.secrets_dir
    paths = {
        "authority_key": (args.authority_key, "authority.key"),
        "static_key": (args.static_key, "pool-static.key"),
        "certificate": (args.certificate, "pool-certificate.hex"),
    }
    resolved: dict[str, Path] = {}
    for name, (given, default) in paths.items():
        if given is None and base is None:
            raise SystemExit(f"error: --{name.replace('_', '-')} or --secrets-dir is required")
        resolved[name] = given if given is not None else base / default  # type: ignore[operator]
    if not resolved["authority_key"].exists():
        raise SystemExit(
            f"error: {resolved['authority_key']} not found: pass --authority-key with the offline authority key"
        )
    valid_from, not_valid_after = rotate_certificate(
        resolved["authority_key"], resolved["static_key"], resolved["certificate"],
        valid_days=args.valid_days, new_static_key=args.new_static_key,
    )  # fmt: skip
    print(f"certificate      : {resolved['certificate']} (re-issued)")
    print(f"valid            : {valid_from} .. {not_valid_after} (unix seconds)")
    if args.new_static_key:
        print(f"pool static key  : {resolved['static_key']} (new)")
    print("next: deploy the file(s) to the pool hosts, then send the pool SIGHUP (it reloads them; connected")
    print("      miners stay, new connections get the new certificate), e.g. `docker kill -s HUP <pool>`")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
