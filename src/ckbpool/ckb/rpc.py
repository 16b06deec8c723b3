"""Async JSON-RPC client of the ckb node, plus the new-tip subscription.

Transport failures are retried with backoff (a pool must ride through node restarts); errors the node returns
are not retried and are raised with the method name and the node's own message, because they say something
about the request (an invalid block) rather than the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ..retry import Backoff, retry
from .errors import BlockRejected, MalformedError, NodeUnavailable, RpcError
from .jsonhex import parse_bytes
from .structures import Block, Header
from .template import BlockTemplate

if TYPE_CHECKING:
    from ..pool.config import NodeSettings

log = logging.getLogger(__name__)

#: the method the RPC filter (ckbpool.rpcfilter) takes as the first line of a TCP subscription when it requires a
#: token; never forwarded to the node
AUTH_METHOD = "ckbpool_auth"

_ids = itertools.count(1)


_TRANSPORT_ERRORS = (httpx.TransportError, httpx.HTTPStatusError, json.JSONDecodeError)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def tls_client_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client TLS context that verifies the server (hostname included) against ``ca_file`` -- the deployment
    CA that signed the RPC filter's certificate -- or the system store; with ``cert_file``/``key_file`` it also
    presents a client certificate (the filter's optional mutual TLS)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


@dataclass(frozen=True)
class NodeTransport:
    """How to reach the node when it sits behind the RPC filter: TLS context (None = plaintext, the node itself)
    and the bearer token the filter may require. One value serves the HTTP client and the TCP subscription."""

    tls: ssl.SSLContext | None = None
    token: str | None = None

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> NodeTransport:
        """TLS when ``rpc_url`` is https:// (the subscription then uses TLS too: the filter serves both);
        the token read from ``token_file`` now."""
        tls = None
        if urlsplit(settings.rpc_url).scheme == "https":
            tls = tls_client_context(settings.ca_file, settings.client_cert_file, settings.client_key_file)
        token = settings.token_file.read_text().strip() if settings.token_file is not None else None
        return cls(tls, token or None)


class CkbRpcClient:
    """One node's HTTP JSON-RPC endpoint. Safe to share between tasks; reuses one connection pool.

    ``https://`` URLs (the RPC filter in front of a node on another host) are verified against ``ca_file`` or
    ``transport.tls``; a ``token`` is sent as ``Authorization: Bearer``, and only over TLS: a token in clear
    would be a password anyone on the path could replay."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        ca_file: Path | None = None,
        token: str | None = None,
        transport: NodeTransport | None = None,
    ) -> None:
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        https = urlsplit(url).scheme == "https"
        tls = transport.tls if transport is not None else None
        token = token if token is not None else (transport.token if transport is not None else None)
        if not https and (ca_file is not None or tls is not None or token is not None):
            raise ValueError(f"{url}: a CA file, TLS settings or a token need an https:// URL")
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = True
        if https:
            verify = tls if tls is not None else tls_client_context(ca_file)
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers, verify=verify)

    @classmethod
    def from_settings(cls, settings: NodeSettings, **kwargs: Any) -> CkbRpcClient:
        """The client ``[node]`` describes: its URL and timeout, TLS and token when it goes through the filter."""
        kwargs.setdefault("timeout", settings.rpc_timeout_s)
        return cls(settings.rpc_url, transport=NodeTransport.from_settings(settings), **kwargs)

    async def __aenter__(self) -> CkbRpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, params: Sequence[Any] = (), *, retries: int | None = None) -> Any:
        """Call ``method``; retry transport failures ``retries`` times, raise RpcError for node errors."""
        attempts = (self.retries if retries is None else retries) + 1
        body = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}
        policy = Backoff(initial=self.backoff, maximum=self.max_backoff, jitter=self.backoff / 2, attempts=attempts)

        async def post() -> Any:
            response = await self._client.post(self.url, content=json.dumps(body))
            response.raise_for_status()
            return response.json()

        def failed(exc: Exception) -> bool:
            if not isinstance(exc, _TRANSPORT_ERRORS):
                return False
            log.warning("ckb RPC %s failed (%s)", method, _describe(exc))
            return True

        try:
            reply = await retry(post, on=failed, policy=policy)
        except _TRANSPORT_ERRORS as exc:
            raise NodeUnavailable(method, self.url, _describe(exc)) from exc
        if not isinstance(reply, dict):
            raise RpcError(method, -32700, f"unexpected reply {str(reply)[:200]}")
        error = reply.get("error")
        if error is not None:
            code = int(error.get("code", 0)) if isinstance(error, dict) else 0
            message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
            data = error.get("data") if isinstance(error, dict) else None
            cls = BlockRejected if method == "submit_block" else RpcError
            raise cls(method, code, message, data)
        return reply.get("result")

    async def get_block_template_json(
        self,
        bytes_limit: int | None = None,
        proposals_limit: int | None = None,
        max_version: int | None = None,
    ) -> dict[str, Any]:
        params = [None if v is None else hex(v) for v in (bytes_limit, proposals_limit, max_version)]
        result = await self.call("get_block_template", params)
        if not isinstance(result, dict):
            raise MalformedError("get_block_template", f"expected an object, got {type(result).__name__}")
        return result

    async def get_block_template(self) -> BlockTemplate:
        """Fetch and parse a template; a malformed one raises MalformedError naming the field."""
        return BlockTemplate.from_json(await self.get_block_template_json())

    async def submit_block(self, work_id: int | str, block: Block | dict[str, Any]) -> bytes:
        """Submit a block; returns its hash. Refusals raise BlockRejected with the node's reason."""
        block_json = block.to_json() if isinstance(block, Block) else block
        result = await self.call("submit_block", [str(work_id), block_json])
        return parse_bytes(result, "submit_block.result", 32)

    async def get_tip_header(self) -> Header:
        return Header.from_json(await self.call("get_tip_header"), "get_tip_header")

    async def get_tip_block_number(self) -> int:
        return int(await self.call("get_tip_block_number"), 16)

    async def get_blockchain_info(self) -> dict[str, Any]:
        result = await self.call("get_blockchain_info")
        assert isinstance(result, dict)
        return result

    async def get_consensus(self) -> dict[str, Any]:
        result = await self.call("get_consensus")
        assert isinstance(result, dict)
        return result

    async def get_block(self, block_hash: bytes) -> dict[str, Any] | None:
        result = await self.call("get_block", ["0x" + block_hash.hex()])
        return result if isinstance(result, dict) else None

    async def get_block_by_number(self, number: int) -> dict[str, Any] | None:
        result = await self.call("get_block_by_number", [hex(number)])
        return result if isinstance(result, dict) else None

    async def get_header(self, block_hash: bytes) -> dict[str, Any] | None:
        result = await self.call("get_header", ["0x" + block_hash.hex()])
        return result if isinstance(result, dict) else None

    async def wait_ready(
        self, timeout: float = 60.0, interval: float = 0.2, *, check: Callable[[], None] | None = None
    ) -> None:
        """Wait until the node answers RPC (used right after starting a node). ``check`` runs before each try
        and raises to give up early, e.g. when the node's process has already exited."""
        # a poll at a fixed interval (no growth: a starting node answers within seconds), bounded by ``timeout``
        policy = Backoff(initial=interval, maximum=interval, jitter=0.0, timeout=timeout)

        async def probe() -> None:
            if check is not None:
                check()
            await self.call("get_tip_block_number", retries=0)

        try:
            await retry(probe, on=NodeUnavailable, policy=policy, what=f"{self.url} ready")
        except NodeUnavailable as exc:
            raise NodeUnavailable("wait_ready", self.url, f"no answer within {timeout:.0f}s") from exc


