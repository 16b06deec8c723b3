"""The one way a small ckbpool service command runs (``proxy run``, ``rpc-filter run``,
``scrape-gateway run``): start it, say
where it listens, serve until SIGINT/SIGTERM, close it. A start that fails (a port taken, a bad key file) is an exit
code 2 with the reason, never a traceback, and closes what had started."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol, TypeVar

import typer
from rich.console import Console

from ..pool.config import ConfigError


class Service(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Service)


def serve_until_signal(make: Callable[[], S], what: str, started: Callable[[S], str], console: Console) -> None:
    """Run the service ``make()`` gives (made inside the event loop) until SIGINT/SIGTERM; ``started(service)`` is
    the line printed once it listens (its ports are known then)."""

    async def run() -> None:
        try:
            service = make()
        except (ValueError, ConfigError) as exc:
            console.print(f"[red]cannot start the {what}: {exc}[/red]")
            raise typer.Exit(2) from None
        try:
            await service.start()
        except (ValueError, OSError, ConfigError) as exc:
            await service.close()
            console.print(f"[red]cannot start the {what}: {exc}[/red]")
            raise typer.Exit(2) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        console.print(f"[green]{started(service)}[/green]")
        try:
            await stop.wait()
        finally:
            await service.close()

    asyncio.run(run())
