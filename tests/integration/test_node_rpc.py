"""The RPC client against a real node: push subscription, templates, clear errors when the node is down."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ckbpool.ckb.errors import NodeUnavailable, RpcError
from ckbpool.ckb.node import CkbNode, free_port
from ckbpool.ckb.rpc import CkbRpcClient, subscribe_new_tip
from ckbpool.ckb.template import job_from_template
from ckbpool.miner.solo import mine_block

pytestmark = pytest.mark.integration


async def test_new_tip_subscription_pushes_each_block_we_mine(dev_node: CkbNode) -> None:
    port = dev_node.config.tcp_rpc_port
    assert port is not None
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def listen() -> None:
        async for header in subscribe_new_tip("127.0.0.1", port):
            await received.put(header.hash())

    task = asyncio.create_task(listen())
    try:
        await asyncio.sleep(0.3)  # let the subscription register before the block lands
        async with dev_node.client() as client:
            mined = [await mine_block(client) for _ in range(2)]
        got = [await asyncio.wait_for(received.get(), timeout=10) for _ in mined]
        assert got == [m.block_hash for m in mined]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_template_from_the_node_parses_and_has_the_dev_difficulty(dev_node: CkbNode) -> None:
    async with dev_node.client() as client:
        template = await client.get_block_template()
        tip = await client.get_tip_header()
        job = job_from_template(template)
        assert template.number == tip.raw.number + 1
        assert template.compact_target == 0x20010000
        assert job.target == 0x10000 << 232
        assert template.extension is None or len(template.extension) > 0


async def test_unknown_method_error_names_the_method_and_the_nodes_message(dev_node: CkbNode) -> None:
    async with dev_node.client() as client:
        with pytest.raises(RpcError) as err:
            await client.call("no_such_method")
        assert "no_such_method" in str(err.value)
        assert err.value.code == -32601


async def test_node_down_gives_a_clear_error_after_bounded_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with CkbRpcClient(url, retries=2, backoff=0.05) as client:
        with pytest.raises(NodeUnavailable) as err:
            await client.get_block_template()
    message = str(err.value)
    assert "get_block_template" in message and url in message


async def test_client_rides_through_a_node_restart(dev_node: CkbNode) -> None:
    async with dev_node.client(retries=40, backoff=0.1, max_backoff=0.5) as client:
        before = await client.get_tip_block_number()
        dev_node.stop()
        restart = asyncio.get_running_loop().run_in_executor(None, _restart_later, dev_node)
        after = await client.get_tip_block_number()  # retried until the node is back
        await restart
        assert after == before
        await dev_node.wait_ready()


def _restart_later(node: CkbNode) -> None:
    import time

    time.sleep(1.0)
    node.start()