async def subscribe_new_tip(
    host: str,
    port: int,
    *,
    backoff: float = 0.2,
    max_backoff: float = 5.0,
    max_line: int = 1 << 20,
    transport: NodeTransport | None = None,
) -> AsyncIterator[Header]:
    """Yield each new tip header pushed by the node's TCP RPC; reconnect with backoff forever.

    The caller polls as a fallback: a push can be missed across a reconnect. Through the RPC filter
    (``transport``): TLS, and the token as a first ``ckbpool_auth`` line that the filter consumes.
    """
    policy = Backoff(initial=backoff, maximum=max_backoff, jitter=backoff / 2)
    tls = transport.tls if transport is not None else None
    token = transport.token if transport is not None else None
    if token is not None and tls is None:
        raise ValueError("a subscription token needs TLS (it would travel in clear)")

    async def subscribe() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(host, port, limit=max_line, ssl=tls)
        try:
            if token is not None:
                auth = {"jsonrpc": "2.0", "id": next(_ids), "method": AUTH_METHOD, "params": [token]}
                writer.write(json.dumps(auth).encode() + b"\n")
            request = {"jsonrpc": "2.0", "id": next(_ids), "method": "subscribe", "params": ["new_tip_header"]}
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
        except BaseException:
            writer.close()
            raise
        return reader, writer

    def failed(exc: Exception) -> bool:
        if not isinstance(exc, OSError):
            return False
        log.warning("new_tip subscription to %s:%d: cannot connect (%s); retrying", host, port, exc)
        return True

    while True:
        writer: asyncio.StreamWriter | None = None
        try:
            # reconnects back off through ckbpool.retry; a connection that was up starts the backoff over
            reader, writer = await retry(subscribe, on=failed, policy=policy, what="new_tip subscription")
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("subscription closed by the node")
                header = _parse_push(line)
                if header is not None:
                    yield header
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("new_tip subscription to %s:%d lost (%s); reconnecting", host, port, exc)
            await asyncio.sleep(backoff)  # not a hot loop when a node accepts and drops at once
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def _parse_push(line: bytes) -> Header | None:
    """Decode one subscription line; the subscribe acknowledgement and unrelated lines yield None."""
    try:
        message = json.loads(line)
    except json.JSONDecodeError:
        log.warning("ignoring undecodable line from the node: %r", line[:200])
        return None
    if not isinstance(message, dict) or message.get("method") != "subscribe":
        return None
    params = message.get("params")
    result = params.get("result") if isinstance(params, dict) else None
    if isinstance(result, str):
        result = json.loads(result)
    if not isinstance(result, dict):
        return None
    try:
        return Header.from_json(result, "new_tip_header")
    except MalformedError as exc:
        log.warning("ignoring malformed new_tip_header push: %s", exc)
        return None
