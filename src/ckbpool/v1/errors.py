"""Errors of CKB Stratum V1: the JSON-RPC error codes on the wire, and the library's exceptions.

The codes are btcpool's (the CKB pools' lingua franca, ``../shared/design/protocols.md``); an error goes on the
wire as ``"error":[code,"message",null]`` with ``"result":null``. The message is the fixed btcpool text, with a
short detail appended after ``": "`` when it helps an operator reading a miner's log (never parsed by firmware).
"""

from __future__ import annotations

import enum

__all__ = [
    "ERROR_MESSAGES",
    "StratumErrorCode",
    "V1Error",
    "V1LocalProtocolError",
    "error_message",
]


class StratumErrorCode(enum.IntEnum):
    """btcpool's Stratum status codes as CKB pools send them."""

    NOT_SUPPORTED = 20
    JOB_NOT_FOUND = 21  # also "stale": the job is unknown, or of an older height, or the upstream is away
    DUPLICATE_SHARE = 22
    LOW_DIFFICULTY = 23
    UNAUTHORIZED = 24
    NOT_SUBSCRIBED = 25
    ILLEGAL_METHOD = 26
    ILLEGAL_PARAMS = 27
    INVALID_USERNAME = 29
    INTERNAL_ERROR = 30


ERROR_MESSAGES: dict[StratumErrorCode, str] = {
    StratumErrorCode.NOT_SUPPORTED: "Not supported",
    StratumErrorCode.JOB_NOT_FOUND: "Job not found (=stale)",
    StratumErrorCode.DUPLICATE_SHARE: "Duplicate share",
    StratumErrorCode.LOW_DIFFICULTY: "Low difficulty",
    StratumErrorCode.UNAUTHORIZED: "Unauthorized worker",
    StratumErrorCode.NOT_SUBSCRIBED: "Not subscribed",
    StratumErrorCode.ILLEGAL_METHOD: "Illegal method",
    StratumErrorCode.ILLEGAL_PARAMS: "Illegal params",
    StratumErrorCode.INVALID_USERNAME: "Invalid username",
    StratumErrorCode.INTERNAL_ERROR: "Internal error",
}


def error_message(code: StratumErrorCode, detail: str = "") -> str:
    """The wire message of ``code``: btcpool's text, plus ``": detail"`` when given."""
    base = ERROR_MESSAGES[code]
    return f"{base}: {detail}" if detail else base


class V1Error(Exception):
    """Base class of every exception raised by ``ckbpool.v1``."""


class V1LocalProtocolError(V1Error):
    """We tried to send something the session's state forbids (a bug in the caller, never the peer's fault)."""
