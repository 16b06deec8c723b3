"""The ``hosts`` target: the ``btcpool`` Ansible role run by ansible-runner against an inventory.

``ckbpool deploy --target hosts -i INVENTORY`` hands the role exactly this config (:func:`hostfiles.role_vars` as
extra vars), follows ansible-runner's events (play, task, host, ok/changed/failed) into a live Rich view, and ends
with a per-host summary table. Without ``-i`` it uses the inventory of the last deploy, else the rendered
``workspace/hosts/inventory.ini``. ``destroy`` runs the role's removal tasks (``destroy.yml``).

The role ships inside the package (``ckbpool/ansible``: the checkout's ``ansible/``, linked in and copied into the
wheel), so an installed ckbpool deploys with the role of its own version; ``CKBPOOL_ANSIBLE_DIR`` points elsewhere
(e.g. a directory with ``site.yml`` and ``roles/btcpool`` from ``ansible-galaxy role install``).
Inventory variables of the hosts (``ansible_host``, ``private_ip``, ``btcpool_docker_install``, ...) stay the
inventory's; the deployment itself comes from ckbpool.yaml.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .assets import shipped_dir
from .config import DeployConfig
from .errors import TargetError, TargetUnavailable
from .hostfiles import GROUPS, private_address_problems, role_vars
from .render import compose_project
from .target import ConfirmCallback, Paths, ServiceHealth, Target

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

INVENTORY_MARKER = "hosts/.inventory"
#: a BuildKit plain-progress step header: "#7 [builder 3/4] RUN ..."
_BUILD_STEP = re.compile(r"^#\d+ \[([^\]]+)\] (.*)$")


def ansible_dir() -> Path:
    return shipped_dir(
        "ansible",
        "CKBPOOL_ANSIBLE_DIR",
        ("site.yml", "roles/btcpool/tasks/main.yml"),
        "the btcpool role is not here: set CKBPOOL_ANSIBLE_DIR to a directory with site.yml and roles/btcpool "
        "(a checkout's ansible/, or `ansible-galaxy role install ckbpool.btcpool -p DIR/roles` plus site.yml)",
    )


def _tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    raise TargetUnavailable(f"{name} is not installed next to this Python (scripts/ansible-deps.sh installs it)")


# ---------------------------------------------------------------------------------------------- images

#: where the hosts target keeps the pool image's ``docker save`` archive (one per image id) for the role to copy
IMAGES_SUBDIR = "hosts/images"
#: a Docker client config with the registry's credentials, used by the hosts' pulls when it exists in secrets_dir
REGISTRY_AUTH_FILE = "registry-auth.json"


def pool_image_vars(
    config: DeployConfig, paths: Paths, on_progress: Callable[[str, str], None] | None = None
) -> dict[str, Any]:
    """Role variables that put the controller's pool image on the hosts, after building it here.

    Every host must run the same bytes, and no registry serves ckbpool's image, so the controller builds it once
    (``images.pool`` on ``images.pool_base``; ``CKBPOOL_IMAGE_POOL`` / ``CKBPOOL_IMAGE_POOL_BASE`` override them,
    as for compose) and then either

    * without ``images.registry``: saves it (``docker save``) once per image id into
      ``workspace/hosts/images/<id>.tar`` (older archives are removed) and hands the role the archive and the
      id; the role loads it only on hosts that run the pool image and lack that id, so an unchanged image is
      never transferred again;
    * with ``images.registry``: pushes it there and hands the hosts the pushed reference by digest
      (``btcpool_images.pool = repository@sha256:...``): a tag could be moved between two hosts' pulls, a
      digest cannot. ``secrets/registry-auth.json`` (a ``docker login`` config, mode 0600), when present, is
      what the hosts pull with; it is never written into a rendered file.

    A pool image already named by digest, or a name of somebody's registry the controller does not have, is
    left to the hosts to pull (the role pulls every image but ``ckbpool.invalid/`` names).
    """
    from .image import build_pool_image, image_id, is_local_image, push_image, save_image

    report = on_progress or (lambda item, state: None)
    images = config.images
    name = os.environ.get("CKBPOOL_IMAGE_POOL") or images.pool
    base = os.environ.get("CKBPOOL_IMAGE_POOL_BASE") or images.pool_base
    out: dict[str, Any] = {
        "btcpool_images": {**images.model_dump(mode="json"), "pool": name},
        "btcpool_pool_image_id": "",
        "btcpool_pool_image_archive": "",
        "btcpool_registry_auth_file": "",
    }
    auth = paths.secrets_dir / REGISTRY_AUTH_FILE
    if auth.is_file():
        if auth.stat().st_mode & 0o077:
            raise TargetError(f"{auth} holds registry credentials but others may read it: chmod 600 {auth}")
        out["btcpool_registry_auth_file"] = str(auth)
    if "@sha256:" in name:
        report("image", f"{name}: pinned by digest, the hosts pull it")
        return out
    if is_local_image(name):
        report("image", f"building {name}")

        def on_line(line: str) -> None:
            step = _BUILD_STEP.match(line)
            if step:
                report("image", f"building {name}: [{step.group(1)}] {step.group(2)[:80]}")

        built = build_pool_image(name, base=base, on_line=on_line)
        found: str | None = built.id
        report("image", f"{name} {'built' if built.built else 'up to date'} ({built.id[:19]})")
    else:
        found = image_id(name)
    if images.registry:
        if found is None:
            raise TargetError(f"cannot push {name} to {images.registry}: this machine does not have it")
        report("image", f"pushing {name} to {images.registry}")
        ref = push_image(name, images.registry)
        out["btcpool_images"]["pool"] = ref
        report("image", f"pushed: the hosts pull {ref}")
        return out
    if found is None:
        report("image", f"{name}: not on this machine, the hosts pull it")
        return out
    digest = found.removeprefix("sha256:")
    folder = paths.workspace / IMAGES_SUBDIR
    archive = folder / f"{digest}.tar"
    if not archive.is_file():
        report("image", f"saving {name} for the hosts")
        save_image(name, archive)  # by name: the archive carries the tag that `docker load` restores
    for old in folder.glob("*.tar"):
        if old != archive:
            old.unlink(missing_ok=True)
    out["btcpool_pool_image_id"] = found
    out["btcpool_pool_image_archive"] = str(archive)
    report("image", f"{name} ({found[:19]}) ready for the hosts")
    return out


# ---------------------------------------------------------------------------------------------- events


@dataclass
class HostProgress:
    """What one host is doing, from the runner's events."""

    host: str
    task: str = "waiting"
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    error: str = ""
    changed_tasks: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "done" if self.finished is not None else "running"

    def describe(self) -> str:
        counts = f"ok {self.ok}, changed {self.changed}" + (f", failed {self.failed}" if self.failed else "")
        return f"{self.task} ({counts})"


