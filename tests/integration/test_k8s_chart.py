"""The Helm chart against a real helm and a real kube-apiserver (+ etcd) on loopback (tests/support/k8s.py).

Values come from a ckbpool.yaml through :func:`ckbpool.deploy.k8s.chart_values` with every optional part on
(proxy, Kafka in the cluster, Redis, payouts with PostgreSQL, the page), so every template renders. Checked:
``helm lint --strict`` is clean; every rendered manifest is accepted by the API server's own validation
(server-side apply, dry run: OpenAPI schemas, defaulting, admission, the restricted Pod Security Standard);
``helm install`` creates every object the chart renders; bad values (no payout address, a ``:latest`` image)
stop ``helm install`` with the schema's message before anything is created. No kubelet: no pod runs here (the
target test shows how status says so).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ckbpool.deploy.k8s import chart_dir
from support.k8s import KubeApiServer, require_tools, stack_values_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tools("helm")["helm"]


@pytest.fixture(scope="module")
def api() -> Iterator[KubeApiServer]:
    server = KubeApiServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stack_values_file(tmp_path_factory.mktemp("k8s-chart"), "chart")


def helm_run(helm: str, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [helm, *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def rendered(helm: str, values: Path, namespace: str) -> list[dict[str, Any]]:
    result = helm_run(helm, "template", "chart", str(chart_dir()), "-f", str(values), "--namespace", namespace)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_helm_lint_is_clean(helm: str, values_file: Path) -> None:
    result = helm_run(helm, "lint", "--strict", str(chart_dir()), "-f", str(values_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_the_chart_renders_every_component_with_pod_security(helm: str, values_file: Path) -> None:
    docs = rendered(helm, values_file, "mining")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("StatefulSet", "chart-ckb"), ("StatefulSet", "chart-kafka"), ("StatefulSet", "chart-redis"),
        ("StatefulSet", "chart-postgres"), ("StatefulSet", "chart-pool-stratum"), ("Deployment", "chart-pool-jobmaker"),
        ("Deployment", "chart-pool-blockmaker"), ("Deployment", "chart-pool-accounting"),
        ("Deployment", "chart-payouts"), ("Deployment", "chart-proxy"), ("Secret", "chart-secrets"),
        ("NetworkPolicy", "chart-default-deny"), ("Service", "chart-pool-stratum"), ("Service", "chart-web"),
    ]:  # fmt: skip
        assert expected in kinds, f"{expected} not rendered"
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, workload["metadata"]["name"]
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"] and container["resources"]["requests"]
            assert "readinessProbe" in container and "livenessProbe" in container
        for container in pod.get("initContainers", []):  # the waits and the stratum pods' server_id
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, workload["metadata"]["name"]
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"] and container["resources"]["requests"]
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in workloads}
    assert replicas["chart-pool-stratum"] == 2 and replicas["chart-pool-blockmaker"] == 1
    # only the miner-facing Services leave ClusterIP
    public = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Service" and d["spec"]["type"] != "ClusterIP")
    assert public == ["chart-pool-stratum", "chart-proxy", "chart-web"]


def test_every_manifest_is_accepted_by_the_api_server(helm: str, api: KubeApiServer, values_file: Path) -> None:
    api.kubectl("create", "namespace", "dryrun")
    # the restricted Pod Security Standard, enforced and warned about: a workload whose pod template breaks it
    # is reported on stderr ("would violate PodSecurity"), a pod breaking it refused
    api.kubectl(
        "label", "namespace", "dryrun", *(f"pod-security.kubernetes.io/{m}=restricted" for m in ("enforce", "warn"))
    )
    docs = rendered(helm, values_file, "dryrun")
    text = yaml.safe_dump_all(docs)
    result = subprocess.run(
        [api.kubectl_bin, "--kubeconfig", str(api.kubeconfig), "apply", "--server-side", "--dry-run=server",
         "--field-manager=ckbpool-test", "-n", "dryrun", "-f", "-"],
        input=text, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    accepted = [line for line in result.stdout.splitlines() if "serverside-applied (server dry run)" in line]
    assert len(accepted) == len(docs), result.stdout
    # a dry run stores nothing
    assert api.kubectl("get", "deployments", "-n", "dryrun", "-o", "name").stdout.strip() == ""


def test_helm_install_creates_every_object(helm: str, api: KubeApiServer, values_file: Path) -> None:
    docs = rendered(helm, values_file, "installed")
    result = helm_run(
        helm, "install", "chart", str(chart_dir()), "-f", str(values_file), "--namespace", "installed",
        "--create-namespace", kubeconfig=api.kubeconfig,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    try:
        for doc in docs:
            kind, name = doc["kind"].lower(), doc["metadata"]["name"]
            got = api.kubectl("get", f"{kind}/{name}", "-n", "installed", "-o", "name", check=False)
            assert got.returncode == 0, f"{kind}/{name} was not created: {got.stderr}"
        secret = api.kubectl("get", "secret", "chart-secrets", "-n", "installed", "-o", "yaml").stdout
        assert set(yaml.safe_load(secret)["data"]) >= {"pool_static_key", "postgres_password", "payout_wallet_key"}
    finally:
        helm_run(helm, "uninstall", "chart", "--namespace", "installed", kubeconfig=api.kubeconfig)
    assert api.kubectl("get", "deployments", "-n", "installed", "-o", "name").stdout.strip() == ""


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("payoutAddress=", "at '/payoutAddress': minLength: got 0, want 1"),
        (
            "images.pool=registry.example.com/ckbpool/pool:latest",
            "at '/images/pool': value must be 'a pinned image (name:version or name@sha256:digest), not :latest'",
        ),
    ],
)
def test_bad_values_fail_with_the_schema_message(
    helm: str, api: KubeApiServer, values_file: Path, override: str, message: str
) -> None:
    result = helm_run(
        helm, "install", "bad", str(chart_dir()), "-f", str(values_file), "--set", override,
        "--namespace", "bad", "--create-namespace", kubeconfig=api.kubeconfig,
    )  # fmt: skip
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
    assert api.kubectl("get", "deployments", "-n", "bad", "-o", "name", check=False).stdout.strip() == ""
