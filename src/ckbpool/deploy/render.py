"""``ckbpool render``: ``ckbpool.yaml`` through one jinja2 template per artifact into a workspace directory.

The workspace holds every file any target needs, one directory per target::

    workspace/
      render.json                 manifest: ckbpool version, config digest, sha256 of every rendered file
      local/                      processes on this machine (the local target)
        ckb/ckb.toml ckb/default.db-options [ckb/specs/dev.toml]   (ckb data: local/ckb/data)
        pool.toml [redis.conf] [proxy.toml] prometheus/prometheus.yml prometheus/rules/ckbpool.yml
      compose/                    the docker compose stack
        compose.yaml .env ckb/... pool/pool.toml redis/redis.conf prometheus/... grafana/provisioning/...
      hosts/                      Ansible (hosts target): inventory.ini group_vars/all.yml kafka/server.properties
      terraform/terraform.tfvars.json   inputs of the aws / alicloud modules

Rendering is deterministic (no timestamps), so re-rendering an unchanged config changes nothing, and the diff
against the previous render shows exactly what a config edit does. No rendered file contains a secret: they
refer to the files in ``secrets_dir``.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import tomlkit
import yaml

from .. import __version__
from ..ckb.address import parse_address
from ..ckb.install import CKB_VERSION
from ..ckb.node import POOL_RPC_MODULES
from ..ckb.structures import HASH_TYPE_NAMES
from ..ckb.target import difficulty_to_target, target_to_compact
from ..pool.config import ConfigError, load_pool_config
from ..pool.redis_conn import EXPORTER_USER as REDIS_EXPORTER_USER
from ..pool.redis_conn import POOL_USER as REDIS_POOL_USER
from . import hardening, pki
from . import secrets as sec
from .config import POOL_ROLES, DeployConfig
from .errors import WorkspaceError
from .kafka_security import EXPORTER_PRINCIPAL, broker_security_properties, client_url, pool_principal
from .target import Paths

MANIFEST = "render.json"
#: bootnodes of the pinned ckb version's stock ckb.toml (`ckb init --chain <network>`)
BOOTNODES: dict[str, list[str]] = {
    "dev": [],
    "testnet": [
        "/ip4/18.217.146.65/tcp/8111/p2p/QmT6DFfm18wtbJz3y4aPNn3ac86N4d4p4xtfQRRPf73frC",
        "/ip4/18.136.60.221/tcp/8111/p2p/QmTt6HeNakL8Fpmevrhdna7J4NzEMf9pLchf1CXtmtSrwb",
        "/ip4/35.176.207.239/tcp/8111/p2p/QmSJTsMsMGBjzv1oBNwQU36VhQRxc2WQpFoRu1ZifYKrjZ",
        "/ip4/13.228.149.113/tcp/8111/p2p/QmQoTR39rBkpZVgLApDGDoFnJ2YDBS9hYeiib1Z6aoAdEf",
        "/ip4/4.241.132.26/tcp/8111/p2p/QmX5D6aJiAQ5Fxn4BfVqSn6zrgyuQM1oXVC9yvmzLuHXnx",
        "/ip4/52.147.120.180/tcp/8111/p2p/QmPcJY2gZLUm66szYA9QaG1P3rzwseWCMgbj6AyNCyW4G2",
        "/ip4/18.167.196.121/tcp/8111/p2p/QmQMjFrNGaphzfHin3mbYybbJcFMDUihKAcknquYvm9J3W",
        "/ip4/34.216.103.183/tcp/8111/p2p/Qmd41MaByDprkC5gP1XBKgamZ9DTLNk37zbPgwtiWCzRV6",
        "/ip4/3.98.152.180/tcp/8111/p2p/QmWVuW5KquiWDSqgMJRFW1xRtVqkYJrWz6S9NNk6fFn3wh",
        "/ip4/18.192.147.65/tcp/8111/p2p/QmWcEhsMNRcfJit62EbKgzpgtAJZX1G3Ur4shXjcvLsYDb",
        "/ip4/13.236.13.195/tcp/8111/p2p/QmfUTZxsse7rFJTJfoUv8bbStoDLETxst5nJEpJozNuAnH",
    ],
    "mainnet": [
        "/ip4/16.163.82.218/tcp/8114/p2p/QmaZMemLXSsxKUrYNucjEbPxVX3rBKsGhWW2muWtWxUWyh",
        "/ip4/35.79.196.111/tcp/8114/p2p/QmYCRVonLfP18LSoz2WCHaXDorUYxuUMfhtcXK1TuZ1iwF",
        "/ip4/13.234.144.148/tcp/8114/p2p/QmbT7QimcrcD5k2znoJiWpxoESxang6z1Gy9wof1rT1LKR",
        "/ip4/34.64.120.143/tcp/8114/p2p/QmejEJEbDcGGMp4D6WtftMMVLkR1ZuBfMgyLFDMJymkDt6",
        "/ip4/3.218.170.86/tcp/8114/p2p/QmShw2vtVt49wJagc1zGQXGS6LkQTcHxnEV3xs6y8MAmQN",
        "/ip4/35.236.107.161/tcp/8114/p2p/QmSRj57aa9sR2AiTvMyrEea8n1sEM1cDTrfb2VHVJxnGuu",
        "/ip4/23.101.191.12/tcp/8114/p2p/QmexvXVDiRt2FBGptgK4gBJusWyyTEEaHeuCAa35EPNkZS",
        "/ip4/20.151.143.237/tcp/8114/p2p/QmNsGNQjYA6iP472bNnNE2GR31kCYBifhY1XcaUxRjZ1py",
        "/ip4/52.59.155.249/tcp/8114/p2p/QmRHqhSGMGm5FtnkW8D6T83X7YwaiMAZXCXJJaKzQEo3rb",
        "/ip4/3.10.216.39/tcp/8114/p2p/QmagxSv7GNwKXQE7mi1iDjFHghjUpbqjBgqSot7PmMJqHA",
        "/ip4/13.37.172.80/tcp/8114/p2p/QmXJg4iKbQzMpLhX75RyDn89Mv7N2H8vLePBR7kgZf6hYk",
        "/ip4/34.118.49.255/tcp/8114/p2p/QmeCzzVmSAU5LNYAeXhdJj8TCq335aJMqUxcvZXERBWdgS",
        "/ip4/40.115.75.216/tcp/8114/p2p/QmW3P1WYtuz9hitqctKnRZua2deHXhNePNjvtc9Qjnwp4q",
        "/ip4/34.176.239.95/tcp/8114/p2p/QmQoWrmuFauCn3zZ2mYYKAciG9opTbjzC2wVEfWveZNDt8",
        "/ip4/13.245.217.98/tcp/8114/p2p/Qmf4t1SzFhRWuGcFcgs7r4pXvkACsz3FcaBMcmMKQMMpn7",
    ],
}
# container-side ports of the compose stack (the host side comes from ckbpool.yaml's ports)
INNER = {"node_rpc": 8114, "node_tcp_rpc": 18114, "node_p2p": 8115, "node_metrics": 8100, "stratum": 34255,
         "pool_http": 8180, "redis": 6379, "kafka": 9092, "kafka_controller": 9093, "proxy": 3333,
         "proxy_http": 8181, "postgres": 5432, "postgres_exporter": 9187, "web": 8280,
         "payouts_metrics": 8190, "redis_tls": 6380, "kafka_internal": 9094, "node_rpc_filter": 8124,
         "node_tcp_rpc_filter": 18124, "rpc_filter_metrics": 8129, "scrape_gateway": 9443}  # fmt: skip
#: compose service -> its directory of rendered config files (bind-mounted read-only)
COMPOSE_CONFIG_DIRS = {
    "ckb": "ckb",
    "pool": "pool",
    "redis": "redis",
    "prometheus": "prometheus",
    "grafana": "grafana",
    "kafka": "kafka",
}
COMPOSE_SECRET_FILES = {
    "pool_static_key": sec.POOL_STATIC_KEY,
    "pool_certificate": sec.POOL_CERTIFICATE,
    "redis_password": sec.REDIS_PASSWORD,
    "redis_auth_conf": sec.REDIS_AUTH_CONF,
    "redis_exporter_json": sec.REDIS_EXPORTER_JSON,
    "grafana_admin_password": sec.GRAFANA_ADMIN_PASSWORD,
    "postgres_password": sec.POSTGRES_PASSWORD,
    "payout_wallet_key": sec.PAYOUT_WALLET_KEY,
    "web_tls_cert": sec.WEB_TLS_CERT,
    "web_tls_key": sec.WEB_TLS_KEY,
    # issue 18: Redis's ACL users, the deployment CA and what the secured bus, Redis TLS and the RPC filter read
    "redis_acl": sec.REDIS_ACL,
    "kafka_ca": pki.KAFKA_CA_CERT,
    "kafka_keystore": pki.broker_keystore_file(sec.KAFKA_BROKER),
    "kafka_scram_args": pki.KAFKA_SCRAM_ARGS,
    # the pool process's own principal (the compose target's one process runs every role; the hosts target
    # names each host's file in its context's ``secret_files``)
    "kafka_password": pki.password_file(pool_principal(POOL_ROLES)),
    "redis_tls": pki.server_keystore_file("redis"),
    "rpc_filter_tls": pki.server_keystore_file("rpc-filter"),
    "rpc_filter_token": sec.RPC_FILTER_TOKEN,
    "kafka_exporter_password": pki.password_file(EXPORTER_PRINCIPAL),
    # PostgreSQL's keystore when a ledger client is on another host; each scraped host's scrape gateway (the
    # hosts target names that host's own file in ``secret_files``) and the token Prometheus sends it
    "postgres_tls": pki.server_keystore_file("postgres"),
    "scrape_tls": pki.server_keystore_file("scrape-gateway"),
    "scrape_token": sec.SCRAPE_TOKEN,
    # issue 20: the credentials of the cloud's managed Kafka / Redis / PostgreSQL (the aws / alicloud targets)
    "managed_kafka_password": "managed-kafka.password",
    "managed_redis_token": "managed-redis.token",
    "managed_postgres_password": "managed-postgres.password",
}
#: port key (ckbpool.yaml ports.*) -> (compose service, container port) of every port a compose stack can publish
COMPOSE_PORTS: dict[str, tuple[str, int]] = {
    "stratum": ("pool", INNER["stratum"]),
    "web": ("pool", INNER["web"]),
    "pool_http": ("pool", INNER["pool_http"]),
    "proxy": ("proxy", INNER["proxy"]),
    "proxy_http": ("proxy", INNER["proxy_http"]),
    "node_rpc": ("ckb", INNER["node_rpc"]),
    "node_tcp_rpc": ("ckb", INNER["node_tcp_rpc"]),
    "node_metrics": ("ckb", INNER["node_metrics"]),
    "redis": ("redis", INNER["redis"]),
    "kafka": ("kafka", INNER["kafka"]),
    "prometheus": ("prometheus", 9090),
    "grafana": ("grafana", 3000),
    "node_exporter": ("node-exporter", 9100),
    "redis_exporter": ("redis-exporter", 9121),
    "kafka_exporter": ("kafka-exporter", 9308),
    "postgres": ("postgres", INNER["postgres"]),
    "postgres_exporter": ("postgres-exporter", INNER["postgres_exporter"]),
    "payouts_metrics": ("payouts", INNER["payouts_metrics"]),
    "node_rpc_filter": ("rpc-filter", INNER["node_rpc_filter"]),
    "node_tcp_rpc_filter": ("rpc-filter", INNER["node_tcp_rpc_filter"]),
    "scrape_gateway": ("scrape-gateway", INNER["scrape_gateway"]),
}
#: compose service -> its named volume (declared in compose.yaml only when the service is in the stack)
COMPOSE_VOLUMES = {
    "ckb": "ckb-data",
    "kafka": "kafka-data",
    "postgres": "postgres-data",
    "prometheus": "prometheus-data",
    "grafana": "grafana-data",
}
#: the ledger's database and role in the stack's PostgreSQL (the password is secrets/postgres.password)
POSTGRES_DB = "ckbpool"
POSTGRES_USER = "ckbpool"
#: the local target's ledger (SQLite), relative to workspace/local; and the compose pool's with database: sqlite
LOCAL_LEDGER = "data/payouts/ledger.sqlite"
COMPOSE_SQLITE_LEDGER = "/var/lib/ckbpool/ledger.sqlite"
#: pool roles whose hosts run the payouts (pool.toml [payouts], the wallet key, a connection to the ledger): the
#: engine reads the share log accounting writes, so it goes with accounting
PAYOUTS_ROLES: tuple[str, ...] = ("accounting",)
#: pool roles whose hosts serve the miners' page ([web]): it reads the books accounting writes and the ledger
WEB_ROLES: tuple[str, ...] = ("accounting",)
#: the ports the world reaches (host firewall: every source; cloud: a security group open to 0.0.0.0/0). The
#: node's p2p port is public only with cloud.open_node_p2p, and is handled by the cloud modules themselves.
PUBLIC_PORTS: tuple[str, ...] = ("stratum", "proxy", "web")


def default_postgres_hosts(config: DeployConfig, roles: dict[str, list[str]]) -> list[str]:
    """Where PostgreSQL runs when no host is named for it (``roles``: host -> its roles): with the other data, on
    the Redis host; without Redis, on the host that runs the payouts. Empty when the stack runs no PostgreSQL."""
    if not config.runs_postgres:
        return []
    for role in ("redis", *PAYOUTS_ROLES):
        hosts = [h for h, rs in roles.items() if role in rs]
        if hosts:
            return hosts[:1]
    return []


#: host addresses that publish a port on every interface (a peer reaches such a port on any address)
WILDCARD_ADDRESSES = ("0.0.0.0", "::")


# -------------------------------------------------------------------------------------------- jinja2


def _toml(value: Any) -> str:
    return str(tomlkit.item(value).as_string())


def _to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ckbpool", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["toml"] = _toml
    env.filters["to_yaml"] = _to_yaml
    return env


# ------------------------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Owner:
    """A numeric ``uid:gid``: who owns a path, or who a container runs as."""

    uid: int
    gid: int


def secrets_owner(secrets_dir: Path) -> Owner | None:
    """Who owns ``secrets_dir`` (None when it cannot be read).

    This, not ``os.getuid()``, is who the compose services that read secrets run as: a compose file secret is a
    bind mount, so the container sees the host file's owner and its 0600 mode, and only that uid can read it.
    Under ``sudo ckbpool render`` the caller is root while the operator's own ``ckbpool init`` made the secrets
    theirs; the owner of the directory is right in both cases, and it is the same on every re-render."""
    try:
        st = secrets_dir.stat()
    except OSError:
        return None
    return Owner(st.st_uid, st.st_gid)


def compose_user(secrets_dir: Path) -> Owner | None:
    """The ``CKBPOOL_UID``/``CKBPOOL_GID`` of the compose stack; None when that would be root, which we refuse:
    a root pool or Redis would turn any bug in them into root on the host's bind mounts."""
    owner = secrets_owner(secrets_dir)
    return owner if owner is not None and owner.uid != 0 else None


