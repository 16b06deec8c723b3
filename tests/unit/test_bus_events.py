"""Bus events: protobuf and JSON round trips over the whole value space, fixed-width big integers, bad input."""

from __future__ import annotations

import copy
import json
import pickle
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.bus import EVENT_TYPES, BlockOutcome, EventDecodeError, FoundBlock, JobTemplate, Share, Topic
from ckbpool.bus.events import U128_MAX, U256_MAX
from ckbpool.bus.pb import events_pb2 as pb

pytestmark = pytest.mark.unit

u32 = st.integers(0, (1 << 32) - 1)
u64 = st.integers(0, (1 << 64) - 1)
u128 = st.one_of(st.just(0), st.just(U128_MAX), st.integers(0, U128_MAX))
u256 = st.one_of(st.just(0), st.just(U256_MAX), st.integers(0, U256_MAX))
floats = st.floats(allow_nan=False)
text = st.text(max_size=40)
hash32 = st.binary(min_size=32, max_size=32)
json_bytes = st.one_of(
    st.binary(max_size=300),  # any bytes survive, even non-UTF-8
    st.dictionaries(text, st.integers() | text, max_size=5).map(lambda d: json.dumps(d).encode()),
)

templates = st.builds(JobTemplate, job_id=u64, template_json=json_bytes, received_at=floats)
shares = st.builds(
    Share,
    server_id=text,
    channel_id=u32,
    user=text,
    worker=text,
    job_id=u64,
    height=u64,
    nonce=u128,
    share_target=u256,
    share_difficulty=floats,
    accepted=st.booleans(),
    reason=st.sampled_from(["", "stale-share", "difficulty-too-low", "invalid-job-id"]),
    is_block=st.booleans(),
    block_hash=st.one_of(st.just(b""), hash32),
    timestamp=floats,
    source=text,
    seq=st.integers(0, (1 << 53) - 1),
)
found_blocks = st.builds(
    FoundBlock,
    server_id=text,
    job_id=u64,
    height=u64,
    block_hash=hash32,
    work_id=u64,
    block_json=json_bytes,
    user=text,
    worker=text,
    found_at=floats,
)
outcomes = st.builds(
    BlockOutcome,
    block_hash=hash32,
    height=u64,
    status=st.sampled_from(["accepted", "stale", "rejected", "pending"]),
    reason=text,
    submitted_at=floats,
    latency_ms=floats,
    user=text,
    worker=text,
)
any_event = st.one_of(templates, shares, found_blocks, outcomes)


@given(any_event)
def test_protobuf_round_trip(event: JobTemplate | Share | FoundBlock | BlockOutcome) -> None:
    data = event.to_proto()
    assert isinstance(data, bytes)
    assert type(event).from_proto(data) == event


@given(any_event)
def test_json_round_trip(event: JobTemplate | Share | FoundBlock | BlockOutcome) -> None:
    data = event.to_json()
    json.loads(data)  # valid JSON
    assert type(event).from_json(data) == event


def test_every_topic_has_its_event_class() -> None:
    assert {
        Topic.TEMPLATES: JobTemplate,
        Topic.SHARES: Share,
        Topic.FOUND_BLOCKS: FoundBlock,
        Topic.BLOCK_OUTCOMES: BlockOutcome,
    } == EVENT_TYPES
    assert {t.value for t in Topic} == {
        "ckbpool.templates",
        "ckbpool.shares",
        "ckbpool.found_blocks",
        "ckbpool.block_outcomes",
    }


def _share(**overrides: object) -> Share:
    fields: dict[str, object] = dict(
        server_id="stratum-1", channel_id=3, user="ckb1qalice", worker="rig0", job_id=9, height=12345,
        nonce=U128_MAX, share_target=U256_MAX, share_difficulty=1024.0, accepted=True, reason="",
        is_block=False, block_hash=b"", timestamp=1_700_000_000.25,
    )  # fmt: skip
    fields.update(overrides)
    return Share(**fields)  # type: ignore[arg-type]


def test_big_integers_are_fixed_width_little_endian_bytes() -> None:
    share = _share(nonce=1, share_target=0x0102)
    message = pb.Share.FromString(share.to_proto())
    assert message.nonce == b"\x01" + bytes(15)
    assert message.share_target == b"\x02\x01" + bytes(30)
    assert len(pb.Share.FromString(_share(nonce=0, share_target=0).to_proto()).nonce) == 16


