"""The IPC bus's SHARES codec in C (``ckbpool.bus._sharecodec``) against a ``struct`` reference of its format.

The reference below is the Python codec the C one replaced (issue 19), kept here as the format's executable
definition: the C encoder must write the same bytes, the C decoder must give the same Shares, and any payload the
reference refuses (FrameError) the C decoder must refuse too -- including every payload a random byte flip, cut or
extension makes of a valid one.
"""

from __future__ import annotations

import contextlib
import math
import struct
import sys
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckbpool.bus.events import SEQ_MAX, Share
from ckbpool.bus.ipc import FrameError, decode_shares, encode_shares

_SHARE = struct.Struct(">IQQ16s32sd??dQIIIIIB")
_COUNTS = struct.Struct(">II")
_LEN = struct.Struct(">I")


def ref_encode(shares: Sequence[Share]) -> bytes:
    table: dict[str, int] = {}
    ref = table.setdefault
    records, hashes = [], []
    for s in shares:
        records.append(
            _SHARE.pack(
                s.channel_id, s.job_id, s.height, s.nonce.to_bytes(16, "little"), s.share_target.to_bytes(32, "little"),
                s.share_difficulty, s.accepted, s.is_block, s.timestamp, s.seq, ref(s.server_id, len(table)),
                ref(s.user, len(table)), ref(s.worker, len(table)), ref(s.reason, len(table)),
                ref(s.source, len(table)), len(s.block_hash),
            )
        )  # fmt: skip
        if s.block_hash:
            hashes.append(s.block_hash)
    parts = [_COUNTS.pack(len(table), len(shares))]
    for text in table:
        data = text.encode()
        parts += [_LEN.pack(len(data)), data]
    return b"".join(parts + records + hashes)


def ref_decode(payload: bytes) -> list[Share]:
    try:
        count, total = _COUNTS.unpack_from(payload, 0)
        offset = _COUNTS.size
        strings = []
        for _ in range(count):
            (size,) = _LEN.unpack_from(payload, offset)
            offset += 4
            if offset + size > len(payload):
                raise FrameError("string past the end")
            strings.append(payload[offset : offset + size].decode())
            offset += size
        end = offset + total * _SHARE.size
        if end > len(payload):
            raise FrameError("records past the end")
        shares, hashes = [], end
        for cid, job, height, nonce, target, diff, acc, blk, ts, seq, si, ui, wi, ri, so, hl in _SHARE.iter_unpack(
            payload[offset:end]
        ):
            block_hash = payload[hashes : hashes + hl]
            if len(block_hash) != hl:
                raise FrameError("hash past the end")
            hashes += hl
            if seq > SEQ_MAX:
                raise FrameError("seq")
            shares.append(
                tuple.__new__(
                    Share,
                    (strings[si], cid, strings[ui], strings[wi], job, height, int.from_bytes(nonce, "little"),
                     int.from_bytes(target, "little"), diff, acc, strings[ri], blk, block_hash, ts, strings[so], seq),
                )
            )  # fmt: skip
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise FrameError(str(exc)) from exc
    if hashes != len(payload):
        raise FrameError("trailing bytes")
    return shares


_names = st.sampled_from(["", "alice", "ckt1qyq\u00e9", "tab\tname", "rig-\u2603", "a.b", "\U0001f600"]) | st.text()
_floats = st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, 1e-300, math.inf])
shares_strategy = st.lists(
    st.builds(
        Share,
        server_id=_names,
        channel_id=st.integers(0, 2**32 - 1),
        user=_names,
        worker=_names,
        job_id=st.integers(0, 2**64 - 1),
        height=st.integers(0, 2**64 - 1),
        nonce=st.integers(0, 2**128 - 1),
        share_target=st.sampled_from([1, 1 << 240, 2**256 - 1]) | st.integers(0, 2**256 - 1),
        share_difficulty=_floats,
        accepted=st.booleans(),
        reason=_names,
        is_block=st.booleans(),
        block_hash=st.binary(max_size=255),
        timestamp=_floats,
        source=_names,
        seq=st.integers(0, SEQ_MAX),
    ),
    max_size=12,
)


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(shares_strategy)
def test_c_codec_writes_the_reference_bytes_and_reads_them_back(shares: list[Share]) -> None:
    data = encode_shares(shares)
    assert data == ref_encode(shares)
    decoded = decode_shares(data)
    assert decoded == shares and all(type(s) is Share for s in decoded)
    assert decode_shares(memoryview(bytearray(data))) == shares  # any buffer


