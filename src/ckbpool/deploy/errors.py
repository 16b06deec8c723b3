"""Errors of the deployment toolkit. The CLI turns each into one clear line and a non-zero exit code."""

from __future__ import annotations


class DeployError(Exception):
    """Base class of every error raised by ``ckbpool.deploy``."""

    exit_code = 1


class ConfigFileError(DeployError):
    """``ckbpool.yaml`` is missing, unreadable, not YAML, or does not match the schema.

    ``problems`` holds one ``key.path: message`` line per bad key; ``str()`` is the first of them prefixed
    with the file name, so a single line tells the user where to look.
    """

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        extra = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {problems[0]}{extra}")


class ValidationFailed(DeployError):
    """Semantic checks failed (port clash, address on the wrong network, a role without a host, ...)."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        extra = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {problems[0]}{extra}")


class SecretsError(DeployError):
    """A secret file is missing or has unsafe permissions."""

    exit_code = 2


class WorkspaceError(DeployError):
    """The workspace is missing (run ``ckbpool render``) or does not belong to this config."""

    exit_code = 2


class TargetError(DeployError):
    """A target could not deploy, report on or destroy the stack."""


class TargetUnavailable(TargetError):
    """The tools a target needs (docker, compose, ckb) are not installed or not running."""
