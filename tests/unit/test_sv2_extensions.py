"""TLV fields (sv2-spec 3.4.3) and extension 0x0002 (worker-specific hashrate tracking): the codec, the
negotiation through RequestExtensions, and what each state machine accepts and refuses."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_sv2_connection import connected, only, open_extended, replies

from ckbpool.sv2.client import ClientConnection
from ckbpool.sv2.errors import DecodeError, EncodeError, LocalProtocolError
from ckbpool.sv2.events import ExtensionsNegotiated, Rejected, ShareSubmitted
from ckbpool.sv2.extensions import (
    ERROR_EXTENSION_NOT_NEGOTIATED,
    ERROR_INVALID_TLV,
    ERROR_INVALID_USER_IDENTITY,
    EXTENSION_TYPE_WORKER_HASHRATE_TRACKING,
    FIELD_TYPE_USER_IDENTITY,
    TlvRejected,
    read_share_tlvs,
    user_identity_tlv,
)
from ckbpool.sv2.messages import (
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    decode_frame_bytes,
    encode_message,
)
from ckbpool.sv2.messages_ckb import EXTENSION_TYPE_CKB_TEMPLATE
from ckbpool.sv2.server import ServerConnection
from ckbpool.sv2.types import TLV_LIST, Tlv

pytestmark = pytest.mark.unit

WORKER = EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
SHARE = SubmitSharesExtended(8, 1, 3, 0x26401100, 1700000000, 0, bytes(4))

tlvs = st.builds(Tlv, st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.binary(max_size=70))
identities = st.text(min_size=1, max_size=32).filter(lambda s: 1 <= len(s.encode()) <= 32)


# --- the codec -------------------------------------------------------------------------------------------------------


def test_user_identity_tlv_bytes_are_sris() -> None:
    # The spec's "Worker_001" example, in SRI's (little-endian) byte order: 02 00 | 01 | 0a 00 | value.
    assert TLV_LIST.encode((user_identity_tlv("Worker_001"),), "t") == bytes.fromhex("0200010a00") + b"Worker_001"
    share = dataclasses.replace(SHARE, tlvs=(user_identity_tlv("Worker_001"),))
    assert share.encode() == SHARE.encode() + bytes.fromhex("0200010a00") + b"Worker_001"
    frame = encode_message(share)
    assert frame[:3] == b"\x00\x80\x1b"  # extension_type stays 0 (spec 3.4.1), channel bit set
    assert decode_frame_bytes(frame) == share


@given(st.lists(tlvs, max_size=5).map(tuple))
def test_tlv_list_round_trip(items: tuple[Tlv, ...]) -> None:
    raw = TLV_LIST.encode(items, "t")
    assert len(raw) == sum(5 + len(x.value) for x in items)
    assert TLV_LIST.decode(raw, 0, "t") == (items, len(raw))
    share = dataclasses.replace(SHARE, tlvs=items)
    assert SubmitSharesExtended.decode(share.encode()) == share
    assert SubmitSharesExtended._decode_generic(share.encode()) == share
    assert share._encode_generic() == share.encode()


@given(st.lists(tlvs, min_size=1, max_size=4).map(tuple), st.data())
def test_truncated_or_overflowing_tlvs_are_decode_errors(items: tuple[Tlv, ...], data: st.DataObject) -> None:
    raw = TLV_LIST.encode(items, "t")
    ends = {0}
    pos = 0
    for item in items:
        pos += 5 + len(item.value)
        ends.add(pos)
    cut = data.draw(st.integers(0, len(raw) - 1).filter(lambda n: n not in ends))
    with pytest.raises(DecodeError):
        TLV_LIST.decode(raw[:cut], 0, "t")
    with pytest.raises(DecodeError):
        SubmitSharesExtended.decode(SHARE.encode() + raw[:cut])


def test_tlv_strictness_cases() -> None:
    base = SHARE.encode()
    with pytest.raises(DecodeError, match="truncated TLV header"):
        SubmitSharesExtended.decode(base + b"\x02\x00\x01\x0a")
    with pytest.raises(DecodeError, match="runs past the payload"):
        SubmitSharesExtended.decode(base + b"\x02\x00\x01\x0b\x00" + b"Worker_001")  # length 11, 10 bytes
    with pytest.raises(DecodeError, match="runs past the payload"):
        SubmitSharesExtended.decode(base + b"\x02\x00\x01\xff\xff" + b"x" * 40)
    # A zero-length TLV has no value bytes (spec 3.4.3).
    assert SubmitSharesExtended.decode(base + b"\x05\x00\x07\x00\x00").tlvs == (Tlv(5, 7, b""),)
    # Other messages still have no room for trailing bytes.
    with pytest.raises(DecodeError, match="no extension we implement adds TLV"):
        RequestExtensions.decode(RequestExtensions(1, (2,)).encode() + b"\x02\x00\x01\x00\x00")


def test_tlv_encode_checks() -> None:
    with pytest.raises(EncodeError):
        TLV_LIST.encode((Tlv(0x10000, 1, b""),), "t")
    with pytest.raises(EncodeError):
        TLV_LIST.encode((Tlv(2, 256, b""),), "t")
    with pytest.raises(EncodeError):
        TLV_LIST.encode((Tlv(2, 1, b"x" * 65536),), "t")
    with pytest.raises(EncodeError):
        TLV_LIST.encode(("tlv",), "t")  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        dataclasses.replace(SHARE, tlvs=None).encode()  # type: ignore[arg-type]
    assert TLV_LIST.encode((Tlv(2, 1, b"x" * 65535),), "t")[3:5] == b"\xff\xff"


def test_user_identity_tlv_limits() -> None:
    assert user_identity_tlv("x" * 32).value == b"x" * 32
    assert user_identity_tlv("é" * 16).value == "é".encode() * 16
    for bad in ("", "x" * 33, "é" * 17, "a" * 300, "\ud800"):
        with pytest.raises(EncodeError):
            user_identity_tlv(bad)


# --- what a connection may carry -----------------------------------------------------------------------------------


@given(identities)
def test_read_share_tlvs_returns_the_identity(identity: str) -> None:
    assert read_share_tlvs((user_identity_tlv(identity),), {WORKER}) == identity


def test_read_share_tlvs_refusals() -> None:
    ok = user_identity_tlv("rig1")
    cases: list[tuple[tuple[Tlv, ...], frozenset[int], str]] = [
        ((ok,), frozenset(), ERROR_EXTENSION_NOT_NEGOTIATED),
        ((ok,), frozenset({EXTENSION_TYPE_CKB_TEMPLATE}), ERROR_EXTENSION_NOT_NEGOTIATED),
        ((ok, Tlv(0x0003, 1, b"")), frozenset({WORKER}), ERROR_EXTENSION_NOT_NEGOTIATED),
        ((ok, ok), frozenset({WORKER}), ERROR_INVALID_TLV),
        ((Tlv(0x0003, 1, b""), ok), frozenset({WORKER, 3}), ERROR_INVALID_TLV),  # not ordered by extension_type
        ((Tlv(WORKER, FIELD_TYPE_USER_IDENTITY, b""),), frozenset({WORKER}), ERROR_INVALID_USER_IDENTITY),
        ((Tlv(WORKER, FIELD_TYPE_USER_IDENTITY, b"x" * 33),), frozenset({WORKER}), ERROR_INVALID_USER_IDENTITY),
        ((Tlv(WORKER, FIELD_TYPE_USER_IDENTITY, b"a" * 300),), frozenset({WORKER}), ERROR_INVALID_USER_IDENTITY),
        ((Tlv(WORKER, FIELD_TYPE_USER_IDENTITY, b"\xff\xfe"),), frozenset({WORKER}), ERROR_INVALID_USER_IDENTITY),
    ]
    for items, negotiated, code in cases:
        with pytest.raises(TlvRejected) as info:
            read_share_tlvs(items, negotiated)
        assert info.value.error_code == code, (items, negotiated)


def test_unknown_fields_of_a_negotiated_extension_are_skipped() -> None:
    items = (Tlv(WORKER, 0x02, b"future field"), user_identity_tlv("rig1"), Tlv(WORKER, 0x07, b""))
    assert read_share_tlvs(items, {WORKER}) == "rig1"
    assert read_share_tlvs((Tlv(WORKER, 0x02, b"x"),), {WORKER}) is None


# --- negotiation and the state machines ----------------------------------------------------------------------------


def negotiated(supported: tuple[int, ...] = (WORKER,)) -> tuple[ServerConnection, ClientConnection]:
    server, client = connected(supported_extensions=supported)
    event = only(server.receive_data(client.send(RequestExtensions(1, (WORKER,)))))
    assert isinstance(event, ExtensionsNegotiated)
    answer = only(client.receive_data(event.reply))
    assert isinstance(answer, ExtensionsNegotiated)
    assert server.extensions == client.extensions == answer.extensions
    return server, client


def test_negotiating_0x0002() -> None:
    server, _ = negotiated()
    assert server.extensions == {WORKER}
    server2, client2 = connected(supported_extensions=(WORKER, EXTENSION_TYPE_CKB_TEMPLATE))
    event = only(server2.receive_data(client2.send(RequestExtensions(9, (EXTENSION_TYPE_CKB_TEMPLATE, WORKER)))))
    assert replies([event]) == [RequestExtensionsSuccess(9, (EXTENSION_TYPE_CKB_TEMPLATE, WORKER))]


def test_a_pool_without_0x0002_answers_request_extensions_error() -> None:
    server, client = connected()
    event = only(server.receive_data(client.send(RequestExtensions(3, (WORKER,)))))
    assert replies([event]) == [RequestExtensionsError(3, (WORKER,), ())]
    answer = only(client.receive_data(event.reply))
    assert isinstance(answer, ExtensionsNegotiated) and answer.extensions == frozenset()
    assert client.extensions == server.extensions == frozenset()


def test_identified_share_reaches_the_pool_with_its_identity() -> None:
    server, client = negotiated()
    channel = open_extended(server, client)
    share = dataclasses.replace(SHARE, channel_id=channel.channel_id, tlvs=(user_identity_tlv("ckt1q.rig7"),))
    event = only(server.receive_data(client.send(share)))
    assert isinstance(event, ShareSubmitted) and event.reply == b""
    assert event.user_identity == "ckt1q.rig7" and event.share == share
    assert event.channel.user_identity == "ckb1q.proxy"  # the channel keeps its own


def test_share_without_tlv_on_a_plain_connection_has_no_identity() -> None:
    server, client = connected(supported_extensions=(WORKER,))
    channel = open_extended(server, client)
    event = only(server.receive_data(client.send(dataclasses.replace(SHARE, channel_id=channel.channel_id))))
    assert isinstance(event, ShareSubmitted) and event.user_identity is None


def _server_verdict(server: ServerConnection, share: SubmitSharesExtended) -> Rejected:
    event = only(server.receive_data(encode_message(share)))
    assert isinstance(event, Rejected), event
    (error,) = replies([event])
    assert error == SubmitSharesError(share.channel_id, share.sequence_number, event.error_code)
    assert not server.closed  # a refused share never costs the connection
    return event


def test_identity_on_a_connection_that_did_not_negotiate_0x0002_is_refused() -> None:
    for supported in ((), (WORKER,)):  # the pool may support it: what matters is this connection's negotiation
        server, client = connected(supported_extensions=supported)
        channel = open_extended(server, client)
        share = dataclasses.replace(SHARE, channel_id=channel.channel_id, tlvs=(user_identity_tlv("rig1"),))
        event = _server_verdict(server, share)
        assert event.error_code == ERROR_EXTENSION_NOT_NEGOTIATED and "0x0002" in event.detail
        with pytest.raises(LocalProtocolError, match="did not negotiate"):
            client.send(share)


def test_bad_identities_are_refused_with_their_code() -> None:
    server, client = negotiated()
    channel = open_extended(server, client)
    bad = {
        (Tlv(WORKER, 1, b"w" * 300),): ERROR_INVALID_USER_IDENTITY,
        (Tlv(WORKER, 1, b"w" * 33),): ERROR_INVALID_USER_IDENTITY,
        (Tlv(WORKER, 1, b"\xc3\x28"),): ERROR_INVALID_USER_IDENTITY,
        (Tlv(WORKER, 1, b""),): ERROR_INVALID_USER_IDENTITY,
        (user_identity_tlv("a"), user_identity_tlv("b")): ERROR_INVALID_TLV,
        (user_identity_tlv("a"), Tlv(0x4CCB, 1, b"")): ERROR_EXTENSION_NOT_NEGOTIATED,
    }
    for seq, (items, code) in enumerate(bad.items()):
        share = dataclasses.replace(SHARE, channel_id=channel.channel_id, sequence_number=seq, tlvs=items)
        assert _server_verdict(server, share).error_code == code
        with pytest.raises(LocalProtocolError):
            client.send(share)
    # Channel and kind are judged first: an unknown channel is still invalid-channel-id.
    share = dataclasses.replace(SHARE, channel_id=99, tlvs=(Tlv(WORKER, 1, b"w" * 300),))
    assert _server_verdict(server, share).error_code == "invalid-channel-id"


def test_client_must_tag_every_share_once_0x0002_is_negotiated() -> None:
    server, client = negotiated()
    channel = open_extended(server, client)
    with pytest.raises(LocalProtocolError, match="needs a user_identity TLV"):
        client.send(dataclasses.replace(SHARE, channel_id=channel.channel_id))
    # The pool, though, takes such a share as the channel's (user_identity None): it is still valid work.
    event = only(server.receive_data(encode_message(dataclasses.replace(SHARE, channel_id=channel.channel_id))))
    assert isinstance(event, ShareSubmitted) and event.user_identity is None


def test_request_extensions_error_leaves_the_client_without_0x0002() -> None:
    server, client = connected(supported_extensions=(), required_extensions=(EXTENSION_TYPE_CKB_TEMPLATE,))
    event = only(server.receive_data(client.send(RequestExtensions(1, (WORKER,)))))
    assert replies([event]) == [RequestExtensionsError(1, (WORKER,), (EXTENSION_TYPE_CKB_TEMPLATE,))]
    only(client.receive_data(event.reply))
    channel = open_extended(server, client)
    with pytest.raises(LocalProtocolError):
        client.send(dataclasses.replace(SHARE, channel_id=channel.channel_id, tlvs=(user_identity_tlv("x"),)))
    client.send(dataclasses.replace(SHARE, channel_id=channel.channel_id))  # untagged is fine here