def compose_root_problem(secrets_dir: Path) -> str:
    """Why the compose services have no user, and the fix (the deploy error; .env carries the same words)."""
    sudo_uid, sudo_gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    who = f"{sudo_uid}:{sudo_gid}" if sudo_uid and sudo_gid and sudo_uid != "0" else "<user>:<group>"
    return (
        f"the secrets in {secrets_dir} are owned by root, and the compose services that read them (pool, redis, "
        f"the exporters, grafana) must not run as root: give the secrets to an unprivileged user "
        f"(`chown -R {who} {secrets_dir}`, or run `ckbpool init` as that user) and run `ckbpool render` again"
    )


def compose_profiles(config: DeployConfig) -> list[str]:
    """The compose profiles this config runs (also ``COMPOSE_PROFILES`` in .env, for a plain ``compose up``)."""
    profiles = ["core"]
    if config.monitoring.enabled:
        profiles.append("monitoring")
    if config.services.miner.enabled and config.network != "mainnet":
        profiles.append("testnet")
    return profiles


def _ckb_rpc_healthcheck() -> str:
    body = '{"id":1,"jsonrpc":"2.0","method":"get_tip_block_number","params":[]}'
    request = f"POST / HTTP/1.0\\r\\nContent-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n{body}"
    return f"exec 3<>/dev/tcp/127.0.0.1/8114 && printf '{request}' >&3 && grep -q '\"result\"' <&3"


def _payouts_healthcheck() -> str:
    """Python run in the payouts container: exits 0 once the engine has completed a pass (its metric is > 0),
    so "healthy" means the ledger is migrated and the node, the wallet and the books answered at least once.
    No ``$`` in it: compose would read it as a variable."""
    return (
        "import re, sys, urllib.request as u; "
        f"t = u.urlopen('http://127.0.0.1:{INNER['payouts_metrics']}/metrics', timeout=3).read().decode(); "
        "m = re.search(r'^ckbpool_payouts_last_pass_timestamp_seconds (\\S+)', t, re.M); "
        "sys.exit(0 if m and float(m.group(1)) > 0 else 1)"
    )


