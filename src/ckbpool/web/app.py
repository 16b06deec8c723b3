"""The public listener: the JSON API under /api/ and the miners' page, on an aiohttp server of its own.

It is apart from the operator's listener (``[http]``: /status, /metrics, /health) so that publishing this one
to the internet publishes nothing else: the routes here are exactly those below, everything else is 404.
Every request passes, in order: the query-length guard (414), the per-client token bucket (429 with
Retry-After), then its handler; API answers are cached ``cache_ttl_s`` per path and query, and at most
:data:`MAX_CONCURRENT_ANSWERS` are computed at once (the rest wait their turn: see there why). The page is one
HTML file, one script and one stylesheet shipped in the package (``ckbpool/web/static``), served from here
with a Content-Security-Policy that lets it load nothing from anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel

from ..ckb.rpc import CkbRpcClient
from ..pool.config import PoolConfig, WebSettings
from ..pool.redis_conn import redis_from_settings
from .api import MAX_BLOCKS, ApiError, PublicApi
from .books import BooksReader, Rollup
from .limits import AnswerCache, RateLimiter, client_key
from .models import openapi_document

log = logging.getLogger(__name__)

#: files the page is made of (anything else under /static/ is 404)
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: how often the rollups run (seconds)
ROLLUP_INTERVAL_S = 10.0
#: answers computed at once (cache misses), at most: each holds up to 2 Redis connections at a time (an address
#: reads its PPLNS and SOLO accounts in parallel) and the client's pool has a fixed size (redis-py: 100), past
#: which a call fails at once (MaxConnectionsError, retried after a backoff) instead of waiting -- a crowd of
#: uncached requests queues here instead, and the public listener's load on Redis stays bounded
MAX_CONCURRENT_ANSWERS = 32
#: Redis connections one answer may hold at once, with room to spare (the rollup task has its own)
CONNECTIONS_PER_ANSWER = 3

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page_url(settings: WebSettings, port: int | None = None) -> str:
    """Where miners open the page: ``public_url`` if set, else the listener (a wildcard host as loopback)."""
    if settings.public_url:
        return settings.public_url
    host = settings.listen_host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls else "http"
    return f"{scheme}://{host}:{settings.listen_port if port is None else port}/"


def tls_context(settings: WebSettings) -> ssl.SSLContext | None:
    """The listener's TLS context from the operator's certificate chain and key (None: plain HTTP).

    Server-side defaults of the ssl module (TLS 1.2 and newer, its cipher choice); loading fails at start --
    a missing file, a key that does not match the certificate -- rather than at a miner's first request."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def _static(name: str) -> bytes:
    return resources.files("ckbpool.web").joinpath("static", name).read_bytes()


def _json(status: int, payload: Any) -> bytes:
    if isinstance(payload, BaseModel):
        return payload.model_dump_json().encode()
    return json.dumps(payload, separators=(",", ":")).encode()


