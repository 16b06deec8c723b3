"""What the ``btcpool`` Ansible role puts on each host: role variables <-> config, placement, per-host files.

The role has no templates of its own. On the controller, its ``btcpool_render`` lookup calls :func:`host_files`,
which renders the *same* jinja2 templates as ``ckbpool render`` (``src/ckbpool/templates``) with the same context
builders, adjusted to where each service runs (the context, never the rendered text: no file is parsed back):

* one host carrying every role gets exactly the files of ``workspace/compose`` (the compose target's stack);
* with several hosts, each host gets the compose stack of the services its inventory groups give it. Services on
  the same host find each other by compose service name, as in the compose stack; services on other hosts through
  the peer's ``btcpool_private_address`` and the port in ``btcpool_ports``, published there only when a peer needs it.
  Its compose.yaml is compose.yaml.j2 rendered with a ``stack`` of that host's services and ports
  (:func:`ckbpool.deploy.render.compose_stack`), so it keeps the template's layout and comments.

:func:`firewall_rules` derives, from the same placement, which source addresses may reach each published port;
the ``host-firewall.nft.j2`` template turns that into an nftables table.

Role variables (``btcpool_*``) map one to one onto ``ckbpool.yaml`` keys (:data:`ROLE_VARS`), so the CLI's
``hosts`` target hands the role exactly its config, and a role user gets the config schema's checks, reported with
the role variable's name.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..pool.config import IDS_PER_STRATUM_HOST
from . import pki
from . import secrets as sec
from .config import POOL_ROLES, DeployConfig, parse_config, private_address_problem
from .errors import ConfigFileError, DeployError
from .kafka_security import pool_principal
from .render import (
    COMPOSE_CONFIG_DIRS,
    COMPOSE_PORTS,
    INNER,
    PAYOUTS_ROLES,
    PUBLIC_PORTS,
    WEB_ROLES,
    add_secrets,
    artifacts,
    build_context,
    compose_context,
    compose_ledger,
    compose_secret_paths,
    compose_stack,
    default_postgres_hosts,
    environment,
    hosted,
    kafka_secured,
    page_url,
    payouts_settings,
    render_files,
    rpc_filter_settings,
    secure_kafka,
    secure_stack_secrets,
    use_managed_endpoints,
)
from .secrets import required_files
from .target import Paths

#: role variable -> key path in ckbpool.yaml (dicts: merged over the schema's defaults)
ROLE_VARS: dict[str, str] = {
    "btcpool_pool_name": "name",
    "btcpool_network": "network",
    "btcpool_payout_address": "payout_address",
    "btcpool_ports": "ports",
    "btcpool_bind_public": "bind.public",
    "btcpool_bind_private": "bind.private",
    "btcpool_node_dev_difficulty": "node.dev_difficulty",
    "btcpool_node_dev_epoch_length": "node.dev_epoch_length",
    "btcpool_node_block_message": "node.block_message",
    "btcpool_share_interval_s": "pool.share_interval_s",
    "btcpool_pool_initial_hashrate": "pool.initial_hashrate",
    "btcpool_pool_max_connections": "pool.max_connections",
    "btcpool_redis_enabled": "services.redis",
    "btcpool_redis_maxmemory_mb": "redis.maxmemory_mb",
    "btcpool_kafka_enabled": "services.kafka",
    "btcpool_kafka_security": "services.kafka_security",
    "btcpool_proxy_enabled": "services.proxy",
    "btcpool_proxy_identity": "proxy.identity",
    "btcpool_payouts": "payouts",
    "btcpool_web": "web",
    "btcpool_monitoring_enabled": "monitoring.enabled",
    "btcpool_grafana_enabled": "monitoring.grafana",
    "btcpool_kafka_exporter_enabled": "monitoring.kafka_exporter",
    "btcpool_monitoring_retention": "monitoring.retention",
    "btcpool_monitoring_scrape_interval": "monitoring.scrape_interval",
    "btcpool_images": "images",
    "btcpool_managed": "managed",
}
#: inventory groups the role reads; ``pool`` is the four pool roles together
GROUPS: tuple[str, ...] = ("ckb_node", "pool", *POOL_ROLES, "redis", "kafka", "proxy", "monitoring", "postgres")
#: groups that hold at most one host in this version
SINGLE_HOST_GROUPS: tuple[str, ...] = ("ckb_node", "redis", "kafka", "monitoring", "jobmaker", "blockmaker", "postgres")
#: the compose project of a deployment on a host (the same name as the compose target's)
SECRETS_SUBDIR = "secrets"
#: the RPC filter's configuration on the node's host (beside pool.toml: the same image reads both)
RPC_FILTER_TOML = "compose/pool/rpc-filter.toml"
#: a scraped host's scrape gateway configuration (its own directory: the gateway may be a host's only
#: ckbpool-image service, and its changes should restart it alone)
SCRAPE_GATEWAY_TOML = "compose/scrape-gateway/gateway.toml"
#: PostgreSQL's client authentication when a ledger client is on another host: TLS (hostssl) only
POSTGRES_HBA = "compose/postgres/pg_hba.conf"
#: where the compose secrets are in the containers: the deployment CA (every TLS client verifies against it)
SECRET_CA = "/run/secrets/kafka_ca"


class RoleVarsError(DeployError):
    """Role variables that do not make a valid deployment; each problem names its ``btcpool_*`` variable."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _get(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
    data[parts[-1]] = value


