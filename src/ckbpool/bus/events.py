"""The events that travel on the bus: immutable dataclasses, with protobuf (Kafka) and JSON (baseline) encodings.

The in-process bus passes these objects as they are; the Kafka bus sends ``to_proto()`` bytes and rebuilds them
with ``from_proto()``. The wire schema is proto/ckbpool/bus/v1/events.proto: integers wider than 64 bits (the
u128 header nonce, u256 targets) travel as fixed-length little-endian bytes (16 / 32), hashes as raw bytes,
embedded JSON documents as their UTF-8 bytes.

``to_json()`` / ``from_json()`` exist as the benchmark's baseline and for debugging dumps: big integers become
``"0x..."`` hex strings (as in CKB's RPC), hashes hex, embedded JSON documents JSON strings.

Construction validates ranges (u32/u64/u128/u256, block status), so a bad value fails where it is made rather
than in a consumer on another host. Decoding malformed bytes raises :class:`EventDecodeError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Self

from google.protobuf.message import DecodeError

from .pb import events_pb2 as pb

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
U128_MAX = (1 << 128) - 1
U256_MAX = (1 << 256) - 1
SEQ_MAX = (1 << 53) - 1  # share seq: exact as a double, which is how Redis' Lua compares it

BLOCK_STATUSES = ("accepted", "stale", "rejected", "pending")
_STATUS_TO_PB = {
    "accepted": pb.BLOCK_STATUS_ACCEPTED,
    "stale": pb.BLOCK_STATUS_STALE,
    "rejected": pb.BLOCK_STATUS_REJECTED,
    "pending": pb.BLOCK_STATUS_PENDING,
}
_PB_TO_STATUS = {v: k for k, v in _STATUS_TO_PB.items()}


class EventDecodeError(ValueError):
    """Bytes that do not decode to the expected event (bad protobuf/JSON, wrong fixed length, unknown status)."""


def _check_uint(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} must be in 0..{maximum:#x}, got {value}")


def _fixed_le(name: str, data: bytes, length: int) -> int:
    if len(data) != length:
        raise EventDecodeError(f"{name}: expected {length} little-endian bytes, got {len(data)}")
    return int.from_bytes(data, "little")


def _text(data: bytes) -> str:
    """Embedded JSON bytes as a JSON string; bytes that are not UTF-8 survive through surrogate escapes."""
    return data.decode("utf-8", "surrogateescape")


def _untext(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _loads(data: bytes, kind: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventDecodeError(f"{kind}: invalid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise EventDecodeError(f"{kind}: expected a JSON object")
    return obj


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _parse(message_type: Any, data: bytes, kind: str) -> Any:
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        raise EventDecodeError(f"{kind}: invalid protobuf: {exc}") from exc


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """A node block template (the raw get_block_template JSON, UTF-8) chosen by the job maker."""

    job_id: int
    template_json: bytes
    received_at: float

    event_name: ClassVar[str] = "JobTemplate"

    def __post_init__(self) -> None:
        _check_uint("job_id", self.job_id, U64_MAX)

    def to_proto(self) -> bytes:
        return pb.JobTemplate(
            job_id=self.job_id, template_json=self.template_json, received_at=self.received_at
        ).SerializeToString()

    @classmethod
    def from_proto(cls, data: bytes) -> Self:
        m = _parse(pb.JobTemplate, data, cls.event_name)
        return cls(job_id=m.job_id, template_json=m.template_json, received_at=m.received_at)

    def to_json(self) -> bytes:
        return _dumps(
            {"job_id": self.job_id, "template_json": _text(self.template_json), "received_at": self.received_at}
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        o = _loads(data, cls.event_name)
        try:
            return cls(job_id=o["job_id"], template_json=_untext(o["template_json"]), received_at=o["received_at"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventDecodeError(f"{cls.event_name}: bad JSON field: {exc!r}") from exc


class _ShareFields(NamedTuple):
    """Share's fields, in its positional order (``Share`` adds the checks and the codecs)."""

    server_id: str
    channel_id: int
    user: str
    worker: str
    job_id: int
    height: int
    nonce: int  # u128 header nonce
    share_target: int  # u256
    share_difficulty: float
    accepted: bool
    reason: str
    is_block: bool
    block_hash: bytes  # b'' unless is_block
    timestamp: float
    source: str = ""
    seq: int = 0


_tuple_new = tuple.__new__
_tuple_eq = tuple.__eq__
_tuple_ne = tuple.__ne__


