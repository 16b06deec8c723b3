"""The official ``ckb miner`` (the pinned ckb binary) mines through proxy -> pool -> node.

``ckb miner`` aims at the header's compact_target, so every solution is a block: the dev chain here is easy
(about 2^16 hashes a block). Its ckb-miner.toml comes from ``ckb init --chain dev`` (via the node's data dir), with
``rpc_url`` pointing at the proxy's getwork endpoint and one EaglesongSimple worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import tomlkit
from test_pool_e2e import pool_config, pool_keys

from ckbpool.ckb.devwallet import DevKey
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.target import target_to_compact
from ckbpool.ckb.template import BlockTemplate, job_from_template
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy, load_proxy_config

pytestmark = pytest.mark.integration

ACCOUNT = "ckt1qckbmineraccount"
EASY_COMPACT_TARGET = target_to_compact(1 << 240)  # ~65,536 Eaglesong hashes a block


@pytest.fixture(scope="module")
def easy_node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory, dev_key: DevKey) -> Iterator[CkbNode]:
    from conftest import start_dev_node

    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb-easy"), dev_key, genesis_compact_target=EASY_COMPACT_TARGET
    )
    try:
        yield node
    finally:
        node.stop()


@dataclass
class Stack:
    pool: Pool
    proxy: Proxy
    url: str


@pytest.fixture
async def stack(easy_node: CkbNode, tmp_path: Path) -> AsyncIterator[Stack]:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    credentials, authority = pool_keys()
    async with Pool(pool_config(easy_node, tmp_path), credentials=credentials) as pool:
        assert pool.server is not None
        host, port = pool.server.address
        config = load_proxy_config(
            data={
                "identity": "aggregated",  # account names here are not addresses
                "http": {"listen_port": 0},  # /metrics on a free port
                "upstream": {
                    "host": host,
                    "port": port,
                    "authority_public_key": authority,
                    "user_identity": f"{ACCOUNT}.farm",
                },
                "v1": {"enabled": False},
                "getwork": {"enabled": True, "listen_host": "127.0.0.1", "listen_port": 0},
            }
        )
        async with Proxy(config) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.getwork is not None
            await _wait(lambda: proxy.getwork is not None and proxy.getwork.serving is not None, 30, "a template")
            gw_host, gw_port = proxy.getwork.address
            yield Stack(pool, proxy, f"http://{gw_host}:{gw_port}/")


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def miner_dir(node: CkbNode, where: Path, rpc_url: str) -> Path:
    """A ckb miner directory: the node's chain spec and its `ckb init` ckb-miner.toml, pointed at the proxy."""
    (where / "specs").mkdir(parents=True)
    shutil.copy(node.config.data_dir / "specs" / "dev.toml", where / "specs" / "dev.toml")
    doc = tomlkit.parse((node.config.data_dir / "ckb-miner.toml").read_text())
    client = doc["miner"]["client"]  # type: ignore[index]
    client["rpc_url"] = rpc_url  # type: ignore[index]
    client["poll_interval"] = 200  # type: ignore[index]
    logger = doc["logger"]
    logger["log_to_file"] = False  # type: ignore[index]
    logger["color"] = False  # type: ignore[index]
    workers = tomlkit.aot()
    worker = tomlkit.table()
    worker["worker_type"] = "EaglesongSimple"
    worker["threads"] = 1
    workers.append(worker)
    doc["miner"]["workers"] = workers  # type: ignore[index]
    (where / "ckb-miner.toml").write_text(tomlkit.dumps(doc))
    return where


async def test_official_ckb_miner_mines_blocks_through_the_proxy(
    stack: Stack, easy_node: CkbNode, ckb_binary: Path, tmp_path: Path
) -> None:
    pool, proxy = stack.pool, stack.proxy
    assert proxy.getwork is not None
    directory = miner_dir(easy_node, tmp_path / "miner", stack.url)
    log_path = tmp_path / "ckb-miner.log"
    async with easy_node.client() as client:
        start_tip = await client.get_tip_block_number()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(ckb_binary), "miner", "-C", str(directory)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        await _wait(
            lambda: sum(b.status == "accepted" for b in pool.recent_blocks) >= 3 or process.poll() is not None,
            60,
            "three blocks from ckb miner",
        )
        assert process.poll() is None, log_path.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    miner_log = log_path.read_text()
    accepted = [b for b in pool.recent_blocks if b.status == "accepted"]
    assert len(accepted) >= 3, miner_log[-3000:]
    assert all(b.user == ACCOUNT and b.worker == "ckb-miner" for b in accepted)
    async with easy_node.client() as client:
        for block in accepted:
            header = await client.call("get_header_by_number", [hex(block.height)])
            assert header["hash"] == "0x" + block.block_hash.hex(), "the pool says accepted, the node not"
            # the block ckb miner built and submitted is the one on the chain
            assert f"Found! #{block.height} 0x{block.block_hash.hex()}" in miner_log
        assert await client.get_tip_block_number() >= start_tip + 3
    stats = proxy.getwork.stats()
    assert stats["templates_bad"] == 0 and stats["accepted"] >= 3 and stats["templates_served"] >= 3, stats


async def test_getwork_endpoint_answers_like_the_node_and_refuses_bad_calls(stack: Stack) -> None:
    pool, proxy = stack.pool, stack.proxy
    assert proxy.getwork is not None and pool.server is not None

    async def call(http: httpx.AsyncClient, method: str, params: list[object], raw: bytes | None = None) -> dict:
        body = raw if raw is not None else json.dumps({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
        response = await http.post(stack.url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 200
        answer: dict = response.json()
        return answer

    async with httpx.AsyncClient(timeout=20) as http:
        answer = await call(http, "get_block_template", [])
        template = answer["result"]
        # the node's template for the pool's current job, with our own work_id
        current = pool.server.jobs.current
        assert current is not None
        job = job_from_template(BlockTemplate.from_json(template))
        assert job.pow_hash == current.job.pow_hash
        assert int(template["work_id"], 16) == proxy.getwork.serving.downstream_id  # type: ignore[union-attr]
        assert answer["id"] == 0 and answer["jsonrpc"] == "2.0"

        assert (await call(http, "get_blockchain_info", []))["error"]["code"] == -32601
        assert (await call(http, "", [], raw=b"{nope"))["error"]["code"] == -32700
        assert (await call(http, "submit_block", ["1"]))["error"]["code"] == -32602
        block = job.block(0).to_json()
        stale = await call(http, "submit_block", ["999999999", block])
        assert stale["error"] == {"code": -32001, "message": "stale work: the pool has moved on"}
        work_id = str(int(template["work_id"], 16))
        malformed = await call(http, "submit_block", [work_id, {"header": {}}])
        assert malformed["error"]["code"] == -32602
        other = job.block(0).to_json()
        other["header"]["timestamp"] = hex(int(other["header"]["timestamp"], 16) + 1)
        mismatch = await call(http, "submit_block", [work_id, other])
        assert mismatch["error"] == {
            "code": -32602,
            "message": "the block's header does not match the work it names",
        }
        # nonce 0 is (almost surely) no block: refused before it reaches the pool
        low = await call(http, "submit_block", [work_id, block])
        assert low["error"]["code"] == -32002 and low["error"]["message"].startswith("difficulty-too-low")
    assert proxy.getwork.upstream.connected
