"""What the btcpool role puts on each host (ckbpool.deploy.hostfiles, called by the role's render lookup):

* one host with every role gets byte for byte the compose stack of ``ckbpool render``;
* three hosts (node | Kafka + Redis | pool + monitoring): each gets only its services, finds the others on their
  private addresses, publishes only the ports a peer needs, receives only the secrets its services read;
* the nftables table of each host passes ``nft -c`` and, loaded in a test network namespace, admits the peer
  that needs a port and drops another host (veth pairs between namespaces this test makes and removes);
* role variables map one to one onto ckbpool.yaml, and bad values are reported with the role variable's name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy.config import DeployConfig, load_config
from ckbpool.deploy.hostfiles import (
    HostPlan,
    Placement,
    RoleVarsError,
    config_from_role_vars,
    host_plan,
    render_firewall,
    role_vars,
    scrape_gateway_keystore,
)
from ckbpool.deploy.render import compose_stack, render_files
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit

THREE = {"ckb_node": ["node-1"], "kafka": ["data-1"], "redis": ["data-1"], "pool": ["pool-1"], "monitoring": ["pool-1"]}
ADDRESSES = {"node-1": "10.231.0.1", "data-1": "10.231.0.2", "pool-1": "10.231.0.3"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app,
        ["init", "-c", str(config), "-y", "--name", "hf", "--kafka", "--no-miner", "--workspace", str(tmp_path)],
    )
    assert result.exit_code == 0, result.stderr
    return config


def _cfg(project: Path) -> tuple[DeployConfig, Paths]:
    cfg = load_config(project)
    return cfg, Paths.of(project, cfg)


def test_one_host_gets_exactly_the_rendered_compose_stack(project: Path) -> None:
    cfg, paths = _cfg(project)
    rendered = {k: v for k, v in render_files(cfg, paths).items() if k.startswith("compose/")}
    placement = Placement.single(cfg, "solo", "127.0.0.1")
    # the install directory laid out like the workspace (compose/ next to the secrets): identical files
    plan = host_plan(cfg, placement, "solo", install_dir=str(paths.workspace), controller_secrets_dir=paths.secrets_dir)
    assert plan.files == rendered
    assert plan.services == [
        "ckb", "pool", "redis", "kafka", "prometheus", "node-exporter", "redis-exporter", "kafka-exporter", "grafana",
    ]  # fmt: skip
    assert "authority.key" not in plan.secrets and "pool-static.key" in plan.secrets
    # anywhere else on a host: only the secret paths (relative to compose.yaml) differ
    elsewhere = host_plan(
        cfg, placement, "solo", install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir
    )
    assert set(elsewhere.files) == set(rendered)
    for path, text in rendered.items():
        if path != "compose/compose.yaml":
            assert elsewhere.files[path] == text, path
    compose = yaml.safe_load(elsewhere.files["compose/compose.yaml"])
    assert compose["secrets"]["pool_static_key"]["file"] == "../secrets/pool-static.key"


def test_three_hosts_each_run_their_services_and_find_the_others(project: Path) -> None:
    cfg, paths = _cfg(project)
    placement = Placement.from_inventory(cfg, THREE, ADDRESSES)
    plans = {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
        for h in ADDRESSES
    }
    # the node's RPC crosses hosts: its filter runs beside it
    assert plans["node-1"].services == ["ckb", "rpc-filter", "node-exporter", "scrape-gateway"]
    assert plans["data-1"].services == [
        "redis", "kafka", "node-exporter", "redis-exporter", "kafka-exporter", "scrape-gateway",
    ]  # fmt: skip
    assert plans["pool-1"].services == ["pool", "prometheus", "node-exporter", "grafana"]
    # secrets: only what the services read (the broker's keystore and SCRAM users only on its host, the pool's
    # own Kafka password only on the pool's, the token on both ends of the filter's hop)
    assert plans["node-1"].secrets == [
        "tls-rpc-filter.pem", "rpc-filter.token", scrape_gateway_keystore("node-1"), "scrape.token",
    ]  # fmt: skip
    assert plans["data-1"].secrets == [
        "redis.password", "redis-exporter.json", "redis-users.acl", "kafka-ca.pem", "kafka-broker-kafka.pem",
        "kafka-scram.args", "tls-redis.pem", "kafka-exporter.password", scrape_gateway_keystore("data-1"),
        "scrape.token",
    ]  # fmt: skip
    assert set(plans["pool-1"].secrets) >= {"pool-static.key", "kafka-ca.pem", "rpc-filter.token",
                                            "kafka-jobmaker-stratum-blockmaker-accounting.password"}  # fmt: skip
    assert not {"redis-users.acl", "kafka-admin.password", "kafka-scram.args"} & set(plans["pool-1"].secrets)
    # the pool reaches the node (its filter), Redis and Kafka on their private addresses, over TLS
    pool = tomllib.loads(plans["pool-1"].files["compose/pool/pool.toml"])
    assert pool["node"]["rpc_url"] == f"https://10.231.0.1:{cfg.ports.node_rpc_filter}"
    assert pool["node"]["subscribe_address"] == f"10.231.0.1:{cfg.ports.node_tcp_rpc_filter}"
    assert pool["node"]["token_file"] == "/run/secrets/rpc_filter_token"
    assert pool["redis"]["url"] == f"rediss://10.231.0.2:{cfg.ports.redis}/0" and pool["redis"]["username"] == "pool"
    bus = urlsplit(pool["bus"]["url"])
    assert (bus.scheme, bus.netloc) == ("kafka", f"10.231.0.2:{cfg.ports.kafka}")
    assert "security_protocol=SASL_SSL" in bus.query and "create_topics=0" in bus.query
    assert set(pool["roles"]) == {"jobmaker", "stratum", "blockmaker", "accounting"}
    # Kafka advertises the address its remote clients can reach, on its SASL_SSL listener
    data = yaml.safe_load(plans["data-1"].files["compose/compose.yaml"])
    props = plans["data-1"].files["compose/kafka/server.properties"]
    assert f"advertised.listeners=CLIENT://10.231.0.2:{cfg.ports.kafka},INTERNAL://kafka:9094" in props
    assert data["services"]["kafka"]["volumes"][0] == "./kafka/server.properties:/etc/kafka/server.properties:ro"
    # published: exactly what a peer needs, on the private address (plus what the single stack publishes)
    published = {h: {(p["address"], p["port"]) for p in plan.published} for h, plan in plans.items()}
    p = cfg.ports
    # (the metrics of other hosts: only through their scrape gateways)
    assert published["node-1"] == {
        ("127.0.0.1", p.node_rpc), ("10.231.0.1", p.node_rpc_filter), ("10.231.0.1", p.node_tcp_rpc_filter),
        ("10.231.0.1", p.scrape_gateway),
    }  # fmt: skip
    assert published["data-1"] == {("10.231.0.2", p.redis), ("10.231.0.2", p.kafka), ("10.231.0.2", p.scrape_gateway)}
    assert ("10.231.0.3", p.pool_http) not in published["pool-1"]  # Prometheus is on the same host
    # a published service leaves the internal-only network; nothing depends on a service of another host
    for name, svc in data["services"].items():
        assert set(svc.get("depends_on", {})) <= set(data["services"]), name
    assert "edge" in data["services"]["redis"]["networks"]
    # Prometheus scrapes the peers through their gateways on their private addresses, its own host directly
    prom = yaml.safe_load(plans["pool-1"].files["compose/prometheus/prometheus.yml"])
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets["ckb-gateway"] == [f"10.231.0.1:{p.scrape_gateway}"]
    assert targets["redis-gateway"] == [f"10.231.0.2:{p.scrape_gateway}"]
    assert targets["node"] == ["node-exporter:9100"]
    assert sorted(targets["node-gateway"]) == [f"10.231.0.1:{p.scrape_gateway}", f"10.231.0.2:{p.scrape_gateway}"]
    # firewall: who may connect to each published port
    rules = {r["port"]: r for r in plans["data-1"].firewall}
    assert rules[p.redis]["sources"] == ["10.231.0.3"] and rules[p.kafka]["sources"] == ["10.231.0.3"]
    assert rules[p.scrape_gateway]["sources"] == ["10.231.0.3"] and p.redis_exporter not in rules
    node_rules = {r["port"]: r for r in plans["node-1"].firewall}
    assert node_rules[p.node_rpc_filter]["sources"] == ["10.231.0.3"]
    assert node_rules.get(p.node_rpc, {"sources": []})["sources"] == []  # the node's own RPC: no peer


def test_kafka_exporter_switched_off_leaves_no_service_port_or_scrape_job(project: Path) -> None:
    cfg, paths = _cfg(project)
    cfg = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"kafka_exporter": False})})
    placement = Placement.from_inventory(cfg, THREE, ADDRESSES)
    plans = {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
        for h in ADDRESSES
    }
    assert plans["data-1"].services == ["redis", "kafka", "node-exporter", "redis-exporter", "scrape-gateway"]
    assert cfg.ports.kafka_exporter not in {p["port"] for p in plans["data-1"].published}
    assert cfg.ports.kafka_exporter not in {r["port"] for r in plans["data-1"].firewall}
    prom = yaml.safe_load(plans["pool-1"].files["compose/prometheus/prometheus.yml"])
    assert not {"kafka", "kafka-gateway"} & {j["job_name"] for j in prom["scrape_configs"]}
    assert "kafka" not in tomllib.loads(plans["data-1"].files["compose/scrape-gateway/gateway.toml"])["targets"]
    # the single-host compose stack too
    files = render_files(cfg, paths)
    assert "kafka-exporter" not in yaml.safe_load(files["compose/compose.yaml"])["services"]
    assert "kafka" in yaml.safe_load(files["compose/compose.yaml"])["services"]


def test_a_proxy_host_is_scraped_by_the_monitoring_host_and_only_by_it(project: Path) -> None:
    cfg, paths = _cfg(project)
    cfg = cfg.model_copy(update={"services": cfg.services.model_copy(update={"proxy": True})})
    inventory = {**THREE, "proxy": ["edge-1"]}
    addresses = {**ADDRESSES, "edge-1": "10.231.0.4"}
    placement = Placement.from_inventory(cfg, inventory, addresses)
    plan = host_plan(cfg, placement, "edge-1", install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
    assert plan.services == ["proxy", "node-exporter", "scrape-gateway"]
    proxy_toml = tomllib.loads(plan.files["compose/pool/proxy.toml"])
    assert proxy_toml["http"] == {"listen_host": "0.0.0.0", "listen_port": 8181}
    published = {(p["address"], p["port"]) for p in plan.published}
    assert ("10.231.0.4", cfg.ports.proxy_http) not in published  # its /metrics: through the gateway only
    assert ("10.231.0.4", cfg.ports.scrape_gateway) in published
    rules = {r["port"]: r for r in plan.firewall}
    assert rules[cfg.ports.scrape_gateway]["sources"] == ["10.231.0.3"]  # the monitoring host
    assert rules[cfg.ports.proxy]["public"]
    mon = host_plan(cfg, placement, "pool-1", install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
    prom = yaml.safe_load(mon.files["compose/prometheus/prometheus.yml"])
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets["proxy-gateway"] == [f"10.231.0.4:{cfg.ports.scrape_gateway}"]


def test_inventory_problems_name_the_group_or_variable(project: Path) -> None:

    cfg, _ = _cfg(project)
    with pytest.raises(RoleVarsError) as empty:
        Placement.from_inventory(cfg, {**THREE, "redis": []}, ADDRESSES)
    assert "inventory group redis: no host runs redis" in str(empty.value)
    with pytest.raises(RoleVarsError) as two:
        Placement.from_inventory(cfg, {**THREE, "redis": ["data-1", "pool-1"]}, ADDRESSES)
    assert "inventory group redis: 2 hosts" in str(two.value)
    no_kafka = cfg.model_copy(update={"services": cfg.services.model_copy(update={"kafka": False})})
    split = {**THREE, "kafka": [], "pool": [], "stratum": ["pool-1"], "jobmaker": ["data-1"],
             "blockmaker": ["data-1"], "accounting": ["data-1"]}  # fmt: skip
    with pytest.raises(RoleVarsError) as kafka:
        Placement.from_inventory(no_kafka, split, ADDRESSES)
    assert "btcpool_kafka_enabled: pool roles run on 2 hosts" in str(kafka.value)
    with pytest.raises(RoleVarsError) as off:
        Placement.from_inventory(no_kafka, THREE, ADDRESSES)
    assert "inventory group kafka: data-1 is in it but btcpool_kafka_enabled is false" in str(off.value)


def _endpoints(plan: HostPlan) -> list[tuple[str, int]]:
    """Every host:port the services of ``plan``'s host dial, read back from its rendered config files."""
    out: list[tuple[str, int]] = []

    def add(hostport: str) -> None:
        host, _, port = hostport.rpartition(":")
        out.append((host, int(port)))

    if "compose/pool/pool.toml" in plan.files and "pool" in plan.services:
        pool = tomllib.loads(plan.files["compose/pool/pool.toml"])
        add(urlsplit(pool["node"]["rpc_url"]).netloc)
        add(pool["node"]["subscribe_address"])
        for section in ("redis", "bus"):
            if section in pool and "://" in pool[section]["url"] and not pool[section]["url"].startswith("memory"):
                add(urlsplit(pool[section]["url"]).netloc)
    if "proxy" in plan.services:
        upstream = tomllib.loads(plan.files["compose/pool/proxy.toml"])["upstream"]
        out.append((upstream["host"], upstream["port"]))
    if "prometheus" in plan.services:
        prom = yaml.safe_load(plan.files["compose/prometheus/prometheus.yml"])
        for job in prom["scrape_configs"]:
            for target in job["static_configs"][0]["targets"]:
                if not target.startswith("localhost:"):
                    add(target)
    return out