def role_vars(config: DeployConfig, paths: Paths) -> dict[str, Any]:
    """Every ``btcpool_*`` variable of ``config`` (what the hosts target passes to the role as extra vars)."""
    data = config.model_dump(mode="json")
    out = {var: _get(data, path) for var, path in ROLE_VARS.items()}
    out["btcpool_secrets_dir"] = str(paths.secrets_dir)
    out["btcpool_ckbpool_version"] = __version__
    return out


def _var_for(key_path: str) -> str:
    """``ports.stratum`` -> ``btcpool_ports.stratum``: the role variable a config key path comes from."""
    best = ""
    for var, path in ROLE_VARS.items():
        if (key_path == path or key_path.startswith(path + ".")) and len(path) > len(best):
            best, name = path, var
    if not best:
        return key_path
    return name + key_path[len(best) :]


def config_from_role_vars(variables: dict[str, Any]) -> DeployConfig:
    """The deployment the role variables describe, checked by the config schema; errors name role variables."""
    data: dict[str, Any] = {"version": 1}
    for var, path in ROLE_VARS.items():
        value = variables.get(var)
        if value is None:
            continue
        _set(data, path, value)
    try:
        return parse_config(data, "role variables")
    except ConfigFileError as exc:
        problems = []
        for line in exc.problems:
            key, sep, message = line.partition(": ")
            problems.append(f"{_var_for(key)}: {message}" if sep else line)
        raise RoleVarsError(problems) from None


# ------------------------------------------------------------------------------------------ placement


@dataclass(frozen=True)
class Placement:
    """Which host runs what, from the inventory groups, and each host's private address."""

    addresses: dict[str, str]  # host -> the address its peers use
    roles: dict[str, list[str]]  # host -> deploy roles (pool expanded), in GROUPS order

    @classmethod
    def from_inventory(
        cls,
        config: DeployConfig,
        groups: dict[str, list[str]],
        addresses: dict[str, str],
        fallback: dict[str, str] | None = None,
    ) -> Placement:
        """``addresses``: each host's private address (inventory ``private_ip`` / ``btcpool_private_address``);
        ``fallback``: where SSH reaches it (``ansible_host``), used only when one host carries everything.

        With more than one host, peers reach each other's internal ports on the private address, so every host
        must have one (one problem line names all that lack it): falling back to the SSH address would publish
        node RPC, Redis and Kafka on what is often a public address, with only nftables in front."""
        problems: list[str] = []
        enabled = config.enabled_roles()
        roles: dict[str, list[str]] = {}
        if config.runs_postgres:
            enabled = [*enabled, "postgres"]  # placed by its group, or with the data (below)
        for group in GROUPS:
            for host in groups.get(group) or []:
                for role in POOL_ROLES if group == "pool" else (group,):
                    if role not in enabled:
                        problems.append(f"inventory group {group}: {host} is in it but {_switch(role)} is false")
                        continue
                    bucket = roles.setdefault(host, [])
                    if role not in bucket:
                        bucket.append(role)
        if "postgres" in enabled and not groups.get("postgres"):
            # no postgres group: the ledger's database goes with the other data (default_postgres_hosts)
            for host in default_postgres_hosts(config, {h: rs for h, rs in roles.items()}):
                roles[host].append("postgres")
        if len(roles) > 1:
            problems += private_address_problems(roles, addresses)
            chosen = {h: str(addresses.get(h) or h) for h in roles}
        else:
            chosen = {h: str(addresses.get(h) or (fallback or {}).get(h) or h) for h in roles}
        placement = cls(chosen, roles)
        for role in enabled:
            hosts = placement.hosts_with(role)
            group = "pool" if role in POOL_ROLES else role
            if not hosts:
                problems.append(f"inventory group {group}: no host runs {role} (add a host to the group)")
            elif role in SINGLE_HOST_GROUPS and len(hosts) > 1:
                problems.append(
                    f"inventory group {group}: {len(hosts)} hosts ({', '.join(hosts)}); this version runs one"
                )
        pool_hosts = {h for h, rs in roles.items() if set(rs) & set(POOL_ROLES)}
        if len(pool_hosts) > 1 and not config.services.kafka:
            problems.append(
                f"btcpool_kafka_enabled: pool roles run on {len(pool_hosts)} hosts ({', '.join(sorted(pool_hosts))}); "
                "they talk through Kafka, so it must be true"
            )
        if problems:
            raise RoleVarsError(problems)
        return placement

    @classmethod
    def single(cls, config: DeployConfig, host: str = "localhost", address: str = "127.0.0.1") -> Placement:
        return cls.from_inventory(
            config, {"pool": [host], **{r: [host] for r in config.enabled_roles()}}, {host: address}
        )

    def hosts_with(self, role: str) -> list[str]:
        return [h for h, rs in self.roles.items() if role in rs]

    def first(self, role: str) -> str | None:
        hosts = self.hosts_with(role)
        return hosts[0] if hosts else None

    @property
    def is_single(self) -> bool:
        return len(self.roles) == 1


