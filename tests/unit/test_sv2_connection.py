"""Connection state machines: the happy path end to end, and every out-of-order rejection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.sv2.client import ClientConnection
from ckbpool.sv2.connection import ConnectionState
from ckbpool.sv2.errors import LocalProtocolError
from ckbpool.sv2.events import (
    ChannelClosed,
    ChannelInfo,
    ChannelKind,
    ChannelOpened,
    ChannelOpenRejected,
    ChannelUpdateRequested,
    ConnectionClosed,
    ConnectionSetUp,
    CustomMiningJobRequested,
    Event,
    ExtensionsNegotiated,
    MessageIgnored,
    MessageReceived,
    OpenExtendedChannelRequested,
    OpenStandardChannelRequested,
    Rejected,
    ShareSubmitted,
)
from ckbpool.sv2.framing import FrameHeader, encode_frame
from ckbpool.sv2.messages import (
    CkbJobTemplate,
    CkbSubmitSolution,
    CkbTemplateSubscribe,
    CloseChannel,
    Message,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    Reconnect,
    RequestExtensions,
    RequestExtensionsError,
    RequestExtensionsSuccess,
    SetCustomMiningJob,
    SetCustomMiningJobError,
    SetExtranoncePrefix,
    SetGroupChannel,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SetupConnectionError,
    SetupConnectionSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
    UpdateChannel,
    UpdateChannelError,
    decode_frame_bytes,
    encode_message,
)
from ckbpool.sv2.messages_ckb import EXTENSION_TYPE_CKB_TEMPLATE
from ckbpool.sv2.messages_mining import (
    REQUIRES_EXTENDED_CHANNELS,
    REQUIRES_FIXED_VERSION,
    REQUIRES_STANDARD_JOBS,
    REQUIRES_VERSION_ROLLING,
    REQUIRES_WORK_SELECTION,
)
from ckbpool.sv2.server import PreparedJobMessage, ServerConnection

pytestmark = pytest.mark.unit

TARGET = 0xFFFF << 208
POW_HASH = bytes.fromhex("d5a74fba920ad0d35ec5726f26327547cbc82180e356e5ccf6cf2e6bd75f8a66")
PARENT = bytes(range(32))


def setup_msg(protocol: int = 0, min_version: int = 2, max_version: int = 2, flags: int = 0) -> SetupConnection:
    return SetupConnection(protocol, min_version, max_version, flags, "pool.example", 3333, "ckbpool", "cpu", "0.1", "")


def replies(events: list[Event]) -> list[Message]:
    """Decode every frame the state machine put in the events' replies."""
    out = []
    for event in events:
        raw = event.reply
        while raw:
            n = 6 + FrameHeader.decode(raw).msg_length
            msg = decode_frame_bytes(raw[:n])
            assert isinstance(msg, Message)
            out.append(msg)
            raw = raw[n:]
    return out


def only(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]


def connected(
    client_flags: int = 0, success_flags: int = 0, **server_kwargs: object
) -> tuple[ServerConnection, ClientConnection]:
    server = ServerConnection(success_flags=success_flags, **server_kwargs)  # type: ignore[arg-type]
    client = ClientConnection()
    event = only(server.receive_data(client.send(setup_msg(flags=client_flags))))
    assert isinstance(event, ConnectionSetUp) and server.state is ConnectionState.CONNECTED
    assert isinstance(only(client.receive_data(event.reply)), ConnectionSetUp)
    assert client.state is ConnectionState.CONNECTED
    return server, client


def open_standard(
    server: ServerConnection, client: ClientConnection, request_id: int = 1, channel_id: int = 7, group: int = 0
) -> ChannelInfo:
    event = only(server.receive_data(client.send(OpenStandardMiningChannel(request_id, "ckb1q.w1", 2.0**40, TARGET))))
    assert isinstance(event, OpenStandardChannelRequested) and event.request.request_id == request_id
    frame = server.accept_standard_channel(request_id, channel_id, TARGET, b"\x00" * 7 + bytes([channel_id]), group)
    opened = only(client.receive_data(frame))
    assert isinstance(opened, ChannelOpened)
    return opened.channel


