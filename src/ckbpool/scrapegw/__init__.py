"""The scrape gateway: Prometheus's scrapes of another host's /metrics over TLS with a bearer token (issue 18).

On the hosts target every host whose metrics the monitoring host scrapes runs one (``scrape-gateway``, in the
pool image): it is the only metrics port published to the monitoring host, serves HTTPS with a certificate of the
deployment CA for the host's private address, requires ``Authorization: Bearer <token>`` and forwards
``GET /scrape/<job>`` to that job's exporter on the host's internal compose network. The exporters themselves
(node, Redis, Kafka, PostgreSQL, ckb's own, the pool's, the proxy's, the payout engine's) stay plain HTTP on that
internal network, whatever each one supports.
"""

from .config import ScrapeGatewayConfig, load_gateway_config
from .server import ScrapeGateway

__all__ = ["ScrapeGateway", "ScrapeGatewayConfig", "load_gateway_config"]
