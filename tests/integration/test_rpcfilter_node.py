"""The node's RPC filter in front of a real ckb dev node (issue 18 item 3):

- the pool mines a block whose every RPC (template, submit, tip) and the new-tip subscription went through the
  filter over TLS with a token;
- ``set_network_active``, ``clear_tx_pool``, ``set_ban`` (the node serves them: its Net and Pool modules are on)
  are refused at the filter with an error naming the method, single or in a batch next to allowed calls;
- plaintext HTTP to the TLS port fails, a missing/wrong token is refused, a client certificate is required when
  the filter asks for one, a foreign topic is refused on the subscription port, oversized bodies get 413;
- the metrics count allowed/refused by ckb module.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (module-scoped node fixture)

from ckbpool.ckb.errors import NodeUnavailable, RpcError
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.rpc import CkbRpcClient, NodeTransport, tls_client_context
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.config import NodeSettings
from ckbpool.pool.service import Pool
from ckbpool.rpcfilter import RpcFilter, load_filter_config
from ckbpool.rpcfilter.server import REFUSED_CODE
from support.tls import TestCA

pytestmark = pytest.mark.integration


class Setup:
    def __init__(self, ca: TestCA, rpc_filter: RpcFilter, token_file: Path) -> None:
        self.ca, self.filter, self.token_file = ca, rpc_filter, token_file
        self.token = token_file.read_text().strip()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.filter.http_port}/"

    def node_settings(self, **extra: object) -> NodeSettings:
        return NodeSettings.model_validate(
            {
                "rpc_url": self.url,
                "subscribe_address": f"127.0.0.1:{self.filter.tcp_port}",
                "ca_file": str(self.ca.ca_file),
                "token_file": str(self.token_file),
                "poll_interval_ms": 200,
            }
            | extra
        )


def _filter_config(node: CkbNode, ca: TestCA, tmp_path: Path, **extra: object) -> dict[str, object]:
    server = ca.issue("rpc-filter")
    token_file = tmp_path / "rpc-filter.token"
    if not token_file.exists():
        token_file.write_text(secrets.token_urlsafe(32) + "\n")
    return {
        "listen_host": "127.0.0.1", "listen_port": 0, "tcp_listen_port": 0, "metrics_port": 0,
        "upstream_url": node.config.rpc_url, "upstream_tcp": f"127.0.0.1:{node.config.tcp_rpc_port}",
        "tls_cert_file": str(server.cert), "tls_key_file": str(server.key), "token_file": str(token_file),
        "max_request_bytes": 64 * 1024,
    } | extra  # fmt: skip


@pytest.fixture
async def setup(pool_node: CkbNode, tmp_path: Path) -> AsyncIterator[Setup]:  # noqa: F811
    ca = TestCA(tmp_path / "pki")
    config = load_filter_config(data=_filter_config(pool_node, ca, tmp_path))
    async with RpcFilter(config) as rpc_filter:
        yield Setup(ca, rpc_filter, Path(str(config.token_file)))


async def test_the_pool_mines_a_block_through_the_filter(setup: Setup, pool_node: CkbNode, tmp_path: Path) -> None:  # noqa: F811
    credentials, authority = pool_keys()
    base = pool_config(pool_node, tmp_path)
    config = base.model_copy(update={"node": setup.node_settings()})
    before = await _tip(pool_node)
    async with Pool(config, credentials=credentials) as pool:
        assert pool.server is not None
        host, port = pool.server.address
        miner = Sv2Miner(host, port, "alice.rig1", authority_public_key=authority)
        task = asyncio.create_task(miner.run(duration=90))
        deadline = time.monotonic() + 80
        try:
            while not any(b.status == "accepted" for b in pool.recent_blocks):
                assert time.monotonic() < deadline, "no block accepted through the filter in time"
                if task.done():
                    task.result()
                await asyncio.sleep(0.1)
        finally:
            miner.stop()
            await task
        block = next(b for b in pool.recent_blocks if b.status == "accepted")
    async with pool_node.client() as client:  # the node itself has the block
        header = await client.call("get_header_by_number", [hex(block.height)])
        assert header["hash"] == "0x" + block.block_hash.hex()
    assert block.height > before
    allowed = setup.filter.metrics.requests_total
    assert allowed.labels(family="miner", outcome="allowed")._value.get() >= 2  # template(s) + submit_block
    # the subscription went through the filter too (one open connection while the pool ran, counted as allowed)
    assert allowed.labels(family="subscription", outcome="allowed")._value.get() >= 1


async def _tip(node: CkbNode) -> int:
    async with node.client() as client:
        return await client.get_tip_block_number()


async def test_dangerous_methods_are_refused_at_the_filter(setup: Setup, pool_node: CkbNode) -> None:  # noqa: F811
    async with CkbRpcClient.from_settings(setup.node_settings(), retries=0) as client:
        assert await client.get_tip_block_number() >= 0
        for method, params in (
            ("set_network_active", [False]),
            ("clear_tx_pool", []),
            ("set_ban", ["192.168.0.2", "insert", "0x1ac89236180", True, "test"]),
        ):
            with pytest.raises(RpcError) as info:
                await client.call(method, params)
            assert info.value.code == REFUSED_CODE and method in info.value.message
    # the node does serve them (the filter, not the node's config, refused them): the harmless one, directly
    async with pool_node.client() as direct:
        assert await direct.call("clear_tx_pool") is None
        assert (await direct.call("local_node_info"))["active"] is True  # set_network_active never arrived
    refused = setup.filter.metrics.requests_total
    assert refused.labels(family="net", outcome="refused")._value.get() == 2
    assert refused.labels(family="pool", outcome="refused")._value.get() == 1


async def test_batches_mix_answers_and_refusals(setup: Setup) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "get_tip_block_number", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "clear_tx_pool", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "get_blockchain_info", "params": []},
        {"jsonrpc": "2.0", "id": 4, "method": ["set_ban"], "params": []},
        {"jsonrpc": "2.0", "method": "set_network_active", "params": [False]},  # a notification: no answer
    ]
    headers = {"authorization": f"Bearer {setup.token}"}
    async with httpx.AsyncClient(verify=tls_client_context(setup.ca.ca_file), timeout=10) as http:
        reply = (await http.post(setup.url, json=batch, headers=headers)).json()
        by_id = {item["id"]: item for item in reply}
        assert set(by_id) == {1, 2, 3, 4}
        assert by_id[1]["result"].startswith("0x") and by_id[3]["result"]["chain"]
        assert by_id[2]["error"]["code"] == REFUSED_CODE and "clear_tx_pool" in by_id[2]["error"]["message"]
        assert by_id[4]["error"]["code"] == -32600
        too_many = [batch[0]] * 101
        assert (await http.post(setup.url, json=too_many, headers=headers)).json()["error"]["code"] == -32600
        big = {"jsonrpc": "2.0", "id": 9, "method": "get_tip_block_number", "params": ["x" * 70_000]}
        assert (await http.post(setup.url, json=big, headers=headers)).status_code == 413
        assert (await http.post(setup.url, content=b"{not json", headers=headers)).json()["error"]["code"] == -32700
        # no token / a wrong one
        assert (await http.post(setup.url, json=batch[0])).status_code == 401
        wrong = {"authorization": "Bearer " + "x" * len(setup.token)}
        assert (await http.post(setup.url, json=batch[0], headers=wrong)).status_code == 401
        # the metrics: bounded labels, allowed and refused by module
        metrics = (await http.get(f"http://127.0.0.1:{setup.filter.metrics_port}/metrics")).text
    assert 'ckbpool_rpcfilter_requests_total{family="pool",outcome="refused"} 1.0' in metrics
    assert 'ckbpool_rpcfilter_rejected_total{reason="unauthorized"} 2.0' in metrics
    assert 'ckbpool_rpcfilter_rejected_total{reason="too_large"} 1.0' in metrics
    assert "set_ban" not in metrics and "clear_tx_pool" not in metrics


async def test_plaintext_and_an_unverified_server_fail(setup: Setup, tmp_path: Path) -> None:
    plain = f"http://127.0.0.1:{setup.filter.http_port}/"
    body = {"jsonrpc": "2.0", "id": 1, "method": "get_tip_block_number", "params": []}
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.HTTPError):
            reply = await http.post(plain, json=body, headers={"authorization": f"Bearer {setup.token}"})
            reply.raise_for_status()
    foreign = TestCA(tmp_path / "foreign")
    async with CkbRpcClient(setup.url, ca_file=foreign.ca_file, token=setup.token, retries=0) as client:
        with pytest.raises(NodeUnavailable, match=r"(?i)certificate"):
            await client.get_tip_block_number()
    with pytest.raises(ValueError, match="https"):
        CkbRpcClient(plain, token=setup.token)
    # the subscription port: plaintext gets nothing back
    reader, writer = await asyncio.open_connection("127.0.0.1", setup.filter.tcp_port)
    try:
        writer.write(b'{"jsonrpc":"2.0","id":1,"method":"subscribe","params":["new_tip_header"]}\n')
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 10) == b""  # the TLS server closed it
    finally:
        writer.close()


async def test_subscription_port_checks_token_and_topics(setup: Setup) -> None:
    transport = NodeTransport.from_settings(setup.node_settings())
    assert transport.tls is not None

    async def session(lines: list[dict[str, object]], replies: int) -> list[dict[str, object]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", setup.filter.tcp_port, ssl=transport.tls)
        try:
            for line in lines:
                writer.write(json.dumps(line).encode() + b"\n")
            await writer.drain()
            out = []
            for _ in range(replies):
                raw = await asyncio.wait_for(reader.readline(), 10)
                if not raw:
                    break
                out.append(json.loads(raw))
            return out
        finally:
            writer.close()

    auth = {"jsonrpc": "2.0", "id": 0, "method": "ckbpool_auth", "params": [setup.token]}
    bad_topic = {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": ["new_transaction"]}
    other = {"jsonrpc": "2.0", "id": 2, "method": "set_ban", "params": []}
    good = {"jsonrpc": "2.0", "id": 3, "method": "subscribe", "params": ["new_tip_header"]}
    replies = await session([auth, bad_topic, other, good], 4)
    assert replies[0]["result"] is True
    assert replies[1]["error"]["code"] == REFUSED_CODE and "new_transaction" in replies[1]["error"]["message"]
    assert replies[2]["error"]["code"] == REFUSED_CODE and "set_ban" in replies[2]["error"]["message"]
    assert replies[3]["id"] == 3 and "result" in replies[3]  # the node's own subscription id
    wrong = await session([{**auth, "params": ["nope" * 8]}, good], 2)
    assert wrong == [{"jsonrpc": "2.0", "id": 0, "error": {"code": -32000, "message": "unauthorized"}}]


async def test_client_certificates_when_required(pool_node: CkbNode, tmp_path: Path) -> None:  # noqa: F811
    ca = TestCA(tmp_path / "pki")
    config = load_filter_config(
        data=_filter_config(pool_node, ca, tmp_path, client_ca_file=str(ca.ca_file), token_file=None)
    )
    client_cert = ca.issue("pool-client", server=False)
    async with RpcFilter(config) as rpc_filter:
        url = f"https://127.0.0.1:{rpc_filter.http_port}/"
        settings = NodeSettings(
            rpc_url=url, ca_file=ca.ca_file, client_cert_file=client_cert.cert, client_key_file=client_cert.key
        )
        async with CkbRpcClient.from_settings(settings, retries=0) as client:
            assert await client.get_tip_block_number() >= 0
        async with CkbRpcClient(url, ca_file=ca.ca_file, retries=0) as anonymous:
            with pytest.raises(NodeUnavailable):
                await anonymous.get_tip_block_number()