def open_extended(
    server: ServerConnection, client: ClientConnection, request_id: int = 2, channel_id: int = 8, group: int = 0
) -> ChannelInfo:
    request = OpenExtendedMiningChannel(request_id, "ckb1q.proxy", 2.0**50, TARGET, 4)
    event = only(server.receive_data(client.send(request)))
    assert isinstance(event, OpenExtendedChannelRequested)
    frame = server.accept_extended_channel(
        request_id, channel_id, TARGET, b"\x00\x00\x00" + bytes([channel_id]), 4, group
    )
    opened = only(client.receive_data(frame))
    assert isinstance(opened, ChannelOpened)
    return opened.channel


# --- the whole conversation ----------------------------------------------------------------------


def test_standard_channel_conversation() -> None:
    server, client = connected(client_flags=REQUIRES_STANDARD_JOBS | REQUIRES_VERSION_ROLLING, success_flags=1 << 31)
    assert client.setup_success == SetupConnectionSuccess(2, 1 << 31)
    channel = open_standard(server, client)
    assert channel == ChannelInfo(7, ChannelKind.STANDARD, "ckb1q.w1", 2.0**40, TARGET, b"\x00" * 7 + b"\x07", 0, 0)
    assert server.channels[7] == channel

    # New tip: a future job, then SetNewPrevHash activating it (the CKB profile's order).
    frames = server.send(NewMiningJob(7, 1, None, 0, POW_HASH)) + server.send(
        SetNewPrevHash(7, 1, PARENT, 1_700_000_000, 0x1D0A_BCDE)
    )
    events = client.receive_data(frames)
    assert [type(e) for e in events] == [MessageReceived, MessageReceived]
    assert isinstance(events[1], MessageReceived) and isinstance(events[1].message, SetNewPrevHash)

    # Same-height refresh: an active job (min_ntime set) needs no SetNewPrevHash.
    client.receive_data(server.send(NewMiningJob(7, 2, 1_700_000_000, 0, POW_HASH)))

    share = SubmitSharesStandard(7, 1, 1, 0xDEADBEEF, 1_700_000_000, 0x01020304)
    submitted = only(server.receive_data(client.send(share)))
    assert (
        isinstance(submitted, ShareSubmitted) and submitted.share == share and submitted.channel is server.channels[7]
    )
    ack = only(client.receive_data(server.acknowledge_shares(7, 1, 1, 4096)))
    assert isinstance(ack, MessageReceived) and ack.message == SubmitSharesSuccess(7, 1, 1, 4096)
    nack = only(client.receive_data(server.reject_share(7, 2, "stale-share")))
    assert isinstance(nack, MessageReceived) and nack.message == SubmitSharesError(7, 2, "stale-share")

    # Target changes are tracked on both ends.
    client.receive_data(server.send(SetTarget(7, TARGET >> 1)))
    assert client.channels[7].target == server.channels[7].target == TARGET >> 1

    # UpdateChannel is the pool's to answer.
    update = only(server.receive_data(client.send(UpdateChannel(7, 2.0**41, TARGET))))
    assert isinstance(update, ChannelUpdateRequested) and update.channel.nominal_hash_rate == 2.0**41

    closed = only(server.receive_data(client.send(CloseChannel(7, "bye"))))
    assert closed == ChannelClosed(7, "bye") and not server.channels and not client.channels


def test_extended_channel_and_group_conversation() -> None:
    server, client = connected(supported_extensions=[EXTENSION_TYPE_CKB_TEMPLATE])
    ext = open_extended(server, client, group=100)
    std = open_standard(server, client, request_id=3, channel_id=9, group=100)
    assert server.groups == client.groups == {100: {8, 9}}
    assert ext.extranonce_size == 4 and ext.kind is ChannelKind.EXTENDED

    job = NewExtendedMiningJob(100, 5, None, 0, True, (), POW_HASH, (1234).to_bytes(8, "little"))
    frames = server.send(job) + server.send(SetNewPrevHash(100, 5, PARENT, 1_700_000_000, 0x1D0ABCDE))
    assert [type(e) for e in client.receive_data(frames)] == [MessageReceived, MessageReceived]
    client.receive_data(server.send(SetTarget(100, 1234)))
    assert client.channels[8].target == client.channels[9].target == 1234

    share = SubmitSharesExtended(8, 1, 5, 1, 1_700_000_000, 2, b"\x00\x00\x00\x01")
    assert isinstance(only(server.receive_data(client.send(share))), ShareSubmitted)

    # A CloseChannel for the group closes every member.
    events = client.receive_data(server.close_channel(100, "maintenance"))
    assert events == [ChannelClosed(8, "maintenance"), ChannelClosed(9, "maintenance")]
    assert not server.channels and not client.channels and not server.groups
    assert std.channel_id == 9


