"""What every deploy target is: the one interface the CLI drives, and the types all targets share.

The CLI (``deploy``, ``status``, ``logs``, ``destroy``) picks a target by name and then only talks to it through
:class:`Target`, so a new target (or a change to one) is checked by ``mypy --strict`` against what the commands
actually call instead of being found out at run time by ``hasattr`` probes or an ``Any`` that hides a renamed
method. The concrete targets are :class:`~ckbpool.deploy.local.LocalTarget`,
:class:`~ckbpool.deploy.compose.ComposeTarget`, :class:`~ckbpool.deploy.hosts.HostsTarget` and
:class:`~ckbpool.deploy.cloud.CloudTarget` (``aws`` and ``alicloud``); each module asserts statically that its
class satisfies the protocol.

:class:`Paths` and :class:`ServiceHealth` live here rather than in the renderer or one target because every
target takes the first and returns the second: a shared module keeps targets from importing each other (and the
renderer) just for a type. This module imports nothing but the config, so anything may import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .config import DeployConfig, resolve

if TYPE_CHECKING:  # only for annotations: keep `import ckbpool.deploy.target` free of rich and terraform
    from rich.console import Console, RenderableType

    from .terraform import PlanSummary

#: ``on_progress(item, state)``: a service, host or step and what it is doing now ("healthy" when it is done)
ProgressCallback = Callable[[str, str], None]
#: ``confirm(plan)``: shown a plan of billable or destructive changes, True applies it
ConfirmCallback = Callable[["PlanSummary"], bool]


@dataclass(frozen=True)
class Paths:
    """Where a config's files live: everything relative in ckbpool.yaml is relative to its directory."""

    config_file: Path
    secrets_dir: Path
    workspace: Path

    @classmethod
    def of(cls, config_file: Path, config: DeployConfig) -> Paths:
        config_file = config_file.resolve()
        base = config_file.parent
        return cls(config_file, resolve(base, config.secrets_dir), resolve(base, config.workspace))


@dataclass
class ServiceHealth:
    """One row of ``ckbpool status`` (and of a deploy's wait for health), whatever the target runs it as.

    ``healthy`` is None when the target can tell that something exists but not whether it works (a cloud host
    before the stack is on it): ``status`` shows "-" and does not count it as a failure."""

    name: str
    state: str  # running | restarting | stopped | exited | failed | missing | unreachable | ...
    healthy: bool | None
    detail: str = ""


@runtime_checkable
class Target(Protocol):
    """A place the stack runs: this machine's processes, a compose project, Ansible hosts, or cloud hosts.

    Members are what the CLI calls; a target may take more keywords (with defaults) for its own callers, such
    as tests driving it without the CLI. ``runtime_checkable`` lets the unit tests assert that each target still
    has every member; the signatures themselves are checked by mypy (see the module-level checks in each target).
    """

    @property
    def name(self) -> str:
        """The ``--target`` name (``local``, ``compose``, ``hosts``, ``aws``, ``alicloud``)."""
        ...

    @property
    def rpc_url(self) -> str:
        """The ckb node's JSON-RPC URL that ``ckbpool status`` probes from this machine.

        A target that learns its hosts' addresses from the deployment (the cloud targets) may only know it after
        :meth:`health`, which is why ``status`` reads it after asking for health."""
        ...

    @property
    def pool_http(self) -> str:
        """Base URL of the pool's HTTP API (``/health``, ``/status``) that ``ckbpool status`` probes."""
        ...

    def deploy(
        self,
        *,
        timeout: float = ...,
        on_progress: ProgressCallback | None = None,
        confirm: ConfirmCallback | None = None,
    ) -> None:
        """Bring the stack up and return once every service is healthy; raise a DeployError otherwise.

        ``timeout`` bounds the wait in seconds. ``confirm`` is asked before a target applies a plan of billable
        changes (the cloud targets); targets that have nothing to confirm accept and ignore it, so the CLI can
        hand the same callback to any target."""
        ...

    def destroy(self, *, purge: bool = False) -> list[str]:
        """Stop everything the target runs and return the names of what was stopped or removed (empty when
        nothing was running). Data is kept unless ``purge``."""
        ...

    def health(self) -> list[ServiceHealth]:
        """Each service's state now (one probe, no waiting)."""
        ...

    def show_logs(self, service: str | None, *, lines: int, follow: bool, console: Console) -> None:
        """Print the last ``lines`` of one service's log (all services when None); with ``follow``, keep
        printing until interrupted. ``console`` is where the lines go when the target reads them itself; targets
        that hand the terminal to a tool (``docker compose logs``, ``ansible``) let the tool write instead."""
        ...

    def summary(self) -> RenderableType | None:
        """What the last deploy did, to print after it (also after a failed one): per-host results for Ansible,
        the created hosts for a cloud; None when the progress lines already said everything."""
        ...