def private_address_problems(hosts: Iterable[str], addresses: dict[str, str]) -> list[str]:
    """At most one line: the hosts of a multi-host inventory without a usable private address.

    A literal IP must be RFC 1918 / ULA (not loopback, not 0.0.0.0, not public); a name is taken as the
    operator's private DNS."""
    missing: list[str] = []
    wrong: list[str] = []
    for host in sorted(hosts):
        address = str(addresses.get(host) or "").strip()
        if not address:
            missing.append(host)
            continue
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue  # a host name of the private network
        problem = private_address_problem(address, loopback=False)
        if problem is not None:
            wrong.append(f"{host} ({address})")
    if not missing and not wrong:
        return []
    parts = []
    if missing:
        parts.append(f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} none")
    if wrong:
        parts.append(f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not private")
    return [
        f"private_ip: more than one host, so each needs a private address its peers reach it on, and "
        f"{'; '.join(parts)}: set private_ip (RFC 1918 or IPv6 ULA) for each host in the inventory (Terraform's "
        "inventory sets it); internal ports are never published on ansible_host"
    ]


def _switch(role: str) -> str:
    return {
        "redis": "btcpool_redis_enabled",
        "kafka": "btcpool_kafka_enabled",
        "proxy": "btcpool_proxy_enabled",
        "monitoring": "btcpool_monitoring_enabled",
        "postgres": "btcpool_payouts.enabled (with database: postgres)",
    }.get(role, role)


def payouts_host(config: DeployConfig, placement: Placement) -> str | None:
    """The one host that runs the payout engine (the payouts service): the first that runs accounting, where the
    wallet key and the ledger's password are. Never two: two engines would race to pay the same balances."""
    if not config.payouts.enabled:
        return None
    for role in PAYOUTS_ROLES:
        host = placement.first(role)
        if host is not None:
            return host
    return None


def serves_web(config: DeployConfig, placement: Placement, host: str) -> bool:
    """Whether ``host``'s pool serves the miners' page: every host that runs accounting (they read the same
    books and ledger, so any of them answers alike)."""
    return config.web.enabled and bool(set(WEB_ROLES) & set(placement.roles.get(host, [])))


@dataclass(frozen=True)
class Crossing:
    """What crosses hosts, and is therefore secured (issue 18): the bus (TLS + SASL/SCRAM + ACLs), Redis (TLS;
    its ACL users are on everywhere), the node's RPC (through the RPC filter: TLS, a token, an allowlist), the
    ledger's PostgreSQL (TLS only, verify-full) and Prometheus's scrapes (each scraped host's scrape gateway:
    TLS and a bearer token)."""

    kafka: bool  # some pool process runs on another host than the broker (or services.kafka_security: always)
    redis: bool  # some Redis client (pool, payouts) runs on another host than Redis
    node: bool  # some pool process runs on another host than the node
    postgres: bool = False  # some ledger client (the accounting hosts' pool and payouts) is on another host
    scrapes: bool = False  # Prometheus scrapes a host other than its own (node-exporter runs on every host)

    @classmethod
    def of(cls, config: DeployConfig, placement: Placement) -> Crossing:
        clients = [h for h, rs in placement.roles.items() if set(rs) & set(POOL_ROLES)]

        def elsewhere(role: str, hosts: list[str]) -> bool:
            provider = placement.first(role)
            return provider is not None and any(h != provider for h in hosts)

        kafka_remote = config.services.kafka and elsewhere("kafka", clients)
        ledger_clients = [h for role in PAYOUTS_ROLES for h in placement.hosts_with(role)]
        return cls(
            kafka=kafka_secured(config, kafka_remote),
            redis=config.services.redis and elsewhere("redis", clients),
            node=elsewhere("ckb_node", clients),
            postgres=config.runs_postgres and elsewhere("postgres", ledger_clients),
            scrapes=config.monitoring.enabled and elsewhere("monitoring", list(placement.roles)),
        )


def scrape_gateway_keystore(host: str) -> str:
    """The file of ``host``'s scrape gateway keystore in secrets_dir: ``tls-scrape-<host>-<hash>.pem`` (the
    inventory name made file-safe, and a hash of it so that ``a.b`` and ``a-b`` never share a certificate)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", host.lower()).strip("-")[:40] or "host"
    return pki.server_keystore_file(f"scrape-{slug}-{_sha256(host)[:8]}")


@dataclass(frozen=True)
class Scrape:
    """One target of Prometheus: ``job`` on ``host``'s port ``key`` (a compose service's), at ``path``."""

    job: str
    host: str
    key: str
    path: str = "/metrics"

    @property
    def service(self) -> str:
        return COMPOSE_PORTS[self.key][0]

    @property
    def internal_url(self) -> str:
        """Where the host's own services (its scrape gateway) reach it: the compose network."""
        return f"http://{self.service}:{COMPOSE_PORTS[self.key][1]}{self.path}"