def test_set_group_channel_moves_channels() -> None:
    server, client = connected()
    open_standard(server, client, request_id=1, channel_id=7)
    open_standard(server, client, request_id=2, channel_id=8)
    client.receive_data(server.send(SetGroupChannel(50, (7, 8))))
    assert server.groups[50] == client.groups[50] == {7, 8}
    assert client.channels[7].group_channel_id == 50
    client.receive_data(server.send(SetGroupChannel(60, (8,))))
    assert server.groups == client.groups == {50: {7}, 60: {8}}


def test_ckb_template_extension_negotiated() -> None:
    server, client = connected(supported_extensions=[EXTENSION_TYPE_CKB_TEMPLATE])
    negotiated = only(server.receive_data(client.send(RequestExtensions(1, (EXTENSION_TYPE_CKB_TEMPLATE, 0x0002)))))
    assert isinstance(negotiated, ExtensionsNegotiated)
    assert negotiated.extensions == {EXTENSION_TYPE_CKB_TEMPLATE}
    assert replies([negotiated]) == [RequestExtensionsSuccess(1, (EXTENSION_TYPE_CKB_TEMPLATE,))]
    client_side = only(client.receive_data(negotiated.reply))
    assert isinstance(client_side, ExtensionsNegotiated) and client.extensions == {EXTENSION_TYPE_CKB_TEMPLATE}

    open_extended(server, client)
    subscribed = only(server.receive_data(client.send(CkbTemplateSubscribe(8))))
    assert isinstance(subscribed, MessageReceived)
    got = only(client.receive_data(server.send(CkbJobTemplate(8, 5, b'{"number":"0x1"}'))))
    assert isinstance(got, MessageReceived) and isinstance(got.message, CkbJobTemplate)
    solution = CkbSubmitSolution(8, 3, 5, bytes(16))
    event = only(server.receive_data(client.send(solution)))
    assert isinstance(event, ShareSubmitted) and event.share == solution


# --- SetupConnection refusals --------------------------------------------------------------------


def refused(setup: SetupConnection, **server_kwargs: object) -> tuple[ConnectionClosed, SetupConnectionError]:
    server = ServerConnection(**server_kwargs)  # type: ignore[arg-type]
    event = only(server.receive_data(encode_message(setup)))
    assert isinstance(event, ConnectionClosed) and server.state is ConnectionState.CLOSED
    (error,) = replies([event])
    assert isinstance(error, SetupConnectionError) and error.error_code == event.error_code
    return event, error


def test_unsupported_protocol() -> None:
    _event, error = refused(setup_msg(protocol=2))
    assert error == SetupConnectionError(0, "unsupported-protocol")
    refused(setup_msg(protocol=0xFF))  # values SRI cannot even decode are answered too


def test_protocol_version_mismatch() -> None:
    _, error = refused(setup_msg(min_version=3, max_version=4))
    assert error == SetupConnectionError(0, "protocol-version-mismatch")
    refused(setup_msg(min_version=1, max_version=1))


def test_version_range_including_2_is_accepted() -> None:
    server = ServerConnection()
    event = only(server.receive_data(encode_message(setup_msg(min_version=1, max_version=5))))
    assert isinstance(event, ConnectionSetUp) and event.response.used_version == 2


