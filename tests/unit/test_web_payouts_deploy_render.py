"""The miners' page (issue 17 item 3) and the payout engine service (issue 16) in every deploy target, checked on
the rendered files:

* web, on by default: pool.toml ``[web]`` (loading as the pool's own config) on the host(s) that run accounting,
  ``ports.web`` published on ``bind.public`` like stratum while /status and /metrics stay on ``bind.private``;
  the host firewall opens it to the world, the private ports only to peers; terraform's tfvars open it and keep
  it out of ``private_ports``; the local target serves it on loopback; off leaves no trace;
* TLS: the operator's certificate chain and key as secrets (validate names them), read by the pool only;
* payouts on: a ``payouts`` service (``ckbpool payouts serve``, the pool image and its pool.toml, the wallet key
  and the database password as secrets, waiting for postgres healthy, a healthcheck on its metrics, published on
  ``bind.private``) scraped by Prometheus as job ``payouts``; on hosts it runs on one accounting host only; the
  local target supervises it as a process.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy import secrets as sec
from ckbpool.deploy.config import DeployConfig, load_config, parse_config
from ckbpool.deploy.errors import ConfigFileError
from ckbpool.deploy.hostfiles import Placement, host_plan, render_firewall
from ckbpool.deploy.render import render_files
from ckbpool.deploy.target import Paths
from ckbpool.pool.config import load_pool_config

pytestmark = pytest.mark.unit

THREE = {"ckb_node": ["node-1"], "kafka": ["data-1"], "redis": ["data-1"], "pool": ["pool-1"], "monitoring": ["data-1"]}
ADDRESSES = {"node-1": "10.231.0.1", "data-1": "10.231.0.2", "pool-1": "10.231.0.3"}


def _init(tmp_path: Path, *flags: str) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "-y", "--name", "web", "--no-miner", "--workspace", str(tmp_path), *flags]
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    return config


def _cfg(config: Path, **update: Any) -> tuple[DeployConfig, Paths]:
    cfg = load_config(config)
    if update:
        data = cfg.model_dump(mode="json")
        for key, value in update.items():
            data[key] = {**data[key], **value}
        cfg = parse_config(data)
    return cfg, Paths.of(config, cfg)


def _compose(files: dict[str, str]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(files["compose/compose.yaml"])
    return doc


def _jobs(text: str) -> dict[str, list[str]]:
    prom = yaml.safe_load(text)
    return {job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]}


def _plans(cfg: DeployConfig, paths: Paths, groups: dict[str, list[str]]) -> dict[str, Any]:
    placement = Placement.from_inventory(cfg, groups, ADDRESSES)
    return {
        h: host_plan(cfg, placement, h, install_dir="/opt/ckbpool/web", controller_secrets_dir=paths.secrets_dir)
        for h in placement.roles
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _init(tmp_path)


@pytest.fixture
def paying(tmp_path: Path) -> Path:
    return _init(tmp_path, "--payouts", "--kafka")


# ------------------------------------------------------------------------------------------------ web


def test_the_page_is_on_by_default_published_like_stratum_and_the_operator_ports_stay_private(
    project: Path,
) -> None:
    cfg, paths = _cfg(project, bind={"public": "0.0.0.0", "private": "127.0.0.1"})
    assert cfg.web.enabled and not cfg.web.tls and cfg.ports.web == 8080
    files = render_files(cfg, paths)
    pool = _compose(files)["services"]["pool"]
    assert f"0.0.0.0:{cfg.ports.web}:8280" in pool["ports"]
    assert f"0.0.0.0:{cfg.ports.stratum}:34255" in pool["ports"]
    assert f"127.0.0.1:{cfg.ports.pool_http}:8180" in pool["ports"]  # /status, /metrics
    assert {p.split(":")[0] for p in pool["ports"]} == {"0.0.0.0", "127.0.0.1"}
    web = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"])).web
    assert web.enabled and (web.listen_host, web.listen_port) == ("0.0.0.0", 8280) and not web.tls
    # what `ckbpool status` prints: the published port, not the container's
    assert web.public_url == f"http://127.0.0.1:{cfg.ports.web}/"
    http = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"])).http
    assert http.listen_port == 8180 and http.listen_port != web.listen_port
    # local: the operator's demo, on loopback
    local = load_pool_config(data=tomllib.loads(files["local/pool.toml"])).web
    assert local.enabled and (local.listen_host, local.listen_port) == (cfg.bind.private, cfg.ports.web)
    # terraform: open to the world, not among the ports only the deployment's hosts reach
    tfvars = yaml.safe_load(files["terraform/terraform.tfvars.json"])
    assert tfvars["web_port"] == cfg.ports.web and tfvars["open_web"] is True
    assert "web" not in tfvars["private_ports"] and "stratum" not in tfvars["private_ports"]
    assert tfvars["private_ports"]["pool_http"] == cfg.ports.pool_http


def test_the_page_off_leaves_no_trace(project: Path) -> None:
    cfg, paths = _cfg(project, web={"enabled": False})
    files = render_files(cfg, paths)
    pool = _compose(files)["services"]["pool"]
    assert not any(p.endswith(":8280") for p in pool["ports"])
    for path in ("compose/pool/pool.toml", "local/pool.toml"):
        assert "web" not in tomllib.loads(files[path]), path
    assert yaml.safe_load(files["terraform/terraform.tfvars.json"])["open_web"] is False


def test_public_url_is_checked_and_rendered(project: Path) -> None:
    with pytest.raises(ConfigFileError) as bad:
        _cfg(project, web={"public_url": "javascript:alert(1)"})
    assert any(p.startswith("web.public_url: ") and "not an http(s) URL" in p for p in bad.value.problems)
    cfg, paths = _cfg(project, web={"public_url": "https://pool.example.com/"})
    files = render_files(cfg, paths)
    for path in ("compose/pool/pool.toml", "local/pool.toml"):
        assert load_pool_config(data=tomllib.loads(files[path])).web.public_url == "https://pool.example.com/"


def test_tls_serves_the_operators_certificate_files_as_secrets(project: Path) -> None:
    cfg, paths = _cfg(project, web={"tls": True, "public_url": "https://pool.example.com/"}, ports={"web": 443})
    assert {sec.WEB_TLS_CERT, sec.WEB_TLS_KEY} <= set(sec.required_files(cfg))
    errors = sec.check_secrets(cfg, paths.secrets_dir).errors
    assert any(sec.WEB_TLS_CERT in e and "certificate chain" in e for e in errors), errors
    assert not any("ckbpool init" in e for e in errors if sec.WEB_TLS_CERT in e)  # init cannot make them
    for name in (sec.WEB_TLS_CERT, sec.WEB_TLS_KEY):
        (paths.secrets_dir / name).write_text("PEM\n")
        (paths.secrets_dir / name).chmod(0o600)
    assert sec.check_secrets(cfg, paths.secrets_dir).errors == []
    files = render_files(cfg, paths)
    compose = _compose(files)
    pool = compose["services"]["pool"]
    assert {"web_tls_cert", "web_tls_key"} <= set(pool["secrets"]) and f"{cfg.bind.public}:443:8280" in pool["ports"]
    assert compose["secrets"]["web_tls_key"]["file"].endswith(f"secrets/{sec.WEB_TLS_KEY}")
    for name, service in compose["services"].items():
        if name != "pool":
            assert not {"web_tls_cert", "web_tls_key"} & set(service.get("secrets", [])), name
    web = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"])).web
    assert web.tls and web.tls_cert_file == Path("/run/secrets/web_tls_cert")
    assert web.tls_key_file == Path("/run/secrets/web_tls_key")
    local = load_pool_config(data=tomllib.loads(files["local/pool.toml"])).web
    assert local.tls_cert_file == paths.secrets_dir / sec.WEB_TLS_CERT
    # no certificate content in any rendered file
    assert not any("PEM" in text.split() for text in files.values())


def test_hosts_serve_the_page_on_the_accounting_host_open_to_the_world(project: Path) -> None:
    cfg, paths = _cfg(project, services={"kafka": True})
    plans = _plans(cfg, paths, THREE)
    assert "pool" in plans["pool-1"].services
    pool_toml = load_pool_config(data=tomllib.loads(plans["pool-1"].files["compose/pool/pool.toml"]))
    assert pool_toml.web.enabled and pool_toml.web.public_url == f"http://10.231.0.3:{cfg.ports.web}/"
    rules = {r["port"]: r for r in plans["pool-1"].firewall}
    assert rules[cfg.ports.web]["public"] and rules[cfg.ports.stratum]["public"]
    # /status and /metrics: no other host reaches them; the monitoring host scrapes through the scrape gateway
    assert not rules[cfg.ports.pool_http]["public"] and rules[cfg.ports.pool_http]["sources"] == []
    assert rules[cfg.ports.scrape_gateway]["sources"] == ["10.231.0.2"]
    nft = render_firewall(cfg, plans["pool-1"], ["0.0.0.0/0", "::/0"], [])
    assert f"meta nfproto ipv4 tcp dport {cfg.ports.web} accept" in nft
    assert f"meta nfproto ipv6 tcp dport {cfg.ports.web} accept" in nft
    assert f"meta nfproto ipv4 tcp dport {cfg.ports.pool_http} accept" not in nft
    assert f"ip saddr {{ 10.231.0.2 }} tcp dport {cfg.ports.pool_http} accept" not in nft
    assert f"ip saddr {{ 10.231.0.2 }} tcp dport {cfg.ports.scrape_gateway} accept" in nft
    for host in ("data-1", "node-1"):
        assert cfg.ports.web not in {r["port"] for r in plans[host].firewall}, host
        assert all(not r["public"] for r in plans[host].firewall if r["key"] != "stratum"), host


def test_hosts_split_pool_roles_serve_the_page_where_accounting_runs_only(project: Path) -> None:
    cfg, paths = _cfg(project, services={"kafka": True})
    groups = {**THREE, "pool": [], "jobmaker": ["pool-1"], "blockmaker": ["pool-1"], "stratum": ["pool-1"],
              "accounting": ["data-1"]}  # fmt: skip
    plans = _plans(cfg, paths, groups)
    on_data = load_pool_config(data=tomllib.loads(plans["data-1"].files["compose/pool/pool.toml"]))
    on_pool = load_pool_config(data=tomllib.loads(plans["pool-1"].files["compose/pool/pool.toml"]))
    assert on_data.web.enabled and not on_pool.web.enabled
    assert cfg.ports.web in {r["port"] for r in plans["data-1"].firewall if r["public"]}
    assert cfg.ports.web not in {r["port"] for r in plans["pool-1"].firewall}
    pool_ports = yaml.safe_load(plans["pool-1"].files["compose/compose.yaml"])["services"]["pool"]["ports"]
    assert not any(p.endswith(":8280") for p in pool_ports)


# ------------------------------------------------------------------------------------------- payouts


def test_payouts_off_runs_no_engine(project: Path) -> None:
    cfg, paths = _cfg(project)
    files = render_files(cfg, paths)
    assert "payouts" not in _compose(files)["services"]
    assert "payouts" not in _jobs(files["compose/prometheus/prometheus.yml"])
    assert "payouts" not in _jobs(files["local/prometheus/prometheus.yml"])


def test_compose_runs_the_payout_engine_as_its_own_service(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    files = render_files(cfg, paths)
    compose = _compose(files)
    payouts = compose["services"]["payouts"]
    pool = compose["services"]["pool"]
    assert payouts["image"] == pool["image"] and payouts["user"] == pool["user"]
    assert payouts["command"] == ["payouts", "serve", "-c", "/etc/ckbpool/pool.toml"]
    assert "./pool:/etc/ckbpool:ro" in payouts["volumes"]
    assert payouts["profiles"] == ["core"]
    assert set(payouts["secrets"]) == {"payout_wallet_key", "postgres_password", "redis_password"}
    assert {name: dep["condition"] for name, dep in payouts["depends_on"].items()} == {
        "ckb": "service_healthy", "redis": "service_healthy", "postgres": "service_healthy",
    }  # fmt: skip
    assert payouts["ports"] == [f"{cfg.bind.private}:{cfg.ports.payouts_metrics}:8190"]
    # the config it reads: [payouts] with the metrics on the stack's network, the ledger on the postgres service
    settings = load_pool_config(data=tomllib.loads(files["compose/pool/pool.toml"])).payouts
    assert settings.enabled and (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 8190)
    assert settings.db_host == "postgres" and settings.wallet_key_file == Path("/run/secrets/payout_wallet_key")
    assert _jobs(files["compose/prometheus/prometheus.yml"])["payouts"] == ["payouts:8190"]
    # the local target: the same engine as a supervised process on loopback, scraped there
    local = load_pool_config(data=tomllib.loads(files["local/pool.toml"])).payouts
    assert (local.metrics_host, local.metrics_port) == (cfg.bind.private, cfg.ports.payouts_metrics)
    assert _jobs(files["local/prometheus/prometheus.yml"])["payouts"] == [
        f"{cfg.bind.private}:{cfg.ports.payouts_metrics}"
    ]


def test_payouts_healthcheck_needs_a_completed_pass(paying: Path, tmp_path: Path) -> None:
    """The healthcheck's own script, run against metrics text: healthy only once the last-pass time is set."""
    cfg, paths = _cfg(paying)
    test = _compose(render_files(cfg, paths))["services"]["payouts"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    script = test[3]
    assert "$" not in script  # compose would interpolate it
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    body = {"text": ""}

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body["text"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = script.replace("127.0.0.1:8190", f"127.0.0.1:{server.server_address[1]}")

        def healthy(text: str) -> bool:
            body["text"] = text
            return subprocess.run([sys.executable, "-c", local], capture_output=True, timeout=30).returncode == 0

        name = "ckbpool_payouts_last_pass_timestamp_seconds"
        assert not healthy(f"# TYPE {name} gauge\n{name} 0.0\n")
        assert not healthy("ckbpool_payouts_payable_shannons 5.0\n")
        assert healthy(f"# HELP {name} x\n# TYPE {name} gauge\n{name} 1.7512345e+09\n")
    finally:
        server.shutdown()
    server.server_close()


def test_sqlite_ledger_is_shared_with_the_engine_through_the_pools_data_dir(paying: Path) -> None:
    cfg, paths = _cfg(paying, payouts={"database": "sqlite"})
    compose = _compose(render_files(cfg, paths))
    payouts = compose["services"]["payouts"]
    assert "./data/pool:/var/lib/ckbpool" in payouts["volumes"]
    assert "postgres" not in payouts["depends_on"]
    assert set(payouts["secrets"]) == {"payout_wallet_key", "redis_password"}


def test_hosts_run_one_engine_on_the_accounting_host_scraped_from_the_monitoring_host(paying: Path) -> None:
    cfg, paths = _cfg(paying)
    plans = _plans(cfg, paths, THREE)
    assert [h for h, plan in plans.items() if "payouts" in plan.services] == ["pool-1"]
    assert sec.PAYOUT_WALLET_KEY in plans["pool-1"].secrets
    compose = yaml.safe_load(plans["pool-1"].files["compose/compose.yaml"])
    assert compose["services"]["payouts"]["command"][:2] == ["payouts", "serve"]
    assert "depends_on" not in compose["services"]["payouts"]  # the node, Redis and PostgreSQL run elsewhere
    # Prometheus on data-1 scrapes it through pool-1's scrape gateway; the firewall admits data-1 only
    assert _jobs(plans["data-1"].files["compose/prometheus/prometheus.yml"])["payouts-gateway"] == [
        f"10.231.0.3:{cfg.ports.scrape_gateway}"
    ]
    rules = {r["port"]: r for r in plans["pool-1"].firewall}
    assert rules[cfg.ports.scrape_gateway]["sources"] == ["10.231.0.2"]
    assert rules.get(cfg.ports.payouts_metrics, {"sources": []})["sources"] == []
    assert not rules[cfg.ports.payouts_metrics]["public"]
    settings = load_pool_config(data=tomllib.loads(plans["pool-1"].files["compose/pool/pool.toml"])).payouts
    assert (settings.metrics_host, settings.metrics_port) == ("0.0.0.0", 8190)
    # two accounting hosts: still one engine (the first), both serve the page
    groups = {**THREE, "pool": [], "jobmaker": ["pool-1"], "blockmaker": ["pool-1"], "stratum": ["pool-1"],
              "accounting": ["pool-1", "node-1"]}  # fmt: skip
    plans = _plans(cfg, paths, groups)
    engines = [h for h, plan in plans.items() if "payouts" in plan.services]
    assert len(engines) == 1 and engines[0] in ("pool-1", "node-1")
    for host in ("pool-1", "node-1"):
        assert cfg.ports.web in {r["port"] for r in plans[host].firewall if r["public"]}, host


def test_local_target_supervises_the_engine(paying: Path) -> None:
    from ckbpool.deploy import local

    cfg, paths = _cfg(paying, services={"redis": False})
    services = {s.name: s for s in local.build_services(cfg, paths)}
    assert "payouts" in services
    command = services["payouts"].command
    assert command is not None and command[-4:] == ["payouts", "serve", "-c", str(local.local_dir(paths) / "pool.toml")]
    cfg, paths = _cfg(paying, services={"redis": False}, payouts={"enabled": False})
    assert "payouts" not in {s.name for s in local.build_services(cfg, paths)}


def test_the_pool_image_ships_the_pages_files() -> None:
    """The pool image installs ckbpool from a generated pyproject: its package-data must carry the page's
    static files (not Python, so setuptools leaves them out otherwise; the pool then fails at start)."""
    from fnmatch import fnmatch

    from ckbpool.deploy.image import PACKAGE_DIR, _pyproject

    patterns = tomllib.loads(_pyproject())["tool"]["setuptools"]["package-data"]["ckbpool"]
    static = sorted((PACKAGE_DIR / "web" / "static").iterdir())
    assert {p.name for p in static} >= {"index.html", "app.js", "style.css"}
    for path in static:
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        assert any(fnmatch(rel, pattern) for pattern in patterns), rel