class Share(_ShareFields):
    """One share checked by an SV2 server. ``reason`` is '' when accepted, else an SV2 error code.

    ``(source, seq)`` is the share's stable id, given where the share is checked and never changed by a
    redelivery, so accounting can count each share once (see ``ckbpool.pool.accounting``): ``source`` names one
    run of one stratum server, ``seq`` counts its shares from 1 in publish order. ``source == ""`` means "no id"
    (a producer from before ids).

    A tuple, not a frozen dataclass like the other events: one is made per share (by the stratum server, and
    again by the hub decoding a worker's batch), and a frozen dataclass's sixteen ``object.__setattr__`` calls
    plus its ``__post_init__`` cost ~3 us of a ~13 us share path, this ~0.4 us (issue 19). It behaves as the
    dataclass did: immutable, the same fields by name and position, keyword or positional construction with the
    same range checks, equal only to a Share with equal fields (never to a plain tuple), hashable the same way,
    not ordered. ``replace()`` is ``dataclasses.replace`` for it (checked like the constructor).
    """

    __slots__ = ()

    event_name: ClassVar[str] = "Share"

    def __new__(
        cls,
        server_id: str,
        channel_id: int,
        user: str,
        worker: str,
        job_id: int,
        height: int,
        nonce: int,
        share_target: int,
        share_difficulty: float,
        accepted: bool,
        reason: str,
        is_block: bool,
        block_hash: bytes,
        timestamp: float,
        source: str = "",
        seq: int = 0,
    ) -> Self:
        # one chained comparison for the common (valid) case; the named check only to say which field is wrong
        if not (
            0 <= seq <= SEQ_MAX
            and 0 <= channel_id <= U32_MAX
            and 0 <= job_id <= U64_MAX
            and 0 <= height <= U64_MAX
            and 0 <= nonce <= U128_MAX
            and 0 <= share_target <= U256_MAX
        ):
            _check_uint("seq", seq, SEQ_MAX)
            _check_uint("channel_id", channel_id, U32_MAX)
            _check_uint("job_id", job_id, U64_MAX)
            _check_uint("height", height, U64_MAX)
            _check_uint("nonce", nonce, U128_MAX)
            _check_uint("share_target", share_target, U256_MAX)
        return _tuple_new(
            cls,
            (
                server_id,
                channel_id,
                user,
                worker,
                job_id,
                height,
                nonce,
                share_target,
                share_difficulty,
                accepted,
                reason,
                is_block,
                block_hash,
                timestamp,
                source,
                seq,
            ),
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and _tuple_eq(self, other)

    def __ne__(self, other: object) -> bool:
        return not (type(other) is type(self) and _tuple_eq(self, other))

    __hash__ = _ShareFields.__hash__

    def __lt__(self, other: object) -> bool:
        raise TypeError("Share is not ordered")

    __le__ = __gt__ = __ge__ = __lt__

    def replace(self, **changes: Any) -> Share:
        """A copy with ``changes`` (field name -> value), range-checked like any construction."""
        return Share(**{**self._asdict(), **changes})

    def _replace(self, **changes: Any) -> Share:  # namedtuple's own would skip the checks
        return self.replace(**changes)

    def to_proto(self) -> bytes:
        return pb.Share(
            server_id=self.server_id,
            channel_id=self.channel_id,
            user=self.user,
            worker=self.worker,
            job_id=self.job_id,
            height=self.height,
            nonce=self.nonce.to_bytes(16, "little"),
            share_target=self.share_target.to_bytes(32, "little"),
            share_difficulty=self.share_difficulty,
            accepted=self.accepted,
            reason=self.reason,
            is_block=self.is_block,
            block_hash=self.block_hash,
            timestamp=self.timestamp,
            source=self.source,
            seq=self.seq,
        ).SerializeToString()

    @property
    def share_id(self) -> str:
        """``source:seq``, or '' for a share without an id."""
        return f"{self.source}:{self.seq}" if self.source else ""

    @classmethod
    def from_proto(cls, data: bytes) -> Self:
        m = _parse(pb.Share, data, cls.event_name)
        return cls(
            server_id=m.server_id,
            channel_id=m.channel_id,
            user=m.user,
            worker=m.worker,
            job_id=m.job_id,
            height=m.height,
            nonce=_fixed_le("Share.nonce", m.nonce, 16),
            share_target=_fixed_le("Share.share_target", m.share_target, 32),
            share_difficulty=m.share_difficulty,
            accepted=m.accepted,
            reason=m.reason,
            is_block=m.is_block,
            block_hash=m.block_hash,
            timestamp=m.timestamp,
            source=m.source,
            seq=m.seq,
        )

    def to_json(self) -> bytes:
        return _dumps(
            {
                "server_id": self.server_id,
                "channel_id": self.channel_id,
                "user": self.user,
                "worker": self.worker,
                "job_id": self.job_id,
                "height": self.height,
                "nonce": hex(self.nonce),
                "share_target": hex(self.share_target),
                "share_difficulty": self.share_difficulty,
                "accepted": self.accepted,
                "reason": self.reason,
                "is_block": self.is_block,
                "block_hash": self.block_hash.hex(),
                "timestamp": self.timestamp,
                "source": self.source,
                "seq": self.seq,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        o = _loads(data, cls.event_name)
        try:
            return cls(
                server_id=o["server_id"],
                channel_id=o["channel_id"],
                user=o["user"],
                worker=o["worker"],
                job_id=o["job_id"],
                height=o["height"],
                nonce=int(o["nonce"], 16),
                share_target=int(o["share_target"], 16),
                share_difficulty=o["share_difficulty"],
                accepted=o["accepted"],
                reason=o["reason"],
                is_block=o["is_block"],
                block_hash=bytes.fromhex(o["block_hash"]),
                timestamp=o["timestamp"],
                source=o.get("source", ""),
                seq=o.get("seq", 0),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventDecodeError(f"{cls.event_name}: bad JSON field: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class FoundBlock:
    """A share that meets the network target, with the complete submit_block JSON."""

    server_id: str
    job_id: int
    height: int
    block_hash: bytes
    work_id: int
    block_json: bytes
    user: str
    worker: str
    found_at: float

    event_name: ClassVar[str] = "FoundBlock"

    def __post_init__(self) -> None:
        _check_uint("job_id", self.job_id, U64_MAX)
        _check_uint("height", self.height, U64_MAX)
        _check_uint("work_id", self.work_id, U64_MAX)

    def to_proto(self) -> bytes:
        return pb.FoundBlock(
            server_id=self.server_id,
            job_id=self.job_id,
            height=self.height,
            block_hash=self.block_hash,
            work_id=self.work_id,
            block_json=self.block_json,
            user=self.user,
            worker=self.worker,
            found_at=self.found_at,
        ).SerializeToString()

    @classmethod
    def from_proto(cls, data: bytes) -> Self:
        m = _parse(pb.FoundBlock, data, cls.event_name)
        return cls(
            server_id=m.server_id,
            job_id=m.job_id,
            height=m.height,
            block_hash=m.block_hash,
            work_id=m.work_id,
            block_json=m.block_json,
            user=m.user,
            worker=m.worker,
            found_at=m.found_at,
        )

    def to_json(self) -> bytes:
        return _dumps(
            {
                "server_id": self.server_id,
                "job_id": self.job_id,
                "height": self.height,
                "block_hash": self.block_hash.hex(),
                "work_id": self.work_id,
                "block_json": _text(self.block_json),
                "user": self.user,
                "worker": self.worker,
                "found_at": self.found_at,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        o = _loads(data, cls.event_name)
        try:
            return cls(
                server_id=o["server_id"],
                job_id=o["job_id"],
                height=o["height"],
                block_hash=bytes.fromhex(o["block_hash"]),
                work_id=o["work_id"],
                block_json=_untext(o["block_json"]),
                user=o["user"],
                worker=o["worker"],
                found_at=o["found_at"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventDecodeError(f"{cls.event_name}: bad JSON field: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class BlockOutcome:
    """What happened to a submitted block: status is one of 'accepted' | 'stale' | 'rejected' | 'pending'."""

    block_hash: bytes
    height: int
    status: str
    reason: str
    submitted_at: float
    latency_ms: float
    user: str
    worker: str

    event_name: ClassVar[str] = "BlockOutcome"

    def __post_init__(self) -> None:
        _check_uint("height", self.height, U64_MAX)
        if self.status not in _STATUS_TO_PB:
            raise ValueError(f"status must be one of {BLOCK_STATUSES}, got {self.status!r}")

    def to_proto(self) -> bytes:
        return pb.BlockOutcome(
            block_hash=self.block_hash,
            height=self.height,
            status=_STATUS_TO_PB[self.status],
            reason=self.reason,
            submitted_at=self.submitted_at,
            latency_ms=self.latency_ms,
            user=self.user,
            worker=self.worker,
        ).SerializeToString()

    @classmethod
    def from_proto(cls, data: bytes) -> Self:
        m = _parse(pb.BlockOutcome, data, cls.event_name)
        status = _PB_TO_STATUS.get(m.status)
        if status is None:
            raise EventDecodeError(f"{cls.event_name}.status: unknown value {m.status}")
        return cls(
            block_hash=m.block_hash,
            height=m.height,
            status=status,
            reason=m.reason,
            submitted_at=m.submitted_at,
            latency_ms=m.latency_ms,
            user=m.user,
            worker=m.worker,
        )

    def to_json(self) -> bytes:
        return _dumps(
            {
                "block_hash": self.block_hash.hex(),
                "height": self.height,
                "status": self.status,
                "reason": self.reason,
                "submitted_at": self.submitted_at,
                "latency_ms": self.latency_ms,
                "user": self.user,
                "worker": self.worker,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        o = _loads(data, cls.event_name)
        try:
            return cls(
                block_hash=bytes.fromhex(o["block_hash"]),
                height=o["height"],
                status=o["status"],
                reason=o["reason"],
                submitted_at=o["submitted_at"],
                latency_ms=o["latency_ms"],
                user=o["user"],
                worker=o["worker"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EventDecodeError(f"{cls.event_name}: bad JSON field: {exc!r}") from exc


Event = JobTemplate | Share | FoundBlock | BlockOutcome
EVENT_CLASSES: tuple[type[Event], ...] = (JobTemplate, Share, FoundBlock, BlockOutcome)
EVENT_BY_NAME: dict[str, type[Event]] = {cls.event_name: cls for cls in EVENT_CLASSES}
