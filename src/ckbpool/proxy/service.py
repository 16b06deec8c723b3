"""The translator as one object: the V1 server and the getwork endpoint, each with its own upstream channel.

``ckbpool proxy run`` starts exactly this; tests start it in-process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CollectorRegistry

from ..pool.status import StatusServer
from .config import ProxyConfig
from .downstream import V1Server
from .getwork import GetworkServer
from .metrics import ProxyCollector

__all__ = ["Proxy"]

log = logging.getLogger(__name__)


class Proxy:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.v1: V1Server | None = V1Server(config) if config.v1.enabled else None
        self.getwork: GetworkServer | None = GetworkServer(config) if config.getwork.enabled else None
        if self.v1 is None and self.getwork is None:
            raise ValueError("nothing to serve: enable v1 and/or getwork")
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ProxyCollector(self))
        self.status_server: StatusServer | None = None
        if config.http.enabled:
            self.status_server = StatusServer(
                config.http.listen_host, config.http.listen_port, self._status, self.registry, health=self.healthy
            )

    async def start(self) -> None:
        if self.v1 is not None:
            await self.v1.start()
        if self.getwork is not None:
            await self.getwork.start()
        if self.status_server is not None:
            await self.status_server.start()

    async def close(self) -> None:
        if self.status_server is not None:
            await self.status_server.close()
        if self.getwork is not None:
            await self.getwork.close()
        if self.v1 is not None:
            await self.v1.close()

    def healthy(self) -> bool:
        """Every upstream channel open: a proxy cut off from its pool is up but cannot do its job."""
        return all(s.upstream.connected for s in (self.v1, self.getwork) if s is not None)

    async def _status(self) -> dict[str, Any]:
        return {"healthy": self.healthy(), **self.stats()}

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_upstream(self, timeout: float = 10.0) -> None:
        """Wait until every upstream channel is open (tests, start-up logs)."""
        waits = [s.upstream.up.wait() for s in (self.v1, self.getwork) if s is not None]
        await asyncio.wait_for(asyncio.gather(*waits), timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "v1": None if self.v1 is None else self.v1.stats(),
            "getwork": None if self.getwork is None else self.getwork.stats(),
        }
