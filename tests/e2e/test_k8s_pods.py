"""The Helm chart's pods on a real node: ``ckbpool deploy --target k8s`` into a one-node cluster started here, a
CPU miner from the host gets shares accepted and a block the ckb pod's node accepts, then ``destroy``.

The cluster (tests/support/k8s.py): etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
loopback, and a node -- Debian's containerd (CRI, bridge CNI), a kubelet, kube-proxy (iptables) and CoreDNS,
all v1.37.2 / 1.15.0 built by ``scripts/k8s-deps.sh``. No registry is reachable, so the images are the local
stand-ins of the official ones (docker/local/*.Dockerfile) and the pool image as a deploy builds it, imported
from the Docker engine into the node's containerd (``docker save | ctr images import``) -- ckbpool.yaml names
them as an operator names a mirror's. No provisioner either: the StatefulSets' claims bind to hostPath
PersistentVolumes made here under ``kubernetes.storage_class``, as a cluster without one needs.

The miner reaches stratum through the Service's NodePort (``kubernetes.service_type: NodePort``), on the
node's address -- the host side of the pods' bridge, never a real interface; the node's RPC and the block
maker's /status are read through their ClusterIPs, which kube-proxy routes from the host too.

Skipped, naming the missing piece, without the binaries (``scripts/k8s-deps.sh``, a step of ``make deps``),
containerd / runc / the CNI plugins, root, or the Docker engine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from ckbpool.cli.app import app
from ckbpool.deploy.k8s import EXTRA_VALUES_ENV
from ckbpool.deploy.secrets import authority_public_key
from ckbpool.miner.sv2 import Sv2Miner
from support.k8s import KubeApiServer, KubeNode, node_problem, require_tools

from .images import build
from .mining import eventually, mine_until_block

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
NAME, NAMESPACE, STORAGE_CLASS = "k8se2e", "mining", "ckbpool-test-local"
#: the StatefulSets' claims (``data-<statefulset>-0``) -> the uid of the pod that writes them
CLAIMS = {f"data-{NAME}-ckb-0": 1000, f"data-{NAME}-kafka-0": 1000, f"data-{NAME}-redis-0": 999}
#: a 2-core node cannot hold the chart's default requests (ckb alone asks for a CPU): small requests, the
#: chart's limits -- through the operator's extra values file, as on any small node
SMALL = {
    "resources": {
        component: {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": limits}
        for component, limits in {
            "ckb": {"cpu": "2", "memory": "2Gi"},
            "pool": {"cpu": "1", "memory": "1Gi"},
            "proxy": {"cpu": "1", "memory": "512Mi"},
            "redis": {"cpu": "1", "memory": "512Mi"},
            "kafka": {"cpu": "2", "memory": "1536Mi"},
            "postgres": {"cpu": "1", "memory": "1Gi"},
            "payouts": {"cpu": "1", "memory": "512Mi"},
        }.items()
    }
}


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The stand-ins and the pool image in the Docker engine (started by scripts/docker-deps.sh)."""
    problem = node_problem()
    if problem:
        pytest.skip(problem)
    if shutil.which("docker") is None and not Path("/usr/bin/docker").exists():
        pytest.skip("docker is not installed: the images come from the Docker engine")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-deps.sh")], capture_output=True, text=True, timeout=1200
    )
    if result.returncode != 0:
        pytest.skip("docker engine unavailable: " + " / ".join((result.stderr or result.stdout).splitlines()[-5:]))
    env = build(["pool", "ckb", "redis", "kafka"])
    return {key: image for key, image in env.items() if key != "CKBPOOL_IMAGE_POOL_BASE"}


@pytest.fixture(scope="module")
def cluster(images: dict[str, str]) -> Iterator[tuple[KubeApiServer, KubeNode]]:
    require_tools("helm", "kube-controller-manager", "kube-scheduler")
    api = KubeApiServer()
    node: KubeNode | None = None
    try:
        api.start(with_controllers=True)
        node = KubeNode(api)
        node.start(list(images.values()))
        yield api, node
    finally:
        if node is not None:
            node.stop()
        api.stop()


