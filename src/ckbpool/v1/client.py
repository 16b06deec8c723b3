"""The miner's end of a CKB Stratum V1 connection, sans-IO (for the CPU test miner and the tests).

Requests are built with increasing integer ids; responses are matched to them by id and reported as typed
events (:class:`SubscribeResult`, :class:`AuthorizeResult`, :class:`SubmitResult`); notifications become
:class:`TargetSet` and :class:`JobNotified`. The parser is strict about the shapes in ``dialect.py``: a server
line that breaks them ends the session (:class:`ConnectionClosed`), because mining on misread work is worse
than reconnecting.
"""

from __future__ import annotations

import json
from typing import Any

from ckbpool.v1.dialect import (
    METHOD_AUTHORIZE,
    METHOD_NOTIFY,
    METHOD_SET_TARGET,
    METHOD_SUBMIT,
    METHOD_SUBSCRIBE,
)
from ckbpool.v1.events import (
    AuthorizeResult,
    ConnectionClosed,
    Event,
    JobNotified,
    ResponseReceived,
    SubmitResult,
    SubscribeResult,
    TargetSet,
    UnknownNotification,
)
from ckbpool.v1.lines import LineBuffer, LineTooLong

__all__ = ["ClientSession"]

_MAX_SERVER_LINE = 1 << 20


class ClientSession:
    """One connection to a V1 server, miner side."""

    def __init__(self, *, max_line_bytes: int = _MAX_SERVER_LINE) -> None:
        self._lines = LineBuffer(max_line_bytes)
        self._next_id = 1
        self.pending: dict[int, str] = {}
        self.closed = False
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.target: int | None = None

    # --- output ----------------------------------------------------------------------------------

    def _request(self, method: str, params: list[Any]) -> tuple[int, bytes]:
        request_id = self._next_id
        self._next_id += 1
        self.pending[request_id] = method
        line = json.dumps({"id": request_id, "method": method, "params": params}, separators=(",", ":"))
        return request_id, line.encode() + b"\n"

    def subscribe(self, agent: str, host: str | None = None, port: int | None = None) -> bytes:
        params: list[Any] = [agent, None]
        if host is not None:
            params += [host, str(port) if port is not None else None]
        return self._request(METHOD_SUBSCRIBE, params)[1]

    def authorize(self, username: str, password: str = "x") -> bytes:
        return self._request(METHOD_AUTHORIZE, [username, password])[1]

    def submit(self, username: str, job_id: str, extranonce2: bytes) -> tuple[int, bytes]:
        """A mining.submit; returns its request id (to match the :class:`SubmitResult`) and the line."""
        return self._request(METHOD_SUBMIT, [username, job_id, extranonce2.hex()])

    # --- input -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        try:
            lines = self._lines.feed(data)
        except LineTooLong as exc:
            return [self._close(str(exc))]
        events: list[Event] = []
        for line in lines:
            try:
                events.append(self._receive_line(line))
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                events.append(self._close(f"unreadable server line {line[:120]!r}: {exc}"))
                break
        return events

    def _close(self, reason: str) -> ConnectionClosed:
        self.closed = True
        return ConnectionClosed(reason)

    def _receive_line(self, line: bytes) -> Event:
        message = json.loads(line)
        if type(message) is not dict:
            raise ValueError("not a JSON object")
        method = message.get("method")
        if method is not None:
            return self._notification(method, message.get("params"))
        request_id = message.get("id")
        result, error = message.get("result"), message.get("error")
        kind = self.pending.pop(request_id, None) if type(request_id) is int else None
        if kind == METHOD_SUBMIT:
            if result is True and error is None:
                return SubmitResult(request_id, True, None, "")
            code, text = (error[0], str(error[1])) if isinstance(error, list) and len(error) >= 2 else (None, "")
            return SubmitResult(request_id, False, code if type(code) is int else None, text)
        if kind == METHOD_SUBSCRIBE:
            if error is not None or not isinstance(result, list) or len(result) < 3:
                raise ValueError(f"subscribe failed: {error!r}")
            extranonce1 = bytes.fromhex(result[1])
            size = result[2]
            if type(size) is not int or len(extranonce1) + size != 16:
                raise ValueError(f"subscribe result {result!r} does not split a 16-byte nonce")
            self.extranonce1, self.extranonce2_size = extranonce1, size
            return SubscribeResult(request_id, extranonce1, size)
        if kind == METHOD_AUTHORIZE:
            return AuthorizeResult(request_id, result is True and error is None, error)
        return ResponseReceived(request_id, result, error)

    def _notification(self, method: str, params: Any) -> Event:
        if method == METHOD_SET_TARGET:
            text = params[0]
            if type(text) is not str or len(text) != 64:
                raise ValueError("set_target needs 64 hex digits")
            self.target = int(text, 16)
            return TargetSet(self.target)
        if method == METHOD_NOTIFY:
            if not isinstance(params, list) or len(params) not in (4, 5):
                raise ValueError("notify needs 4 or 5 params")
            job_id, pow_hash_hex, height = params[0], params[1], params[2]
            parent = bytes.fromhex(params[3]) if len(params) == 5 else None
            clean = params[-1]
            pow_hash = bytes.fromhex(pow_hash_hex)
            if type(job_id) is not str or len(pow_hash) != 32 or type(height) is not int or type(clean) is not bool:
                raise ValueError(f"malformed notify {params!r}")
            if parent is not None and len(parent) != 32:
                raise ValueError("parent_hash is 32 bytes")
            return JobNotified(job_id, pow_hash, height, parent, clean)
        return UnknownNotification(method, params)
