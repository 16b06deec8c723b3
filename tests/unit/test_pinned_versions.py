"""The Kafka the tests run is the Kafka the stack deploys: one version, written once in deps/kafka/pom.xml, equal to
the tag of the pinned image (config's Images.kafka, the role's btcpool_images.kafka, the stand-in's header and its
section in docker/local/README.md). scripts/kafka-deps.sh, tests/support/kafka.py and tests/e2e/images.py read the
pom, never a version of their own."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from ckbpool.deploy.config import Images

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
POM = ROOT / "deps" / "kafka" / "pom.xml"
VERSION_LIKE = re.compile(r"(?<![\d.])\d+\.\d+\.\d+(?![\d.])")  # x.y.z, not part of an address


def pom_kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert match, f"no <kafka.version> in {POM}"
    return match.group(1).strip()


def image_tag(image: str) -> str:
    return image.rpartition(":")[2]


def test_pinned_kafka_image_is_the_version_of_the_test_jars() -> None:
    image = Images().kafka
    assert image.startswith("apache/kafka:"), image
    assert image_tag(image) == pom_kafka_version(), (
        f"Images.kafka is {image} but deps/kafka/pom.xml fetches Kafka {pom_kafka_version()} for the tests"
    )


def test_role_default_kafka_image_is_the_same_pin() -> None:
    defaults = yaml.safe_load((ROOT / "ansible" / "roles" / "btcpool" / "defaults" / "main.yml").read_text())
    assert defaults["btcpool_images"]["kafka"] == Images().kafka


def test_kafka_deps_script_takes_the_version_from_the_pom() -> None:
    script = (ROOT / "scripts" / "kafka-deps.sh").read_text()
    assert "<kafka.version>" in script and 'POM="$ROOT/deps/kafka/pom.xml"' in script
    assert 'LIBS="$CACHE/kafka-$VERSION/libs"' in script
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    assert not VERSION_LIKE.findall(code), "scripts/kafka-deps.sh must not name a Kafka version of its own"


def test_test_support_runs_the_pom_version() -> None:
    from support import kafka

    assert kafka.POM == POM
    assert kafka.kafka_version() == pom_kafka_version()
    code = Path(kafka.__file__).read_text()
    assert not VERSION_LIKE.findall(code), "tests/support/kafka.py must not name a Kafka version"


def test_stand_in_image_is_built_from_the_pom_version_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("e2e_images", ROOT / "tests" / "e2e" / "images.py")
    assert spec and spec.loader
    images = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(images)
    libs = tmp_path / f"kafka-{pom_kafka_version()}" / "libs"
    libs.mkdir(parents=True)
    (libs / ".complete").write_text("pom x\n")
    (tmp_path / "kafka-9.9.9" / "libs").mkdir(parents=True)  # another version left in the cache is not picked
    monkeypatch.setenv("CKBPOOL_CACHE", str(tmp_path))
    assert images.kafka_libs() == libs


def test_stand_in_and_its_contract_name_the_pinned_tag() -> None:
    image = Images().kafka
    header = (ROOT / "docker" / "local" / "kafka.Dockerfile").read_text()
    assert f"# Stand-in for {image} " in header
    assert f"https://github.com/apache/kafka/tree/{image_tag(image)}/docker" in header
    readme = (ROOT / "docker" / "local" / "README.md").read_text()
    assert f"## {image} — `kafka.Dockerfile`" in readme
    assert f"https://github.com/apache/kafka/tree/{image_tag(image)}/docker" in readme


def test_the_pom_has_the_jars_of_the_healthcheck_tool() -> None:
    """The stand-in's kafka-broker-api-versions.sh runs the real tool class, which lives in kafka-tools."""
    pom = POM.read_text()
    assert "<artifactId>kafka-tools</artifactId>" in pom
