"""The ``aws`` and ``alicloud`` targets: preflight -> Terraform (network, security groups, hosts) -> inventory ->
the ``hosts`` target (the btcpool Ansible role) on the new hosts.

The Terraform root lives in ``workspace/terraform/<cloud>/``: a generated ``main.tf.json`` that configures the
provider with the configured region and calls the module in the repository's ``terraform/<cloud>`` by a relative
(local) path, its inputs in ``terraform.tfvars.json``, the state, and after apply ``inventory.yml`` /
``inventory.ini`` from the module's outputs. ``destroy`` runs ``terraform destroy`` on the same root.

Nothing is created before the input checks and the cloud preflight pass; the plan is shown and must be confirmed
(the CLI's ``--yes`` skips the question) before apply, and so is ``destroy``'s plan.

When the AWS API is an emulator (an endpoint override such as ``AWS_ENDPOINT_URL`` pointing at moto, as in the
tests), the hosts do not exist: the Ansible step and every probe of their addresses are skipped.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import string
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from .assets import shipped_dir
from .cloud_preflight import AlicloudRequest, AwsRequest, PreflightReport, preflight_alicloud, preflight_aws
from .config import POOL_ROLES, DeployConfig, Managed, ManagedEndpoints
from .errors import TargetError, TargetUnavailable, ValidationFailed
from .hostfiles import private_address_problems
from .render import COMPOSE_SECRET_FILES
from .secrets import write_private
from .target import ConfirmCallback, Paths, ProgressCallback, ServiceHealth, Target
from .terraform import LineCallback, PlanSummary, Terraform, default_plugin_mirror, provider_available

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from .hosts import HostsTarget

Cloud = Literal["aws", "alicloud"]
PROVIDERS: dict[str, tuple[str, str]] = {"aws": ("hashicorp", "aws"), "alicloud": ("aliyun", "alicloud")}
#: module outputs copied to the root (and so to `terraform output -json`)
ROOT_OUTPUTS = (
    "hosts",
    "role_counts",
    "ssh_user",
    "stratum_endpoints",
    "inventory",
    "inventory_ini",
    "security_group_ids",
    "data_mount_point",
    "region",
    "managed",
)
DEFAULT_AWS_AMI_FILTER = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
#: the targets that can have the cloud run Kafka / Redis / PostgreSQL (``managed``)
MANAGED_TARGETS = ("aws", "alicloud")
#: managed service -> (module variable its credential reaches Terraform in, file in secrets_dir), per cloud. AWS's
#: RDS draws and keeps its own password (Secrets Manager), read back after apply; Alibaba's needs one from us.
MANAGED_CREDENTIALS: dict[str, dict[str, tuple[str, str]]] = {
    "aws": {
        "kafka": ("managed_kafka_password", COMPOSE_SECRET_FILES["managed_kafka_password"]),
        "redis": ("managed_redis_auth_token", COMPOSE_SECRET_FILES["managed_redis_token"]),
    },
    "alicloud": {
        "kafka": ("managed_kafka_password", COMPOSE_SECRET_FILES["managed_kafka_password"]),
        "redis": ("managed_redis_auth_token", COMPOSE_SECRET_FILES["managed_redis_token"]),
        "postgres": ("managed_postgres_password", COMPOSE_SECRET_FILES["managed_postgres_password"]),
    },
}
#: SCRAM mechanism of each cloud's managed Kafka
MANAGED_KAFKA_MECHANISM: dict[str, Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]] = {
    "aws": "SCRAM-SHA-512",
    "alicloud": "SCRAM-SHA-256",
}


def managed_target_problem(config: DeployConfig, target: str) -> str | None:
    """Why ``target`` cannot deploy ``config``: managed services exist only where a cloud runs them."""
    if not config.managed.any or target in MANAGED_TARGETS:
        return None
    names = ", ".join(f"managed.{n}" for n in config.managed.names())
    return (
        f"{names}: only the aws and alicloud targets have the cloud run Kafka / Redis / PostgreSQL; "
        f"--target {target} runs them itself, so set {'them' if len(config.managed.names()) > 1 else 'it'} "
        "to false (or deploy with --target aws / alicloud)"
    )


_ALNUM = string.ascii_letters + string.digits


class DeployCancelled(TargetError):
    """The plan was shown and the user declined it: nothing was changed."""

    exit_code = 1


def terraform_modules_dir() -> Path:
    """The Terraform modules shipped with this ckbpool (``CKBPOOL_TERRAFORM_DIR`` overrides)."""
    return shipped_dir(
        "terraform",
        "CKBPOOL_TERRAFORM_DIR",
        ("aws/main.tf", "alicloud/main.tf", "modules/topology/main.tf", "modules/inventory/main.tf"),
        "the Terraform modules (terraform/aws, terraform/alicloud, terraform/modules) were not found: set "
        "CKBPOOL_TERRAFORM_DIR to a ckbpool checkout's terraform/ directory",
    )


def check_cloud_inputs(config: DeployConfig, cloud: Cloud, source: str = "ckbpool.yaml") -> list[str]:
    """Problems with ``cloud.*`` that stop the deploy before anything is asked of the cloud."""
    c = config.cloud
    problems = []
    if not c.allowed_ssh_cidrs:
        problems.append(
            f"cloud.allowed_ssh_cidrs: required for the {cloud} target: the admin network(s) allowed to SSH to the "
            "hosts, e.g. [198.51.100.7/32]"
        )
    for cidr in c.allowed_ssh_cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(f"cloud.allowed_ssh_cidrs: {cidr!r} is not a CIDR block such as 198.51.100.7/32")
            continue
        if net.version != 4:
            problems.append(f"cloud.allowed_ssh_cidrs: {cidr}: IPv4 only")
        elif net.prefixlen < 8:
            problems.append(f"cloud.allowed_ssh_cidrs: {cidr} would open SSH to the internet; give your admin network")
    if cloud == "alicloud" and not c.instance_type.startswith("ecs."):
        problems.append(f"cloud.instance_type: {c.instance_type!r} is not an ECS instance type (e.g. ecs.c7.xlarge)")
    if cloud == "aws" and c.instance_type.startswith("ecs."):
        problems.append(f"cloud.instance_type: {c.instance_type!r} is not an EC2 instance type (e.g. c6i.xlarge)")
    return problems


def _host_roles(roles: list[str]) -> list[str]:
    """Deploy roles as the module takes them: the four pool roles together are ``pool``."""
    out = [r for r in roles if r not in POOL_ROLES]
    pool = [r for r in roles if r in POOL_ROLES]
    if set(pool) == set(POOL_ROLES):
        out.insert(1 if "ckb_node" in out else 0, "pool")
    else:
        out += pool
    return out


def module_inputs(config: DeployConfig, paths: Paths, cloud: Cloud, ssh_public_key: str) -> dict[str, Any]:
    """The module's inputs: the rendered ``terraform.tfvars.json`` (:func:`render.terraform_context`), with the
    public key's text, the single host's roles when the topology names no host (so services.kafka/proxy count),
    and Alibaba's login user."""
    from .render import terraform_context

    inputs: dict[str, Any] = dict(terraform_context(config, paths)["tfvars"])
    inputs["ssh_public_key"] = ssh_public_key.strip()
    if not inputs.get("hosts"):
        inputs["hosts"] = [{"name": config.name, "roles": _host_roles(config.enabled_roles())}]
    if cloud == "alicloud" and inputs.get("ssh_user") == "ubuntu":
        inputs["ssh_user"] = "root"  # Alibaba Cloud's system images take the key pair for root
    return inputs