def test_unsupported_feature_flags_lists_them() -> None:
    _, error = refused(setup_msg(flags=REQUIRES_WORK_SELECTION | REQUIRES_STANDARD_JOBS))
    assert error == SetupConnectionError(REQUIRES_WORK_SELECTION, "unsupported-feature-flags")
    # A server that fixes the version cannot serve a client that requires version rolling.
    _, error = refused(setup_msg(flags=REQUIRES_VERSION_ROLLING), success_flags=REQUIRES_FIXED_VERSION)
    assert error.flags == REQUIRES_VERSION_ROLLING


def test_unknown_setup_flag_bits_are_ignored() -> None:
    server = ServerConnection()
    assert isinstance(only(server.receive_data(encode_message(setup_msg(flags=1 << 20)))), ConnectionSetUp)


def test_client_sees_setup_error_and_closes() -> None:
    client = ClientConnection()
    client.send(setup_msg(flags=REQUIRES_WORK_SELECTION))
    event = only(client.receive_data(encode_message(SetupConnectionError(2, "unsupported-feature-flags"))))
    assert isinstance(event, ConnectionClosed) and event.error_code == "unsupported-feature-flags"
    assert client.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send(OpenStandardMiningChannel(1, "u", 0.0, TARGET))


# --- out of order ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        OpenStandardMiningChannel(1, "u", 0.0, TARGET),
        SubmitSharesStandard(1, 1, 1, 1, 1, 1),
        RequestExtensions(1, (1,)),
        SetupConnectionSuccess(2, 0),
    ],
    ids=lambda m: type(m).__name__,
)
def test_any_message_before_setup_connection_closes(first: Message) -> None:
    server = ServerConnection()
    event = only(server.receive_data(encode_message(first)))
    assert isinstance(event, ConnectionClosed) and event.error_code == "setup-connection-required"
    assert event.reply == b"" and server.state is ConnectionState.CLOSED
    # Whatever follows is dropped.
    assert server.receive_data(encode_message(setup_msg())) == []


def test_unknown_message_before_setup_connection_closes() -> None:
    server = ServerConnection()
    event = only(server.receive_data(encode_frame(0x4001, 3, b"")))
    assert isinstance(event, ConnectionClosed)


def test_second_setup_connection_closes() -> None:
    server, _client = connected()
    event = only(server.receive_data(encode_message(setup_msg())))
    assert isinstance(event, ConnectionClosed) and event.error_code == "unexpected-message"


@pytest.mark.parametrize(
    "message",
    [NewMiningJob(7, 1, None, 0, POW_HASH), SetTarget(7, 1), SubmitSharesSuccess(7, 1, 1, 1), Reconnect("", 0)],
    ids=lambda m: type(m).__name__,
)
def test_server_only_messages_from_a_client_close(message: Message) -> None:
    server, _ = connected()
    event = only(server.receive_data(encode_message(message)))
    assert isinstance(event, ConnectionClosed) and event.error_code == "unexpected-message"


def test_submit_shares_for_an_unknown_channel() -> None:
    server, _client = connected()
    event = only(server.receive_data(encode_message(SubmitSharesStandard(99, 5, 1, 1, 1, 1))))
    assert isinstance(event, Rejected) and event.error_code == "invalid-channel-id"
    assert replies([event]) == [SubmitSharesError(99, 5, "invalid-channel-id")]
    assert server.state is ConnectionState.CONNECTED
    event = only(server.receive_data(encode_message(SubmitSharesExtended(99, 6, 1, 1, 1, 1, b""))))
    assert replies([event]) == [SubmitSharesError(99, 6, "invalid-channel-id")]


def test_submit_shares_of_the_wrong_channel_kind_or_extranonce_size() -> None:
    server, client = connected()
    open_standard(server, client, channel_id=7)
    open_extended(server, client, channel_id=8)
    wrong_kind = only(server.receive_data(encode_message(SubmitSharesExtended(7, 1, 1, 1, 1, 1, b"1234"))))
    assert replies([wrong_kind]) == [SubmitSharesError(7, 1, "invalid-channel-id")]
    wrong_kind = only(server.receive_data(encode_message(SubmitSharesStandard(8, 2, 1, 1, 1, 1))))
    assert replies([wrong_kind]) == [SubmitSharesError(8, 2, "invalid-channel-id")]
    bad_size = only(server.receive_data(encode_message(SubmitSharesExtended(8, 3, 1, 1, 1, 1, b"123"))))
    assert replies([bad_size]) == [SubmitSharesError(8, 3, "bad-extranonce-size")]


