"""Block life from the node: found -> accepted -> finalized -> mature -> credited, or void.

What the node tells, and where ckb says so (nervosnetwork/ckb, rpc/README.md and util/, 0.20x):

- **On the main chain**: ``get_block_hash(height) == hash``. A block of ours that is not, once the chain is
  ``finalization_delay_length`` blocks past its height, is void: an *uncle* if a main-chain block lists it in
  its uncles (it pays nothing: ckb's miner reward goes to the cellbase of main-chain blocks only), else
  *orphaned*. Before that depth it waits -- a short reorg can still bring it back.
- **Finalized** when ``get_block_economic_state(hash)`` returns: "the output cells in the cellbase of block N
  are for the miner creating block N - 1 - ProposalWindow.farthest", so it answers null until the tip is at
  least N + ``finalization_delay_length`` (= ``tx_proposal_window.farthest + 1``, spec/src/consensus.rs; 11 on
  mainnet and in the dev spec), and null for blocks off the canonical chain. The miner's reward is
  ``miner_reward`` = primary + secondary + committed + proposal (util/types/src/core/reward.rs, ``MinerReward``:
  the primary issuance, the miner's part of the secondary issuance, 60 % of the fees committed in the block,
  40 % of the fees of the transactions it proposed); ``finalized_at`` is the hash of the block whose cellbase
  pays it.
- **Mature** when that cellbase can be spent: ckb's ``MaturityVerifier`` (verification/src/
  transaction_verifier.rs) refuses a cellbase input unless ``current_epoch >= cellbase_block_epoch +
  cellbase_maturity`` as rationals (``EpochNumberWithFraction::to_rational``: number + index / length).
  ``cellbase_maturity`` comes from ``get_consensus`` (4 epochs on mainnet; 0 in the stock dev spec, so a dev
  block is mature as soon as it is finalized). The tip's epoch is used for "current": the next block's epoch is
  never earlier.
- **Credited** right after mature: its credits (written at finalization) become payable.

Restart-safety: everything the tracker knows is in the ledger; every step reads the node again and every
ledger write is idempotent, so a crash anywhere repeats at most a no-op. The PPLNS window is read from the
share log when the block is accepted (the share log is capped, so it is read early, not at maturity) and stored
with the block in the same transaction as the acceptance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import redis.asyncio as aioredis

from ..ckb.rpc import CkbRpcClient
from ..ckb.target import compact_to_target, target_to_difficulty
from ..pool.identity import is_solo, solo_address
from .ledger import BlockView, Ledger, LedgerError, MinerReward
from .pplns import DEFAULT_N, SHARELOG_KEY, Window, read_window, window_target

log = logging.getLogger(__name__)

BLOCKS_KEY = "ckbpool:blocks"


def epoch_rational(epoch: int) -> Fraction:
    """ckb's ``EpochNumberWithFraction::to_rational``: number + index / length (0 for the genesis value)."""
    if epoch == 0:
        return Fraction(0)
    number = epoch & 0xFFFFFF
    index = (epoch >> 24) & 0xFFFF
    length = (epoch >> 40) & 0xFFFF
    return Fraction(number) + (Fraction(index, length) if length else Fraction(0))


def _uint(value: Any) -> int:
    return int(str(value), 16) if isinstance(value, str) else int(value)


@dataclass
class PayoutPolicy:
    """How found blocks are shared: N (window = N x network difficulty), the pool fee in basis points of the
    reward, and the operator's address that receives the fee (and a block nobody else can be credited for)."""

    fee_address: str
    pplns_n: int | float = DEFAULT_N
    fee_bps: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.fee_bps <= 10_000:
            raise ValueError(f"fee_bps must be within 0..10000, got {self.fee_bps}")
        if self.pplns_n <= 0:
            raise ValueError(f"pplns_n must be positive, got {self.pplns_n}")
        if not self.fee_address:
            raise ValueError("fee_address (the operator's address) is required")


@dataclass
class TrackerStats:
    """Counters since start (the engine exposes them as metrics)."""

    transitions: dict[str, int] = field(default_factory=dict)
    incomplete_windows: int = 0
    passes: int = 0

    def count(self, status: str) -> None:
        self.transitions[status] = self.transitions.get(status, 0) + 1


@dataclass(frozen=True)
class Consensus:
    finalization_delay: int
    cellbase_maturity: Fraction


