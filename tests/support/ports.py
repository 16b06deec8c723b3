"""``--port key=N`` flags for ``ckbpool init`` with a free loopback port per key, all different.

The OS hands out an ephemeral port it gave a moment ago (and that was closed) again now and then, and ``init``
rightly refuses two services on one port: "ports.stratum: 59815 is also used by ports.pool_http" ended a CI run.
"""

from __future__ import annotations

from ckbpool.ckb.node import free_port


def free_ports(count: int) -> list[int]:
    """``count`` different ports, each free when picked (bounded)."""
    ports: list[int] = []
    for _ in range(100 * count):
        if len(ports) == count:
            break
        port = free_port()
        if port not in ports:
            ports.append(port)
    assert len(ports) == count, f"no {count} distinct free ports"
    return ports


def port_flags(*keys: str) -> list[str]:
    """``["--port", "key=N", ...]`` for ``keys``, every N a different free port."""
    return [arg for key, port in zip(keys, free_ports(len(keys)), strict=True) for arg in ("--port", f"{key}={port}")]
