"""The ``k8s`` target: the Helm chart ``charts/ckbpool`` installed with ``helm upgrade --install``.

The chart holds the Kubernetes shape of the stack (ckb as a StatefulSet with a PVC, the pool roles as
Deployments, the proxy, Kafka, Redis, PostgreSQL, NetworkPolicies, probes, pod security); everything that comes
from ``ckbpool.yaml`` reaches it through values built here by :func:`chart_values`: the same templates the other
targets render (ckb.toml, pool.toml, proxy.toml, redis.conf, Kafka's server.properties) rendered once more with
the cluster's Service names, and the secrets ``ckbpool init`` generated. So a config edit changes the cluster the
same way it changes a compose stack, and the chart never re-implements what the renderer decides.

Roles are split, as on the hosts target: ``stratum`` (``kubernetes.stratum_replicas`` pods behind one Service,
a StatefulSet whose pod k takes the server_ids from ``1 + k * IDS_PER_STRATUM_HOST`` like stratum host k),
one ``jobmaker``, one ``blockmaker`` (a second one would submit each block twice) and one ``accounting`` (which
also serves the miners' page), talking over Kafka -- the chart's single-node KRaft StatefulSet, or the
operator's cluster (``kubernetes.kafka_bootstrap``). Payouts need PostgreSQL here (SQLite cannot be shared by
pods): the chart runs it when ``payouts.database`` is ``postgres`` and the target refuses ``sqlite``.

Secrets: the values file that carries them is written 0600 into the workspace only for the duration of the
helm call and removed afterwards; Helm keeps the release's values in its own release Secret in the namespace, so
the cluster's Secret encryption and RBAC protect them like the chart's Secrets. The authority key never leaves
``secrets_dir`` (only its public half, in proxy.toml).

``status`` reads the pods through the API (``kubectl get pods -o json``): a pod that no node runs is reported
``Pending`` with the scheduler's reason, which is what an API server without a kubelet shows. ``logs`` is
``kubectl logs`` and ``destroy`` is ``helm uninstall`` (``--purge`` also deletes the release's PVCs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..pool.config import IDS_PER_STRATUM_HOST, ConfigError, load_pool_config
from . import secrets as sec
from .assets import shipped_dir
from .config import POOL_ROLES, DeployConfig
from .errors import TargetError, TargetUnavailable
from .render import COMPOSE_SECRET_FILES, INNER, build_context, compose_context, environment
from .target import ConfirmCallback, Paths, ProgressCallback, ServiceHealth, Target

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

#: secrets the chart mounts (compose's names, so pool.toml's /run/secrets/<name> paths are the compose ones);
#: the authority key, the Grafana password and the exporter's JSON stay out: the chart runs neither
K8S_SECRETS: tuple[str, ...] = (
    "pool_static_key",
    "pool_certificate",
    "redis_password",
    "redis_auth_conf",
    "postgres_password",
    "payout_wallet_key",
    "web_tls_cert",
    "web_tls_key",
    "redis_acl",  # redis.conf's aclfile: the users "pool" and "exporter", "default" off
)
#: chart component -> its Service name suffix (``<name>-<suffix>``); pool roles are ``pool-<role>``
CKB, REDIS, KAFKA, POSTGRES, PROXY = "ckb", "redis", "kafka", "postgres", "proxy"
DEFAULT_TIMEOUT = 600.0
#: the chart gives stratum pod k the server_ids from 1 + k * IDS_PER_STRATUM_HOST (extranonce prefixes and
#: Kafka consumer groups of its own, as the hosts target gives stratum host k); one byte holds fifteen such ranges
MAX_STRATUM_PODS = (256 - 1) // IDS_PER_STRATUM_HOST
CACHE_BIN = Path(os.environ.get("CKBPOOL_CACHE", str(Path.home() / ".cache" / "ckbpool"))) / "bin"


def chart_dir() -> Path:
    """The chart shipped with this ckbpool (``ckbpool/charts/ckbpool``; ``CKBPOOL_CHART`` points at another)."""
    return shipped_dir(
        "charts/ckbpool",
        "CKBPOOL_CHART",
        ("Chart.yaml", "values.schema.json", "templates"),
        "no Helm chart: set CKBPOOL_CHART to a copy of charts/ckbpool",
    )


def _tool(name: str, env_var: str) -> str:
    """``$env_var``, else ``name`` on PATH, else the copy ``scripts/k8s-deps.sh`` builds into the cache."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    found = shutil.which(name) or (str(CACHE_BIN / name) if (CACHE_BIN / name).exists() else None)
    if found is None:
        raise TargetUnavailable(f"{name} is not installed (put it on PATH, set {env_var}, or run scripts/k8s-deps.sh)")
    return found


