"""Template watcher + job maker: follow the node, turn each *new* template into a job, once.

Pushes (new_tip_header over the node's TCP RPC) give low latency on a new tip; a poll loop catches what pushes
miss (transactions arriving, a push lost across a reconnect) and is the only source if no subscription is
configured. The watcher survives node restarts: RPC failures are logged and retried, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..ckb.errors import CkbError, MalformedError, NodeUnavailable
from ..ckb.hashing import ckb_hash
from ..ckb.rpc import CkbRpcClient, NodeTransport, subscribe_new_tip
from ..ckb.template import BlockTemplate, MiningJob, job_from_template

log = logging.getLogger(__name__)


def template_fingerprint(template: BlockTemplate) -> bytes:
    """What makes two templates different work: everything the header commits to except time and work_id."""
    parts = [
        template.parent_hash,
        template.compact_target.to_bytes(4, "little"),
        template.epoch.to_bytes(8, "little"),
        template.dao,
        template.cellbase.hash(),
        *(t.tx_hash for t in template.transactions),
        b"|",
        *template.proposals,
        b"|",
        *(u.block.hash() for u in template.uncles),
        b"|",
        template.extension or b"",
    ]
    return ckb_hash(b"".join(parts))


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job the watcher published: the parsed job, the raw template JSON (for the bus), and whether it
    starts a new height (miners must drop older work: SetNewPrevHash / clean jobs)."""

    job_id: int
    job: MiningJob
    template_json: bytes
    new_height: bool
    received_at: float


class JobIdAllocator:
    """SV2 job ids are U32. Start from the clock so a restarted pool does not reuse recent ids."""

    def __init__(self, start: int | None = None) -> None:
        self._next = (int(time.time()) << 4 if start is None else start) & 0xFFFFFFFF

    def next(self) -> int:
        value = self._next
        self._next = (self._next + 1) & 0xFFFFFFFF or 1
        return value


class TemplateWatcher:
    def __init__(
        self,
        rpc: CkbRpcClient,
        on_job: Callable[[NewJob], Awaitable[None]],
        *,
        poll_interval: float = 0.5,
        subscribe_address: tuple[str, int] | None = None,
        subscribe_transport: NodeTransport | None = None,
        job_ids: JobIdAllocator | None = None,
        on_node_down: Callable[[], None] | None = None,
    ) -> None:
        self.rpc = rpc
        self.on_job = on_job
        self.poll_interval = poll_interval
        self.subscribe_address = subscribe_address
        self.subscribe_transport = subscribe_transport  # TLS + token through the RPC filter
        self.job_ids = job_ids or JobIdAllocator()
        self.on_node_down = on_node_down
        self.current: NewJob | None = None
        self._fingerprint: bytes | None = None
        self._refresh = asyncio.Event()
        self._lock = asyncio.Lock()
        self._wanted_parent: bytes | None = None
        self._wanted_since = 0.0
        self.tip_hash: bytes | None = None
        self.stale_since: float | None = None
        self.templates_seen = 0
        self.last_template_at = 0.0
        self.errors = 0

    async def refresh(self) -> NewJob | None:
        """Fetch a template now; publish it if it is new work. Returns the new job or None."""
        async with self._lock:
            raw = await self.rpc.get_block_template_json()
            received = time.time()
            template = BlockTemplate.from_json(raw)
            self.templates_seen += 1
            self.last_template_at = received
            self._track_staleness(template)
            fingerprint = template_fingerprint(template)
            if fingerprint == self._fingerprint:
                return None
            new_height = self.current is None or self.current.job.parent_hash != template.parent_hash
            job = NewJob(
                job_id=self.job_ids.next(),
                job=job_from_template(template),
                template_json=json.dumps(raw, separators=(",", ":")).encode(),
                new_height=new_height,
                received_at=received,
            )
            self._fingerprint = fingerprint
            self.current = job
        await self.on_job(job)
        return job

    def _track_staleness(self, template: BlockTemplate) -> None:
        """Notice a node whose templates lag its own tip (its block assembler missed a new tip): mining such a
        template only produces side blocks, so say so loudly instead of mining on in silence."""
        if self.tip_hash is None or template.parent_hash == self.tip_hash:
            if self.stale_since is not None:
                log.info("node templates follow its tip again")
            self.stale_since = None
            return
        now = time.monotonic()
        if self.stale_since is None:
            self.stale_since = now
        elif now - self.stale_since > 5.0 and now - self.stale_since - self.poll_interval <= 5.0:
            log.error(
                "the node's templates are built on %s but its tip is %s: its block assembler is stuck; "
                "new blocks will be side blocks until it recovers (restart the node if this persists)",
                template.parent_hash.hex(),
                self.tip_hash.hex(),
            )

    @property
    def template_stale(self) -> bool:
        return self.stale_since is not None and time.monotonic() - self.stale_since > 5.0

    async def run(self) -> None:
        """Poll and listen until cancelled."""
        tasks = [asyncio.create_task(self._poll_loop())]
        if self.subscribe_address is not None:
            tasks.append(asyncio.create_task(self._push_loop(*self.subscribe_address)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except MalformedError as exc:
                self.errors += 1
                log.error("node sent a malformed template (%s); keeping the current job", exc)
            except CkbError as exc:
                self.errors += 1
                if isinstance(exc, NodeUnavailable) and self.on_node_down is not None:
                    self.on_node_down()
                log.warning("template fetch failed: %s; keeping the current job, retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), timeout=self._next_wait())
            self._refresh.clear()

    def _next_wait(self) -> float:
        """Poll fast right after a pushed tip until the node's template is built on it (bounded to 2 s)."""
        wanted = self._wanted_parent
        if wanted is None or (self.current is not None and self.current.job.parent_hash == wanted):
            return self.poll_interval
        if time.monotonic() - self._wanted_since > 2.0:
            return self.poll_interval
        return min(0.02, self.poll_interval)

    async def _push_loop(self, host: str, port: int) -> None:
        async for header in subscribe_new_tip(host, port, transport=self.subscribe_transport):
            tip = header.hash()
            self.tip_hash = tip
            if self.current is None or tip != self.current.job.parent_hash:
                self._wanted_parent = tip
                self._wanted_since = time.monotonic()
                self._refresh.set()