@pytest.fixture
def project(tmp_path: Path, cluster: tuple[KubeApiServer, KubeNode], images: dict[str, str]) -> Path:
    api, node = cluster
    config = tmp_path / "ckbpool.yaml"
    result = cli(
        "init", "-c", str(config), "--non-interactive", "--name", NAME, "--network", "dev", "--no-miner",
        "--no-grafana", "--share-interval", "0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = yaml.safe_load(config.read_text())
    data["kubernetes"] = {
        "kubeconfig": str(api.kubeconfig),
        "namespace": NAMESPACE,
        "stratum_replicas": 2,
        "storage_class": STORAGE_CLASS,
        "service_type": "NodePort",
        "ckb_storage_gb": 1,
    }
    data["images"] = {
        **data.get("images", {}),
        "ckb": images["CKBPOOL_IMAGE_CKB"],
        "redis": images["CKBPOOL_IMAGE_REDIS"],
        "kafka": images["CKBPOOL_IMAGE_KAFKA"],
        "pool": images["CKBPOOL_IMAGE_POOL"],
    }
    config.write_text(yaml.safe_dump(data))
    node.persistent_volumes(CLAIMS, namespace=NAMESPACE, storage_class=STORAGE_CLASS)
    return config


def _get(api: KubeApiServer, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(api.kubectl("get", *args, "-n", NAMESPACE, "-o", "json").stdout)
    return out


def _rpc(url: str, method: str, *params: Any) -> Any:
    body = {"id": 1, "jsonrpc": "2.0", "method": method, "params": list(params)}
    return httpx.post(url, json=body, timeout=5).json()["result"]


def test_pods_ready_miner_block_accepted_by_the_ckb_pod_destroy(
    project: Path, cluster: tuple[KubeApiServer, KubeNode], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, node = cluster
    small = tmp_path / "small-node.values.yaml"
    small.write_text(yaml.safe_dump(SMALL))
    monkeypatch.setenv(EXTRA_VALUES_ENV, str(small))
    c = str(project)
    started = time.monotonic()
    deployed = cli("deploy", "-c", c, "--target", "k8s", "--timeout", "420")
    assert deployed.exit_code == 0, deployed.output
    ready_s = time.monotonic() - started

    # every pod of the release runs on the node, every container ready
    pods = _get(api, "pods")["items"]
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == {
        "ckb", "redis", "kafka", "pool-stratum", "pool-jobmaker", "pool-blockmaker", "pool-accounting",
    }  # fmt: skip
    for pod in pods:
        assert pod["spec"]["nodeName"] == "ckbpool-test-node", pod["metadata"]["name"]
        statuses = pod["status"].get("containerStatuses", [])
        assert statuses and all(s["ready"] for s in statuses), (pod["metadata"]["name"], pod["status"])
    # two stratum pods, each with its own server_id (extranonce prefixes, Kafka consumer groups): pod k from
    # 1 + 16 k -- with a shared one, only one pod would receive the templates and the miner, balanced by the
    # Service onto either, could be left without a job
    stratum = sorted(p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith(f"{NAME}-pool-stratum-"))
    assert stratum == [f"{NAME}-pool-stratum-0", f"{NAME}-pool-stratum-1"]
    for ordinal, pod_name in enumerate(stratum):
        said = api.kubectl("logs", pod_name, "-c", "server-id", "-n", NAMESPACE).stdout
        assert f"{pod_name}: server_id {1 + 16 * ordinal}" in said, said
    status = cli("status", "-c", c, "--json")
    assert status.exit_code == 0, status.output
    assert all(row["healthy"] for row in json.loads(status.stdout)["services"])

    services = {s["metadata"]["name"]: s for s in _get(api, "services")["items"]}
    stratum_port = services[f"{NAME}-pool-stratum"]["spec"]["ports"][0]["nodePort"]
    rpc_url = f"http://{services[f'{NAME}-ckb']['spec']['clusterIP']}:8114"
    blockmaker = f"http://{services[f'{NAME}-pool-blockmaker-http']['spec']['clusterIP']}:8180/status"
    stratum_status = f"http://{services[f'{NAME}-pool-stratum-http']['spec']['clusterIP']}:8180/status"
    tip_before = int(_rpc(rpc_url, "get_tip_block_number"), 16)

    cfg = yaml.safe_load(project.read_text())
    miner = Sv2Miner(
        node.ip,
        stratum_port,
        f"{cfg['payout_address']}.k8s",
        authority_public_key=authority_public_key(project.parent / "secrets"),
    )
    mining = time.monotonic()
    # the block maker (the role that submits) reports the node's verdict; mine_until_block asks the node
    # for the block at that height and compares hashes
    block = mine_until_block(miner, lambda: httpx.get(blockmaker, timeout=3).json(), rpc_url, timeout=180)
    block_s = time.monotonic() - mining
    assert block["worker"].endswith(".k8s")
    tip_after = int(_rpc(rpc_url, "get_tip_block_number"), 16)
    assert tip_after > tip_before and tip_after >= block["height"], (tip_before, tip_after, block)
    user = eventually(
        lambda: httpx.get(stratum_status, timeout=3).json()["users"].get(cfg["payout_address"], {}),
        lambda u: u.get("accepted", 0) > 0,
    )
    assert user.get("accepted", 0) > 0, user
    print(f"\nk8s pods: deploy to every pod ready {ready_s:.0f} s; first block accepted {block_s:.0f} s later")

    # `ckbpool logs` reads the pods' logs through the API server and the kubelet
    logs = cli("logs", "pool-blockmaker", "-c", c, "--lines", "500")
    assert logs.exit_code == 0, logs.output
    assert block["hash"].removeprefix("0x") in logs.stdout

    destroyed = cli("destroy", "-c", c, "--purge", "--yes")
    assert destroyed.exit_code == 0, destroyed.output
    assert "release k8se2e" in destroyed.stdout
    deadline = time.monotonic() + 120
    while _get(api, "pods")["items"] and time.monotonic() < deadline:
        time.sleep(2)
    assert _get(api, "pods")["items"] == [], "pods still running after destroy"
    assert _get(api, "pvc")["items"] == []