@pytest.mark.parametrize("proxy_host", ["edge-1", "pool-1"])
def test_every_address_a_service_dials_is_published_there_and_admitted_by_the_firewall(
    project: Path, proxy_host: str
) -> None:
    """Cross-check of the per-host files against each other: an address a config names is either a compose service
    of the same host, or a peer's private address where that peer publishes the port and its firewall admits the
    client; and a host publishes a port on its private address only for a peer its firewall lets in."""
    cfg, paths = _cfg(project)
    cfg = cfg.model_copy(update={"services": cfg.services.model_copy(update={"proxy": True})})
    inventory = {**THREE, "proxy": [proxy_host]}
    addresses = {**ADDRESSES, "edge-1": "10.231.0.4"}
    placement = Placement.from_inventory(cfg, inventory, addresses)
    plans = {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
        for h in placement.roles
    }
    by_address = {a: h for h, a in addresses.items() if h in plans}
    dialled: set[tuple[str, int]] = set()
    for client, plan in plans.items():
        compose = yaml.safe_load(plan.files["compose/compose.yaml"])
        assert list(compose["services"]) == plan.services, client
        for address, port in _endpoints(plan):
            if address not in by_address:  # a compose service name: on this host
                assert address in compose["services"], (client, address, port)
                continue
            provider = by_address[address]
            assert provider != client, (client, address, port)
            published = {(p["address"], p["port"]) for p in plans[provider].published}
            assert {(address, port), ("0.0.0.0", port), ("::", port)} & published, (client, provider, port)
            rule = next(r for r in plans[provider].firewall if r["port"] == port)
            assert rule["public"] or addresses[client] in rule["sources"], (client, provider, rule)
            dialled.add((provider, port))
    assert dialled, "no host dials another"
    for host, plan in plans.items():
        private = addresses[host]
        for pub in plan.published:
            rule = next(r for r in plan.firewall if r["port"] == pub["port"])
            assert rule["key"] == pub["key"]
            if pub["address"] == private:
                # published for peers: one of them dials it, and exactly those peers are admitted
                assert rule["sources"] and (host, pub["port"]) in dialled, (host, pub)
                clients = {
                    addresses[c] for c, p in plans.items() if c != host and (private, pub["port"]) in _endpoints(p)
                }
                assert set(rule["sources"]) == clients, (host, pub)