def scrapes(config: DeployConfig, placement: Placement) -> list[Scrape]:
    """Every scrape of the deployment's Prometheus, in prometheus.yml's job order (none without monitoring)."""
    if not config.monitoring.enabled:
        return []
    pool_hosts = [h for h, rs in placement.roles.items() if set(rs) & set(POOL_ROLES)]
    out = [Scrape("ckbpool", h, "pool_http") for h in pool_hosts]
    out += [Scrape("ckb", h, "node_metrics", "/") for h in placement.hosts_with("ckb_node")]
    out += [Scrape("node", h, "node_exporter") for h in placement.roles]
    if config.services.redis:
        out += [Scrape("redis", h, "redis_exporter") for h in placement.hosts_with("redis")]
    if config.services.kafka and config.monitoring.kafka_exporter:
        out += [Scrape("kafka", h, "kafka_exporter") for h in placement.hosts_with("kafka")]
    if config.services.proxy:
        out += [Scrape("proxy", h, "proxy_http") for h in placement.hosts_with("proxy")]
    if config.runs_postgres:
        out += [Scrape("postgres", h, "postgres_exporter") for h in placement.hosts_with("postgres")]
    engine = payouts_host(config, placement)
    if engine is not None:
        out.append(Scrape("payouts", engine, "payouts_metrics"))
    return out


def gateway_targets(config: DeployConfig, placement: Placement, host: str) -> dict[str, str]:
    """job -> internal /metrics URL of what the monitoring host scrapes on ``host`` through its scrape gateway
    (empty on the monitoring host itself, and when nothing crosses hosts)."""
    mon = placement.first("monitoring")
    if mon is None or mon == host:
        return {}
    return {s.job: s.internal_url for s in scrapes(config, placement) if s.host == host}


def ensure_host_secrets(config: DeployConfig, placement: Placement, secrets_dir: Path) -> list[str]:
    """The certificates this placement needs, for the addresses its peers use (the lookup runs this on the
    controller before rendering; idempotent, under the secrets lock): the broker's keystore, Redis's and the RPC
    filter's, each naming its host's private address (what clients verify) and its compose service name."""
    crossing = Crossing.of(config, placement)
    servers: dict[str, list[str]] = {}
    kafka_sans: list[str] | None = None
    if crossing.kafka:
        kafka_host = placement.first("kafka")
        assert kafka_host is not None
        kafka_sans = [placement.addresses[kafka_host], "kafka", "localhost"]
    if crossing.redis:
        redis_host = placement.first("redis")
        assert redis_host is not None
        servers["redis"] = [placement.addresses[redis_host], "redis", "localhost"]
    if crossing.node:
        node_host = placement.first("ckb_node")
        assert node_host is not None
        servers["rpc-filter"] = [placement.addresses[node_host], "rpc-filter", "localhost"]
    if crossing.postgres:
        pg_host = placement.first("postgres")
        assert pg_host is not None
        # the clients on other hosts verify the private address; the exporter beside it the service name
        servers["postgres"] = [placement.addresses[pg_host], "postgres", "localhost"]
    created: list[str] = []
    if crossing.scrapes:
        if sec.ensure_token(secrets_dir, sec.SCRAPE_TOKEN):  # before the lock below: flock is not re-entrant
            created.append(sec.SCRAPE_TOKEN)
        for host in placement.roles:
            if gateway_targets(config, placement, host):
                service = scrape_gateway_keystore(host).removeprefix("tls-").removesuffix(".pem")
                servers[service] = [placement.addresses[host], "scrape-gateway", "localhost"]
    if kafka_sans is None and not servers:
        return created
    return created + sec.ensure_server_secrets(secrets_dir, kafka_sans=kafka_sans, servers=servers)


def services_on(config: DeployConfig, placement: Placement, host: str) -> list[str]:
    """Compose services that run on ``host`` (in the order of compose.yaml)."""
    roles = placement.roles.get(host, [])
    mon = config.monitoring.enabled
    out: list[str] = []
    if "ckb_node" in roles:
        out.append("ckb")
        if not placement.is_single and Crossing.of(config, placement).node:
            out.append("rpc-filter")  # what the pools on other hosts reach instead of the node's RPC
    if set(roles) & set(POOL_ROLES):
        out.append("pool")
    if "redis" in roles:
        out.append("redis")
    if "kafka" in roles:
        out.append("kafka")
    if "postgres" in roles:
        out.append("postgres")
    if payouts_host(config, placement) == host:
        out.append("payouts")
    if "proxy" in roles:
        out.append("proxy")
    if "monitoring" in roles:
        out.append("prometheus")
    if mon:
        out.append("node-exporter")  # every host is scraped
    if mon and "redis" in roles:
        out.append("redis-exporter")
    if mon and "kafka" in roles and config.monitoring.kafka_exporter:
        out.append("kafka-exporter")
    if mon and "postgres" in roles:
        out.append("postgres-exporter")
    if gateway_targets(config, placement, host):
        out.append("scrape-gateway")  # the monitoring host scrapes this one: over TLS, with the token
    if "monitoring" in roles and config.monitoring.grafana:
        out.append("grafana")
    return out


# ------------------------------------------------------------------------------------------- rendering