def k8s_problems(config: DeployConfig) -> list[str]:
    """What this configuration cannot be on Kubernetes (``key.path: problem``), empty when it can."""
    problems = []
    if config.kubernetes.stratum_replicas > MAX_STRATUM_PODS:
        problems.append(
            f"kubernetes.stratum_replicas: at most {MAX_STRATUM_PODS} (stratum pod k uses server_ids from "
            f"1 + {IDS_PER_STRATUM_HOST} k, and a server_id is one byte)"
        )
    if config.payouts.enabled and config.payouts.database != "postgres":
        problems.append(
            "payouts.database: the k8s target needs postgres (a SQLite file cannot be shared by the pool's pods)"
        )
    return problems


def _names(config: DeployConfig) -> dict[str, str]:
    """Service (and so DNS) names in the namespace, shared by the values and the chart's templates."""
    return {c: f"{config.name}-{c}" for c in (CKB, REDIS, KAFKA, POSTGRES, PROXY)} | {
        role: f"{config.name}-pool-{role}" for role in POOL_ROLES
    }


def _kafka_bootstrap(config: DeployConfig) -> str:
    return config.kubernetes.kafka_bootstrap or f"{_names(config)[KAFKA]}:{INNER['kafka']}"


def rendered_files(config: DeployConfig, paths: Paths) -> dict[str, dict[str, str]]:
    """ConfigMap contents: the templates the other targets render, with the cluster's Service names.

    Built on the compose context (container ports, ``/run/secrets/<name>`` files) with the addresses swapped for
    Service names; one pool.toml per role, which differ only in ``roles`` (and the bus client id)."""
    names = _names(config)
    env = environment()
    ctx: dict[str, Any] = {**build_context(config, paths), **compose_context(config, paths)}
    ctx["place"] = "k8s"
    pool = dict(ctx["pool"])
    pool["rpc_url"] = f"http://{names[CKB]}:{INNER['node_rpc']}"
    pool["subscribe_address"] = f"{names[CKB]}:{INNER['node_tcp_rpc']}"
    pool["redis_url"] = f"redis://{names[REDIS]}:{INNER['redis']}/0" if config.services.redis else None
    if pool.get("payouts") and config.runs_postgres:
        pool["payouts"] = {**pool["payouts"], "db_host": names[POSTGRES]}
    # the page's address: the operator's web.public_url, else none (a LoadBalancer's address is the cluster's)
    if pool.get("web") and not config.web.public_url:
        pool["web"] = {k: v for k, v in pool["web"].items() if k != "public_url"}
    ckb_files = {
        "ckb.toml": env.get_template("ckb.toml.j2").render(ctx),
        "default.db-options": env.get_template("default.db-options.j2").render(ctx),
    }
    if config.network == "dev":
        ckb_files["dev.toml"] = env.get_template("dev-spec.toml.j2").render(ctx)
    pool_files = {}
    for role in POOL_ROLES:
        bus = f"kafka://{_kafka_bootstrap(config)}?client_id=pool-{role}&spool_dir=/var/lib/ckbpool/spool"
        role_ctx = {**ctx, "pool": {**pool, "roles": [role], "bus_url": bus}}
        text = env.get_template("pool.toml.j2").render(role_ctx)
        try:  # a rendered pool.toml must load as the pool's own config (a template bug otherwise)
            load_pool_config(data=tomllib.loads(text))
        except (ConfigError, tomllib.TOMLDecodeError) as exc:  # pragma: no cover - template bug
            raise TargetError(f"the rendered {role}.toml is not a valid pool configuration: {exc}") from None
        pool_files[f"{role}.toml"] = text
    out = {"ckb": ckb_files, "pool": pool_files}
    if config.services.proxy:
        proxy = {**ctx["proxy"], "upstream_host": names["stratum"], "upstream_port": config.ports.stratum}
        out["proxy"] = {"proxy.toml": env.get_template("proxy.toml.j2").render({**ctx, "proxy": proxy})}
    if config.services.redis:
        out["redis"] = {"redis.conf": env.get_template("redis.conf.j2").render(ctx)}
    if not config.kubernetes.kafka_bootstrap:
        kafka = dict(ctx["kafka"]["settings"])
        host = names[KAFKA]
        kafka["listeners"] = f"PLAINTEXT://:{INNER['kafka']},CONTROLLER://:{INNER['kafka_controller']}"
        kafka["advertised.listeners"] = f"PLAINTEXT://{host}:{INNER['kafka']}"
        kafka["controller.quorum.voters"] = f"1@{host}:{INNER['kafka_controller']}"
        # a directory inside the claim (mounted at /var/lib/kafka/data): a fresh filesystem's lost+found at
        # the claim's root is not a topic-partition, which Kafka refuses in a log directory
        kafka["log.dirs"] = "/var/lib/kafka/data/logs"
        text = env.get_template("kafka-server.properties.j2").render({**ctx, "kafka": {"settings": kafka}})
        out["kafka"] = {"server.properties": text}
    return out


