"""The pool's shortcuts in ``ServerConnection`` (issue 19): ``receive_standard_share`` must give the same event as
``receive_frame`` for SubmitSharesStandard frames and leave every other frame (and state) to it;
``send_new_tip`` must give the frames, refusals and state of ``send_for_channel`` twice (job, SetNewPrevHash)."""

from __future__ import annotations

import pytest

from ckbpool.sv2.errors import LocalProtocolError
from ckbpool.sv2.events import Rejected, ShareSubmitted
from ckbpool.sv2.messages import (
    OpenExtendedMiningChannel,
    OpenStandardMiningChannel,
    SetupConnection,
    encode_message,
)
from ckbpool.sv2.messages_common import PROTOCOL_MINING
from ckbpool.sv2.messages_mining import (
    NewExtendedMiningJob,
    NewMiningJob,
    SetNewPrevHash,
    SubmitSharesExtended,
    SubmitSharesStandard,
    UpdateChannel,
)
from ckbpool.sv2.server import PreparedJobMessage, ServerConnection

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


def _prepared(job_id: int) -> tuple[PreparedJobMessage, PreparedJobMessage, PreparedJobMessage]:
    standard = PreparedJobMessage.of(NewMiningJob(0, job_id, None, 1, bytes(32)))
    extended = PreparedJobMessage.of(NewExtendedMiningJob(0, job_id, None, 1, True, (), b"", b""))
    prev_hash = PreparedJobMessage.of(SetNewPrevHash(0, job_id, bytes(range(32)), 1_700_000_000, 0x1D00FFFF))
    return standard, extended, prev_hash


def test_a_new_tip_gives_what_two_send_for_channel_calls_give() -> None:
    fast, _, _ = _connected()
    slow, standard, extended = _connected()
    for job_id in (3, 4):
        std_job, ext_job, prev_hash = _prepared(job_id)
        # a future job left pending on the standard channel: the SetNewPrevHash drops it either way
        pending = PreparedJobMessage.of(NewMiningJob(0, 99, None, 1, bytes(32)))
        assert fast.send_for_channel(pending, standard) == slow.send_for_channel(pending, standard)
        for channel_id, job in ((standard, std_job), (extended, ext_job)):
            got = fast.send_new_tip(job, prev_hash, channel_id)
            want = (slow.send_for_channel(job, channel_id), slow.send_for_channel(prev_hash, channel_id))
            assert got == want
        assert fast._future_jobs == slow._future_jobs == {}
    std_job, ext_job, prev_hash = _prepared(5)
    for conn in (fast, slow):  # a job of the wrong kind or an unknown channel is refused, and nothing recorded
        with pytest.raises(LocalProtocolError):
            conn.send_new_tip(ext_job, prev_hash, standard)
        with pytest.raises(LocalProtocolError):
            conn.send_new_tip(std_job, prev_hash, 99)
        assert conn._future_jobs == {}
    other = _prepared(6)[2]  # a SetNewPrevHash of another job: the two calls, which refuse it
    with pytest.raises(LocalProtocolError):
        fast.send_new_tip(std_job, other, standard)
