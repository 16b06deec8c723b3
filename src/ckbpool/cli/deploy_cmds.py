"""Deployment commands: ``init``, ``render``, ``validate``, ``deploy``, ``status``, ``logs``, ``destroy``.

Every error is one line on stderr (``error: <key path or file>: <problem>``) and a non-zero exit code:
2 for a configuration problem, 1 for a target that failed. Secrets are never printed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from ..deploy.config import CONFIG_FILE_NAME, DeployConfig, load_config
from ..deploy.errors import DeployError
from ..deploy.render import RenderResult
from ..deploy.target import Paths, Target

if TYPE_CHECKING:
    from rich.progress import TaskID

    from ..deploy.terraform import PlanSummary

console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="CKBPOOL_CONFIG", help="deployment configuration", show_default=True),
]
TARGETS = ("local", "compose", "hosts", "aws", "alicloud", "k8s")


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def report_error(exc: DeployError) -> typer.Exit:
    problems = getattr(exc, "problems", None)
    if problems and len(problems) > 1:
        source = getattr(exc, "source", "")
        for problem in problems:
            console.print(f"[red]error:[/red] {escape(f'{source}: {problem}')}", soft_wrap=True)
        return typer.Exit(exc.exit_code)
    return fail(str(exc), exc.exit_code)


def load_project(config_file: Path, *, check_secrets: bool = True) -> tuple[DeployConfig, Paths]:
    """Schema + semantic checks; warnings printed, errors raised as ValidationFailed."""
    from ..deploy.errors import ValidationFailed
    from ..deploy.validate import check_config

    config = load_config(config_file)
    paths = Paths.of(config_file, config)
    report = check_config(config, secrets_dir=paths.secrets_dir if check_secrets else None)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    if report.errors:
        raise ValidationFailed(str(config_file), report.errors)
    return config, paths


# ----------------------------------------------------------------------------------------------- init


def _parse_host(spec: str) -> dict[str, Any]:
    """``name=address:role,role`` (e.g. ``node-1=10.0.0.5:ckb_node,pool``)."""
    name, sep, rest = spec.partition("=")
    address, sep2, roles = rest.rpartition(":")
    if not sep or not sep2 or not name or not address or not roles:
        raise fail(f"--host {spec!r}: expected name=address:role[,role...], e.g. node-1=10.0.0.5:ckb_node,pool")
    return {"name": name, "address": address, "roles": [r.strip() for r in roles.split(",") if r.strip()]}


def _parse_ports(specs: list[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not value.isdigit():
            raise fail(f"--port {spec!r}: expected key=number, e.g. stratum=34255")
        ports[key.strip()] = int(value)
    return ports


def _dev_address() -> str:
    from ..ckb.address import encode_address
    from ..ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, DevKey

    return encode_address(DevKey(DEV_GENESIS_PRIVATE_KEY).lock, "dev")


def init(
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    non_interactive: Annotated[
        bool, typer.Option("--non-interactive", "-y", help="no prompts: flags + defaults")
    ] = False,
    name: Annotated[str | None, typer.Option(help="pool name (lowercase letters, digits, -)")] = None,
    network: Annotated[str | None, typer.Option(help="dev | testnet | mainnet")] = None,
    payout_address: Annotated[
        str | None, typer.Option(help="CKB address receiving block rewards (dev: the dev chain's test key)")
    ] = None,
    port: Annotated[
        list[str] | None, typer.Option(help="key=port, repeatable (stratum, pool_http, node_rpc, ...)")
    ] = None,
    bind_public: Annotated[str | None, typer.Option(help="address the stratum port binds/publishes on")] = None,
    monitoring: Annotated[bool | None, typer.Option("--monitoring/--no-monitoring")] = None,
    grafana: Annotated[bool | None, typer.Option("--grafana/--no-grafana")] = None,
    redis: Annotated[bool | None, typer.Option("--redis/--no-redis", help="share accounting in Redis")] = None,
    kafka: Annotated[bool | None, typer.Option("--kafka/--no-kafka", help="Kafka bus between pool processes")] = None,
    proxy: Annotated[bool | None, typer.Option("--proxy/--no-proxy", help="V1 translator for V1 miners")] = None,
    miner: Annotated[
        bool | None, typer.Option("--miner/--no-miner", help="CPU miners (local target, dev/testnet)")
    ] = None,
    miner_workers: Annotated[int | None, typer.Option(min=1, max=64)] = None,
    miner_protocol: Annotated[str | None, typer.Option(help="v2 (to the pool) or v1 (through the proxy)")] = None,
    share_interval: Annotated[float | None, typer.Option(help="vardiff: seconds between shares per miner")] = None,
    dev_difficulty: Annotated[int | None, typer.Option(min=1, help="dev chain difficulty")] = None,
    host: Annotated[
        list[str] | None, typer.Option(help="multi-host topology: name=address:role[,role], repeatable")
    ] = None,
    payouts: Annotated[
        bool | None,
        typer.Option("--payouts/--no-payouts", help="pay miners (PPLNS) from a payout wallet; ledger in PostgreSQL"),
    ] = None,
    workspace: Annotated[Path | None, typer.Option(help="render output directory")] = None,
    secrets_dir: Annotated[Path | None, typer.Option(help="where generated secrets are stored (0600)")] = None,
    authority_key_out: Annotated[
        Path | None,
        typer.Option(
            help="move the authority key here (e.g. removable media), out of the deployment; "
            "`ckbpool keys rotate --authority-key` uses it to renew the certificate"
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing config file (secrets are kept)")] = False,
) -> None:
    """Write ckbpool.yaml (prompting unless --non-interactive) and generate the secrets it needs."""
    from ..deploy.config import dump_config, parse_config
    from ..deploy.errors import ConfigFileError
    from ..deploy.secrets import generate_secrets

    if config.exists() and not force:
        raise fail(f"{config} exists (use --force to overwrite it; existing secrets are kept)")
    interactive = not non_interactive

    def ask(label: str, value: Any, default: Any, **kw: Any) -> Any:
        if value is not None:
            return value
        if not interactive:
            return default
        return typer.prompt(label, default=default, **kw)

    def confirm(label: str, value: bool | None, default: bool) -> bool:
        if value is not None:
            return value
        return typer.confirm(label, default=default) if interactive else default

    name = ask("Pool name", name, "ckbpool")
    network = ask("Network (dev, testnet, mainnet)", network, "dev")
    if network not in ("dev", "testnet", "mainnet"):
        raise fail(f"network: {network!r} is not one of dev, testnet, mainnet")
    address_default = _dev_address() if network == "dev" else None
    if payout_address is None and not interactive and address_default is None:
        raise fail(
            f"--payout-address is required for {network} (a {'ckb' if network == 'mainnet' else 'ckt'}1... address)"
        )
    if interactive and payout_address is None:
        from ..ckb.address import parse_address
        from ..ckb.errors import MalformedError

        while True:  # re-ask until the address decodes and belongs to the network
            candidate = str(typer.prompt("Payout address (receives block rewards)", default=address_default))
            try:
                parse_address(candidate, network)
            except MalformedError as exc:
                console.print(f"[yellow]not usable:[/yellow] {escape(exc.problem)}; try again")
                continue
            payout_address = candidate
            break
    payout_address = payout_address or address_default
    ports = _parse_ports(port or [])
    if interactive and "stratum" not in ports:
        ports["stratum"] = int(typer.prompt("Stratum port (public)", default=34255))
    data: dict[str, Any] = {"name": name, "network": network, "payout_address": payout_address}
    if ports:
        data["ports"] = ports
    if bind_public is None and network == "dev":
        bind_public = "127.0.0.1"  # a dev chain is for this machine's miners
    if bind_public is not None:
        data["bind"] = {"public": bind_public}
    services: dict[str, Any] = {
        "redis": confirm("Share accounting in Redis?", redis, True),
        "kafka": confirm("Kafka bus (for pool roles on several hosts)?", kafka, False),
        # every CKB ASIC in the field speaks Stratum V1 only: on a real network the V1 port is where hashrate arrives
        "proxy": confirm("V1 proxy for Stratum V1 miners (CKB ASICs)?", proxy, network != "dev"),
    }
    want_miner = (
        confirm("Run CPU miners (dev/testnet smoke test)?", miner, network == "dev")
        if network != "mainnet"
        else bool(miner)
    )
    services["miner"] = {"enabled": want_miner, **({"workers": miner_workers} if miner_workers else {})}
    if miner_protocol is not None:
        services["miner"]["protocol"] = miner_protocol
    data["services"] = services
    mon = confirm("Monitoring (Prometheus + exporters)?", monitoring, True)
    data["monitoring"] = {"enabled": mon, "grafana": confirm("Grafana?", grafana, True) if mon else False}
    pool_opts: dict[str, Any] = {}
    if share_interval is not None:
        pool_opts["share_interval_s"] = share_interval
    elif network == "dev":
        pool_opts["share_interval_s"] = 2.0  # a dev chain's blocks come fast: show shares quickly too
    if pool_opts:
        data["pool"] = pool_opts
    if dev_difficulty is not None:
        data["node"] = {"dev_difficulty": dev_difficulty}
    if payouts:  # off unless asked for: it spends real money (never prompted)
        data["payouts"] = {"enabled": True}
    hosts = [_parse_host(h) for h in host or []]
    if interactive and not hosts and typer.confirm("Several hosts (multi-host topology)?", default=False):
        count = int(typer.prompt("How many hosts", default=2))
        for i in range(count):
            h_name = typer.prompt(f"Host {i + 1} name", default=f"{name}-{i + 1}")
            h_addr = typer.prompt(f"Host {i + 1} address")
            h_roles = typer.prompt(
                f"Host {i + 1} roles (ckb_node,pool,redis,kafka,proxy,monitoring)",
                default="ckb_node,pool,proxy" if services["proxy"] and i == 0 else "ckb_node,pool",
            )
            hosts.append({"name": h_name, "address": h_addr, "roles": [r.strip() for r in h_roles.split(",")]})
    if hosts:
        data["topology"] = {"mode": "multi", "hosts": hosts}
        if proxy is None and not interactive and not any("proxy" in h.get("roles", ()) for h in hosts):
            services["proxy"] = False  # the default follows hosts given without a proxy role (--proxy asks for it)
    if workspace is not None:
        data["workspace"] = str(workspace)
    if secrets_dir is not None:
        data["secrets_dir"] = str(secrets_dir)
    try:
        cfg = parse_config(data, "init")
        paths = Paths.of(config, cfg)
        from ..deploy.validate import check_config

        report = check_config(cfg)
        if report.errors:
            raise ConfigFileError("init", report.errors)
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(dump_config(cfg))
        created = generate_secrets(cfg, paths.secrets_dir)
    except DeployError as exc:
        raise report_error(exc) from None
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    from ..deploy.secrets import authority_public_key

    out.print(f"[green]wrote[/green] {escape(str(config))}")
    out.print(
        f"secrets in {paths.secrets_dir} (mode 0600): "
        + (", ".join(created) + " generated" if created else "all present, none changed")
    )
    out.print(f"miners authenticate the pool with its authority key: {authority_public_key(paths.secrets_dir)}")
    _keep_authority_key_out(paths.secrets_dir, authority_key_out)
    out.print("next: ckbpool validate && ckbpool render && ckbpool deploy --target local")


def _keep_authority_key_out(secrets_dir: Path, destination: Path | None) -> None:
    """Move ``authority.key`` out of the deployment (the pool never needs it: it only signs certificates), or
    say how. The copy is written 0600 and refused over an existing file before the original is removed."""
    import os

    from ..deploy.secrets import AUTHORITY_KEY

    source = secrets_dir / AUTHORITY_KEY
    if destination is None:
        if source.exists():
            out.print(
                f"the authority key is in {source}; keep it offline: `ckbpool init --authority-key-out <path>` "
                "moves it (then `ckbpool keys rotate --authority-key <path>` renews the certificate)"
            )
        return
    if not source.exists():
        out.print(f"no {source}: the authority key is already kept outside the deployment")
        return
    destination = destination.expanduser()
    if destination.resolve().is_relative_to(secrets_dir.resolve()):
        raise report_error(DeployError(f"--authority-key-out {destination} is inside {secrets_dir}"))
    destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise report_error(DeployError(f"--authority-key-out {destination} exists; not overwritten")) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(source.read_bytes())
        fh.flush()
        os.fsync(fh.fileno())
    source.unlink()
    out.print(
        f"[green]moved[/green] the authority key to {escape(str(destination))} (0600): keep it offline; "
        f"`ckbpool keys rotate --secrets-dir {escape(str(secrets_dir))} --authority-key "
        f"{escape(str(destination))}` renews the pool certificate"
    )


# -------------------------------------------------------------------------------------------- validate


def validate(config: ConfigOption = Path(CONFIG_FILE_NAME)) -> None:
    """Check ckbpool.yaml: schema (exact key paths), ports, address network, hosts for every role, secrets."""
    try:
        cfg, _ = load_project(config)
    except DeployError as exc:
        raise report_error(exc) from None
    roles = ", ".join(cfg.enabled_roles())
    out.print(f"[green]ok[/green] {config}: {cfg.name} on {cfg.network}, {cfg.topology.mode} host; roles: {roles}")


# ---------------------------------------------------------------------------------------------- render


def show_changes(result: RenderResult, *, diff: bool = True) -> None:
    if not result.changed:
        out.print(f"no changes: {result.workspace} is up to date")
        return
    for change in result.changed:
        colour = {"added": "green", "changed": "yellow", "removed": "red"}[change.status]
        out.print(f"[{colour}]{change.status:>8}[/{colour}] {change.path}")
        if diff and change.diff:
            out.print(Syntax("\n".join(change.diff), "diff", theme="ansi_dark", background_color="default"))


def do_render(config_file: Path, *, dry_run: bool = False, diff: bool = True) -> tuple[DeployConfig, Paths]:
    from ..deploy.render import render as render_workspace

    cfg, paths = load_project(config_file)
    result = render_workspace(cfg, paths, dry_run=dry_run)
    show_changes(result, diff=diff)
    counts = {s: sum(c.status == s for c in result.changes) for s in ("added", "changed", "removed")}
    verb = "would render" if dry_run else "rendered"
    out.print(
        f"{verb} {len(result.changes) - counts['removed']} files into {paths.workspace} "
        f"({counts['added']} added, {counts['changed']} changed, {counts['removed']} removed)"
    )
    return cfg, paths


def render(
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show the diff, write nothing")] = False,
    diff: Annotated[bool, typer.Option("--diff/--no-diff", help="show the diff against the previous render")] = True,
) -> None:
    """Render the workspace (ckb.toml, pool.toml, compose.yaml, prometheus.yml, inventory, tfvars, ...)."""
    try:
        do_render(config, dry_run=dry_run, diff=diff)
    except DeployError as exc:
        raise report_error(exc) from None


# -------------------------------------------------------------------------------- deploy/status/destroy


def _target(name: str, cfg: DeployConfig, paths: Paths, inventory: Path | None = None, yes: bool = False) -> Target:
    """The target called ``name``; the commands below use nothing of it but the :class:`Target` protocol."""
    from ..deploy.cloud import managed_target_problem

    problem = managed_target_problem(cfg, name)
    if problem is not None:
        raise fail(problem)
    if name == "local":
        from ..deploy.local import LocalTarget

        return LocalTarget(cfg, paths)
    if name == "compose":
        from ..deploy.compose import ComposeTarget

        return ComposeTarget(cfg, paths)
    if name == "hosts":
        from ..deploy.hosts import HostsTarget

        return HostsTarget(cfg, paths, inventory)
    if name == "aws" or name == "alicloud":
        from ..deploy.cloud import CloudTarget

        provider: Literal["aws", "alicloud"] = "aws" if name == "aws" else "alicloud"
        return CloudTarget(cfg, paths, provider, auto_approve=yes)
    if name == "k8s":
        from ..deploy.k8s import K8sTarget

        return K8sTarget(cfg, paths)
    if name in TARGETS:
        raise fail(f"--target {name}: not available in this version (local, compose and hosts are)")
    raise fail(f"--target {name}: unknown target (choose from {', '.join(TARGETS)})")


def _remember_target(paths: Paths, target: str | None) -> str:
    marker = paths.workspace / "target"
    if target is not None:
        return target
    try:
        return marker.read_text().strip() or "local"
    except OSError:
        return "local"


InventoryOption = Annotated[
    Path | None,
    typer.Option("--inventory", "-i", help="hosts target: Ansible inventory (default: the last one used)"),
]
TargetOption = Annotated[
    str | None,
    typer.Option("--target", "-t", help="local | compose | hosts | aws | alicloud | k8s (default: the last deployed)"),
]


def deploy(
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    target: TargetOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="seconds to wait for every service to be healthy (default: the target's own -- local 180, "
            "compose 300, k8s 600, hosts/aws/alicloud 1800)"
        ),
    ] = None,
    inventory: InventoryOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="aws/alicloud: apply the Terraform plan without asking")] = False,
) -> None:
    """Render, then bring the stack up on the target and wait until every service is healthy."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    impl: Target | None = None
    try:
        cfg, paths = do_render(config, diff=False)
        name = _remember_target(paths, target)
        impl = _target(name, cfg, paths, inventory, yes=yes)
        (paths.workspace / "target").write_text(name + "\n")
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False
        ) as progress:
            tasks: dict[str, TaskID] = {}

            def on_progress(service: str, state: str) -> None:
                text = f"{service}: {state}"
                if service not in tasks:
                    tasks[service] = progress.add_task(text, total=1)
                progress.update(tasks[service], description=text, completed=1 if state == "healthy" else 0)

            def confirm(summary: PlanSummary) -> bool:
                """Asked by the cloud targets before they apply a plan: the live view pauses for the question."""
                from ..deploy.cloud import plan_table

                progress.stop()
                out.print(plan_table(summary))
                ok = yes or typer.confirm(f"Apply this plan ({summary.line()})?", default=False)
                progress.start()
                return ok

            if timeout is None:  # each target knows how long its own deploy may take
                impl.deploy(on_progress=on_progress, confirm=confirm)
            else:
                impl.deploy(timeout=timeout, on_progress=on_progress, confirm=confirm)
        summary = impl.summary()
        if summary is not None:
            out.print(summary)
    except DeployError as exc:
        if impl is not None:
            # what got done before the failure helps; a summary that cannot be had must not hide the failure
            with contextlib.suppress(DeployError):
                failed_summary = impl.summary()
                if failed_summary is not None:
                    console.print(failed_summary)
        raise report_error(exc) from None
    out.print(f"[green]{cfg.name} is up[/green] on the {name} target; see `ckbpool status`")