def chart_secrets(config: DeployConfig, paths: Paths) -> dict[str, str]:
    """The secrets the chart's pods read (compose's names -> file text), from ``secrets_dir``."""
    needed = set(sec.required_files(config))
    out: dict[str, str] = {}
    for name in K8S_SECRETS:
        file = COMPOSE_SECRET_FILES[name]
        if file not in needed:
            continue
        path = paths.secrets_dir / file
        try:
            out[name] = path.read_text()
        except OSError as exc:
            raise TargetError(f"{path}: cannot read ({exc.strerror}); run `ckbpool init`") from None
    return out


def pool_image(config: DeployConfig) -> str:
    """The pool image the cluster pulls: the operator's registry repository (``images.registry``) when set --
    ckbpool's own image name is local-only (``ckbpool.invalid``) and no cluster can pull it -- else ``images.pool``
    (for a cluster whose nodes were given the image by other means)."""
    registry = config.images.registry
    if not registry:
        return config.images.pool
    tag = config.images.pool.rpartition(":")[2]
    last = registry.rsplit("/", 1)[-1]
    return registry if ":" in last else f"{registry}:{tag}"


def chart_values(config: DeployConfig, paths: Paths, *, with_secrets: bool = True) -> dict[str, Any]:
    """The chart's values for this configuration (values.schema.json checks them again, inside helm)."""
    problems = k8s_problems(config)
    if problems:
        raise TargetError("; ".join(problems))
    k = config.kubernetes
    images = config.images
    common = {**build_context(config, paths), "compose": compose_context(config, paths)}
    values: dict[str, Any] = {
        "name": config.name,
        "network": config.network,
        "payoutAddress": config.payout_address,
        "images": {
            "ckb": images.ckb,
            "pool": pool_image(config),
            "redis": images.redis,
            "kafka": images.kafka,
            "postgres": images.postgres,
        },
        "ports": {"stratum": config.ports.stratum, "proxy": config.ports.proxy, "web": config.ports.web},
        "stratum": {"replicas": k.stratum_replicas},
        "serviceType": k.service_type,
        "storage": {"className": k.storage_class, "ckbGi": k.ckb_storage_gb},
        "redis": {"enabled": config.services.redis},
        "kafka": {
            "inCluster": not k.kafka_bootstrap,
            "bootstrap": _kafka_bootstrap(config),
            "clusterId": common["compose"]["kafka"]["settings"]["cluster.id"],
        },
        "proxy": {"enabled": config.services.proxy},
        "web": {"enabled": config.web.enabled, "tls": config.web.enabled and config.web.tls},
        "payouts": {"enabled": config.payouts.enabled},
        "postgres": {
            "enabled": config.runs_postgres,
            "db": "ckbpool",
            "user": "ckbpool",
            "sharedBuffersMb": config.payouts.postgres_shared_buffers_mb,
            "maxConnections": config.payouts.postgres_max_connections,
        },
        "monitoring": {"scrape": config.monitoring.enabled},
        # the compose healthchecks, run by the probes
        "ckbHealthcheck": common["ckb_healthcheck"],
        "payoutsHealthcheck": common["payouts_healthcheck"],
        "files": rendered_files(config, paths),
    }
    if with_secrets:
        values["secrets"] = chart_secrets(config, paths)
    return values


