""".circleci/config.yml: valid against CircleCI's JSON schema (check-jsonschema's vendored copy), every job calls
make targets that exist in the Makefile, and together the jobs do what .ci/run does (same make targets, same apt
packages, every test selected by some job).

The image jobs call the product instead of make: ``ckbpool image build|push`` from a fresh venv holding the wheel
built from the checkout (never the editable .venv). Pushing needs a registry login, which comes from a CircleCI
context, happens on git tags only, and hands the pushed digest to the compose e2e through the workspace; no
credential is written in the file."""

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


def simple_commands(script: str) -> list[list[str]]:
    """The words of every simple command in a shell snippet (one command per line, or between `&&`, `|`, `;`),
    leading ``VAR=value`` assignments dropped."""
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
                if command:
                    calls.append(command)
                command = []
            else:
                command.append(word)
    return calls


def make_calls(script: str) -> list[list[str]]:
    """The argument lists of every `make ...` command in a shell snippet."""
    return [command[1:] for command in simple_commands(script) if command[0] == "make"]


def run_scripts(steps: list[Any], commands: dict[str, Any], params: dict[str, Any] | None = None) -> list[str]:
    """Shell of every `run` step, reusable commands and `when` blocks expanded, ``<< parameters.x >>`` filled in
    with the arguments of the command's invocation (or the parameter's default; unknown ones left as written)."""
    out: list[str] = []
    for step in steps:
        name, body = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        if name == "run":
            script = body if isinstance(body, str) else body["command"]
            out.append(fill_parameters(script, params or {}))
        elif name in ("when", "unless"):
            out += run_scripts(body["steps"], commands, params)
        elif name in commands:
            declared = commands[name].get("parameters", {})
            args = {key: spec["default"] for key, spec in declared.items() if "default" in spec}
            args |= {key: fill_parameters(str(value), params or {}) for key, value in (body or {}).items()}
            out += run_scripts(commands[name]["steps"], commands, args)
    return out


def fill_parameters(text: str, params: dict[str, Any]) -> str:
    return re.sub(r"<<\s*parameters\.([\w-]+)\s*>>", lambda m: str(params.get(m.group(1), m.group(0))), text)


def job_scripts() -> dict[str, list[str]]:
    """job -> the shell of its run steps (commands expanded, parameters filled in)."""
    cfg = circleci()
    return {job: run_scripts(spec["steps"], cfg.get("commands", {})) for job, spec in cfg["jobs"].items()}


def job_make_targets() -> dict[str, list[tuple[list[str], list[str]]]]:
    """job -> [(targets, variable assignments)] of its make calls."""
    out = {}
    for job, scripts in job_scripts().items():
        calls = []
        for script in scripts:
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
    image_jobs = {job for job, scripts in job_scripts().items() if image_calls(scripts)}
    assert {"image", "image-push"} <= image_jobs  # the parser works
    for job, calls in job_make_targets().items():
        if job in image_jobs:  # checked by test_image_jobs_run_ckbpool_image_from_the_built_wheel
            assert not calls, f"job {job} runs the installed wheel: make would build the checkout's editable .venv"
            continue
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


def test_the_integration_job_keeps_the_browser_test_artifacts() -> None:
    """The miners' page test writes its screenshots and network log under ``$CKBPOOL_ARTIFACTS`` (default
    build/artifacts, relative to the checkout): every job that runs the integration tests stores that directory
    as artifacts, also when the tests failed (when they are most needed)."""
    source = (REPO / "tests" / "integration" / "test_web_browser.py").read_text()
    default = re.search(r'os\.environ\.get\("CKBPOOL_ARTIFACTS", "([^"]+)"\)', source)
    assert default, "test_web_browser.py no longer says where its artifacts go"
    cfg = circleci()
    runners = set()
    for job, calls in job_make_targets().items():
        for targets, assignments in calls:
            marker = re.search(r"-m\s+(\w+)", " ".join(assignments))
            if "test-integration" in targets or ("test" in targets and (marker is None or marker[1] == "integration")):
                runners.add(job)
    assert "integration" in runners  # the parser works
    for job in runners:
        env = {**cfg["jobs"][job].get("environment", {})}
        where = env.get("CKBPOOL_ARTIFACTS", default.group(1))
        stored = steps_named(cfg["jobs"][job], "store_artifacts")
        assert any(body["path"] == where for body in stored), f"{job} runs the browser test but keeps no {where}"
        assert all(body.get("when") == "always" for body in stored if body["path"] == where), (
            f"{job}: {where} is stored only when the job passes"
        )