def _same(a: list[Share], b: list[Share]) -> bool:
    """Equal, NaN fields included (a flipped byte can make one): compared as the reference writes them."""
    return all(type(s) is Share for s in a) and ref_encode(a) == ref_encode(b)


@pytest.mark.unit
@settings(max_examples=400, deadline=None)
@given(shares_strategy.filter(bool), st.data())
def test_a_damaged_payload_is_refused_exactly_when_the_reference_refuses_it(
    shares: list[Share], data: st.DataObject
) -> None:
    payload = bytearray(ref_encode(shares))
    how = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(payload) - 1))
            payload[at] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del payload[data.draw(st.integers(0, len(payload) - 1)) :]
    else:
        payload += data.draw(st.binary(min_size=1, max_size=40))
    try:
        expected = ref_decode(bytes(payload))
    except FrameError:
        with pytest.raises(FrameError):
            decode_shares(bytes(payload))
        return
    assert _same(decode_shares(bytes(payload)), expected)


@pytest.mark.unit
def test_counts_far_beyond_the_payload_are_refused_before_anything_is_allocated() -> None:
    with pytest.raises(FrameError, match="strings"):
        decode_shares(_COUNTS.pack(0xFFFFFFFF, 0))
    with pytest.raises(FrameError, match="records"):
        decode_shares(_COUNTS.pack(0, 0xFFFFFFFF))
    with pytest.raises(FrameError):
        decode_shares(b"\x00" * 7)
    with pytest.raises(TypeError):
        decode_shares("not bytes")  # type: ignore[arg-type]


@pytest.mark.unit
def test_encode_names_the_field_that_does_not_fit() -> None:
    good = Share("s", 1, "u", "w", 1, 1, 1, 1, 1.0, True, "", False, b"", 1.0, "src", 1)
    unchecked = list(good)  # built past Share's own checks, as a buggy producer could
    unchecked[1] = 2**32
    with pytest.raises(OverflowError, match="channel_id"):
        encode_shares([tuple.__new__(Share, unchecked)])
    unchecked = list(good)
    unchecked[7] = 2**256
    with pytest.raises(OverflowError, match="share_target"):
        encode_shares([tuple.__new__(Share, unchecked)])
    with pytest.raises(OverflowError, match="block_hash"):
        encode_shares([good.replace(is_block=True, block_hash=b"\x01" * 256)])
    with pytest.raises(TypeError, match="item 1"):
        encode_shares([good, ("not", "a", "share")])  # type: ignore[list-item]
    with pytest.raises(UnicodeEncodeError):
        encode_shares([good.replace(user="\udc80")])


@pytest.mark.unit
def test_decode_keeps_no_reference_it_does_not_own() -> None:
    """Refcounts: the decoded Shares hold the only references the codec made (a leak or a double free here would
    grow or crash a parent that decodes every share of every worker)."""
    shares = [
        Share("s", i, "u", "w", i, i, i, 1 << 240, 1.0, True, "", False, b"", 1.5, "src", i + 1) for i in range(64)
    ]
    data = encode_shares(shares)
    decode_shares(data)  # warm the small-int and interned caches
    before = sys.getrefcount(Share), sys.getrefcount(True)
    for _ in range(200):
        out = decode_shares(data)
        del out
        with contextlib.suppress(FrameError):
            decode_shares(data[:-1])
    assert (sys.getrefcount(Share), sys.getrefcount(True)) == before
