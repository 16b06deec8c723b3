"""CKB block structures: parsed from the node's JSON, serialized to molecule for hashing, and back to JSON.

Parsing names the exact JSON path of a malformed field; serialization follows blockchain.mol byte for byte so
that tx hashes, witness hashes and header hashes match the node's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from . import molecule as mol
from .errors import MalformedError
from .hashing import ckb_hash
from .jsonhex import field, hex_bytes, hex_uint, parse_bytes, parse_list, parse_uint

HASH_TYPES = {"data": 0, "type": 1, "data1": 2, "data2": 4}
HASH_TYPE_NAMES = {v: k for k, v in HASH_TYPES.items()}
DEP_TYPES = {"code": 0, "dep_group": 1}
DEP_TYPE_NAMES = {v: k for k, v in DEP_TYPES.items()}


@dataclass(frozen=True, slots=True)
class Script:
    code_hash: bytes
    hash_type: int
    args: bytes

    @classmethod
    def from_json(cls, obj: Any, path: str) -> Script:
        hash_type = field(obj, "hash_type", path)
        if not isinstance(hash_type, str) or hash_type not in HASH_TYPES:
            raise MalformedError(f"{path}.hash_type", f"unknown hash_type {hash_type!r}")
        return cls(
            code_hash=parse_bytes(field(obj, "code_hash", path), f"{path}.code_hash", 32),
            hash_type=HASH_TYPES[hash_type],
            args=parse_bytes(field(obj, "args", path), f"{path}.args"),
        )

    def serialize(self) -> bytes:
        return mol.table([self.code_hash, bytes([self.hash_type]), mol.bytes_(self.args)])

    def hash(self) -> bytes:
        return ckb_hash(self.serialize())

    def to_json(self) -> dict[str, Any]:
        return {
            "code_hash": hex_bytes(self.code_hash),
            "hash_type": HASH_TYPE_NAMES[self.hash_type],
            "args": hex_bytes(self.args),
        }


@dataclass(frozen=True, slots=True)
class OutPoint:
    tx_hash: bytes
    index: int

    @classmethod
    def from_json(cls, obj: Any, path: str) -> OutPoint:
        return cls(
            tx_hash=parse_bytes(field(obj, "tx_hash", path), f"{path}.tx_hash", 32),
            index=parse_uint(field(obj, "index", path), f"{path}.index", 32),
        )

    def serialize(self) -> bytes:
        return self.tx_hash + mol.u32(self.index)

    def to_json(self) -> dict[str, Any]:
        return {"tx_hash": hex_bytes(self.tx_hash), "index": hex_uint(self.index)}


@dataclass(frozen=True, slots=True)
class CellInput:
    since: int
    previous_output: OutPoint

    @classmethod
    def from_json(cls, obj: Any, path: str) -> CellInput:
        return cls(
            since=parse_uint(field(obj, "since", path), f"{path}.since", 64),
            previous_output=OutPoint.from_json(field(obj, "previous_output", path), f"{path}.previous_output"),
        )

    def serialize(self) -> bytes:
        return mol.u64(self.since) + self.previous_output.serialize()

    def to_json(self) -> dict[str, Any]:
        return {"since": hex_uint(self.since), "previous_output": self.previous_output.to_json()}


@dataclass(frozen=True, slots=True)
class CellDep:
    out_point: OutPoint
    dep_type: int

    @classmethod
    def from_json(cls, obj: Any, path: str) -> CellDep:
        dep_type = field(obj, "dep_type", path)
        if not isinstance(dep_type, str) or dep_type not in DEP_TYPES:
            raise MalformedError(f"{path}.dep_type", f"unknown dep_type {dep_type!r}")
        return cls(
            out_point=OutPoint.from_json(field(obj, "out_point", path), f"{path}.out_point"),
            dep_type=DEP_TYPES[dep_type],
        )

    def serialize(self) -> bytes:
        return self.out_point.serialize() + bytes([self.dep_type])

    def to_json(self) -> dict[str, Any]:
        return {"out_point": self.out_point.to_json(), "dep_type": DEP_TYPE_NAMES[self.dep_type]}


@dataclass(frozen=True, slots=True)
class CellOutput:
    capacity: int
    lock: Script
    type: Script | None

    @classmethod
    def from_json(cls, obj: Any, path: str) -> CellOutput:
        type_json = obj.get("type") if isinstance(obj, dict) else None
        return cls(
            capacity=parse_uint(field(obj, "capacity", path), f"{path}.capacity", 64),
            lock=Script.from_json(field(obj, "lock", path), f"{path}.lock"),
            type=None if type_json is None else Script.from_json(type_json, f"{path}.type"),
        )

    def serialize(self) -> bytes:
        type_bytes = mol.option(None if self.type is None else self.type.serialize())
        return mol.table([mol.u64(self.capacity), self.lock.serialize(), type_bytes])

    def to_json(self) -> dict[str, Any]:
        return {
            "capacity": hex_uint(self.capacity),
            "lock": self.lock.to_json(),
            "type": None if self.type is None else self.type.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Transaction:
    version: int
    cell_deps: tuple[CellDep, ...]
    header_deps: tuple[bytes, ...]
    inputs: tuple[CellInput, ...]
    outputs: tuple[CellOutput, ...]
    outputs_data: tuple[bytes, ...]
    witnesses: tuple[bytes, ...]

    @classmethod
    def from_json(cls, obj: Any, path: str) -> Transaction:
        def items(key: str) -> list[tuple[Any, str]]:
            values = parse_list(field(obj, key, path), f"{path}.{key}")
            return [(v, f"{path}.{key}[{i}]") for i, v in enumerate(values)]

        return cls(
            version=parse_uint(field(obj, "version", path), f"{path}.version", 32),
            cell_deps=tuple(CellDep.from_json(v, p) for v, p in items("cell_deps")),
            header_deps=tuple(parse_bytes(v, p, 32) for v, p in items("header_deps")),
            inputs=tuple(CellInput.from_json(v, p) for v, p in items("inputs")),
            outputs=tuple(CellOutput.from_json(v, p) for v, p in items("outputs")),
            outputs_data=tuple(parse_bytes(v, p) for v, p in items("outputs_data")),
            witnesses=tuple(parse_bytes(v, p) for v, p in items("witnesses")),
        )

    def serialize_raw(self) -> bytes:
        return mol.table(
            [
                mol.u32(self.version),
                mol.fixvec([d.serialize() for d in self.cell_deps]),
                mol.fixvec(list(self.header_deps)),
                mol.fixvec([i.serialize() for i in self.inputs]),
                mol.dynvec([o.serialize() for o in self.outputs]),
                mol.dynvec([mol.bytes_(d) for d in self.outputs_data]),
            ]
        )

    def serialize(self) -> bytes:
        return mol.table([self.serialize_raw(), mol.dynvec([mol.bytes_(w) for w in self.witnesses])])

    def hash(self) -> bytes:
        """tx_hash: the hash of the raw transaction (witnesses excluded)."""
        return ckb_hash(self.serialize_raw())

    def witness_hash(self) -> bytes:
        """The hash of the whole transaction including witnesses (the second CBMT of transactions_root)."""
        return ckb_hash(self.serialize())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": hex_uint(self.version),
            "cell_deps": [d.to_json() for d in self.cell_deps],
            "header_deps": [hex_bytes(h) for h in self.header_deps],
            "inputs": [i.to_json() for i in self.inputs],
            "outputs": [o.to_json() for o in self.outputs],
            "outputs_data": [hex_bytes(d) for d in self.outputs_data],
            "witnesses": [hex_bytes(w) for w in self.witnesses],
        }


_RAW_HEADER = struct.Struct("<IIQQQ32s32s32s32s32s")


@dataclass(frozen=True, slots=True)
class RawHeader:
    version: int
    compact_target: int
    timestamp: int
    number: int
    epoch: int
    parent_hash: bytes
    transactions_root: bytes
    proposals_hash: bytes
    extra_hash: bytes
    dao: bytes

    def serialize(self) -> bytes:
        """The 192-byte RawHeader struct."""
        return _RAW_HEADER.pack(
            self.version,
            self.compact_target,
            self.timestamp,
            self.number,
            self.epoch,
            self.parent_hash,
            self.transactions_root,
            self.proposals_hash,
            self.extra_hash,
            self.dao,
        )

    def pow_hash(self) -> bytes:
        """What miners hash with the nonce: ckb_hash of the raw header."""
        return ckb_hash(self.serialize())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": hex_uint(self.version),
            "compact_target": hex_uint(self.compact_target),
            "timestamp": hex_uint(self.timestamp),
            "number": hex_uint(self.number),
            "epoch": hex_uint(self.epoch),
            "parent_hash": hex_bytes(self.parent_hash),
            "transactions_root": hex_bytes(self.transactions_root),
            "proposals_hash": hex_bytes(self.proposals_hash),
            "extra_hash": hex_bytes(self.extra_hash),
            "dao": hex_bytes(self.dao),
        }


@dataclass(frozen=True, slots=True)
class Header:
    raw: RawHeader
    nonce: int

    @classmethod
    def from_json(cls, obj: Any, path: str) -> Header:
        def h32(key: str) -> bytes:
            return parse_bytes(field(obj, key, path), f"{path}.{key}", 32)

        def num(key: str, bits: int) -> int:
            return parse_uint(field(obj, key, path), f"{path}.{key}", bits)

        raw = RawHeader(
            version=num("version", 32),
            compact_target=num("compact_target", 32),
            timestamp=num("timestamp", 64),
            number=num("number", 64),
            epoch=num("epoch", 64),
            parent_hash=h32("parent_hash"),
            transactions_root=h32("transactions_root"),
            proposals_hash=h32("proposals_hash"),
            extra_hash=h32("extra_hash"),
            dao=h32("dao"),
        )
        return cls(raw=raw, nonce=num("nonce", 128))

    def serialize(self) -> bytes:
        """The 208-byte Header struct: RawHeader then the u128 nonce, little-endian."""
        return self.raw.serialize() + mol.u128(self.nonce)

    def hash(self) -> bytes:
        """The block hash."""
        return ckb_hash(self.serialize())

    def to_json(self) -> dict[str, Any]:
        out = self.raw.to_json()
        out["nonce"] = hex_uint(self.nonce)
        return out


@dataclass(frozen=True, slots=True)
class UncleBlock:
    header: Header
    proposals: tuple[bytes, ...]

    @classmethod
    def from_json(cls, obj: Any, path: str) -> UncleBlock:
        proposals = parse_list(field(obj, "proposals", path), f"{path}.proposals")
        return cls(
            header=Header.from_json(field(obj, "header", path), f"{path}.header"),
            proposals=tuple(parse_bytes(p, f"{path}.proposals[{i}]", 10) for i, p in enumerate(proposals)),
        )

    def serialize(self) -> bytes:
        return mol.table([self.header.serialize(), mol.fixvec(list(self.proposals))])

    def hash(self) -> bytes:
        return self.header.hash()

    def to_json(self) -> dict[str, Any]:
        return {"header": self.header.to_json(), "proposals": [hex_bytes(p) for p in self.proposals]}


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    uncles: tuple[UncleBlock, ...]
    transactions: tuple[Transaction, ...]
    proposals: tuple[bytes, ...]
    extension: bytes | None = None

    @classmethod
    def from_json(cls, obj: Any, path: str = "block") -> Block:
        uncles = parse_list(field(obj, "uncles", path), f"{path}.uncles")
        txs = parse_list(field(obj, "transactions", path), f"{path}.transactions")
        proposals = parse_list(field(obj, "proposals", path), f"{path}.proposals")
        ext = obj.get("extension")
        return cls(
            header=Header.from_json(field(obj, "header", path), f"{path}.header"),
            uncles=tuple(UncleBlock.from_json(u, f"{path}.uncles[{i}]") for i, u in enumerate(uncles)),
            transactions=tuple(Transaction.from_json(t, f"{path}.transactions[{i}]") for i, t in enumerate(txs)),
            proposals=tuple(parse_bytes(p, f"{path}.proposals[{i}]", 10) for i, p in enumerate(proposals)),
            extension=None if ext is None else parse_bytes(ext, f"{path}.extension"),
        )

    def serialize(self) -> bytes:
        """Molecule Block, or BlockV1 (with the extension field) when the block has an extension."""
        fields = [
            self.header.serialize(),
            mol.dynvec([u.serialize() for u in self.uncles]),
            mol.dynvec([t.serialize() for t in self.transactions]),
            mol.fixvec(list(self.proposals)),
        ]
        if self.extension is not None:
            fields.append(mol.bytes_(self.extension))
        return mol.table(fields)

    def hash(self) -> bytes:
        return self.header.hash()

    def to_json(self) -> dict[str, Any]:
        """The submit_block JSON: no ``hash`` keys, ``extension`` only when present (the node rejects extras)."""
        out: dict[str, Any] = {
            "header": self.header.to_json(),
            "uncles": [u.to_json() for u in self.uncles],
            "transactions": [t.to_json() for t in self.transactions],
            "proposals": [hex_bytes(p) for p in self.proposals],
        }
        if self.extension is not None:
            out["extension"] = hex_bytes(self.extension)
        return out