#: extra values files (``os.pathsep``-separated), layered over the generated ones: what ckbpool.yaml does not
#: model -- resources for a small node, tolerations, node selectors -- stays the operator's to set
EXTRA_VALUES_ENV = "CKBPOOL_K8S_VALUES"


def extra_values_args() -> list[str]:
    """``-f <file>`` for each file in ``$CKBPOOL_K8S_VALUES`` (last, so they win over the generated values;
    values.schema.json still checks the merge). A missing file is refused before helm runs."""
    args: list[str] = []
    for item in os.environ.get(EXTRA_VALUES_ENV, "").split(os.pathsep):
        if not item.strip():
            continue
        path = Path(item).expanduser()
        if not path.is_file():
            raise TargetError(f"{EXTRA_VALUES_ENV}: {path} is not a file")
        args += ["-f", str(path)]
    return args


def dump_values(values: dict[str, Any]) -> str:
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=False, width=1 << 16)


# ------------------------------------------------------------------------------------------------ target


@dataclass(frozen=True)
class Workload:
    """One Deployment or StatefulSet of the chart, as ``status`` shows it."""

    component: str
    kind: str  # Deployment | StatefulSet
    replicas: int


def expected_workloads(config: DeployConfig) -> list[Workload]:
    """The chart's workloads for this configuration (the rows of ``ckbpool status``), in start order."""
    out = [Workload(CKB, "StatefulSet", 1)]
    if config.services.redis:
        out.append(Workload(REDIS, "StatefulSet", 1))
    if not config.kubernetes.kafka_bootstrap:
        out.append(Workload(KAFKA, "StatefulSet", 1))
    if config.runs_postgres:
        out.append(Workload(POSTGRES, "StatefulSet", 1))
    for role in POOL_ROLES:
        if role == "stratum":  # a StatefulSet: each pod's ordinal gives it its own server_id
            out.append(Workload("pool-stratum", "StatefulSet", config.kubernetes.stratum_replicas))
        else:
            out.append(Workload(f"pool-{role}", "Deployment", 1))
    if config.payouts.enabled:
        out.append(Workload("payouts", "Deployment", 1))
    if config.services.proxy:
        out.append(Workload(PROXY, "Deployment", 1))
    return out


def _pod_problem(pod: dict[str, Any]) -> str:
    """Why a pod is not ready, in the API's own words (the scheduler's message for a Pending pod, the waiting
    reason of a container that does not start)."""
    status = pod.get("status", {})
    phase = str(status.get("phase", "Unknown"))
    for condition in status.get("conditions", []):
        if condition.get("type") == "PodScheduled" and condition.get("status") != "True":
            reason = condition.get("message") or condition.get("reason") or "not scheduled"
            return f"{phase}: {reason}"
    for container in status.get("containerStatuses", []):
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return f"{phase}: {container.get('name')} {waiting.get('reason', 'waiting')}"
    if phase == "Pending" and not status.get("conditions"):
        return "Pending: no node has been assigned (no scheduler or no kubelet has acted on it)"
    return phase


