"""SOLO jobs for the stratum server: one job per (template job, SOLO address), built once and shared by every
channel of that address.

A channel whose identity is ``solo:<address>.<worker>`` (:mod:`ckbpool.pool.identity`) gets, for each job the
pool announces, the *same job id* with another ``pow_hash``: the template's block with the address's lock in the
cellbase witness (:class:`ckbpool.ckb.cellbase.CellbaseRewriter`; ckb pays block N's reward to the lock in block
N's cellbase witness, 11 blocks later). Job ids stay the pool's, so a SOLO channel needs no id space of its own,
and a share is looked up by (job id, the channel's account): a PPLNS channel can never submit against a SOLO
job or the other way round.

Cost: per template, the lock-independent part once (the first time a SOLO channel needs it); per SOLO address,
one witness, one cellbase hash, log2(transactions) merges and one header hash -- not per channel, not per share.
Channels of PPLNS accounts are untouched: the fan-out to them does not even look here.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from ..ckb.address import parse_address
from ..ckb.cellbase import CellbaseRewriter, SoloJobError, patch_template_json
from ..ckb.errors import MalformedError
from ..ckb.structures import Script
from ..ckb.template import MiningJob
from .channels import JobEntry
from .identity import solo_address

log = logging.getLogger(__name__)

__all__ = ["SoloJobError", "SoloJobs", "lock_of", "solo_lock_error"]

A = TypeVar("A")
#: (job id, variant job, its share-check entry) -> the server's job record
MakeActive = Callable[[int, MiningJob, JobEntry], A]


@functools.lru_cache(maxsize=1 << 14)
def lock_of(user: str, network: str | None) -> Script:
    """The lock script of a SOLO account (``solo:<address>``); MalformedError for a bad or foreign address."""
    return parse_address(solo_address(user), network)


class SoloJobs(Generic[A]):
    """The SOLO variants of the server's recent jobs, keyed by (job id, account)."""

    def __init__(self, network: str | None) -> None:
        self.network = network
        self._rewriters: OrderedDict[int, CellbaseRewriter] = OrderedDict()
        self._variants: dict[tuple[int, str], A] = {}
        self._entries: dict[tuple[int, str], JobEntry] = {}
        self._jobs: dict[tuple[int, str], MiningJob] = {}
        self._templates: dict[tuple[int, str], bytes] = {}
        self.built = 0  # variants built since start (a counter for tests and /status)

    def variant(self, job_id: int, job: MiningJob, user: str, make_active: MakeActive[A]) -> A:
        """The SOLO variant of job ``job_id`` for ``user`` (built on first use with ``make_active``, then cached).

        Raises SoloJobError (or MalformedError) when it cannot be built: the caller sends that channel no job."""
        key = (job_id, user)
        found = self._variants.get(key)
        if found is not None:
            return found
        rewriter = self._rewriters.get(job_id)
        if rewriter is None or rewriter.job is not job:
            rewriter = CellbaseRewriter(job)
            self._rewriters[job_id] = rewriter
        solo_job = rewriter.job_for(lock_of(user, self.network))
        entry = JobEntry(
            job_id=job_id,
            pow_hash=solo_job.pow_hash,
            network_target=solo_job.target,
            height=solo_job.height,
            parent_hash=solo_job.parent_hash,
        )
        active = make_active(job_id, solo_job, entry)
        self._variants[key] = active
        self._entries[key] = entry
        self._jobs[key] = solo_job
        self.built += 1
        return active

    def get(self, job_id: int, user: str) -> A | None:
        """The variant a SOLO channel was sent for ``job_id``; None if it never was (or it is gone)."""
        return self._variants.get((job_id, user))

    def template_json(self, job_id: int, user: str, template_json: bytes) -> bytes:
        """The node's template JSON as this SOLO account's job uses it (its cellbase witness), cached."""
        key = (job_id, user)
        patched = self._templates.get(key)
        if patched is None:
            solo_job = self._jobs.get(key)
            if solo_job is None:
                raise SoloJobError(f"no SOLO job {job_id} for {user}")
            patched = self._templates[key] = patch_template_json(template_json, solo_job.template.cellbase)
        return patched

    def prune(self, live_job_ids: Iterable[int], current_parent: bytes | None) -> None:
        """Forget variants of jobs the server forgot; on a new tip, drop older heights' duplicate sets (their
        shares are stale anyway), as :class:`ckbpool.pool.stratum.JobBook` does for the pool's jobs."""
        live = set(live_job_ids)
        for job_id in [j for j in self._rewriters if j not in live]:
            del self._rewriters[job_id]
        for key in [k for k in self._variants if k[0] not in live]:
            del self._variants[key]
            del self._entries[key]
            del self._jobs[key]
            self._templates.pop(key, None)
        for entry in self._entries.values():
            if entry.parent_hash != current_parent:
                entry.seen.clear()


def solo_lock_error(user: str, network: str | None) -> str | None:
    """Why ``user`` cannot mine SOLO on this network (None: it can)."""
    try:
        lock_of(user, network)
    except (MalformedError, ValueError) as exc:
        return str(exc)
    return None
