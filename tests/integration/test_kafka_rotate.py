"""``ckbpool keys rotate kafka`` against a running secured broker (issue 18: credentials "rotated by a command").

A real Kafka 4.x broker with SASL_SSL + SCRAM-SHA-512, its users formatted from the passwords ``ckbpool.deploy.pki``
generated, the deployment's ACLs. The command, run as the operator runs it (the CLI, on the deployment's secrets
directory), rotates ``stratum`` and ``admin``:

* the broker takes the new credentials through the admin API: the old stratum password is refused, a producer
  started with the new file publishes, and the new admin password creates ACLs while the old one is refused;
* a stratum producer that connected *before* the rotation still publishes after it (SCRAM is checked when a
  connection authenticates): the window a rotation leaves is "no new connection with the old file", not an outage;
* the files: the password files replaced, no ``.pending`` left, ``kafka-scram.args`` re-salted for the rotated
  principals only (a broker formatted anew would accept the new passwords) and nothing else touched;
* a rotation whose broker is unreachable changes no file (the passwords stay staged) and the retry completes it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckbpool.bus import BusUnavailable, Share, Topic, create_bus
from ckbpool.bus.kafka import KafkaBus
from ckbpool.cli.app import app
from ckbpool.deploy import pki
from ckbpool.deploy.kafka_security import acl_bindings, apply_acls
from support.kafka import SecureKafkaBroker, free_port, running_secure_broker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafkaBroker]:
    yield from running_secure_broker(tmp_path_factory)


def url(kafka: SecureKafkaBroker, principal: str, prefix: str, password_file: Path | None = None) -> str:
    params = {"topic_prefix": prefix, "spool_dir": "none", "create_topics": "0", "publish_timeout": "5",
              "connect_timeout": "10", "close_timeout": "3", "client_id": f"{principal}-rotate"}  # fmt: skip
    out = kafka.url(principal, **params)
    if password_file is not None:
        out = out.replace(str(kafka.password_file(principal)), str(password_file))
    return out


def share(n: int) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user="alice", worker="rig", job_id=1, height=100, nonce=n,
        share_target=1 << 240, share_difficulty=2.0, accepted=True, reason="", is_block=False, block_hash=b"",
        timestamp=time.time(), source="stratum-rotate", seq=n,
    )  # fmt: skip


def scram_entries(secrets_dir: Path) -> dict[str, str]:
    text = (secrets_dir / pki.KAFKA_SCRAM_ARGS).read_text()
    return {m.group(1): m.group(0) for m in re.finditer(r"SCRAM-SHA-512=\[name=([a-z0-9_-]+),[^\]]*\]", text)}


async def rotate(kafka: SecureKafkaBroker, *principals: str, bootstrap: str | None = None) -> tuple[int, str]:
    """The CLI as the operator runs it (in a thread: it runs its own event loop)."""
    args = ["keys", "rotate", "kafka", "--bootstrap", bootstrap or kafka.bootstrap,
            "--secrets-dir", str(kafka.secrets_dir), "--timeout", "5"]  # fmt: skip
    for p in principals:
        args += ["--principal", p]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    return result.exit_code, result.output  # stdout and stderr


async def test_rotation_reaches_the_running_broker(kafka: SecureKafkaBroker, tmp_path: Path) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    assert await kafka.grant(topic_prefix=prefix) > 0
    async with create_bus(kafka.url("admin", topic_prefix=prefix, spool_dir="none")) as admin:
        assert isinstance(admin, KafkaBus)
        await admin.ensure_topics()
    assert pki.ensure_scram_format_file(kafka.secrets_dir, kafka.principals)
    before_args = scram_entries(kafka.secrets_dir)
    old = {p: tmp_path / f"old-{p}.password" for p in ("stratum", "admin", "jobmaker")}
    for p, path in old.items():
        shutil.copy(kafka.password_file(p), path)

    # an unreachable broker: the command fails, no file changes, the passwords stay staged
    code, output = await rotate(kafka, "stratum", "admin", bootstrap=f"127.0.0.1:{free_port()}")
    assert code == 1 and "nothing was replaced" in output, output
    for p in ("stratum", "admin"):
        assert kafka.password_file(p).read_bytes() == old[p].read_bytes()
        assert (kafka.secrets_dir / pki.pending_password_file(p)).exists()
    staged = pki.read_password(kafka.secrets_dir, "stratum")  # still the old one: nothing committed
    assert staged == old["stratum"].read_text().strip()

    async with create_bus(url(kafka, "stratum", prefix)) as connected_before:
        await connected_before.publish(Topic.SHARES, share(1))

        code, output = await rotate(kafka, "stratum", "admin")
        assert code == 0, output
        assert "kafka-stratum.password" in output and "kafka-admin.password" in output
        # the established connection outlives the rotation: the window is new connections only
        await connected_before.publish(Topic.SHARES, share(2))
        assert connected_before.stats()["published"] == 2

    new = {p: pki.read_password(kafka.secrets_dir, p) for p in ("stratum", "admin")}
    assert not list(kafka.secrets_dir.glob("*.pending"))
    for p in ("stratum", "admin"):
        assert new[p] != old[p].read_text().strip()
    assert pki.read_password(kafka.secrets_dir, "jobmaker") == old["jobmaker"].read_text().strip()
    for password in new.values():
        assert password not in output

    # the broker: the old stratum password refused, the new file publishes
    with pytest.raises(BusUnavailable, match="refused the credentials of principal 'stratum'"):
        await create_bus(url(kafka, "stratum", prefix, old["stratum"])).start()
    async with create_bus(url(kafka, "stratum", prefix)) as stratum:
        await stratum.publish(Topic.SHARES, share(3))
        assert stratum.stats()["published"] == 1
    async with create_bus(url(kafka, "accounting", prefix)) as acct:  # all three shares are there
        sub = acct.subscribe(Topic.SHARES, "accounting")
        await sub.wait_ready(60)
        seen: set[int] = set()
        async with asyncio.timeout(30):
            while len(seen) < 3:
                seen |= {s.nonce for s in await sub.next_batch(10, 1.0) if isinstance(s, Share)}
        assert seen == {1, 2, 3}
    # ... the unrotated jobmaker still authenticates with its unchanged file
    async with create_bus(url(kafka, "jobmaker", prefix)) as jobmaker:
        assert jobmaker.stats()["refused"] == 0
    # admin: the new password works on the admin API, the old one is refused
    assert await apply_acls(kafka.url("admin"), acl_bindings({"stratum": ("stratum",)}, topic_prefix=prefix)) > 0
    with pytest.raises(BusUnavailable, match="refused the credentials of principal 'admin'"):
        await create_bus(url(kafka, "admin", prefix, old["admin"])).start()

    # kafka-scram.args: re-salted for the two rotated users, the others byte for byte
    after_args = scram_entries(kafka.secrets_dir)
    assert set(after_args) == set(before_args)
    assert {p for p in after_args if after_args[p] != before_args[p]} == {"stratum", "admin"}
    for p in ("stratum", "admin"):
        m = re.search(r'iterations=(\d+),salt="([^"]+)",saltedpassword="([^"]+)"', after_args[p])
        assert m is not None
        cred = pki.scram_credential(new[p], salt=base64.b64decode(m.group(2)), iterations=int(m.group(1)))
        assert base64.b64decode(m.group(3)) == cred.salted_password
