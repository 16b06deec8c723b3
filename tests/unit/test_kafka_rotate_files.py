"""The files of a Kafka password rotation (``ckbpool.deploy.pki``; the broker side is
tests/integration/test_kafka_rotate.py): staged passwords survive a failed attempt and are reused, commit moves
exactly the staged ones, ``kafka-scram.args`` is re-salted for the rotated users only, and a file that is not
ckbpool's list is refused rather than rewritten."""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest

from ckbpool.deploy import pki
from ckbpool.deploy.errors import SecretsError

pytestmark = pytest.mark.unit

PRINCIPALS = ("admin", "stratum", "jobmaker")


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    pki.generate_kafka_secrets(tmp_path, {"b1": ["10.0.0.1"]}, PRINCIPALS)
    assert pki.ensure_scram_format_file(tmp_path, PRINCIPALS)
    return tmp_path


def test_staged_passwords_are_reused_until_committed(secrets: Path) -> None:
    before = {p: pki.read_password(secrets, p) for p in PRINCIPALS}
    first = pki.stage_passwords(secrets, ["stratum"])
    pending = secrets / pki.pending_password_file("stratum")
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert pki.read_password(secrets, "stratum") == before["stratum"]  # nothing live changed yet
    assert pki.stage_passwords(secrets, ["stratum"]) == first  # a retry sends the same password again
    assert first["stratum"] != before["stratum"]
    assert pki.commit_passwords(secrets, ["stratum", "jobmaker"]) == ["kafka-stratum.password"]  # only staged
    assert not pending.exists()
    assert pki.read_password(secrets, "stratum") == first["stratum"]
    assert pki.read_password(secrets, "jobmaker") == before["jobmaker"]
    assert stat.S_IMODE((secrets / pki.password_file("stratum")).stat().st_mode) == 0o600


def _entries(secrets: Path) -> dict[str, str]:
    text = (secrets / pki.KAFKA_SCRAM_ARGS).read_text()
    return {m.group(1): m.group(0) for m in re.finditer(r"SCRAM-SHA-512=\[name=([a-z0-9_-]+),[^\]]*\]", text)}


def test_the_format_file_is_resalted_for_the_rotated_users_only(secrets: Path) -> None:
    before = _entries(secrets)
    pki.stage_passwords(secrets, ["stratum"])
    pki.commit_passwords(secrets, ["stratum"])
    assert pki.refresh_scram_format_file(secrets, ["stratum"])
    after = _entries(secrets)
    assert {p for p in PRINCIPALS if after[p] != before[p]} == {"stratum"}
    m = re.search(r'iterations=(\d+),salt="([^"]+)",saltedpassword="([^"]+)"', after["stratum"])
    assert m is not None
    expected = pki.scram_credential(
        pki.read_password(secrets, "stratum"), salt=base64.b64decode(m.group(2)), iterations=int(m.group(1))
    )
    assert base64.b64decode(m.group(3)) == expected.salted_password
    assert stat.S_IMODE((secrets / pki.KAFKA_SCRAM_ARGS).stat().st_mode) == 0o600


def test_no_format_file_is_nothing_to_refresh(tmp_path: Path) -> None:
    pki.generate_kafka_secrets(tmp_path, {"b1": ["10.0.0.1"]}, ["stratum"])
    assert not pki.refresh_scram_format_file(tmp_path, ["stratum"])
    assert not (tmp_path / pki.KAFKA_SCRAM_ARGS).exists()


def test_a_foreign_format_file_is_refused(secrets: Path) -> None:
    (secrets / pki.KAFKA_SCRAM_ARGS).write_text("--add-scram SCRAM-SHA-512=[name=x] --other y\n")
    with pytest.raises(SecretsError, match="not the --add-scram list"):
        pki.refresh_scram_format_file(secrets, ["stratum"])


def test_a_bad_principal_name_writes_nothing(secrets: Path) -> None:
    with pytest.raises(SecretsError, match="principal name"):
        pki.stage_passwords(secrets, ["../etc"])
    assert not list(secrets.glob("*.pending"))