def test_compose_stack_wires_only_the_services_it_holds(project: Path) -> None:
    cfg, _ = _cfg(project)
    full = compose_stack(cfg)
    assert full["host"] is None and "miner" in full["services"]  # the dev stack's testnet profile
    assert full["volumes"] == ["ckb-data", "kafka-data", "prometheus-data", "grafana-data"]
    assert full["services"]["pool"]["depends_on"] == ["ckb", "redis", "kafka"]
    assert full["services"]["redis"]["networks"] == ["backend"]  # nothing published: internal only
    assert full["services"]["ckb"]["networks"] == ["backend", "edge"]  # p2p
    part = compose_stack(
        cfg, services=["pool", "redis", "grafana"], host="h", publish={"redis": "10.0.0.9", "stratum": cfg.bind.public}
    )
    assert list(part["services"]) == ["pool", "redis", "grafana"]
    assert part["services"]["pool"]["depends_on"] == ["redis"]  # ckb and kafka are elsewhere
    assert part["services"]["grafana"]["depends_on"] == []
    assert part["services"]["redis"]["ports"] == [
        {"key": "redis", "address": "10.0.0.9", "port": cfg.ports.redis, "inner": 6379}
    ]
    assert part["services"]["redis"]["networks"] == ["backend", "edge"]
    assert [p["key"] for p in part["services"]["pool"]["ports"]] == ["stratum", "web", "pool_http"]  # already there
    assert part["volumes"] == ["grafana-data"]
    assert part["secrets"] == ["pool_static_key", "pool_certificate", "redis_password", "grafana_admin_password",
                               "redis_acl"]  # fmt: skip
    with pytest.raises(ValueError, match="kafka belongs to kafka"):
        compose_stack(cfg, services=["pool"], publish={"kafka": "10.0.0.9"})
    with pytest.raises(ValueError, match="not services of this compose stack: bogus"):
        compose_stack(cfg, services=["pool", "bogus"])


