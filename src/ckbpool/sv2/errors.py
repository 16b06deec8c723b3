"""Exceptions of the SV2 library.

One hierarchy, rooted at :class:`Sv2Error`:

* :class:`DecodeError` -- bytes from the peer do not form a valid value, message or frame.
  Anything that parses peer input raises only this (or its subclass :class:`FrameTooLarge`).
* :class:`EncodeError` -- a value we were asked to send is out of range for its SV2 type.
  It is also a :class:`ValueError`, because it is the caller's bad argument.
* :class:`ProtocolError` -- the peer broke the protocol's rules; carries the SV2 ``error_code``
  string that the protocol uses to name the problem.
* :class:`LocalProtocolError` -- *we* tried to do something the protocol forbids in the current
  state (a bug in the caller, never the peer's fault).
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "EncodeError",
    "FrameTooLarge",
    "LocalProtocolError",
    "ProtocolError",
    "Sv2Error",
]


class Sv2Error(Exception):
    """Base class of every exception raised by ``ckbpool.sv2``."""


class DecodeError(Sv2Error):
    """Peer bytes are not a valid encoding; ``field`` names what was being decoded."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class FrameTooLarge(DecodeError):
    """A frame header announced a payload longer than the configured limit.

    Raised from the 6-byte header alone, before any of the payload is buffered.
    """

    def __init__(self, msg_length: int, limit: int) -> None:
        super().__init__("msg_length", f"frame payload of {msg_length} bytes exceeds the limit of {limit}")
        self.msg_length = msg_length
        self.limit = limit


class EncodeError(Sv2Error, ValueError):
    """A value does not fit its SV2 type; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ProtocolError(Sv2Error):
    """The peer violated the protocol. ``error_code`` is the SV2 error code string."""

    def __init__(self, error_code: str, detail: str = "") -> None:
        super().__init__(f"{error_code}: {detail}" if detail else error_code)
        self.error_code = error_code
        self.detail = detail


class LocalProtocolError(Sv2Error):
    """The local side asked for something the protocol does not allow in the current state."""
