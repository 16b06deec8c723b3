""".circleci/config.yml: valid against CircleCI's JSON schema (check-jsonschema's vendored copy), every job calls
make targets that exist in the Makefile, and together the jobs do what .ci/run does (same make targets, same apt
packages, every test selected by some job)."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".circleci" / "config.yml"
MAKEFILE = REPO / "Makefile"
CI_RUN = REPO / ".ci" / "run"


def circleci() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return data


def makefile_targets() -> set[str]:
    targets = set()
    for line in MAKEFILE.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_./$()-][^:=\s]*(?:\s+[^:=\s]+)*)\s*:(?![=:])", line)
        if match and not line.startswith("\t"):
            targets |= set(match.group(1).split())
    return targets


def make_calls(script: str) -> list[list[str]]:
    """The argument lists of every `make ...` command in a shell snippet (one command per line or `&&`)."""
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for word in [*lexer, ";"]:
            if set(word) <= set(";&|()"):  # an operator ends a simple command
                while command and re.fullmatch(r"\w+=.*", command[0]):  # VAR=value make ...
                    command = command[1:]
                if command and command[0] == "make":
                    calls.append(command[1:])
                command = []
            else:
                command.append(word)
    return calls


def run_scripts(steps: list[Any], commands: dict[str, Any]) -> list[str]:
    """Shell of every `run` step, reusable commands expanded (parameters left as written)."""
    out: list[str] = []
    for step in steps:
        name, body = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        if name == "run":
            out.append(body if isinstance(body, str) else body["command"])
        elif name in commands:
            out += run_scripts(commands[name]["steps"], commands)
    return out


def job_make_targets() -> dict[str, list[tuple[list[str], list[str]]]]:
    """job -> [(targets, variable assignments)] of its make calls."""
    cfg = circleci()
    out = {}
    for job, spec in cfg["jobs"].items():
        calls = []
        for script in run_scripts(spec["steps"], cfg.get("commands", {})):
            for args in make_calls(script):
                targets = [a for a in args if "=" not in a and not a.startswith("-")]
                calls.append((targets, [a for a in args if "=" in a]))
        out[job] = calls
    return out


def test_config_validates_against_circleci_schema() -> None:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema missing (pip install check-jsonschema)")
    out = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.circle-ci", str(CONFIG)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_job_calls_make_targets_that_exist() -> None:
    targets = makefile_targets()
    assert {"lint", "test-unit", "test-integration", "test", "deps", "fuzz"} <= targets  # the parser works
    for job, calls in job_make_targets().items():
        assert calls, f"job {job} calls no make target"
        for called, assignments in calls:
            assert called, f"job {job}: `make` without a target"
            assert set(called) <= targets, f"job {job} calls missing make targets {set(called) - targets}"
            # make itself agrees (dry run: prints the recipes, runs nothing)
            dry = subprocess.run(
                ["make", "-n", "-C", str(REPO), *called, *assignments], capture_output=True, text=True, timeout=60
            )
            assert dry.returncode == 0, f"job {job}: make -n {called}: {dry.stderr}"


def test_every_job_runs_in_the_workflow() -> None:
    cfg = circleci()
    in_workflows = set()
    for workflow in cfg["workflows"].values():
        for entry in workflow["jobs"]:
            name = entry if isinstance(entry, str) else next(iter(entry))
            in_workflows.add(name)
            requires = [] if isinstance(entry, str) else next(iter(entry.values())).get("requires", [])
            assert set(requires) <= set(cfg["jobs"]), (name, requires)
    assert in_workflows == set(cfg["jobs"])


def test_jobs_do_what_ci_run_does() -> None:
    text = CI_RUN.read_text()
    ci_run_targets = {args[0] for args in make_calls(re.sub(r"\btimed \w+ ", "", text)) if args}
    assert ci_run_targets >= {"venv", "deps", "lint", "test"}
    called = {t for calls in job_make_targets().values() for targets, _ in calls for t in targets}
    # every target .ci/run calls, except venv which every other target builds first
    assert ci_run_targets - {"venv"} <= called

    # .ci/run's `make test` runs every test; the jobs split it by marker: nothing may fall between the markers
    markers = set()
    for calls in job_make_targets().values():
        for targets, assignments in calls:
            if "test-unit" in targets:
                markers.add("unit")
            if "test-integration" in targets:
                markers.add("integration")
            for assignment in assignments:
                match = re.search(r"-m\s+(\w+)", assignment)
                if "test" in targets and match:
                    markers.add(match.group(1))
    assert markers == {"unit", "integration", "e2e"}
    unmarked = [str(path.relative_to(REPO)) for path in sorted((REPO / "tests").rglob("test_*.py"))
                if not module_markers(path) <= markers or not module_markers(path)]  # fmt: skip
    assert not unmarked, f"tests no CircleCI job selects (no {sorted(markers)} marker): {unmarked}"


def module_markers(path: Path) -> set[str]:
    """Markers a test module puts on all its tests: module-level ``pytestmark``, else the marker every test
    function carries (empty set: some test has none)."""
    tree = ast.parse(path.read_text())

    def marks(node: ast.AST) -> set[str]:
        return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Attribute) and n.value.attr == "mark"}  # fmt: skip

    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytestmark" for t in node.targets):
            found = marks(node.value) & {"unit", "integration", "e2e"}
            if found:
                return found
    tests = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    per_test = [
        set().union(*map(marks, fn.decorator_list)) & {"unit", "integration", "e2e"}
        for fn in tests
        if fn.name.startswith("test")
    ]
    return set().union(*per_test) if per_test and all(per_test) else set()


def test_apt_packages_include_what_ci_run_installs() -> None:
    text = CI_RUN.read_text()
    wanted = set(re.search(r"for p in ([^;]+); do", text).group(1).split())  # type: ignore[union-attr]
    wanted |= set(re.findall(r"need_apt\+=\(([\w.+-]+)\)", text))
    assert {"prometheus", "redis-server", "maven"} <= wanted  # the parser works
    installed = set()
    for script in run_scripts(circleci()["commands"]["system-packages"]["steps"], {}):
        for line in script.replace("\\\n", " ").splitlines():
            if "apt-get install" in line:
                installed |= {w for w in line.split("apt-get install", 1)[1].split() if not w.startswith("-")}
    assert wanted <= installed, f"missing in CircleCI: {wanted - installed}"
