"""The k8s chart's NetworkPolicies (issue 18 on the k8s target): the bus and Redis inside the cluster are
plaintext, so what keeps other pods off them is the policies. ``helm template`` renders the chart with the values
``ckbpool`` produces (every component on: proxy, Kafka in the cluster, payouts on PostgreSQL); the policies are
then evaluated here the way Kubernetes does (a pod selected by any Ingress policy is isolated; a connection is
allowed when some rule of some policy selecting the destination matches the source pod and the port) against the
labels of the pods the chart's own workloads create:

* Kafka's client port: every pool role, nothing else of the stack (ckb, the proxy, payouts, PostgreSQL, Redis);
  its controller port: only the broker itself;
* Redis: the pool roles and payouts only;
* the rest is as before: stack pods reach each other (the proxy -> stratum, the roles -> ckb, payouts ->
  PostgreSQL), the world reaches stratum and nothing internal.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ckbpool.deploy.k8s import CACHE_BIN, chart_dir
from support.k8s import stack_values_file

pytestmark = pytest.mark.unit

POOL = ("pool-stratum", "pool-jobmaker", "pool-blockmaker", "pool-accounting")
OUTSIDE = None  # a source that is no pod of the namespace (the internet, another namespace's pod)


def helm() -> str:
    found = shutil.which("helm") or (str(CACHE_BIN / "helm") if (CACHE_BIN / "helm").exists() else None)
    if found is None:
        pytest.skip("no helm: bash scripts/k8s-deps.sh builds it")
    return found


def template(values: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm(), "template", "chart", str(chart_dir()), "-f", str(values), "--namespace", "mining"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stack_values_file(tmp_path_factory.mktemp("netpol"), "np")


@pytest.fixture(scope="module")
def rendered(values: Path) -> list[dict[str, Any]]:
    return template(values)


def pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """component -> the labels of the pods its workload creates."""
    out = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            out[labels["app.kubernetes.io/component"]] = labels
    return out


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        value, op = labels.get(e["key"]), e["operator"]
        ok = {
            "In": value in e.get("values", []),
            "NotIn": value not in e.get("values", []),
            "Exists": e["key"] in labels,
            "DoesNotExist": e["key"] not in labels,
        }[op]
        if not ok:
            return False
    return True


def allowed(docs: list[dict[str, Any]], dest: dict[str, str], source: dict[str, str] | None, port: int) -> bool:
    """Whether ``source`` (a pod of the same namespace, or OUTSIDE) may open ``dest``:``port``."""
    policies = [
        d["spec"] for d in docs
        if d["kind"] == "NetworkPolicy" and "Ingress" in d["spec"].get("policyTypes", ["Ingress"])
        and selects(d["spec"]["podSelector"], dest)
    ]  # fmt: skip
    assert policies, f"no policy isolates {dest}: everything may reach it"
    for spec in policies:
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "namespaceSelector" in peer:
                    # a scrape rule: other namespaces' pods; this model's sources are our namespace or OUTSIDE
                    continue
                if source is not None and selects(peer["podSelector"], source):
                    return True
    return False


def test_only_the_pool_roles_reach_kafka(rendered: list[dict[str, Any]]) -> None:
    p = pods(rendered)
    assert set(POOL) | {"kafka", "redis", "ckb", "proxy", "payouts", "postgres"} <= set(p)
    for role in POOL:
        assert allowed(rendered, p["kafka"], p[role], 9092), role
        assert not allowed(rendered, p["kafka"], p[role], 9093), role  # the controller port is the broker's
    for other in ("ckb", "proxy", "payouts", "postgres", "redis"):
        assert not allowed(rendered, p["kafka"], p[other], 9092), other
    assert not allowed(rendered, p["kafka"], OUTSIDE, 9092)
    assert allowed(rendered, p["kafka"], p["kafka"], 9093)  # KRaft: the broker reaches its own controller


def test_only_the_pool_roles_and_payouts_reach_redis(rendered: list[dict[str, Any]]) -> None:
    p = pods(rendered)
    for client in (*POOL, "payouts"):
        assert allowed(rendered, p["redis"], p[client], 6379), client
    for other in ("ckb", "proxy", "postgres", "kafka"):
        assert not allowed(rendered, p["redis"], p[other], 6379), other
    assert not allowed(rendered, p["redis"], OUTSIDE, 6379)


def test_the_rest_of_the_stack_still_reaches_what_it_uses(rendered: list[dict[str, Any]]) -> None:
    p = pods(rendered)
    assert allowed(rendered, p["pool-stratum"], p["proxy"], 34255)  # V1 miners through the proxy
    assert allowed(rendered, p["pool-stratum"], OUTSIDE, 34255)  # miners
    assert allowed(rendered, p["ckb"], p["pool-jobmaker"], 8114)
    assert allowed(rendered, p["postgres"], p["payouts"], 5432)
    assert not allowed(rendered, p["ckb"], OUTSIDE, 8114)
    assert not allowed(rendered, p["postgres"], OUTSIDE, 5432)


def test_the_policies_follow_the_values(tmp_path: Path, values: Path, rendered: list[dict[str, Any]]) -> None:
    """The Kafka and Redis policies exist exactly when the chart runs those components (an external Kafka's
    access is the cluster operator's, outside this namespace)."""
    names = {d["metadata"]["name"] for d in rendered if d["kind"] == "NetworkPolicy"}
    assert {"np-kafka", "np-redis", "np-internal", "np-default-deny"} <= names
    data = yaml.safe_load(values.read_text())
    data["kafka"] = {**data["kafka"], "inCluster": False, "bootstrap": "kafka.example:9092"}
    data["redis"] = {**data["redis"], "enabled": False}
    other = tmp_path / "values.yaml"
    other.write_text(yaml.safe_dump(data))
    names = {d["metadata"]["name"] for d in template(other) if d["kind"] == "NetworkPolicy"}
    assert "np-kafka" not in names and "np-redis" not in names and "np-internal" in names
