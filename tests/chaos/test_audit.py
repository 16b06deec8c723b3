"""The chaos audit itself: exact books pass, and each way the books can be wrong is caught (so the chaos runs can
fail). Pure logic: journals, bus records and books built by hand."""

from __future__ import annotations

import pytest

from ckbpool.bus.events import Share
from ckbpool.miner.journal import ShareJournal

from .harness import Books, audit_shares

pytestmark = pytest.mark.unit


def share(user: str, worker: str, nonce: int, seq: int, *, source: str = "s1", accepted: bool = True) -> Share:
    return Share(
        server_id="stratum-1", channel_id=1, user=user, worker=worker, job_id=1, height=1, nonce=nonce,
        share_target=1 << 240, share_difficulty=1.0, accepted=accepted, reason="" if accepted else "stale-share",
        is_block=False, block_hash=b"", timestamp=0.0, source=source, seq=seq,
    )  # fmt: skip


def books_of(entries: list[Share]) -> Books:
    log = [(s.user, s.worker, s.share_id) for s in entries]
    workers: dict[tuple[str, str], int] = {}
    users: dict[str, int] = {}
    for user, worker, _ in log:
        workers[(user, worker)] = workers.get((user, worker), 0) + 1
        users[user] = users.get(user, 0) + 1
    return Books(log, workers, users, [])


def journal() -> ShareJournal:
    """Shares 1-4 of sv2m0.c1: 1-2 answered Success (one batch), 3 refused, 4 never answered."""
    j = ShareJournal("sv2m0", "c1")
    for key in (1, 2, 3, 4):
        j.submitted(key, "7", 100 + key)
    j.error(3, "stale-share")
    j.success_through(2, 2)
    return j


def test_exact_books_with_an_in_doubt_share_on_the_bus_pass() -> None:
    bus = [share("sv2m0", "c1", 101, 1), share("sv2m0", "c1", 102, 2), share("sv2m0", "c1", 104, 4)]
    bus.append(share("sv2m0", "c1", 103, 3, accepted=False))
    audit = audit_shares(bus + bus[:1], books_of(bus[:3]), [journal()])  # a redelivered record, counted once
    assert audit.violations == []
    assert (audit.success, audit.errors, audit.no_answer, audit.in_doubt_in_books, audit.in_books) == (2, 1, 1, 1, 3)
    assert audit.bus_redeliveries == 1
    assert audit.per_user == {"sv2m0": [2, 1, 3]}  # Success + in doubt found in the books = the books


def test_an_in_doubt_share_never_published_is_not_expected_in_the_books() -> None:
    bus = [share("sv2m0", "c1", 101, 1), share("sv2m0", "c1", 102, 2)]
    audit = audit_shares(bus, books_of(bus), [journal()])
    assert audit.violations == [] and audit.in_doubt_in_books == 0


@pytest.mark.parametrize(
    ("books", "expected"),
    [
        ([0], "answered Success is not in the books"),  # share 2 lost
        ([0, 1, 1], "in the share log twice"),
        ([0, 1, 3], "has no accepted event on the bus"),  # share 4 is in doubt and not on the bus
    ],
)
def test_wrong_books_are_caught(books: list[int], expected: str) -> None:
    all_shares = [share("sv2m0", "c1", 101 + i, 1 + i) for i in range(4)]
    bus = all_shares[:2]
    audit = audit_shares(bus, books_of([all_shares[i] for i in books]), [journal()])
    assert any(expected in v for v in audit.violations), audit.violations


def test_a_refused_share_in_the_books_and_a_phantom_are_caught() -> None:
    bus = [share("sv2m0", "c1", 101, 1), share("sv2m0", "c1", 102, 2), share("sv2m0", "c1", 103, 3)]
    bus.append(share("sv2m0", "c1", 999, 9))  # no miner sent nonce 999
    audit = audit_shares(bus, books_of(bus), [journal()])
    assert any("the miner was told error stale-share" in v for v in audit.violations), audit.violations
    assert any("was sent by no miner" in v for v in audit.violations), audit.violations


def test_counters_that_differ_from_the_share_log_are_caught() -> None:
    bus = [share("sv2m0", "c1", 101, 1), share("sv2m0", "c1", 102, 2)]
    books = books_of(bus)
    books.workers[("sv2m0", "c1")] += 1
    audit = audit_shares(bus, books, [journal()])
    assert any("accepted 3, share log 2" in v for v in audit.violations), audit.violations


def test_a_success_count_that_does_not_match_the_journal_is_caught() -> None:
    j = ShareJournal("sv2m0", "c1")
    j.submitted(1, "7", 101)
    j.success_through(1, 2)
    assert j.count_mismatches == 1
