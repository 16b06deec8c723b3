"""Issue 18's secured internal traffic in what the deploy targets render (ckbpool.deploy.render / hostfiles):

* no secret value is in any rendered file (compose target, every host of a multi-host placement): files name
  ``/run/secrets/...`` paths only;
* every client connection that crosses hosts is TLS: the bus (SASL_SSL with the host's own principal), Redis
  (``rediss://`` to its TLS port), the node (``https://`` to its RPC filter, with the token);
* the Kafka principals and their ACLs follow the placement, host by host; the secrets each host receives are
  only those its services read;
* ``init`` makes the CA, the passwords and the salted SCRAM users (0600, idempotent); the deploy issues the
  certificates for the inventory's private addresses.
"""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from cryptography import x509

from ckbpool.deploy import pki
from ckbpool.deploy.config import DeployConfig, parse_config
from ckbpool.deploy.hostfiles import HostPlan, Placement, ensure_host_secrets, host_plan
from ckbpool.deploy.kafka_security import AclBinding, all_principals, placement_acls, pool_principal
from ckbpool.deploy.render import render_files
from ckbpool.deploy.secrets import generate_secrets
from ckbpool.deploy.target import Paths
from ckbpool.pool.config import load_pool_config
from ckbpool.rpcfilter.config import load_filter_config

pytestmark = pytest.mark.unit

ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqwgx292hnvmn68xf779vmzrshpmm6epn4c0cgwga"
#: node | Kafka + Redis | two stratum hosts | the rest of the pool + monitoring
SPLIT = {
    "ckb_node": ["node"],
    "kafka": ["data"],
    "redis": ["data"],
    "stratum": ["s1", "s2"],
    "jobmaker": ["core"],
    "blockmaker": ["core"],
    "accounting": ["core"],
    "monitoring": ["core"],
}
ADDRESSES = {"node": "10.9.0.1", "data": "10.9.0.2", "s1": "10.9.0.3", "s2": "10.9.0.4", "core": "10.9.0.5"}


def _config(**services: object) -> DeployConfig:
    return parse_config(
        {"name": "sec", "network": "dev", "payout_address": ADDRESS, "services": {"kafka": True, **services}}
    )


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[DeployConfig, Path, dict[str, HostPlan]]:
    cfg = _config()
    secrets_dir = tmp_path / "secrets"
    generate_secrets(cfg, secrets_dir)
    placement = Placement.from_inventory(cfg, SPLIT, ADDRESSES)
    ensure_host_secrets(cfg, placement, secrets_dir)
    plans = {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/sec", controller_secrets_dir=secrets_dir)
        for h in ADDRESSES
    }
    return cfg, secrets_dir, plans


def secret_values(secrets_dir: Path) -> dict[str, str]:
    """Every value a leak would show: passwords and tokens, salted SCRAM passwords, private keys' first line."""
    out: dict[str, str] = {}
    for path in sorted(secrets_dir.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name in ("authority.pub", pki.KAFKA_CA_CERT):
            continue
        text = path.read_text()
        if path.suffix in (".password", ".token"):
            out[path.name] = text.strip()
        elif path.name == pki.KAFKA_SCRAM_ARGS:
            out.update({f"{path.name}#{i}": v for i, v in enumerate(re.findall(r'saltedpassword="([^"]+)"', text))})
        elif "PRIVATE KEY" in text:
            out[path.name] = text.split("PRIVATE KEY-----", 1)[1].split()[0]
        elif path.suffix == ".key":
            out[path.name] = text.strip()
    return out


def test_no_rendered_file_holds_a_secret(deployment: tuple[DeployConfig, Path, dict[str, HostPlan]]) -> None:
    _cfg, secrets_dir, plans = deployment
    values = secret_values(secrets_dir)
    # what a leak would be made of is really there: 17 passwords, their salted forms, the token, four keys
    assert len([n for n in values if n.startswith("kafka-") and n.endswith(".password")]) == 17
    assert len([n for n in values if n.startswith(pki.KAFKA_SCRAM_ARGS)]) == 17
    assert {"rpc-filter.token", "redis.password", "redis-exporter.password", "tls-redis.pem"} <= set(values)
    for host, plan in plans.items():
        for path, text in plan.files.items():
            for name, value in values.items():
                assert value not in text, f"{name} is in {host}:{path}"


def test_the_compose_stack_with_kafka_security_always_holds_no_secret_either(tmp_path: Path) -> None:
    cfg = _config(kafka_security="always")
    paths = Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "workspace")
    generate_secrets(cfg, paths.secrets_dir)
    files = render_files(cfg, paths)
    values = secret_values(paths.secrets_dir)
    assert pki.broker_keystore_file("kafka") in values  # init issued the one-host broker's keystore
    for path, text in files.items():
        for name, value in values.items():
            assert value not in text, f"{name} is in {path}"
    compose = yaml.safe_load(files["compose/compose.yaml"])
    kafka = compose["services"]["kafka"]
    assert set(kafka["secrets"]) == {"kafka_ca", "kafka_keystore", "kafka_scram_args"}
    assert kafka["user"].startswith("${CKBPOOL_UID")  # reads secrets: their owner, never the image's root
    assert "KAFKA_LISTENERS" not in kafka["environment"]  # the rendered properties file, not the env
    props = files["compose/kafka/server.properties"]
    assert "listener.security.protocol.map=CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    pool = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"]))
    assert pool.bus.url is not None
    bus = parse_qs(urlsplit(pool.bus.url).query)
    assert bus["security_protocol"] == ["SASL_SSL"] and bus["username"] == [pool_principal(cfg.enabled_roles())]
    assert bus["password_file"] == ["/run/secrets/kafka_password"] and bus["create_topics"] == ["0"]
    assert compose["secrets"]["kafka_password"]["file"].endswith(
        "kafka-jobmaker-stratum-blockmaker-accounting.password"
    )