class K8sTarget:
    """``helm upgrade --install`` of the chart with values from :func:`chart_values`; health from the API."""

    name = "k8s"

    def __init__(self, config: DeployConfig, paths: Paths) -> None:
        self.config = config
        self.paths = paths
        self.dir = paths.workspace / "k8s"
        self.release = config.name
        self.namespace = config.kubernetes.namespace
        kube = config.kubernetes.kubeconfig
        self.kubeconfig: str | None = (
            str((paths.config_file.parent / Path(kube).expanduser()).resolve()) if kube else None
        )
        self.context = config.kubernetes.context or None
        names = _names(config)
        # in-cluster addresses: `ckbpool status` reaches them only from inside the cluster or through
        # `kubectl port-forward` (docs/k8s.md); the rows of the table come from the API either way
        self.rpc_url = f"http://{names[CKB]}.{self.namespace}.svc:{INNER['node_rpc']}"
        self.pool_http = f"http://{names['stratum']}-http.{self.namespace}.svc:{INNER['pool_http']}"
        self._last: list[ServiceHealth] = []

    # -- plumbing ----------------------------------------------------------------------------------
    def helm_command(self, *args: str) -> list[str]:
        cmd = [_tool("helm", "CKBPOOL_HELM"), *args, "--namespace", self.namespace]
        if self.kubeconfig:
            cmd += ["--kubeconfig", self.kubeconfig]
        if self.context:
            cmd += ["--kube-context", self.context]
        return cmd

    def kubectl_command(self, *args: str) -> list[str]:
        cmd = [_tool("kubectl", "CKBPOOL_KUBECTL"), "--namespace", self.namespace]
        if self.kubeconfig:
            cmd += ["--kubeconfig", self.kubeconfig]
        if self.context:
            cmd += ["--context", self.context]
        return [*cmd, *args]

    def _run(
        self, cmd: list[str], *, timeout: float, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=self._env()
            )
        except subprocess.TimeoutExpired:
            raise TargetError(f"{what} did not finish within {timeout:.0f}s") from None
        if check and result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise TargetError(f"{what} failed: " + " / ".join(last))
        return result

    def _env(self) -> dict[str, str]:
        # helm keeps its caches and plugins under $HOME by default: pin them into the workspace so a deploy
        # neither needs a writable home nor picks up an operator's plugins or repositories
        base = self.dir / "helm"
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(base / "cache"),
            "HELM_CONFIG_HOME": str(base / "config"),
            "HELM_DATA_HOME": str(base / "data"),
        }

    def write_values(self) -> tuple[Path, Path]:
        """``workspace/k8s/values.yaml`` (no secret: kept, to read and diff) and the secrets' values file
        (0600, removed by the caller once helm has read it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        values = chart_values(self.config, self.paths)
        secrets = values.pop("secrets")
        public = self.dir / "values.yaml"
        public.write_text(dump_values(values))
        private = self.dir / ".secrets.values.yaml"
        private.unlink(missing_ok=True)
        sec.write_private(private, dump_values({"secrets": secrets}))
        return public, private

    def _objects(self) -> dict[str, Any]:
        result = self._run(
            self.kubectl_command(
                "get", "deployments,statefulsets,pods", "-l", f"ckbpool.dev/stack={self.config.name}", "-o", "json"
            ),
            timeout=60,
            what="kubectl get",
        )
        try:
            data: dict[str, Any] = json.loads(result.stdout or "{}")
        except ValueError:
            raise TargetError("kubectl get returned no JSON") from None
        return data

    # -- target ------------------------------------------------------------------------------------
    def deploy(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        on_progress: ProgressCallback | None = None,
        confirm: ConfirmCallback | None = None,
    ) -> None:
        report = on_progress or (lambda item, state: None)
        public, private = self.write_values()
        try:
            report("helm", f"upgrade --install {self.release} into namespace {self.namespace}")
            self._run(
                self.helm_command(
                    "upgrade",
                    "--install",
                    self.release,
                    str(chart_dir()),
                    "--create-namespace",
                    "-f",
                    str(public),
                    "-f",
                    str(private),
                    *extra_values_args(),
                    "--timeout",
                    f"{max(int(timeout), 1)}s",
                ),
                timeout=timeout + 60,
                what="helm upgrade --install",
            )
        finally:
            private.unlink(missing_ok=True)
        report("helm", "healthy")
        deadline = time.monotonic() + timeout
        while True:
            rows = self.health()
            for row in rows:
                report(row.name, "healthy" if row.healthy else row.detail)
            if all(row.healthy for row in rows):
                return
            if time.monotonic() >= deadline:
                waiting = "; ".join(f"{r.name}: {r.detail}" for r in rows if not r.healthy)
                raise TargetError(f"not ready within {timeout:.0f}s: {waiting}")
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))

    def health(self) -> list[ServiceHealth]:
        items = self._objects().get("items", [])
        workloads: dict[str, dict[str, Any]] = {}
        pods: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            component = item.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component", "")
            if item.get("kind") == "Pod":
                pods.setdefault(component, []).append(item)
            else:
                workloads[component] = item
        out = []
        for expected in expected_workloads(self.config):
            workload = workloads.get(expected.component)
            if workload is None:
                out.append(ServiceHealth(expected.component, "missing", False, f"no {expected.kind}"))
                continue
            spec_replicas = int(workload.get("spec", {}).get("replicas", expected.replicas))
            ready = int(workload.get("status", {}).get("readyReplicas") or 0)
            mine = pods.get(expected.component, [])
            if spec_replicas and ready >= spec_replicas:
                out.append(ServiceHealth(expected.component, "running", True, f"{ready}/{spec_replicas} ready"))
                continue
            if not mine:
                detail = f"{ready}/{spec_replicas} ready; no pods yet (no controller has created them)"
                out.append(ServiceHealth(expected.component, "pending", False, detail))
                continue
            problems = sorted({_pod_problem(p) for p in mine})
            phases = {str(p.get("status", {}).get("phase", "Unknown")) for p in mine}
            state = "pending" if phases == {"Pending"} else ("failed" if "Failed" in phases else "starting")
            detail = f"{ready}/{spec_replicas} ready; {len(mine)} pods: " + "; ".join(problems)
            out.append(ServiceHealth(expected.component, state, False, detail))
        self._last = out
        return out

    def show_logs(self, service: str | None, *, lines: int, follow: bool, console: Console) -> None:
        selector = f"ckbpool.dev/stack={self.config.name}"
        if service is not None:
            known = [w.component for w in expected_workloads(self.config)]
            if service not in known:
                raise TargetError(f"no service {service!r} on the k8s target (services: {', '.join(known)})")
            selector += f",app.kubernetes.io/component={service}"
        args = [
            "logs",
            "-l",
            selector,
            "--tail",
            str(lines),
            "--prefix",
            "--all-containers",
            "--max-log-requests",
            "20",
        ]
        if follow:
            subprocess.run(self.kubectl_command(*args, "--follow"), env=self._env(), check=False)
            return
        result = self._run(self.kubectl_command(*args), timeout=60, what="kubectl logs", check=False)
        text = (result.stdout or "").rstrip()
        if result.returncode != 0:
            raise TargetError("kubectl logs failed: " + (result.stderr.strip().splitlines() or ["no answer"])[-1])
        if not text:
            console.print(f"no log lines: no running pod matches {selector} (see `ckbpool status`)", markup=False)
            return
        console.print(text, markup=False, highlight=False)

    def destroy(self, *, purge: bool = False) -> list[str]:
        """``helm uninstall`` (every object of the release); ``purge`` also deletes the PVCs the StatefulSets
        made (chain, Redis, Kafka, PostgreSQL data), which Helm leaves behind by design."""
        listed = self._run(
            self.helm_command("list", "--filter", f"^{self.release}$", "-q"), timeout=60, what="helm list"
        )
        removed: list[str] = []
        if self.release in listed.stdout.split():
            present = {r.name for r in self.health() if r.state != "missing"}
            self._run(self.helm_command("uninstall", self.release), timeout=300, what="helm uninstall")
            removed = [w.component for w in expected_workloads(self.config) if w.component in present]
            removed.append(f"release {self.release}")
        if purge:
            result = self._run(
                self.kubectl_command("delete", "pvc", "-l", f"ckbpool.dev/stack={self.config.name}", "-o", "name"),
                timeout=120,
                what="kubectl delete pvc",
            )
            removed += result.stdout.split()
        return removed

    def summary(self) -> RenderableType | None:
        return None


if TYPE_CHECKING:
    _check: type[Target] = K8sTarget
