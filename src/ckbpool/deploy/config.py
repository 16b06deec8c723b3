"""``ckbpool.yaml``: the typed deployment configuration (pydantic, unknown keys rejected).

One file describes a pool deployment for every target: which network, where the block rewards go, the ports,
which services run and on which hosts, the image versions. Secrets never appear in it: ``ckbpool init``
generates them into ``secrets_dir`` (files with mode 0600) and the rendered artifacts refer to those files.

Errors name the exact key path (``ports.stratum``, ``topology.hosts.1.roles.0``) so a user can fix the file
without reading this module.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..ckb.address import parse_address
from ..ckb.errors import MalformedError
from ..pool.config import (
    PaymentBatchSize,
    PaymentFeeRate,
    PaymentThreshold,
    PayoutInterval,
    check_payment_threshold,
)
from .errors import ConfigFileError
from .image import DEFAULT_POOL_BASE, DEFAULT_POOL_IMAGE, LOCAL_REGISTRY

CONFIG_FILE_NAME = "ckbpool.yaml"
Network = Literal["dev", "testnet", "mainnet"]
Port = Annotated[int, Field(ge=1, le=65535)]
#: Roles a host can carry. ``pool`` is shorthand for the four pool roles (the embedded pool on one host).
HostRole = Literal[
    "ckb_node", "pool", "jobmaker", "stratum", "blockmaker", "accounting", "redis", "kafka", "proxy", "monitoring"
]
POOL_ROLES: tuple[str, ...] = ("jobmaker", "stratum", "blockmaker", "accounting")
NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
#: ``name@sha256:<64 hex>`` (optionally ``name:tag@sha256:...``): an image pinned by its content
_DIGEST_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*[a-z0-9](:[\w][\w.-]{0,127})?@sha256:[0-9a-f]{64}$")
#: ``host[:port]/path[:tag]`` of a registry repository (lower case, as the distribution spec requires)
_REPOSITORY = re.compile(
    r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+(:[\w][\w.-]{0,127})?$"
)
#: a page address miners open: http(s)://host[:port][/path], nothing else (it is printed and linked)
_PUBLIC_URL = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$")
#: ``host:port[,host:port...]`` of an existing Kafka (kubernetes.kafka_bootstrap), or empty
_BOOTSTRAP = r"^$|^[A-Za-z0-9.-]+:[0-9]{1,5}(,[A-Za-z0-9.-]+:[0-9]{1,5})*$"
DEFAULT_DEV_DIFFICULTY = 1 << 20  # ~1 M Eaglesong hashes a block: a few blocks a second from one CPU miner


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ports(_Strict):
    """Ports on the host. Only ``stratum`` (and ``proxy``) face miners; the rest bind to ``bind.private``."""

    stratum: Port = 34255
    proxy: Port = 3333  # CKB Stratum V1 for ASICs, served by the translator
    pool_http: Port = 8180  # /status, /metrics, /health
    proxy_http: Port = 8181  # the translator's /status, /metrics, /health
    node_rpc: Port = 8114
    node_tcp_rpc: Port = 18114  # new-tip subscription
    node_p2p: Port = 8115
    node_metrics: Port = 8100
    redis: Port = 6379
    kafka: Port = 9092
    kafka_controller: Port = 9093
    prometheus: Port = 9090
    grafana: Port = 3000
    node_exporter: Port = 9100
    redis_exporter: Port = 9121
    kafka_exporter: Port = 9308
    postgres: Port = 5432  # the payouts ledger (payouts.database: postgres)
    postgres_exporter: Port = 9187
    # the miners' page and public API (web.enabled), on bind.public like stratum: set 443 with web.tls
    web: Port = 8080
    payouts_metrics: Port = 8190  # the payout engine's /metrics (payouts.enabled)
    # the node's RPC filter (`ckbpool rpc-filter run`, hosts target, node on another host than the pool): HTTPS
    # JSON-RPC limited to the methods the pool calls, and the TLS new-tip subscription port; what peers reach
    # instead of node_rpc / node_tcp_rpc, which then stay on bind.private
    node_rpc_filter: Port = 8124
    node_tcp_rpc_filter: Port = 18124
    # each scraped host's scrape gateway (hosts target, monitoring on another host): HTTPS + a bearer token in
    # front of that host's exporters, the only metrics port the monitoring host reaches (issue 18)
    scrape_gateway: Port = 9443


#: the non-loopback ranges an internal port may be published on: RFC 1918 and IPv6 unique local addresses
PRIVATE_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fc00::/7"),
)
_PRIVATE_HINT = "a private address (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or an IPv6 ULA in fc00::/7)"


def private_address_problem(value: str, *, loopback: bool) -> str | None:
    """Why ``value`` cannot carry internal ports (node RPC, Redis, Kafka, metrics), or None when it can.

    Python's ``is_private`` is too generous for this: it counts ``0.0.0.0`` and ``::`` (every interface, public
    ones included) and documentation or benchmarking ranges as private. What is accepted here is what no router
    forwards from the internet: RFC 1918, IPv6 unique local addresses, and loopback where ``loopback`` allows it."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return (
            f"{value} means every interface, public ones included; use "
            + ("127.0.0.1 (this machine only) or " if loopback else "")
            + _PRIVATE_HINT
        )
    if ip.is_loopback:
        return None if loopback else f"{value} is loopback, which other hosts cannot reach; use {_PRIVATE_HINT}"
    if any(ip in net for net in PRIVATE_NETWORKS if net.version == ip.version):
        return None
    return f"{value} is not a private address; use " + ("127.0.0.1 or " if loopback else "") + _PRIVATE_HINT