@dataclass
class HostPlan:
    """One host's files (relative to ``btcpool_install_dir``), services, secrets, ports and firewall rules."""

    host: str
    services: list[str]
    files: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # file names in btcpool_secrets_dir
    profiles: list[str] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)  # {port, address, key, service}
    firewall: list[dict[str, Any]] = field(default_factory=list)  # {port, key, sources}
    # the Kafka host of a secured bus: what the role's controller-side step creates as ``admin`` (topics, ACLs):
    # {bootstrap, processes (the roles of each pool host), exporter}
    kafka_admin: dict[str, Any] | None = None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Peers:
    """Addresses of services as seen from one host: compose DNS names when local, peer address:port otherwise."""

    def __init__(self, config: DeployConfig, placement: Placement, host: str) -> None:
        self.config, self.placement, self.host = config, placement, host
        self.ports = config.ports.model_dump()

    def where(self, role: str) -> str | None:
        return self.placement.first(role)

    def local(self, role: str) -> bool:
        return self.where(role) == self.host

    def endpoint(self, role: str, service: str, key: str) -> tuple[str, int]:
        """(host, port) of ``service``'s port ``key`` for a client on this host."""
        if self.local(role):
            return service, COMPOSE_PORTS[key][1]
        peer = self.where(role)
        assert peer is not None
        return self.placement.addresses[peer], self.ports[key]


def _consumers(config: DeployConfig, placement: Placement) -> dict[tuple[str, str], list[str]]:
    """(host, port key) -> hosts that connect to that port from elsewhere (who needs it published)."""
    need: dict[tuple[str, str], list[str]] = {}

    def add(provider_role: str, key: str, client_roles: list[str]) -> None:
        provider = placement.first(provider_role)
        if provider is None:
            return
        for role in client_roles:
            for client in placement.hosts_with(role):
                if client != provider and client not in need.setdefault((provider, key), []):
                    need[(provider, key)].append(client)

    pool = list(POOL_ROLES)
    if Crossing.of(config, placement).node:
        # the pools on other hosts reach the RPC filter; the node's own RPC stays on its host (bind.private)
        add("ckb_node", "node_rpc_filter", pool)
        add("ckb_node", "node_tcp_rpc_filter", pool)
    else:
        add("ckb_node", "node_rpc", pool)
        add("ckb_node", "node_tcp_rpc", pool)
    if config.services.redis:
        add("redis", "redis", pool)
    if config.services.kafka:
        add("kafka", "kafka", pool)
    if config.services.proxy:
        add("stratum", "stratum", ["proxy"])
    if config.runs_postgres:
        add("postgres", "postgres", list(PAYOUTS_ROLES))  # the hosts whose pool.toml has [payouts]
    mon = placement.first("monitoring")
    if mon is not None:
        # Prometheus reaches another host's exporters only through that host's scrape gateway (TLS + token);
        # the exporters' own ports stay on the host's internal network
        for h in placement.roles:
            if gateway_targets(config, placement, h):
                need[(h, "scrape_gateway")] = [mon]
    return need


