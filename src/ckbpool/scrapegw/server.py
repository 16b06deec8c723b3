"""The scrape gateway's HTTPS server: ``GET /scrape/<job>`` with the bearer token -> that job's internal /metrics.

Only GET of a configured job is forwarded, with Prometheus's ``Accept`` header (so the exporter still negotiates
OpenMetrics or text) and nothing else of the request: no client header, path or query reaches an exporter, so
the gateway cannot be turned into a proxy to anything but the listed URLs. Auth comes before the job lookup (an
unauthenticated client learns nothing, not even which jobs exist); the token is compared in constant time.
Refusals are counted by reason on the gateway's own ``/scrape/gateway`` job (the same token).
"""

from __future__ import annotations

import hmac
import logging
import ssl

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .config import ScrapeGatewayConfig

log = logging.getLogger(__name__)

#: the gateway's own metrics, served as this job (a configured target of that name is refused by start())
SELF_JOB = "gateway"
REASONS = ("unauthorized", "unknown_job", "upstream", "too_large")


def server_tls_context(config: ScrapeGatewayConfig) -> ssl.SSLContext:
    """TLS 1.2+ with the gateway's certificate (the deployment CA's, for the host's private address)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


class ScrapeGateway:
    """One gateway: ``await start()``, then ``port`` is the bound port; ``await close()``."""

    def __init__(self, config: ScrapeGatewayConfig, *, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.scrapes_total = Counter(
            "ckbpool_scrape_gateway_requests_total",
            "Scrapes forwarded by the scrape gateway, by job and outcome (ok, upstream_error)",
            ["job", "outcome"],
            registry=self.registry,
        )
        self.refused_total = Counter(
            "ckbpool_scrape_gateway_refused_total",
            "Requests the scrape gateway refused before forwarding, by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in REASONS:
            self.refused_total.labels(reason=reason)
        self._token = b""
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> ScrapeGateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        cfg = self.config
        if SELF_JOB in cfg.targets:
            raise ValueError(f"targets.{SELF_JOB}: that job is the gateway's own metrics")
        self._token = cfg.token().encode()
        tls = server_tls_context(cfg)  # a bad certificate or key stops the start, before anything listens
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=cfg.upstream_timeout_s), auto_decompress=False
        )
        app = web.Application()
        app.router.add_get("/scrape/{job}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.listen_host, cfg.listen_port, ssl_context=tls)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("scrape gateway: https://%s:%d/scrape/<job> for %s", cfg.listen_host, self.port,
                 ", ".join(sorted(cfg.targets)))  # fmt: skip

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _authorized(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header.encode(), b"Bearer " + self._token)

    def _refuse(self, reason: str, status: int, text: str, **headers: str) -> web.Response:
        self.refused_total.labels(reason=reason).inc()
        return web.Response(status=status, text=text + "\n", headers=headers)

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._authorized(request.headers.get("Authorization")):
            return self._refuse("unauthorized", 401, "a bearer token is required", **{"WWW-Authenticate": "Bearer"})
        job = request.match_info["job"]
        if job == SELF_JOB:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
        url = self.config.targets.get(job)
        if url is None:
            return self._refuse("unknown_job", 404, f"no job {job[:64]!r} on this gateway")
        assert self._session is not None
        accept = request.headers.get("Accept", "text/plain")
        limit = self.config.max_response_bytes
        try:
            # gzip or nothing: what Prometheus decodes (aiohttp would offer br too when brotli is installed)
            async with self._session.get(url, headers={"Accept": accept, "Accept-Encoding": "gzip"}) as upstream:
                body = bytearray()
                async for chunk in upstream.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > limit:
                        break
                status, content_type = upstream.status, upstream.headers.get("Content-Type", "text/plain")
                encoding = upstream.headers.get("Content-Encoding")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.scrapes_total.labels(job=job, outcome="upstream_error").inc()
            log.warning("scrape gateway: %s (%s): %s", job, url, exc.__class__.__name__)
            return web.Response(status=502, text=f"{job}: the exporter did not answer ({exc.__class__.__name__})\n")
        if len(body) > limit:
            return self._refuse("too_large", 502, f"{job}: the exporter's answer exceeds {limit} bytes")
        self.scrapes_total.labels(job=job, outcome="ok" if status == 200 else "upstream_error").inc()
        headers = {"Content-Type": content_type}
        if encoding:
            headers["Content-Encoding"] = encoding
        return web.Response(status=status, body=bytes(body), headers=headers)