def root_module(
    cloud: Cloud, module_source: str, inputs: Mapping[str, Any], credentials: Mapping[str, bool] | None = None
) -> dict[str, Any]:
    """``main.tf.json`` of the workspace root: provider with the input region, the module by local path.

    ``credentials``: module variables whose values come only from the environment (``TF_VAR_<name>``, the managed
    services' passwords), each declared sensitive with a null default, and ephemeral when the value is ``True``
    (the module writes it write-only: then not even a saved plan keeps it)."""
    namespace, name = PROVIDERS[cloud]
    version = "~> 5.100" if cloud == "aws" else "~> 1.239"
    secret_vars = {
        key: {"type": "string", "default": None, "sensitive": True, **({"ephemeral": True} if ephemeral else {})}
        for key, ephemeral in (credentials or {}).items()
    }
    passed = [*inputs, *secret_vars]
    return {
        "terraform": {
            "required_version": ">= 1.7.0",
            "required_providers": {name: {"source": f"{namespace}/{name}", "version": version}},
        },
        "variable": {**{key: {} for key in inputs}, **secret_vars},
        "provider": {name: {"region": "${var.region}"}},
        "module": {"ckbpool": {"source": module_source, **{key: f"${{var.{key}}}" for key in passed}}},
        "output": {key: {"value": f"${{module.ckbpool.{key}}}"} for key in ROOT_OUTPUTS},
    }


