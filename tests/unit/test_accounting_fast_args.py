"""Which form the consumer gives a batch's shares (no Redis; the books both forms write are compared in
tests/integration/test_accounting_fast_path.py).

A batch whose seqs rise per (source, user.worker) goes as share-log chunks ('C'): per chunk of
``SHARE_LOG_CHUNK`` accepted shares in batch order its count, work (summed as doubles in order, ``%.17g``), newest
share time and the entry's text -- the lines the script writes -- then its rejected shares. Anything else goes as
per-share lines ('L').
"""

from __future__ import annotations

import pytest

from ckbpool.bus import Share
from ckbpool.pool.accounting import SHARE_LOG_CHUNK, _batch_args, share_work_int

pytestmark = pytest.mark.unit


def share(seq: int, *, user: str = "alice", worker: str = "rig", source: str = "src", accepted: bool = True,
          ts: float | None = None, target: int = 1 << 240) -> Share:  # fmt: skip
    return Share(
        server_id="s", channel_id=1, user=user, worker=worker, job_id=1, height=1, nonce=seq, share_target=target,
        share_difficulty=1.0, accepted=accepted, reason="" if accepted else "stale-share", is_block=False,
        block_hash=b"", timestamp=1.0e9 + seq if ts is None else ts, source=source, seq=seq,
    )  # fmt: skip


def form(args: list[str | int]) -> tuple[str, list[str | int]]:
    """The shares' form marker and what follows it."""
    at = 1 + 4 * int(args[0])
    return str(args[at]), args[at + 1 :]


def test_a_fresh_accepted_batch_goes_as_chunks_of_its_share_log() -> None:
    shares = [share(i + 1, user="bob" if i % 3 else "alice") for i in range(2 * SHARE_LOG_CHUNK + 100)]
    marker, rest = form(_batch_args(shares))
    assert marker == "C" and rest[0] == 3
    chunks = [rest[1 + 4 * c : 5 + 4 * c] for c in range(3)]
    assert [c[0] for c in chunks] == [SHARE_LOG_CHUNK, SHARE_LOG_CHUNK, 100]
    first = str(chunks[0][3]).split("\n")
    assert len(first) == SHARE_LOG_CHUNK
    assert first[0] == f"alice\trig\t{1.0e9 + 1!r}\tsrc:1\t{share_work_int(1 << 240)}"
    assert first[1] == f"bob\trig\t{1.0e9 + 2!r}\tsrc:2\t{share_work_int(1 << 240)}"
    assert chunks[2][2] == repr(1.0e9 + len(shares))  # the chunk's newest share
    assert float(chunks[2][1]) == 100 * share_work_int(1 << 240)


def test_names_are_escaped_and_the_newest_time_is_the_chunks_latest_not_its_last() -> None:
    shares = [share(1, user="a\tb", worker="w\\x\ny", ts=50.0), share(2, ts=70.0), share(3, ts=60.0)]
    _marker, rest = form(_batch_args(shares))
    n, _work, newest, text = rest[1:5]
    assert n == 3 and newest == "70.0"
    assert str(text).split("\n")[0].startswith("a\\tb\tw\\\\x\\ny\t50.0\tsrc:1\t")


def test_large_works_are_summed_as_the_script_sums_them() -> None:
    targets = [(1 << 200) + 987_654_321, 1 << 200, (1 << 201) + 5]
    shares = [share(i + 1, target=targets[i % 3]) for i in range(500)]
    _marker, rest = form(_batch_args(shares))
    total = 0.0
    for s in shares:
        total += float(share_work_int(s.share_target))
    assert rest[2] == f"{total:.17g}"


@pytest.mark.parametrize(
    "shares",
    [
        [share(1), share(2), share(2)],  # a repeat
        [share(2), share(1)],  # seqs not rising
        [share(1, user="a.b", worker="c"), share(2, user="a", worker="b.c")],  # one mark field, two records
    ],
    ids=["repeat", "falling", "shared-mark"],
)
def test_any_other_batch_goes_share_by_share(shares: list[Share]) -> None:
    marker, rest = form(_batch_args(shares))
    assert marker == "L" and len(str(rest[0]).splitlines()) == len(shares)


def test_rejected_shares_go_beside_the_chunks_with_what_came_before_them() -> None:
    shares = [
        share(1, accepted=False),  # nothing of alice accepted yet
        share(2),
        share(3, accepted=False),  # alice.rig accepted before
        share(4, worker="other", accepted=False),  # alice (the user) accepted before, alice.other not
        share(5, user="bob\tx", accepted=False),
    ]
    args = _batch_args(shares)
    marker, rest = form(args)
    assert marker == "C" and rest[0] == 1 and rest[1] == 1
    assert rest[5] == "1\t1\tstale-share\t00\n1\t3\tstale-share\t11\n2\t4\tstale-share\t01\n3\t5\tstale-share\t00\n"
    # each record's last accepted seq ('-': none) for its high-water mark
    assert [str(args[4 + 4 * k]).split()[6] for k in range(3)] == ["2", "-", "-"]


def test_shares_without_ids_have_no_mark_and_still_go_as_chunks() -> None:
    marker, rest = form(_batch_args([share(0, source=""), share(0, source="")]))
    assert marker == "C" and rest[1] == 2


def test_the_per_share_form_can_be_asked_for() -> None:
    marker, _rest = form(_batch_args([share(1), share(2)], chunks=False))
    assert marker == "L"