class Bind(_Strict):
    """Host addresses: ``public`` for the miner-facing ports, ``private`` for everything an operator reads.

    ``private`` carries the node RPC (with its Net and Pool modules), Redis, Prometheus and Grafana, which have no
    firewall in front of them on the local and compose targets: it must be loopback or a private address, never
    every interface or a public one."""

    public: str = "0.0.0.0"
    private: str = "127.0.0.1"

    @field_validator("public")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @field_validator("private")
    @classmethod
    def _private(cls, value: str) -> str:
        problem = private_address_problem(value, loopback=True)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def public_from_here(self) -> str:
        """The address a client on this machine uses for the miner-facing ports: loopback when they bind to all."""
        return "127.0.0.1" if self.public in ("0.0.0.0", "::") else self.public


class NodeOptions(_Strict):
    """The ckb node. ``dev_*`` apply to the dev chain only (a private chain with Eaglesong PoW)."""

    dev_difficulty: Annotated[int, Field(ge=1, le=1 << 64)] = DEFAULT_DEV_DIFFICULTY
    dev_epoch_length: Annotated[int, Field(ge=1, le=100_000)] = 1000
    block_message: Annotated[str, Field(max_length=64)] = ""  # ASCII put into each cellbase's witness
    rpc_threads: Annotated[int, Field(ge=1, le=64)] | None = None


class PoolOptions(_Strict):
    share_interval_s: Annotated[float, Field(gt=0, le=600)] = 10.0  # vardiff aims at one share per this
    initial_hashrate: Annotated[float, Field(gt=0)] = 1e6  # H/s assumed for miners declaring 0
    max_connections: Annotated[int, Field(ge=1)] = 100_000


class MinerOptions(_Strict):
    """CPU miners run by the local target (dev/testnet smoke tests and the demo), never by default."""

    enabled: bool = False
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    extended: bool = False
    # v2: straight to the pool's Stratum V2 port; v1: CKB Stratum V1 through the proxy (needs services.proxy)
    protocol: Literal["v2", "v1"] = "v2"


class ProxyOptions(_Strict):
    """The V1 <-> V2 translator (runs with ``services.proxy``)."""

    # per-worker: each V1 miner's username (``<CKB address of the network>.<worker>``) is its own account at the
    # pool, credited and paid to that address -- what a public pool needs, since every CKB ASIC speaks V1 only.
    # aggregated: every V1 miner's work is credited to the proxy's own identity (``<payout_address>.proxy``), for a
    # farm that is paid to one address (docs/sv2-ckb.md section 12).
    identity: Literal["per-worker", "aggregated"] = "per-worker"