def test_a_host_stack_is_the_template_with_its_services_volumes_and_secrets(project: Path) -> None:
    cfg, paths = _cfg(project)
    placement = Placement.from_inventory(cfg, THREE, ADDRESSES)
    node = host_plan(cfg, placement, "node-1", install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
    text = node.files["compose/compose.yaml"]
    # rendered, not re-serialised: the template's anchors and comments stay
    assert "x-logging: &logging" in text and "# JSON-RPC get_tip_block_number" in text
    assert "# Services of host node-1: ckb, rpc-filter, node-exporter, scrape-gateway (the other services" in text
    compose = yaml.safe_load(text)
    assert list(compose["services"]) == ["ckb", "rpc-filter", "node-exporter", "scrape-gateway"]
    assert compose["volumes"] == {"ckb-data": {}}
    # the filter's and the scrape gateway's only
    assert set(compose["secrets"]) == {"rpc_filter_tls", "rpc_filter_token", "scrape_tls", "scrape_token"}
    assert "depends_on" not in compose["services"]["ckb"]
    assert compose["services"]["rpc-filter"]["command"] == ["rpc-filter", "run", "-c", "/etc/ckbpool/rpc-filter.toml"]
    assert "compose/pool/rpc-filter.toml" in node.files
    single = render_files(cfg, paths)["compose/compose.yaml"]
    assert "# Services of host" not in single


def test_role_variables_round_trip_and_errors_name_the_variable(project: Path) -> None:
    cfg, paths = _cfg(project)
    variables = role_vars(cfg, paths)
    back = config_from_role_vars(variables)
    keep = {"topology", "cloud", "services", "secrets_dir", "workspace"}
    assert back.model_dump(exclude=keep) == cfg.model_dump(exclude=keep)
    assert back.services.model_dump(exclude={"miner"}) == cfg.services.model_dump(exclude={"miner"})
    with pytest.raises(RoleVarsError) as bad_port:
        config_from_role_vars({**variables, "btcpool_ports": {"stratum": "many"}})
    assert str(bad_port.value).startswith("btcpool_ports.stratum:")
    with pytest.raises(RoleVarsError) as bad_image:
        config_from_role_vars({**variables, "btcpool_images": {"pool": "ckbpool/pool:latest"}})
    assert str(bad_image.value).startswith("btcpool_images.pool:")
    with pytest.raises(RoleVarsError) as bad_address:
        config_from_role_vars({**variables, "btcpool_payout_address": "ckt1notanaddress"})
    assert str(bad_address.value).startswith("btcpool_payout_address: not a valid CKB address")


# ----------------------------------------------------------------------------------------- firewall


def _can_use_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for binary in ("nft", "ip", "unshare"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed (scripts/ansible-deps.sh installs nftables)"
    return None


def _firewalls(project: Path) -> tuple[DeployConfig, dict[str, str]]:
    cfg, paths = _cfg(project)
    placement = Placement.from_inventory(cfg, THREE, ADDRESSES)
    out = {}
    for h in ADDRESSES:
        plan = host_plan(cfg, placement, h, install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
        out[h] = render_firewall(cfg, plan, ["0.0.0.0/0", "::/0"], ["10.231.9.0/24"])
    return cfg, out


def test_rendered_rulesets_pass_nft_check(project: Path, tmp_path: Path) -> None:
    reason = _can_use_netns()
    if reason:
        pytest.skip(reason)
    cfg, rulesets = _firewalls(project)
    for host, text in rulesets.items():
        path = tmp_path / f"{host}.nft"
        path.write_text(text)
        # in a fresh, empty network namespace: nothing on this machine is touched
        result = subprocess.run(["unshare", "-n", "nft", "-c", "-f", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, (host, result.stderr, text)
    assert f"ip saddr {{ 10.231.0.3, 10.231.9.0/24 }} tcp dport {cfg.ports.redis} accept" in rulesets["data-1"]
    assert f"tcp dport {cfg.ports.stratum} accept" in rulesets["pool-1"]


@contextlib.contextmanager
def _namespaces(names: list[str]) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    made = {n: f"ckbfw-{n}-{tag}" for n in names}
    try:
        for ns in made.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
        yield made
    finally:
        for ns in made.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _ns(ns: str, *cmd: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check,
                          timeout=timeout)  # fmt: skip


def test_loaded_ruleset_admits_the_peer_and_drops_others(project: Path, tmp_path: Path) -> None:
    """data-1's table in a namespace: pool-1 (10.231.0.3) reaches Redis, another host (10.231.0.7) does not."""
    reason = _can_use_netns()
    if reason:
        pytest.skip(reason)
    cfg, rulesets = _firewalls(project)
    ruleset = tmp_path / "data-1.nft"
    ruleset.write_text(rulesets["data-1"])
    with _namespaces(["data", "pool", "other"]) as ns:
        for i, (peer, address) in enumerate((("pool", "10.231.0.3"), ("other", "10.231.0.7"))):
            a, b = f"vd{i}{ns['data'][-6:]}", f"vp{i}{ns['data'][-6:]}"
            subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
            subprocess.run(["ip", "link", "set", a, "netns", ns["data"]], check=True)
            subprocess.run(["ip", "link", "set", b, "netns", ns[peer]], check=True)
            _ns(ns["data"], "ip", "addr", "add", f"10.231.{i + 1}.2/24", "dev", a)
            _ns(ns["data"], "ip", "link", "set", a, "up")
            _ns(ns[peer], "ip", "addr", "add", f"10.231.{i + 1}.1/24", "dev", b)
            _ns(ns[peer], "ip", "link", "set", b, "up")
            _ns(ns[peer], "ip", "addr", "add", f"{address}/32", "dev", b)
            _ns(ns["data"], "ip", "route", "add", f"{address}/32", "via", f"10.231.{i + 1}.1")
        _ns(ns["data"], "ip", "addr", "add", "10.231.0.2/32", "dev", "lo")
        _ns(ns["data"], "ip", "link", "set", "lo", "up")
        for i in (0, 1):
            peer = ("pool", "other")[i]
            _ns(ns[peer], "ip", "route", "add", "10.231.0.2/32", "via", f"10.231.{i + 1}.2")
        _ns(ns["data"], "nft", "-f", str(ruleset))
        ports = [cfg.ports.redis, cfg.ports.kafka]
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns["data"], "python3", "-c",
             "import socket,sys,select\n"
             "ss=[socket.create_server(('0.0.0.0',int(p))) for p in sys.argv[1:]]\n"
             "print('ready',flush=True)\n"
             "while True:\n"
             "  r,_,_=select.select(ss,[],[],20)\n"
             "  if not r: break\n"
             "  for s in r: s.accept()[0].close()\n",
             *map(str, ports)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            probe = (
                "import socket,sys\n"
                "try:\n"
                "  socket.create_connection(('10.231.0.2',int(sys.argv[2])),1,source_address=(sys.argv[1],0))\n"
                "  print('open')\n"
                "except OSError:\n"
                "  print('closed')\n"
            )
            for port in ports:
                assert _ns(ns["pool"], "python3", "-c", probe, "10.231.0.3", str(port)).stdout.strip() == "open"
                assert _ns(ns["other"], "python3", "-c", probe, "10.231.0.7", str(port)).stdout.strip() == "closed"
        finally:
            server.kill()
            server.wait()


def test_each_stratum_host_gets_its_own_range_of_server_ids(project: Path) -> None:
    """Two stratum hosts sharing server id 1 would hand miners the same extranonce prefixes (the same work twice)
    and share one Kafka consumer group for templates (one host would get none); each host's worker processes take
    the ids after its base."""
    from ckbpool.pool.config import IDS_PER_STRATUM_HOST, load_pool_config

    cfg, paths = _cfg(project)
    # inventories take one pool host in this version; the placement itself (a future split) is built directly
    placement = Placement(
        {**ADDRESSES, "pool-2": "10.231.0.4"},
        {
            "node-1": ["ckb_node"],
            "data-1": ["kafka", "redis"],
            "pool-1": ["jobmaker", "stratum", "blockmaker", "accounting", "monitoring"],
            "pool-2": ["stratum"],
        },
    )
    ids = []
    for host in ("pool-1", "pool-2"):
        plan = host_plan(cfg, placement, host, install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
        pool = load_pool_config(data=tomllib.loads(plan.files["compose/pool/pool.toml"]))
        ids.append(pool.stratum.server_id)
    assert ids == [1, 1 + IDS_PER_STRATUM_HOST]
