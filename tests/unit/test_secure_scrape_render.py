"""Issue 18's last plaintext hops in what the hosts target renders (ckbpool.deploy.hostfiles):

* the ledger: when an accounting host is not PostgreSQL's, the server takes TLS only (``hostssl``, plain ``host``
  rejected), with a certificate of the deployment CA for its private address; the pool and the payout engine
  connect with ``sslmode=verify-full`` and that CA; the exporter beside it too; the password stays a file;
* Prometheus's scrapes: every target on another host than Prometheus's is that host's scrape gateway, over
  ``https`` with the CA and the bearer token from a file; no exporter or /metrics port is published to another
  host any more, only the gateway's, to the monitoring host alone;
* no secret value in any rendered file; the new secrets are 0600; one host keeps the compose stack unchanged.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import stat
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from cryptography import x509

from ckbpool.deploy import pki
from ckbpool.deploy.config import DeployConfig, parse_config
from ckbpool.deploy.hostfiles import (
    POSTGRES_HBA,
    SCRAPE_GATEWAY_TOML,
    HostPlan,
    Placement,
    ensure_host_secrets,
    host_plan,
    scrape_gateway_keystore,
)
from ckbpool.deploy.render import INNER, render_files
from ckbpool.deploy.secrets import SCRAPE_TOKEN, generate_secrets
from ckbpool.deploy.target import Paths
from ckbpool.pool.config import load_pool_config
from ckbpool.scrapegw.config import load_gateway_config

pytestmark = pytest.mark.unit

ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
#: node | data (Kafka, Redis, PostgreSQL) | two stratum hosts (one with the V1 proxy) | the rest + monitoring
SPLIT = {
    "ckb_node": ["node"],
    "kafka": ["data"],
    "redis": ["data"],
    "postgres": ["data"],
    "stratum": ["s1", "s2"],
    "proxy": ["s1"],
    "jobmaker": ["core"],
    "blockmaker": ["core"],
    "accounting": ["core"],
    "monitoring": ["core"],
}
ADDRESSES = {"node": "10.9.0.1", "data": "10.9.0.2", "s1": "10.9.0.3", "s2": "10.9.0.4", "core": "10.9.0.5"}
#: port keys that serve metrics: none may be published to another host (the scrape gateway relays them)
METRICS_PORTS = ("pool_http", "proxy_http", "node_metrics", "node_exporter", "redis_exporter", "kafka_exporter",
                 "postgres_exporter", "payouts_metrics")  # fmt: skip
INTERNAL_TARGET = re.compile(r"^[a-z][a-z-]*:\d+$")  # a compose service name on the monitoring host


def _config() -> DeployConfig:
    return parse_config({
        "name": "scr", "network": "dev", "payout_address": ADDRESS,
        "services": {"kafka": True, "redis": True, "proxy": True},
        "payouts": {"enabled": True, "database": "postgres"},
        "monitoring": {"enabled": True},
    })  # fmt: skip


def _plans(cfg: DeployConfig, secrets_dir: Path, inventory: dict[str, list[str]]) -> dict[str, HostPlan]:
    generate_secrets(cfg, secrets_dir)
    addresses = {h: ADDRESSES.get(h, "10.9.0.9") for hs in inventory.values() for h in hs}
    placement = Placement.from_inventory(cfg, inventory, addresses)
    ensure_host_secrets(cfg, placement, secrets_dir)
    return {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/scr", controller_secrets_dir=secrets_dir)
        for h in addresses
    }


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[DeployConfig, Path, dict[str, HostPlan]]:
    cfg = _config()
    secrets_dir = tmp_path / "secrets"
    return cfg, secrets_dir, _plans(cfg, secrets_dir, SPLIT)


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in ext}


def _is_address(target: str) -> bool:
    host = target.rsplit(":", 1)[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def test_every_cross_host_scrape_is_https_with_the_ca_and_the_token(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
) -> None:
    cfg, _secrets_dir, plans = deployment
    prom = yaml.safe_load(plans["core"].files["compose/prometheus/prometheus.yml"])
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    remote_seen: dict[str, list[str]] = {}
    for name, job in jobs.items():
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        if any(_is_address(t) for t in targets):
            # another host: its scrape gateway, never a plain exporter port
            assert all(_is_address(t) and t.endswith(f":{cfg.ports.scrape_gateway}") for t in targets), name
            assert job["scheme"] == "https", name
            assert job["tls_config"] == {"ca_file": "/run/secrets/kafka_ca"}, name
            assert "insecure_skip_verify" not in job["tls_config"]
            assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/scrape_token"}, name
            label = job["static_configs"][0]["labels"]["job"]  # the alerts' job, whatever the scrape config's name
            assert job["metrics_path"] == f"/scrape/{label}", name
            remote_seen[label] = sorted(targets)
        else:
            # this host's own exporters on its compose network: plain, no credential sent anywhere
            assert all(INTERNAL_TARGET.match(t) or t == "localhost:9090" for t in targets), (name, targets)
            assert job.get("scheme", "http") == "http" and "authorization" not in job, name
    gw = cfg.ports.scrape_gateway
    assert remote_seen == {
        "ckbpool": [f"10.9.0.3:{gw}", f"10.9.0.4:{gw}"],
        "ckb": [f"10.9.0.1:{gw}"],
        "node": sorted(f"{a}:{gw}" for h, a in ADDRESSES.items() if h != "core"),
        "redis": [f"10.9.0.2:{gw}"],
        "kafka": [f"10.9.0.2:{gw}"],
        "proxy": [f"10.9.0.3:{gw}"],
        "postgres": [f"10.9.0.2:{gw}"],
    }
    # the monitoring host's own targets stay direct: the pool (accounting), the payout engine, its node-exporter
    assert jobs["payouts"]["static_configs"][0]["targets"] == [f"payouts:{INNER['payouts_metrics']}"]
    assert jobs["node"]["static_configs"][0]["targets"] == ["node-exporter:9100"]
    # Prometheus reads the CA and the token: it runs as their owner, its TSDB in a directory that user owns
    compose = yaml.safe_load(plans["core"].files["compose/compose.yaml"])
    prometheus = compose["services"]["prometheus"]
    assert set(prometheus["secrets"]) == {"kafka_ca", "scrape_token"}
    assert prometheus["user"].startswith("${CKBPOOL_UID")
    assert "./data/prometheus:/prometheus" in prometheus["volumes"]


def test_only_the_scrape_gateway_is_published_to_the_monitoring_host(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
) -> None:
    cfg, secrets_dir, plans = deployment
    ports = cfg.ports.model_dump()
    for host, plan in plans.items():
        private = {(p["key"], p["port"]) for p in plan.published if p["address"] == ADDRESSES[host]}
        assert not {(k, ports[k]) for k in METRICS_PORTS} & private, host
        rules = {r["key"]: r for r in plan.firewall}
        if host == "core":
            assert "scrape_gateway" not in rules and "scrape-gateway" not in plan.services
            continue
        assert rules["scrape_gateway"]["sources"] == [ADDRESSES["core"]], host
        assert "scrape-gateway" in plan.services
        gateway = load_gateway_config(data=tomllib.loads(plan.files[SCRAPE_GATEWAY_TOML]))
        assert (gateway.tls_cert_file, gateway.token_file) == (Path("/run/secrets/scrape_tls"),
                                                                Path("/run/secrets/scrape_token"))  # fmt: skip
        # it relays only this host's exporters, on its internal network
        for job, url in gateway.targets.items():
            service = urlsplit(url).hostname
            assert service in plan.services, (host, job, url)
        # its own certificate, for the address the monitoring host dials, and the token
        keystore = scrape_gateway_keystore(host)
        assert keystore in plan.secrets and SCRAPE_TOKEN in plan.secrets
        assert ADDRESSES[host] in _sans(secrets_dir / keystore)
        compose = yaml.safe_load(plan.files["compose/compose.yaml"])
        assert compose["secrets"]["scrape_tls"]["file"].endswith(keystore)
        svc = compose["services"]["scrape-gateway"]
        assert svc["ports"] == [f"{ADDRESSES[host]}:{cfg.ports.scrape_gateway}:{INNER['scrape_gateway']}"]
        assert svc["user"].startswith("${CKBPOOL_UID") and svc["read_only"] and svc["cap_drop"] == ["ALL"]
    assert set(load_gateway_config(data=tomllib.loads(plans["data"].files[SCRAPE_GATEWAY_TOML])).targets) == {
        "node", "redis", "kafka", "postgres"
    }  # fmt: skip
    assert set(load_gateway_config(data=tomllib.loads(plans["s1"].files[SCRAPE_GATEWAY_TOML])).targets) == {
        "ckbpool", "node", "proxy"
    }  # fmt: skip


def test_the_ledger_across_hosts_is_tls_only_and_verified(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
) -> None:
    _cfg, secrets_dir, plans = deployment
    # the clients on the accounting host: verify-full against the CA, the password still a file
    pool = load_pool_config(data=tomllib.loads(plans["core"].files["compose/pool/pool.toml"]))
    payouts = pool.payouts
    assert payouts.db_host == "10.9.0.2" and payouts.db_sslmode == "verify-full"
    assert payouts.db_sslrootcert == Path("/run/secrets/kafka_ca")
    assert payouts.db_password_file == Path("/run/secrets/postgres_password")
    compose = yaml.safe_load(plans["core"].files["compose/compose.yaml"])
    for client in ("pool", "payouts"):
        assert "kafka_ca" in compose["services"][client]["secrets"], client
    # the server: TLS on, its keystore copied for uid 999 with 0600, pg_hba.conf from the rendered file
    data = yaml.safe_load(plans["data"].files["compose/compose.yaml"])
    server = data["services"]["postgres"]
    script = server["command"][0]
    args = shlex.split(script.rsplit("exec docker-entrypoint.sh", 1)[1])
    settings = dict(a.split("=", 1) for a in args[2::2])  # postgres -c k=v -c k=v ...
    assert settings["ssl"] == "on" and settings["ssl_min_protocol_version"] == "TLSv1.2"
    assert settings["hba_file"] == "/etc/postgresql/pg_hba.conf"
    assert settings["ssl_key_file"] == "/var/run/postgresql/server.pem"
    assert "umask 077" in script and "< /run/secrets/postgres_tls" in script
    assert "./postgres/pg_hba.conf:/etc/postgresql/pg_hba.conf:ro" in server["volumes"]
    assert set(server["secrets"]) == {"postgres_password", "postgres_tls"}
    assert {"10.9.0.2", "postgres"} <= _sans(secrets_dir / pki.server_keystore_file("postgres"))
    hba = [line.split() for line in plans["data"].files[POSTGRES_HBA].splitlines() if line and line[0] != "#"]
    assert [r for r in hba if r[0] == "host"] == [["host", "all", "all", "0.0.0.0/0", "reject"],
                                                  ["host", "all", "all", "::/0", "reject"]]  # fmt: skip
    assert {r[-1] for r in hba if r[0] == "hostssl"} == {"scram-sha-256"}
    assert {r[0] for r in hba} == {"local", "host", "hostssl"}  # no hostnossl, no TCP trust
    # the exporter beside it dials the service name over TLS too
    uri = data["services"]["postgres-exporter"]["environment"]["DATA_SOURCE_URI"]
    assert parse_qs(urlsplit(f"postgresql://{uri}").query) == {
        "sslmode": ["verify-full"], "sslrootcert": ["/run/secrets/kafka_ca"]
    }  # fmt: skip
    assert "kafka_ca" in data["services"]["postgres-exporter"]["secrets"]
    # no rendered file of any host asks for a plaintext database connection
    for host, plan in plans.items():
        for path, text in plan.files.items():
            assert "sslmode=disable" not in text, f"{host}:{path}"


def test_the_ledger_database_url_carries_the_tls_settings(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("p4ss/word\n")
    pool = load_pool_config(data={"payouts": {
        "db_host": "10.9.0.2", "db_password_file": str(password), "db_sslmode": "verify-full",
        "db_sslrootcert": "/run/secrets/kafka_ca",
    }})  # fmt: skip
    url = pool.payouts.database()
    assert url is not None
    assert urlsplit(url).query == "sslmode=verify-full&sslrootcert=/run/secrets/kafka_ca"
    with pytest.raises(ValueError, match="needs db_sslrootcert"):
        load_pool_config(data={"payouts": {"db_host": "h", "db_password_file": str(password),
                                           "db_sslmode": "verify-full"}})  # fmt: skip


def test_no_rendered_file_holds_the_new_secrets_and_they_are_private(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
) -> None:
    _cfg, secrets_dir, plans = deployment
    token = (secrets_dir / SCRAPE_TOKEN).read_text().strip()
    assert len(token) >= 32
    keys = {}
    for path in secrets_dir.glob("tls-*.pem"):
        keys[path.name] = path.read_text().split("PRIVATE KEY-----", 1)[1].split()[0]
    assert pki.server_keystore_file("postgres") in keys and any(n.startswith("tls-scrape-") for n in keys)
    for name in (SCRAPE_TOKEN, *keys):
        assert stat.S_IMODE((secrets_dir / name).stat().st_mode) == 0o600, name
    for host, plan in plans.items():
        for path, text in plan.files.items():
            assert token not in text, f"the scrape token is in {host}:{path}"
            for name, key in keys.items():
                assert key not in text, f"{name} is in {host}:{path}"


def test_nothing_crosses_hosts_nothing_changes(tmp_path: Path) -> None:
    """PostgreSQL beside its only client keeps its plain internal connection; one host is the compose stack."""
    cfg = _config()
    together = {**SPLIT, "postgres": ["core"]}
    plans = _plans(cfg, tmp_path / "secrets", together)
    assert POSTGRES_HBA not in plans["core"].files
    pool = load_pool_config(data=tomllib.loads(plans["core"].files["compose/pool/pool.toml"]))
    assert pool.payouts.db_host == "postgres" and pool.payouts.db_sslmode is None
    compose = yaml.safe_load(plans["core"].files["compose/compose.yaml"])
    assert compose["services"]["postgres"]["command"][0] == "postgres"  # the image's own start
    # one host carrying everything: no gateway, no TLS job, byte for byte the compose target's files
    single = {r: ["solo"] for r in SPLIT}
    solo = _plans(cfg, tmp_path / "secrets1", single)["solo"]
    paths = Paths(tmp_path / "secrets1" / "ckbpool.yaml", tmp_path / "secrets1", Path("/opt/ckbpool/scr"))
    reference = {p: t for p, t in render_files(cfg, paths).items() if p.startswith("compose/")}
    assert "scrape-gateway" not in solo.services and SCRAPE_GATEWAY_TOML not in solo.files
    assert "scheme: https" not in solo.files["compose/prometheus/prometheus.yml"]
    assert solo.files["compose/prometheus/prometheus.yml"] == reference["compose/prometheus/prometheus.yml"]


def test_the_gateway_configuration_refuses_what_would_make_it_a_proxy_or_open(tmp_path: Path) -> None:
    from ckbpool.pool.config import ConfigError

    token = tmp_path / "token"
    token.write_text("short\n")
    base = {"tls_cert_file": "c.pem", "tls_key_file": "c.pem", "token_file": str(token)}
    for targets, message in (
        ({}, "name at least one job"),
        ({"Node": "http://node-exporter:9100/metrics"}, "job names"),
        ({"node": "file:///etc/shadow"}, "not an http"),
        ({"node": "node-exporter:9100"}, "not an http"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_gateway_config(data={**base, "targets": targets})
    with pytest.raises(ConfigError, match="token_file"):
        load_gateway_config(data={"tls_cert_file": "c.pem", "tls_key_file": "c.pem", "targets": {"n": "http://a/"}})
    config = load_gateway_config(data={**base, "targets": {"node": "http://node-exporter:9100/metrics"}})
    with pytest.raises(ConfigError, match="shorter than 16"):
        config.token()
