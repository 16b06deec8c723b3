"""Block maker: a found block is written durably, then submitted at once, retried, and its outcome recorded.

Order matters: the record is fsynced *before* submit_block, so a crash between finding and submitting loses
nothing — pending records are replayed at start-up. A block is never dropped because the node was briefly down.
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


@dataclass
class BlockRecord:
    found: FoundBlock
    status: str = "pending"
    reason: str = ""
    attempts: int = 0
    submitted_at: float = 0.0
    latency_ms: float = 0.0


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
    return BlockRecord(
        found=found,
        status=data["status"],
        reason=data.get("reason", ""),
        attempts=int(data.get("attempts", 0)),
        submitted_at=float(data.get("submitted_at", 0.0)),
        latency_ms=float(data.get("latency_ms", 0.0)),
    )


class BlockMaker:
    """Persist, submit, retry, classify. ``on_outcome`` receives every final outcome (bus, metrics)."""

    def __init__(
        self,
        rpc: CkbRpcClient,
        store: BlockStore,
        *,
        retries: int = 20,
        retry_backoff: float = 0.2,
        settle_s: float = 1.0,
        on_outcome: Callable[[BlockOutcome], Any] | None = None,
    ) -> None:
        self.rpc = rpc
        self.store = store
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.settle_s = settle_s
        self.on_outcome = on_outcome
        self._inflight: set[bytes] = set()
        # False after the node was seen down, until it has answered for settle_s (see _wait_node_settled)
        self._node_settled = True
        self._settling: asyncio.Lock = asyncio.Lock()

    @property
    def pending_count(self) -> int:
        """Blocks persisted whose submission has no final outcome yet."""
        return len(self._inflight)

    def note_node_down(self) -> None:
        """Anyone who sees the node unreachable (template watcher, a submit) tells the block maker, so the
        next submission waits for the restarted node to settle."""
        self._node_settled = False

    async def submit(self, found: FoundBlock) -> BlockOutcome:
        """Persist, then submit until the node answers (accepted or refused), then record the outcome."""
        record = BlockRecord(found=found)
        # durable before the node hears of it; the fsync runs off the event loop so other miners don't stall
        await asyncio.to_thread(self.store.save, record)
        return await self._submit_record(record)

    async def _submit_record(self, record: BlockRecord) -> BlockOutcome:
        found = record.found
        if found.block_hash in self._inflight:
            return self._outcome(record)
        self._inflight.add(found.block_hash)
        try:
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
                log.error("block %s at height %d still pending: %s", found.block_hash.hex(), found.height, exc)
            self.store.save(record)
        finally:
            self._inflight.discard(found.block_hash)
        outcome = self._outcome(record)
        log.info("block %s at height %d: %s %s", found.block_hash.hex(), found.height, record.status, record.reason)
        if self.on_outcome is not None:
            result = self.on_outcome(outcome)
            if asyncio.iscoroutine(result):
                await result
        return outcome

    async def _wait_node_settled(self) -> None:
        """After an outage, let a restarted node finish starting before it gets a block.

        Seen with ckb 0.210: a block accepted in the first ~0.2 s after start-up becomes the tip, but the block
        assembler keeps serving templates on the old tip until some other block arrives — so a pool that
        resubmits instantly stalls on stale work. Waiting until RPC has answered for ``settle_s`` avoids it.
        """
        async with self._settling:  # one prober for all waiting submissions
            if self._node_settled:
                return
            deadline = asyncio.get_running_loop().time() + 30.0
            while True:
                try:
                    await self.rpc.call("get_tip_block_number", retries=0)
                    break
                except (NodeUnavailable, RpcError):
                    if asyncio.get_running_loop().time() > deadline:
                        return  # give up waiting; the submit itself will retry and report
                    await asyncio.sleep(0.1)
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

    async def replay_pending(self) -> list[BlockOutcome]:
        """Submit every block recorded but never confirmed (e.g. the process died right after finding it)."""
        outcomes = []
        for record in self.store.pending():
            log.info("replaying pending block %s at height %d", record.found.block_hash.hex(), record.found.height)
            outcomes.append(await self._submit_record(record))
        return outcomes

    async def run(self, found_blocks: AsyncIterable[Any]) -> None:
        """Consume FoundBlock events (from the bus) until cancelled; each is submitted concurrently."""
        tasks: set[asyncio.Task[BlockOutcome]] = set()
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
