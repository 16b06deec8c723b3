"""Found blocks: written durably by the process that found them, submitted at once, retried, and given exactly
one outcome.

Order matters: the record is fsynced (file and directory) *before* submit_block and before the bus hears of it,
so a crash between finding and submitting loses nothing -- pending records are replayed at start-up. A block
is never dropped because the node was briefly down: submission is retried, and a block that is still pending
after ``retries`` attempts is tried again every ``resubmit_interval_s`` and at every start.

Who does what, on every topology (see ``ckbpool.pool.service``):

- **The finder** -- whichever process runs the stratum server that saw the share -- persists the block to its
  own ``blocks.data_dir``, submits it to ``node.rpc_url`` itself (a stratum host is always given the node's RPC
  URL; the rendered configs do) and publishes the FoundBlock event on the bus's block lane (never queued behind
  spooled shares, see ``ckbpool.bus.kafka``). Its record remembers whether the bus took the event
  (``announced``), so a crash before that is made good at the next start.
- **The block maker** is the pool's one recorder of outcomes: it receives every FoundBlock (its own process's
  included), persists it in its own store, submits it too, classifies it (accepted = on the main chain at its
  height, stale = stored on a side branch, rejected = refused by the node) and reports the outcome once
  (``on_outcome``: metrics, /status, the BlockOutcome event, the books). In the embedded pool finder and block
  maker are one object.

Idempotence: records are keyed by block hash. ckb answers a block it already has with its hash, so submitting
the same block twice (finder and block maker, or a replay) is harmless, and the classification reads the chain,
not the submit. A found block that is known (in flight, or already reported) is not submitted or reported again:
a FoundBlock delivered twice, the finder's own event coming back over the bus, a replay racing a live
submission -- each block gets one outcome. ``reported`` is saved after ``on_outcome`` returns, so a crash in
between reports that outcome again at the next start (the one at-least-once window; it needs a crash in the
milliseconds between the two).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bus.events import BlockOutcome, FoundBlock
from ..ckb.errors import BlockRejected, NodeUnavailable, RpcError
from ..ckb.rpc import CkbRpcClient
from ..retry import Backoff, retry

log = logging.getLogger(__name__)
#: probe a restarting node every 0.1 s for up to 30 s before resubmitting to it


FINAL_STATUSES = frozenset({"accepted", "stale", "rejected"})


@dataclass
class BlockRecord:
    """A found block and what became of it; ``status`` is "pending" until the node answered.

    ``announced``: the bus took the FoundBlock event (always true for a block that came from the bus).
    ``reported``: the final outcome went to ``on_outcome``."""

    found: FoundBlock
    status: str = "pending"
    reason: str = ""
    attempts: int = 0
    submitted_at: float = 0.0
    latency_ms: float = 0.0
    announced: bool = False
    reported: bool = False


class BlockStore:
    """One JSON file per found block, named by hash; written atomically (tmp + fsync + rename + dir fsync)."""

    def __init__(self, directory: Path, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, block_hash: bytes) -> Path:
        return self.directory / f"{block_hash.hex()}.json"

    def save(self, record: BlockRecord) -> Path:
        found = record.found
        payload = {
            "server_id": found.server_id,
            "job_id": found.job_id,
            "height": found.height,
            "block_hash": found.block_hash.hex(),
            "work_id": found.work_id,
            "block": json.loads(found.block_json),
            "user": found.user,
            "worker": found.worker,
            "found_at": found.found_at,
            "status": record.status,
            "reason": record.reason,
            "attempts": record.attempts,
            "submitted_at": record.submitted_at,
            "latency_ms": record.latency_ms,
            "announced": record.announced,
            "reported": record.reported,
        }
        path = self._path(found.block_hash)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            json.dump(payload, fh)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        tmp.replace(path)
        if self.fsync:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return path

    def load_all(self) -> list[BlockRecord]:
        records = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(_record_from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError) as exc:
                log.error("unreadable block record %s: %s (kept for inspection)", path, exc)
        return records

    def pending(self) -> list[BlockRecord]:
        return [r for r in self.load_all() if r.status == "pending"]


def _record_from_json(data: dict[str, Any]) -> BlockRecord:
    found = FoundBlock(
        server_id=data["server_id"],
        job_id=int(data["job_id"]),
        height=int(data["height"]),
        block_hash=bytes.fromhex(data["block_hash"]),
        work_id=int(data["work_id"]),
        block_json=json.dumps(data["block"]).encode(),
        user=data["user"],
        worker=data["worker"],
        found_at=float(data["found_at"]),
    )
    status = data["status"]
    return BlockRecord(
        found=found,
        status=status,
        reason=data.get("reason", ""),
        attempts=int(data.get("attempts", 0)),
        submitted_at=float(data.get("submitted_at", 0.0)),
        latency_ms=float(data.get("latency_ms", 0.0)),
        # records written before these fields existed: their event and outcome went out when they were made
        announced=bool(data.get("announced", True)),
        reported=bool(data.get("reported", status in FINAL_STATUSES)),
    )


class BlockMaker:
    """Persist, submit, retry, classify, report once. ``on_outcome`` receives every final outcome exactly once
    per block (see the module docstring for the one crash window); the finder's local bookkeeping or the
    block maker's metrics/bus/books, depending on who owns this object."""

    def __init__(
        self,
        rpc: CkbRpcClient,
        store: BlockStore,
        *,
        retries: int = 20,
        retry_backoff: float = 0.2,
        settle_s: float = 1.0,
        resubmit_interval_s: float = 30.0,
        settle_timeout_s: float = 30.0,
        on_outcome: Callable[[BlockOutcome], Any] | None = None,
    ) -> None:
        self.rpc = rpc
        self.store = store
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.settle_s = settle_s
        self.resubmit_interval_s = resubmit_interval_s
        # how long one submission attempt waits for a node seen down to answer again (probing every 0.1 s)
        self._settle_probe = Backoff(initial=0.1, maximum=0.1, jitter=0.0, timeout=settle_timeout_s)
        self.on_outcome = on_outcome
        # every record this object knows, by block hash (the store's content after load, plus what came since)
        self._known: dict[bytes, BlockRecord] | None = None
        # blocks being submitted or reported right now: a second request for one of them is a duplicate
        self._inflight: set[bytes] = set()
        self._save_lock = asyncio.Lock()  # saves of one record never overtake each other
        # False after the node was seen down, until it has answered for settle_s (see _wait_node_settled)
        self._node_settled = True
        self._settling: asyncio.Lock = asyncio.Lock()

    @property
    def pending_count(self) -> int:
        """Blocks persisted whose submission has no final outcome yet (in flight or waiting for a retry)."""
        return sum(1 for r in self._records().values() if r.status == "pending")

    def load(self) -> None:
        """Read the store (blocking: call it off the event loop); otherwise the first use reads it."""
        self._records()

    def _records(self) -> dict[bytes, BlockRecord]:
        if self._known is None:
            self._known = {r.found.block_hash: r for r in self.store.load_all()}
        return self._known

    def records(self) -> list[BlockRecord]:
        """Every known record, oldest find first (for /status)."""
        return sorted(self._records().values(), key=lambda r: r.found.found_at)

    def note_node_down(self) -> None:
        """Anyone who sees the node unreachable (template watcher, a submit) tells the block maker, so the
        next submission waits for the restarted node to settle."""
        self._node_settled = False

    async def _save(self, record: BlockRecord) -> None:
        """Write the record durably; the fsyncs run off the event loop so other miners don't stall."""
        async with self._save_lock:
            await asyncio.to_thread(self.store.save, record)

    async def persist(self, found: FoundBlock, *, announced: bool = False) -> BlockRecord:
        """The block on disk (fsynced file and directory) before anyone else hears of it; idempotent by hash
        (a block already known keeps its record, which is returned)."""
        known = self._records()
        record = known.get(found.block_hash)
        if record is not None:
            if announced and not record.announced:
                record.announced = True
                await self._save(record)
            return record
        record = BlockRecord(found=found, announced=announced)
        known[found.block_hash] = record
        await self._save(record)
        return record

    async def mark_announced(self, record: BlockRecord) -> None:
        """The bus took the FoundBlock event: no need to publish it again at the next start."""
        if not record.announced:
            record.announced = True
            await self._save(record)

    async def submit(self, found: FoundBlock) -> BlockOutcome | None:
        """A found block from the bus: persist (unless known), submit until the node answers, report the
        outcome. None when the block is a duplicate (in flight or already reported)."""
        record = await self.persist(found, announced=True)
        return await self.submit_record(record)

    async def submit_record(self, record: BlockRecord) -> BlockOutcome | None:
        """Submit a persisted record (unless it has its outcome) and report the outcome, once per block.

        Returns the outcome this call reported, or None when there was nothing to do: another call has the
        block in flight, the outcome was reported already, or the node stayed unreachable (still pending)."""
        found = record.found
        if found.block_hash in self._inflight:
            return None
        if record.status in FINAL_STATUSES and record.reported:
            return None
        self._inflight.add(found.block_hash)
        try:
            if record.status not in FINAL_STATUSES:
                await self._submit(record)
                await self._save(record)
                if record.status not in FINAL_STATUSES:
                    return None  # no outcome yet: retried later, never reported as one
            outcome = self._outcome(record)
            log.info("block %s at height %d: %s %s", found.block_hash.hex(), found.height, record.status, record.reason)
            if self.on_outcome is not None:
                result = self.on_outcome(outcome)
                if asyncio.iscoroutine(result):
                    await result
            record.reported = True
            await self._save(record)
            return outcome
        finally:
            self._inflight.discard(found.block_hash)

    async def _submit(self, record: BlockRecord) -> None:
        """submit_block until the node answers (or ``retries`` run out), then classify; updates ``record``."""
        found = record.found
        block_json = json.loads(found.block_json)
        start = time.perf_counter()
        record.submitted_at = time.time()
        policy = Backoff(initial=self.retry_backoff, maximum=5.0, jitter=self.retry_backoff / 2)

        async def attempt() -> bytes:
            record.attempts += 1
            if not self._node_settled:
                await self._wait_node_settled()
            try:
                return await self.rpc.submit_block(found.work_id, block_json)
            except NodeUnavailable:
                self._node_settled = False
                raise

        def failed(exc: Exception) -> bool:
            """Node down or erroring: retry; the node refusing the block (BlockRejected) is an outcome."""
            if isinstance(exc, BlockRejected) or not isinstance(exc, NodeUnavailable | RpcError):
                return False
            log.warning("submitting block %s failed (%s); retrying", found.block_hash.hex(), exc)
            return True

        try:
            returned = await retry(attempt, on=failed, policy=policy.bounded(attempts=self.retries + 1))
            record.latency_ms = (time.perf_counter() - start) * 1000
            if returned != found.block_hash:
                record.status, record.reason = "rejected", f"node returned hash {returned.hex()}"
            else:
                record.status, record.reason = await self._classify(found)
        except BlockRejected as exc:
            record.latency_ms = (time.perf_counter() - start) * 1000
            record.status, record.reason = "rejected", exc.message
        except (NodeUnavailable, RpcError) as exc:
            record.reason = f"gave up after {record.attempts} attempts: {exc}"
            log.error(
                "block %s at height %d still pending (tried again in %.0fs): %s",
                found.block_hash.hex(),
                found.height,
                self.resubmit_interval_s,
                exc,
            )

    async def _wait_node_settled(self) -> None:
        """After an outage, let a restarted node finish starting before it gets a block.

        Seen with ckb 0.210: a block accepted in the first ~0.2 s after start-up becomes the tip, but the block
        assembler keeps serving templates on the old tip until some other block arrives — so a pool that
        resubmits instantly stalls on stale work. Waiting until RPC has answered for ``settle_s`` avoids it.
        """
        async with self._settling:  # one prober for all waiting submissions
            if self._node_settled:
                return
            try:
                await retry(
                    lambda: self.rpc.call("get_tip_block_number", retries=0),
                    on=(NodeUnavailable, RpcError),
                    policy=self._settle_probe,
                    what="node up after an outage",
                )
            except (NodeUnavailable, RpcError):
                return  # give up waiting; the submit itself will retry and report
            await asyncio.sleep(self.settle_s)
            self._node_settled = True

    async def _classify(self, found: FoundBlock) -> tuple[str, str]:
        """accepted = on the main chain at its height; stale = stored by the node on a side branch."""
        try:
            header = await self.rpc.call("get_header_by_number", [hex(found.height)])
        except (NodeUnavailable, RpcError) as exc:
            return "accepted", f"stored by the node; main-chain check failed: {exc}"
        if isinstance(header, dict) and header.get("hash") == "0x" + found.block_hash.hex():
            return "accepted", ""
        return "stale", "stored by the node on a side branch (another block won the height)"

    def _outcome(self, record: BlockRecord) -> BlockOutcome:
        return BlockOutcome(
            block_hash=record.found.block_hash,
            height=record.found.height,
            status=record.status,
            reason=record.reason,
            submitted_at=record.submitted_at,
            latency_ms=record.latency_ms,
            user=record.found.user,
            worker=record.found.worker,
        )

    def unannounced(self) -> list[BlockRecord]:
        """Records whose FoundBlock event the bus never took (the process died first): publish them again."""
        return [r for r in self.records() if not r.announced]

    async def replay_pending(self) -> list[BlockOutcome]:
        """Finish every block that has no reported outcome: submit the pending ones (e.g. the process died
        right after writing it), report outcomes that were decided but not reported. Safe to call while live
        submissions run (duplicates are skipped)."""
        outcomes = []
        for record in self.records():
            if record.status in FINAL_STATUSES and record.reported:
                continue
            if record.status == "pending":
                log.info("replaying pending block %s at height %d", record.found.block_hash.hex(), record.found.height)
            outcome = await self.submit_record(record)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def keep_resubmitting(self) -> None:
        """Until cancelled: every ``resubmit_interval_s``, try again the blocks still without an outcome (the node
        was down for longer than ``retries`` covered)."""
        while True:
            await asyncio.sleep(self.resubmit_interval_s)
            if any(r.status == "pending" or not r.reported for r in self._records().values()):
                await self.replay_pending()

    async def run(self, found_blocks: AsyncIterable[Any]) -> None:
        """Consume FoundBlock events (from the bus) until cancelled; each is submitted concurrently, duplicates
        (the same block hash again) are skipped."""
        tasks: set[asyncio.Task[BlockOutcome | None]] = set()
        try:
            async for event in found_blocks:
                if isinstance(event, FoundBlock):
                    task = asyncio.create_task(self.submit(event))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