def test_update_channel_for_an_unknown_channel() -> None:
    server, _ = connected()
    event = only(server.receive_data(encode_message(UpdateChannel(5, 1.0, TARGET))))
    assert replies([event]) == [UpdateChannelError(5, "invalid-channel-id")]


def test_close_channel_for_an_unknown_channel_is_ignored() -> None:
    server, _ = connected()
    assert isinstance(only(server.receive_data(encode_message(CloseChannel(5, "x")))), MessageIgnored)


def test_open_channel_refusals() -> None:
    server, _client = connected(success_flags=REQUIRES_EXTENDED_CHANNELS)
    event = only(server.receive_data(encode_message(OpenStandardMiningChannel(1, "u", 0.0, TARGET))))
    assert replies([event]) == [OpenMiningChannelError(1, "standard-channels-not-supported")]
    assert isinstance(event, Rejected) and server.state is ConnectionState.CONNECTED

    server, _ = connected(client_flags=REQUIRES_STANDARD_JOBS)
    event = only(server.receive_data(encode_message(OpenExtendedMiningChannel(1, "u", 0.0, TARGET, 4))))
    assert replies([event]) == [OpenMiningChannelError(1, "extended-channels-not-supported-for-standard-jobs")]

    server, _ = connected()
    server.receive_data(encode_message(OpenStandardMiningChannel(1, "u", 0.0, TARGET)))
    event = only(server.receive_data(encode_message(OpenExtendedMiningChannel(1, "u", 0.0, TARGET, 4))))
    assert replies([event]) == [OpenMiningChannelError(1, "duplicate-request-id")]


def test_pool_rejects_a_channel_request() -> None:
    server, client = connected()
    server.receive_data(client.send(OpenStandardMiningChannel(1, "nobody", 0.0, TARGET)))
    event = only(client.receive_data(server.reject_channel(1, "unknown-user")))
    assert event == ChannelOpenRejected(OpenMiningChannelError(1, "unknown-user"))
    assert not server.pending_requests and not client.pending_requests


def test_set_custom_mining_job_without_work_selection() -> None:
    server, client = connected()
    open_extended(server, client)
    job = SetCustomMiningJob(8, 1, b"tok", 0, PARENT, 0, 0, 2, b"", 0, b"", 0, ())
    event = only(server.receive_data(encode_message(job)))
    assert replies([event]) == [SetCustomMiningJobError(8, 1, "jd-not-supported")]
    event = only(
        server.receive_data(encode_message(SetCustomMiningJob(99, 2, b"", 0, PARENT, 0, 0, 2, b"", 0, b"", 0, ())))
    )
    assert replies([event]) == [SetCustomMiningJobError(99, 2, "invalid-channel-id")]


def test_set_custom_mining_job_with_work_selection() -> None:
    server, client = connected(
        client_flags=REQUIRES_WORK_SELECTION, supported_flags=REQUIRES_WORK_SELECTION | REQUIRES_VERSION_ROLLING
    )
    open_extended(server, client)
    job = SetCustomMiningJob(8, 1, b"tok", 0, PARENT, 0, 0, 2, b"", 0, b"", 0, ())
    assert isinstance(only(server.receive_data(client.send(job))), CustomMiningJobRequested)


def test_unknown_and_unnegotiated_extension_messages_are_ignored() -> None:
    server, client = connected(supported_extensions=[EXTENSION_TYPE_CKB_TEMPLATE])
    open_extended(server, client)
    event = only(server.receive_data(encode_frame(0x4001, 9, b"\x08\x00\x00\x00", channel_msg=True)))
    assert isinstance(event, MessageIgnored) and event.reply == b""
    # Known to us, but not negotiated on this connection.
    event = only(server.receive_data(encode_message(CkbSubmitSolution(8, 1, 1, bytes(16)))))
    assert isinstance(event, MessageIgnored) and event.reason == "extension not negotiated"
    with pytest.raises(LocalProtocolError, match="not negotiated"):
        server.send(CkbJobTemplate(8, 1, b"{}"))
    with pytest.raises(LocalProtocolError, match="not negotiated"):
        client.send(CkbTemplateSubscribe(8))