def _kafka_settings(name: str, host: str, advertised: str, port: int, controller_port: int) -> dict[str, str]:
    """Single-node KRaft settings (broker + controller), as server.properties keys."""
    cluster_id = uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.ckbpool").bytes
    return {
        "node.id": "1",
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{advertised}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "controller.quorum.voters": f"1@{advertised}:{controller_port}",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.dirs": "/var/lib/kafka/data",
        "num.partitions": "1",
        # the cluster id `kafka-storage.sh format` needs, derived from the pool name (stable across renders)
        "cluster.id": base64.urlsafe_b64encode(cluster_id).decode().rstrip("="),
    }


def build_context(config: DeployConfig, paths: Paths) -> dict[str, Any]:
    lock = parse_address(config.payout_address, None)
    if config.payouts.enabled:
        # the block rewards go to the payout wallet, which pays the miners (and payout_address its fee); before
        # `ckbpool init` made the key there is nothing to pay to yet: `validate` reports the missing file
        lock = sec.payout_wallet_lock(paths.secrets_dir) or lock
    pub_key = sec.authority_public_key(paths.secrets_dir)
    common: dict[str, Any] = {
        "cfg": config,
        "name": config.name,
        "network": config.network,
        "version": __version__,
        "ckb_version": CKB_VERSION,
        "secrets_dir": str(paths.secrets_dir),
        "authority_public_key": pub_key,
        "lock": {
            "code_hash": "0x" + lock.code_hash.hex(),
            "args": "0x" + lock.args.hex(),
            "hash_type": HASH_TYPE_NAMES[lock.hash_type],
            "message": "0x" + config.node.block_message.encode("utf-8").hex(),
        },
        "dev": {
            "compact_target": hex(target_to_compact(difficulty_to_target(config.node.dev_difficulty))),
            "epoch_length": config.node.dev_epoch_length,
        },
        "ckb_healthcheck": _ckb_rpc_healthcheck(),
        "payouts_healthcheck": _payouts_healthcheck(),
        # who the compose services that read secrets run as (.env): from the controller's secrets_dir, so a
        # host's compose files equal render's (hostfiles builds this context from the controller's paths)
        "compose_user": compose_user(paths.secrets_dir),
    }
    return common


def _ckb_ctx(config: DeployConfig, *, listen_host: str, ports: dict[str, int], data_dir: str) -> dict[str, Any]:
    return {
        "listen_host": listen_host,
        "rpc_port": ports["node_rpc"],
        "tcp_rpc_port": ports["node_tcp_rpc"],
        "p2p_port": ports["node_p2p"],
        "metrics_port": ports["node_metrics"],
        "data_dir": data_dir,
        "bootnodes": BOOTNODES[config.network],
        "rpc_modules": list(POOL_RPC_MODULES),
    }


def local_context(config: DeployConfig, paths: Paths) -> dict[str, Any]:
    p = config.ports
    ports = p.model_dump()
    priv = config.bind.private
    ws = paths.workspace / "local"
    secrets_dir = paths.secrets_dir
    jobs = [
        {"name": "prometheus", "targets": [f"{priv}:{p.prometheus}"], "path": None},
        {"name": "ckbpool", "targets": [f"{priv}:{p.pool_http}"], "path": None},
        {"name": "ckb", "targets": [f"{priv}:{p.node_metrics}"], "path": "/"},  # ckb serves metrics at /
        {"name": "node", "targets": [f"{priv}:{p.node_exporter}"], "path": None},
    ]
    if config.services.redis:
        jobs.append({"name": "redis", "targets": [f"{priv}:{p.redis_exporter}"], "path": None})
    if config.services.proxy:
        jobs.append({"name": "proxy", "targets": [f"{priv}:{p.proxy_http}"], "path": None})
    if config.payouts.enabled:
        jobs.append({"name": "payouts", "targets": [f"{priv}:{p.payouts_metrics}"], "path": None})
    payouts = payouts_settings(
        config,
        database={"sqlite_path": str(ws / LOCAL_LEDGER)},  # always SQLite: no database server to run locally
        wallet_key_file=str(secrets_dir / sec.PAYOUT_WALLET_KEY),
        metrics=(priv, p.payouts_metrics),
    )
    # the local target serves the page on loopback (bind.private): it is the operator's demo, not a public site
    web = web_settings(
        config,
        listen=(priv, p.web),
        tls_files=(str(secrets_dir / sec.WEB_TLS_CERT), str(secrets_dir / sec.WEB_TLS_KEY)),
    )
    return {
        "place": "local",
        "ckb": _ckb_ctx(config, listen_host=priv, ports=ports, data_dir="data"),
        "pool": {
            "roles": list(POOL_ROLES),
            "rpc_url": f"http://{priv}:{p.node_rpc}",
            "subscribe_address": f"{priv}:{p.node_tcp_rpc}",
            "stratum_host": config.bind.public,
            "stratum_port": p.stratum,
            "static_key_file": str(secrets_dir / sec.POOL_STATIC_KEY),
            "certificate_file": str(secrets_dir / sec.POOL_CERTIFICATE),
            "blocks_dir": str(ws / "data" / "pool" / "blocks"),
            # the local target runs the embedded pool: one process, in-process bus
            "bus_url": "memory://",
            "redis_url": f"redis://{priv}:{p.redis}/0" if config.services.redis else None,
            "redis_password_file": str(secrets_dir / sec.REDIS_PASSWORD),
            "redis_username": REDIS_POOL_USER,
            "redis_tls_ca_file": None,  # rediss:// (hosts target, Redis on another host): the CA
            "node_tls": None,  # the RPC filter (hosts target, node on another host): {ca_file, token_file}
            "http_host": priv,
            "http_port": p.pool_http,
            "payouts": payouts,
            "web": web,
        },
        "redis": {
            "bind": priv,
            "port": p.redis,
            "aclfile": str(secrets_dir / sec.REDIS_ACL),
            "tls": None,
            "dir": str(ws / "data" / "redis"),
            "maxmemory_mb": config.redis.maxmemory_mb,
        },
        "proxy": {
            "listen_host": config.bind.public,
            "listen_port": p.proxy,
            "upstream_host": config.bind.public_from_here,
            "upstream_port": p.stratum,
            "http_host": priv,
            "http_port": p.proxy_http,
        },
        "prometheus": {"jobs": jobs},
    }


