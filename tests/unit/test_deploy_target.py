"""Every deploy target is a :class:`~ckbpool.deploy.target.Target`, and the CLI needs nothing else of it.

``mypy --strict src`` checks the signatures statically (each target module assigns its class to a
``type[Target]``); these tests fail at run time too when a target loses a member or a keyword the CLI passes,
and drive ``deploy``/``logs``/``destroy`` through the CLI with a fake target to show that the commands only use
the protocol (the summary printed after a deploy, also after a failed one, and the confirm callback handed to
every target)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console, RenderableType
from rich.table import Table
from typer.testing import CliRunner, Result

from ckbpool.cli import deploy_cmds
from ckbpool.cli.app import app
from ckbpool.deploy.cloud import CloudTarget
from ckbpool.deploy.compose import ComposeTarget
from ckbpool.deploy.config import DeployConfig, load_config
from ckbpool.deploy.errors import TargetError
from ckbpool.deploy.hosts import HostsTarget
from ckbpool.deploy.local import LocalTarget
from ckbpool.deploy.target import ConfirmCallback, Paths, ProgressCallback, ServiceHealth, Target

pytestmark = pytest.mark.unit

TARGET_CLASSES: list[type[Target]] = [LocalTarget, ComposeTarget, HostsTarget, CloudTarget]
PROTOCOL_METHODS = ("deploy", "destroy", "health", "show_logs", "summary")


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    config = tmp_path / "ckbpool.yaml"
    result = run("init", "-c", str(config), "--non-interactive", "--name", "tgt", "--no-miner")
    assert result.exit_code == 0, result.stderr
    return config


def loaded(project: Path) -> tuple[DeployConfig, Paths]:
    cfg = load_config(project)
    return cfg, Paths.of(project, cfg)


# ------------------------------------------------------------------------------------- the real targets


@pytest.mark.parametrize("name", deploy_cmds.TARGETS)
def test_every_cli_target_is_a_target(project: Path, name: str) -> None:
    cfg, paths = loaded(project)
    target = deploy_cmds._target(name, cfg, paths)
    assert isinstance(target, Target), f"{type(target).__name__} lacks a member of Target"
    assert target.name == name
    assert isinstance(target.rpc_url, str) and isinstance(target.pool_http, str)


@pytest.mark.parametrize("cls", TARGET_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("method", PROTOCOL_METHODS)
def test_methods_accept_what_the_protocol_promises(cls: type[Target], method: str) -> None:
    """isinstance only sees that a member exists: this compares the keywords, so a target whose deploy stopped
    accepting ``confirm`` (or that made a new keyword mandatory) fails here and not in an operator's shell."""
    promised = inspect.signature(getattr(Target, method)).parameters
    actual = inspect.signature(getattr(cls, method)).parameters
    for name, param in promised.items():
        assert name in actual, f"{cls.__name__}.{method} does not take {name!r}"
        assert actual[name].kind == param.kind, f"{cls.__name__}.{method}: {name!r} is {actual[name].kind}"
        if param.default is not inspect.Parameter.empty:
            assert actual[name].default is not inspect.Parameter.empty, f"{cls.__name__}.{method}: {name!r}"
    for name, param in actual.items():
        if name not in promised and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            assert param.default is not inspect.Parameter.empty, (
                f"{cls.__name__}.{method} requires {name!r}, which the CLI never passes"
            )


def test_nothing_to_summarise_before_a_deploy(project: Path) -> None:
    cfg, paths = loaded(project)
    for target in (LocalTarget(cfg, paths), ComposeTarget(cfg, paths), CloudTarget(cfg, paths, "aws")):
        assert target.summary() is None, target.name


def test_a_target_missing_a_member_is_not_a_target() -> None:
    class NoSummary:
        name = "broken"
        rpc_url = pool_http = ""

        def deploy(self, **_: object) -> None:
            pass

        def destroy(self, **_: object) -> list[str]:
            return []

        def health(self) -> list[ServiceHealth]:
            return []

        def show_logs(self, *_: object, **__: object) -> None:
            pass

    assert not isinstance(NoSummary(), Target)


# -------------------------------------------------------------------------------- the CLI over a fake


class FakeTarget:
    """A Target that records what the CLI asks of it."""

    name = "local"
    rpc_url = "http://127.0.0.1:9"
    pool_http = "http://127.0.0.1:9"

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.confirm: ConfirmCallback | None = None
        self.destroyed: list[bool] = []

    def deploy(
        self,
        *,
        timeout: float = 1.0,
        on_progress: ProgressCallback | None = None,
        confirm: ConfirmCallback | None = None,
    ) -> None:
        self.confirm = confirm
        if on_progress is not None:
            on_progress("pool", "healthy")
        if self.fail:
            raise TargetError(self.fail)

    def destroy(self, *, purge: bool = False) -> list[str]:
        self.destroyed.append(purge)
        return ["pool", "ckb"]

    def health(self) -> list[ServiceHealth]:
        return [ServiceHealth("pool", "running", True, "ready")]

    def show_logs(self, service: str | None, *, lines: int, follow: bool, console: Console) -> None:
        console.print(f"{service or 'all'}: last {lines} lines")

    def summary(self) -> RenderableType | None:
        table = Table(title="fake summary")
        table.add_column("host")
        table.add_row("fake-1")
        return table


def use(monkeypatch: pytest.MonkeyPatch, fake: FakeTarget) -> list[str]:
    assert isinstance(fake, Target)
    asked: list[str] = []

    def pick(name: str, *_: object, **__: object) -> Target:
        asked.append(name)
        return fake

    factory: Callable[..., Target] = pick
    monkeypatch.setattr(deploy_cmds, "_target", factory)
    return asked


def test_deploy_prints_the_summary_and_hands_every_target_the_confirm_callback(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTarget()
    asked = use(monkeypatch, fake)
    result = run("deploy", "-c", str(project), "--target", "compose")
    assert result.exit_code == 0, result.stderr
    assert asked == ["compose"]
    assert "fake summary" in result.stdout and "tgt is up" in result.stdout
    assert callable(fake.confirm)


def test_a_failed_deploy_still_shows_its_summary_and_one_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, FakeTarget(fail="pool is unhealthy"))
    result = run("deploy", "-c", str(project), "--target", "local")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: pool is unhealthy"]
    assert "fake summary" in result.stderr and "Traceback" not in result.stderr


def test_a_summary_that_fails_does_not_hide_the_deploy_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTarget(fail="terraform apply failed")

    def broken_summary() -> RenderableType | None:
        raise TargetError("no terraform state")

    monkeypatch.setattr(fake, "summary", broken_summary)
    use(monkeypatch, fake)
    result = run("deploy", "-c", str(project), "--target", "local")
    assert result.exit_code == 1
    assert "error: terraform apply failed" in result.stderr and "no terraform state" not in result.stderr


def test_logs_and_destroy_go_through_the_protocol(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTarget()
    use(monkeypatch, fake)
    logs = run("logs", "pool", "-c", str(project), "--target", "local", "-n", "7")
    assert logs.exit_code == 0, logs.stderr
    assert "pool: last 7 lines" in logs.stdout
    destroyed = run("destroy", "-c", str(project), "--target", "local", "--purge", "--yes")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert fake.destroyed == [True] and "(pool, ckb)" in destroyed.stdout
