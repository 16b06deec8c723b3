"""CKB Stratum V1, sans-IO: the dialect byte for byte, the server and client state machines, the line limit."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.ckb.eaglesong import pow_output
from ckbpool.v1 import CKB_DIALECT, ClientSession, Dialect, LineBuffer, LineTooLong, ServerSession, StratumErrorCode
from ckbpool.v1.dialect import check_extranonce_sizes, format_job_id, parse_job_id, target_hex
from ckbpool.v1.errors import V1LocalProtocolError
from ckbpool.v1.events import (
    Answered,
    AuthorizeRequested,
    AuthorizeResult,
    ConnectionClosed,
    JobNotified,
    Rejected,
    ShareSubmitted,
    SubmitResult,
    SubscribeRequested,
    SubscribeResult,
    TargetSet,
)

pytestmark = pytest.mark.unit

# UUPool's CKB stratum example (protocols.md): extranonce1 || extranonce2 = nonce16.
POW_HASH = bytes.fromhex("d5a74fba920ad0d35ec5726f26327547cbc82180e356e5ccf6cf2e6bd75f8a66")
EXTRANONCE1 = bytes.fromhex("00c904bd")
EXTRANONCE2 = bytes.fromhex("000000000000000000114026")
PARENT = bytes(range(32))


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def subscribed(extranonce1: bytes = EXTRANONCE1, size: int = 12, authorize: str | None = "addr.rig1") -> ServerSession:
    session = ServerSession()
    [event] = session.receive_data(line({"id": 1, "method": "mining.subscribe", "params": ["ckbminer-v1.0.0", None]}))
    assert isinstance(event, SubscribeRequested)
    session.accept_subscribe(1, extranonce1, size)
    if authorize:
        session.receive_data(line({"id": 2, "method": "mining.authorize", "params": [authorize, "x"]}))
        session.accept_authorize(2, authorize)
    return session


def rejected_code(events: list[object]) -> StratumErrorCode:
    [event] = events
    assert isinstance(event, Rejected), event
    return event.code


# --- the dialect, byte for byte --------------------------------------------------------------------


def test_subscribe_result_is_btcpool_shape_with_a_json_null_and_lowercase_hex() -> None:
    assert CKB_DIALECT.subscribe_result(1, EXTRANONCE1, 12) == b'{"id":1,"result":[null,"00c904bd",12],"error":null}\n'
    assert CKB_DIALECT.subscribe_result("a", b"\xab\xcd\xef\x01\x02\x03", 10) == (
        b'{"id":"a","result":[null,"abcdef010203",10],"error":null}\n'
    )


def test_set_target_is_64_lowercase_big_endian_hex_digits() -> None:
    assert CKB_DIALECT.set_target(1 << 240) == (
        b'{"id":null,"method":"mining.set_target","params":["0001' + b"0" * 60 + b'"]}\n'
    )
    assert target_hex(0xABC) == "0" * 61 + "abc"
    with pytest.raises(ValueError):
        target_hex(0)
    with pytest.raises(ValueError):
        target_hex(1 << 256)


def test_notify_has_five_params_or_four_without_parent_hash() -> None:
    five = CKB_DIALECT.notify(0x1A2B, POW_HASH, 1234, PARENT, True)
    assert five == (
        b'{"id":null,"method":"mining.notify","params":["1a2b","'
        + POW_HASH.hex().encode()
        + b'",1234,"'
        + PARENT.hex().encode()
        + b'",true]}\n'
    )
    four = Dialect(notify_parent_hash=False).notify(7, POW_HASH, 0, PARENT, False)
    assert four == b'{"id":null,"method":"mining.notify","params":["7","' + POW_HASH.hex().encode() + b'",0,false]}\n'
    for raw in (five, four):
        assert json.loads(raw)["id"] is None and raw.endswith(b"}\n") and b" " not in raw


def test_errors_echo_the_id_unchanged_and_use_btcpool_codes() -> None:
    assert CKB_DIALECT.error(5, StratumErrorCode.JOB_NOT_FOUND) == (
        b'{"id":5,"result":null,"error":[21,"Job not found (=stale)",null]}\n'
    )
    assert CKB_DIALECT.error("x-1", StratumErrorCode.LOW_DIFFICULTY) == (
        b'{"id":"x-1","result":null,"error":[23,"Low difficulty",null]}\n'
    )
    assert CKB_DIALECT.error(None, StratumErrorCode.ILLEGAL_METHOD, 'm"\u00e9') == (
        b'{"id":null,"result":null,"error":[26,"Illegal method: m\\"\\u00e9",null]}\n'
    )
    assert CKB_DIALECT.result_true(9) == b'{"id":9,"result":true,"error":null}\n'


def test_job_ids_are_unpadded_lowercase_hex() -> None:
    assert format_job_id(255) == "ff"
    assert parse_job_id("FF") == 255
    assert parse_job_id("") is None and parse_job_id("zz") is None and parse_job_id("1" * 17) is None


def test_extranonce_size_rules() -> None:
    check_extranonce_sizes(4, 12)
    check_extranonce_sizes(8, 8)
    with pytest.raises(ValueError):
        check_extranonce_sizes(4, 11)
    with pytest.raises(ValueError):
        check_extranonce_sizes(0, 16)


def test_uupool_vector_nonce16_is_extranonce1_then_extranonce2() -> None:
    session = subscribed()
    nonce16 = session.nonce16(EXTRANONCE2)
    assert int.from_bytes(nonce16, "little") == 0x264011000000000000000000BD04C900
    assert pow_output(POW_HASH, nonce16).hex() == "000034965758f32a266558876abba7be3ea343086bf048c9fc3c854e77a2f360"


# --- server state machine ----------------------------------------------------------------------------


def test_happy_path_events() -> None:
    session = ServerSession()
    data = line({"id": 1, "method": "mining.subscribe", "params": ["cgminer", None, "h", "3333"]}) + line(
        {"id": 2, "method": "mining.authorize", "params": ["addr.w1", "pw"]}
    )
    sub, auth = session.receive_data(data)
    assert isinstance(sub, SubscribeRequested) and sub.agent == "cgminer" and not sub.reply
    assert isinstance(auth, AuthorizeRequested) and (auth.username, auth.password) == ("addr.w1", "pw")
    assert not session.ready
    session.accept_subscribe(sub.request_id, EXTRANONCE1, 12)
    session.accept_authorize(auth.request_id, auth.username)
    assert session.ready
    assert session.set_target(1 << 250).startswith(b'{"id":null,"method":"mining.set_target"')
    [share] = session.receive_data(line({"id": 3, "method": "mining.submit", "params": ["addr.w1", "1a", "00" * 12]}))
    assert isinstance(share, ShareSubmitted)
    assert (share.job_id, share.extranonce2) == ("1a", bytes(12))


def test_submit_before_subscribe_and_before_authorize() -> None:
    session = ServerSession()
    submit = line({"id": 3, "method": "mining.submit", "params": ["a.b", "1", "00" * 12]})
    assert rejected_code(session.receive_data(submit)) is StratumErrorCode.NOT_SUBSCRIBED
    session.receive_data(line({"id": 1, "method": "mining.subscribe", "params": []}))
    assert rejected_code(session.receive_data(submit)) is StratumErrorCode.NOT_SUBSCRIBED  # not answered yet
    session.accept_subscribe(1, EXTRANONCE1, 12)
    events = session.receive_data(submit)
    assert rejected_code(events) is StratumErrorCode.UNAUTHORIZED
    assert events[0].reply == b'{"id":3,"result":null,"error":[24,"Unauthorized worker",null]}\n'


def test_submit_for_a_worker_that_was_not_authorized() -> None:
    session = subscribed(authorize="a.rig1")
    submit = line({"id": 3, "method": "mining.submit", "params": ["a.rig2", "1", "00" * 12]})
    assert rejected_code(session.receive_data(submit)) is StratumErrorCode.UNAUTHORIZED


@pytest.mark.parametrize(
    "extranonce2", ["00" * 11, "00" * 13, "zz" * 12, "00 " * 8, "0" * 23, "", "00" * 11 + "0g"], ids=repr
)
def test_wrong_extranonce2_is_illegal_params(extranonce2: str) -> None:
    session = subscribed()
    events = session.receive_data(line({"id": 4, "method": "mining.submit", "params": ["addr.rig1", "1", extranonce2]}))
    assert rejected_code(events) is StratumErrorCode.ILLEGAL_PARAMS
    assert b"extranonce2 must be 12 bytes (24 hex digits)" in events[0].reply


def test_uppercase_extranonce2_is_accepted() -> None:
    session = subscribed()
    [event] = session.receive_data(line({"id": 4, "method": "mining.submit", "params": ["addr.rig1", "1", "AB" * 12]}))
    assert isinstance(event, ShareSubmitted) and event.extranonce2 == b"\xab" * 12


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json\n", StratumErrorCode.ILLEGAL_METHOD),
        (b"[1,2]\n", StratumErrorCode.ILLEGAL_METHOD),
        (b'"x"\n', StratumErrorCode.ILLEGAL_METHOD),
        (b"\xff\xfe\n", StratumErrorCode.ILLEGAL_METHOD),
        (b'{"id":7,"params":[]}\n', StratumErrorCode.ILLEGAL_METHOD),
        (b'{"id":7,"method":"mining.nonsense","params":[]}\n', StratumErrorCode.ILLEGAL_METHOD),
        (b'{"id":7,"method":"mining.submit","params":{"a":1}}\n', StratumErrorCode.ILLEGAL_PARAMS),
        (b'{"id":7,"method":"mining.submit","params":["addr.rig1","1"]}\n', StratumErrorCode.ILLEGAL_PARAMS),
        (b'{"id":7,"method":"mining.submit","params":["addr.rig1",1,"00"]}\n', StratumErrorCode.ILLEGAL_PARAMS),
        (b'{"id":7,"method":"mining.subscribe","params":[]}\n', StratumErrorCode.NOT_SUPPORTED),
        (b'{"id":7,"method":"mining.authorize","params":[]}\n', StratumErrorCode.INVALID_USERNAME),
        (b'{"id":7,"method":"mining.authorize","params":[" "]}\n', StratumErrorCode.INVALID_USERNAME),
        (b'{"id":7,"method":"mining.authorize","params":[5,"x"]}\n', StratumErrorCode.INVALID_USERNAME),
    ],
)
def test_bad_requests_get_json_rpc_errors_and_the_session_goes_on(raw: bytes, code: StratumErrorCode) -> None:
    session = subscribed()
    events = session.receive_data(raw)
    assert rejected_code(events) is code
    reply = json.loads(events[0].reply)
    assert reply["result"] is None and reply["error"][0] == code and reply["error"][2] is None
    assert not session.closed
    [ok] = session.receive_data(line({"id": 8, "method": "mining.submit", "params": ["addr.rig1", "1", "00" * 12]}))
    assert isinstance(ok, ShareSubmitted)


def test_authorize_before_subscribe() -> None:
    session = ServerSession()
    events = session.receive_data(line({"id": 2, "method": "mining.authorize", "params": ["a.b", "x"]}))
    assert rejected_code(events) is StratumErrorCode.NOT_SUBSCRIBED


def test_extranonce_subscribe_is_answered_true_or_not_supported() -> None:
    session = subscribed()
    [event] = session.receive_data(line({"id": 3, "method": "mining.extranonce.subscribe", "params": []}))
    assert isinstance(event, Answered) and event.reply == b'{"id":3,"result":true,"error":null}\n'
    strict = ServerSession(dialect=Dialect(extranonce_subscribe=False))
    events = strict.receive_data(line({"id": 3, "method": "mining.extranonce.subscribe", "params": []}))
    assert rejected_code(events) is StratumErrorCode.NOT_SUPPORTED


def test_a_line_over_the_limit_closes_the_connection() -> None:
    session = ServerSession(max_line_bytes=16 * 1024)
    [event] = session.receive_data(b'{"id":1,"method":"' + b"a" * (16 * 1024) + b'"}\n')
    assert isinstance(event, ConnectionClosed) and session.closed
    assert session.receive_data(line({"id": 1, "method": "mining.subscribe", "params": []})) == []


def test_an_unterminated_line_over_the_limit_closes_before_buffering_more() -> None:
    session = ServerSession(max_line_bytes=1024)
    assert session.receive_data(b"x" * 1000) == []
    [event] = session.receive_data(b"x" * 100)
    assert isinstance(event, ConnectionClosed)


def test_too_many_bad_requests_in_a_row_close_the_session() -> None:
    session = ServerSession(max_bad_requests=3)
    events = session.receive_data(b"junk\n" * 5)
    assert [type(e) for e in events] == [Rejected, Rejected, Rejected, Rejected, ConnectionClosed]


def test_crlf_and_blank_lines() -> None:
    session = ServerSession()
    [event] = session.receive_data(b'\r\n\n{"id":1,"method":"mining.subscribe","params":[]}\r\n')
    assert isinstance(event, SubscribeRequested)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=30))
def test_any_split_of_the_stream_gives_the_same_events(cuts: list[int]) -> None:
    data = (
        line({"id": 1, "method": "mining.subscribe", "params": ["a", None]})
        + line({"id": 2, "method": "mining.authorize", "params": ["addr.rig1", "x"]})
        + b"garbage\n"
    )
    whole = ServerSession().receive_data(data)
    session = ServerSession()
    events = []
    pos = 0
    for cut in cuts:
        events += session.receive_data(data[pos : pos + cut])
        pos += cut
    events += session.receive_data(data[pos:])
    assert events == whole


def test_local_misuse_raises() -> None:
    session = ServerSession()
    with pytest.raises(V1LocalProtocolError):
        session.accept_subscribe(1, EXTRANONCE1, 12)
    session.receive_data(line({"id": 1, "method": "mining.subscribe", "params": []}))
    with pytest.raises(ValueError):
        session.accept_subscribe(1, EXTRANONCE1, 11)
    with pytest.raises(V1LocalProtocolError):
        session.set_target(1)


# --- client side and round trip --------------------------------------------------------------------------


def test_client_and_server_round_trip() -> None:
    client, server = ClientSession(), ServerSession()
    events = server.receive_data(client.subscribe("cpu", "127.0.0.1", 3333) + client.authorize("addr.rig1"))
    sub, auth = events
    assert isinstance(sub, SubscribeRequested) and isinstance(auth, AuthorizeRequested)
    out = server.accept_subscribe(sub.request_id, EXTRANONCE1, 12) + server.accept_authorize(
        auth.request_id, "addr.rig1"
    )
    out += server.set_target(1 << 240) + CKB_DIALECT.notify(1, POW_HASH, 5, PARENT, True)
    got = client.receive_data(out)
    assert isinstance(got[0], SubscribeResult) and got[0].extranonce1 == EXTRANONCE1 and got[0].extranonce2_size == 12
    assert isinstance(got[1], AuthorizeResult) and got[1].authorized
    assert isinstance(got[2], TargetSet) and got[2].target == 1 << 240
    assert got[3] == JobNotified("1", POW_HASH, 5, PARENT, True)
    request_id, submit = client.submit("addr.rig1", "1", EXTRANONCE2)
    [share] = server.receive_data(submit)
    assert isinstance(share, ShareSubmitted) and share.extranonce2 == EXTRANONCE2
    [ok] = client.receive_data(server.accept_share(share.request_id))
    assert ok == SubmitResult(request_id, True, None, "")
    request_id, submit = client.submit("addr.rig1", "1", EXTRANONCE2)
    [share] = server.receive_data(submit)
    [bad] = client.receive_data(server.reject(share.request_id, StratumErrorCode.DUPLICATE_SHARE))
    assert bad == SubmitResult(request_id, False, 22, "Duplicate share")


def test_client_closes_on_a_misshapen_server_line() -> None:
    client = ClientSession()
    [event] = client.receive_data(b'{"id":null,"method":"mining.set_target","params":["abc"]}\n')
    assert isinstance(event, ConnectionClosed)


def test_line_buffer() -> None:
    buf = LineBuffer(8)
    assert buf.feed(b"ab\ncd") == [b"ab"]
    assert buf.feed(b"ef\r\n\n") == [b"cdef"]
    with pytest.raises(LineTooLong):
        buf.feed(b"123456789")
    with pytest.raises(LineTooLong):
        LineBuffer(4).feed(b"12345\n")
    assert re.fullmatch(rb"[0-9a-f]{64}", target_hex(12345).encode())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.sampled_from(
                [
                    b'{"id":1,"method":"mining.subscribe","params":[]}\n',
                    b'{"id":2,"method":"mining.authorize","params":["a.b","x"]}\n',
                    b'{"id":3,"method":"mining.submit","params":["a.b","1","' + b"00" * 12 + b'"]}\n',
                    b'{"id":{},"method":[],"params":null}\n',
                    b"\n",
                ]
            ),
        ),
        max_size=20,
    )
)
def test_arbitrary_input_never_raises_and_every_reply_is_one_json_line(chunks: list[bytes]) -> None:
    session = ServerSession(max_line_bytes=256)
    for chunk in chunks:
        for event in session.receive_data(chunk):
            if isinstance(event, SubscribeRequested):
                session.accept_subscribe(event.request_id, EXTRANONCE1, 12)
            elif isinstance(event, AuthorizeRequested):
                session.accept_authorize(event.request_id, event.username)
            if event.reply:
                assert event.reply.endswith(b"\n") and event.reply.count(b"\n") == 1
                reply = json.loads(event.reply)
                assert set(reply) == {"id", "result", "error"}
