"""Read the health of a running stack from outside: node RPC, the pool's /status, /health and /metrics.

Shared by every target's ``status`` and by ``deploy``'s wait for health. Synchronous, short timeouts, never
raises for an unreachable service: the answer says what was reachable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class NodeProbe:
    reachable: bool
    tip: int | None = None
    best_known: int | None = None
    ibd: bool | None = None
    peers: int | None = None
    error: str | None = None

    @property
    def synced_text(self) -> str:
        if not self.reachable:
            return "-"
        if self.ibd:
            return f"syncing ({self.tip}/{self.best_known})"
        return "synced"


@dataclass
class PoolProbe:
    reachable: bool
    healthy: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)  # result -> count
    blocks: dict[str, float] = field(default_factory=dict)  # status -> count
    error: str | None = None

    @property
    def accepted_shares(self) -> int:
        return int(self.shares.get("accepted", 0))

    @property
    def accepted_blocks(self) -> int:
        return int(self.blocks.get("accepted", 0))


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout: float = 3.0) -> Any:
    response = httpx.post(
        url, json={"id": 1, "jsonrpc": "2.0", "method": method, "params": params or []}, timeout=timeout
    )
    response.raise_for_status()
    body = response.json()
    if body.get("error"):
        raise RuntimeError(f"{method}: {body['error'].get('message')}")
    return body.get("result")


def probe_node(rpc_url: str, timeout: float = 3.0) -> NodeProbe:
    try:
        tip = int(rpc_call(rpc_url, "get_tip_block_number", timeout=timeout), 16)
    except (httpx.HTTPError, ValueError, RuntimeError, TypeError) as exc:
        return NodeProbe(False, error=_short(exc))
    probe = NodeProbe(True, tip=tip)
    try:
        sync = rpc_call(rpc_url, "sync_state", timeout=timeout)
        probe.ibd = bool(sync.get("ibd"))
        probe.best_known = int(sync.get("best_known_block_number", "0x0"), 16)
    except (httpx.HTTPError, ValueError, RuntimeError, TypeError, AttributeError):
        pass
    try:
        info = rpc_call(rpc_url, "local_node_info", timeout=timeout)
        probe.peers = int(info.get("connections", "0x0"), 16)
    except (httpx.HTTPError, ValueError, RuntimeError, TypeError, AttributeError):
        pass
    return probe


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """``name -> {label string -> value}`` from the Prometheus text format (enough for counters/gauges)."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        out.setdefault(match["name"], {})[match["labels"] or ""] = value
    return out


def _label(labels: str, key: str) -> str:
    match = re.search(rf'{key}="([^"]*)"', labels)
    return match.group(1) if match else ""


def probe_pool(http_base: str, timeout: float = 3.0) -> PoolProbe:
    try:
        with httpx.Client(timeout=timeout) as client:
            health = client.get(f"{http_base}/health")
            status = client.get(f"{http_base}/status").json()
            metrics = parse_metrics(client.get(f"{http_base}/metrics").text)
    except (httpx.HTTPError, ValueError) as exc:
        return PoolProbe(False, error=_short(exc))
    shares = {_label(k, "result"): v for k, v in metrics.get("ckbpool_shares_total", {}).items()}
    blocks = {_label(k, "status"): v for k, v in metrics.get("ckbpool_blocks_total", {}).items()}
    return PoolProbe(True, healthy=health.status_code == 200, status=status, shares=shares, blocks=blocks)


def probe_prometheus(base: str, timeout: float = 3.0) -> dict[str, str] | None:
    """job -> up/down/unknown of Prometheus' active targets, or None when Prometheus does not answer."""
    try:
        data = httpx.get(f"{base}/api/v1/targets", timeout=timeout).json()
        targets = data["data"]["activeTargets"]
        return {str(t["labels"]["job"]): str(t["health"]) for t in targets}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:120]


def format_hashrate(hps: float) -> str:
    for unit, scale in (("TH/s", 1e12), ("GH/s", 1e9), ("MH/s", 1e6), ("kH/s", 1e3)):
        if hps >= scale:
            return f"{hps / scale:.2f} {unit}"
    return f"{hps:.0f} H/s"
