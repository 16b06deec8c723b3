"""No secret reaches a process's argv (issue 18: "secrets never appear in ... process lists").

``/proc/<pid>/cmdline`` is readable by every user of the host, containers' processes included, so a password
given as a flag -- even one a shell reads from a secret file at start (``--sasl.password="$(cat ...)"``) -- is
published. Checked on the rendered compose.yaml of a stack with every service on and the bus secured
(``services.kafka_security: always``: the broker, the pool's and the exporter's SCRAM passwords):

* no secret file's content appears anywhere in compose.yaml;
* every ``$(cat /run/secrets/<s>)`` in a service's entrypoint, command or healthcheck is the whole value of a
  shell variable assignment (``NAME="$(cat ...)"``: into the environment, not an argument), except the one
  named exception below;
* the kafka-exporter in particular hands its password over as ``SASL_USER_PASSWORD`` (the variable
  kafka_exporter >= v1.9.0 reads when ``--sasl.password`` is empty) and has no ``--sasl.password`` flag, and the
  image pinned is one that reads it.

The exception: the broker's first start formats its storage with ``--add-scram`` arguments from
``kafka_scram_args`` (KIP-900 takes them only as arguments). They are salted credentials, not passwords, in a
process that lives only for that one format; documented in ansible/README.md (Traffic between hosts).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.deploy.config import load_config
from ckbpool.deploy.render import COMPOSE_SECRET_FILES, render_files
from ckbpool.deploy.target import Paths

pytestmark = pytest.mark.unit

#: secrets that may be expanded into an argv, and why (see the module docstring)
ARGV_EXCEPTIONS = {("kafka", "kafka_scram_args")}
_CAT = re.compile(r"\$\(cat\s+/run/secrets/([A-Za-z0-9_]+)\)")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    workspace = tmp_path_factory.mktemp("argv")
    config = workspace / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "-y", "--name", "argv", "--payouts", "--kafka", "--workspace", str(workspace)]
    )
    assert result.exit_code == 0, result.output + str(result.exception)
    cfg = load_config(config)
    cfg = cfg.model_copy(
        update={"services": cfg.services.model_copy(update={"proxy": True, "kafka_security": "always"})}
    )
    paths = Paths.of(config, cfg)
    text = render_files(cfg, paths)["compose/compose.yaml"]
    return yaml.safe_load(text), text, paths.secrets_dir


def _shell_texts(service: dict[str, Any]) -> list[str]:
    """What a service's processes run: entrypoint, command and healthcheck test, as strings ($$ -> $, as compose
    unescapes it)."""
    out: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value is not None:
            out += [value] if isinstance(value, str) else [str(v) for v in value]
    test = (service.get("healthcheck") or {}).get("test")
    if test is not None:
        out += [test] if isinstance(test, str) else [str(v) for v in test]
    return [t.replace("$$", "$") for t in out]


def argv_expansions(text: str) -> list[str]:
    """The secrets ``text`` (shell) expands with ``$(cat /run/secrets/<s>)`` anywhere but as the whole value of a
    variable assignment at the start of a simple command (``NAME="$(cat ...)"``, optionally after ``export``)."""
    bad = []
    for match in _CAT.finditer(text):
        before, after = text[: match.start()], text[match.end() :]
        assignment = re.search(r'(?:^|[;&|(\n])\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*="$', before)
        closed = after[:1] == '"' and after[1:2] in ("", " ", "\t", "\n", ";", "&", "|", ")")
        if assignment is None or not closed:
            bad.append(match.group(1))
    return bad


def test_the_checker_tells_an_argument_from_an_assignment() -> None:
    assert argv_expansions('exec x --sasl.password="$(cat /run/secrets/p)" --y') == ["p"]
    assert argv_expansions("x --add $(cat /run/secrets/s) >/dev/null") == ["s"]
    assert argv_expansions('A="$(cat /run/secrets/p)" && export A && exec x --y') == []
    assert argv_expansions('export A="$(cat /run/secrets/p)"; exec x') == []
    # an assignment prefixing a command: the environment of that one command, still not its argv
    assert argv_expansions('REDISCLI_AUTH="$(cat /run/secrets/p)" redis-cli ping') == []
    assert argv_expansions('x A="$(cat /run/secrets/p)"') == ["p"]  # an argument that looks like one


def test_no_secret_value_in_the_compose_file(rendered: tuple[dict[str, Any], str, Path]) -> None:
    _, text, secrets_dir = rendered
    values = []
    for file in sorted(set(COMPOSE_SECRET_FILES.values())):
        path = secrets_dir / file
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                # the long random tokens of each file (passwords, keys, salts): not words such as a principal's
                # name in kafka-scram.args (lower-case and dashes), which compose.yaml may well name
                values += [tok for tok in re.split(r"[\s\"',:=\[\]{}]+", line)
                           if len(tok) >= 16 and not re.fullmatch(r"[a-z-]+", tok)]  # fmt: skip
    assert len(values) > 10  # the secured stack's secrets were read: the check below can fail
    leaked = [v[:4] + "..." for v in values if v in text]
    assert not leaked, f"secret values in compose.yaml: {leaked}"


def test_no_password_is_expanded_into_an_argv(rendered: tuple[dict[str, Any], str, Path]) -> None:
    doc, _, _ = rendered
    assert {"kafka", "kafka-exporter", "redis", "pool"} <= set(doc["services"])
    found = {}
    for name, service in doc["services"].items():
        for text in _shell_texts(service):
            for secret in argv_expansions(text):
                found.setdefault(name, []).append(secret)
    unexpected = {(n, s) for n, secrets in found.items() for s in secrets} - ARGV_EXCEPTIONS
    assert not unexpected, f"secrets expanded into a process's arguments: {sorted(unexpected)}"


def test_the_kafka_exporter_gets_its_password_through_the_environment(
    rendered: tuple[dict[str, Any], str, Path],
) -> None:
    doc, _, _ = rendered
    exporter = doc["services"]["kafka-exporter"]
    script = " ".join(_shell_texts(exporter))
    assert "--sasl.password" not in script
    assert 'SASL_USER_PASSWORD="$(cat /run/secrets/kafka_exporter_password)"' in script
    assert re.search(r"export SASL_USER_PASSWORD\b", script)
    assert "--sasl.username=exporter" in script and "--sasl.enabled" in script
    # SASL_USER_PASSWORD arrived in v1.9.0 (danielqsj/kafka_exporter 0cacce4): an older pin would connect with
    # no password at all
    tag = exporter["image"].rsplit(":", 1)[-1].rstrip("}")
    version = tuple(int(x) for x in re.findall(r"\d+", tag)[:3])
    assert version >= (1, 9, 0), exporter["image"]


def test_the_hosts_target_stacks_keep_passwords_out_of_argv_too(tmp_path: Path) -> None:
    """The hosts target renders each host's stack from the same template, the bus secured because it crosses
    hosts (the exporter beside the broker on data-1, the pool on pool-1): the same checks on every host."""
    from ckbpool.deploy.hostfiles import Placement, host_plan

    config = tmp_path / "ckbpool.yaml"
    result = CliRunner().invoke(
        app, ["init", "-c", str(config), "-y", "--name", "hf", "--kafka", "--no-miner", "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    cfg = load_config(config)
    paths = Paths.of(config, cfg)
    groups = {"ckb_node": ["node-1"], "kafka": ["data-1"], "redis": ["data-1"], "pool": ["pool-1"],
              "monitoring": ["pool-1"]}  # fmt: skip
    addresses = {"node-1": "10.231.0.1", "data-1": "10.231.0.2", "pool-1": "10.231.0.3"}
    placement = Placement.from_inventory(cfg, groups, addresses)
    passwords = [p.read_text().strip() for p in paths.secrets_dir.glob("kafka-*.password")]
    assert len(passwords) >= 6
    checked = set()
    for host in addresses:
        plan = host_plan(cfg, placement, host, install_dir="/opt/ckbpool/hf", controller_secrets_dir=paths.secrets_dir)
        text = plan.files["compose/compose.yaml"]
        assert not [p[:4] for p in passwords if p in text], host
        for name, service in yaml.safe_load(text)["services"].items():
            for shell in _shell_texts(service):
                assert {(name, s) for s in argv_expansions(shell)} <= ARGV_EXCEPTIONS, (host, name)
            if name == "kafka-exporter":  # the secured exporter, not the plaintext one
                assert "SASL_USER_PASSWORD" in " ".join(_shell_texts(service)), host
            checked.add(name)
    assert {"kafka", "kafka-exporter", "pool"} <= checked