def host_plan(
    config: DeployConfig,
    placement: Placement,
    host: str,
    *,
    install_dir: str,
    controller_secrets_dir: Path,
) -> HostPlan:
    """Everything ``host`` gets. With one host carrying every role, the compose files equal ``ckbpool render``'s."""
    if host not in placement.roles:
        return HostPlan(host, [])
    config = hosted(config)  # a Kafka / Redis the cloud manages is none of this host's services (issue 20)
    services = services_on(config, placement, host)
    peers = _Peers(config, placement, host)
    roles = placement.roles[host]
    install = Path(install_dir)
    host_paths = Paths(install / "ckbpool.yaml", install / SECRETS_SUBDIR, install)
    controller_paths = Paths(controller_secrets_dir / "ckbpool.yaml", controller_secrets_dir, install)

    common = build_context(config, controller_paths)  # reads the authority public key on the controller
    common["secrets_dir"] = str(host_paths.secrets_dir)
    ctx: dict[str, Any] = {**common, **compose_context(config, host_paths)}

    consumers = _consumers(config, placement)
    kafka_admin: dict[str, Any] | None = None
    env = environment()
    extra_files: dict[str, str] = {}  # the hosts target's own: PostgreSQL's pg_hba.conf, the scrape gateway's

    # -- where this host's services find the others ---------------------------------------------------
    if not placement.is_single:
        pool = ctx["pool"]
        pool["roles"] = [r for r in POOL_ROLES if r in roles]
        if "stratum" in roles:
            # each stratum host its own range of server ids: unique extranonce prefixes across hosts and their
            # worker processes, and a Kafka consumer group of its own for templates (stratum-<server_id>)
            pool["server_id"] = 1 + placement.hosts_with("stratum").index(host) * IDS_PER_STRATUM_HOST
        crossing = Crossing.of(config, placement)
        if peers.local("ckb_node") or not crossing.node:
            node_host, node_port = peers.endpoint("ckb_node", "ckb", "node_rpc")
            tcp_host, tcp_port = peers.endpoint("ckb_node", "ckb", "node_tcp_rpc")
            pool["rpc_url"] = f"http://{node_host}:{node_port}"
        else:
            # the node on another host: its RPC filter, over TLS with the token (issue 18)
            node_host, node_port = peers.endpoint("ckb_node", "rpc-filter", "node_rpc_filter")
            tcp_host, tcp_port = peers.endpoint("ckb_node", "rpc-filter", "node_tcp_rpc_filter")
            pool["rpc_url"] = f"https://{node_host}:{node_port}"
            pool["node_tls"] = {"ca_file": "/run/secrets/kafka_ca", "token_file": "/run/secrets/rpc_filter_token"}
        pool["subscribe_address"] = f"{tcp_host}:{tcp_port}"
        if config.services.redis:
            r_host, r_port = peers.endpoint("redis", "redis", "redis")
            if peers.local("redis"):
                pool["redis_url"] = f"redis://{r_host}:{r_port}/0"
            else:  # across hosts: TLS, the server checked against the deployment CA
                pool["redis_url"] = f"rediss://{r_host}:{r_port}/0"
                pool["redis_tls_ca_file"] = "/run/secrets/kafka_ca"
            if "redis" in roles and crossing.redis:
                ctx["redis"] = {
                    **ctx["redis"],
                    "tls": {
                        "port": INNER["redis_tls"],
                        "keystore": "/run/secrets/redis_tls",
                        "ca": "/run/secrets/kafka_ca",
                    },
                }
        kafka_remote_clients = any(c != placement.first("kafka") for r in POOL_ROLES for c in placement.hosts_with(r))
        if config.services.kafka:
            kafka_host = placement.first("kafka")
            assert kafka_host is not None
            # one advertised address for every client: the kafka host's, when any client is elsewhere
            if kafka_remote_clients:
                k_addr, k_port = placement.addresses[kafka_host], config.ports.kafka
            else:
                k_addr, k_port = "kafka", INNER["kafka"]
            if crossing.kafka:
                own = [r for r in POOL_ROLES if r in roles]
                secure_kafka(
                    ctx, config, advertised=k_addr, port=k_port, principal=pool_principal(own or POOL_ROLES),
                    exporter="kafka-exporter" in services,
                )  # fmt: skip
            else:
                if kafka_remote_clients:
                    ctx["kafka"] = {**ctx["kafka"], "env": {**ctx["kafka"]["env"]}}
                    ctx["kafka"]["env"]["KAFKA_ADVERTISED_LISTENERS"] = f"PLAINTEXT://{k_addr}:{k_port}"
                pool["bus_url"] = f"kafka://{k_addr}:{k_port}?client_id=pool-{host}&spool_dir=/var/lib/ckbpool/spool"
        if "accounting" in roles and config.runs_postgres:
            db_host, db_port = peers.endpoint("postgres", "postgres", "postgres")
            pool["payouts"] = payouts_settings(
                config,
                database=compose_ledger(config, db_host, db_port),
                wallet_key_file="/run/secrets/payout_wallet_key",
                metrics=("0.0.0.0", INNER["payouts_metrics"]),
            )
            if pool["payouts"] is not None and not peers.local("postgres"):
                # the ledger on another host: TLS only, the server's certificate checked against the deployment
                # CA for the address dialled (issue 18); the password stays a file
                pool["payouts"] = {**pool["payouts"], "db_sslmode": "verify-full", "db_sslrootcert": SECRET_CA}
        elif not set(PAYOUTS_ROLES) & set(roles):
            pool["payouts"] = None  # the ledger and the wallet stay on the host that runs the payouts
        if not serves_web(config, placement, host):
            pool["web"] = None  # the page is served where the books are read: the accounting hosts
        elif pool["web"] is not None and not config.web.public_url:
            # the address the inventory reaches this host on (the cloud targets: its public IP)
            pool["web"] = {**pool["web"], "public_url": page_url(config, placement.addresses[host])}
        if config.services.proxy:
            up_host, up_port = peers.endpoint("stratum", "pool", "stratum")
            ctx["proxy"] = {**ctx["proxy"], "upstream_host": up_host, "upstream_port": up_port}
        if "monitoring" in roles:
            jobs = _prometheus_jobs(config, placement, peers)
            # scrapes of other hosts read the CA and the token: Prometheus runs as their owner (CKBPOOL_UID)
            ctx["prometheus"] = {"jobs": jobs, "secured": any(job.get("tls") for job in jobs)}
        if "postgres" in roles and crossing.postgres:
            hba = env.get_template("pg_hba.conf.j2").render(ctx)
            extra_files[POSTGRES_HBA] = hba
            ctx["postgres"] = {
                **ctx["postgres"],
                "tls": {"keystore": "/run/secrets/postgres_tls", "hba": "/etc/postgresql/pg_hba.conf",
                        "digest": _sha256(hba)[:16]},
                # the exporter beside it dials the service name, which the certificate names too
                "exporter_uri": f"{ctx['postgres']['exporter_uri'].partition('?')[0]}"
                f"?sslmode=verify-full&sslrootcert={SECRET_CA}",
            }  # fmt: skip
        targets = gateway_targets(config, placement, host)
        if targets:
            ctx["scrape_gateway"] = {
                "listen_host": "0.0.0.0",
                "listen_port": INNER["scrape_gateway"],
                "tls_cert_file": "/run/secrets/scrape_tls",
                "tls_key_file": "/run/secrets/scrape_tls",
                "token_file": "/run/secrets/scrape_token",
                "targets": targets,
            }
            gateway_toml = env.get_template("scrape-gateway.toml.j2").render({**ctx, "gateway_host": host})
            extra_files[SCRAPE_GATEWAY_TOML] = gateway_toml
            ctx["scrape_gateway_digest"] = _sha256(gateway_toml)[:16]
            ctx["secret_files"] = {**ctx["secret_files"], "scrape_tls": scrape_gateway_keystore(host)}
        ctx["stack"] = _host_stack(config, placement, host, services, consumers)
        secure_stack_secrets(
            ctx["stack"],
            kafka=crossing.kafka,
            redis_tls="redis" in roles and crossing.redis,
            rpc_client=crossing.node and not peers.local("ckb_node"),
            redis_client_tls=config.services.redis and crossing.redis and not peers.local("redis"),
        )
        _secure_ledger_and_scrapes(ctx, crossing, roles, ledger_client=not peers.local("postgres"))
        if config.managed.any:  # this host's own stack: the managed services' endpoints and credentials again
            use_managed_endpoints(ctx, config)
        ctx["compose_secrets"] = compose_secret_paths(host_paths, ctx["secret_files"])
        if "rpc-filter" in services:
            ctx["rpc_filter"] = rpc_filter_settings()
        if crossing.kafka and "kafka" in services:
            kafka_admin = {
                "bootstrap": f"{placement.addresses[host]}:{config.ports.kafka}",
                "processes": [
                    [r for r in POOL_ROLES if r in rs] for rs in placement.roles.values() if set(rs) & set(POOL_ROLES)
                ],
                "exporter": "kafka-exporter" in services,
            }

    # -- files ------------------------------------------------------------------------------------
    wanted_dirs = {"ckb": "ckb" in services, "pool": bool({"pool", "proxy", "rpc-filter"} & set(services)),
                   "redis": "redis" in services, "prometheus": "prometheus" in services,
                   "grafana": "grafana" in services, "kafka": "kafka" in services}  # fmt: skip
    # what `ckbpool render` writes for the compose stack: files copied verbatim (alert rules, dashboards) are
    # taken as they are; templated ones are rendered again with this host's context
    reference = {p: t for p, t in render_files(config, controller_paths).items() if p.startswith("compose/")}
    templated = {a.path: a for a in artifacts(config) if a.path in reference}

    def wanted(path: str) -> bool:
        sub = path.split("/")[1]
        return placement.is_single or wanted_dirs.get(sub, True)

    files: dict[str, str] = {p: t for p, t in reference.items() if p not in templated and wanted(p)}
    filter_toml = env.get_template("rpc-filter.toml.j2").render(ctx) if "rpc-filter" in services else None
    if filter_toml is not None:
        files[RPC_FILTER_TOML] = filter_toml  # before compose.yaml: part of the pool directory's config digest
    for path in sorted(templated, key=lambda p: (p == "compose/compose.yaml", list(reference).index(p))):
        if not wanted(path):
            continue
        if path == "compose/compose.yaml":
            # the same digest as render's: each service's config files, so `up` recreates what changed
            ctx["config_digest"] = {
                service: _sha256("".join(t for p, t in sorted(files.items()) if p.startswith(f"compose/{sub}/")))[:16]
                for service, sub in COMPOSE_CONFIG_DIRS.items()
            }
        files[path] = env.get_template(templated[path].template).render(ctx)
    files = {p: files[p] for p in reference if p in files}
    if filter_toml is not None:
        files[RPC_FILTER_TOML] = filter_toml
    files.update(extra_files)

    plan = HostPlan(host, services, files)
    plan.kafka_admin = kafka_admin
    plan.profiles = ["core"] + (["monitoring"] if config.monitoring.enabled else [])
    plan.published = _published(ctx["stack"])
    plan.secrets = [ctx["secret_files"][name] for name in ctx["stack"]["secrets"]]
    plan.firewall = _firewall(config, placement, host, plan.published, consumers)
    return plan


