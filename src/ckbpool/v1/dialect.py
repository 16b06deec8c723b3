"""The CKB Stratum V1 dialect, in one place: every byte a server sends and every shape it accepts.

Newline-delimited JSON-RPC 1.0 over TCP, as CKB ASICs and btcpool/UUPool speak it (``protocols.md``). Server
lines are compact JSON (no spaces), keys in the order shown, hex lowercase without ``0x``, one ``\\n`` at the end::

    {"id":1,"result":[null,"00c904bd",12],"error":null}                          subscribe result
    {"id":2,"result":true,"error":null}                                          authorize / submit accepted
    {"id":3,"result":null,"error":[23,"Low difficulty",null]}                    any error
    {"id":null,"method":"mining.set_target","params":["0001000000...00"]}        64 hex digits, big-endian
    {"id":null,"method":"mining.notify","params":["1a2b","<pow_hash>",1234,"<parent_hash>",true]}

Miner requests: ``mining.subscribe [agent, null]`` (or ``[agent, null, host, port]``, or fewer),
``mining.authorize [user.worker, password]``, ``mining.submit [user.worker, job_id, extranonce2]``,
``mining.extranonce.subscribe []``. Request ids are echoed unchanged.

The nonce: ``nonce16 = extranonce1 || extranonce2`` (16 bytes) follows pow_hash in the Eaglesong input; the
header's u128 nonce is its little-endian reading. Firmware constraints seen in the field: extranonce2_size within
4..15 and ``len(extranonce1) + extranonce2_size == 16``; the CKB profile of SV2 further needs extranonce2_size
>= 8 (the SV2 ``version || nonce`` fields are the last 8 bytes). Variants reported but unconfirmed (a nested
Bitcoin-style subscribe result, ``set_difficulty``, 8+8 splits) would be a different :class:`Dialect`; the sizes
are the operator's choice through the proxy config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ckbpool.v1.errors import StratumErrorCode, error_message

__all__ = [
    "CKB_DIALECT",
    "EXTRANONCE2_MAX",
    "EXTRANONCE2_MIN",
    "METHOD_AUTHORIZE",
    "METHOD_EXTRANONCE_SUBSCRIBE",
    "METHOD_NOTIFY",
    "METHOD_SET_TARGET",
    "METHOD_SUBMIT",
    "METHOD_SUBSCRIBE",
    "NONCE_SIZE",
    "PROFILE_EXTRANONCE2_MIN",
    "Dialect",
    "check_extranonce_sizes",
    "encode_id",
    "format_job_id",
    "parse_job_id",
    "target_hex",
]

METHOD_SUBSCRIBE = "mining.subscribe"
METHOD_AUTHORIZE = "mining.authorize"
METHOD_SUBMIT = "mining.submit"
METHOD_EXTRANONCE_SUBSCRIBE = "mining.extranonce.subscribe"
METHOD_SET_TARGET = "mining.set_target"
METHOD_NOTIFY = "mining.notify"

NONCE_SIZE = 16
#: extranonce2 sizes CKB ASIC firmware accepts.
EXTRANONCE2_MIN = 4
EXTRANONCE2_MAX = 15
#: Behind an SV2 pool (CKB profile), extranonce2 ends with the share's version || nonce (4 + 4 bytes).
PROFILE_EXTRANONCE2_MIN = 8

_U256_MAX = (1 << 256) - 1


def check_extranonce_sizes(extranonce1_size: int, extranonce2_size: int) -> None:
    """Raise ValueError unless the sizes fit the firmware constraints (sum 16, extranonce2 in 4..15)."""
    if extranonce1_size + extranonce2_size != NONCE_SIZE:
        raise ValueError(f"extranonce1 ({extranonce1_size}) + extranonce2 ({extranonce2_size}) must be {NONCE_SIZE}")
    if not EXTRANONCE2_MIN <= extranonce2_size <= EXTRANONCE2_MAX:
        raise ValueError(f"extranonce2_size must be {EXTRANONCE2_MIN}..{EXTRANONCE2_MAX}, got {extranonce2_size}")


def target_hex(target: int) -> str:
    """A share target as mining.set_target carries it: 64 lowercase hex digits, big-endian, no 0x."""
    if not 0 < target <= _U256_MAX:
        raise ValueError("a target is a positive 256-bit number")
    return f"{target:064x}"


def format_job_id(job_id: int) -> str:
    """Job ids on the wire: lowercase hex without padding or 0x (btcpool prints its u64 ids with %PRIx64)."""
    if job_id < 0:
        raise ValueError("job ids are non-negative")
    return f"{job_id:x}"


def parse_job_id(text: str) -> int | None:
    """The number behind a job id string, or None if it is not one we could have sent."""
    if not 0 < len(text) <= 16:
        return None
    try:
        return int(text, 16)
    except ValueError:
        return None


def encode_id(request_id: Any) -> bytes:
    """A request id as it goes back on the wire (JSON), echoed unchanged; ints take the fast path."""
    if type(request_id) is int:
        return str(request_id).encode()
    return json.dumps(request_id, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Dialect:
    """How this server speaks. The defaults are the CKB dialect of protocols.md.

    ``notify_parent_hash``: send the 5-parameter notify (with parent_hash); some firmware also takes the
    4-parameter form without it. ``extranonce_subscribe``: answer ``mining.extranonce.subscribe`` with ``true``
    (we never send ``mining.set_extranonce``: an answer is all such miners wait for) or, if False, with error 20.
    """

    notify_parent_hash: bool = True
    extranonce_subscribe: bool = True

    # --- responses -------------------------------------------------------------------------------

    @staticmethod
    def result_true(request_id: Any) -> bytes:
        return b'{"id":' + encode_id(request_id) + b',"result":true,"error":null}\n'

    @staticmethod
    def subscribe_result(request_id: Any, extranonce1: bytes, extranonce2_size: int) -> bytes:
        return (
            b'{"id":'
            + encode_id(request_id)
            + b',"result":[null,"'
            + extranonce1.hex().encode()
            + b'",'
            + str(extranonce2_size).encode()
            + b'],"error":null}\n'
        )

    @staticmethod
    def error(request_id: Any, code: StratumErrorCode, detail: str = "") -> bytes:
        message = json.dumps(error_message(code, detail), ensure_ascii=True)
        return (
            b'{"id":'
            + encode_id(request_id)
            + b',"result":null,"error":['
            + str(int(code)).encode()
            + b","
            + message.encode()
            + b",null]}\n"
        )

    # --- notifications ---------------------------------------------------------------------------

    @staticmethod
    def set_target(target: int) -> bytes:
        return b'{"id":null,"method":"mining.set_target","params":["' + target_hex(target).encode() + b'"]}\n'

    def notify(self, job_id: int, pow_hash: bytes, height: int, parent_hash: bytes, clean: bool) -> bytes:
        if len(pow_hash) != 32 or len(parent_hash) != 32:
            raise ValueError("pow_hash and parent_hash are 32 bytes")
        if height < 0:
            raise ValueError("height is non-negative")
        parts = [
            b'{"id":null,"method":"mining.notify","params":["',
            format_job_id(job_id).encode(),
            b'","',
            pow_hash.hex().encode(),
            b'",',
            str(height).encode(),
        ]
        if self.notify_parent_hash:
            parts += [b',"', parent_hash.hex().encode(), b'"']
        parts += [b",true]}\n" if clean else b",false]}\n"]
        return b"".join(parts)


CKB_DIALECT = Dialect()