@dataclass
class CloudTarget:
    """Deploys on AWS or Alibaba Cloud; usable without the CLI (tests drive it against moto)."""

    config: DeployConfig
    paths: Paths
    cloud: Cloud = "aws"
    on_line: LineCallback | None = None
    binary: str | None = None
    env: Mapping[str, str] | None = None
    aws_endpoint_url: str | None = None  # preflight only; Terraform reads AWS_ENDPOINT_URL from env
    extra_inputs: Mapping[str, Any] | None = None  # module inputs beyond ckbpool.yaml (ami_id, zone_id, ...)
    preflight_call: Any = None  # alicloud: injectable API call (tests)
    auto_approve: bool = False  # apply the plan without asking (the CLI's --yes)

    def __post_init__(self) -> None:
        self._hosts: HostsTarget | None = None
        self.name = self.cloud
        self.workdir = self.paths.workspace / "terraform" / self.cloud
        self.rpc_url = ""
        self.pool_http = ""

    # ----------------------------------------------------------------------------------------- pieces

    def ssh_public_key(self) -> str:
        path = Path(self.config.cloud.ssh_public_key_file).expanduser()
        if not path.is_absolute():
            path = self.paths.config_file.parent / path
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValidationFailed(
                str(self.paths.config_file),
                [
                    f"cloud.ssh_public_key_file: cannot read {path} ({exc.strerror or exc}); "
                    "point it at your OpenSSH public key (ssh-keygen -t ed25519 makes one)"
                ],
            ) from None

    def inputs(self) -> dict[str, Any]:
        problems = check_cloud_inputs(self.config, self.cloud)
        if problems:
            raise ValidationFailed(str(self.paths.config_file), problems)
        inputs = module_inputs(self.config, self.paths, self.cloud, self.ssh_public_key())
        # more module inputs from the config (ami_id, zone_id, tags, ...) when its schema carries them
        inputs.update(getattr(self.config.cloud, "module_inputs", None) or {})
        if self.config.managed.any:
            m = self.config.managed
            inputs.update(managed_kafka=m.kafka, managed_redis=m.redis, managed_postgres=m.postgres)
        inputs.update(self.extra_inputs or {})
        return inputs

    # ------------------------------------------------------------------------------------ managed services

    def credential_variables(self) -> dict[str, bool]:
        """The module variables of :meth:`managed_credentials` -> whether the module takes it ephemeral (only
        AWS's Kafka password, written write-only into Secrets Manager)."""
        return {
            variable: self.cloud == "aws" and service == "kafka"
            for service, (variable, _name) in MANAGED_CREDENTIALS[self.cloud].items()
            if getattr(self.config.managed, service)
        }

    def managed_credentials(self) -> dict[str, str]:
        """``TF_VAR_*`` of the managed services' credentials the module needs from us, each generated once into
        ``secrets_dir`` (mode 0600) and read from there on every run: they reach Terraform through the
        environment, never a tfvars file (AWS writes the Kafka one write-only into Secrets Manager)."""
        env: dict[str, str] = {}
        for service, (variable, name) in MANAGED_CREDENTIALS[self.cloud].items():
            if not getattr(self.config.managed, service):
                continue
            path = self.paths.secrets_dir / name
            if not path.is_file():
                self.paths.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                # letters and digits: valid for MSK/alikafka SCRAM, ElastiCache/KVStore AUTH and RDS passwords
                write_private(path, "".join(secrets.choice(_ALNUM) for _ in range(40)))
            env[f"TF_VAR_{variable}"] = path.read_text(encoding="ascii").strip()
        return env

    def absorb_managed(self, outputs: Mapping[str, Any]) -> DeployConfig:
        """The deployment's config with the managed services' endpoints from the module's ``managed`` output, and
        the credentials the cloud keeps itself (AWS RDS's master password, in Secrets Manager) read into
        ``secrets_dir`` (mode 0600). It becomes this target's config: the hosts step renders pool.toml from it."""
        m = self.config.managed
        if not m.any:
            return self.config
        out: Mapping[str, Any] = outputs.get("managed") or {}
        user = str(out.get("postgres_user") or "")
        arn = str(out.get("postgres_secret_arn") or "")
        if m.postgres and arn:
            secret = self.read_cloud_secret(arn)
            user = str(secret.get("username") or user)
            password = str(secret.get("password") or "")
            if not password:
                raise TargetError(f"the ledger's secret {arn} holds no password")
            write_private(self.paths.secrets_dir / COMPOSE_SECRET_FILES["managed_postgres_password"], password)
        endpoints = ManagedEndpoints(
            kafka_bootstrap=str(out.get("kafka_bootstrap") or "") if m.kafka else "",
            kafka_username=str(out.get("kafka_username") or "") if m.kafka else "",
            kafka_mechanism=MANAGED_KAFKA_MECHANISM[self.cloud],
            redis=str(out.get("redis") or "") if m.redis else "",
            postgres=str(out.get("postgres") or "") if m.postgres else "",
            postgres_user=user if m.postgres else "",
            postgres_db=str(out.get("postgres_db") or "") if m.postgres else "",
        )
        missing = [n for n, v in (("kafka", endpoints.kafka_bootstrap), ("redis", endpoints.redis),
                                  ("postgres", endpoints.postgres)) if getattr(m, n) and not v]  # fmt: skip
        if missing:
            raise TargetError(f"the {self.cloud} Terraform outputs name no endpoint for managed {', '.join(missing)}")
        managed = Managed(kafka=m.kafka, redis=m.redis, postgres=m.postgres, endpoints=endpoints)
        self.config = self.config.model_copy(update={"managed": managed})
        return self.config

    def read_cloud_secret(self, arn: str) -> dict[str, Any]:
        """A JSON secret of AWS Secrets Manager (RDS's master user secret: {username, password})."""
        if self.cloud != "aws":
            raise TargetError(f"{self.cloud}: no secret store is read (the module names no secret)")
        try:
            import boto3  # type: ignore[import-untyped]
        except ImportError as exc:
            raise TargetUnavailable(f"reading {arn} needs boto3 (pip install boto3): {exc}") from None
        client = boto3.client(
            "secretsmanager", region_name=self.config.cloud.region, endpoint_url=self.aws_endpoint_url
        )
        try:
            text = client.get_secret_value(SecretId=arn)["SecretString"]
            doc = json.loads(text)
        except Exception as exc:  # botocore's errors, or a secret that is not JSON
            raise TargetError(f"cannot read the secret {arn}: {exc.__class__.__name__}") from None
        if not isinstance(doc, dict):
            raise TargetError(f"the secret {arn} is not a JSON object")
        return doc

    def terraform(self) -> Terraform:
        namespace, name = PROVIDERS[self.cloud]
        mirror = default_plugin_mirror()
        if not provider_available(mirror, namespace, name):
            raise TargetUnavailable(
                f"the Terraform provider {namespace}/{name} is not in {mirror}: run scripts/terraform-deps.sh"
                + (
                    " (the alicloud provider's Go module is not served on this network)"
                    if self.cloud == "alicloud"
                    else ""
                )
            )
        env = {**dict(self.env or {}), **self.managed_credentials()}
        return Terraform(self.workdir, binary=self.binary, on_line=self.on_line, env=env, plugin_mirror=mirror)

    def write_root(self, inputs: Mapping[str, Any]) -> Path:
        module_dir = terraform_modules_dir() / self.cloud
        self.workdir.mkdir(parents=True, exist_ok=True)
        source = os.path.relpath(module_dir, self.workdir)
        if not source.startswith("."):
            source = "./" + source
        _write_if_changed(
            self.workdir / "main.tf.json",
            json.dumps(root_module(self.cloud, source, inputs, self.credential_variables()), indent=2) + "\n",
        )
        tfvars = self.workdir / "terraform.tfvars.json"
        _write_if_changed(tfvars, json.dumps(dict(inputs), indent=2) + "\n")
        return tfvars

    def preflight(self, inputs: Mapping[str, Any]) -> PreflightReport:
        types: dict[str, int] = {}
        for host in inputs.get("hosts") or [{"count": 1}]:
            kind = host.get("instance_type") or inputs["instance_type"]
            types[kind] = types.get(kind, 0) + int(host.get("count", 1))
        if self.cloud == "aws":
            return preflight_aws(
                AwsRequest(
                    region=inputs["region"],
                    instance_types=types,
                    ami_id=inputs.get("ami_id"),
                    ami_owners=tuple(inputs.get("ami_owners") or ("099720109477",)),
                    ami_name_filter=inputs.get("ami_name_filter") or DEFAULT_AWS_AMI_FILTER,
                    endpoint_url=self.aws_endpoint_url,
                )
            )
        return preflight_alicloud(
            AlicloudRequest(region=inputs["region"], instance_types=types, image_id=inputs.get("image_id")),
            call=self.preflight_call,
        )

    def plan(self, *, on_progress: ProgressCallback | None = None) -> tuple[Terraform, PlanSummary]:
        """Input checks, preflight, init and plan: everything before a change."""
        progress = on_progress or (lambda _s, _t: None)
        progress("inputs", "checking")
        inputs = self.inputs()
        progress("inputs", "healthy")
        progress("preflight", "checking")
        report = self.preflight(inputs)
        progress("preflight", "healthy")
        for check in report.checks:
            progress(f"preflight {check.name}", {True: "healthy", False: "failed", None: "skipped"}[check.ok])
        tf = self.terraform()
        tfvars = self.write_root(inputs)
        with self._streaming(tf, f"{tf.name} init", progress):
            tf.init()
        with self._streaming(tf, f"{tf.name} plan", progress):
            summary = tf.plan("ckbpool.tfplan", var_files=[tfvars])
        return tf, summary

    def apply(self, tf: Terraform, *, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
        progress = on_progress or (lambda _s, _t: None)
        with self._streaming(tf, f"{tf.name} apply", progress):
            tf.apply("ckbpool.tfplan")
        if self.config.managed.any:
            # a saved plan keeps the values of non-ephemeral variables (the Redis AUTH token, Alibaba's
            # passwords): it has been applied, so it goes
            (self.workdir / "ckbpool.tfplan").unlink(missing_ok=True)
        outputs = tf.output()
        self.write_inventory(outputs)
        self.absorb_managed(outputs)
        return outputs

    @contextlib.contextmanager
    def _streaming(self, tf: Terraform, step: str, progress: ProgressCallback) -> Iterator[None]:
        """Terraform's lines go to ``on_line`` when given, else into the step's progress line (the CLI's live view
        then shows what Terraform is doing, e.g. ``aws_instance.host["pool"]: Still creating... [40s elapsed]``)."""
        progress(step, "running")
        if self.on_line is None:

            def forward(line: str) -> None:
                text = line.strip()
                if text:
                    progress(step, text[:120])

            tf.on_line = forward
        try:
            yield
        finally:
            tf.on_line = self.on_line
        progress(step, "healthy")

    def _confirmed(self, summary: PlanSummary, confirm: ConfirmCallback | None) -> bool:
        if confirm is not None:
            return confirm(summary)
        if self.auto_approve:
            return True
        if not sys.stdin.isatty():
            raise DeployCancelled(
                f"the plan ({summary.line()}) needs confirmation and there is no terminal to ask on: "
                "re-run with --yes to apply it"
            )
        from rich.console import Console
        from rich.prompt import Confirm

        console = Console(stderr=True)
        console.print(plan_table(summary))
        return bool(Confirm.ask(f"Apply this plan to {self.cloud} {self.config.cloud.region}?", console=console))

    def write_inventory(self, outputs: Mapping[str, Any]) -> Path:
        """``inventory.yml`` / ``inventory.ini`` from the module's outputs, each host with Terraform's
        ``private_ip``: the hosts reach each other's internal ports there, never on their public address. An
        inventory of several hosts where one lacks it (an instance without a private IP in the outputs) is
        refused here, before Ansible runs, with the hosts named."""
        hosts = ((outputs.get("inventory") or {}).get("all") or {}).get("hosts") or {}
        problems = private_address_problems(
            list(hosts), {name: str((v or {}).get("private_ip") or "") for name, v in hosts.items()}
        )
        if problems:
            raise TargetError(f"the {self.cloud} Terraform outputs: {problems[0]}")
        path = self.workdir / "inventory.yml"
        _write_if_changed(
            path,
            "# written by ckbpool from the Terraform outputs\n"
            + yaml.safe_dump(outputs["inventory"], sort_keys=False, default_flow_style=False),
        )
        _write_if_changed(self.workdir / "inventory.ini", str(outputs.get("inventory_ini", "")))
        return path

    @property
    def inventory_path(self) -> Path:
        return self.workdir / "inventory.yml"

    # -------------------------------------------------------------------------------------- target API

    def deploy(
        self,
        *,
        timeout: float = 1800.0,
        on_progress: ProgressCallback | None = None,
        confirm: ConfirmCallback | None = None,
        run_hosts: Callable[[Path], None] | None = None,
    ) -> None:
        """Preflight, plan, confirm, apply, inventory, then the stack on the hosts (the hosts target, i.e. the
        btcpool role through ansible-runner). :meth:`outputs` then has the Terraform outputs (the hosts, ...).

        The plan is applied only when ``confirm(summary)`` says so, or with ``auto_approve``; without either, the
        plan table is shown and the user asked on the terminal, and with no terminal the deploy stops unapplied.
        Between the plan (its preflight fails fast) and that question, the pool image is built here and saved for
        the hosts or pushed to ``images.registry``: a build that fails has created nothing to pay for."""
        tf, summary = self.plan(on_progress=on_progress)
        images: dict[str, Any] | None = None
        if run_hosts is None and not self.emulated:
            from .hosts import pool_image_vars

            images = pool_image_vars(self.config, self.paths, on_progress)
        if not summary.empty and not self._confirmed(summary, confirm):
            raise DeployCancelled(f"plan not applied ({summary.line()}); nothing changed")
        self.apply(tf, on_progress=on_progress)
        if run_hosts is not None:
            run_hosts(self.inventory_path)
        elif self.emulated:
            (on_progress or (lambda _s, _t: None))("ansible", f"skipped: the hosts are emulated by {self.emulated}")
        else:
            self._hosts = self.hosts_target()
            self._hosts.deploy(timeout=timeout, on_progress=on_progress, images=images)

    @property
    def emulated(self) -> str | None:
        """The endpoint override when the cloud API is an emulator (moto in tests): its hosts do not exist, so
        nothing may connect to their addresses (no Ansible, no probes)."""
        if self.cloud != "aws":
            return None
        return self.aws_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("AWS_ENDPOINT_URL")

    def summary(self) -> RenderableType | None:
        """The hosts target's per-host summary after the Ansible step ran; else the created hosts; None when the
        Terraform state has no hosts (a deploy that stopped before apply created nothing worth a table)."""
        ran = self._hosts.summary() if self._hosts is not None else None
        if ran is not None:
            return ran
        hosts: dict[str, dict[str, Any]] = self.outputs().get("hosts") or {}
        return self.hosts_table(hosts) if hosts else None

    def hosts_table(self, hosts: Mapping[str, Mapping[str, Any]]) -> Table:
        """The hosts (``hosts`` output of the module) with their roles and addresses."""
        from rich.table import Table

        table = Table(title=f"{self.config.name} on {self.cloud} {self.config.cloud.region}")
        for column in ("host", "roles", "public address", "private address"):
            table.add_column(column)
        for key, host in sorted(hosts.items()):
            table.add_row(
                key, ", ".join(host.get("roles", [])), str(host.get("public_ip")), str(host.get("private_ip"))
            )
        return table

    def hosts_target(self) -> HostsTarget:
        """The hosts target over this deployment's inventory (from the Terraform outputs)."""
        from .hosts import HostsTarget

        if not self.inventory_path.exists():
            raise TargetError(f"no inventory at {self.inventory_path}: deploy with --target {self.cloud} first")
        return HostsTarget(self.config, self.paths, inventory=self.inventory_path)

    def outputs(self) -> dict[str, Any]:
        if not (self.workdir / "terraform.tfstate").exists():
            return {}
        return self.terraform().output()

    def health(self) -> list[ServiceHealth]:
        """The stack's services on the hosts (through the hosts target); the bare hosts before it ran."""
        if self.inventory_path.exists() and not self.emulated:
            target = self.hosts_target()
            self.rpc_url, self.pool_http = target.rpc_url, target.pool_http
            found = target.health()
            if found:
                return found
        hosts = self.outputs().get("hosts") or {}
        if not hosts:
            return [ServiceHealth(f"{self.cloud} hosts", "missing", None, "nothing deployed (no Terraform state)")]
        return [
            ServiceHealth(key, "running", None, f"{h.get('public_ip')} ({', '.join(h.get('roles', []))})")
            for key, h in sorted(hosts.items())
        ]

    def show_logs(self, service: str | None, *, lines: int, follow: bool, console: Console) -> None:
        if self.emulated:
            raise TargetUnavailable(f"the hosts are emulated by {self.emulated}: they have no logs")
        self.hosts_target().show_logs(service, lines=lines, follow=follow, console=console)

    def destroy(
        self, *, purge: bool = False, timeout: float = 1800.0, confirm: ConfirmCallback | None = None
    ) -> list[str]:
        """``terraform destroy`` of everything the deploy created (hosts with their disks, groups, network): the
        chain data goes with the hosts, so it is confirmed like a deploy (callback, ``auto_approve``, terminal)."""
        tfvars = self.workdir / "terraform.tfvars.json"
        if not (self.workdir / "terraform.tfstate").exists() or not tfvars.exists():
            return []
        before = self.outputs().get("hosts") or {}
        if not before:
            return []
        tf = self.terraform()
        tf.init()
        summary = tf.plan("ckbpool-destroy.tfplan", var_files=[tfvars], destroy=True)
        if not summary.empty and not self._confirmed(summary, confirm):
            raise DeployCancelled(f"destroy plan not applied ({summary.line()}); nothing changed")
        tf.apply("ckbpool-destroy.tfplan")
        (self.workdir / "ckbpool-destroy.tfplan").unlink(missing_ok=True)
        for name in ("inventory.yml", "inventory.ini", "ckbpool.tfplan"):
            (self.workdir / name).unlink(missing_ok=True)
        gone = [f"{len(before)} {self.cloud} host(s)", "network", "security groups", "key pair"]
        if self.config.managed.any:
            gone.append(f"managed {', '.join(self.config.managed.names())}")
        return gone


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def plan_table(summary: PlanSummary) -> Table:
    """A Rich table of the plan, for the CLI's confirmation."""
    from rich.table import Table

    table = Table(title=f"Terraform plan: {summary.line()}")
    table.add_column("action")
    table.add_column("resource")
    colours = {"create": "green", "update": "yellow", "delete": "red", "replace": "magenta"}
    for change in summary.changes:
        if change.action in ("no-op", "read"):
            continue
        colour = colours.get(change.action, "white")
        table.add_row(f"[{colour}]{change.action}[/{colour}]", change.address)
    return table


_IS_A_TARGET: type[Target] = CloudTarget  # mypy: CloudTarget has every member of the Target protocol

__all__ = [
    "CloudTarget",
    "DeployCancelled",
    "check_cloud_inputs",
    "managed_target_problem",
    "module_inputs",
    "plan_table",
    "root_module",
    "terraform_modules_dir",
]
