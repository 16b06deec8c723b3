"""Reading one share-log entry of either format (ckbpool.payouts.pplns): a batched entry's lines become the same
records and field dicts a per-share entry gives, escapes come back, and a malformed entry is refused loudly (a
window read past a damaged entry would pay the wrong people)."""

from __future__ import annotations

import pytest

from ckbpool.payouts.pplns import (
    ShareLogError,
    ShareRecord,
    _next_count,
    entry_records,
    entry_shares,
    entry_size,
    record_from_fields,
)

pytestmark = pytest.mark.unit

LINES = "ckt1a\trig1\t1700000000.25\ts-1:7\t4096\nckt1b\trig2\t1700000000.5\ts-1:8\t8192"
BATCHED = {"n": "2", "s": LINES, "work": "12288", "cum": "12288", "ncum": "2", "ecum": "1"}


def test_a_batched_entry_gives_the_records_of_its_per_share_entries_in_order() -> None:
    records = entry_records("1700000000500-0", BATCHED)
    assert records == [
        ShareRecord("ckt1a", 4096, 1700000000.25, "s-1:7"),
        ShareRecord("ckt1b", 8192, 1700000000.5, "s-1:8"),
    ]
    per_share = {"user": "ckt1a", "worker": "rig1", "ts": "1700000000.25", "id": "s-1:7", "work": "4096", "cum": "1"}
    assert entry_records("1700000000250-0", per_share) == [record_from_fields("1700000000250-0", per_share)]
    assert records[0] == record_from_fields("x", per_share)


def test_entry_shares_takes_bytes_and_gives_field_dicts() -> None:
    raw = {k.encode(): v.encode() for k, v in BATCHED.items()}
    shares = entry_shares(b"1700000000500-0", raw)
    assert shares[1] == {"user": "ckt1b", "worker": "rig2", "ts": "1700000000.5", "id": "s-1:8", "work": "8192"}
    assert entry_shares(b"1-0", {b"user": b"u", b"work": b"1"}) == [{"user": "u", "work": "1"}]
    assert entry_size(raw) == 2 and entry_size({b"user": b"u"}) == 1


def test_escaped_names_come_back() -> None:
    entry = {"n": "1", "s": "a\\tb\\\\c\tw\\n\t1.0\ts\\\\1:1\t5"}
    assert entry_shares("1-0", entry) == [
        {"user": "a\tb\\c", "worker": "w\n", "ts": "1.0", "id": "s\\1:1", "work": "5"}
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"n": "3", "s": LINES},  # fewer lines than n
        {"n": "1", "s": "ckt1a\trig1\t1.0\ts-1:7"},  # four fields
        {"n": "1", "s": "\trig1\t1.0\ts-1:7\t5"},  # no user
        {"n": "1", "s": "ckt1a\trig1\t1.0\ts-1:7\tlots"},  # work not a number
        {"n": "x", "s": LINES},
    ],
)
def test_a_malformed_batched_entry_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ShareLogError):
        entry_records("1-0", fields)


def test_pages_are_sized_in_shares() -> None:
    batched = [(b"1-0", {b"n": b"1000", b"s": b""})] * 4
    assert _next_count(batched, 5000) == 5
    assert _next_count([(b"1-0", {b"user": b"u"})] * 8, 5000) == 5000
    assert _next_count([(b"1-0", {b"n": b"9000", b"s": b""})], 5000) == 1