def compose_context(config: DeployConfig, paths: Paths) -> dict[str, Any]:
    config = hosted(config)
    roles = list(POOL_ROLES)
    jobs = [
        {"name": "prometheus", "targets": ["localhost:9090"], "path": None},
        {"name": "ckbpool", "targets": [f"pool:{INNER['pool_http']}"], "path": None},
        {"name": "ckb", "targets": [f"ckb:{INNER['node_metrics']}"], "path": "/"},
        {"name": "node", "targets": ["node-exporter:9100"], "path": None},
    ]
    if config.services.redis:
        jobs.append({"name": "redis", "targets": ["redis-exporter:9121"], "path": None})
    if config.services.kafka and config.monitoring.kafka_exporter:
        jobs.append({"name": "kafka", "targets": ["kafka-exporter:9308"], "path": None})
    if config.services.proxy:
        jobs.append({"name": "proxy", "targets": [f"proxy:{INNER['proxy_http']}"], "path": None})
    if config.runs_postgres:
        jobs.append({"name": "postgres", "targets": [f"postgres-exporter:{INNER['postgres_exporter']}"], "path": None})
    if config.payouts.enabled:
        jobs.append({"name": "payouts", "targets": [f"payouts:{INNER['payouts_metrics']}"], "path": None})
    kafka = _kafka_settings(config.name, "", "kafka", INNER["kafka"], INNER["kafka_controller"])
    kafka_env = {"KAFKA_" + k.replace(".", "_").upper(): v for k, v in kafka.items() if k != "cluster.id"}
    kafka_env["CLUSTER_ID"] = kafka["cluster.id"]
    images = config.images.model_dump()
    ctx: dict[str, Any] = {
        "place": "compose",
        "stack": compose_stack(config),
        "ckb": _ckb_ctx(config, listen_host="0.0.0.0", ports=INNER, data_dir="/var/lib/ckb/data"),
        "pool": {
            "roles": roles,
            "rpc_url": f"http://ckb:{INNER['node_rpc']}",
            "subscribe_address": f"ckb:{INNER['node_tcp_rpc']}",
            "stratum_host": "0.0.0.0",
            "stratum_port": INNER["stratum"],
            "static_key_file": "/run/secrets/pool_static_key",
            "certificate_file": "/run/secrets/pool_certificate",
            "blocks_dir": "/var/lib/ckbpool/blocks",
            "bus_url": f"kafka://kafka:{INNER['kafka']}?client_id=pool&spool_dir=/var/lib/ckbpool/spool"
            if config.services.kafka
            else "memory://",
            "redis_url": f"redis://redis:{INNER['redis']}/0" if config.services.redis else None,
            "redis_password_file": "/run/secrets/redis_password",
            "redis_username": REDIS_POOL_USER,
            "redis_tls_ca_file": None,  # rediss:// (hosts target, Redis on another host): the CA
            "node_tls": None,  # the RPC filter (hosts target, node on another host): {ca_file, token_file}
            "http_host": "0.0.0.0",
            "http_port": INNER["pool_http"],
            "payouts": payouts_settings(
                config,
                database=compose_ledger(config, "postgres", INNER["postgres"]),
                wallet_key_file="/run/secrets/payout_wallet_key",
                # the payouts service's /metrics, for Prometheus on the stack's network (published on
                # bind.private like the pool's /status)
                metrics=("0.0.0.0", INNER["payouts_metrics"]),
            ),
            "web": web_settings(
                config,
                listen=("0.0.0.0", INNER["web"]),
                tls_files=COMPOSE_TLS_FILES,
                published=config.bind.public_from_here,
            ),
        },
        "postgres": postgres_context(config),
        "redis": {
            "bind": "0.0.0.0",
            "port": INNER["redis"],
            "aclfile": "/run/secrets/redis_acl",
            "tls": None,  # the hosts target: {port, keystore, ca} when Redis is reached from another host
            "dir": "/data",
            "maxmemory_mb": config.redis.maxmemory_mb,
        },
        "proxy": {
            "listen_host": "0.0.0.0",
            "listen_port": INNER["proxy"],
            "upstream_host": "pool",
            "upstream_port": INNER["stratum"],
            "http_host": "0.0.0.0",
            "http_port": INNER["proxy_http"],
        },
        "prometheus": {"jobs": jobs},
        "kafka": {"settings": kafka, "env": kafka_env, "secure": False},
        "exporters": {"redis_user": REDIS_EXPORTER_USER, "kafka": None},
        # compose secret -> file in secrets_dir (the hosts target swaps the pool's Kafka password per host)
        "secret_files": dict(COMPOSE_SECRET_FILES),
        "compose_secrets": compose_secret_paths(paths, COMPOSE_SECRET_FILES),
        "compose_env": {
            "COMPOSE_PROJECT_NAME": compose_project(config),
            # read by `docker compose` / `docker-compose` (>= 1.28) from .env: a plain `up` starts this stack
            "COMPOSE_PROFILES": ",".join(compose_profiles(config)),
            # the images compose runs (not the pool image's build base, nor the registry it may be pushed to)
            **{
                f"CKBPOOL_IMAGE_{key.upper()}": value
                for key, value in images.items()
                if key not in ("pool_base", "registry") and value
            },
        },
    }
    if kafka_secured(config, crosses_hosts=False):
        # services.kafka_security: always -- the one-host stack's bus secured like a multi-host one
        secure_kafka(ctx, config, advertised="kafka", port=INNER["kafka"], principal=pool_principal(POOL_ROLES),
                     exporter=config.monitoring.enabled and config.monitoring.kafka_exporter)  # fmt: skip
        secure_stack_secrets(ctx["stack"], kafka=True)
        ctx["compose_secrets"] = compose_secret_paths(paths, ctx["secret_files"])
    if config.managed.any:
        use_managed_endpoints(ctx, config)
        ctx["compose_secrets"] = compose_secret_paths(paths, ctx["secret_files"])
    return ctx


def hosted(config: DeployConfig) -> DeployConfig:
    """``config`` as the stacks on the hosts see it: a Kafka or Redis the cloud manages (``managed``, issue 20) is
    none of their services -- no container, no exporter, no published port, no firewall opening -- so the
    builders below, which decide all that from ``services``, are handed a view with it off.
    :func:`use_managed_endpoints` then points the pool at the managed one."""
    m = config.managed
    if not (m.kafka or m.redis):
        return config
    services = config.services.model_copy(
        update={"kafka": config.services.kafka and not m.kafka, "redis": config.services.redis and not m.redis}
    )
    return config.model_copy(update={"services": services})


#: where the pool finds a managed service's credential in its container (compose secrets)
MANAGED_SECRET_MOUNTS = {
    "kafka": "/run/secrets/managed_kafka_password",
    "redis": "/run/secrets/managed_redis_token",
    "postgres": "/run/secrets/managed_postgres_password",
}


def use_managed_endpoints(ctx: dict[str, Any], config: DeployConfig) -> None:
    """Point a compose/host context's pool (and payout engine) at the cloud's managed services (issue 20).

    The endpoints come from ``managed.endpoints`` (the cloud targets fill them from Terraform's outputs); each
    credential is a file in ``secrets_dir`` the cloud target wrote (mode 0600), mounted as a compose secret. Kafka:
    SASL/SCRAM over TLS, the server checked against the system CAs (MSK's certificates are public ones). Redis:
    ``rediss://`` with the AUTH token as the default user's password. PostgreSQL: the ledger's host, user and
    password file (libpq negotiates TLS, which RDS requires). A service whose endpoint is still unknown (a render
    before the first deploy) keeps the hosted view's setting."""
    m, e, pool = config.managed, config.managed.endpoints, ctx["pool"]
    stack = ctx["stack"]
    if m.kafka and e.kafka_bootstrap:
        pool["bus_url"] = (
            f"kafka://{e.kafka_bootstrap}?client_id=pool&spool_dir=/var/lib/ckbpool/spool"
            f"&security_protocol=SASL_SSL&sasl_mechanism={e.kafka_mechanism}&username={e.kafka_username}"
            f"&password_file={MANAGED_SECRET_MOUNTS['kafka']}"
        )
        add_secrets(stack, "pool", ("managed_kafka_password",))
    if m.redis and e.redis:
        pool["redis_url"] = f"rediss://{e.redis}/0"
        pool["redis_username"] = None  # the AUTH token is the default user's password
        pool["redis_password_file"] = MANAGED_SECRET_MOUNTS["redis"]
        pool["redis_tls_ca_file"] = None  # the cloud's certificate: checked against the system CAs
        for service in ("pool", "payouts"):
            add_secrets(stack, service, ("managed_redis_token",))
    if m.postgres and e.postgres and pool.get("payouts"):
        host, _, port = e.postgres.rpartition(":")
        database = {
            "db_host": host,
            "db_port": int(port),
            "db_name": e.postgres_db or POSTGRES_DB,
            "db_user": e.postgres_user or POSTGRES_USER,
            "db_password_file": MANAGED_SECRET_MOUNTS["postgres"],
        }
        payouts = {k: v for k, v in pool["payouts"].items() if k not in ("sqlite_path", *database)}
        pool["payouts"] = {"enabled": True, **database, **payouts}
        for service in ("pool", "payouts"):
            add_secrets(stack, service, ("managed_postgres_password",))
    # no exporter runs for a managed service (the cloud's own metrics watch it): no scrape job either
    dropped = {name for name, on in (("kafka", m.kafka), ("redis", m.redis), ("postgres", m.postgres)) if on}
    if "prometheus" in ctx:
        jobs = [j for j in ctx["prometheus"]["jobs"] if j["name"] not in dropped]
        ctx["prometheus"] = {**ctx["prometheus"], "jobs": jobs}


def add_secrets(stack: dict[str, Any], service: str, names: tuple[str, ...]) -> None:
    """Give ``service`` of ``stack`` (if it runs there) these compose secrets, declared in the stack's list."""
    svc = stack["services"].get(service)
    if svc is None:
        return
    svc["secrets"] = [n for n in COMPOSE_SECRET_FILES if n in {*svc["secrets"], *names}]
    used = {n for s in stack["services"].values() for n in s["secrets"]}
    stack["secrets"] = [n for n in COMPOSE_SECRET_FILES if n in used]