def status(
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    target: TargetOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Node tip and sync, pool hashrate, connections, last blocks, and each service's health."""
    import json

    from ..deploy.probe import format_hashrate, probe_node, probe_pool, probe_prometheus

    try:
        cfg, paths = load_project(config, check_secrets=False)
        name = _remember_target(paths, target)
        impl = _target(name, cfg, paths)
        health = impl.health()
    except DeployError as exc:
        raise report_error(exc) from None
    node = probe_node(impl.rpc_url)
    pool = probe_pool(impl.pool_http)
    scrapes = None
    if name == "compose" and cfg.monitoring.enabled:
        scrapes = probe_prometheus(f"http://{cfg.bind.private}:{cfg.ports.prometheus}")
    if json_output:
        out.print_json(
            json.dumps(
                {
                    "target": name,
                    "services": [h.__dict__ for h in health],
                    "node": node.__dict__,
                    "prometheus_targets": scrapes,
                    "pool": {
                        "reachable": pool.reachable,
                        "healthy": pool.healthy,
                        "shares": pool.shares,
                        "blocks": pool.blocks,
                        "status": pool.status,
                        "web": pool.status.get("web") if pool.reachable else None,
                    },
                }
            )
        )
    else:
        table = Table(title=f"{cfg.name} ({cfg.network}) on the {name} target")
        for column in ("service", "state", "health", "detail"):
            table.add_column(column)
        for h in health:
            mark = "[green]healthy[/green]" if h.healthy else ("[red]unhealthy[/red]" if h.healthy is False else "-")
            table.add_row(escape(h.name), escape(h.state), mark, escape(h.detail))
        out.print(table)
        summary = Table(show_header=False, box=None)
        summary.add_column(style="bold")
        summary.add_column()
        summary.add_row("node tip", str(node.tip) if node.reachable else f"unreachable ({node.error})")
        summary.add_row("node sync", node.synced_text + (f", {node.peers} peers" if node.peers is not None else ""))
        if pool.reachable:
            st = pool.status
            summary.add_row("pool hashrate", format_hashrate(float(st.get("hashrate_hps", 0.0))))
            summary.add_row("connections", f"{st.get('connections', 0)} ({st.get('channels', 0)} channels)")
            summary.add_row("workers", ", ".join(st.get("workers", [])) or "-")
            shares = ", ".join(f"{k} {int(v)}" for k, v in sorted(pool.shares.items()) if v) or "none yet"
            summary.add_row("shares", shares)
            job = st.get("job") or {}
            summary.add_row("current job", f"height {job.get('height', '-')}")
            if st.get("web"):
                summary.add_row("miners' page", str(st["web"]))  # [web] enabled: the public page and API
        else:
            summary.add_row("pool", f"unreachable ({pool.error})")
        if scrapes is not None:
            summary.add_row("prometheus targets", ", ".join(f"{job} {h}" for job, h in sorted(scrapes.items())))
        out.print(summary)
        blocks = pool.status.get("last_blocks", []) if pool.reachable else []
        if blocks:
            bt = Table(title="last blocks")
            for column in ("height", "hash", "status", "worker"):
                bt.add_column(column)
            for b in blocks:
                bt.add_row(str(b["height"]), b["hash"], b["status"], b.get("worker", ""))
            out.print(bt)
    if any(h.healthy is False for h in health):
        raise typer.Exit(1)


def logs(
    service: Annotated[str | None, typer.Argument(help="service name (default: all)")] = None,
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    target: TargetOption = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 40,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
) -> None:
    """Show the last log lines of one service or all of them."""
    try:
        cfg, paths = load_project(config, check_secrets=False)
        impl = _target(_remember_target(paths, target), cfg, paths)
        impl.show_logs(service, lines=lines, follow=follow, console=out)
    except DeployError as exc:
        raise report_error(exc) from None


def destroy(
    config: ConfigOption = Path(CONFIG_FILE_NAME),
    target: TargetOption = None,
    purge: Annotated[bool, typer.Option("--purge", help="also delete the stack's data (chain, blocks, Redis)")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask before --purge")] = False,
    inventory: InventoryOption = None,
) -> None:
    """Stop everything the target runs. Data is kept unless --purge."""
    try:
        cfg, paths = load_project(config, check_secrets=False)
        name = _remember_target(paths, target)
        impl = _target(name, cfg, paths, inventory, yes=yes)
        if purge and not yes and not typer.confirm(f"Delete all data of {cfg.name} on the {name} target?"):
            raise typer.Exit(1)
        stopped = impl.destroy(purge=purge)
    except DeployError as exc:
        raise report_error(exc) from None
    what = ", ".join(stopped) if stopped else "nothing was running"
    data = "data purged" if purge else "data kept"
    out.print(f"[green]destroyed[/green] {cfg.name} on the {name} target ({what}); {data}")


def register(app: typer.Typer) -> None:
    for command in (init, validate, render, deploy, status, logs, destroy):
        app.command(command.__name__)(command)