class Services(_Strict):
    redis: bool = True  # share accounting
    kafka: bool = False  # the bus between pool processes; required when pool roles are split across hosts
    proxy: bool = False  # V1 <-> V2 translator for CKB Stratum V1 miners
    miner: MinerOptions = MinerOptions()
    # Kafka with TLS + SASL/SCRAM + ACLs (a principal per pool process, the deployment CA from `ckbpool init`):
    # ``auto`` = when the bus crosses hosts (hosts target, pool roles on another host than Kafka), together with
    # Redis over TLS and the node's RPC filter for whatever crosses hosts; ``always`` = the bus secured on one
    # host too (the compose target's stack, a single host). There is no ``off``: between hosts it is never off.
    kafka_security: Literal["auto", "always"] = "auto"


class RedisOptions(_Strict):
    """The Redis of share accounting (with ``services.redis``)."""

    # maxmemory, with maxmemory-policy noeviction: the books are never evicted; a full Redis refuses writes, so
    # accounting lags and its alert fires instead of data silently disappearing. The share log takes ~220 bytes
    # per accepted share (measured: benchmarks.abuse_identity), an identity ~1.3 KB: 1 GiB holds ~4.5M shares,
    # 7 days (pool.toml redis.share_log_keep_s) of ~75 workers at one share per 10 s.
    maxmemory_mb: Annotated[int, Field(ge=64, le=1 << 20)] = 1024


class PayoutsOptions(_Strict):
    """The payout engine's ledger (issue 16), rendered into pool.toml's ``[payouts]``.

    Off until the operator turns it on: it spends real money from the payout wallet. When on, ``ckbpool init``
    generates the wallet key (``secrets/payout-wallet.key``) and the nodes' block assembler pays the block rewards
    to that wallet, which pays the miners; ``payout_address`` receives the pool fee (``fee_bps``).

    ``database``: where the ledger lives on the compose / hosts / cloud targets. ``postgres`` runs PostgreSQL in
    the stack (a ``postgres`` service, its password generated into ``secrets/postgres.password``, a named volume,
    postgres_exporter with monitoring); ``sqlite`` keeps one file in the pool's data directory (one host only).
    The local target always uses SQLite under its data directory: the same models and migrations serve both."""

    enabled: bool = False
    database: Literal["postgres", "sqlite"] = "postgres"
    # PPLNS window = pplns_n x network difficulty of accepted work before each block
    pplns_n: Annotated[int, Field(ge=1, le=100)] = 2
    # pool fee in basis points of each block's reward (it also pays the payout transactions' fees)
    fee_bps: Annotated[int, Field(ge=1, le=10_000)] = 100
    # the payments (pool.toml [payouts], same names and bounds as ckbpool.pool.config.PayoutSettings): a balance
    # is paid once it reaches threshold_shannons (>= 61 CKB, a cell's minimum, plus one batch's transaction fee),
    # in transactions of at most batch_size outputs at fee_rate shannons per 1000 bytes (the node's
    # tx_pool.min_fee_rate, 1000 by default, is the floor); one engine pass every interval_s; a payout not
    # committed unconfirmed_alert_s after it was recorded raises an alert
    threshold_shannons: PaymentThreshold = 100 * 100_000_000
    fee_rate: PaymentFeeRate = 1_000
    batch_size: PaymentBatchSize = 200
    interval_s: PayoutInterval = 60.0
    unconfirmed_alert_s: Annotated[float, Field(gt=0)] = 3600.0
    # PostgreSQL server memory (shared_buffers) and connection cap: a ledger of a few tables needs little
    postgres_shared_buffers_mb: Annotated[int, Field(ge=16, le=1 << 16)] = 128
    postgres_max_connections: Annotated[int, Field(ge=10, le=1000)] = 50

    @model_validator(mode="after")
    def _threshold_covers_a_batch(self) -> PayoutsOptions:
        """The pool's own rule (PayoutSettings), checked here so ``ckbpool validate`` names the deploy keys rather
        than the rendered pool.toml failing to load on the host: the operator's balance pays each batch's fee, so
        a threshold below 61 CKB + that fee could leave a payment the wallet cannot make."""
        check_payment_threshold(self.threshold_shannons, self.fee_rate, self.batch_size)
        return self