#: the `ckbpool image` subcommands a job may call, and the options it may pass them
IMAGE_COMMANDS = {"build": {"--tag", "--base", "--ca-bundle"}, "push": {"--to", "--tag"}}


def image_calls(scripts: list[str]) -> list[list[str]]:
    """Every ``ckbpool image ...`` command of the scripts, whatever path the ``ckbpool`` is called by."""
    commands = (c for script in scripts for c in simple_commands(script))
    return [c for c in commands if Path(c[0]).name == "ckbpool" and c[1:2] == ["image"]]


def option_value(command: list[str], *names: str) -> str | None:
    for i, word in enumerate(command):
        if word in names and i + 1 < len(command):
            return command[i + 1]
        for name in names:
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def steps_named(job: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The bodies of a job's steps called ``name`` (inside `when` blocks too)."""
    found: list[dict[str, Any]] = []
    for step in job["steps"]:
        key, body = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        if key == name:
            found.append(body or {})
        elif key in ("when", "unless"):
            found += steps_named(body, name)
    return found


def test_image_jobs_run_ckbpool_image_from_the_built_wheel() -> None:
    """`ckbpool image` runs from a fresh venv holding the wheel of the checkout (pip wheel / python -m build),
    never from the editable .venv, on a machine executor (Docker); a job that did not build the wheel gets it
    through the workspace of the job that did."""
    cfg = circleci()
    scripts = job_scripts()
    wheel_dirs: dict[str, str] = {}  # job -> where it builds the wheel
    for job, job_scripts_ in scripts.items():
        for command in (c for script in job_scripts_ for c in simple_commands(script)):
            if Path(command[0]).name.startswith("pip") and command[1:2] == ["wheel"] and "." in command:
                wheel_dirs[job] = option_value(command, "--wheel-dir", "-w") or "."
            if command[1:3] == ["-m", "build"]:
                wheel_dirs[job] = option_value(command, "--outdir", "-o") or "dist"
    assert wheel_dirs, "no job builds the ckbpool wheel (pip wheel . / python -m build)"
    subcommands = set()
    for job, job_scripts_ in scripts.items():
        calls = image_calls(job_scripts_)
        if not calls:
            continue
        spec = cfg["jobs"][job]
        assert "machine" in spec or "machine" in cfg["executors"][spec["executor"]], f"{job}: Docker needs a machine"
        commands = [c for script in job_scripts_ for c in simple_commands(script)]
        venvs = {c[c.index("venv") + 1] for c in commands if c[1:3] == ["-m", "venv"]}
        for call in calls:
            subcommands.add(call[2])
            assert call[2] in IMAGE_COMMANDS, f"{job}: unknown `ckbpool image {call[2]}`"
            unknown = {word.split("=")[0] for word in call[3:] if word.startswith("--")} - IMAGE_COMMANDS[call[2]]
            assert not unknown, f"{job}: `ckbpool image {call[2]}` has no {unknown}"
            venv = str(Path(call[0]).parent.parent)
            assert Path(call[0]).parent.name == "bin" and venv in venvs, f"{job}: {call[0]} is not in a venv it made"
            assert Path(venv).name != ".venv", f"{job}: {call[0]} is the checkout's editable install"
            installs = [c for c in commands if c[0] == f"{venv}/bin/pip" and c[1:2] == ["install"]]
            assert installs, f"{job}: nothing is installed into {venv}"
            for install in installs:
                assert not {"-e", "--editable"} & set(install), f"{job}: editable install into {venv}"
                wheels = [word for word in install[2:] if not word.startswith("-")]
                assert wheels and all(w.endswith(".whl") for w in wheels), f"{job}: {install} installs no wheel"
                wheel_dir = str(Path(wheels[0]).parent)
                if job in wheel_dirs:
                    assert wheel_dirs[job] == wheel_dir, f"{job}: installs {wheel_dir}, builds {wheel_dirs[job]}"
                else:  # the wheel comes through the workspace from the job that built it
                    attached = [body["at"] for body in steps_named(spec, "attach_workspace")]
                    persisted = [f"{body['root']}/{path}" for builder in wheel_dirs
                                 for body in steps_named(cfg["jobs"][builder], "persist_to_workspace")
                                 for path in body["paths"]]  # fmt: skip
                    assert any(wheel_dir.startswith(root) for root in attached), f"{job}: {wheel_dir} not attached"
                    assert any(wheel_dir.startswith(path) for path in persisted), f"{job}: nobody persists {wheel_dir}"
    assert subcommands == {"build", "push"}


def test_ckbpool_image_options_exist_in_the_cli() -> None:
    """The options the jobs pass are the CLI's own (IMAGE_COMMANDS above is checked against `--help`)."""
    from typer.testing import CliRunner

    from ckbpool.cli.app import app

    for sub, options in IMAGE_COMMANDS.items():
        result = CliRunner().invoke(app, ["image", sub, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        if result.exit_code != 0 and "No such command" in result.output:
            pytest.skip("this ckbpool has no `image` command yet")
        assert result.exit_code == 0, result.output
        for option in options:
            assert option in result.output, f"`ckbpool image {sub}` has no {option}"


#: environment keys that name a credential, and the shapes of well-known credentials and of user:password URLs
SECRET_KEY = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH", re.I)
SECRET_VALUE = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|\bgh[opsur]_\w{30,}|github_pat_\w{20,}|glpat-[\w-]{20,}"
    r"|dckr_pat_[\w-]{20,}|xox[abpr]-[\w-]{10,}|://[^/\s:@'\"$]+:[^/\s@'\"$]+@"
)


def credential_problems(cfg: dict[str, Any], text: str, scripts: list[str]) -> list[str]:
    problems = [f"credential-looking text {m.group(0)[:10]!r}..." for m in SECRET_VALUE.finditer(text)]

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "environment" and isinstance(value, dict):
                    problems.extend(f"{where}.environment.{k}: set in the file" for k in value if SECRET_KEY.search(k))
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(cfg, "")
    for command in (c for script in scripts for c in simple_commands(script)):
        login = Path(command[0]).name == "docker" and command[1:2] == ["login"]
        if login and ("--password-stdin" not in command or {"-p", "--password"} & set(command)):
            problems.append(f"`{' '.join(command)}`: the password goes in on stdin (--password-stdin)")
    return problems


def test_no_credentials_in_the_file() -> None:
    bad = {"jobs": {"x": {"environment": {"REGISTRY_PASSWORD": "hunter2"}}}}
    bad_text = "https://bot:hunter2@registry.example.com " + "AKIA" + "IOSFODNN7EXAMPLE"
    assert len(credential_problems(bad, bad_text, ["docker login -u bot -p hunter2 registry.example.com"])) == 4
    cfg = circleci()
    scripts = [script for job in job_scripts().values() for script in job]
    assert any("--password-stdin" in script for script in scripts)  # the parser works: there is a login
    assert credential_problems(cfg, CONFIG.read_text(), scripts) == []
    # the credentials come from a context: every job that reads them gets one in every workflow
    for job, job_scripts_ in job_scripts().items():
        if any(re.search(r"\$\{?REGISTRY_(USER|PASSWORD)", script) for script in job_scripts_):
            for entry in workflow_entries(cfg).get(job, []):
                assert entry.get("context"), f"{job} reads the registry login but gets no context"


def workflow_entries(cfg: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """job -> its entries (the settings: requires, filters, context) in every workflow."""
    out: dict[str, list[dict[str, Any]]] = {}
    for workflow in cfg["workflows"].values():
        for entry in workflow["jobs"]:
            name, body = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            out.setdefault(name, []).append(body or {})
    return out


def as_list(value: Any) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def on_tags(entry: dict[str, Any]) -> bool:
    """Whether a workflow entry runs for git tags (CircleCI's default: never)."""
    return bool(as_list(entry.get("filters", {}).get("tags", {}).get("only")))


def tags_only(entry: dict[str, Any]) -> bool:
    return on_tags(entry) and "/.*/" in as_list(entry["filters"].get("branches", {}).get("ignore"))


def needs(entries: dict[str, dict[str, Any]], name: str) -> set[str]:
    """Every job ``name`` waits for, directly or not."""
    direct = set(as_list(entries[name].get("requires")))
    return direct.union(*(needs(entries, r) for r in direct))


def test_push_runs_on_tags_only_after_every_test_job() -> None:
    """CircleCI runs a job for a tag only when its filters name tags, and a job only when all it requires ran:
    the jobs that log in to the registry or push run for tags only (every branch ignored), everything they need
    runs for tags too, and nothing is pushed before every other job of the workflow is green."""
    cfg = circleci()
    scripts = job_scripts()
    registry = {job for job, lines in scripts.items() if re.search(r"docker (login|push)|image push", "".join(lines))}
    assert {"image-push", "compose-e2e-pushed"} <= registry  # the parser works
    for workflow in cfg["workflows"].values():
        entries = {}
        for entry in workflow["jobs"]:
            name, body = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            entries[name] = body or {}
        for name, entry in entries.items():
            if name in registry:
                assert tags_only(entry), f"{name} must run for git tags only (filters: branches: ignore: /.*/)"
                assert entry.get("context"), f"{name} logs in without a context"
            if on_tags(entry):
                missing = {r for r in needs(entries, name) if not on_tags(entries[r])}
                assert not missing, f"{name} runs on tags but needs {missing}, which never run on tags"
            if any(tags_only(entries[r]) for r in needs(entries, name)):
                assert tags_only(entry), f"{name} needs a tags-only job: it is tags-only itself"
            if any("ckbpool image push" in script for script in scripts[name]):
                untested = {j for j in entries if not tags_only(entries[j])} - needs(entries, name)
                assert not untested, f"{name} pushes without waiting for {untested}"


def test_compose_e2e_runs_against_the_pushed_digest() -> None:
    """The job that sets CKBPOOL_E2E_POOL_IMAGE runs the compose e2e (make test -m e2e), after the push, from the
    digest file the push job persisted in the workspace."""
    cfg = circleci()
    scripts = job_scripts()
    pushers = {job for job, s in scripts.items() if any("ckbpool image push" in x for x in s)}
    e2e = {job for job, s in scripts.items() if any("CKBPOOL_E2E_POOL_IMAGE" in x for x in s)}
    assert pushers and e2e
    entries = workflow_entries(cfg)
    for job in e2e:
        tests = [(targets, assignments) for targets, assignments in job_make_targets()[job] if "test" in targets]
        assert tests and all(re.search(r"-m\s+e2e\b", " ".join(a)) for _, a in tests), f"{job}: no make test -m e2e"
        assert not any("test_" in " ".join(a) and "test_compose.py" not in " ".join(a) for _, a in tests)
        assert steps_named(cfg["jobs"][job], "attach_workspace"), f"{job} does not attach the workspace"
        for entry in entries[job]:
            assert pushers & set(as_list(entry.get("requires"))), f"{job} does not wait for the push"
        persisted = [
            f"{body['root']}/{path}"
            for pusher in pushers
            for body in steps_named(cfg["jobs"][pusher], "persist_to_workspace")
            for path in body["paths"]
        ]
        assert persisted, "the push job persists nothing"
        assert any(path in script for path in persisted for script in scripts[job]), f"{job} reads no pushed digest"


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