def test_request_extensions_error_cases() -> None:
    server, _ = connected()
    event = only(server.receive_data(encode_message(RequestExtensions(4, (0x0002,)))))
    assert isinstance(event, ExtensionsNegotiated) and event.extensions == frozenset()
    assert replies([event]) == [RequestExtensionsError(4, (0x0002,), ())]

    server, _ = connected(supported_extensions=[0x0002], required_extensions=[EXTENSION_TYPE_CKB_TEMPLATE])
    event = only(server.receive_data(encode_message(RequestExtensions(5, (0x0002, 0x0003)))))
    assert replies([event]) == [RequestExtensionsError(5, (0x0003,), (EXTENSION_TYPE_CKB_TEMPLATE,))]


def test_malformed_payload_closes_the_connection() -> None:
    server, _ = connected()
    event = only(server.receive_data(encode_frame(0, 0x1A, b"\x01\x02", channel_msg=True)))
    assert isinstance(event, ConnectionClosed) and event.error_code == "invalid-message"


def test_oversize_frame_closes_before_buffering() -> None:
    server = ServerConnection(max_payload=1024)
    event = only(server.receive_data(FrameHeader(0, 0, 1 << 20, False).encode()))
    assert isinstance(event, ConnectionClosed) and event.error_code == "frame-too-large"


def test_frames_as_bytes_from_the_noise_layer() -> None:
    server = ServerConnection()
    assert isinstance(only(server.receive_frame(encode_message(setup_msg()))), ConnectionSetUp)


@given(st.binary(max_size=300))
def test_arbitrary_input_never_raises(data: bytes) -> None:
    server = ServerConnection()
    server.receive_data(encode_message(setup_msg()) + data)
    client = ClientConnection()
    client.send(setup_msg())
    client.receive_data(encode_message(SetupConnectionSuccess(2, 0)) + data)


# --- the client side ------------------------------------------------------------------------------


def test_client_ignores_messages_for_closed_channels_and_closes_on_nonsense() -> None:
    server, client = connected()
    open_standard(server, client)
    client.send(CloseChannel(7, "done"))
    late = only(client.receive_data(encode_message(NewMiningJob(7, 3, None, 0, POW_HASH))))
    assert isinstance(late, MessageIgnored)
    assert isinstance(only(client.receive_data(encode_message(SubmitSharesSuccess(7, 1, 1, 1)))), MessageIgnored)
    unsolicited = only(client.receive_data(encode_message(OpenStandardMiningChannelSuccess(42, 9, 1, b"", 0))))
    assert isinstance(unsolicited, ConnectionClosed)


def test_client_closes_on_client_only_messages() -> None:
    _, client = connected()
    event = only(client.receive_data(encode_message(SubmitSharesStandard(1, 1, 1, 1, 1, 1))))
    assert isinstance(event, ConnectionClosed) and event.error_code == "unexpected-message"


def test_client_before_setup_success() -> None:
    client = ClientConnection()
    assert isinstance(only(client.receive_data(encode_message(SetupConnectionSuccess(2, 0)))), ConnectionClosed)
    client = ClientConnection()
    client.send(setup_msg())
    assert isinstance(only(client.receive_data(encode_message(SetTarget(1, 1)))), ConnectionClosed)
    client = ClientConnection()
    client.send(setup_msg())
    event = only(client.receive_data(encode_message(SetupConnectionSuccess(3, 0))))
    assert isinstance(event, ConnectionClosed) and event.error_code == "protocol-version-mismatch"


