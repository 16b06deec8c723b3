"""HTTP status endpoint: /status (JSON for operators and `ckbpool status`), /metrics (Prometheus), /health.

Bound to loopback by default: metrics and status are for the operator's own monitoring, not the internet.
With stratum worker processes the parent serves both for the whole pool: its status callback and metrics source
add the workers' latest reports (``ckbpool.pool.procs``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)


class MetricsSource(Protocol):
    """What /metrics renders: a CollectorRegistry, or anything else that collects metric families."""

    def collect(self) -> Iterable[Metric]: ...


class StatusServer:
    def __init__(
        self,
        host: str,
        port: int,
        status: Callable[[], Awaitable[dict[str, Any]]],
        registry: MetricsSource,
        health: Callable[[], bool] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._status = status
        self._registry = registry
        self._health = health or (lambda: True)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/status", self._handle_status)
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/health", self._handle_health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site, "_server", None)
        if self.port == 0 and sockets is not None and sockets.sockets:
            self.port = sockets.sockets[0].getsockname()[1]
        log.info("status endpoint on http://%s:%d", self.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle_status(self, request: web.Request) -> web.Response:
        return web.json_response(await self._status())

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)  # it only calls collect()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _handle_health(self, request: web.Request) -> web.Response:
        healthy = self._health()
        return web.json_response({"healthy": healthy}, status=200 if healthy else 503)
