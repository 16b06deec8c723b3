"""The filtering proxy: HTTPS JSON-RPC and a TLS subscription port in front of a ckb node.

HTTP: a request (or each request of a batch) whose ``method`` is on the allowlist is re-serialized from the parsed
JSON and forwarded to the node; anything else is answered here with a JSON-RPC error naming the method
(:data:`REFUSED_CODE`) and never reaches the node. Re-serializing, not forwarding the client's bytes, means the
node parses exactly what the filter checked (no duplicate-key or encoding tricks). Bodies over
``max_request_bytes`` are refused (413) before they are read.

TCP: after the optional token line, each client line must be ``subscribe`` to an allowed topic or
``unsubscribe``; the node's lines are passed back unchanged. The pool's :func:`ckbpool.ckb.rpc.subscribe_new_tip`
speaks this.

Auth: TLS always (the deployment CA's certificate); with ``client_ca_file`` clients must present a certificate
that CA signed; with ``token_file`` they must send the token (compared in constant time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import ssl
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..ckb.rpc import AUTH_METHOD
from .allowlist import ALLOWED_METHODS, ALLOWED_TOPICS, FAMILIES, is_allowed, method_family
from .config import RpcFilterConfig

log = logging.getLogger(__name__)

#: JSON-RPC error code of a method the filter refuses (the server-defined range; not -32601, which ckbpool reads
#: as "module disabled on the node")
REFUSED_CODE = -32050
REASONS = ("unauthorized", "too_large", "bad_request", "too_many_connections", "upstream")


class FilterMetrics:
    """Bounded labels only: the ckb module of a method (``unknown`` for invented names), never the name itself."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.requests_total = Counter(
            "ckbpool_rpcfilter_requests_total",
            "JSON-RPC calls seen by the node's RPC filter, by ckb module and outcome (allowed, refused)",
            ["family", "outcome"],
            registry=r,
        )
        self.rejected_total = Counter(
            "ckbpool_rpcfilter_rejected_total",
            "Requests or connections refused before any method was checked, by reason",
            ["reason"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "ckbpool_rpcfilter_subscriptions", "Open subscription connections through the filter", registry=r
        )
        for family in FAMILIES:
            for outcome in ("allowed", "refused"):
                self.requests_total.labels(family=family, outcome=outcome)
        for reason in REASONS:
            self.rejected_total.labels(reason=reason)


def server_tls_context(config: RpcFilterConfig) -> ssl.SSLContext:
    """TLS 1.2+ with the filter's certificate; client certificates required when ``client_ca_file`` is set."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    if config.client_ca_file is not None:
        context.load_verify_locations(cafile=str(config.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _refusal(request_id: Any, method: object) -> dict[str, Any]:
    shown = repr(method if not isinstance(method, str) else method[:64])
    return _error(request_id, REFUSED_CODE, f"method {shown} is not allowed by the ckbpool RPC filter")


class RpcFilter:
    """One filter: ``await start()``, then ``http_port`` / ``tcp_port`` are the bound ports; ``await close()``."""

    def __init__(self, config: RpcFilterConfig, *, metrics: FilterMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else FilterMetrics()
        self._token: bytes | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runners: list[web.AppRunner] = []
        self._tcp_server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.http_port = 0
        self.tcp_port: int | None = None
        self.metrics_port: int | None = None

    async def __aenter__(self) -> RpcFilter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        cfg = self.config
        token = cfg.token()
        self._token = token.encode() if token is not None else None
        tls = server_tls_context(cfg)  # a bad certificate or key stops the start, before anything listens
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=cfg.upstream_timeout_s),
            headers={"content-type": "application/json"},
        )
        app = web.Application(client_max_size=cfg.max_request_bytes)
        app.router.add_post("/", self._handle_http)
        self.http_port = await self._serve(app, cfg.listen_host, cfg.listen_port, tls)
        if cfg.tcp_listen_port is not None:
            self._tcp_server = await asyncio.start_server(
                self._accept_subscription, cfg.listen_host, cfg.tcp_listen_port, ssl=tls,
                limit=cfg.max_client_line_bytes,
            )  # fmt: skip
            self.tcp_port = self._tcp_server.sockets[0].getsockname()[1]
        if cfg.metrics_port is not None:
            metrics_app = web.Application()
            metrics_app.router.add_get("/metrics", self._handle_metrics)
            self.metrics_port = await self._serve(metrics_app, cfg.metrics_host, cfg.metrics_port, None)
        log.info(
            "RPC filter: https://%s:%d/ -> %s%s; %d methods allowed",
            cfg.listen_host, self.http_port, cfg.upstream_url,
            f", subscriptions on {self.tcp_port} -> {cfg.upstream_tcp}" if self.tcp_port else "",
            len(ALLOWED_METHODS),
        )  # fmt: skip

    async def _serve(self, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, ssl_context=tls)
        await site.start()
        return int(runner.addresses[0][1])  # one site per runner: its bound port (0 = the OS picked one)

    async def close(self) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)
        if self._tcp_server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp_server.wait_closed(), 5)
            self._tcp_server = None
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- HTTP ----------------------------------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if self._token is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), b"Bearer " + self._token)

    def _check(self, item: Any) -> dict[str, Any] | None:
        """None when ``item`` may go to the node, else the error to answer it with (counted either way)."""
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            self.metrics.requests_total.labels(family="unknown", outcome="refused").inc()
            request_id = item.get("id") if isinstance(item, dict) else None
            return _error(request_id, -32600, "invalid request: an object with a string method is expected")
        method = item["method"]
        family = method_family(method)
        if not is_allowed(method):
            self.metrics.requests_total.labels(family=family, outcome="refused").inc()
            log.warning("refused RPC method %r", method[:64])
            return _refusal(item.get("id"), method)
        self.metrics.requests_total.labels(family=family, outcome="allowed").inc()
        return None

    async def _handle_http(self, request: web.Request) -> web.Response:
        if not self._authorized(request.headers.get("authorization")):
            self.metrics.rejected_total.labels(reason="unauthorized").inc()
            return web.json_response(_error(None, -32000, "unauthorized"), status=401)
        if request.content_length is not None and request.content_length > self.config.max_request_bytes:
            self.metrics.rejected_total.labels(reason="too_large").inc()
            return web.json_response(_error(None, -32600, "request too large"), status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.metrics.rejected_total.labels(reason="too_large").inc()
            return web.json_response(_error(None, -32600, "request too large"), status=413)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self.metrics.rejected_total.labels(reason="bad_request").inc()
            return web.json_response(_error(None, -32700, "parse error"))
        if isinstance(payload, list):
            return await self._handle_batch(payload)
        refused = self._check(payload)
        if refused is not None:
            return web.json_response(refused)
        return await self._forward(payload)

    async def _handle_batch(self, batch: list[Any]) -> web.Response:
        if not batch or len(batch) > self.config.max_batch:
            self.metrics.rejected_total.labels(reason="bad_request").inc()
            message = "empty batch" if not batch else f"batch of {len(batch)} > {self.config.max_batch} requests"
            return web.json_response(_error(None, -32600, message))
        answers: list[Any] = []
        forward: list[Any] = []
        for item in batch:
            refused = self._check(item)
            if refused is None:
                forward.append(item)
            elif not (isinstance(item, dict) and "method" in item and "id" not in item):
                answers.append(refused)  # a refused notification (no id) gets no answer, as JSON-RPC says
        if forward:
            upstream = await self._forward(forward)
            if upstream.status != 200:
                return upstream
            assert upstream.body is not None and isinstance(upstream.body, bytes)
            replies = json.loads(upstream.body)
            answers.extend(replies if isinstance(replies, list) else [replies])
        return web.json_response(answers)

    async def _forward(self, payload: Any) -> web.Response:
        assert self._session is not None
        try:
            async with self._session.post(self.config.upstream_url, data=json.dumps(payload)) as reply:
                body = await reply.read()
                if reply.status == 200:
                    json.loads(body)  # the node's answer is JSON, or it is no answer
                return web.Response(body=body, status=reply.status, content_type="application/json")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.metrics.rejected_total.labels(reason="upstream").inc()
            log.warning("node RPC %s unavailable: %s", self.config.upstream_url, type(exc).__name__)
            request_id = payload.get("id") if isinstance(payload, dict) else None
            return web.json_response(_error(request_id, -32603, "node unavailable"), status=502)

    async def _handle_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"content-type": CONTENT_TYPE_LATEST})

    # --- TCP subscriptions ---------------------------------------------------------------------------------------

    async def _accept_subscription(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._handlers) >= self.config.max_subscriptions:
            self.metrics.rejected_total.labels(reason="too_many_connections").inc()
            writer.close()
            return
        self._handlers.add(task)
        self.metrics.subscriptions.inc()
        try:
            await self._subscription(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.info("subscription connection ended: %s", type(exc).__name__)
        except ValueError:  # a line over the limit (asyncio's LimitOverrunError surfaces as ValueError)
            self.metrics.rejected_total.labels(reason="too_large").inc()
        finally:
            self.metrics.subscriptions.dec()
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    @staticmethod
    def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
        writer.write(json.dumps(message).encode() + b"\n")

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if self._token is None:
            return True
        line = await asyncio.wait_for(reader.readline(), self.config.handshake_timeout_s)
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        ok = (
            isinstance(message, dict)
            and message.get("method") == AUTH_METHOD
            and isinstance(message.get("params"), list)
            and len(message["params"]) == 1
            and isinstance(message["params"][0], str)
            and hmac.compare_digest(message["params"][0].encode(), self._token)
        )
        request_id = message.get("id") if isinstance(message, dict) else None
        if not ok:
            self.metrics.rejected_total.labels(reason="unauthorized").inc()
            self._send(writer, _error(request_id, -32000, "unauthorized"))
            await writer.drain()
            return False
        self._send(writer, {"jsonrpc": "2.0", "id": request_id, "result": True})
        return True

    def _check_subscription(self, line: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(message to forward, None) or (None, error to answer)."""
        try:
            message = json.loads(line)
        except ValueError:
            self.metrics.rejected_total.labels(reason="bad_request").inc()
            return None, _error(None, -32700, "parse error")
        refused = self._check_topic(message)
        return (None, refused) if refused is not None else (message, None)

    def _check_topic(self, message: Any) -> dict[str, Any] | None:
        if not isinstance(message, dict):
            self.metrics.requests_total.labels(family="unknown", outcome="refused").inc()
            return _error(None, -32600, "invalid request")
        method, params = message.get("method"), message.get("params")
        allowed = method == "unsubscribe" or (
            method == "subscribe" and isinstance(params, list) and len(params) == 1 and params[0] in ALLOWED_TOPICS
        )
        family = method_family(method)
        self.metrics.requests_total.labels(family=family, outcome="allowed" if allowed else "refused").inc()
        if allowed:
            return None
        if method == "subscribe":
            return _error(message.get("id"), REFUSED_CODE, f"subscription topic {params!r:.80} is not allowed")
        return _refusal(message.get("id"), method)

    async def _subscription(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await self._authenticate(reader, writer):
            return
        host, port = self.config.upstream_tcp_address()
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=self.config.max_node_line_bytes),
                self.config.upstream_timeout_s,
            )
        except (OSError, TimeoutError):
            self.metrics.rejected_total.labels(reason="upstream").inc()
            self._send(writer, _error(None, -32603, "node unavailable"))
            await writer.drain()
            return

        async def downstream() -> None:
            while line := await up_reader.readline():
                writer.write(line)
                await writer.drain()

        async def upstream() -> None:
            while line := await reader.readline():
                message, refused = self._check_subscription(line)
                if message is not None:
                    up_writer.write(json.dumps(message).encode() + b"\n")
                    await up_writer.drain()
                elif refused is not None:
                    self._send(writer, refused)
                    await writer.drain()

        tasks = [asyncio.create_task(downstream()), asyncio.create_task(upstream())]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raise what ended it (logged by the caller)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            up_writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(up_writer.wait_closed(), 2)