class RunView:
    """Folds ansible-runner events into per-host progress; ``on_progress(host, text)`` gets every change."""

    def __init__(self, on_progress: Callable[[str, str], None] | None = None) -> None:
        self.on_progress = on_progress or (lambda host, text: None)
        self.hosts: dict[str, HostProgress] = {}
        self.play = ""
        self.stats: dict[str, dict[str, int]] = {}
        self.failures: list[str] = []

    def _host(self, name: str) -> HostProgress:
        if name not in self.hosts:
            self.hosts[name] = HostProgress(name)
        return self.hosts[name]

    def handle(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host") or data.get("remote_addr")
        if kind == "playbook_on_play_start":
            self.play = str(data.get("play", ""))
        elif kind == "runner_on_start" and host:
            progress = self._host(host)
            progress.task = str(data.get("task", "")).replace("btcpool : ", "")
            self.on_progress(host, progress.describe())
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable") and host:
            progress = self._host(host)
            result = data.get("res") or {}
            if kind == "runner_on_ok":
                progress.ok += 1
                if result.get("changed"):
                    progress.changed += 1
                    progress.changed_tasks.append(progress.task)
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                progress.failed += 1
                message = str(result.get("msg") or "failed").strip()
                output = str(result.get("stderr") or result.get("stdout") or "").strip().splitlines()
                if output:
                    message += ": " + " / ".join(line.strip() for line in output[-4:])
                progress.error = message
                self.failures.append(f"{host}: {progress.task}: {message}")
            elif kind == "runner_on_failed":
                progress.ok += 1
            elif kind == "runner_on_skipped":
                progress.skipped += 1
            else:
                progress.unreachable += 1
                progress.error = str(result.get("msg", "unreachable")).strip()
                self.failures.append(f"{host}: unreachable: {progress.error}")
            self.on_progress(host, progress.describe())
        elif kind == "playbook_on_stats":
            for key in ("ok", "changed", "failures", "skipped", "dark", "rescued", "ignored"):
                for name, count in (data.get(key) or {}).items():
                    self.stats.setdefault(name, {})[key] = int(count)
            for name in self.stats:
                progress = self._host(name)
                progress.finished = time.monotonic()
                self.on_progress(name, f"{progress.state}: ok {progress.ok}, changed {progress.changed}")
        return True

    def changed(self) -> int:
        return sum(s.get("changed", 0) for s in self.stats.values())

    def summary_table(self, title: str) -> Table:
        from rich.table import Table

        table = Table(title=title)
        for column in ("host", "result", "ok", "changed", "failed", "unreachable", "skipped", "time"):
            table.add_column(column, justify="left" if column in ("host", "result") else "right")
        for name, progress in sorted(self.hosts.items()):
            stats = self.stats.get(name, {})
            colour = {"done": "green", "failed": "red", "unreachable": "red"}.get(progress.state, "yellow")
            took = (progress.finished or time.monotonic()) - progress.started
            table.add_row(
                name,
                f"[{colour}]{progress.state}[/{colour}]",
                str(stats.get("ok", progress.ok)),
                str(stats.get("changed", progress.changed)),
                str(stats.get("failures", progress.failed)),
                str(stats.get("dark", progress.unreachable)),
                str(stats.get("skipped", progress.skipped)),
                f"{took:.0f}s",
            )
        return table


# ---------------------------------------------------------------------------------------------- target


class HostsTarget:
    name = "hosts"

    def __init__(self, config: DeployConfig, paths: Paths, inventory: Path | None = None) -> None:
        self.config = config
        self.paths = paths
        self.project = compose_project(config)
        self.inventory = self._inventory(inventory)
        self.last_view: RunView | None = None
        self._inventory_data: dict[str, Any] | None = None
        p = config.ports
        node = self._address_of("ckb_node")
        pool = self._address_of("pool") or self._address_of("stratum")
        self.rpc_url = f"http://{node or config.bind.private}:{p.node_rpc}"
        self.pool_http = f"http://{pool or config.bind.private}:{p.pool_http}"

    # -- inventory -----------------------------------------------------------------------------------
    def _inventory(self, given: Path | None) -> Path:
        marker = self.paths.workspace / INVENTORY_MARKER
        if given is not None:
            inventory = given.expanduser().resolve()
            if not inventory.exists():
                raise TargetError(f"inventory {inventory} does not exist")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(inventory) + "\n")
            return inventory
        try:
            remembered = Path(marker.read_text().strip())
            if remembered.exists():
                return remembered
        except OSError:
            pass
        return self.paths.workspace / "hosts" / "inventory.ini"

    def inventory_data(self) -> dict[str, Any]:
        """``ansible-inventory --list`` of the inventory (groups and host variables)."""
        if self._inventory_data is None:
            try:
                result = subprocess.run(
                    [_tool("ansible-inventory"), "-i", str(self.inventory), "--list"],
                    capture_output=True, text=True, timeout=60, env=self._env(),
                )  # fmt: skip
                self._inventory_data = json.loads(result.stdout) if result.returncode == 0 else {}
            except (TargetUnavailable, ValueError, subprocess.TimeoutExpired, OSError):
                self._inventory_data = {}
        return self._inventory_data

    def groups(self) -> dict[str, list[str]]:
        data = self.inventory_data()
        return {g: list((data.get(g) or {}).get("hosts", [])) for g in GROUPS if data.get(g)}

    def _address_of(self, group: str) -> str | None:
        hosts = self.groups().get(group) or []
        if not hosts:
            return None
        hostvars = (self.inventory_data().get("_meta") or {}).get("hostvars", {}).get(hosts[0], {})
        if hostvars.get("ansible_connection") == "local":
            return None
        address = hostvars.get("btcpool_private_address") or hostvars.get("private_ip") or hostvars.get("ansible_host")
        if address in (None, "127.0.0.1", "localhost"):
            return None
        return str(address)

    def check_private_addresses(self) -> None:
        """Refuse, before anything is built or copied, an inventory of several hosts where some lack a private
        address (``btcpool_private_address`` or ``private_ip``): one message naming them all. The role checks the
        same in its preflight; this only saves the image build and the SSH round trips."""
        data = self.inventory_data()
        hosts = list(dict.fromkeys(h for names in self.groups().values() for h in names))
        if len(hosts) < 2:
            return
        hostvars = (data.get("_meta") or {}).get("hostvars", {})
        addresses = {
            h: str(
                (hostvars.get(h) or {}).get("btcpool_private_address")
                or (hostvars.get(h) or {}).get("private_ip")
                or ""
            )
            for h in hosts
        }
        problems = private_address_problems(hosts, addresses)
        if problems:
            raise TargetError(f"inventory {self.inventory}: {problems[0]}")

    # -- runner --------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "ANSIBLE_HOST_PATTERN_MISMATCH": "ignore",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_NOCOLOR": "1",
        }

    def run_playbook(
        self,
        playbook: str,
        extravars: dict[str, Any],
        *,
        timeout: float,
        on_progress: Callable[[str, str], None] | None = None,
    ) -> RunView:
        try:
            import ansible_runner  # type: ignore[import-untyped]
        except ImportError:
            raise TargetUnavailable("ansible-runner is not installed (scripts/ansible-deps.sh installs it)") from None
        if not self.inventory.exists():
            raise TargetError(f"inventory {self.inventory} does not exist (pass -i INVENTORY or run `ckbpool render`)")
        project = ansible_dir()
        private = self.paths.workspace / "hosts" / "runner"
        private.mkdir(parents=True, exist_ok=True)
        view = RunView(on_progress)
        env = self._env()
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(project),
            playbook=playbook,
            inventory=str(self.inventory),
            extravars=extravars,
            envvars={
                **{k: env[k] for k in ("PATH", "ANSIBLE_HOST_PATTERN_MISMATCH", "ANSIBLE_RETRY_FILES_ENABLED")},
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
            },
            event_handler=view.handle,
            quiet=True,
            timeout=int(timeout),
            rotate_artifacts=5,
        )
        self.last_view = view
        if runner.status == "timeout":
            raise TargetError(f"{playbook} did not finish within {timeout:.0f}s")
        if runner.rc != 0:
            # the last failure is the one that stopped the host (earlier ones may have been rescued)
            detail = "; ".join(reversed(view.failures[-3:])) or f"{runner.status}, rc {runner.rc}"
            if not view.failures:
                tail = (private / "artifacts").glob("*/stdout")
                last = max(tail, key=lambda p: p.stat().st_mtime, default=None)
                if last is not None:
                    detail += ": " + " / ".join(last.read_text(errors="replace").strip().splitlines()[-3:])
            raise TargetError(f"{playbook} failed: {detail}")
        return view

    def summary(self) -> Table | None:
        """Per host: the role's result and its task counts, from the last playbook run (None before one ran)."""
        if self.last_view is None:
            return None
        return self.last_view.summary_table(f"{self.config.name} on the hosts of {self.inventory.name}")

    # -- target ------------------------------------------------------------------------------------
    def deploy(
        self,
        *,
        timeout: float = 1800.0,
        on_progress: Callable[[str, str], None] | None = None,
        confirm: ConfirmCallback | None = None,  # unused: the hosts exist already, the role has no plan to approve
        images: dict[str, Any] | None = None,
    ) -> None:
        """Build the pool image here and run the role with it (``images``: :func:`pool_image_vars` already
        computed by the caller, as the cloud targets do before creating anything billable)."""
        self.check_private_addresses()
        if images is None:
            images = pool_image_vars(self.config, self.paths, on_progress)
        extravars = {**role_vars(self.config, self.paths), **images}
        self.run_playbook("site.yml", extravars, timeout=timeout, on_progress=on_progress)

    def destroy(self, *, purge: bool = False, timeout: float = 900.0) -> list[str]:
        extravars = {**role_vars(self.config, self.paths), "btcpool_purge": purge}
        view = self.run_playbook("destroy.yml", extravars, timeout=timeout)
        return sorted(view.hosts)

    def health(self) -> list[ServiceHealth]:
        """Each host's containers of this pool, from `docker ps` over Ansible (ad-hoc, read-only)."""
        out: list[ServiceHealth] = []
        # Go templates for docker, escaped from Ansible's Jinja
        fmt = "|".join(
            '{{ "{{" }}' + field + '{{ "}}" }}'
            for field in ('.Label "com.docker.compose.service"', ".State", ".Status")
        )
        command = f"docker ps --all --filter label=com.docker.compose.project={self.project} --format '{fmt}'"
        result = subprocess.run(
            [*self._adhoc_shell(command), "-o"], capture_output=True, text=True, timeout=120, env=self._env()
        )
        for line in result.stdout.splitlines():
            host, sep, rest = line.partition(" | ")
            if not sep:
                continue
            if "(stdout)" not in rest:
                out.append(ServiceHealth(host.strip(), "unreachable", False, rest.strip()[:120]))
                continue
            body = rest.split("(stdout)", 1)[1].strip()
            for entry in body.split("\\n"):
                service, _, state_status = entry.partition("|")
                state, _, status = state_status.partition("|")
                if service:
                    healthy = "(healthy)" in status
                    out.append(ServiceHealth(f"{host.strip()}/{service}", state, healthy, status))
        return out

    def show_logs(self, service: str | None, *, lines: int, follow: bool, console: Console) -> None:
        """``ansible`` prints each host's ``docker logs`` to the terminal itself, so ``console`` is not used."""
        command = f"docker ps -q --filter label=com.docker.compose.project={self.project}"
        if service:
            command += f" --filter label=com.docker.compose.service={service}"
        command += f" | xargs -r -n1 docker logs --tail {lines}"
        subprocess.run(self._adhoc_shell(command), env=self._env(), check=False, timeout=300)

    def _adhoc_shell(self, command: str) -> list[str]:
        """``ansible`` running ``command`` as root on every host of the inventory's groups (read-only uses)."""
        hosts = sorted({h for names in self.groups().values() for h in names}) or ["all"]
        return [_tool("ansible"), "-i", str(self.inventory), ",".join(hosts), "-b", "-m", "ansible.builtin.shell",
                "-a", command]  # fmt: skip

    def processes(self) -> list[str]:
        return [h.name for h in self.health()]


_IS_A_TARGET: type[Target] = HostsTarget  # mypy: HostsTarget has every member of the Target protocol