class WebOptions(_Strict):
    """The miners' web page and public API (:mod:`ckbpool.web`), rendered into pool.toml's ``[web]``.

    On by default: a pool's public page is what miners look up. It is served by the pool process that runs
    accounting (it reads the books in Redis and the payouts ledger), on ``ports.web`` of ``bind.public``, open
    to the world in the host firewall and the cloud security groups like stratum; the operator's /status and
    /metrics stay on their private listener.

    ``tls``: HTTPS served by that listener itself with the operator's certificate: the PEM chain in
    ``secrets/web-tls.crt`` and its key in ``secrets/web-tls.key`` (e.g. certbot's fullchain.pem / privkey.pem
    copied there by a deploy hook; docs/web.md). ``public_url``: the address miners open (printed by
    ``ckbpool status``), e.g. ``https://pool.example.com/``; empty: the listener's own address."""

    enabled: bool = True
    tls: bool = False
    public_url: Annotated[str, Field(max_length=200)] = ""

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not _PUBLIC_URL.match(value):
            raise ValueError(f"{value!r} is not an http(s) URL (write e.g. https://pool.example.com/)")
        return value


class Monitoring(_Strict):
    enabled: bool = True  # Prometheus + exporters
    grafana: bool = True
    # danielqsj/kafka-exporter beside the broker (with services.kafka): the consumer-lag alert reads it. Off for
    # operators whose Kafka is already watched by their own exporter.
    kafka_exporter: bool = True
    retention: Annotated[str, Field(pattern=r"^[0-9]+[smhdwy]$")] = "15d"
    scrape_interval: Annotated[str, Field(pattern=r"^[0-9]+[smh]$")] = "15s"


class ServiceLimits(_Strict):
    """One compose service's ``mem_limit`` (MiB) and ``pids_limit`` (processes + threads); unset keeps the size
    :mod:`ckbpool.deploy.hardening` gives it (documented there, with why)."""

    memory_mb: Annotated[int, Field(ge=32, le=1 << 20)] | None = None
    pids: Annotated[int, Field(ge=16, le=1 << 22)] | None = None


class Resources(_Strict):
    """Overrides of the compose services' memory and pids limits (compose and hosts targets), per service: e.g.
    ``resources: {ckb: {memory_mb: 8192}}``. Field names are the services' with ``_`` for ``-``."""

    ckb: ServiceLimits = ServiceLimits()
    pool: ServiceLimits = ServiceLimits()
    redis: ServiceLimits = ServiceLimits()
    kafka: ServiceLimits = ServiceLimits()
    postgres: ServiceLimits = ServiceLimits()
    payouts: ServiceLimits = ServiceLimits()
    proxy: ServiceLimits = ServiceLimits()
    rpc_filter: ServiceLimits = ServiceLimits()  # the node's RPC filter (hosts target)
    scrape_gateway: ServiceLimits = ServiceLimits()  # a scraped host's scrape gateway (hosts target)
    miner: ServiceLimits = ServiceLimits()
    prometheus: ServiceLimits = ServiceLimits()
    node_exporter: ServiceLimits = ServiceLimits()
    redis_exporter: ServiceLimits = ServiceLimits()
    kafka_exporter: ServiceLimits = ServiceLimits()
    postgres_exporter: ServiceLimits = ServiceLimits()
    grafana: ServiceLimits = ServiceLimits()


class Host(_Strict):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    address: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")]
    ssh_user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]*$")] = "root"
    ssh_port: Port = 22
    # the address the other hosts reach this one's internal ports on (inventory ``private_ip``); required when
    # the topology has more than one host: ``address`` is where SSH goes, often a public address
    private_ip: str | None = None
    roles: Annotated[list[HostRole], Field(min_length=1)]

    @field_validator("private_ip")
    @classmethod
    def _private_ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = private_address_problem(value, loopback=False)
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def private_address(self) -> str | None:
        """Where peers reach this host's internal ports: ``private_ip``, else ``address`` when that is itself an
        RFC 1918 / ULA address (SSH over the private network), else None (refused with more than one host)."""
        if self.private_ip is not None:
            return self.private_ip
        return self.address if private_address_problem(self.address, loopback=False) is None else None

    @property
    def expanded_roles(self) -> list[str]:
        out: list[str] = []
        for role in self.roles:
            for r in POOL_ROLES if role == "pool" else (role,):
                if r not in out:
                    out.append(r)
        return out


class Topology(_Strict):
    """``single``: everything on one machine (local, compose, or one host). ``multi``: roles on ``hosts``."""

    mode: Literal["single", "multi"] = "single"
    hosts: list[Host] = []


