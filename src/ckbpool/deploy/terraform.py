"""A thin runner over the ``terraform`` (or ``tofu``) binary: init, plan, show, apply, output, destroy.

No wrapper library (python-terraform is unmaintained): each call is one subprocess whose output lines are
streamed to a callback (the CLI's Rich progress view) and whose last lines are kept, so a failure names the
command and shows what Terraform said. Machine-readable answers come from ``show -json`` and ``output -json``.

Providers come from a local filesystem mirror, never from a registry: ``scripts/terraform-deps.sh`` fills
``~/.cache/ckbpool/tf-plugins`` and the runner writes a CLI configuration pointing at it, so ``init`` works on a
machine without internet access to the registry.

Binary: Terraform and OpenTofu both work (the modules, their ``terraform test`` files with mock providers and the
moto e2e run on each). ``CKBPOOL_TERRAFORM`` picks one (a name such as ``tofu``, or a path); otherwise ``terraform``
on PATH, else ``tofu`` on PATH, else either in ``~/.cache/ckbpool/bin`` (where ``scripts/tofu-deps.sh`` builds
OpenTofu). Errors and progress steps name the binary that ran (```tofu plan` failed ...``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TargetError, TargetUnavailable

LineCallback = Callable[[str], None]
DEFAULT_CACHE = Path(os.environ.get("CKBPOOL_CACHE", Path.home() / ".cache" / "ckbpool"))
KEEP_LINES = 60


class TerraformError(TargetError):
    """A terraform command failed. ``str()`` names the command and Terraform's first error line;
    ``last_lines`` holds the end of its output."""

    def __init__(self, command: Sequence[str], returncode: int | None, last_lines: Sequence[str]) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.last_lines = list(last_lines)
        shown = " ".join([Path(self.command[0]).name, *self.command[1:2]])
        status = "timed out" if returncode is None else f"failed (exit {returncode})"
        super().__init__(f"`{shown}` {status}: {summarize_error(self.last_lines)}")


class TerraformNotFound(TargetUnavailable):
    """Neither terraform nor tofu is installed."""


def summarize_error(lines: Sequence[str]) -> str:
    """Terraform's first ``Error: <summary>`` with its explanation (the text after the source snippet), else the
    last non-empty line."""
    raw = [line.rstrip() for line in lines]
    for i, line in enumerate(raw):
        head = line.strip(" │╷╵\t")
        if not head.startswith("Error:"):
            continue
        for later in raw[i + 1 :]:
            text = later.strip()
            if text.startswith("│"):
                text = text.lstrip("│ ")
                if text.startswith(("├", "with ", "on ")) or re.match(r"^\d+:", text) or not text:
                    continue
                if text.startswith(("Error:", "Warning:")):
                    break
            if not text or text.startswith(("├", "with ", "on ", "This was checked", "(and ")):
                continue
            if re.match(r"^\d+:", text) or text.startswith(("Error:", "Warning:")):
                if text.startswith(("Error:", "Warning:")):
                    break
                continue
            if re.match(r"^[a-z_.\[\]\"0-9]+ is ", text):  # "var.x is list of string with 1 element"
                continue
            return f"{head}: {text}" if not head.endswith(":") else f"{head} {text}"
        return head
    clean = [line.strip(" │╷╵\t") for line in raw if line.strip(" │╷╵\t")]
    return clean[-1] if clean else "no output"


BINARY_NAMES = ("terraform", "tofu")


def cache_bin_dir() -> Path:
    """Where the deps scripts put the tools they build (``scripts/tofu-deps.sh``: OpenTofu)."""
    return Path(os.environ.get("CKBPOOL_CACHE", DEFAULT_CACHE)) / "bin"


def locate(name: str) -> str | None:
    """``name`` (terraform or tofu, or a path) on PATH, else in :func:`cache_bin_dir`; None when neither has it."""
    found = shutil.which(name)
    if found is None and os.sep not in name:
        found = shutil.which(name, path=str(cache_bin_dir()))
    return found


def find_binary(explicit: str | None = None) -> str:
    """Path of the terraform/tofu binary to run: ``explicit``, else ``CKBPOOL_TERRAFORM``, else ``terraform``, else
    ``tofu`` (on PATH first, then in the cache's bin directory), so a machine with only OpenTofu needs no setting."""
    wanted = explicit or os.environ.get("CKBPOOL_TERRAFORM")
    if wanted:
        found = locate(wanted)
        if found is None:
            origin = "" if explicit else " (CKBPOOL_TERRAFORM)"
            raise TerraformNotFound(
                f"{wanted!r}{origin} is not an executable: give a path, or a name on PATH "
                f"(terraform or tofu; scripts/tofu-deps.sh builds tofu into {cache_bin_dir()})"
            )
        return found
    for lookup in (shutil.which, lambda name: shutil.which(name, path=str(cache_bin_dir()))):
        for name in BINARY_NAMES:
            found = lookup(name)
            if found is not None:
                return found
    raise TerraformNotFound(
        "neither terraform nor tofu is installed (install Terraform >= 1.7 or OpenTofu >= 1.8, or set "
        "CKBPOOL_TERRAFORM to one; then run scripts/terraform-deps.sh for the provider mirror)"
    )


def default_plugin_mirror() -> Path:
    return Path(os.environ.get("CKBPOOL_TF_PLUGINS", DEFAULT_CACHE / "tf-plugins"))


def cli_config_text(mirror: Path) -> str:
    return (
        "# written by ckbpool: providers from the local filesystem mirror only\n"
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = {json.dumps(str(mirror))}\n"
        '    include = ["registry.terraform.io/*/*", "registry.opentofu.org/*/*"]\n'
        "  }\n"
        "}\n"
        "disable_checkpoint = true\n"
    )


def provider_available(mirror: Path, namespace: str, name: str) -> bool:
    """Whether the mirror holds any version of ``namespace/name`` for this platform."""
    base = mirror / "registry.terraform.io" / namespace / name
    return any(p.is_file() or p.is_symlink() for p in base.glob(f"*/linux_amd64/terraform-provider-{name}_*"))


@dataclass(frozen=True)
class ResourceChange:
    address: str
    actions: tuple[str, ...]  # ("create",), ("update",), ("delete",), ("delete", "create"), ("no-op",), ...

    @property
    def action(self) -> str:
        if self.actions in (("delete", "create"), ("create", "delete")):
            return "replace"
        return self.actions[0] if len(self.actions) == 1 else "/".join(self.actions)


@dataclass(frozen=True)
class PlanSummary:
    """What a saved plan would do, from ``terraform show -json``."""

    changes: tuple[ResourceChange, ...]
    output_names: tuple[str, ...] = ()
    errored: bool = False

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def add(self) -> int:
        return self.count("create") + self.count("replace")

    @property
    def change(self) -> int:
        return self.count("update")

    @property
    def destroy(self) -> int:
        return self.count("delete") + self.count("replace")

    @property
    def empty(self) -> bool:
        return all(c.action in ("no-op", "read") for c in self.changes)

    def line(self) -> str:
        return f"{self.add} to add, {self.change} to change, {self.destroy} to destroy"

    @classmethod
    def from_show_json(cls, doc: Mapping[str, Any]) -> PlanSummary:
        changes = []
        for rc in doc.get("resource_changes", []) or []:
            if rc.get("mode") == "data":
                continue
            actions = tuple((rc.get("change") or {}).get("actions") or ("no-op",))
            changes.append(ResourceChange(str(rc.get("address")), actions))
        outputs = tuple(sorted((doc.get("planned_values") or {}).get("outputs", {}) or {}))
        return cls(tuple(changes), outputs, bool(doc.get("errored", False)))


@dataclass
class Terraform:
    """Runs terraform in ``workdir`` (a root module).

    ``on_line`` receives every output line of the streaming commands (init, plan, apply, destroy, test).
    ``env`` is added to the process environment. ``plugin_mirror`` (default ``~/.cache/ckbpool/tf-plugins``)
    is where providers come from: the runner writes a CLI configuration next to the workdir's ``.terraform``
    that names it, unless ``TF_CLI_CONFIG_FILE`` is given in ``env``.
    """

    workdir: Path
    binary: str | None = None
    on_line: LineCallback | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    plugin_mirror: Path | None = None
    timeout: float | None = 3600.0

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.binary = find_binary(self.binary)
        self.plugin_mirror = Path(self.plugin_mirror) if self.plugin_mirror else default_plugin_mirror()

    @property
    def name(self) -> str:
        """The binary's file name (``terraform`` or ``tofu``): progress steps and errors say which one ran."""
        return Path(str(self.binary)).name

    # ------------------------------------------------------------------------------------------ process

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TF_IN_AUTOMATION": "1",
                "TF_INPUT": "0",
                "CHECKPOINT_DISABLE": "1",
                "NO_COLOR": "1",
            }
        )
        env.update(self.env)
        if "TF_CLI_CONFIG_FILE" not in self.env:
            env["TF_CLI_CONFIG_FILE"] = str(self._cli_config())
        return env

    def _cli_config(self) -> Path:
        assert self.plugin_mirror is not None
        data_dir = Path(self.env.get("TF_DATA_DIR") or os.environ.get("TF_DATA_DIR") or self.workdir / ".terraform")
        path = (data_dir if data_dir.is_absolute() else self.workdir / data_dir) / "ckbpool.tfrc"
        text = cli_config_text(self.plugin_mirror)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def run(self, args: Sequence[str], *, stream: bool = True, timeout: float | None = None) -> str:
        """Run ``<binary> args...`` in the workdir. Streams stdout+stderr lines to ``on_line`` (when ``stream``)
        and returns stdout. Raises :class:`TerraformError` on a non-zero exit or a timeout."""
        command = [str(self.binary), *args]
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = self.environment()
        last: deque[str] = deque(maxlen=KEEP_LINES)
        stdout_parts: list[str] = []
        proc = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stream else subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,  # a timeout ends terraform and its provider plugins together
        )

        def pump_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                last.append(line.rstrip("\n"))

        err_thread = None
        if not stream:
            err_thread = threading.Thread(target=pump_stderr, daemon=True)
            err_thread.start()
        limit = timeout if timeout is not None else self.timeout
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_group(proc)

        timer = threading.Timer(limit, expire) if limit else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                if stream:
                    last.append(line)
                    if self.on_line is not None:
                        self.on_line(line)
                else:
                    stdout_parts.append(raw)
            returncode = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        if err_thread is not None:
            err_thread.join(timeout=5)
        if returncode != 0:
            raise TerraformError(command, None if expired.is_set() else returncode, list(last))
        return "".join(stdout_parts)

    # ---------------------------------------------------------------------------------------- commands

    def version(self) -> str:
        doc = json.loads(self.run(["version", "-json"], stream=False, timeout=60))
        return str(doc.get("terraform_version") or doc.get("version") or "unknown")

    def init(self, *, upgrade: bool = False, backend: bool = True) -> None:
        args = ["init", "-input=false", "-no-color"]
        if not backend:
            args.append("-backend=false")
        if upgrade:
            args.append("-upgrade")
        self.run(args)

    def validate(self) -> dict[str, Any]:
        """``validate -json``; raises with the first diagnostic when the configuration is invalid."""
        try:
            out = self.run(["validate", "-json", "-no-color"], stream=False)
        except TerraformError as exc:
            raise exc from None
        doc: dict[str, Any] = json.loads(out)
        return doc

    def plan(
        self,
        plan_file: Path | str = "ckbpool.tfplan",
        *,
        var_files: Iterable[Path | str] = (),
        variables: Mapping[str, str] | None = None,
        destroy: bool = False,
    ) -> PlanSummary:
        """``plan -out=plan_file``, then ``show -json`` of it: what apply would do."""
        args = ["plan", "-input=false", "-no-color", f"-out={plan_file}", *_var_args(var_files, variables)]
        if destroy:
            args.append("-destroy")
        self.run(args)
        return self.show_plan(plan_file)

    def show_plan(self, plan_file: Path | str) -> PlanSummary:
        return PlanSummary.from_show_json(json.loads(self.run(["show", "-json", str(plan_file)], stream=False)))

    def apply(self, plan_file: Path | str = "ckbpool.tfplan") -> None:
        """Apply a saved plan (no second confirmation: the plan is what was shown)."""
        self.run(["apply", "-input=false", "-no-color", "-auto-approve", str(plan_file)])

    def output(self) -> dict[str, Any]:
        """Every root output's value (``output -json``)."""
        doc = json.loads(self.run(["output", "-json", "-no-color"], stream=False) or "{}")
        return {name: item.get("value") for name, item in doc.items()}

    def destroy(self, *, var_files: Iterable[Path | str] = (), variables: Mapping[str, str] | None = None) -> None:
        self.run(["destroy", "-input=false", "-no-color", "-auto-approve", *_var_args(var_files, variables)])

    def fmt_check(self, *, recursive: bool = True) -> None:
        self.run(["fmt", "-check", "-diff", "-no-color", *(["-recursive"] if recursive else [])])

    def test(self, *extra: str) -> None:
        self.run(["test", "-no-color", *extra])


def _var_args(var_files: Iterable[Path | str], variables: Mapping[str, str] | None) -> list[str]:
    args = [f"-var-file={f}" for f in var_files]
    for key, value in (variables or {}).items():
        args.append(f"-var={key}={value}")
    return args


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