def test_every_connection_that_crosses_hosts_is_tls(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
) -> None:
    cfg, _secrets_dir, plans = deployment
    p = cfg.ports
    for host in ("s1", "s2", "core"):
        pool = load_pool_config(data=tomllib.loads(plans[host].files["compose/pool/pool.toml"]))
        assert pool.node.rpc_url == f"https://10.9.0.1:{p.node_rpc_filter}", host
        assert pool.node.subscribe_address == f"10.9.0.1:{p.node_tcp_rpc_filter}"
        assert pool.node.ca_file == Path("/run/secrets/kafka_ca")
        assert pool.node.token_file == Path("/run/secrets/rpc_filter_token")
        assert pool.redis.url == f"rediss://10.9.0.2:{p.redis}/0" and pool.redis.username == "pool"
        assert pool.redis.tls_ca_file == Path("/run/secrets/kafka_ca")
        assert pool.bus.url is not None
        bus = urlsplit(pool.bus.url)
        query = parse_qs(bus.query)
        assert bus.netloc == f"10.9.0.2:{p.kafka}" and query["security_protocol"] == ["SASL_SSL"]
        assert query["ca_file"] == ["/run/secrets/kafka_ca"]
    # what peers reach: Redis's TLS port, Kafka's SASL_SSL listener, the RPC filter (never the node's own RPC)
    data = yaml.safe_load(plans["data"].files["compose/compose.yaml"])
    assert data["services"]["redis"]["ports"] == [f"10.9.0.2:{p.redis}:6380"]
    redis_conf = plans["data"].files["compose/redis/redis.conf"]
    assert "tls-port 6380" in redis_conf and "aclfile /run/secrets/redis_acl" in redis_conf
    assert "requirepass" not in redis_conf
    props = plans["data"].files["compose/kafka/server.properties"]
    assert f"advertised.listeners=CLIENT://10.9.0.2:{p.kafka},INTERNAL://kafka:9094" in props
    node_published = {(x["address"], x["port"]) for x in plans["node"].published}
    assert ("10.9.0.1", p.node_rpc) not in node_published and ("10.9.0.1", p.node_rpc_filter) in node_published
    assert (cfg.bind.private, p.node_rpc) in node_published  # the operator's own, on loopback
    rpc_filter = load_filter_config(data=tomllib.loads(plans["node"].files["compose/pool/rpc-filter.toml"]))
    assert rpc_filter.token_file == Path("/run/secrets/rpc_filter_token")
    assert (rpc_filter.upstream_url, rpc_filter.listen_port) == ("http://ckb:8114", 8124)


def test_kafka_principals_and_acls_follow_the_placement(
    deployment: tuple[DeployConfig, Path, dict[str, HostPlan]],
) -> None:
    _cfg, _secrets_dir, plans = deployment
    expected = {"s1": "stratum", "s2": "stratum", "core": "jobmaker-blockmaker-accounting"}
    for host, principal in expected.items():
        pool = tomllib.loads(plans[host].files["compose/pool/pool.toml"])
        assert parse_qs(urlsplit(pool["bus"]["url"]).query)["username"] == [principal], host
        assert f"kafka-{principal}.password" in plans[host].secrets
        # the password of no other principal, and nothing of the broker's
        others = {s for s in plans[host].secrets if s.startswith("kafka-") and s.endswith(".password")}
        assert others == {f"kafka-{principal}.password"}
        assert not {pki.KAFKA_SCRAM_ARGS, pki.broker_keystore_file("kafka"), pki.KAFKA_CA_KEY} & set(
            plans[host].secrets
        )
    admin = plans["data"].kafka_admin
    assert admin is not None and admin["bootstrap"] == "10.9.0.2:9092"
    assert sorted(map(tuple, admin["processes"])) == [
        ("jobmaker", "blockmaker", "accounting"),
        ("stratum",),
        ("stratum",),
    ]
    assert all(plans[h].kafka_admin is None for h in ("node", "s1", "s2", "core"))
    acls = set(placement_acls(admin["processes"], exporter=admin["exporter"]))

    def allowed(principal: str, operation: str, topic: str) -> bool:
        return AclBinding(principal, "topic", topic, "literal", operation) in acls  # type: ignore[arg-type]

    # only the job maker writes templates, only stratum servers write shares and found blocks
    assert allowed("jobmaker-blockmaker-accounting", "write", "ckbpool.templates")
    assert not allowed("stratum", "write", "ckbpool.templates")
    assert allowed("stratum", "write", "ckbpool.shares") and allowed("stratum", "read", "ckbpool.templates")
    assert not allowed("jobmaker-blockmaker-accounting", "write", "ckbpool.shares")
    assert {b.principal for b in acls} == {"stratum", "jobmaker-blockmaker-accounting", "exporter"}
    assert "admin" not in {b.principal for b in acls}  # a super user needs none