def test_client_send_checks() -> None:
    client = ClientConnection()
    with pytest.raises(LocalProtocolError):
        client.send(OpenStandardMiningChannel(1, "u", 0.0, TARGET))  # before SetupConnection
    with pytest.raises(LocalProtocolError):
        client.send(setup_msg(protocol=1))
    server, client = connected(client_flags=REQUIRES_STANDARD_JOBS)
    with pytest.raises(LocalProtocolError):
        client.send(setup_msg())
    with pytest.raises(LocalProtocolError, match="REQUIRES_STANDARD_JOBS"):
        client.send(OpenExtendedMiningChannel(1, "u", 0.0, TARGET, 4))
    with pytest.raises(LocalProtocolError):
        client.send(SubmitSharesStandard(7, 1, 1, 1, 1, 1))  # no such channel
    open_standard(server, client)
    with pytest.raises(LocalProtocolError, match="precede"):
        client.send(RequestExtensions(1, (EXTENSION_TYPE_CKB_TEMPLATE,)))
    with pytest.raises(LocalProtocolError, match="extended"):
        client.send(SubmitSharesExtended(7, 1, 1, 1, 1, 1, b""))
    with pytest.raises(LocalProtocolError):
        client.send(NewMiningJob(7, 1, None, 0, POW_HASH))  # server-only
    with pytest.raises(LocalProtocolError):
        client.send(SetCustomMiningJob(7, 1, b"", 0, PARENT, 0, 0, 2, b"", 0, b"", 0, ()))

    server, client = connected()
    open_extended(server, client)
    with pytest.raises(LocalProtocolError, match="4 bytes"):
        client.send(SubmitSharesExtended(8, 1, 1, 1, 1, 1, b"123"))


# --- server send-side checks ----------------------------------------------------------------------


def test_server_send_checks() -> None:
    server = ServerConnection()
    with pytest.raises(LocalProtocolError):
        server.send(SetTarget(1, 1))  # before setup
    server, client = connected(client_flags=REQUIRES_STANDARD_JOBS)
    open_standard(server, client)
    with pytest.raises(LocalProtocolError, match="future job"):
        server.send(SetNewPrevHash(7, 1, PARENT, 0, 0))
    server.send(NewMiningJob(7, 1, 1_700_000_000, 0, POW_HASH))  # an active job is not a future job
    with pytest.raises(LocalProtocolError, match="future job"):
        server.send(SetNewPrevHash(7, 1, PARENT, 0, 0))
    with pytest.raises(LocalProtocolError, match="standard channel"):
        server.send(NewExtendedMiningJob(7, 1, None, 0, True, (), POW_HASH, b""))
    with pytest.raises(LocalProtocolError, match="REQUIRES_STANDARD_JOBS"):
        server.send(SetGroupChannel(50, (7,)))
    with pytest.raises(LocalProtocolError):
        server.send(SubmitSharesStandard(7, 1, 1, 1, 1, 1))  # client-only
    with pytest.raises(LocalProtocolError):
        server.send(SetupConnectionSuccess(2, 0))  # automatic
    with pytest.raises(LocalProtocolError):
        server.accept_standard_channel(99, 8, TARGET, b"")  # no such request
    server.receive_data(client.send(OpenStandardMiningChannel(2, "u", 0.0, TARGET)))
    with pytest.raises(LocalProtocolError, match="in use"):
        server.accept_standard_channel(2, 7, TARGET, b"")
    with pytest.raises(LocalProtocolError, match="reserved"):
        server.accept_standard_channel(2, 0, TARGET, b"")
    with pytest.raises(LocalProtocolError, match="group"):
        server.accept_standard_channel(2, 8, TARGET, b"", group_channel_id=50)
    server.close_channel(7, "bye")
    with pytest.raises(LocalProtocolError, match="not open"):
        server.acknowledge_shares(7, 1, 1, 1)
    with pytest.raises(LocalProtocolError):
        server.send(NewMiningJob(7, 1, None, 0, POW_HASH))


