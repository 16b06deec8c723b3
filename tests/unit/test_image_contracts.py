"""Each stand-in (docker/local/<name>.Dockerfile) declares the contract of the official image it replaces, as far as
the compose template relies on it (docker/local/README.md writes the contracts down with their upstream sources):
the user, the entrypoint/command, the paths the stack mounts, the ports, and every program the template's
healthcheck runs. The template side is checked too, so a new reliance (a tool, a volume path, the image's own
entrypoint) fails here until the contract and the stand-in cover it."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ckbpool.deploy.config import Images

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "docker" / "local"
TEMPLATE = ROOT / "src" / "ckbpool" / "templates" / "compose.yaml.j2"
README = LOCAL / "README.md"

#: programs every Debian base has (Essential: yes) -- the official images have them too (busybox, Alpine, Debian)
BASE_TOOLS = {"sh", "bash", "cat", "grep"}
#: a program the stand-in installs -> the Debian package that has it
TOOL_PACKAGES = {"wget": "wget", "redis-cli": "redis-tools", "pg_isready": "postgresql-15"}


@dataclass(frozen=True)
class Contract:
    image: str  # the Images field
    user: str  # the Dockerfile's USER
    uid: int | None  # the uid USER has in the official image, when the Dockerfile creates it
    entrypoint: list[str] | None
    cmd: list[str] | None
    paths: tuple[str, ...]  # directories and files of the official image the stack relies on
    tools: frozenset[str]  # what the compose healthcheck may run
    ports: tuple[int, ...]
    compose_entrypoint: list[str] | None = None  # the template replaces the image's entrypoint with this
    volumes: tuple[str, ...] = field(default_factory=tuple)  # container paths of the service's mounts
    uid_user: str | None = None  # the user of ``uid`` when it is not USER (an entrypoint that drops root)


#: stand-ins that are no image of the stack (no compose service, no Images field): what they stand for instead
NOT_STACK_IMAGES = {
    "pause": "the one-node test cluster's pod sandbox (tests/support/k8s.py, containerd's sandbox_image)",
}

CONTRACTS: dict[str, Contract] = {
    "kafka": Contract(
        image="kafka",
        user="appuser",
        uid=1000,
        entrypoint=None,
        cmd=["/etc/kafka/docker/run"],
        paths=(
            "/etc/kafka/docker/run",
            "/opt/kafka/bin/kafka-broker-api-versions.sh",
            "/opt/kafka/libs",
            "/opt/kafka/config",
            "/var/lib/kafka/data",
            "/etc/kafka/secrets",
            "/mnt/shared/config",
        ),
        # bash: the secured broker's healthcheck (a TCP connect to its CLIENT listener); the official image installs
        # it (Kafka's scripts need it), as the stand-in's Debian base has it
        tools=frozenset({"sh", "bash", "/opt/kafka/bin/kafka-broker-api-versions.sh"}),
        ports=(9092,),
        volumes=("/var/lib/kafka/data",),
    ),
    "ckb": Contract(
        image="ckb",
        user="ckb",
        uid=1000,
        entrypoint=["/bin/docker-entrypoint.sh"],
        cmd=None,
        paths=("/bin/ckb", "/bin/docker-entrypoint.sh", "/var/lib/ckb"),
        tools=frozenset({"bash"}),
        ports=(8114, 8115),
        compose_entrypoint=["ckb"],
        volumes=("/etc/ckb", "/var/lib/ckb"),
    ),
    "redis": Contract(
        image="redis",
        user="",
        uid=None,
        entrypoint=None,
        cmd=["redis-server"],
        paths=("/data", "/etc/redis", "/usr/local/bin/redis-server", "/usr/local/bin/redis-cli"),
        tools=frozenset({"sh", "cat", "grep", "redis-cli"}),
        ports=(6379,),
        compose_entrypoint=["redis-server"],
        volumes=("/etc/redis/redis.conf", "/data"),
    ),
    "prometheus": Contract(
        image="prometheus",
        user="nobody",
        uid=None,
        entrypoint=["/bin/prometheus"],
        cmd=["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"],
        paths=("/bin/prometheus", "/prometheus", "/etc/prometheus"),
        tools=frozenset({"wget"}),
        ports=(9090,),
        volumes=("/etc/prometheus", "/prometheus"),
    ),
    "node-exporter": Contract(
        image="node_exporter",
        user="nobody",
        uid=None,
        entrypoint=["/bin/node_exporter"],
        cmd=None,
        paths=("/bin/node_exporter",),
        tools=frozenset({"wget"}),
        ports=(9100,),
        volumes=("/host/proc", "/host/sys"),
    ),
    "redis-exporter": Contract(
        image="redis_exporter",
        user="59000:59000",
        uid=None,
        entrypoint=["/redis_exporter"],
        cmd=None,
        paths=("/redis_exporter",),
        tools=frozenset({"wget"}),
        ports=(9121,),
    ),
    "postgres": Contract(
        image="postgres",
        user="",  # the entrypoint starts as root and drops to postgres (999) itself
        uid=999,
        entrypoint=["docker-entrypoint.sh"],
        cmd=["postgres"],
        paths=("/var/lib/postgresql/data", "/var/run/postgresql", "/usr/lib/postgresql/15/bin", "docker-entrypoint.sh"),
        tools=frozenset({"pg_isready"}),
        ports=(5432,),
        volumes=("/var/lib/postgresql/data",),
        uid_user="postgres",
    ),
    "postgres-exporter": Contract(
        image="postgres_exporter",
        user="nobody",
        uid=None,
        entrypoint=["/bin/postgres_exporter"],
        cmd=None,
        paths=("/bin/postgres_exporter",),
        tools=frozenset({"wget"}),
        ports=(9187,),
    ),
}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            if word:
                out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def last(instrs: list[tuple[str, str]], name: str) -> str | None:
    values = [arg for word, arg in instrs if word == name]
    return values[-1] if values else None


def service_block(name: str) -> str:
    """The service's lines: up to the ``{%- endif %}`` of a conditional around the whole service, the next service or
    the next top-level key; conditionals inside the service (its variants) stay in the block."""
    text = TEMPLATE.read_text()
    start = re.search(rf"(?m)^(?:\{{\{{[^}}]*\}}\}})?  {re.escape(name)}:\s*$", text)
    assert start, f"no service {name} in {TEMPLATE.name}"
    lines, depth = [], 0
    for line in text[start.end() :].splitlines(keepends=True):
        if re.match(r"\{%-? if ", line):
            depth += 1
        elif re.match(r"\{%-? endif -?%\}\s*$", line):
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and re.match(r"(?:\{\{[^}]*\}\})?  [a-z][\w-]*:\s*$|[a-z]", line):
            break
        lines.append(line)
    return "".join(lines)


#: services whose secured variant (issue 18) replaces the image's entrypoint with bash -c, to prepare key files or
#: format storage before the image's own start; both official images ship bash
BASH_VARIANTS = frozenset({"kafka", "postgres"})


def variants(block: str) -> list[str]:
    """Every rendering of a service's inner ``{%- if %}`` / ``{%- else %}`` / ``{%- endif %}`` (one after another;
    none nests)."""
    match = re.search(r"(?ms)^\{%-? if [^%]*%\}\n(.*?)^\{%-? endif -?%\}\n?", block)
    if not match:
        return [block]
    parts = re.split(r"(?m)^\{%-? else -?%\}\n", match.group(1), maxsplit=1)
    yes, no = parts[0], parts[1] if len(parts) > 1 else ""
    before, after = block[: match.start()], block[match.end() :]
    return [v for part in (yes, no) for v in variants(before + part + after)]


def healthcheck_tools(block: str) -> set[str]:
    """The programs a service's healthcheck runs: CMD's first word, or each command of a CMD-SHELL line."""
    match = re.search(r'test: \["(CMD|CMD-SHELL)", ("(?:[^"\\]|\\.)*")', block)
    assert match, block
    first = json.loads(match.group(2))
    if match.group(1) == "CMD":
        return {first}
    command = first.replace("$$", "$")
    substituted = re.findall(r"\$\(([^)]*)\)", command)  # $(cat ...) runs a program too
    outer = re.sub(r"\$\([^)]*\)", "x", command)
    tools = {"sh"}
    for part in [*re.split(r"\||&&|;", outer), *substituted]:
        part = re.sub(r'^\s*(?:\w+=(?:"[^"]*"|\S+)\s+)*', "", part).strip()  # leading VAR=value assignments
        if part:
            tools.add(part.split()[0])
    return tools


def test_every_stand_in_has_a_contract_and_a_readme_section() -> None:
    names = {p.name.removesuffix(".Dockerfile") for p in LOCAL.glob("*.Dockerfile")}
    assert names - set(NOT_STACK_IMAGES) == set(CONTRACTS)
    readme = README.read_text()
    for name, contract in CONTRACTS.items():
        image = getattr(Images(), contract.image)
        assert f"## {image} — `{name}.Dockerfile`" in readme, f"README has no section for {image}"
        header = (LOCAL / f"{name}.Dockerfile").read_text()
        assert header.startswith(f"# Stand-in for {image} "), f"{name}.Dockerfile does not name the pin {image}"
        assert re.search(rf"(?m)^# upstream: {re.escape(image)} -- https://github\.com/", header), name


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_stand_in_declares_the_contract(name: str) -> None:
    contract = CONTRACTS[name]
    dockerfile = LOCAL / f"{name}.Dockerfile"
    text = dockerfile.read_text()
    instrs = instructions(dockerfile)
    assert (last(instrs, "USER") or "") == contract.user
    if contract.uid is not None:
        user = contract.uid_user or contract.user
        assert re.search(rf"useradd [^&]*-u {contract.uid}\b[^&]* {user}\b", text), "uid of " + user
    for word, expected in (("ENTRYPOINT", contract.entrypoint), ("CMD", contract.cmd)):
        value = last(instrs, word)
        assert (json.loads(value) if value else None) == expected, word
    for path in contract.paths:
        assert path in text, f"{name}.Dockerfile does not provide {path}"
    exposed = {int(p) for arg in (a for w, a in instrs if w == "EXPOSE") for p in arg.split()}
    assert exposed == set(contract.ports)
    apt = " ".join(a for w, a in instrs if w == "RUN")
    for tool in contract.tools:
        if tool.startswith("/"):
            assert tool in text, f"{name}: healthcheck program {tool} is not in the image"
        elif tool not in BASE_TOOLS:
            assert re.search(rf"apt-get install[^&]* {TOOL_PACKAGES[tool]}\b", apt), f"{name}: {tool} not installed"


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_template_relies_on_nothing_outside_the_contract(name: str) -> None:
    contract = CONTRACTS[name]
    for block in variants(service_block(name)):
        expected = contract
        if name in BASH_VARIANTS and '    entrypoint: ["bash", "-c"]' in block:
            expected = dataclasses.replace(contract, compose_entrypoint=["bash", "-c"])
        image_ref = f"${{CKBPOOL_IMAGE_{name.upper().replace('-', '_')}:-{{{{ cfg.images.{expected.image} }}}}}}"
        assert image_ref in block
        assert healthcheck_tools(block) <= expected.tools, "the healthcheck runs a program the contract does not list"
        entrypoint = re.search(r"(?m)^    entrypoint: (\[.*\])$", block)
        assert (json.loads(entrypoint.group(1)) if entrypoint else None) == expected.compose_entrypoint
        mounts = re.findall(r"(?m)^      - [^\s:]+:(/[^\s:]*)", block)
        assert set(mounts) == set(expected.volumes)


def test_kafka_heap_and_healthcheck_are_the_official_images() -> None:
    """compose sets one heap for both images; the stand-in's defaults without it are upstream's (broker 1G,
    tools 256M), and its healthcheck tool runs the class upstream's script runs."""
    block = service_block("kafka")
    assert re.search(r'(?m)^      KAFKA_HEAP_OPTS: "-Xmx\d+[mg] -Xms\d+[mg]"$', block)
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in block
    run = (LOCAL / "kafka-run.sh").read_text()
    assert 'KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx1G -Xms1G}"' in run
    assert "exec /opt/kafka/bin/kafka-run-class.sh kafka.Kafka" in run
    assert 'heap="${KAFKA_HEAP_OPTS:--Xmx256M}"' in (LOCAL / "kafka-run-class.sh").read_text()
    tool = (LOCAL / "kafka-broker-api-versions.sh").read_text()
    assert "kafka-run-class.sh org.apache.kafka.tools.BrokerApiVersionsCommand" in tool
