"""``ckbpool deploy --target k8s`` -> ``status`` -> ``logs`` -> ``destroy`` through the CLI, against a real
kube-apiserver (+ etcd) on loopback (tests/support/k8s.py) and the real helm.

This cluster has no kubelet (and, unless scripts/k8s-deps.sh built them, no controller-manager or scheduler):
the release's objects are stored but no pod ever runs. So the deploy creates every workload and then fails its
bounded wait naming what is not ready and why; ``status`` shows every service not ready, with the reason from
the API (Pending and the scheduler's message about nodes, or no pods yet without the controllers) and exits 1;
``logs`` says there is no pod to read; ``destroy`` uninstalls the release (and
``--purge`` would delete the PVCs), after which the workloads are gone and ``status`` reports them missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from ckbpool.cli.app import app
from support.k8s import KubeApiServer, require_tools

pytestmark = pytest.mark.integration
NAMESPACE = "mining"


@pytest.fixture(scope="module")
def api() -> Iterator[KubeApiServer]:
    require_tools("helm")
    server = KubeApiServer()
    try:
        yield server.start(with_controllers=True)
    finally:
        server.stop()


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def project(tmp_path: Path, api: KubeApiServer) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = run("init", "-c", str(config), "--non-interactive", "--name", "kube", "--network", "dev", "--no-miner")
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(config.read_text())
    data["kubernetes"] = {"kubeconfig": str(api.kubeconfig), "namespace": NAMESPACE, "stratum_replicas": 2}
    data["images"] = {**data.get("images", {}), "registry": "registry.example.com/ckbpool/pool"}
    config.write_text(yaml.safe_dump(data))
    return config


def test_deploy_status_logs_destroy_against_the_api_server(project: Path, api: KubeApiServer) -> None:
    c = str(project)
    deployed = run("deploy", "-c", c, "--target", "k8s", "--timeout", "15")
    # every object is created, then the bounded wait for readiness fails, saying what waits and why
    assert deployed.exit_code == 1, deployed.output
    assert "not ready within 15s" in deployed.stderr
    assert "ckb: 0/1 ready" in deployed.stderr and "pool-stratum: 0/2 ready" in deployed.stderr
    names = api.kubectl("get", "deployments,statefulsets", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert sorted(names) == sorted(
        [
            "statefulset.apps/kube-pool-stratum", "deployment.apps/kube-pool-jobmaker",
            "deployment.apps/kube-pool-blockmaker", "deployment.apps/kube-pool-accounting",
            "statefulset.apps/kube-ckb", "statefulset.apps/kube-redis", "statefulset.apps/kube-kafka",
        ]
    )  # fmt: skip
    # the secrets' values file lives only for the helm call; the public one stays for the operator to read
    workspace = project.parent / "workspace" / "k8s"
    assert (workspace / "values.yaml").is_file() and not (workspace / ".secrets.values.yaml").exists()
    public = yaml.safe_load((workspace / "values.yaml").read_text())
    assert "secrets" not in public
    static_key = (project.parent / "secrets" / "pool-static.key").read_text().strip()
    assert static_key and static_key not in (workspace / "values.yaml").read_text()

    status = run("status", "-c", c, "--json")  # the target is remembered from the deploy
    assert status.exit_code == 1, status.output
    report = json.loads(status.stdout)
    assert report["target"] == "k8s"
    rows = {row["name"]: row for row in report["services"]}
    assert list(rows) == [
        "ckb",
        "redis",
        "kafka",
        "pool-jobmaker",
        "pool-stratum",
        "pool-blockmaker",
        "pool-accounting",
    ]
    for row in rows.values():
        assert row["healthy"] is False and row["state"] in ("pending", "starting"), row
        assert row["detail"].startswith("0/"), row
    assert rows["pool-stratum"]["detail"].startswith("0/2 ready")
    if api.has_controllers:
        # the controllers made the pods and the scheduler found no node for them: Pending, in its own words
        for row in rows.values():
            assert row["state"] == "pending" and "Pending: " in row["detail"], row
        assert "0/2 ready; 2 pods: Pending: " in rows["pool-stratum"]["detail"]
    else:  # the API server alone: stored workloads, no pods
        for row in rows.values():
            assert "no pods yet (no controller has created them)" in row["detail"], row

    logs = run("logs", "ckb", "-c", c)
    assert logs.exit_code == 0, logs.output
    assert "no log lines: no running pod matches" in logs.stdout
    unknown = run("logs", "nope", "-c", c)
    assert unknown.exit_code != 0 and "no service 'nope'" in unknown.stderr

    destroyed = run("destroy", "-c", c)
    assert destroyed.exit_code == 0, destroyed.output
    assert "release kube" in destroyed.stdout and "pool-stratum" in destroyed.stdout
    assert api.kubectl("get", "deployments,statefulsets", "-n", NAMESPACE, "-o", "name").stdout.strip() == ""
    after = json.loads(run("status", "-c", c, "--json").stdout)
    assert {row["state"] for row in after["services"]} == {"missing"}
    again = run("destroy", "-c", c)
    assert again.exit_code == 0 and "nothing was running" in again.stdout