def test_server_extended_channel_checks() -> None:
    server, client = connected()
    server.receive_data(client.send(OpenExtendedMiningChannel(1, "u", 0.0, TARGET, 6)))
    with pytest.raises(LocalProtocolError, match="minimum"):
        server.accept_extended_channel(1, 8, TARGET, b"\x00" * 4, 4)
    with pytest.raises(LocalProtocolError, match="no pending OpenStandardMiningChannel"):
        server.accept_standard_channel(1, 8, TARGET, b"\x00" * 8)
    server.accept_extended_channel(1, 8, TARGET, b"\x00" * 2, 6, group_channel_id=100)
    # Group members must share the full extranonce size (spec 5.2.3).
    server.receive_data(client.send(OpenStandardMiningChannel(2, "u", 0.0, TARGET)))
    with pytest.raises(LocalProtocolError, match="extranonce"):
        server.accept_standard_channel(2, 9, TARGET, b"\x00" * 7, group_channel_id=100)
    server.accept_standard_channel(2, 9, TARGET, b"\x00" * 8, group_channel_id=100)
    with pytest.raises(LocalProtocolError, match="group"):
        server.send(SetExtranoncePrefix(100, b""))
    with pytest.raises(LocalProtocolError, match="extranonce"):
        server.send(SetExtranoncePrefix(9, b"\x00" * 9))
    server.send(SetExtranoncePrefix(9, b"\x01" * 8))
    assert server.channels[9].extranonce_prefix == b"\x01" * 8
    # A SetNewPrevHash to a member channel may activate a future job sent to its group.
    server.send(NewExtendedMiningJob(100, 3, None, 0, True, (), POW_HASH, b""))
    server.send(SetNewPrevHash(9, 3, PARENT, 0, 0))


def test_a_job_encoded_once_for_many_channels_is_what_send_gives_each() -> None:
    """send_for_channel (the pool's fan-out) = send() of the same message with that channel id: the same bytes,
    the same checks, the same future-job bookkeeping (a SetNewPrevHash needs the future job first)."""
    server, client = connected()
    standard = open_standard(server, client, request_id=1, channel_id=7)
    extended = open_extended(server, client, request_id=2, channel_id=8)
    reference, ref_client = connected()
    open_standard(reference, ref_client, request_id=1, channel_id=7)
    open_extended(reference, ref_client, request_id=2, channel_id=8)

    job = PreparedJobMessage.of(NewMiningJob(0, 5, None, 0, POW_HASH))
    ext_job = PreparedJobMessage.of(NewExtendedMiningJob(0, 5, None, 0, True, (), POW_HASH, b"\x01" * 8))
    prev = PreparedJobMessage.of(SetNewPrevHash(0, 5, PARENT, 1_700_000_000, 0x1D00FFFF))
    with pytest.raises(LocalProtocolError, match="future job"):
        server.send_for_channel(prev, standard.channel_id)  # no future job yet
    sent = [
        server.send_for_channel(job, standard.channel_id),
        server.send_for_channel(prev, standard.channel_id),
        server.send_for_channel(ext_job, extended.channel_id),
        server.send_for_channel(prev, extended.channel_id),
    ]
    assert sent == [
        reference.send(NewMiningJob(7, 5, None, 0, POW_HASH)),
        reference.send(SetNewPrevHash(7, 5, PARENT, 1_700_000_000, 0x1D00FFFF)),
        reference.send(NewExtendedMiningJob(8, 5, None, 0, True, (), POW_HASH, b"\x01" * 8)),
        reference.send(SetNewPrevHash(8, 5, PARENT, 1_700_000_000, 0x1D00FFFF)),
    ]
    received = [e for frame in sent for e in client.receive_data(frame)]
    assert all(isinstance(e, MessageReceived) for e in received), received  # the client accepts them in order
    assert [e.message.channel_id for e in received if isinstance(e, MessageReceived)] == [7, 7, 8, 8]
    with pytest.raises(LocalProtocolError, match="future job"):
        server.send_for_channel(prev, standard.channel_id)  # SetNewPrevHash consumed the channel's future jobs
    with pytest.raises(LocalProtocolError, match="standard channel"):
        server.send_for_channel(job, extended.channel_id)
    with pytest.raises(LocalProtocolError, match="to standard channel"):
        server.send_for_channel(ext_job, standard.channel_id)
    with pytest.raises(LocalProtocolError, match="no extended channel or group 99"):
        server.send_for_channel(ext_job, 99)