class WebServer:
    """The public API + page listener of one pool process, with the rollup task its reads rely on."""

    def __init__(
        self,
        config: PoolConfig,
        *,
        rpc: CkbRpcClient | None = None,
        redis_client: aioredis.Redis | None = None,
        ledger: Any | None = None,
    ) -> None:
        self.config = config
        self.settings = config.web
        self.host = self.settings.listen_host
        self.port = self.settings.listen_port
        self._own_redis = False
        if redis_client is None and config.redis.url:
            redis_client = redis_from_settings(config.redis)
            self._own_redis = True
        self.redis = redis_client
        self._own_ledger = False
        ledger_url = config.payouts.database() if config.payouts.enabled else None
        if ledger is None and ledger_url:
            from ..payouts.ledger import Ledger

            ledger = Ledger.open(ledger_url, migrate_to=None)  # read-only: the payouts engine migrates it
            self._own_ledger = True
        self.ledger = ledger
        books = BooksReader(redis_client) if redis_client is not None else None
        self.rollup = Rollup(redis_client, idle_ttl_s=config.redis.idle_ttl_s) if redis_client is not None else None
        self.api = PublicApi(self.settings, config.payouts, config.network, books, rpc, ledger)
        self.limiter = RateLimiter(self.settings.rate_limit_per_s, self.settings.rate_limit_burst)
        self.cache = AnswerCache(self.settings.cache_ttl_s)
        pool_size = getattr(getattr(redis_client, "connection_pool", None), "max_connections", None)
        concurrent = MAX_CONCURRENT_ANSWERS
        if isinstance(pool_size, int) and pool_size > 0:
            concurrent = max(1, min(concurrent, (pool_size - 1) // CONNECTIONS_PER_ANSWER))
        self._answering = asyncio.Semaphore(concurrent)
        self._trusted = frozenset(self.settings.trusted_proxies)
        self._openapi = _json(200, openapi_document())
        self._index = _static("index.html")
        self._assets = {name: _static(name) for name in STATIC_FILES}
        self._runner: web.AppRunner | None = None
        self._rollup_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return page_url(self.settings, self.port)

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=1024, middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/address/{address}", self._page)
        app.router.add_get("/static/{name}", self._asset)
        app.router.add_get("/api/openapi.json", self._openapi_doc)
        app.router.add_get("/api/pool", self._pool)
        app.router.add_get("/api/blocks", self._blocks)
        app.router.add_get("/api/address/{address}", self._address)
        return app

    async def start(self) -> None:
        context = tls_context(self.settings)  # before anything listens: a bad certificate stops the start
        self._runner = web.AppRunner(self.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=context)
        await site.start()
        server = getattr(site, "_server", None)
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        if self.rollup is not None:
            self._rollup_task = asyncio.create_task(self._run_rollups())
        scheme = "https" if self.settings.tls else "http"
        log.info("public page and API on %s://%s:%d/ (%s)", scheme, self.host, self.port, self.url)

    async def close(self) -> None:
        if self._rollup_task is not None:
            self._rollup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rollup_task
            self._rollup_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_redis and self.redis is not None:
            await self.redis.aclose()
        if self._own_ledger and self.ledger is not None:
            self.ledger.close()

    async def _run_rollups(self) -> None:
        """Keep the rollups current (:mod:`ckbpool.web.books`); a failing Redis is logged and retried."""
        assert self.rollup is not None
        while True:
            try:
                await self.rollup.run_once()
            except Exception as exc:
                log.warning("public page: rollup failed (%r); retrying in %.0fs", exc, ROLLUP_INTERVAL_S)
            await asyncio.sleep(ROLLUP_INTERVAL_S)

    # -- middleware ------------------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(request.query_string.encode()) > self.settings.max_query_bytes:
            return self._problem(414, "query-too-long", f"query strings are limited to "
                                 f"{self.settings.max_query_bytes} bytes")  # fmt: skip
        key = client_key(request.remote, request.headers.get("X-Forwarded-For"), self._trusted)
        wait = self.limiter.take(key)
        if wait > 0:
            response = self._problem(429, "rate-limited", "too many requests from your address; slow down")
            response.headers["Retry-After"] = RateLimiter.retry_after(wait)
            return response
        try:
            answer = await handler(request)
        except web.HTTPNotFound:
            if request.path.startswith("/api/"):
                return self._problem(404, "not-found", f"no such API path: {request.path[:100]}")
            raise
        answer.headers.update(SECURITY_HEADERS)
        return answer

    def _problem(self, status: int, error: str, detail: str) -> web.Response:
        response = web.Response(
            status=status, body=_json(status, {"error": error, "detail": detail}), content_type="application/json"
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    # -- API -------------------------------------------------------------------------------------------------
    async def _cached(self, key: str, build: Callable[[], Awaitable[BaseModel]]) -> web.Response:
        async def compute() -> tuple[int, bytes]:
            try:
                async with self._answering:
                    return 200, _json(200, await build())
            except ApiError as exc:
                return exc.status, _json(exc.status, {"error": exc.error, "detail": exc.detail})

        try:
            status, body = await self.cache.get(key, compute)
        except Exception as exc:
            log.exception("public API: %s failed", key)
            return self._problem(
                503, "unavailable", f"the pool's figures cannot be read right now ({type(exc).__name__})"
            )
        response = web.Response(status=status, body=body, content_type="application/json")
        if status == 200:
            response.headers["Cache-Control"] = f"public, max-age={int(self.settings.cache_ttl_s)}"
        return response

    async def _openapi_doc(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type="application/json")

    async def _pool(self, request: web.Request) -> web.Response:
        return await self._cached("pool", self.api.pool)

    async def _blocks(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_BLOCKS:
            return self._problem(400, "invalid-limit", f"limit must be a whole number from 1 to {MAX_BLOCKS}")
        limit = int(raw)
        return await self._cached(f"blocks:{limit}", lambda: self.api.blocks(limit))

    async def _address(self, request: web.Request) -> web.Response:
        address = request.match_info["address"]
        return await self._cached(f"address:{address}", lambda: self.api.address(address))

    # -- page ------------------------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=self._index, content_type="text/html", charset="utf-8")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        response = web.Response(body=self._assets[name])
        response.headers["Content-Type"] = STATIC_FILES[name]
        response.headers["Cache-Control"] = "public, max-age=300"
        return response
