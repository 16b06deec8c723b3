"""The :class:`Message` base class: message definitions as data.

A message class is a frozen, slotted dataclass whose fields are annotated with their SV2 type::

    @dataclass(frozen=True, slots=True)
    class CloseChannel(Message):
        MSG_TYPE = 0x18
        CHANNEL_MSG = True
        channel_id: Annotated[int, U32]
        reason_code: Annotated[str, STR0_255]

The field order is the wire order. ``encode()`` / ``decode()`` walk that layout generically; the
few messages on the hot path (share submission and acknowledgement, jobs, targets) override both
with precompiled :class:`struct.Struct` code and fall back to the generic path only to produce a
precise error.

``decode()`` is strict: it rejects a payload with bytes left over after the last field. (SRI
ignores trailing bytes because negotiated TLV extensions may append fields.) A message that an
extension we implement extends with TLV fields declares them as its last field, typed
:data:`~ckbpool.sv2.types.TLV_LIST` (today only ``SubmitSharesExtended.tlvs``, extension
0x0002); every other message has no room for TLVs, so leftover bytes there are an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast, get_type_hints

from ckbpool.sv2.errors import DecodeError
from ckbpool.sv2.types import Sv2Type

__all__ = ["Message", "UnknownMessage", "layout_of"]

Layout = tuple[tuple[str, Sv2Type[Any]], ...]
_LAYOUTS: dict[type[Message], Layout] = {}


def layout_of(cls: type[Message]) -> Layout:
    """The ``(field_name, sv2_type)`` pairs of a message class, in wire order."""
    layout = _LAYOUTS.get(cls)
    if layout is None:
        hints = get_type_hints(cls, include_extras=True)
        pairs = []
        for f in dataclasses.fields(cast(Any, cls)):
            meta = getattr(hints[f.name], "__metadata__", ())
            if not meta or not isinstance(meta[0], Sv2Type):
                raise TypeError(f"{cls.__name__}.{f.name} is not annotated with an SV2 type")
            pairs.append((f.name, meta[0]))
        layout = _LAYOUTS[cls] = tuple(pairs)
    return layout


class Message:
    """Base of every typed SV2 message.

    Class attributes: ``EXTENSION_TYPE`` (0 for core messages), ``MSG_TYPE``, and ``CHANNEL_MSG``
    (whether frames carrying it set the channel_msg bit -- as SRI sets it, which for every message
    here matches the spec's table).
    """

    __slots__ = ()

    EXTENSION_TYPE: ClassVar[int] = 0
    MSG_TYPE: ClassVar[int]
    CHANNEL_MSG: ClassVar[bool]

    if TYPE_CHECKING:

        def __init__(self, *args: Any) -> None: ...

    def encode(self) -> bytes:
        """The message payload (without the frame header)."""
        return self._encode_generic()

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        """Parse a whole payload; raise :class:`DecodeError` naming the field on any problem."""
        return cls._decode_generic(payload)

    def _encode_generic(self) -> bytes:
        name = type(self).__name__
        return b"".join(t.encode(getattr(self, f), f"{name}.{f}") for f, t in layout_of(type(self)))

    @classmethod
    def _decode_generic(cls, payload: bytes) -> Self:
        if not isinstance(payload, bytes):
            payload = bytes(payload)
        name = cls.__name__
        pos = 0
        values = []
        for f, t in layout_of(cls):
            value, pos = t.decode(payload, pos, f"{name}.{f}")
            values.append(value)
        if pos != len(payload):
            raise DecodeError(
                name,
                f"{len(payload) - pos} unexpected bytes after the last field"
                " (no extension we implement adds TLV fields to this message)",
            )
        return cls(*values)


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A frame whose (extension_type, msg_type) this library does not know.

    Returned by :func:`ckbpool.sv2.messages.decode_message` instead of raising: the spec requires
    messages of unknown extensions to be ignored (or forwarded by a proxy, by ``channel_id``,
    unmodified), so the caller gets everything it needs to do either.
    """

    extension_type: int
    msg_type: int
    channel_msg: bool
    payload: bytes

    @property
    def channel_id(self) -> int | None:
        """The channel the frame is addressed to, when the channel_msg bit says it has one."""
        if not self.channel_msg or len(self.payload) < 4:
            return None
        return int.from_bytes(self.payload[:4], "little")