class Images(_Strict):
    """Container images, pinned by version. The compose file reads each through a variable so tests (and
    air-gapped operators) can substitute locally built images: ``CKBPOOL_IMAGE_<NAME>``.

    ``pool`` is built by ckbpool itself (``ckbpool image build``, and every deploy when it is missing) on
    ``pool_base``; its default name is under the reserved ``ckbpool.invalid`` host, so it is never pulled from
    anyone (see ckbpool.deploy.image).

    ``registry`` (hosts and cloud targets): a repository of the operator's registry (``host[:port]/path``, e.g. an
    ECR, ACR or GHCR repository). When set, a deploy pushes the built pool image there and the hosts pull it by
    digest (``repository@sha256:...``), so every host runs the bytes the controller built; when unset, the
    controller copies the image to each host that runs it (``docker save`` -> ``docker load``).

    Each image is pinned by a version tag (``name:tag``, never ``latest``) or by digest (``name@sha256:<hex>``,
    what a deploy through ``registry`` hands the hosts)."""

    ckb: str = "nervos/ckb:v0.210.0"
    pool: str = DEFAULT_POOL_IMAGE
    pool_base: str = DEFAULT_POOL_BASE
    redis: str = "redis:7.4.2"
    kafka: str = "apache/kafka:4.4.0"
    prometheus: str = "prom/prometheus:v2.53.2"
    node_exporter: str = "prom/node-exporter:v1.8.2"
    redis_exporter: str = "oliver006/redis_exporter:v1.66.0-alpine"
    kafka_exporter: str = "danielqsj/kafka-exporter:v1.9.0"
    grafana: str = "grafana/grafana:11.2.2"
    postgres: str = "postgres:15.8-bookworm"
    postgres_exporter: str = "prometheuscommunity/postgres-exporter:v0.15.0"
    registry: str = ""  # empty: no registry, the controller copies the image to the hosts

    @field_validator(
        "ckb", "pool", "pool_base", "redis", "kafka", "prometheus", "node_exporter", "redis_exporter",
        "kafka_exporter", "grafana", "postgres", "postgres_exporter",
    )  # fmt: skip
    @classmethod
    def _pinned(cls, value: str) -> str:
        if _DIGEST_REFERENCE.match(value):
            return value
        name, _, tag = value.rpartition(":")
        if not name or "/" in tag or not tag or tag == "latest" or "@" in value:
            raise ValueError(
                f"{value!r} must be pinned to a version tag (name:tag, not latest) or a digest (name@sha256:...)"
            )
        return value

    @field_validator("registry")
    @classmethod
    def _repository(cls, value: str) -> str:
        """A repository to push to, not an image to run: no scheme, no digest, not the local-only name, and a
        registry path (``host/name``) rather than a bare name that would go to Docker Hub's library."""
        if not value:
            return ""
        if not _REPOSITORY.match(value):
            raise ValueError(
                f"{value!r} is not a registry repository: write host[:port]/path[:tag] "
                "(e.g. registry.example.com/ckbpool/pool), without https:// or @sha256"
            )
        if value.startswith(LOCAL_REGISTRY + "/"):
            raise ValueError(f"{value!r}: {LOCAL_REGISTRY} is the local-only name; give your registry's repository")
        return value


class Cloud(_Strict):
    """Inputs of the aws / alicloud targets, rendered into terraform.tfvars.json (the variables of terraform/aws)."""

    provider: Literal["aws", "alicloud"] = "aws"
    region: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")] = "us-east-1"
    instance_type: str = "c6i.xlarge"
    root_volume_size_gb: Annotated[int, Field(ge=20, le=2048)] = 30
    ssh_user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "ubuntu"
    ssh_public_key_file: str = "~/.ssh/id_ed25519.pub"  # its text goes into tfvars (a public key, not a secret)
    allowed_ssh_cidrs: list[str] = []  # required by the cloud targets: your admin network, e.g. 198.51.100.7/32
    open_node_p2p: bool = False
    # more inputs of terraform/<provider>, passed as they are (ami_id, zone_id, image_id, tags, ...)
    module_inputs: dict[str, Any] = {}


