"""Why share-path processes raise the collector's thresholds (ckbpool.pool.service.tune_gc, issue 19)."""

from __future__ import annotations

import gc

import pytest

from ckbpool.bus.events import Share
from ckbpool.pool.service import GC_THRESHOLDS, tune_gc

pytestmark = pytest.mark.unit


def test_a_share_stays_under_the_collector_so_share_processes_collect_young_objects_rarely() -> None:
    """CPython untracks exact tuples of atomic values at a collection, not tuple subclasses: a queued Share is
    traversed by every collection until it is freed -- the cost tune_gc cuts by collecting rarely."""
    share = Share("s", 1, "u", "w", 1, 1, 1, 1 << 200, 1.0, True, "", False, b"", 1.0, "src", 1)
    plain = tuple(share)
    gc.collect()
    assert gc.is_tracked(share)
    assert not gc.is_tracked(plain)
    before = gc.get_threshold()
    try:
        # from CPython's defaults: a Pool started earlier in this process (another test) has tuned them already
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > 700
        tune_gc()  # idempotent
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
