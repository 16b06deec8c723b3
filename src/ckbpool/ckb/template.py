"""Block template -> mining job -> block.

Everything that depends only on the template (transaction hashes, the three header commitments, the raw header
and its pow_hash) is computed once here, so the per-share work is just Eaglesong of pow_hash || nonce and, for
the rare winning share, filling the nonce into a prepared block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import MalformedError
from .jsonhex import field, parse_bytes, parse_list, parse_uint
from .merkle import extra_hash, proposals_hash, transactions_root
from .structures import Block, Header, RawHeader, Transaction, UncleBlock
from .target import compact_to_target


@dataclass(frozen=True, slots=True)
class TemplateUncle:
    block: UncleBlock
    required: bool


@dataclass(frozen=True, slots=True)
class TemplateTransaction:
    tx: Transaction
    tx_hash: bytes
    required: bool
    cycles: int | None


@dataclass(frozen=True, slots=True)
class BlockTemplate:
    """A parsed, validated get_block_template result."""

    version: int
    compact_target: int
    current_time: int
    number: int
    epoch: int
    parent_hash: bytes
    cycles_limit: int
    bytes_limit: int
    uncles_count_limit: int
    uncles: tuple[TemplateUncle, ...]
    transactions: tuple[TemplateTransaction, ...]
    proposals: tuple[bytes, ...]
    cellbase: Transaction
    work_id: int
    dao: bytes
    extension: bytes | None

    @classmethod
    def from_json(cls, obj: Any, path: str = "template") -> BlockTemplate:
        """Parse and cross-check a template; a malformed field raises MalformedError naming its path."""
        if not isinstance(obj, dict):
            raise MalformedError(path, f"expected an object, got {type(obj).__name__}")

        def num(key: str, bits: int) -> int:
            return parse_uint(field(obj, key, path), f"{path}.{key}", bits)

        uncles = []
        for i, u in enumerate(parse_list(field(obj, "uncles", path), f"{path}.uncles")):
            upath = f"{path}.uncles[{i}]"
            block = UncleBlock.from_json(u, upath)
            declared = parse_bytes(field(u, "hash", upath), f"{upath}.hash", 32)
            if block.hash() != declared:
                raise MalformedError(f"{upath}.hash", "does not match the uncle header")
            uncles.append(TemplateUncle(block=block, required=bool(u.get("required", False))))

        txs = []
        for i, t in enumerate(parse_list(field(obj, "transactions", path), f"{path}.transactions")):
            tpath = f"{path}.transactions[{i}]"
            tx = Transaction.from_json(field(t, "data", tpath), f"{tpath}.data")
            tx_hash = tx.hash()
            declared = parse_bytes(field(t, "hash", tpath), f"{tpath}.hash", 32)
            if tx_hash != declared:
                raise MalformedError(f"{tpath}.hash", "does not match the transaction data")
            cycles = t.get("cycles")
            txs.append(
                TemplateTransaction(
                    tx=tx,
                    tx_hash=tx_hash,
                    required=bool(t.get("required", False)),
                    cycles=None if cycles is None else parse_uint(cycles, f"{tpath}.cycles", 64),
                )
            )

        cb = field(obj, "cellbase", path)
        cellbase = Transaction.from_json(field(cb, "data", f"{path}.cellbase"), f"{path}.cellbase.data")
        declared_cb = parse_bytes(field(cb, "hash", f"{path}.cellbase"), f"{path}.cellbase.hash", 32)
        if cellbase.hash() != declared_cb:
            raise MalformedError(f"{path}.cellbase.hash", "does not match the cellbase data")

        proposals = parse_list(field(obj, "proposals", path), f"{path}.proposals")
        ext = obj.get("extension")
        compact_target = num("compact_target", 32)
        try:
            compact_to_target(compact_target)
        except ValueError as exc:
            raise MalformedError(f"{path}.compact_target", str(exc)) from None
        return cls(
            version=num("version", 32),
            compact_target=compact_target,
            current_time=num("current_time", 64),
            number=num("number", 64),
            epoch=num("epoch", 64),
            parent_hash=parse_bytes(field(obj, "parent_hash", path), f"{path}.parent_hash", 32),
            cycles_limit=num("cycles_limit", 64),
            bytes_limit=num("bytes_limit", 64),
            uncles_count_limit=num("uncles_count_limit", 64),
            uncles=tuple(uncles),
            transactions=tuple(txs),
            proposals=tuple(parse_bytes(p, f"{path}.proposals[{i}]", 10) for i, p in enumerate(proposals)),
            cellbase=cellbase,
            work_id=num("work_id", 64),
            dao=parse_bytes(field(obj, "dao", path), f"{path}.dao", 32),
            extension=None if ext is None else parse_bytes(ext, f"{path}.extension"),
        )

    def all_transactions(self) -> tuple[Transaction, ...]:
        return (self.cellbase, *(t.tx for t in self.transactions))


@dataclass(frozen=True, slots=True)
class MiningJob:
    """Everything a pool needs to hand out work for one template and to turn a winning nonce into a block.

    Miners only ever see pow_hash and a target; the header and body stay here.
    """

    template: BlockTemplate
    raw_header: RawHeader
    pow_hash: bytes
    target: int
    _body: Block  # the block with nonce 0; nonce filled in by block()

    @property
    def height(self) -> int:
        return self.raw_header.number

    @property
    def parent_hash(self) -> bytes:
        return self.raw_header.parent_hash

    @property
    def compact_target(self) -> int:
        return self.raw_header.compact_target

    @property
    def timestamp(self) -> int:
        return self.raw_header.timestamp

    @property
    def work_id(self) -> int:
        return self.template.work_id

    def block(self, nonce: int) -> Block:
        """The full block for a header nonce (the u128 the header stores)."""
        if not 0 <= nonce < 1 << 128:
            raise ValueError(f"nonce {nonce:#x} does not fit u128")
        return Block(
            header=Header(raw=self.raw_header, nonce=nonce),
            uncles=self._body.uncles,
            transactions=self._body.transactions,
            proposals=self._body.proposals,
            extension=self._body.extension,
        )

    def block_hash(self, nonce: int) -> bytes:
        return Header(raw=self.raw_header, nonce=nonce).hash()

    def submit_params(self, nonce: int) -> list[Any]:
        """The params of submit_block: the work_id (as the decimal string the official miner sends) and JSON."""
        return [str(self.template.work_id), self.block(nonce).to_json()]


def job_from_template(template: BlockTemplate, timestamp: int | None = None) -> MiningJob:
    """Build the header (everything but the nonce) from a template, once per template.

    ``timestamp`` defaults to the template's current_time; a pool may refresh it without a new template, but it
    must stay above the median of the last 37 blocks and at most 15 s ahead of the node's clock.
    """
    txs = template.all_transactions()
    tx_hashes = [template.cellbase.hash(), *(t.tx_hash for t in template.transactions)]
    witness_hashes = [tx.witness_hash() for tx in txs]
    uncle_blocks = tuple(u.block for u in template.uncles)
    raw = RawHeader(
        version=template.version,
        compact_target=template.compact_target,
        timestamp=template.current_time if timestamp is None else timestamp,
        number=template.number,
        epoch=template.epoch,
        parent_hash=template.parent_hash,
        transactions_root=transactions_root(tx_hashes, witness_hashes),
        proposals_hash=proposals_hash(template.proposals),
        extra_hash=extra_hash([u.hash() for u in uncle_blocks], template.extension),
        dao=template.dao,
    )
    body = Block(
        header=Header(raw=raw, nonce=0),
        uncles=uncle_blocks,
        transactions=txs,
        proposals=template.proposals,
        extension=template.extension,
    )
    return MiningJob(
        template=template,
        raw_header=raw,
        pow_hash=raw.pow_hash(),
        target=compact_to_target(template.compact_target),
        _body=body,
    )
