"""The Kafka bus secured as between hosts (issue 18 item 1): a real Kafka 4.x broker with SASL_SSL (SCRAM-SHA-512)
for clients, TLS with client certificates between broker and controller, the StandardAuthorizer denying by
default, and the ACLs of ``ckbpool.deploy.kafka_security`` created through the admin API -- all from the
credentials ``ckbpool.deploy.pki`` generates.

- each role's principal does its job end to end: template (jobmaker) -> stratum -> shares -> accounting into a
  real Redis, found block -> block maker -> outcome -> accounting;
- a principal writing a topic its role does not own is refused (TopicAuthorizationFailed), loudly;
- a wrong password, a plaintext client on the TLS port and a client trusting another CA are refused;
- no password (nor the salted form the broker keeps) appears in our logs or the broker's.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ckbpool.bus import BlockOutcome, BusUnavailable, FoundBlock, JobTemplate, Share, Topic, create_bus
from ckbpool.bus.kafka import KafkaAuthorizationError, KafkaBus
from ckbpool.deploy import pki
from ckbpool.pool.accounting import ShareAccounting, connect_redis
from ckbpool.retry import Backoff
from support.kafka import SecureKafkaBroker, running_secure_broker
from support.redis import RedisServer

pytestmark = pytest.mark.integration

FAST = Backoff(initial=0.05, maximum=0.3, jitter=0.05)


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafkaBroker]:
    yield from running_secure_broker(tmp_path_factory)


@pytest.fixture
async def prefix(kafka: SecureKafkaBroker) -> str:
    """A topic prefix of this test's own, its topics created and the deployment's ACLs granted on them."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    assert await kafka.grant(topic_prefix=prefix) > 0
    async with create_bus(kafka.url("admin", topic_prefix=prefix, spool_dir="none")) as admin:
        assert isinstance(admin, KafkaBus)
        await admin.ensure_topics()
    return prefix


@pytest.fixture(autouse=True)
def no_secrets_in_logs(kafka: SecureKafkaBroker, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with DEBUG logging (aiokafka's too) and must not log a password or its salted form."""
    caplog.set_level(logging.DEBUG)
    yield
    passwords = [pki.read_password(kafka.secrets_dir, p) for p in kafka.principals]
    broker_log = kafka.log_path.read_text(errors="replace")
    for password in passwords:
        assert password not in caplog.text
        assert password not in broker_log
    for line in (kafka.dir / "server.properties").read_text().splitlines():
        assert not any(p in line for p in passwords)


def url(kafka: SecureKafkaBroker, principal: str, prefix: str, **extra: str) -> str:
    params = {"topic_prefix": prefix, "spool_dir": "none", "create_topics": "0", "publish_timeout": "5",
              "connect_timeout": "10", "close_timeout": "3", "client_id": f"{principal}-test", **extra}  # fmt: skip
    return kafka.url(principal, **params)


def share(n: int, job_id: int) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user="alice" if n % 2 else "bob", worker="rig", job_id=job_id,
        height=100, nonce=n, share_target=1 << 240, share_difficulty=2.0, accepted=True, reason="",
        is_block=False, block_hash=b"", timestamp=time.time(), source="stratum-1-sec", seq=n,
    )  # fmt: skip


@pytest.fixture
async def accounting(tmp_path: Path) -> AsyncIterator[ShareAccounting]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    client = connect_redis(server.url, timeout_s=1.0)
    try:
        yield ShareAccounting(client, policy=FAST, max_lag_s=1.0)
    finally:
        await client.aclose()
        server.stop()


async def test_each_role_does_its_job_through_the_secured_bus(
    kafka: SecureKafkaBroker, prefix: str, accounting: ShareAccounting
) -> None:
    jobmaker, stratum, blockmaker, acct = (
        create_bus(url(kafka, p, prefix)) for p in ("jobmaker", "stratum", "blockmaker", "accounting")
    )
    async with jobmaker, stratum, blockmaker, acct:
        templates = stratum.subscribe(Topic.TEMPLATES, "stratum-1")
        found = blockmaker.subscribe(Topic.FOUND_BLOCKS, "blockmaker")
        shares = acct.subscribe(Topic.SHARES, "accounting", manual_ack=True)
        outcomes = acct.subscribe(Topic.BLOCK_OUTCOMES, "accounting")
        for sub in (templates, found, shares, outcomes):
            await sub.wait_ready(60)

        await jobmaker.publish(Topic.TEMPLATES, JobTemplate(7, b'{"number":"0x64"}', time.time()))
        async with asyncio.timeout(30):
            template = await anext(templates)
        assert isinstance(template, JobTemplate) and template.job_id == 7

        for n in range(1, 41):
            await stratum.publish(Topic.SHARES, share(n, template.job_id))
        block_hash = bytes(range(32))
        block = FoundBlock("stratum-1", 7, 100, block_hash, 1, b"{}", "alice", "rig", time.time())
        await stratum.publish(Topic.FOUND_BLOCKS, block)

        async with asyncio.timeout(30):
            got = await anext(found)
        assert isinstance(got, FoundBlock) and got.block_hash == block_hash
        await blockmaker.publish(
            Topic.BLOCK_OUTCOMES, BlockOutcome(block_hash, 100, "accepted", "", time.time(), 0.1, "alice", "rig")
        )
        async with asyncio.timeout(30):
            outcome = await anext(outcomes)
        assert isinstance(outcome, BlockOutcome) and outcome.status == "accepted"

        run = asyncio.create_task(accounting.run(shares, poll_s=0.2))
        deadline = time.monotonic() + 60
        while accounting.written < 40:
            assert time.monotonic() < deadline, accounting.written
            await asyncio.sleep(0.1)
        accounting.drain()
        await asyncio.wait_for(run, 10)
        assert int((await accounting.worker_stats("alice", "rig"))["accepted"]) == 20
        assert int((await accounting.worker_stats("bob", "rig"))["accepted"]) == 20
        for bus in (jobmaker, stratum, blockmaker, acct):
            assert bus.stats()["refused"] == 0


@pytest.mark.parametrize(
    ("principal", "topic", "event"),
    [
        ("stratum", Topic.TEMPLATES, JobTemplate(1, b"{}", 0.0)),  # a forged job (payout cellbase included)
        ("accounting", Topic.SHARES, share(1, 1)),  # forged credit
        ("jobmaker", Topic.FOUND_BLOCKS, FoundBlock("x", 1, 1, bytes(32), 1, b"{}", "u", "w", 0.0)),
    ],
)
async def test_a_principal_cannot_write_a_topic_its_role_does_not_own(
    kafka: SecureKafkaBroker, prefix: str, caplog: pytest.LogCaptureFixture, principal: str, topic: Topic, event: Share
) -> None:
    async with create_bus(url(kafka, principal, prefix)) as bus:
        with pytest.raises(KafkaAuthorizationError) as refused:
            await bus.publish(topic, event)
        assert bus.stats()["refused"] == 1 and bus.stats()["published"] == 0
    name = f"{prefix}{topic.value}"
    assert f"principal {principal!r}" in str(refused.value) and f"writing {name}" in str(refused.value)
    assert "TopicAuthorizationFailed" in str(refused.value)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "ckbpool.bus.kafka"]
    assert any(f"writing {name}" in r.getMessage() for r in errors)

    # nothing reached the topic: its rightful reader (as admin, to read any topic) finds it empty
    async with create_bus(url(kafka, "admin", prefix)) as admin:
        sub = admin.subscribe(topic, "audit")
        await sub.wait_ready(60)
        assert await sub.next_batch(10, 2.0) == []


