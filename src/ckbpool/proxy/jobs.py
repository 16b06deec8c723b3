"""The jobs one upstream channel delivers, as the proxy hands them on: ids, activation, staleness, duplicates.

Upstream order (docs/sv2-ckb.md section 6): a *future* job (min_ntime None) followed by its SetNewPrevHash on a
new tip; a non-future job on a same-height refresh. A job is *live* while its parent is the current parent of
the current upstream connection ("epoch"); everything else is stale. Downstream ids (the V1 job id, the getwork
``work_id``) come from one proxy-wide counter, so they never repeat across reconnects or pool restarts, and an id
from before a reconnect can only ever read as stale.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..ckb.target import compact_to_target
from ..sv2 import ckb_profile
from ..sv2.messages_mining import NewExtendedMiningJob, NewMiningJob, SetNewPrevHash

__all__ = ["ChannelJobs", "ProxyJob"]

#: Proxy-wide source of downstream job ids (V1 job ids, getwork work_ids); 0 is never used.
_DOWNSTREAM_IDS = itertools.count(1)


@dataclass(eq=False)
class ProxyJob:
    """One upstream job. ``downstream_id`` names it to V1 miners (hex) and to ckb-miner (work_id)."""

    downstream_id: int
    upstream_id: int
    epoch: int
    pow_hash: bytes
    height: int | None
    ntime: int
    parent_hash: bytes = b""
    network_target: int = 0
    clean: bool = False
    #: nonce16 of every share forwarded for this job (the pool's duplicate rule, applied before the hop)
    seen: set[bytes] = field(default_factory=set)
    #: getwork only: the template JSON (work_id rewritten) and the parsed job it must match
    template_body: bytes | None = None
    mining_job: Any = None


class ChannelJobs:
    """Jobs of one upstream channel. Feed it the upstream messages; ask it about downstream ids."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self.epoch = 0
        self.current: ProxyJob | None = None
        self.current_parent: bytes | None = None
        self.network_target = 0
        self._future: dict[int, ProxyJob] = {}
        self._by_upstream: dict[int, ProxyJob] = {}
        self._by_downstream: OrderedDict[int, ProxyJob] = OrderedDict()

    def reset(self) -> None:
        """A new upstream connection: every job known so far is stale from now on."""
        self.epoch += 1
        self.current = None
        self.current_parent = None
        self._future.clear()
        self._by_upstream.clear()
        for job in self._by_downstream.values():
            job.seen.clear()

    def _remember(self, job: ProxyJob) -> None:
        self._by_upstream[job.upstream_id] = job
        self._by_downstream[job.downstream_id] = job
        while len(self._by_downstream) > self.keep:
            _, old = self._by_downstream.popitem(last=False)
            if self._by_upstream.get(old.upstream_id) is old:
                del self._by_upstream[old.upstream_id]

    def on_job(self, message: NewMiningJob | NewExtendedMiningJob) -> ProxyJob | None:
        """A job message. Returns the job if it is active now (same-height refresh), None if it is a future job
        waiting for its SetNewPrevHash (or a refresh that arrived before any tip, which cannot be mined)."""
        info = ckb_profile.job_info(message)
        job = ProxyJob(
            downstream_id=next(_DOWNSTREAM_IDS),
            upstream_id=info.job_id,
            epoch=self.epoch,
            pow_hash=info.pow_hash,
            height=info.height,
            ntime=info.min_ntime or 0,
        )
        if info.min_ntime is None:
            self._future[job.upstream_id] = job
            self._by_upstream[job.upstream_id] = job
            return None
        if self.current_parent is None:
            return None
        job.parent_hash = self.current_parent
        job.network_target = self.network_target
        job.clean = False
        self._remember(job)
        self.current = job
        return job

    def on_prev_hash(self, message: SetNewPrevHash) -> ProxyJob | None:
        """SetNewPrevHash: activates its future job (clean); every other job is stale from now on."""
        job = self._future.pop(message.job_id, None)
        self._future.clear()
        if job is None:
            return None
        self.current_parent = message.prev_hash
        self.network_target = compact_to_target(message.nbits)
        job.parent_hash = message.prev_hash
        job.network_target = self.network_target
        job.ntime = message.min_ntime
        job.clean = True
        for other in self._by_downstream.values():
            other.seen.clear()  # older heights are stale: their duplicate sets can go
        self._remember(job)
        self.current = job
        return job

    def by_upstream_id(self, upstream_id: int) -> ProxyJob | None:
        """The job an upstream message names (future or active), e.g. for a CkbJobTemplate."""
        return self._by_upstream.get(upstream_id)

    def get(self, downstream_id: int) -> ProxyJob | None:
        return self._by_downstream.get(downstream_id)

    def is_live(self, job: ProxyJob) -> bool:
        """Built on the current tip of the current connection: shares for it can still count."""
        return job.epoch == self.epoch and job.parent_hash == self.current_parent and self.current is not None
