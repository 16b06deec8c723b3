"""``ServerConnection.receive_standard_share``: the pool's shortcut for SubmitSharesStandard frames must give the
same event as ``receive_frame`` and leave every other frame (and state) to it (issue 19)."""

from __future__ import annotations

import pytest

from ckbpool.sv2.events import Rejected, ShareSubmitted
from ckbpool.sv2.messages import (
    OpenExtendedMiningChannel,
    OpenStandardMiningChannel,
    SetupConnection,
    encode_message,
)
from ckbpool.sv2.messages_common import PROTOCOL_MINING
from ckbpool.sv2.messages_mining import SubmitSharesExtended, SubmitSharesStandard, UpdateChannel
from ckbpool.sv2.server import ServerConnection

pytestmark = pytest.mark.unit


def _connected() -> tuple[ServerConnection, int, int]:
    conn = ServerConnection()
    conn.receive_frame(encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "h", 0, "v", "", "", "")))
    conn.receive_frame(encode_message(OpenStandardMiningChannel(1, "alice.rig", 1e6, (1 << 256) - 1)))
    conn.accept_standard_channel(1, 7, 1 << 250, bytes(8))
    conn.receive_frame(encode_message(OpenExtendedMiningChannel(2, "alice.rig", 1e6, (1 << 256) - 1, 4)))
    conn.accept_extended_channel(2, 8, 1 << 250, bytes(4), 4)
    return conn, 7, 8


def _same(event: object, reference: object) -> bool:
    if isinstance(event, ShareSubmitted) and isinstance(reference, ShareSubmitted):
        return event == reference
    if isinstance(event, Rejected) and isinstance(reference, Rejected):
        return (event.error_code, event.reply, event.message) == (
            reference.error_code,
            reference.reply,
            reference.message,
        )
    return False


def test_a_standard_share_gives_the_event_receive_frame_gives() -> None:
    conn, standard, extended = _connected()
    for channel_id in (standard, extended, 99):  # open standard; extended (wrong kind); unknown
        frame = encode_message(SubmitSharesStandard(channel_id, 5, 3, 0xDEADBEEF, 1_700_000_000, 0))
        event = conn.receive_standard_share(frame)
        (reference,) = conn.receive_frame(frame)
        assert _same(event, reference), (channel_id, event, reference)
    share = conn.receive_standard_share(encode_message(SubmitSharesStandard(standard, 5, 3, 9, 10, 11)))
    assert isinstance(share, ShareSubmitted) and share.share == SubmitSharesStandard(standard, 5, 3, 9, 10, 11)
    assert share.channel is conn.channels[standard]


def test_every_other_frame_and_state_is_left_to_receive_frame() -> None:
    before_setup = ServerConnection()
    frame = encode_message(SubmitSharesStandard(7, 5, 3, 9, 10, 11))
    assert before_setup.receive_standard_share(frame) is None  # receive_frame closes this connection
    conn, standard, extended = _connected()
    others = [
        encode_message(SubmitSharesExtended(extended, 1, 3, 9, 10, 11, b"\x00" * 4)),
        encode_message(UpdateChannel(standard, 1e6, 0)),
        frame[:-1],  # truncated
        frame + b"\x00",  # longer than its header says
        frame[:3] + b"\x19" + frame[4:],  # header announces 25 bytes
    ]
    for other in others:
        assert conn.receive_standard_share(other) is None
    closed = ServerConnection()
    closed.receive_frame(frame)  # a share before SetupConnection closes the connection
    assert closed.receive_standard_share(frame) is None