def secure_stack_secrets(
    stack: dict[str, Any], *, kafka: bool = False, redis_tls: bool = False, rpc_client: bool = False,
    redis_client_tls: bool = False,
) -> None:  # fmt: skip
    """The secrets the secured wiring reads, per service: the broker's keystore, CA and SCRAM users; the pool's
    Kafka password and the CA; Redis's keystore; the RPC filter's token for its clients (pool, payouts)."""
    if kafka:
        add_secrets(stack, "kafka", ("kafka_keystore", "kafka_ca", "kafka_scram_args"))
        add_secrets(stack, "pool", ("kafka_password", "kafka_ca"))
        add_secrets(stack, "kafka-exporter", ("kafka_exporter_password", "kafka_ca"))
    if redis_tls:
        add_secrets(stack, "redis", ("redis_tls", "kafka_ca"))
    for client in ("pool", "payouts"):
        if rpc_client:
            add_secrets(stack, client, ("rpc_filter_token", "kafka_ca"))
        if redis_client_tls:
            add_secrets(stack, client, ("kafka_ca",))


def compose_secret_paths(paths: Paths, files: dict[str, str]) -> dict[str, str]:
    """compose.yaml's ``secrets:`` file of each secret, relative to compose.yaml (the workspace and secrets_dir can
    move together). The template declares only the secrets its services use (``stack.secrets``)."""
    return {
        name: os.path.relpath(paths.secrets_dir / file, paths.workspace / "compose") for name, file in files.items()
    }


#: where the secured broker's files are in its container (compose secrets, the rendered properties, its data)
KAFKA_SECRET_KEYSTORE = "/run/secrets/kafka_keystore"
KAFKA_SECRET_CA = "/run/secrets/kafka_ca"
KAFKA_PROPERTIES = "/etc/kafka/server.properties"


def secure_kafka(
    ctx: dict[str, Any], config: DeployConfig, *, advertised: str, port: int, principal: str, exporter: bool
) -> None:
    """Turn ``ctx``'s plaintext bus into the secured one (issue 18; :mod:`ckbpool.deploy.kafka_security`): the
    broker's server.properties with the CLIENT (SASL_SSL, SCRAM), INTERNAL and CONTROLLER (mutual TLS)
    listeners, the deny-by-default authorizer, its keystore and the CA as compose secrets; the pool's ``kafka://``
    URL with its own ``principal``, password file and CA (and ``create_topics=0``: topics are made by the deploy
    as ``admin``, the only principal with CREATE). ``advertised``:``port`` is where clients reach the CLIENT
    listener (a host's private address and its published port, or the compose service on one host); controller
    and inter-broker traffic stays on the compose network under the service name ``kafka``. No password ends up
    in a rendered file: only ``/run/secrets/...`` paths."""
    inner = INNER["kafka"]
    settings = _kafka_settings(config.name, "0.0.0.0", "kafka", inner, INNER["kafka_controller"])
    cluster_id = settings.pop("cluster.id")
    settings.update(
        broker_security_properties(
            bind_host="0.0.0.0",
            advertised_host=advertised,
            client_port=inner,
            internal_port=INNER["kafka_internal"],
            controller_port=INNER["kafka_controller"],
            keystore=KAFKA_SECRET_KEYSTORE,
            truststore=KAFKA_SECRET_CA,
        )
    )
    settings["advertised.listeners"] = f"CLIENT://{advertised}:{port},INTERNAL://kafka:{INNER['kafka_internal']}"
    ctx["kafka"] = {
        "secure": True,
        "settings": settings,
        "env": {"CLUSTER_ID": cluster_id},
        "properties": KAFKA_PROPERTIES,
    }
    # in place: callers hold ctx["pool"] and fill in more of it
    ctx["pool"]["bus_url"] = client_url(
        f"{advertised}:{port}",
        principal,
        password_file="/run/secrets/kafka_password",
        ca_file=KAFKA_SECRET_CA,
        client_id=principal,
        spool_dir="/var/lib/ckbpool/spool",
        create_topics="0",
    )
    ctx["secret_files"] = {**ctx["secret_files"], "kafka_password": pki.password_file(principal)}
    if exporter:
        ctx["exporters"] = {**ctx["exporters"], "kafka": {"server": f"{advertised}:{port}"}}


def rpc_filter_settings() -> dict[str, Any]:
    """rpc-filter.toml (:class:`ckbpool.rpcfilter.config.RpcFilterConfig`) of the filter in front of the node on
    its host: TLS and the token from compose secrets, the node by its compose service name, /metrics on the
    container's loopback (its healthcheck reads it)."""
    return {
        "listen_host": "0.0.0.0",
        "listen_port": INNER["node_rpc_filter"],
        "tcp_listen_port": INNER["node_tcp_rpc_filter"],
        "upstream_url": f"http://ckb:{INNER['node_rpc']}",
        "upstream_tcp": f"ckb:{INNER['node_tcp_rpc']}",
        "tls_cert_file": "/run/secrets/rpc_filter_tls",
        "tls_key_file": "/run/secrets/rpc_filter_tls",
        "token_file": "/run/secrets/rpc_filter_token",
        "metrics_host": "127.0.0.1",
        "metrics_port": INNER["rpc_filter_metrics"],
    }


def kafka_secured(config: DeployConfig, crosses_hosts: bool) -> bool:
    """Whether the bus runs TLS + SASL + ACLs: always when it crosses hosts, on one host with ``always``."""
    return config.services.kafka and (crosses_hosts or config.services.kafka_security == "always")


def payouts_settings(
    config: DeployConfig, *, database: dict[str, Any], wallet_key_file: str, metrics: tuple[str, int]
) -> dict[str, Any] | None:
    """pool.toml's ``[payouts]`` (ckbpool.pool.config.PayoutSettings) when payouts are enabled, else None.

    ``database``: the ledger's keys (``sqlite_path``, or ``db_host``/``db_port``/``db_name``/``db_user``/
    ``db_password_file``): the password is only ever a file name, never a value in a rendered file.
    ``metrics``: where ``ckbpool payouts serve`` (the payouts service, which reads the same pool.toml) serves
    its /metrics; the pool process itself does not read these two keys."""
    if not config.payouts.enabled:
        return None
    return {
        "enabled": True,
        **database,
        "wallet_key_file": wallet_key_file,
        "pplns_n": config.payouts.pplns_n,
        "fee_bps": config.payouts.fee_bps,
        "fee_address": config.payout_address,
        "threshold_shannons": config.payouts.threshold_shannons,
        "fee_rate": config.payouts.fee_rate,
        "batch_size": config.payouts.batch_size,
        "interval_s": config.payouts.interval_s,
        "unconfirmed_alert_s": config.payouts.unconfirmed_alert_s,
        "metrics_host": metrics[0],
        "metrics_port": metrics[1],
    }


def web_settings(
    config: DeployConfig, *, listen: tuple[str, int], tls_files: tuple[str, str], published: str | None = None
) -> dict[str, Any] | None:
    """pool.toml's ``[web]`` (ckbpool.pool.config.WebSettings) when the page is enabled, else None.

    ``listen``: the listener inside the pool's process (its container port, or the local target's loopback);
    ``tls_files``: where that process reads the certificate chain and key with ``web.tls`` (the compose
    secrets, or the files in the local target's secrets_dir); ``published``: the host address miners reach the
    published ``ports.web`` on, when that differs from the listener (a container port): it makes the
    ``public_url`` the pool reports (``ckbpool status``) unless ``web.public_url`` names the real one."""
    web = config.web
    if not web.enabled:
        return None
    out: dict[str, Any] = {"enabled": True, "listen_host": listen[0], "listen_port": listen[1]}
    if web.public_url:
        out["public_url"] = web.public_url
    elif published is not None:
        out["public_url"] = page_url(config, published)
    if web.tls:
        out["tls_cert_file"], out["tls_key_file"] = tls_files
    return out


def page_url(config: DeployConfig, address: str) -> str:
    """The page's URL on the published ``ports.web`` of ``address`` (https with ``web.tls``)."""
    host = f"[{address}]" if ":" in address else address
    return f"{'https' if config.web.tls else 'http'}://{host}:{config.ports.web}/"


#: the page's certificate files as the pool's container sees them (compose secrets)
COMPOSE_TLS_FILES = ("/run/secrets/web_tls_cert", "/run/secrets/web_tls_key")


def compose_ledger(config: DeployConfig, host: str, port: int) -> dict[str, Any]:
    """The ``[payouts]`` database keys of a pool in a compose stack: the stack's PostgreSQL at ``host:port``
    (the service name, or the postgres host's address on the hosts target), or SQLite in the pool's data dir."""
    if not config.runs_postgres:
        return {"sqlite_path": COMPOSE_SQLITE_LEDGER}
    return {
        "db_host": host,
        "db_port": port,
        "db_name": POSTGRES_DB,
        "db_user": POSTGRES_USER,
        "db_password_file": "/run/secrets/postgres_password",
    }


