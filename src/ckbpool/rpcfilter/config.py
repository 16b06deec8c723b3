"""``ckbpool rpc-filter run -c filter.toml``: where the filter listens, the node behind it, TLS and auth, limits.

Every key is top level; unknown keys are refused with their path, like the pool's own configuration::

    listen_host = "10.0.0.5"              # the node host's private address
    listen_port = 8124                    # HTTPS JSON-RPC
    tcp_listen_port = 18124               # TLS subscription port (omit: none)
    upstream_url = "http://127.0.0.1:8114"
    upstream_tcp = "127.0.0.1:18114"
    tls_cert_file = "/run/secrets/rpc-filter.pem"   # signed by the deployment CA
    tls_key_file = "/run/secrets/rpc-filter.key"
    client_ca_file = "/run/secrets/ca.pem"          # optional: require client certificates it signed
    token_file = "/run/secrets/rpc-filter.token"    # optional: require this bearer token
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..pool.config import ConfigError, load_toml_model

Port = Annotated[int, Field(ge=0, le=65535)]  # 0 = let the OS pick (tests)


class RpcFilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_host: str = "127.0.0.1"
    listen_port: Port = 8124
    # the TLS port that forwards the new_tip_header subscription (None: no subscription port)
    tcp_listen_port: Port | None = None
    upstream_url: str = "http://127.0.0.1:8114"
    upstream_tcp: str | None = "127.0.0.1:18114"
    # TLS is not optional: the filter exists for the hop between hosts
    tls_cert_file: Path
    tls_key_file: Path
    # when set, clients must present a certificate this CA signed (mutual TLS)
    client_ca_file: Path | None = None
    # when set, clients must send this token (HTTP: Authorization: Bearer; TCP: a first ckbpool_auth line)
    token_file: Path | None = None
    # a request body larger than this is refused (413) before it is read: submit_block's JSON is the largest the
    # pool sends (a full 597 kB block is ~1.3 MB of hex); ckb's own default max_request_body_size is 10 MB
    max_request_bytes: Annotated[int, Field(ge=4096, le=64 << 20)] = 4 << 20
    # requests in one batch (ckb's rpc_batch_limit is 2000 by default; ckbpool sends none)
    max_batch: Annotated[int, Field(ge=1, le=10_000)] = 100
    # one line from a subscription client (requests are tiny) / from the node (a header is ~1 kB)
    max_client_line_bytes: Annotated[int, Field(ge=256, le=1 << 20)] = 8192
    max_node_line_bytes: Annotated[int, Field(ge=4096, le=16 << 20)] = 1 << 20
    max_subscriptions: Annotated[int, Field(ge=1, le=100_000)] = 64
    upstream_timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0
    # a subscription client must authenticate within this
    handshake_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Prometheus /metrics, plain HTTP on a private address (None: not served)
    metrics_host: str = "127.0.0.1"
    metrics_port: Port | None = 8129

    @model_validator(mode="after")
    def _check(self) -> RpcFilterConfig:
        if urlsplit(self.upstream_url).scheme not in ("http", "https"):
            raise ValueError(f"upstream_url must be http:// or https://, not {self.upstream_url!r}")
        if self.tcp_listen_port is not None and not self.upstream_tcp:
            raise ValueError("tcp_listen_port needs upstream_tcp (the node's tcp_listen_address)")
        if self.upstream_tcp is not None and not _host_port(self.upstream_tcp):
            raise ValueError(f"upstream_tcp must be host:port, not {self.upstream_tcp!r}")
        return self

    def upstream_tcp_address(self) -> tuple[str, int]:
        address = _host_port(self.upstream_tcp or "")
        if address is None:
            raise ValueError("upstream_tcp is not set")
        return address

    def token(self) -> str | None:
        if self.token_file is None:
            return None
        token = self.token_file.read_text().strip()
        if len(token) < 16:
            raise ConfigError(f"{self.token_file}: the token is shorter than 16 characters")
        return token


def _host_port(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def load_filter_config(path: Path | None = None, data: dict[str, Any] | None = None) -> RpcFilterConfig:
    """Load from a TOML file (or a dict), reporting every bad key with its path."""
    return load_toml_model(RpcFilterConfig, path, data)
