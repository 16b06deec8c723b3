"""The ``ckbpool`` command line (Typer). Deployment commands (init, render, deploy, ...) join this app later;
today it runs the pool, the CPU miner and the key tool."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
