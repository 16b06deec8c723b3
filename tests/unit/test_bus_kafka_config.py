"""Kafka backend pieces that need no broker: URL parsing, record keys, the spooled-record codec."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.bus import BlockOutcome, FoundBlock, JobTemplate, Share, Topic
from ckbpool.bus.kafka import KafkaBusConfig, decode_spooled, default_spool_dir, encode_spooled, record_key

pytestmark = pytest.mark.unit


def test_url_parameters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = KafkaBusConfig.from_url(
        f"kafka://k1:9092,k2:9093?client_id=stratum-1&spool_dir={tmp_path}/s&fsync=always&partitions=6"
        "&replication_factor=3&topic_prefix=test.&publish_timeout=0.25&linger_ms=2&create_topics=0"
    )
    assert config.bootstrap_servers == ["k1:9092", "k2:9093"]
    assert config.client_id == "stratum-1"
    assert config.spool_dir == tmp_path / "s"
    assert config.fsync == "always"
    assert config.partitions == {Topic.SHARES: 6}
    assert config.replication_factor == 3
    assert config.topic_name(Topic.SHARES) == "test.ckbpool.shares"
    assert config.publish_timeout == 0.25 and config.linger_ms == 2 and not config.create_topics

    monkeypatch.setenv("CKBPOOL_STATE_DIR", str(tmp_path / "state"))
    default = KafkaBusConfig.from_url("kafka://k1:9092")
    assert default.client_id == "ckbpool"
    assert default.spool_dir == default_spool_dir("ckbpool") == tmp_path / "state" / "bus-spool" / "ckbpool"
    assert KafkaBusConfig.from_url("kafka://k1:9092?spool_dir=none").spool_dir is None


@pytest.mark.parametrize("url", ["kafka://", "http://k:1", "kafka://k:1?fsync=sometimes", "kafka://k:1?partition=3"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        KafkaBusConfig.from_url(url)


def test_record_keys_keep_what_must_stay_in_order_together() -> None:
    block_hash = bytes(range(32))
    share = Share("s", 1, "alice", "rig1", 1, 1, 1, 1, 1.0, True, "", False, b"", 0.0)
    assert record_key(share) == b"alice.rig1"
    assert record_key(JobTemplate(1, b"{}", 0.0)) == record_key(JobTemplate(2, b"[]", 1.0))
    assert record_key(FoundBlock("s", 1, 1, block_hash, 1, b"{}", "u", "w", 0.0)) == block_hash
    assert record_key(BlockOutcome(block_hash, 1, "accepted", "", 0.0, 0.0, "u", "w")) == block_hash


@given(
    topic=st.sampled_from(list(Topic)),
    key=st.binary(max_size=300),
    timestamp_ms=st.integers(0, (1 << 64) - 1),
    value=st.binary(max_size=500),
)
def test_spooled_record_round_trip(topic: Topic, key: bytes, timestamp_ms: int, value: bytes) -> None:
    assert decode_spooled(encode_spooled(topic, key, timestamp_ms, value)) == (topic, key, timestamp_ms, value)


@pytest.mark.parametrize(("topic", "warned"), [(Topic.TEMPLATES, True), (Topic.SHARES, False)])
def test_a_template_reader_left_without_a_partition_says_why(
    topic: Topic, warned: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stratum worker whose template group another process joined gets no job to hand out: the log names the
    cause (overlapping server_id ranges). Shares are split between a group's members by design: no warning."""
    import asyncio

    from ckbpool.bus.kafka import KafkaBus, KafkaSubscription, _Rebalance

    bus = KafkaBus(KafkaBusConfig.from_url(f"kafka://127.0.0.1:9?create_topics=0&spool_dir={tmp_path}/s"))
    sub = KafkaSubscription(bus, topic, "stratum-2")
    with caplog.at_level("WARNING", logger="ckbpool.bus.kafka"):
        asyncio.run(_Rebalance(sub).on_partitions_assigned(set()))
    assert sub._assigned.is_set()
    assert ("server_id range" in caplog.text and f"stratum-2@{topic}" in caplog.text) is warned
