"""SV2 plaintext framing: the header layout, the channel_msg bit, and the streaming decoder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.sv2.errors import DecodeError, EncodeError, FrameTooLarge
from ckbpool.sv2.framing import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameHeader,
    encode_frame,
)

pytestmark = pytest.mark.unit

# Bitcoin Core's sv2 tests (sv2_messages_tests.cpp): a SetupConnection payload of 82 bytes.
SETUP_CONNECTION_82 = bytes.fromhex(
    "02020002000100000007302e302e302e306121074269746d61696e085339692031332e351c62726169696e732d"
    "6f732d323031382d30392d32322d312d6861736810736f6d652d6465766963652d75756964"
)


def test_setup_connection_vector_header() -> None:
    assert len(SETUP_CONNECTION_82) == 82
    frame = encode_frame(0, 0x00, SETUP_CONNECTION_82)
    assert frame[:6] == bytes.fromhex("000000520000")
    header = FrameHeader.decode(frame[:6])
    assert header == FrameHeader(extension_type=0, msg_type=0, msg_length=82, channel_msg=False)
    assert header.encode() == frame[:6]
    assert Frame.decode(frame) == Frame(0, 0, False, SETUP_CONNECTION_82)


def test_channel_msg_bit_is_bit_15_of_extension_type() -> None:
    frame = encode_frame(0x0000, 0x1A, b"\x2a\x00\x00\x00", channel_msg=True)
    assert frame[:6] == bytes.fromhex("00801a040000")
    header = FrameHeader.decode(frame)
    assert header.channel_msg and header.extension_type == 0 and header.msg_type == 0x1A
    ext = FrameHeader.decode(bytes.fromhex("01800005000000"))
    assert ext.extension_type == 0x0001 and ext.channel_msg and ext.msg_length == 5


def test_msg_length_is_u24_little_endian() -> None:
    header = FrameHeader.decode(bytes.fromhex("cb4c01030201"))
    assert header.msg_length == 0x010203 and header.extension_type == 0x4CCB
    assert FrameHeader(0x4CCB, 1, 0x010203, False).encode() == bytes.fromhex("cb4c01030201")


def test_header_encode_bounds() -> None:
    with pytest.raises(EncodeError, match="extension_type"):
        encode_frame(0x8000, 0, b"")
    with pytest.raises(EncodeError, match="msg_type"):
        encode_frame(0, 256, b"")
    with pytest.raises(EncodeError, match="msg_length"):
        FrameHeader(0, 0, MAX_PAYLOAD + 1, False).encode()
    with pytest.raises(DecodeError):
        FrameHeader.decode(b"\x00" * 5)


def test_frame_decode_requires_exactly_one_frame() -> None:
    raw = encode_frame(0, 1, b"abc")
    with pytest.raises(DecodeError):
        Frame.decode(raw[:-1])
    with pytest.raises(DecodeError):
        Frame.decode(raw + b"x")


frames_strategy = st.lists(
    st.builds(
        Frame,
        extension_type=st.integers(0, 0x7FFF),
        msg_type=st.integers(0, 255),
        channel_msg=st.booleans(),
        payload=st.binary(max_size=300),
    ),
    max_size=8,
)


@given(frames_strategy, st.data())
def test_streaming_decoder_accepts_any_split(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(f.encode() for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = FrameDecoder()
    out: list[Frame] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[start:cut]))
        start = cut
    assert out == frames
    assert decoder.buffered == 0


def test_decoder_byte_by_byte_and_partial_state() -> None:
    raw = encode_frame(0, 0x1C, b"\x00" * 20, channel_msg=True) + encode_frame(1, 0, b"xy")
    decoder = FrameDecoder()
    seen = []
    for i in range(len(raw)):
        seen.extend(decoder.feed(raw[i : i + 1]))
    assert [f.msg_type for f in seen] == [0x1C, 0]
    assert decoder.feed(raw[:10]) == [] and decoder.buffered == 10


def test_oversize_frame_is_rejected_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_payload=1024)
    # Only the 6 header bytes arrive: the announced 16 MiB payload is never waited for or buffered.
    header = FrameHeader(0, 0x22, MAX_PAYLOAD, True).encode()
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(header)
    assert info.value.msg_length == MAX_PAYLOAD and info.value.limit == 1024
    assert decoder.buffered == 0
    # The stream has lost framing: the decoder stays failed.
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(0, 0, b""))


def test_oversize_frame_after_good_ones_in_the_same_chunk() -> None:
    decoder = FrameDecoder(max_payload=8)
    good = encode_frame(0, 1, b"12345678")
    with pytest.raises(FrameTooLarge):
        decoder.feed(good + FrameHeader(0, 1, 9, False).encode() + b"\x00" * 9)
    # A header split across feeds is checked as soon as its sixth byte arrives.
    decoder = FrameDecoder(max_payload=8)
    bad = FrameHeader(0, 1, 9, False).encode()
    assert decoder.feed(bad[:5]) == []
    with pytest.raises(FrameTooLarge):
        decoder.feed(bad[5:])


def test_limits_are_sane() -> None:
    assert HEADER_SIZE == 6
    assert 139_253 <= DEFAULT_MAX_PAYLOAD < MAX_PAYLOAD  # the largest core message fits by default
    FrameDecoder(MAX_PAYLOAD)
    with pytest.raises(ValueError):
        FrameDecoder(MAX_PAYLOAD + 1)


@given(st.binary(max_size=200))
def test_decoder_on_arbitrary_bytes_raises_only_decode_errors(data: bytes) -> None:
    decoder = FrameDecoder(max_payload=64)
    try:
        frames = decoder.feed(data)
    except DecodeError:
        return
    consumed = sum(HEADER_SIZE + len(f.payload) for f in frames)
    assert consumed + decoder.buffered == len(data)
