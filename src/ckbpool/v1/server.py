"""The pool's (or proxy's) end of a CKB Stratum V1 connection, sans-IO: bytes in, events out.

States::

    CONNECTED --mining.subscribe--> SUBSCRIBING --accept_subscribe()--> SUBSCRIBED
    any --line over the limit / too many bad requests--> CLOSED

Authorization is orthogonal: ``accept_authorize`` adds a username (a connection may authorize several
workers); a submit must name one of them. The session is *ready* to mine once it is SUBSCRIBED and has an
authorized worker: then the caller sends ``set_target`` and the current ``mining.notify``.

What the state machine answers by itself (the reply travels in the event):

=============================================  =================================================
miner does                                     answer
=============================================  =================================================
a line that is not a JSON object with a        error 26 Illegal method
string ``method``; an unknown method
params that are not a list / wrong types       error 27 Illegal params
subscribe twice                                error 20 Not supported
authorize before subscribe                     error 25 Not subscribed
authorize with no / empty / overlong username  error 29 Invalid username
submit before the subscription is answered     error 25 Not subscribed
submit with no authorized worker, or for a     error 24 Unauthorized worker
worker that was not authorized
submit with extranonce2 not hex, or not        error 27 Illegal params
exactly extranonce2_size bytes
mining.extranonce.subscribe                    ``true`` (dialect option: error 20)
a line over ``max_line_bytes``                 close (ConnectionClosed)
more than ``max_bad_requests`` refusals in a   close (ConnectionClosed)
row
=============================================  =================================================

Share judgement (job known, stale, duplicate, target) is the caller's: :class:`ShareSubmitted` carries the
decoded extranonce2, and the caller answers with ``accept_share`` or ``reject``.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from ckbpool.v1.dialect import (
    CKB_DIALECT,
    METHOD_AUTHORIZE,
    METHOD_EXTRANONCE_SUBSCRIBE,
    METHOD_SUBMIT,
    METHOD_SUBSCRIBE,
    Dialect,
    check_extranonce_sizes,
)
from ckbpool.v1.errors import StratumErrorCode, V1LocalProtocolError
from ckbpool.v1.events import (
    Answered,
    AuthorizeRequested,
    ConnectionClosed,
    Event,
    Rejected,
    ShareSubmitted,
    SubscribeRequested,
)
from ckbpool.v1.lines import DEFAULT_MAX_LINE_BYTES, LineBuffer, LineTooLong

__all__ = ["MAX_USERNAME_LENGTH", "ServerSession", "SessionState"]

MAX_USERNAME_LENGTH = 256
MAX_AGENT_LENGTH = 64


class SessionState(enum.Enum):
    CONNECTED = "connected"
    SUBSCRIBING = "subscribing"
    SUBSCRIBED = "subscribed"
    CLOSED = "closed"


def _short(value: object, limit: int = 64) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class ServerSession:
    """One miner connection, server side."""

    def __init__(
        self,
        *,
        dialect: Dialect = CKB_DIALECT,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_bad_requests: int = 32,
    ) -> None:
        self.dialect = dialect
        self.state = SessionState.CONNECTED
        self.agent = ""
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.authorized: set[str] = set()
        self.target: int | None = None
        self.max_bad_requests = max_bad_requests
        self._bad_in_a_row = 0
        self._lines = LineBuffer(max_line_bytes)
        self._subscribe_id: Any = None

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    @property
    def subscribed(self) -> bool:
        return self.state is SessionState.SUBSCRIBED

    @property
    def ready(self) -> bool:
        """Subscribed and at least one worker authorized: send it a target and work."""
        return self.state is SessionState.SUBSCRIBED and bool(self.authorized)

    # --- input -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes as they arrive (any split); returns the events of every completed line."""
        if self.state is SessionState.CLOSED:
            return []
        try:
            lines = self._lines.feed(data)
        except LineTooLong as exc:
            return [self._close(str(exc))]
        events: list[Event] = []
        for line in lines:
            event = self._receive_line(line)
            events.append(event)
            if isinstance(event, Rejected):
                self._bad_in_a_row += 1
                if self._bad_in_a_row > self.max_bad_requests:
                    events.append(self._close(f"more than {self.max_bad_requests} bad requests in a row"))
                    break
            else:
                self._bad_in_a_row = 0
        return events

    def _receive_line(self, line: bytes) -> Event:
        try:
            request = json.loads(line)
        except ValueError:  # also UnicodeDecodeError
            return self._refuse(None, StratumErrorCode.ILLEGAL_METHOD, "malformed JSON")
        if type(request) is not dict:
            return self._refuse(None, StratumErrorCode.ILLEGAL_METHOD, "not a JSON object")
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", [])
        if type(method) is not str:
            return self._refuse(request_id, StratumErrorCode.ILLEGAL_METHOD, "no method")
        if type(params) is not list:
            return self._refuse(request_id, StratumErrorCode.ILLEGAL_PARAMS, "params must be a list")
        if method == METHOD_SUBMIT:
            return self._on_submit(request_id, params)
        if method == METHOD_SUBSCRIBE:
            return self._on_subscribe(request_id, params)
        if method == METHOD_AUTHORIZE:
            return self._on_authorize(request_id, params)
        if method == METHOD_EXTRANONCE_SUBSCRIBE:
            if self.dialect.extranonce_subscribe:
                return Answered(request_id, method, reply=self.dialect.result_true(request_id))
            return self._refuse(request_id, StratumErrorCode.NOT_SUPPORTED, method)
        return self._refuse(request_id, StratumErrorCode.ILLEGAL_METHOD, _short(method))

    def _on_subscribe(self, request_id: Any, params: list[Any]) -> Event:
        if self.state is not SessionState.CONNECTED:
            return self._refuse(request_id, StratumErrorCode.NOT_SUPPORTED, "already subscribed")
        agent = params[0] if params and type(params[0]) is str else ""
        self.agent = agent[:MAX_AGENT_LENGTH]
        self.state = SessionState.SUBSCRIBING
        self._subscribe_id = request_id
        return SubscribeRequested(request_id, self.agent)

    def _on_authorize(self, request_id: Any, params: list[Any]) -> Event:
        if self.state is SessionState.CONNECTED:
            return self._refuse(request_id, StratumErrorCode.NOT_SUBSCRIBED)
        username = params[0] if params else None
        if type(username) is not str or not username.strip():
            return self._refuse(request_id, StratumErrorCode.INVALID_USERNAME)
        if len(username) > MAX_USERNAME_LENGTH:
            return self._refuse(request_id, StratumErrorCode.INVALID_USERNAME, f"over {MAX_USERNAME_LENGTH} characters")
        password = params[1] if len(params) > 1 and type(params[1]) is str else ""
        return AuthorizeRequested(request_id, username, password)

    def _on_submit(self, request_id: Any, params: list[Any]) -> Event:
        if self.state is not SessionState.SUBSCRIBED:
            return self._refuse(request_id, StratumErrorCode.NOT_SUBSCRIBED)
        if not self.authorized:
            return self._refuse(request_id, StratumErrorCode.UNAUTHORIZED)
        if len(params) < 3:
            return self._refuse(request_id, StratumErrorCode.ILLEGAL_PARAMS, "expected [worker, job_id, extranonce2]")
        username, job_id, extranonce2_hex = params[0], params[1], params[2]
        if type(username) is not str or type(job_id) is not str or type(extranonce2_hex) is not str:
            return self._refuse(request_id, StratumErrorCode.ILLEGAL_PARAMS, "worker, job_id, extranonce2 are strings")
        if username not in self.authorized:
            return self._refuse(request_id, StratumErrorCode.UNAUTHORIZED, _short(username))
        size = self.extranonce2_size
        try:
            extranonce2 = bytes.fromhex(extranonce2_hex)
        except ValueError:
            extranonce2 = b""
        # fromhex skips whitespace, so the byte count alone is not enough: 2 digits a byte, nothing else
        if len(extranonce2) != size or len(extranonce2_hex) != 2 * size:
            return self._refuse(
                request_id, StratumErrorCode.ILLEGAL_PARAMS, f"extranonce2 must be {size} bytes ({2 * size} hex digits)"
            )
        return ShareSubmitted(request_id, username, job_id, extranonce2)

    def _refuse(self, request_id: Any, code: StratumErrorCode, detail: str = "") -> Rejected:
        return Rejected(request_id, code, detail, reply=self.dialect.error(request_id, code, detail))

    def _close(self, reason: str) -> ConnectionClosed:
        self.state = SessionState.CLOSED
        return ConnectionClosed(reason)

    # --- output ----------------------------------------------------------------------------------

    def accept_subscribe(self, request_id: Any, extranonce1: bytes, extranonce2_size: int) -> bytes:
        """Answer the pending subscribe: this connection's extranonce1 and the extranonce2 size."""
        if self.state is not SessionState.SUBSCRIBING:
            raise V1LocalProtocolError(f"no subscribe is waiting for an answer (state {self.state.value})")
        check_extranonce_sizes(len(extranonce1), extranonce2_size)
        self.extranonce1 = bytes(extranonce1)
        self.extranonce2_size = extranonce2_size
        self.state = SessionState.SUBSCRIBED
        return self.dialect.subscribe_result(request_id, self.extranonce1, extranonce2_size)

    @property
    def pending_subscribe_id(self) -> Any:
        """The id of the subscribe waiting for ``accept_subscribe`` (state SUBSCRIBING)."""
        if self.state is not SessionState.SUBSCRIBING:
            raise V1LocalProtocolError("no subscribe is waiting for an answer")
        return self._subscribe_id

    def accept_authorize(self, request_id: Any, username: str) -> bytes:
        if self.state in (SessionState.CONNECTED, SessionState.CLOSED):
            raise V1LocalProtocolError("authorize needs a subscription")
        self.authorized.add(username)
        return self.dialect.result_true(request_id)

    def accept_share(self, request_id: Any) -> bytes:
        return self.dialect.result_true(request_id)

    def reject(self, request_id: Any, code: StratumErrorCode, detail: str = "") -> bytes:
        """A JSON-RPC error for any request (a refused authorize, a share the caller judged bad, ...)."""
        return self.dialect.error(request_id, code, detail)

    def set_target(self, target: int) -> bytes:
        """mining.set_target; remembered as the session's current share target."""
        if self.state is not SessionState.SUBSCRIBED:
            raise V1LocalProtocolError("set_target needs an answered subscription")
        line = self.dialect.set_target(target)
        self.target = target
        return line

    def nonce16(self, extranonce2: bytes) -> bytes:
        """The Eaglesong input's last 16 bytes for a share: extranonce1 || extranonce2."""
        return self.extranonce1 + extranonce2
