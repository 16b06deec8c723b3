"""SV2 messages: every class round-trips, known byte vectors, and no crash on arbitrary input."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.sv2 import types as t
from ckbpool.sv2.errors import DecodeError, EncodeError
from ckbpool.sv2.framing import Frame, FrameDecoder
from ckbpool.sv2.messages import (
    MESSAGE_CLASSES,
    Message,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenStandardMiningChannel,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UnknownMessage,
    decode_frame_bytes,
    decode_message,
    encode_message,
    message_class,
)
from ckbpool.sv2.messages_base import layout_of

pytestmark = pytest.mark.unit

# The spec's table (08-Message-Types.md and the 0x0001 extension), written out independently of the
# classes: (extension_type, msg_type, channel_msg). SRI's mining_sv2 12 / common_messages_sv2 9
# CHANNEL_BIT_* constants agree with every row.
SPEC_TABLE = {
    "SetupConnection": (0, 0x00, False),
    "SetupConnectionSuccess": (0, 0x01, False),
    "SetupConnectionError": (0, 0x02, False),
    "ChannelEndpointChanged": (0, 0x03, True),
    "Reconnect": (0, 0x04, False),
    "OpenStandardMiningChannel": (0, 0x10, False),
    "OpenStandardMiningChannelSuccess": (0, 0x11, False),
    "OpenMiningChannelError": (0, 0x12, False),
    "OpenExtendedMiningChannel": (0, 0x13, False),
    "OpenExtendedMiningChannelSuccess": (0, 0x14, False),
    "NewMiningJob": (0, 0x15, True),
    "UpdateChannel": (0, 0x16, True),
    "UpdateChannelError": (0, 0x17, True),
    "CloseChannel": (0, 0x18, True),
    "SetExtranoncePrefix": (0, 0x19, True),
    "SubmitSharesStandard": (0, 0x1A, True),
    "SubmitSharesExtended": (0, 0x1B, True),
    "SubmitSharesSuccess": (0, 0x1C, True),
    "SubmitSharesError": (0, 0x1D, True),
    "NewExtendedMiningJob": (0, 0x1F, True),
    "SetNewPrevHash": (0, 0x20, True),
    "SetTarget": (0, 0x21, True),
    "SetCustomMiningJob": (0, 0x22, True),
    "SetCustomMiningJobSuccess": (0, 0x23, True),
    "SetCustomMiningJobError": (0, 0x24, True),
    "SetGroupChannel": (0, 0x25, False),
    "RequestExtensions": (1, 0x00, False),
    "RequestExtensionsSuccess": (1, 0x01, False),
    "RequestExtensionsError": (1, 0x02, False),
    "CkbTemplateSubscribe": (0x4CCB, 0x00, True),
    "CkbJobTemplate": (0x4CCB, 0x01, True),
    "CkbSubmitSolution": (0x4CCB, 0x02, True),
}


def strategy_for(sv2: t.Sv2Type[Any]) -> st.SearchStrategy[Any]:
    """A hypothesis strategy producing valid values of an SV2 type."""
    if sv2 is t.U256:
        return st.integers(0, (1 << 256) - 1)
    if sv2 is t.BOOL:
        return st.booleans()
    if sv2 is t.F32:
        return st.floats(width=32, allow_nan=False)
    if sv2 is t.STR0_255:
        return st.text(max_size=40).filter(lambda s: len(s.encode()) <= 255)
    if isinstance(sv2, t._UInt):
        return st.integers(0, sv2.limit - 1)
    if isinstance(sv2, t._FixedBytes):
        return st.binary(min_size=sv2.size, max_size=sv2.size)
    if isinstance(sv2, t._VarBytes):
        return st.binary(max_size=min(sv2.max_len, 300))
    if isinstance(sv2, t._Option):
        return st.none() | strategy_for(sv2.element)
    if isinstance(sv2, t._Seq):
        return st.lists(strategy_for(sv2.element), max_size=6).map(tuple)
    if sv2 is t.TLV_LIST:
        return st.lists(tlvs, max_size=4).map(tuple)
    raise AssertionError(f"no strategy for {sv2!r}")


tlvs = st.builds(t.Tlv, st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.binary(max_size=40))


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    return st.builds(cls, *(strategy_for(sv2) for _, sv2 in layout_of(cls)))


all_messages = st.sampled_from(MESSAGE_CLASSES).flatmap(message_strategy)


def test_every_spec_message_is_implemented_with_its_ids_and_channel_bit() -> None:
    assert {c.__name__ for c in MESSAGE_CLASSES} == set(SPEC_TABLE)
    for cls in MESSAGE_CLASSES:
        assert SPEC_TABLE[cls.__name__] == (cls.EXTENSION_TYPE, cls.MSG_TYPE, cls.CHANNEL_MSG)
        assert message_class(cls.EXTENSION_TYPE, cls.MSG_TYPE) is cls
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert "__slots__" in cls.__dict__
        # Channel messages start with channel_id, as the channel_msg bit promises.
        if cls.CHANNEL_MSG:
            assert layout_of(cls)[0] == ("channel_id", t.U32)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=60)
@given(data=st.data())
def test_round_trip_every_message(cls: type[Message], data: st.DataObject) -> None:
    msg = data.draw(message_strategy(cls))
    payload = msg.encode()
    assert type(msg).decode(payload) == msg
    # The generic (layout-walking) codec and any hand-written fast path agree byte for byte.
    assert msg._encode_generic() == payload
    assert cls._decode_generic(payload) == msg
    frame = encode_message(msg)
    header = Frame.decode(frame)
    assert (header.extension_type, header.msg_type, header.channel_msg) == SPEC_TABLE[cls.__name__]
    assert decode_message(header) == msg
    assert decode_frame_bytes(frame) == msg
    # Any truncation is a DecodeError, and so is any extra byte -- except that a TLV list may be
    # cut between two TLVs: that is the same message with fewer TLVs.
    tlv_ends = _tlv_boundaries(msg)
    for cut in range(len(payload)):
        if cut in tlv_ends:
            assert cls.decode(payload[:cut]) == dataclasses.replace(msg, tlvs=msg.tlvs[: tlv_ends[cut]])  # type: ignore[type-var]
            continue
        with pytest.raises(DecodeError):
            cls.decode(payload[:cut])
    with pytest.raises(DecodeError):
        cls.decode(payload + b"\x00")


def _tlv_boundaries(msg: Message) -> dict[int, int]:
    """Payload length -> number of TLVs kept, for each cut that ends exactly after a TLV (or before the first)."""
    if not any(sv2 is t.TLV_LIST for _, sv2 in layout_of(type(msg))):
        return {}
    tlv_list: tuple[t.Tlv, ...] = msg.tlvs  # type: ignore[attr-defined]
    pos = len(msg.encode()) - len(t.TLV_LIST.encode(tlv_list, "tlvs"))
    ends = {pos: 0}
    for i, tlv in enumerate(tlv_list):
        pos += t.TLV_HEADER_SIZE + len(tlv.value)
        ends[pos] = i + 1
    return ends


@given(st.lists(all_messages, max_size=6), st.data())
def test_message_stream_through_the_frame_decoder(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode_message(m) for m in msgs)
    cut = data.draw(st.integers(0, len(stream)))
    decoder = FrameDecoder()
    frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
    assert [decode_message(f) for f in frames] == msgs


@given(st.integers(0, 0x7FFF), st.integers(0, 255), st.booleans(), st.binary(max_size=120))
def test_arbitrary_frames_give_a_message_an_unknown_message_or_a_decode_error(
    ext: int, msg_type: int, channel_msg: bool, payload: bytes
) -> None:
    frame = Frame(ext, msg_type, channel_msg, payload)
    try:
        msg = decode_message(frame)
    except DecodeError:
        return
    if message_class(ext, msg_type) is None:
        assert msg == UnknownMessage(ext, msg_type, channel_msg, payload)
    else:
        assert isinstance(msg, Message)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
@given(payload=st.binary(max_size=120))
def test_arbitrary_payloads_raise_only_decode_error(cls: type[Message], payload: bytes) -> None:
    try:
        msg = cls.decode(payload)
    except DecodeError:
        return
    assert isinstance(msg, cls)


def test_unknown_message_keeps_what_a_proxy_needs_to_forward_it() -> None:
    frame = Frame(0x4001, 7, True, b"\x2a\x00\x00\x00rest")
    unknown = decode_message(frame)
    assert isinstance(unknown, UnknownMessage)
    assert unknown.channel_id == 42 and unknown.payload == frame.payload
    assert decode_message(Frame(0, 0x1E, True, b"")) == UnknownMessage(0, 0x1E, True, b"")
    assert UnknownMessage(0, 0x50, False, b"\x01\x00\x00\x00").channel_id is None


def test_decode_frame_bytes_checks_the_header_length() -> None:
    frame = encode_message(SubmitSharesSuccess(1, 2, 3, 4))
    with pytest.raises(DecodeError):
        decode_frame_bytes(frame[:-1])
    with pytest.raises(DecodeError):
        decode_frame_bytes(frame + b"\x00")
    with pytest.raises(DecodeError):
        decode_frame_bytes(frame[:5])
    unknown = decode_frame_bytes(bytes.fromhex("01c007020000abcd"))
    assert unknown == UnknownMessage(0x4001, 7, True, b"\xab\xcd")


def test_receiving_ignores_a_wrong_channel_bit_like_sri() -> None:
    share = SubmitSharesStandard(1, 2, 3, 4, 5, 6)
    assert decode_message(Frame(0, 0x1A, False, share.encode())) == share


# --- byte vectors --------------------------------------------------------------------------------

# From Bitcoin Core's sv2_messages_tests.cpp (an independent SV2 implementation).
SETUP_CONNECTION_82 = bytes.fromhex(
    "02020002000100000007302e302e302e306121074269746d61696e085339692031332e351c62726169696e732d"
    "6f732d323031382d30392d32322d312d6861736810736f6d652d6465766963652d75756964"
)


def test_setup_connection_vector() -> None:
    msg = SetupConnection(
        protocol=2,
        min_version=2,
        max_version=2,
        flags=1,
        endpoint_host="0.0.0.0",
        endpoint_port=8545,
        vendor="Bitmain",
        hardware_version="S9i 13.5",
        firmware="braiins-os-2018-09-22-1-hash",
        device_id="some-device-uuid",
    )
    assert msg.encode() == SETUP_CONNECTION_82
    assert SetupConnection.decode(SETUP_CONNECTION_82) == msg
    assert encode_message(msg)[:6] == bytes.fromhex("000000520000")


def test_setup_connection_success_and_error_vectors() -> None:
    assert SetupConnectionSuccess(2, 3).encode() == bytes.fromhex("020003000000")
    err = SetupConnectionError(0, "protocol-version-mismatch")
    assert err.encode() == bytes.fromhex("000000001970726f746f636f6c2d76657273696f6e2d6d69736d61746368")


def test_share_vectors() -> None:
    share = SubmitSharesStandard(
        channel_id=1, sequence_number=2, job_id=3, nonce=0x11223344, ntime=0x5F5E100, version=0xAABBCCDD
    )
    frame = encode_message(share)
    assert frame.hex() == "00801a1800000100000002000000030000004433221100e1f505ddccbbaa"
    ext = SubmitSharesExtended(1, 2, 3, 4, 5, 6, b"\xab\xcd")
    assert ext.encode().hex() == "01000000020000000300000004000000050000000600000002abcd"
    ok = SubmitSharesSuccess(7, 9, 10, 1 << 40)
    assert encode_message(ok).hex() == "00801c14000007000000090000000a0000000000000000010000"
    err = SubmitSharesError(7, 9, "stale-share")
    assert err.encode() == bytes.fromhex("0700000009000000") + b"\x0bstale-share"


def test_new_mining_job_option_and_u256_layout() -> None:
    root = bytes(range(32))
    future = NewMiningJob(channel_id=5, job_id=6, min_ntime=None, version=0, merkle_root=root)
    assert future.encode() == bytes.fromhex("05000000060000000000000000") + root
    active = NewMiningJob(5, 6, 0x64000000, 0, root)
    assert active.encode() == bytes.fromhex("0500000006000000010000006400000000") + root
    assert NewMiningJob.decode(active.encode()) == active
    with pytest.raises(DecodeError, match="0 or 1"):
        NewMiningJob.decode(future.encode()[:8] + b"\x02" + future.encode()[9:])


def test_set_target_is_u256_little_endian() -> None:
    msg = SetTarget(channel_id=1, maximum_target=0xFFFF << 240)
    assert msg.encode() == bytes.fromhex("01000000") + b"\x00" * 30 + b"\xff\xff"
    assert SetTarget.decode(msg.encode()) == msg


def test_set_new_prev_hash_keeps_hash_bytes() -> None:
    parent = bytes.fromhex("d5a74fba920ad0d35ec5726f26327547cbc82180e356e5ccf6cf2e6bd75f8a66")
    msg = SetNewPrevHash(channel_id=1, job_id=2, prev_hash=parent, min_ntime=1_700_000_000, nbits=0x20010000)
    assert msg.encode()[8:40] == parent
    assert SetNewPrevHash.decode(msg.encode()) == msg


def test_extended_job_layout() -> None:
    job = NewExtendedMiningJob(
        channel_id=1,
        job_id=2,
        min_ntime=None,
        version=0,
        version_rolling_allowed=True,
        merkle_path=(),
        coinbase_tx_prefix=b"\x11" * 32,
        coinbase_tx_suffix=(1234).to_bytes(8, "little"),
    )
    raw = job.encode()
    assert raw == (
        bytes.fromhex("0100000002000000000000000001002000") + b"\x11" * 32 + bytes.fromhex("0800d204000000000000")
    )


# --- encode errors name the field ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "field"),
    [
        (SubmitSharesStandard(1, 2, 3, 1 << 32, 5, 6), "SubmitSharesStandard.nonce"),
        (SubmitSharesExtended(1, 2, 3, 4, 5, 6, b"\x00" * 33), "SubmitSharesExtended.extranonce"),
        (SubmitSharesSuccess(1, 2, 3, -1), "SubmitSharesSuccess.new_shares_sum"),
        (SubmitSharesError(1, 2, "x" * 256), "SubmitSharesError.error_code"),
        (NewMiningJob(1, 2, None, 0, b"\x00" * 31), "NewMiningJob.merkle_root"),
        (NewMiningJob(1, 2, 1 << 32, 0, b"\x00" * 32), "NewMiningJob.min_ntime"),
        (SetNewPrevHash(1, 2, b"\x00" * 33, 0, 0), "SetNewPrevHash.prev_hash"),
        (SetTarget(1, 1 << 256), "SetTarget.maximum_target"),
        (SetTarget(-1, 0), "SetTarget.channel_id"),
        (SetupConnectionSuccess(1 << 16, 0), "SetupConnectionSuccess.used_version"),
        (OpenStandardMiningChannel(1, "u" * 300, 0.0, 0), "OpenStandardMiningChannel.user_identity"),
    ],
    ids=lambda x: x if isinstance(x, str) else type(x).__name__,
)
def test_encode_errors_name_the_field(msg: Message, field: str) -> None:
    with pytest.raises(EncodeError) as info:
        msg.encode()
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_submit_shares_standard_written_out_init_is_the_generated_one() -> None:
    """SubmitSharesStandard writes its ``__init__`` out (issue 19, one per share read): it must take exactly the
    fields, in order, set every one of them, and leave the message frozen, so a field added later fails here."""
    names = [f.name for f in dataclasses.fields(SubmitSharesStandard)]
    values = [11, 22, 33, 44, 55, 66]
    by_position = SubmitSharesStandard(*values)
    by_keyword = SubmitSharesStandard(**dict(zip(names, values, strict=True)))
    assert [getattr(by_position, n) for n in names] == values
    assert by_position == by_keyword and hash(by_position) == hash(by_keyword)
    assert dataclasses.replace(by_position, nonce=7).nonce == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_position.nonce = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        SubmitSharesStandard(*values, 77)  # type: ignore[call-arg]