def _prometheus_jobs(config: DeployConfig, placement: Placement, peers: _Peers) -> list[dict[str, Any]]:
    """prometheus.yml's jobs on the monitoring host: its own targets on the compose network (plain HTTP, never
    off the host), and every other host's through that host's scrape gateway -- ``https`` to its private
    address, the certificate checked against the deployment CA, the bearer token from a file -- in a job of
    its own (``<job>-gateway``: scheme, TLS and auth are per job) whose targets keep the ``job`` label, so
    alerts and dashboards see one job either way."""
    jobs: list[dict[str, Any]] = [{"name": "prometheus", "targets": ["localhost:9090"], "path": None}]
    by_job: dict[str, list[Scrape]] = {}
    for scrape in scrapes(config, placement):
        by_job.setdefault(scrape.job, []).append(scrape)
    for job, entries in by_job.items():
        path = entries[0].path if entries[0].path != "/metrics" else None
        local = [f"{s.service}:{COMPOSE_PORTS[s.key][1]}" for s in entries if s.host == peers.host]
        remote = [s.host for s in entries if s.host != peers.host]
        if local:
            jobs.append({"name": job, "targets": local, "path": path})
        if remote:
            jobs.append({
                "name": f"{job}-gateway",
                "targets": [_host_port(placement.addresses[h], peers.ports["scrape_gateway"]) for h in remote],
                "path": f"/scrape/{job}",
                "labels": {"job": job},
                "tls": {"ca_file": SECRET_CA, "credentials_file": "/run/secrets/scrape_token"},
            })  # fmt: skip
    return jobs


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _secure_ledger_and_scrapes(
    ctx: dict[str, Any], crossing: Crossing, roles: list[str], *, ledger_client: bool
) -> None:
    """The secrets of the ledger's TLS and the scrape gateways, per service of this host's stack: PostgreSQL's
    keystore (and the CA for its exporter), the CA for the ledger's clients on other hosts, the gateway's
    keystore and token, and for Prometheus the CA and token its remote jobs read."""
    stack = ctx["stack"]
    if crossing.postgres and "postgres" in roles:
        add_secrets(stack, "postgres", ("postgres_tls",))
        add_secrets(stack, "postgres-exporter", ("kafka_ca",))
    if crossing.postgres and ledger_client:
        for client in ("pool", "payouts"):
            if client in stack["services"] and "postgres_password" in stack["services"][client]["secrets"]:
                add_secrets(stack, client, ("kafka_ca",))
    if ctx.get("prometheus", {}).get("secured"):
        add_secrets(stack, "prometheus", ("kafka_ca", "scrape_token"))


