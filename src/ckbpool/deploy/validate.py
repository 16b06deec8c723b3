"""Semantic checks of a :class:`DeployConfig` that the schema alone cannot express.

Each problem is one line starting with the key path it is about, e.g.
``ports.node_rpc: 34255 is also used by ports.stratum``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ..ckb.address import NETWORK_PREFIX
from .config import POOL_ROLES, DeployConfig
from .secrets import check_secrets

#: which ports each deploy role opens on its host
ROLE_PORTS: dict[str, tuple[str, ...]] = {
    "ckb_node": ("node_rpc", "node_tcp_rpc", "node_p2p", "node_metrics"),
    "stratum": ("stratum",),
    "pool_http": ("pool_http",),
    "redis": ("redis",),
    "kafka": ("kafka", "kafka_controller"),
    "proxy": ("proxy", "proxy_http"),
    "monitoring": ("prometheus", "node_exporter"),
    "grafana": ("grafana",),
    "redis_exporter": ("redis_exporter",),
    "kafka_exporter": ("kafka_exporter",),
}


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def used_ports(config: DeployConfig, roles: list[str]) -> dict[str, int]:
    """``ports.<key>`` -> port for the roles on one host (pool processes each serve ``pool_http``)."""
    keys: list[str] = []
    groups = [r for r in roles if r not in POOL_ROLES]
    if any(r in POOL_ROLES for r in roles):
        groups.append("pool_http")
    if "stratum" in roles:
        groups.append("stratum")
    if "monitoring" in roles:
        if config.monitoring.grafana:
            groups.append("grafana")
        if config.services.redis:
            groups.append("redis_exporter")
        if config.services.kafka and config.monitoring.kafka_exporter:
            groups.append("kafka_exporter")
    for group in groups:
        keys += ROLE_PORTS.get(group, ())
    ports = config.ports.model_dump()
    return {key: ports[key] for key in dict.fromkeys(keys)}


def _port_clashes(config: DeployConfig, roles: list[str], where: str) -> list[str]:
    seen: dict[int, str] = {}
    problems = []
    for key, port in used_ports(config, roles).items():
        if port in seen:
            problems.append(f"ports.{key}: {port} is also used by ports.{seen[port]}{where}")
        else:
            seen[port] = key
    return problems


def missing_private_ips(config: DeployConfig) -> str | None:
    """One line naming every host without ``private_ip`` when the topology has more than one host, else None.

    Across hosts, services reach each other's internal ports (node RPC, Redis, Kafka, metrics) on the peer's
    private address. Without one the role would publish them on ``address``, the SSH address, which is often
    public with only the host firewall in front: refused instead of guessed (an ``address`` that is itself
    RFC 1918 / ULA serves). One host keeps everything on its own private networks, so it needs none."""
    hosts = config.topology.hosts
    if len(hosts) < 2:
        return None
    missing = [h.name for h in hosts if h.private_address is None]
    if not missing:
        return None
    return (
        f"topology.hosts: {len(hosts)} hosts need a private address each, and {', '.join(missing)} "
        f"{'has' if len(missing) == 1 else 'have'} none: set private_ip (an RFC 1918 / ULA address the other "
        "hosts reach it on) for each; internal ports are never published on the SSH address, so the hosts "
        "target refuses them (aws / alicloud take the private IPs Terraform assigns)"
    )


def check_config(config: DeployConfig, *, secrets_dir: Path | None = None) -> Report:
    report = Report()
    errors, warnings = report.errors, report.warnings

    # the payout address must belong to the network the pool mines on
    prefix = config.payout_address.lower().split("1", 1)[0]
    if prefix != NETWORK_PREFIX[config.network]:
        errors.append(
            f"payout_address: a {prefix} address cannot receive {config.network} rewards "
            f"(expected an address starting with {NETWORK_PREFIX[config.network]}1)"
        )

    # ports
    enabled = config.enabled_roles()
    topo = config.topology
    if topo.mode == "single":
        errors += _port_clashes(config, enabled, "")
        if len(topo.hosts) > 1:
            errors.append(
                f"topology.hosts: {len(topo.hosts)} hosts listed but topology.mode is single "
                "(set topology.mode: multi and give each host its roles)"
            )
    else:
        if not topo.hosts:
            errors.append("topology.hosts: topology.mode is multi but no hosts are listed")
        names: dict[str, int] = {}
        addresses: dict[str, int] = {}
        for i, host in enumerate(topo.hosts):
            if host.name in names:
                errors.append(
                    f"topology.hosts.{i}.name: {host.name!r} is also the name of topology.hosts.{names[host.name]}"
                )
            names.setdefault(host.name, i)
            if host.address in addresses:
                errors.append(
                    f"topology.hosts.{i}.address: {host.address} is also the address of "
                    f"topology.hosts.{addresses[host.address]}"
                )
            addresses.setdefault(host.address, i)
            for j, role in enumerate(host.roles):
                needed: str = role
                if needed != "pool" and needed not in enabled:
                    flag = {
                        "redis": "services.redis",
                        "kafka": "services.kafka",
                        "proxy": "services.proxy",
                        "monitoring": "monitoring.enabled",
                    }.get(needed, needed)
                    errors.append(f"topology.hosts.{i}.roles.{j}: {role} is placed on {host.name} but {flag} is off")
            errors += _port_clashes(config, host.expanded_roles, f" on host {host.name}")
        placed = {r for h in topo.hosts for r in h.expanded_roles}
        for enabled_role in enabled:
            if topo.hosts and enabled_role not in placed:
                errors.append(f"topology.hosts: no host has the role {enabled_role} (add it to one host's roles)")
        ckb_hosts = [h.name for h in topo.hosts if "ckb_node" in h.roles]
        missing = missing_private_ips(config)
        if missing:
            # a warning here: the cloud targets take each host's private IP from Terraform, and this check does
            # not know the target; the hosts target refuses the inventory (HostsTarget.check_private_addresses)
            warnings.append(missing)
        if len(ckb_hosts) > 1:
            warnings.append(f"topology.hosts: ckb_node on {len(ckb_hosts)} hosts; the pool uses the first one")
        pool_hosts = {h.name for h in topo.hosts for r in h.expanded_roles if r in POOL_ROLES}
        if len(pool_hosts) > 1 and not config.services.kafka:
            errors.append(
                f"services.kafka: pool roles run on {len(pool_hosts)} hosts ({', '.join(sorted(pool_hosts))}); "
                "they talk through Kafka, so services.kafka must be true"
            )
        for role in ("redis", "kafka"):
            hosts_with = [h.name for h in topo.hosts if role in h.roles]
            if len(hosts_with) > 1:
                errors.append(f"topology.hosts: {role} is placed on {len(hosts_with)} hosts; this version runs one")

    # exposure
    if config.network == "dev" and not ipaddress.ip_address(config.bind.public).is_loopback:
        warnings.append(
            f"bind.public: the dev chain's stratum port is published on {config.bind.public}; "
            "use 127.0.0.1 unless remote test miners need it"
        )
    # bind.private (loopback or RFC 1918 / ULA, never 0.0.0.0 / ::) is checked by the schema itself
    if config.services.miner.enabled and config.services.miner.protocol == "v1" and not config.services.proxy:
        errors.append("services.miner.protocol: v1 miners connect through the proxy, so services.proxy must be true")
    if config.network == "mainnet" and config.services.miner.enabled:
        warnings.append("services.miner: CPU miners on mainnet will not find blocks; they are for dev/testnet")

    if secrets_dir is not None:
        checked = check_secrets(config, secrets_dir)
        errors += checked.errors
        warnings += checked.warnings
    return report
