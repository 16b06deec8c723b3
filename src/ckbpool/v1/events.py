"""What the V1 session state machines report.

Every event has a ``reply``: the line(s) the state machine already decided to send (an error for a request it
refused, the answer to ``mining.extranonce.subscribe``), or ``b""``. The caller's loop::

    for event in session.receive_data(data):
        if event.reply:
            transport.write(event.reply)
        ...  # act on the event; after ConnectionClosed, close the socket
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckbpool.v1.errors import StratumErrorCode

__all__ = [
    "Answered",
    "AuthorizeRequested",
    "AuthorizeResult",
    "ConnectionClosed",
    "Event",
    "JobNotified",
    "Rejected",
    "ResponseReceived",
    "ShareSubmitted",
    "SubmitResult",
    "SubscribeRequested",
    "SubscribeResult",
    "TargetSet",
    "UnknownNotification",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class. ``reply``: bytes to send now, or ``b""``."""

    reply: bytes = field(default=b"", kw_only=True)


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The session is over (a line too long, too many bad requests, or the peer broke the protocol)."""

    reason: str


# --- server side ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribeRequested(Event):
    """Answer with ``ServerSession.accept_subscribe`` (extranonce1 assigned by the caller) or ``reject``."""

    request_id: Any
    agent: str


@dataclass(frozen=True, slots=True)
class AuthorizeRequested(Event):
    """Answer with ``ServerSession.accept_authorize`` or ``reject`` (e.g. code 29 invalid username)."""

    request_id: Any
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class ShareSubmitted(Event):
    """A well-formed submit from an authorized worker; ``extranonce2`` has the subscribed size.

    ``job_id`` is the miner's string as sent; whether it names a live job is the caller's judgement, as are
    staleness, duplicates and the target. Answer with ``accept_share`` or ``reject``.
    """

    request_id: Any
    username: str
    job_id: str
    extranonce2: bytes


@dataclass(frozen=True, slots=True)
class Answered(Event):
    """A request the state machine answered by itself (``reply``), e.g. mining.extranonce.subscribe."""

    request_id: Any
    method: str


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """A request the state machine refused; ``reply`` carries the JSON-RPC error."""

    request_id: Any
    code: StratumErrorCode
    detail: str


# --- client side ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribeResult(Event):
    request_id: Any
    extranonce1: bytes
    extranonce2_size: int


@dataclass(frozen=True, slots=True)
class AuthorizeResult(Event):
    request_id: Any
    authorized: bool
    error: Any


@dataclass(frozen=True, slots=True)
class SubmitResult(Event):
    """``accepted``, or ``error_code`` / ``error_message`` from ``[code, "message", null]``."""

    request_id: Any
    accepted: bool
    error_code: int | None
    error_message: str


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """A response to a request of another kind (or one we do not track)."""

    request_id: Any
    result: Any
    error: Any


@dataclass(frozen=True, slots=True)
class TargetSet(Event):
    target: int


@dataclass(frozen=True, slots=True)
class JobNotified(Event):
    job_id: str
    pow_hash: bytes
    height: int
    parent_hash: bytes | None  # None for the 4-parameter form
    clean: bool


@dataclass(frozen=True, slots=True)
class UnknownNotification(Event):
    method: str
    params: Any