#: ``host:port`` of a managed service's endpoint (filled by the aws / alicloud targets from Terraform's outputs)
_ENDPOINT = r"^$|^[A-Za-z0-9.-]+:[0-9]{1,5}$"


class ManagedEndpoints(_Strict):
    """Where the managed services answer: written by the aws / alicloud targets after ``terraform apply`` (from the
    module's outputs), never by hand. No password is here: each one lives in ``secrets_dir`` (mode 0600), read from
    the cloud's secret store at render time (:mod:`ckbpool.deploy.cloud`)."""

    kafka_bootstrap: Annotated[str, Field(pattern=_BOOTSTRAP)] = ""  # SASL/SCRAM + TLS listeners, host:port,...
    kafka_username: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]*$", max_length=128)] = ""
    # MSK's SCRAM is SHA-512; ApsaraMQ for Kafka's is SHA-256
    kafka_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    redis: Annotated[str, Field(pattern=_ENDPOINT)] = ""  # the primary's host:port (TLS + AUTH)
    postgres: Annotated[str, Field(pattern=_ENDPOINT)] = ""  # the RDS instance's host:port (TLS)
    postgres_user: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]*$", max_length=63)] = ""
    postgres_db: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]*$", max_length=63)] = ""


class Managed(_Strict):
    """Services the cloud runs instead of the hosts (the aws / alicloud targets only; issue 20).

    ``kafka``: Amazon MSK / Alibaba's managed Kafka (SASL/SCRAM over TLS) is the bus, so ``services.kafka`` must be
    on. ``redis``: ElastiCache / ApsaraDB for Redis (TLS + AUTH) keeps the books, with ``services.redis`` on.
    ``postgres``: RDS PostgreSQL holds the payouts ledger (``payouts.enabled`` with ``database: postgres``).
    A managed service gets no container, no volume and no firewall opening on the hosts; its endpoint and
    credentials reach pool.toml through ``endpoints`` and ``secrets_dir``."""

    kafka: bool = False
    redis: bool = False
    postgres: bool = False
    endpoints: ManagedEndpoints = ManagedEndpoints()

    @property
    def any(self) -> bool:
        return self.kafka or self.redis or self.postgres

    def names(self) -> list[str]:
        """The managed services, in a stable order (for messages)."""
        return [n for n in ("kafka", "redis", "postgres") if getattr(self, n)]


class Kubernetes(_Strict):
    """Inputs of the ``k8s`` target (:mod:`ckbpool.deploy.k8s`): where the Helm release goes and how it is sized.

    ``kubeconfig`` and ``context`` pick the cluster (empty: kubectl's own defaults, ``$KUBECONFIG`` then
    ``~/.kube/config``); the release is named after ``name`` in ``namespace``. ``kafka_bootstrap``: an operator's
    existing Kafka (``host:port,...``) instead of the chart's own KRaft StatefulSet. ``service_type``: how the
    miner-facing Services (stratum, proxy, web) are exposed; everything else stays ClusterIP."""

    kubeconfig: str = ""
    context: str = ""
    namespace: Annotated[str, Field(pattern=NAME_PATTERN)] = "ckbpool"
    stratum_replicas: Annotated[int, Field(ge=1, le=100)] = 2
    storage_class: Annotated[str, Field(max_length=253)] = ""  # empty: the cluster's default StorageClass
    ckb_storage_gb: Annotated[int, Field(ge=1, le=65536)] = 200
    kafka_bootstrap: Annotated[str, Field(pattern=_BOOTSTRAP)] = ""
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"


