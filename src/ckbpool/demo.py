"""`make demo`: start a dev ckb node with our own provisioning code, mine a few blocks with our own code, show them.

Later issues grow this into the full pool demo; today it proves the chain core end to end on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, DevKey
from .ckb.install import find_or_install_ckb
from .ckb.node import CkbNode, NodeConfig
from .ckb.target import target_to_difficulty
from .miner.solo import mine_block


async def _mine(node: CkbNode, blocks: int, console: Console) -> None:
    table = Table(title=f"blocks mined by ckbpool and accepted by ckb (node at {node.config.rpc_url})")
    for column in ("height", "block hash", "nonce", "difficulty", "hashes", "time"):
        table.add_column(column)
    async with node.client() as client:
        for _ in range(blocks):
            start = time.perf_counter()
            block = await mine_block(client)
            elapsed = time.perf_counter() - start
            stored = await client.get_block(block.block_hash)
            assert stored is not None, "node does not know the block it accepted"
            table.add_row(
                str(block.number),
                "0x" + block.block_hash.hex(),
                hex(block.nonce),
                str(target_to_difficulty(block.job.target)),
                str(block.hashes_tried),
                f"{elapsed * 1000:.0f} ms",
            )
        tip = await client.get_tip_block_number()
    console.print(table)
    console.print(f"[green]node tip is now {tip}[/green]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    console = Console()
    with console.status("finding or building the pinned ckb binary...") as status:
        binary = find_or_install_ckb(progress=lambda line: status.update(line))
    console.print(f"ckb binary: {binary}")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ckbpool-demo-"))
    key = DevKey(DEV_GENESIS_PRIVATE_KEY)
    node = CkbNode(NodeConfig.for_tests(data_dir, key.lock), binary)
    with console.status("initialising the dev chain (Eaglesong PoW, difficulty 256)..."):
        node.init(force=True)
        node.start()
        asyncio.run(node.wait_ready())
    try:
        asyncio.run(_mine(node, args.blocks, console))
    finally:
        node.stop()
        console.print(f"node stopped; data in {data_dir}")


if __name__ == "__main__":
    main()