def test_wrong_length_big_integer_is_rejected() -> None:
    message = pb.Share.FromString(_share().to_proto())
    message.nonce = bytes(17)
    with pytest.raises(EventDecodeError, match="nonce"):
        Share.from_proto(message.SerializeToString())
    message.nonce = bytes(16)
    message.share_target = bytes(31)
    with pytest.raises(EventDecodeError, match="share_target"):
        Share.from_proto(message.SerializeToString())


@pytest.mark.parametrize(
    "overrides",
    [{"nonce": U128_MAX + 1}, {"share_target": U256_MAX + 1}, {"nonce": -1}, {"channel_id": 1 << 32}, {"height": -1}],
)
def test_out_of_range_values_fail_at_construction(overrides: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        _share(**overrides)


def test_block_status_is_checked_and_mapped_to_the_enum() -> None:
    with pytest.raises(ValueError, match="status"):
        BlockOutcome(b"\x00" * 32, 1, "orphaned", "", 0.0, 0.0, "u", "w")
    outcome = BlockOutcome(b"\x00" * 32, 1, "stale", "", 0.0, 0.0, "u", "w")
    assert pb.BlockOutcome.FromString(outcome.to_proto()).status == pb.BLOCK_STATUS_STALE
    unspecified = pb.BlockOutcome(block_hash=b"\x00" * 32, height=1).SerializeToString()
    with pytest.raises(EventDecodeError, match="status"):
        BlockOutcome.from_proto(unspecified)


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(EventDecodeError):
        Share.from_proto(b"\xff\xff\xff")
    with pytest.raises(EventDecodeError):
        JobTemplate.from_proto(struct.pack("<B", 0x0A) + b"\x10")  # truncated length-delimited field
    with pytest.raises(EventDecodeError):
        Share.from_json(b"[1, 2]")
    with pytest.raises(EventDecodeError):
        FoundBlock.from_json(b'{"server_id": "x"}')
    with pytest.raises(EventDecodeError):
        BlockOutcome.from_json(b"not json")


def test_events_are_frozen_and_slotted() -> None:
    share = _share()
    with pytest.raises(AttributeError):
        share.nonce = 1  # type: ignore[misc]
    assert not hasattr(share, "__dict__")


def test_share_id_is_source_and_seq_and_survives_both_encodings() -> None:
    share = _share(source="stratum-1-18f0-ab", seq=42)
    assert share.share_id == "stratum-1-18f0-ab:42"
    assert Share.from_proto(share.to_proto()).share_id == share.share_id
    assert Share.from_json(share.to_json()).share_id == share.share_id
    assert _share().share_id == ""  # no id: a producer from before ids


def test_share_seq_must_stay_exact_as_a_double() -> None:
    with pytest.raises(ValueError, match="seq"):
        _share(source="s", seq=1 << 53)


def test_share_keeps_the_dataclass_semantics() -> None:
    """Share is a tuple underneath (issue 19: ~0.4 us to make instead of ~3): it must still behave as the frozen
    dataclass it was -- equal only to an equal Share, hashed on its fields, not ordered, picklable, checked on every
    construction path (positional, keyword, replace, unpickling)."""
    share = _share(source="s", seq=7)
    positional = Share(*(getattr(share, name) for name in Share._fields))
    assert positional == share and (positional != share) is False
    assert hash(positional) == hash(share) and len({share, positional}) == 1
    assert share != tuple(share) and tuple(share) != share and (share == tuple(share)) is False
    assert share != _share(source="s", seq=8)
    with pytest.raises(TypeError):
        _ = share < positional
    with pytest.raises(AttributeError):
        share.seq = 8  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(share)) == share
    assert copy.deepcopy(share) == share
    moved = share.replace(seq=9, accepted=False, reason="stale-share")
    assert (moved.seq, moved.accepted, moved.reason, moved.user) == (9, False, "stale-share", share.user)
    assert type(moved) is Share and share.seq == 7
    with pytest.raises(ValueError, match="seq"):
        share.replace(seq=-1)
    with pytest.raises(ValueError, match="channel_id"):
        share._replace(channel_id=1 << 32)  # namedtuple's own would skip the check
    with pytest.raises(TypeError):
        Share("s", 1, "u")  # type: ignore[call-arg]
    assert repr(share).startswith("Share(server_id='stratum-1', channel_id=3,")