class BlockTracker:
    """Follows every not-yet-final block of the ledger against the node, one :meth:`step` at a time."""

    def __init__(
        self,
        ledger: Ledger,
        node: CkbRpcClient,
        policy: PayoutPolicy,
        redis: aioredis.Redis | None = None,
        *,
        sharelog_key: str = SHARELOG_KEY,
        blocks_key: str = BLOCKS_KEY,
    ) -> None:
        self.ledger = ledger
        self.node = node
        self.policy = policy
        self.redis = redis
        self.sharelog_key = sharelog_key
        self.blocks_key = blocks_key
        self.stats = TrackerStats()
        self._consensus: Consensus | None = None

    async def _db(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def consensus(self) -> Consensus:
        if self._consensus is None:
            info = await self.node.get_consensus()
            delay = _uint(info["tx_proposal_window"]["farthest"]) + 1
            self._consensus = Consensus(delay, epoch_rational(_uint(info["cellbase_maturity"])))
        return self._consensus

    # -- intake -------------------------------------------------------------------------------------------
    async def record_outcome(
        self, block_hash: str, height: int, status: str, user: str, worker: str, submitted_at: float, reason: str = ""
    ) -> bool:
        """One block outcome (pool/blocks.py: accepted | stale | rejected | pending) into the ledger. Accepted
        and stale blocks are recorded as found and left to :meth:`step` (the chain decides, not the outcome:
        a stale block can still win a reorg); a rejected one is void at once; pending is not an outcome yet.

        A block found by a SOLO account (``solo:<address>``, pool.solo) is recorded with mode ``solo`` and its
        address as the finder: its reward is the cellbase's to that address (no window, no credit, never paid by
        the pool), and the ledger follows its life only to show it."""
        if status == "pending":
            return False
        found_at = dt.datetime.fromtimestamp(submitted_at or 0.0, dt.UTC)
        mode = "solo" if is_solo(user) else "pplns"
        finder = solo_address(user) if mode == "solo" else user
        new: bool = await self._db(
            self.ledger.record_found, block_hash, height, finder, worker, found_at=found_at, mode=mode
        )
        if status == "rejected":
            await self._db(self.ledger.mark_void, block_hash, f"rejected by the node: {reason}")
        return new

    async def ingest(self) -> int:
        """Read the pool's block list in Redis (``ckbpool:blocks``, newest first, JSON per outcome) and record
        every outcome; returns how many blocks were new. Idempotent: the list is re-read whole each time."""
        if self.redis is None:
            return 0
        raw = await self.redis.lrange(self.blocks_key, 0, -1)
        new = 0
        for item in reversed(raw):
            entry = json.loads(item)
            if await self.record_outcome(
                entry["block_hash"], int(entry["height"]), entry["status"], entry.get("user", ""),
                entry.get("worker", ""), float(entry.get("submitted_at") or 0.0), entry.get("reason", ""),
            ):  # fmt: skip
                new += 1
        return new

    # -- the life -----------------------------------------------------------------------------------------
    async def _on_main_chain(self, block: BlockView) -> bool:
        main = await self.node.call("get_block_hash", [hex(block.height)])
        return isinstance(main, str) and main.lower().removeprefix("0x") == block.block_hash

    async def _why_off_chain(self, block: BlockView, tip: int) -> str:
        """uncle (and where) or orphaned: scans the main-chain blocks that could have included it."""
        delay = (await self.consensus()).finalization_delay
        for height in range(block.height + 1, min(tip, block.height + delay) + 1):
            body = await self.node.get_block_by_number(height)
            if body is None:
                continue
            for uncle in body.get("uncles", []):
                if str(uncle["header"]["hash"]).lower().removeprefix("0x") == block.block_hash:
                    return f"uncle: included in main-chain block {body['header']['hash']} at height {height}"
        return f"orphaned: not on the main chain at height {block.height}"

    async def _window(self, block: BlockView, difficulty: int) -> Window | None:
        if block.mode != "pplns":
            return None
        target = window_target(difficulty, self.policy.pplns_n)
        if self.redis is None:
            window = Window(target_work=target)
        else:
            window = await read_window(self.redis, block.found_at.timestamp(), target, key=self.sharelog_key)
        if not window.complete:
            self.stats.incomplete_windows += 1
            log.warning(
                "payouts: block %s at height %d is shared out from an incomplete PPLNS window (%d of %d work)",
                block.block_hash, block.height, window.counted_work, target,
            )  # fmt: skip
        return window

    async def advance(self, block: BlockView, tip_number: int, tip_epoch: Fraction) -> str:
        """Move one block as far as the node allows now; returns its status afterwards."""
        consensus = await self.consensus()
        deep = tip_number >= block.height + consensus.finalization_delay
        status = block.status
        while status in ("found", "accepted", "finalized", "mature"):
            on_main = await self._on_main_chain(block)
            if not on_main:
                if deep or status in ("finalized", "mature"):
                    reason = await self._why_off_chain(block, tip_number)
                    if await self._db(self.ledger.mark_void, block.block_hash, reason):
                        log.info("payouts: block %s at height %d is void (%s)", block.block_hash, block.height, reason)
                        self.stats.count("void")
                    return "void"
                return status
            if status == "found":
                header = await self.node.get_header(bytes.fromhex(block.block_hash))
                if header is None:
                    return status
                difficulty = target_to_difficulty(compact_to_target(_uint(header["compact_target"])))
                window = await self._window(block, difficulty)
                await self._db(
                    self.ledger.accept, block.block_hash, network_difficulty=difficulty, window=window,
                    n=self.policy.pplns_n, fee_bps=self.policy.fee_bps, fee_address=self.policy.fee_address,
                )  # fmt: skip
                status = "accepted"
            elif status == "accepted":
                state = await self.node.call("get_block_economic_state", ["0x" + block.block_hash])
                if not isinstance(state, dict):
                    return status  # not finalized yet (tip < height + finalization delay)
                part = state["miner_reward"]
                reward = MinerReward(
                    primary=_uint(part["primary"]), secondary=_uint(part["secondary"]),
                    committed=_uint(part["committed"]), proposal=_uint(part["proposal"]),
                )  # fmt: skip
                finalized_by = str(state["finalized_at"])
                paying = await self.node.get_header(bytes.fromhex(finalized_by.removeprefix("0x")))
                if paying is None:
                    return status
                await self._db(
                    self.ledger.finalize, block.block_hash, reward, finalized_by=finalized_by,
                    cellbase_epoch=_uint(paying["epoch"]),
                )  # fmt: skip
                status = "finalized"
            elif status == "finalized":
                view = await self._db(self.ledger.block, block.block_hash)
                assert view is not None and view.cellbase_epoch is not None
                if tip_epoch < epoch_rational(view.cellbase_epoch) + consensus.cellbase_maturity:
                    return status
                await self._db(self.ledger.mark_mature, block.block_hash)
                status = "mature"
            else:  # mature
                await self._db(self.ledger.mark_credited, block.block_hash)
                status = "credited"
            self.stats.count(status)
            log.info("payouts: block %s at height %d is %s", block.block_hash, block.height, status)
        return status

    async def step(self) -> dict[str, str]:
        """One pass: intake from Redis, then every block not yet credited or void; returns hash -> status."""
        await self.ingest()
        tip = await self.node.get_tip_header()
        tip_number, tip_epoch = tip.raw.number, epoch_rational(tip.raw.epoch)
        result: dict[str, str] = {}
        pending = await self._db(self.ledger.blocks, ("found", "accepted", "finalized", "mature"))
        for block in pending:
            try:
                result[block.block_hash] = await self.advance(block, tip_number, tip_epoch)
            except LedgerError as exc:  # a contradiction in the books: loud, and the other blocks go on
                log.error("payouts: block %s: %s", block.block_hash, exc)
                result[block.block_hash] = block.status
        self.stats.passes += 1
        return result

    async def run(self, interval_s: float = 5.0) -> None:
        """Step forever (until cancelled); a failing pass (node or Redis down) is logged and retried next time."""
        while True:
            try:
                await self.step()
            except (OSError, LedgerError, ValueError, KeyError) as exc:
                log.warning("payouts: block tracker pass failed (%r); retrying in %.0fs", exc, interval_s)
            except Exception as exc:  # the node's errors (NodeUnavailable, RpcError) and database errors
                log.warning("payouts: block tracker pass failed (%r); retrying in %.0fs", exc, interval_s)
            await asyncio.sleep(interval_s)