class DeployConfig(_Strict):
    version: Literal[1] = 1
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    network: Network
    payout_address: str
    ports: Ports = Ports()
    bind: Bind = Bind()
    node: NodeOptions = NodeOptions()
    pool: PoolOptions = PoolOptions()
    services: Services = Services()
    proxy: ProxyOptions = ProxyOptions()  # with services.proxy
    redis: RedisOptions = RedisOptions()
    payouts: PayoutsOptions = PayoutsOptions()
    web: WebOptions = WebOptions()
    monitoring: Monitoring = Monitoring()
    topology: Topology = Topology()
    images: Images = Images()
    cloud: Cloud = Cloud()
    kubernetes: Kubernetes = Kubernetes()  # the k8s target
    resources: Resources = Resources()  # compose services' memory / pids limits (ckbpool.deploy.hardening)
    managed: Managed = Managed()  # the cloud's Kafka / Redis / PostgreSQL instead of the hosts' (aws / alicloud)
    # relative paths are relative to the directory of ckbpool.yaml
    secrets_dir: Path = Path("secrets")
    workspace: Path = Path("workspace")

    @field_validator("payout_address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            parse_address(value)
        except MalformedError as exc:
            raise ValueError(f"not a valid CKB address ({exc.problem})") from None
        return value.strip()

    @model_validator(mode="after")
    def _managed_services_used(self) -> DeployConfig:
        """A managed service must be one the deployment uses: managing an unused one would bill for nothing."""
        m, problems = self.managed, []
        if m.kafka and not self.services.kafka:
            problems.append("managed.kafka needs services.kafka: true (the managed Kafka is the pool's bus)")
        if m.redis and not self.services.redis:
            problems.append("managed.redis needs services.redis: true (the managed Redis keeps the books)")
        if m.postgres and not (self.payouts.enabled and self.payouts.database == "postgres"):
            problems.append(
                "managed.postgres needs payouts.enabled: true with payouts.database: postgres (it holds the ledger)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _resources_fit(self) -> DeployConfig:
        """``resources`` overrides that would keep a service from starting (a Redis limit below its own
        maxmemory, ...): refused here, each problem naming its key, rather than found as an OOM kill later."""
        from .hardening import limit_problems  # hardening reads this model: imported late, not at module load

        problems = limit_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived ---------------------------------------------------------------------------------------
    @property
    def runs_postgres(self) -> bool:
        """Whether the compose / hosts stacks run PostgreSQL (the payouts ledger); the local target never does,
        nor do the hosts when the cloud manages it (``managed.postgres``)."""
        return self.payouts.enabled and self.payouts.database == "postgres" and not self.managed.postgres

    def enabled_roles(self) -> list[str]:
        """Every deploy role this configuration runs somewhere (the roles hosts carry: PostgreSQL is placed by
        the hosts target itself, with the data -- ``render.default_postgres_hosts``). A managed Kafka or Redis
        (``managed``) is no host's role."""
        roles = ["ckb_node", *POOL_ROLES]
        if self.services.redis and not self.managed.redis:
            roles.append("redis")
        if self.services.kafka and not self.managed.kafka:
            roles.append("kafka")
        if self.services.proxy:
            roles.append("proxy")
        if self.monitoring.enabled:
            roles.append("monitoring")
        return roles


# ------------------------------------------------------------------------------------------ load / dump


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the model at ``loc``'s parent, for "unknown key" messages."""
    model: Any = DeployConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def describe_validation_error(exc: ValidationError) -> list[str]:
    """One ``key.path: message`` line per error, phrased for people editing YAML."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path = _format_loc(loc)
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            lines.append(f"{path}: unknown key{hint}")
        elif error["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            msg = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {msg}")
    return lines


def parse_config(data: object, source: str = "<config>") -> DeployConfig:
    if data is None:
        raise ConfigFileError(source, ["(top level): the file is empty"])
    if not isinstance(data, dict):
        raise ConfigFileError(source, [f"(top level): expected a mapping of keys, got {type(data).__name__}"])
    try:
        return DeployConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(source, describe_validation_error(exc)) from None


def load_config(path: Path) -> DeployConfig:
    """Read and validate ``ckbpool.yaml`` (schema only; :mod:`.validate` adds the semantic checks)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(source, ["file not found (create it with `ckbpool init`)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(source, [f"cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigFileError(source, [f"not valid YAML: {where}{problem}"]) from None
    return parse_config(data, source)


_HEADER = """\
# ckbpool deployment configuration (schema: ckbpool.deploy.config.DeployConfig; unknown keys are errors).
# Secrets are not in this file: they live in secrets_dir, generated by `ckbpool init` (mode 0600).
# Next: `ckbpool validate`, `ckbpool render`, `ckbpool deploy --target local|compose`.
"""


def dump_config(config: DeployConfig) -> str:
    data = config.model_dump(mode="json")
    return _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def resolve(base: Path, path: Path) -> Path:
    """``path`` relative to the directory of the config file (``~`` expanded), absolute."""
    path = path.expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