def _host_stack(
    config: DeployConfig,
    placement: Placement,
    host: str,
    services: list[str],
    consumers: dict[tuple[str, str], list[str]],
) -> dict[str, Any]:
    """The ``stack`` context of compose.yaml.j2 for ``host``: its services, and on its private address each port
    a peer connects to (:func:`_consumers`: the same list the firewall admits those peers from)."""
    private = placement.addresses[host]
    publish = {
        key: private
        for key, (service, _inner) in COMPOSE_PORTS.items()
        if service in services and consumers.get((host, key))
    }
    # Once pool roles run on other hosts the broker advertises its host's private address, which the exporter
    # beside it dials too: from the internal backend network there is no route to it, so it joins edge.
    stack = compose_stack(config, services=services, host=host, publish=publish, outbound=("kafka-exporter",))
    crossing = Crossing.of(config, placement)
    redis = stack["services"].get("redis")
    if redis is not None and crossing.redis:
        # what peers reach is Redis's TLS port; the plain one stays on this host's internal network
        redis["ports"] = [{**p, "inner": INNER["redis_tls"]} if p["key"] == "redis" else p for p in redis["ports"]]
    pool = stack["services"].get("pool")
    if pool is not None and not set(PAYOUTS_ROLES) & set(placement.roles[host]):
        # the wallet key and the ledger's password only where the payouts run
        pool["secrets"] = [s for s in pool["secrets"] if s not in ("postgres_password", "payout_wallet_key")]
    if pool is not None and not serves_web(config, placement, host):
        # no page here: neither its public port nor its certificate
        pool["ports"] = [p for p in pool["ports"] if p["key"] != "web"]
        pool["secrets"] = [s for s in pool["secrets"] if s not in ("web_tls_cert", "web_tls_key")]
    used = {s for svc in stack["services"].values() for s in svc["secrets"]}
    stack["secrets"] = [s for s in stack["secrets"] if s in used]
    return stack


def _published(stack: dict[str, Any]) -> list[dict[str, Any]]:
    """Host ports the stack publishes: {address, port, key, service} (the role's preflight checks they are free)."""
    return [
        {"address": port["address"], "port": port["port"], "key": port["key"], "service": name}
        for name, service in stack["services"].items()
        for port in service["ports"]
    ]


def _firewall(
    config: DeployConfig,
    placement: Placement,
    host: str,
    published: list[dict[str, Any]],
    consumers: dict[tuple[str, str], list[str]],
) -> list[dict[str, Any]]:
    """One rule per published port: who may connect (``any`` for the miner-facing ports)."""
    rules: dict[int, dict[str, Any]] = {}
    for pub in sorted(published, key=lambda p: p["port"]):
        key = pub["key"]
        rule = rules.setdefault(pub["port"], {"port": pub["port"], "key": key, "public": False, "sources": []})
        if key in PUBLIC_PORTS and pub["address"] == config.bind.public:
            rule["public"] = True
        for client in consumers.get((host, key), []):
            address = placement.addresses[client]
            if address not in rule["sources"]:
                rule["sources"].append(address)
    return list(rules.values())


def firewall_context(
    config: DeployConfig, plan: HostPlan, public_sources: list[str], admin_sources: list[str]
) -> dict[str, Any]:
    """Context of ``host-firewall.nft.j2``: per port, IPv4/IPv6 source sets (empty: nobody from outside)."""
    rules = []
    for rule in plan.firewall:
        sources = list(public_sources) if rule["public"] else [*rule["sources"], *admin_sources]
        v4: list[str] = []
        v6: list[str] = []
        for src in dict.fromkeys(sources):
            net = ipaddress.ip_network(src, strict=False)
            (v4 if net.version == 4 else v6).append(str(net) if net.num_addresses > 1 else str(net.network_address))
        who = "anyone" if rule["public"] else (", ".join(rule["sources"]) or "nobody but this host")
        rules.append({**rule, "v4": v4, "v6": v6, "who": who})
    return {"name": config.name, "host": plan.host, "version": __version__, "rules": rules}


def render_firewall(config: DeployConfig, plan: HostPlan, public_sources: list[str], admin_sources: list[str]) -> str:
    template = environment().get_template("host-firewall.nft.j2")
    return template.render(firewall_context(config, plan, public_sources, admin_sources))


def required_secrets(config: DeployConfig) -> list[str]:
    """Secret files a deployment of ``config`` needs on the controller (authority.key never leaves it)."""
    return required_files(config)