async def test_a_refused_publish_with_a_spool_is_kept_and_reported(
    kafka: SecureKafkaBroker, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stratum server with a spool (as deployed) that is refused keeps the event (a fixed ACL delivers it)
    and logs one clear error, not a stream of warnings."""
    async with create_bus(url(kafka, "stratum", prefix, spool_dir=str(tmp_path / "spool"))) as bus:
        for n in range(3):
            await bus.publish(Topic.TEMPLATES, JobTemplate(n, b"{}", 0.0))
        stats = bus.stats()
        assert stats["published"] == 0 and stats["spool_depth"] == 3 and stats["refused"] >= 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "writing" in r.getMessage()]
    assert len(errors) == 1 and "principal 'stratum'" in errors[0]


async def test_a_wrong_password_is_refused(kafka: SecureKafkaBroker, prefix: str, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text(pki.new_password())
    bad = url(kafka, "jobmaker", prefix).replace(str(kafka.password_file("jobmaker")), str(wrong))
    assert str(wrong) in bad
    with pytest.raises(BusUnavailable, match="refused the credentials of principal 'jobmaker'"):
        await create_bus(bad).start()


async def test_plaintext_to_the_tls_port_fails(kafka: SecureKafkaBroker) -> None:
    bus = create_bus(f"kafka://{kafka.bootstrap}?spool_dir=none&connect_timeout=5&request_timeout_ms=3000")
    with pytest.raises(BusUnavailable):
        await bus.start()


async def test_a_broker_not_signed_by_the_trusted_ca_is_refused(
    kafka: SecureKafkaBroker, prefix: str, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca"
    pki.ensure_ca(other, name="someone-else")
    bad = url(kafka, "jobmaker", prefix).replace(str(kafka.ca_file), str(other / pki.KAFKA_CA_CERT))
    assert str(other) in bad
    with pytest.raises(BusUnavailable, match="TLS certificate does not verify against"):
        await create_bus(bad).start()


async def test_clients_never_send_credentials_in_the_clear(tmp_path: Path) -> None:
    """Credentials without TLS are refused at configuration time, before any connection."""
    password = tmp_path / "p"
    password.write_text("x")
    with pytest.raises(ValueError, match="never sent in the clear"):
        create_bus(f"kafka://127.0.0.1:1?username=stratum&password_file={password}")
