"""``ckbpool scrape-gateway run -c gateway.toml``: where the gateway listens, its TLS files, the token, the jobs.

Every key is top level except ``[targets]``; unknown keys are refused with their path::

    listen_host = "0.0.0.0"
    listen_port = 9443
    tls_cert_file = "/run/secrets/scrape_tls"    # signed by the deployment CA, SAN = the host's private address
    tls_key_file = "/run/secrets/scrape_tls"
    token_file = "/run/secrets/scrape_token"     # what Prometheus sends (authorization.credentials_file)

    [targets]                                    # job -> its /metrics on this host's internal network
    node = "http://node-exporter:9100/metrics"
    pool = "http://pool:8180/metrics"
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..pool.config import ConfigError, load_toml_model

Port = Annotated[int, Field(ge=0, le=65535)]  # 0 = let the OS pick (tests)
_JOB = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
#: the shortest token accepted: ``ckbpool init`` writes 43 characters (256 bits)
MIN_TOKEN_CHARS = 16


class ScrapeGatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_host: str = "127.0.0.1"
    listen_port: Port = 9443
    # TLS is not optional: the gateway exists for the hop between hosts
    tls_cert_file: Path
    tls_key_file: Path
    # neither is the token: metrics name hosts, workers and balances
    token_file: Path
    targets: dict[str, str]
    upstream_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # a /metrics body larger than this is cut off with a 502 (node_exporter's is ~100 kB, ckb's ~200 kB)
    max_response_bytes: Annotated[int, Field(ge=4096, le=256 << 20)] = 32 << 20

    @model_validator(mode="after")
    def _check(self) -> ScrapeGatewayConfig:
        if not self.targets:
            raise ValueError("targets: name at least one job (job = its internal http:// /metrics URL)")
        for job, url in self.targets.items():
            if not _JOB.match(job):
                raise ValueError(f"targets.{job}: job names are lower-case letters, digits, '-' and '_'")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"targets.{job}: {url!r} is not an http:// or https:// URL")
        return self

    def token(self) -> str:
        token = self.token_file.read_text().strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{self.token_file}: the token is shorter than {MIN_TOKEN_CHARS} characters")
        return token


def load_gateway_config(path: Path | None = None, data: dict[str, Any] | None = None) -> ScrapeGatewayConfig:
    """Load from a TOML file (or a dict), reporting every bad key with its path."""
    return load_toml_model(ScrapeGatewayConfig, path, data)