def postgres_context(config: DeployConfig) -> dict[str, Any]:
    """The postgres service's settings (compose.yaml.j2): database, role, and the server's memory caps."""
    return {
        "db": POSTGRES_DB,
        "user": POSTGRES_USER,
        "shared_buffers_mb": config.payouts.postgres_shared_buffers_mb,
        "max_connections": config.payouts.postgres_max_connections,
        # postgres_exporter's connection (no password in it: DATA_SOURCE_PASS_FILE names the secret)
        "exporter_uri": f"postgres:{INNER['postgres']}/{POSTGRES_DB}?sslmode=disable",
    }


def _compose_services(config: DeployConfig) -> dict[str, dict[str, Any]]:
    """Every service of the compose target's stack (compose.yaml's order) with what wires it to the others:
    the ports it publishes (port key, host address), the services it waits for, the secrets it reads, and whether
    it needs a route off the host even without a published port (ckb's p2p)."""
    config = hosted(config)
    pub, priv = config.bind.public, config.bind.private
    redis, kafka, mon = config.services.redis, config.services.kafka, config.monitoring.enabled
    postgres, payouts = config.runs_postgres, config.payouts.enabled
    web, tls = config.web.enabled, config.web.enabled and config.web.tls

    def service(
        ports: tuple[tuple[str, str], ...] = (),
        depends_on: tuple[str | None, ...] = (),
        secrets: tuple[str | None, ...] = (),
        outbound: bool = False,
    ) -> dict[str, Any]:
        return {
            "ports": list(ports),
            "depends_on": [d for d in depends_on if d],
            "secrets": [s for s in secrets if s],
            "outbound": outbound,
        }

    out = {
        "ckb": service(ports=(("node_rpc", priv),), outbound=True),
        "pool": service(
            # the page on bind.public like stratum; /status and /metrics (pool_http) stay private
            ports=(("stratum", pub), *((("web", pub),) if web else ()), ("pool_http", priv)),
            depends_on=(
                "ckb",
                "redis" if redis else None,
                "kafka" if kafka else None,
                "postgres" if postgres else None,
            ),
            secrets=(
                "pool_static_key",
                "pool_certificate",
                "redis_password" if redis else None,
                "postgres_password" if postgres else None,
                "payout_wallet_key" if payouts else None,
                "web_tls_cert" if tls else None,
                "web_tls_key" if tls else None,
            ),
        ),
    }
    if redis:
        # the ACL file (users pool and exporter, default off); the pool's password for the healthcheck's ping
        out["redis"] = service(secrets=("redis_acl", "redis_password"))
    if kafka:
        out["kafka"] = service()
    if postgres:
        out["postgres"] = service(secrets=("postgres_password",))
    if payouts:
        # the payout engine: its own process by design (it holds the wallet key and must run once per pool)
        out["payouts"] = service(
            ports=(("payouts_metrics", priv),),
            depends_on=("ckb", "redis" if redis else None, "postgres" if postgres else None),
            secrets=(
                "payout_wallet_key",
                "postgres_password" if postgres else None,
                "redis_password" if redis else None,
            ),
        )
    # the node's RPC filter: only the hosts target runs it, on the node's host when pools on other hosts use it
    out["rpc-filter"] = service(depends_on=("ckb",), secrets=("rpc_filter_tls", "rpc_filter_token"))
    if config.services.proxy:
        out["proxy"] = service(ports=(("proxy", pub), ("proxy_http", priv)), depends_on=("pool",))
    if config.network != "mainnet":
        out["miner"] = service(depends_on=("pool",))  # profile testnet
    if mon:
        out["prometheus"] = service(ports=(("prometheus", priv),))
        out["node-exporter"] = service()
        if redis:
            out["redis-exporter"] = service(depends_on=("redis",), secrets=("redis_exporter_json",))
        if kafka and config.monitoring.kafka_exporter:
            out["kafka-exporter"] = service(depends_on=("kafka",))
        if postgres:
            out["postgres-exporter"] = service(depends_on=("postgres",), secrets=("postgres_password",))
        # the hosts target's scrape gateway on each host the monitoring host scrapes from elsewhere (issue 18)
        out["scrape-gateway"] = service(secrets=("scrape_tls", "scrape_token"))
        if config.monitoring.grafana:
            out["grafana"] = service(
                ports=(("grafana", priv),), depends_on=("prometheus",), secrets=("grafana_admin_password",)
            )
    return out