def test_init_makes_the_bus_credentials_private_and_once(tmp_path: Path) -> None:
    cfg = _config()
    secrets_dir = tmp_path / "secrets"
    created = generate_secrets(cfg, secrets_dir)
    assert {pki.KAFKA_CA_KEY, pki.KAFKA_CA_CERT, pki.KAFKA_SCRAM_ARGS, "rpc-filter.token"} <= set(created)
    assert {pki.password_file(p) for p in all_principals()} <= set(created)
    for path in secrets_dir.iterdir():
        if path.is_file() and not path.name.startswith("."):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir() if p.is_file()}
    assert generate_secrets(cfg, secrets_dir) == []  # nothing rotates by surprise
    after = {p.name: p.read_bytes() for p in secrets_dir.iterdir() if p.is_file()}
    assert before == after
    # the broker gets salted credentials only: no password is in its format arguments
    scram = (secrets_dir / pki.KAFKA_SCRAM_ARGS).read_text()
    assert scram.count("--add-scram") == len(all_principals())
    for principal in all_principals():
        assert pki.read_password(secrets_dir, principal) not in scram
    acl = (secrets_dir / "redis-users.acl").read_text().splitlines()
    assert acl[0] == "user default off resetpass -@all resetkeys resetchannels"
    assert acl[1].startswith("user pool on") and "~ckbpool:*" in acl[1] and "-@dangerous" in acl[1]
    assert acl[2].startswith("user exporter on") and "-@all +@read" in acl[2]


def test_the_deploy_issues_certificates_for_the_private_addresses_once(tmp_path: Path) -> None:
    cfg = _config()
    secrets_dir = tmp_path / "secrets"
    generate_secrets(cfg, secrets_dir)
    placement = Placement.from_inventory(cfg, SPLIT, ADDRESSES)
    issued = ensure_host_secrets(cfg, placement, secrets_dir)
    # (and each scraped host's scrape gateway: test_secure_scrape_render)
    assert sorted(f for f in issued if not f.startswith("tls-scrape-")) == sorted(
        [pki.broker_keystore_file("kafka"), pki.server_keystore_file("redis"), pki.server_keystore_file("rpc-filter")]
    )
    assert ensure_host_secrets(cfg, placement, secrets_dir) == []
    ca = x509.load_pem_x509_certificate((secrets_dir / pki.KAFKA_CA_CERT).read_bytes())
    for file, address, name in (
        (pki.broker_keystore_file("kafka"), "10.9.0.2", "kafka"),
        (pki.server_keystore_file("redis"), "10.9.0.2", "redis"),
        (pki.server_keystore_file("rpc-filter"), "10.9.0.1", "rpc-filter"),
    ):
        cert = x509.load_pem_x509_certificates((secrets_dir / file).read_bytes())[0]
        assert cert.issuer == ca.subject
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert address in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}, file
        assert name in sans.get_values_for_type(x509.DNSName), file
        assert stat.S_IMODE((secrets_dir / file).stat().st_mode) == 0o600
    # the broker moves to another host: its certificate is re-issued for the new address, the others stay
    moved = Placement.from_inventory(cfg, {**SPLIT, "kafka": ["core"]}, ADDRESSES)
    assert ensure_host_secrets(cfg, moved, secrets_dir) == [pki.broker_keystore_file("kafka")]


def test_one_host_stays_plaintext_inside_its_stack_but_redis_keeps_its_acl_users(tmp_path: Path) -> None:
    cfg = _config()
    paths = Paths(tmp_path / "ckbpool.yaml", tmp_path / "secrets", tmp_path / "workspace")
    generate_secrets(cfg, paths.secrets_dir)
    files = render_files(cfg, paths)
    pool = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"]))
    assert (
        pool.bus.url is not None and pool.bus.url.startswith("kafka://kafka:9092?") and "SASL_SSL" not in pool.bus.url
    )  # never leaves the host
    assert pool.redis.username == "pool" and pool.node.rpc_url == "http://ckb:8114"
    compose = yaml.safe_load(files["compose/compose.yaml"])
    assert "rpc-filter" not in compose["services"]
    assert compose["services"]["redis-exporter"]["environment"]["REDIS_USER"] == "exporter"
    assert "aclfile /run/secrets/redis_acl" in files["compose/redis/redis.conf"]
