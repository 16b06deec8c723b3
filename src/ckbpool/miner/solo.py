"""Solo mining straight against a node's Miner RPC (get_block_template -> Eaglesong search -> submit_block).

This is the smallest end-to-end proof that our block assembly is right: the node only accepts a block whose
header commitments, PoW and body all agree. The demo and the chain-core tests use it; the pool does the same
assembly once per template and hands the search to miners.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..ckb.eaglesong import search
from ..ckb.rpc import CkbRpcClient
from ..ckb.template import BlockTemplate, MiningJob, job_from_template

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MinedBlock:
    number: int
    block_hash: bytes
    nonce: int
    job: MiningJob
    hashes_tried: int


async def solve(
    job: MiningJob,
    *,
    chunk: int = 100_000,
    max_hashes: int = 1 << 40,
    blake2b: bool = False,
    nonce_prefix: bytes = b"",
    start: int = 0,
) -> tuple[int, int]:
    """Search nonces for ``job`` in a worker thread (the C search drops the GIL); returns (nonce, tried)."""
    tried = 0
    while tried < max_hashes:
        nonce = await asyncio.to_thread(
            search, job.pow_hash, start + tried, chunk, job.target, blake2b=blake2b, nonce_prefix=nonce_prefix
        )
        if nonce is not None:
            counter = nonce >> (8 * len(nonce_prefix))
            return nonce, counter - start + 1
        tried += chunk
    raise TimeoutError(f"no nonce found in {max_hashes} hashes for height {job.height}")


async def current_template(client: CkbRpcClient, timeout: float = 10.0) -> BlockTemplate:
    """A template built on the node's current tip.

    Right after a new tip the block assembler may still hand out the previous template for a moment; mining it
    would only produce a side-chain block, so wait (bounded) until the template's parent is the tip.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        tip = await client.get_tip_header()
        template = await client.get_block_template()
        if template.parent_hash == tip.hash() or loop.time() > deadline:
            return template
        await asyncio.sleep(0.02)


async def mine_block(client: CkbRpcClient, *, blake2b: bool = False, chunk: int = 100_000) -> MinedBlock:
    """Mine and submit one block on the node's current template; BlockRejected if the node refuses it."""
    template = await current_template(client)
    job = job_from_template(template)
    nonce, tried = await solve(job, chunk=chunk, blake2b=blake2b)
    block_hash = await client.submit_block(job.work_id, job.block(nonce))
    expected = job.block_hash(nonce)
    if block_hash != expected:
        raise RuntimeError(f"node returned hash {block_hash.hex()} for our block {expected.hex()}")
    return MinedBlock(number=job.height, block_hash=block_hash, nonce=nonce, job=job, hashes_tried=tried)