def compose_stack(
    config: DeployConfig,
    *,
    services: list[str] | None = None,
    host: str | None = None,
    publish: dict[str, str] | None = None,
    outbound: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The ``stack`` context of compose.yaml.j2: which services run and how each is wired.

    With no arguments, the compose target's stack. The hosts target renders the same template once per host
    with the services of that host (``services``, named in the file's header through ``host``), the extra ports
    its peers connect to (``publish``: port key -> host address; skipped when the stack already publishes that
    port there or on every interface) and the services that need a route to other hosts (``outbound``). The
    rest follows from that here rather than in each caller: ``depends_on`` keeps only services of the stack
    (compose refuses others), a service with a published port or a route out joins the ``edge`` network (the
    ``backend`` one is internal), and only the volumes and secrets of those services are declared.
    """
    full = _compose_services(config)
    hosts_only = ("rpc-filter", "scrape-gateway")  # the hosts target's: for what crosses hosts
    keep = [s for s in full if s not in hosts_only] if services is None else [s for s in full if s in services]
    unknown = sorted(set(services or ()) - set(full))
    if unknown:
        raise ValueError(f"not services of this compose stack: {', '.join(unknown)}")
    ports = config.ports.model_dump()
    stack: dict[str, dict[str, Any]] = {}
    for name in keep:
        svc = full[name]
        published = [
            {"key": key, "address": address, "port": ports[key], "inner": COMPOSE_PORTS[key][1]}
            for key, address in svc["ports"]
        ]
        stack[name] = {
            "ports": published,
            "networks": ["backend", "edge"] if published or svc["outbound"] or name in outbound else ["backend"],
            "depends_on": [d for d in svc["depends_on"] if d in keep],
            "secrets": svc["secrets"],
            # read_only + tmpfs, cap_drop ALL (+ what the image needs), no-new-privileges, memory/pids limits
            "hardening": hardening.for_service(name, config),
        }
    for key, address in (publish or {}).items():
        service = COMPOSE_PORTS[key][0]
        if service not in stack:
            raise ValueError(f"port {key} belongs to {service}, which is not in this stack")
        listed = stack[service]["ports"]
        if any(p["key"] == key and p["address"] in (address, *WILDCARD_ADDRESSES) for p in listed):
            continue
        listed.append({"key": key, "address": address, "port": ports[key], "inner": COMPOSE_PORTS[key][1]})
        if "edge" not in stack[service]["networks"]:
            stack[service]["networks"].append("edge")
    used_secrets = {s for svc in stack.values() for s in svc["secrets"]}
    return {
        "host": host,
        "services": stack,
        "volumes": [volume for name, volume in COMPOSE_VOLUMES.items() if name in stack],
        "secrets": [name for name in COMPOSE_SECRET_FILES if name in used_secrets],
    }


def compose_project(config: DeployConfig) -> str:
    return f"ckbpool-{config.name}"


def hosts_context(config: DeployConfig, paths: Paths) -> dict[str, Any]:
    topo = config.topology
    if topo.hosts:
        hosts = topo.hosts
        listed = [
            {
                "name": h.name,
                "vars": f"ansible_host={h.address} ansible_user={h.ssh_user} ansible_port={h.ssh_port}"
                + (f" private_ip={h.private_address}" if h.private_address else ""),  # peers reach internal ports there
            }
            for h in hosts
        ]
        groups = {role: [h.name for h in hosts if role in h.expanded_roles] for role in config.enabled_roles()}
        if config.runs_postgres:  # ckbpool.yaml's hosts carry no postgres role: it goes with the data
            groups["postgres"] = default_postgres_hosts(config, {h.name: h.expanded_roles for h in hosts})
    else:  # single mode without a host: the controller itself
        listed = [{"name": "localhost", "vars": "ansible_connection=local"}]
        groups = {role: ["localhost"] for role in config.enabled_roles()}
        if config.runs_postgres:
            groups["postgres"] = ["localhost"]
    first = {role: (names[0] if names else None) for role, names in groups.items()}
    address = {h.name: h.private_address or h.address for h in topo.hosts} | {"localhost": "127.0.0.1"}
    kafka_host = address.get(first.get("kafka") or "", "127.0.0.1")
    ansible_vars: dict[str, Any] = {
        "btcpool_pool_name": config.name,
        "btcpool_network": config.network,
        "btcpool_payout_address": config.payout_address,
        "btcpool_ckb_version": CKB_VERSION,
        "btcpool_ckbpool_version": __version__,
        "btcpool_ports": config.ports.model_dump(),
        "btcpool_bind_public": config.bind.public,
        "btcpool_node_dev_difficulty": config.node.dev_difficulty,
        "btcpool_share_interval_s": config.pool.share_interval_s,
        "btcpool_redis_enabled": config.services.redis,
        "btcpool_kafka_enabled": config.services.kafka,
        "btcpool_proxy_enabled": config.services.proxy,
        "btcpool_proxy_identity": config.proxy.identity,
        "btcpool_payouts": config.payouts.model_dump(),
        "btcpool_web": config.web.model_dump(),
        "btcpool_monitoring_enabled": config.monitoring.enabled,
        "btcpool_grafana_enabled": config.monitoring.enabled and config.monitoring.grafana,
        "btcpool_images": config.images.model_dump(),
        "btcpool_secrets_dir": str(paths.secrets_dir),
        "btcpool_authority_public_key": sec.authority_public_key(paths.secrets_dir),
        "btcpool_ckb_rpc_host": address.get(first.get("ckb_node") or "", "127.0.0.1"),
        "btcpool_redis_host": address.get(first.get("redis") or "", "127.0.0.1"),
        "btcpool_kafka_bootstrap": f"{kafka_host}:{config.ports.kafka}" if config.services.kafka else None,
    }
    kafka: dict[str, Any] = {
        "settings": _kafka_settings(
            config.name, "0.0.0.0", kafka_host, config.ports.kafka, config.ports.kafka_controller
        )
    }
    pool_hosts = {h for role in POOL_ROLES for h in groups.get(role, [])}
    if kafka_secured(config, crosses_hosts=bool(pool_hosts - {first.get("kafka")})):
        # what the Kafka host's broker reads when the bus crosses hosts (the role renders it per host alike)
        secured: dict[str, Any] = {"pool": {}, "secret_files": {}, "exporters": {}}
        secure_kafka(secured, config, advertised=kafka_host, port=config.ports.kafka,
                     principal=pool_principal(POOL_ROLES), exporter=False)  # fmt: skip
        kafka = secured["kafka"]
    return {
        "place": "hosts",
        "hosts": {"list": listed, "groups": groups},
        "ansible_vars": ansible_vars,
        "kafka": kafka,
    }


def terraform_context(config: DeployConfig, paths: Paths) -> dict[str, Any]:
    """The variables of the terraform/aws module (the alicloud module takes the same names)."""
    c = config.cloud
    tfvars: dict[str, Any] = {
        "name": config.name,
        "region": c.region,
        "network": config.network,
        "allowed_ssh_cidrs": list(c.allowed_ssh_cidrs),
        "ssh_user": c.ssh_user,
        "instance_type": c.instance_type,
        "root_volume_size_gb": c.root_volume_size_gb,
        # the only ports open to the internet: stratum (and the V1 proxy), the miners' page on the hosts that run
        # accounting; the rest stays inside the deployment
        "stratum_port": config.ports.stratum,
        "proxy_port": config.ports.proxy,
        "web_port": config.ports.web,
        "open_web": config.web.enabled,
        "node_p2p_port": config.ports.node_p2p,
        "open_node_p2p": c.open_node_p2p,
        "private_ports": {k: v for k, v in config.ports.model_dump().items() if k not in (*PUBLIC_PORTS, "node_p2p")},
    }
    key_file = Path(c.ssh_public_key_file).expanduser()
    if key_file.is_file():
        tfvars["ssh_public_key"] = key_file.read_text().strip()
    if config.topology.hosts:
        tfvars["hosts"] = [{"name": h.name, "roles": list(h.roles)} for h in config.topology.hosts]
    return {"place": "terraform", "tfvars": tfvars}


# ------------------------------------------------------------------------------------------ artifacts


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the workspace
    template: str
    context: str  # which context builder: local | compose | hosts | terraform


def artifacts(config: DeployConfig) -> list[Artifact]:
    out: list[Artifact] = []
    for place, ckb_dir, pool_dir, redis_dir in (
        ("local", "local/ckb", "local", "local"),
        ("compose", "compose/ckb", "compose/pool", "compose/redis"),
    ):
        out += [
            Artifact(f"{ckb_dir}/ckb.toml", "ckb.toml.j2", place),
            Artifact(f"{ckb_dir}/default.db-options", "default.db-options.j2", place),
        ]
        if config.network == "dev":
            out.append(Artifact(f"{ckb_dir}/specs/dev.toml", "dev-spec.toml.j2", place))
        out.append(Artifact(f"{pool_dir}/pool.toml", "pool.toml.j2", place))
        if config.services.redis:
            out.append(Artifact(f"{redis_dir}/redis.conf", "redis.conf.j2", place))
        if config.services.proxy:
            out.append(Artifact(f"{pool_dir}/proxy.toml", "proxy.toml.j2", place))
        prom_dir = f"{place}/prometheus"
        out.append(Artifact(f"{prom_dir}/prometheus.yml", "prometheus.yml.j2", place))
    out += [
        Artifact("compose/compose.yaml", "compose.yaml.j2", "compose"),
        Artifact("compose/.env", "compose.env.j2", "compose"),
    ]
    if config.monitoring.enabled and config.monitoring.grafana:
        out.append(
            Artifact("compose/grafana/provisioning/datasources/prometheus.yml", "grafana-datasource.yml.j2", "compose")
        )
    out += [
        Artifact("hosts/inventory.ini", "inventory.ini.j2", "hosts"),
        Artifact("hosts/group_vars/all.yml", "group_vars.yml.j2", "hosts"),
    ]
    if config.services.kafka:
        out += [
            Artifact("hosts/kafka/server.properties", "kafka-server.properties.j2", "hosts"),
            Artifact("compose/kafka/server.properties", "kafka-server.properties.j2", "compose"),
        ]
    out.append(Artifact("terraform/terraform.tfvars.json", "terraform.tfvars.json.j2", "terraform"))
    return out


MONITORING_DIR = Path(__file__).resolve().parent.parent / "monitoring"


def monitoring_files(config: DeployConfig) -> dict[str, str]:
    """The alert rules and Grafana dashboards, copied verbatim from ckbpool/monitoring (one source: the same
    files the promtool rule tests and the dashboard tests check)."""
    files: dict[str, str] = {}
    rules = (MONITORING_DIR / "prometheus" / "rules" / "ckbpool.yml").read_text()
    for place in ("local", "compose"):
        files[f"{place}/prometheus/rules/ckbpool.yml"] = rules
    if config.monitoring.enabled and config.monitoring.grafana:
        provisioning = MONITORING_DIR / "grafana" / "provisioning"
        for path in sorted((provisioning / "dashboards").rglob("*")):
            if path.is_file():
                relative = path.relative_to(provisioning).as_posix()
                files[f"compose/grafana/provisioning/{relative}"] = path.read_text()
    return files


def render_files(config: DeployConfig, paths: Paths) -> dict[str, str]:
    """Every artifact's path (relative to the workspace) -> content. Pure: writes nothing."""
    env = environment()
    common = build_context(config, paths)
    builders = {
        "local": local_context,
        "compose": compose_context,
        "hosts": hosts_context,
        "terraform": terraform_context,
    }
    contexts: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = monitoring_files(config)
    # compose.yaml last: it carries a digest of each service's config files, so `up` recreates exactly the
    # containers whose configuration changed (bind-mounted files alone would not)
    ordered = sorted(artifacts(config), key=lambda a: a.path == "compose/compose.yaml")
    for artifact in ordered:
        if artifact.context not in contexts:
            contexts[artifact.context] = {**common, **builders[artifact.context](config, paths)}
        if artifact.path == "compose/compose.yaml":
            contexts["compose"]["config_digest"] = {
                service: _sha256("".join(t for p, t in sorted(files.items()) if p.startswith(f"compose/{sub}/")))[:16]
                for service, sub in COMPOSE_CONFIG_DIRS.items()
            }
        text = env.get_template(artifact.template).render(contexts[artifact.context])
        files[artifact.path] = text
    for path, text in files.items():
        if path.endswith("pool.toml"):
            _check_pool_toml(path, text)
        elif path.endswith("proxy.toml"):
            _check_proxy_toml(path, text)
    return files


def _check_pool_toml(path: str, text: str) -> None:
    """A rendered pool.toml must load as the pool's own config (a template bug otherwise)."""
    try:
        load_pool_config(data=tomllib.loads(text))
    except (ConfigError, tomllib.TOMLDecodeError) as exc:  # pragma: no cover - template bug
        raise WorkspaceError(f"rendered {path} is not a valid pool configuration: {exc}") from None


def _check_proxy_toml(path: str, text: str) -> None:
    """Same for proxy.toml, when this ckbpool has the translator."""
    try:
        from ..proxy.config import ProxyConfig
    except ImportError:  # pragma: no cover - versions without the proxy
        return
    from pydantic import ValidationError

    try:
        ProxyConfig.model_validate(tomllib.loads(text))
    except (ValidationError, tomllib.TOMLDecodeError) as exc:  # pragma: no cover - template bug
        raise WorkspaceError(f"rendered {path} is not a valid proxy configuration: {exc}") from None


# ------------------------------------------------------------------------------------------ workspace


@dataclass
class FileChange:
    path: str
    status: str  # added | changed | removed | unchanged
    diff: list[str] = field(default_factory=list)


@dataclass
class RenderResult:
    workspace: Path
    changes: list[FileChange]

    @property
    def changed(self) -> list[FileChange]:
        return [c for c in self.changes if c.status != "unchanged"]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(workspace: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((workspace / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plan(config: DeployConfig, paths: Paths) -> tuple[dict[str, str], list[FileChange]]:
    """What render would do: the files and their changes against what is on disk."""
    files = render_files(config, paths)
    previous = read_manifest(paths.workspace) or {}
    changes: list[FileChange] = []
    for rel, text in files.items():
        target = paths.workspace / rel
        try:
            old = target.read_text()
        except (OSError, UnicodeDecodeError):
            old = None
        if old is None:
            changes.append(FileChange(rel, "added"))
        elif old == text:
            changes.append(FileChange(rel, "unchanged"))
        else:
            diff = list(
                difflib.unified_diff(old.splitlines(), text.splitlines(), f"a/{rel}", f"b/{rel}", lineterm="", n=2)
            )
            changes.append(FileChange(rel, "changed", diff))
    for rel in sorted(set(previous.get("files", {})) - set(files)):
        if (paths.workspace / rel).exists():
            changes.append(FileChange(rel, "removed"))
    return files, changes


#: Modes of what render writes, set explicitly (fchmod/chmod, never left to the umask: 077 is common on hardened
#: hosts and would make every file 0600). Rendered files hold no secret -- they name the files in secrets_dir --
#: and several are bind-mounted into containers that read them as their image's own user (ckb: uid 1000,
#: prometheus: nobody), who is neither their owner nor in their group: files must be world-readable and their
#: directories world-searchable.
FILE_MODE = 0o644
DIR_MODE = 0o755
#: compose/data/<service>: bind-mounted read-write into the services that run as CKBPOOL_UID, their only
#: writer; the group may read (found blocks, Redis dumps), nobody else needs to.
DATA_DIR_MODE = 0o750


def compose_data_dirs(config: DeployConfig) -> list[str]:
    """The ``compose/data/<service>`` directories compose.yaml bind-mounts read-write (services run as
    CKBPOOL_UID); the other services keep their data in named volumes, which their image's user owns."""
    dirs = ["pool", "redis"] if config.services.redis else ["pool"]
    if kafka_secured(config, crosses_hosts=False):
        dirs.append("kafka")  # the secured broker runs as CKBPOOL_UID (it reads secrets): its data is a bind mount
    return dirs


def _own(path: Path, owner: Owner | None) -> None:
    """Give ``path`` (not a symlink's target) to ``owner``; only root can, and only root needs to: a workspace
    rendered by ``sudo ckbpool render`` should still belong to the operator who owns the secrets."""
    if owner is None or os.geteuid() != 0:
        return
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        os.lchown(path, owner.uid, owner.gid)


def _ensure_dir(path: Path, mode: int, owner: Owner | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path):
        raise WorkspaceError(f"{path} is not a directory")
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
    _own(path, owner)


def _write_file(target: Path, text: str, owner: Owner | None) -> None:
    """Replace ``target`` atomically with a FILE_MODE file; the temporary file is created without following
    symlinks and gets its mode and owner through its descriptor (no umask, no window with another mode)."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), FILE_MODE)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fh.fileno(), owner.uid, owner.gid)
        fh.write(text)
    os.replace(tmp, target)


def _settle_file(target: Path, owner: Owner | None) -> None:
    """An unchanged file gets the mode and owner a fresh render would give it (older renders left the umask's)."""
    st = os.lstat(target)
    if not os.path.islink(target) and st.st_mode & 0o7777 != FILE_MODE:
        os.chmod(target, FILE_MODE)
    _own(target, owner)


def prepare_compose_data(config: DeployConfig, paths: Paths) -> None:
    """``compose/data/<service>`` owned by CKBPOOL_UID:CKBPOOL_GID with DATA_DIR_MODE, before compose sees them.

    A missing bind-mount source is created by the Docker daemon as root:root 0755, which the pool and Redis
    (running as CKBPOOL_UID) cannot write; so render makes them -- a plain ``compose up`` needs nothing else --
    and ``deploy`` makes sure again (``destroy --purge`` deletes them)."""
    owner = secrets_owner(paths.secrets_dir)
    user = compose_user(paths.secrets_dir)
    data = paths.workspace / "compose" / "data"
    _ensure_dir(data, DIR_MODE, owner)
    for sub in compose_data_dirs(config):
        path = data / sub
        path.mkdir(exist_ok=True)
        st = os.lstat(path)
        if user is not None and (st.st_uid, st.st_gid) != (user.uid, user.gid):
            if os.geteuid() != 0:
                raise WorkspaceError(
                    f"{path} belongs to {st.st_uid}:{st.st_gid}, but the services that write it run as "
                    f"{user.uid}:{user.gid} (the owner of {paths.secrets_dir}): "
                    f"`sudo chown -R {user.uid}:{user.gid} {path}`, or render as root"
                )
            # root: hand over what an earlier deploy (or the Docker daemon) left with another owner
            for root, dirs, files in os.walk(path):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), user.uid, user.gid)
        # without a user the services are refused (compose_root_problem): the directory stays its creator's
        _ensure_dir(path, DATA_DIR_MODE, user)


def render(config: DeployConfig, paths: Paths, *, dry_run: bool = False) -> RenderResult:
    """Write the changed files (and the manifest), with explicit modes and owners, and compose's data dirs.

    Everything render writes belongs to the owner of secrets_dir: as the operator that is who runs render; as
    root (``sudo ckbpool render``) render hands the files over, so the operator can re-render without sudo."""
    files, changes = plan(config, paths)
    if dry_run:
        return RenderResult(paths.workspace, changes)
    ws = paths.workspace
    owner = secrets_owner(paths.secrets_dir)
    try:
        if not ws.is_dir():
            _ensure_dir(ws, DIR_MODE, owner)  # an existing workspace keeps its mode: it may be a shared directory
        # every directory render owns (the parents of its files, below the workspace)
        dirs = {ws.joinpath(*Path(rel).parts[:i]) for rel in files for i in range(1, len(Path(rel).parts))}
        for directory in sorted(dirs, key=lambda d: len(d.parts)):
            _ensure_dir(directory, DIR_MODE, owner)
        for change in changes:
            target = ws / change.path
            if change.status == "removed":
                target.unlink(missing_ok=True)
            elif change.status in ("added", "changed"):
                _write_file(target, files[change.path], owner)
            else:
                _settle_file(target, owner)
        manifest = {
            "ckbpool": __version__,
            "config": str(paths.config_file),
            "config_sha256": _sha256(paths.config_file.read_text()) if paths.config_file.exists() else None,
            "name": config.name,
            "network": config.network,
            "files": {rel: _sha256(text) for rel, text in sorted(files.items())},
        }
        _write_file(ws / MANIFEST, json.dumps(manifest, indent=2) + "\n", owner)
        prepare_compose_data(config, paths)
    except PermissionError as exc:
        raise WorkspaceError(
            f"cannot write {exc.filename or ws}: permission denied (render as the owner of {ws}, or as root)"
        ) from None
    return RenderResult(ws, changes)


def require_rendered(config: DeployConfig, paths: Paths) -> dict[str, Any]:
    """The manifest of an up-to-date render of ``config``, or a WorkspaceError saying what to run."""
    manifest = read_manifest(paths.workspace)
    if manifest is None:
        raise WorkspaceError(f"{paths.workspace} has not been rendered (run `ckbpool render`)")
    _, changes = plan(config, paths)
    stale = [c.path for c in changes if c.status != "unchanged"]
    if stale:
        raise WorkspaceError(
            f"the workspace is out of date with {paths.config_file.name} ({len(stale)} file(s), e.g. {stale[0]}); "
            "run `ckbpool render` and review the diff"
        )
    return manifest
