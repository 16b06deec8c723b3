"""SOLO mining, non-custodial (issue 16, "Must show: SOLO"): a real ckb dev node, real Redis, the real pool
(embedded, Redis accounting) and two SV2 CPU miners -- one ``solo:<address>.rig`` (extended channel), one PPLNS
(standard channel).

- the pool finds blocks for both; every SOLO block on chain has the SOLO miner's lock in its cellbase witness;
- after the finalization delay (blocks mined by the node's own template, paying its block assembler), the
  node pays each SOLO block's reward (``get_block_economic_state``) to the SOLO address from the cellbase of the
  block ``finalized_at`` names, and the indexer shows the address holding exactly those rewards, every cell an
  output of a cellbase -- no pool transaction anywhere;
- the share log has the SOLO miner's shares (account ``solo:<address>``); the block tracker (real Redis, a
  SQLite ledger) records the SOLO blocks as mode "solo" with no credit, and the PPLNS block's window and credits
  hold the PPLNS miner (and the operator's fee) only;
- a SOLO identity whose address is of another network is refused at channel open;
- V1 devices mine SOLO behind a proxy whose upstream identity is ``solo:<address>`` (aggregated mode): the block
  they find carries that address's lock; a per-worker proxy refuses a ``solo:`` device name at authorize.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_pool_e2e import POOL_TEST_COMPACT_TARGET, pool_config, pool_keys

from ckbpool.ckb.address import encode_address, parse_address
from ckbpool.ckb.cellbase import parse_cellbase_witness
from ckbpool.ckb.indexer import iter_live_cells, live_cells_capacity
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.signing import Secp256k1Key
from ckbpool.ckb.structures import Transaction
from ckbpool.miner.solo import mine_block
from ckbpool.miner.sv2 import MinerError, Sv2Miner
from ckbpool.miner.v1 import V1Miner
from ckbpool.payouts.ledger import Ledger
from ckbpool.payouts.pplns import SHARELOG_KEY, read_shares
from ckbpool.payouts.tracker import BlockTracker, PayoutPolicy
from ckbpool.pool.accounting import connect_redis
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy, load_proxy_config
from ckbpool.proxy.config import ProxyConfig
from conftest import start_dev_node
from support.chain import indexed, until
from support.redis import RedisServer

pytestmark = pytest.mark.integration

CELLBASE_PREVIOUS = "0x" + "00" * 32


def _address(n: int) -> str:
    return encode_address(Secp256k1Key(bytes(30) + bytes([9, n])).lock, "dev")


SOLO, PPLNS, OPERATOR, NODE = _address(1), _address(2), _address(3), Secp256k1Key(bytes(30) + bytes([9, 4]))
SOLO_ACCOUNT = f"solo:{SOLO}"
SOLO_V1 = _address(5)


@pytest.fixture(scope="module")
def node(ckb_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CkbNode]:
    """Easy PoW (CPU miners find blocks in about a second); the node's own blocks pay a fourth key."""
    node = start_dev_node(
        ckb_binary, tmp_path_factory.mktemp("ckb-solo"), NODE, genesis_compact_target=POOL_TEST_COMPACT_TARGET
    )
    try:
        yield node
    finally:
        node.stop()


def _reward(state: dict) -> int:  # type: ignore[type-arg]
    return sum(int(state["miner_reward"][k], 16) for k in ("primary", "secondary", "committed", "proposal"))


async def test_the_solo_finder_is_paid_by_the_cellbase_and_left_out_of_pplns(
    node: CkbNode, redis_server: RedisServer, tmp_path: Path
) -> None:
    solo_lock = parse_address(SOLO)
    credentials, authority = pool_keys()
    pool = Pool(pool_config(node, tmp_path, redis={"url": redis_server.url}), credentials=credentials)
    redis = connect_redis(redis_server.url)
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        await pool.start()
        try:
            assert pool.server is not None
            host, port = pool.server.address
            # a SOLO identity with a mainnet address on this dev pool: refused at channel open
            foreign = Sv2Miner(
                host, port, f"solo:{encode_address(solo_lock, 'mainnet')}.rig", authority_public_key=authority
            )
            with pytest.raises(MinerError, match="address-wrong-network"):
                await asyncio.wait_for(foreign.run(shares=1), 20)

            solo_miner = Sv2Miner(host, port, f"{SOLO_ACCOUNT}.rig", authority_public_key=authority, extended=True)
            pplns_miner = Sv2Miner(host, port, f"{PPLNS}.rig", authority_public_key=authority)
            miners = [solo_miner, pplns_miner]
            tasks = [asyncio.create_task(m.run(duration=100)) for m in miners]

            def found(user: str) -> list[str]:
                return [b.block_hash.hex() for b in pool.recent_blocks if b.status == "accepted" and b.user == user]

            try:
                await until(lambda: found(SOLO_ACCOUNT) and found(PPLNS), 90, "a SOLO and a PPLNS block")
            finally:
                for m in miners:
                    m.stop()
                await asyncio.gather(*tasks)
            assert solo_miner.stats.accepted > 0 and pplns_miner.stats.accepted > 0
            assert pool.server.solo.built > 0
        finally:
            await pool.close()
        solo_blocks, pplns_blocks = found(SOLO_ACCOUNT), found(PPLNS)

        async with node.client() as client:
            # -- on chain: the SOLO blocks commit to the SOLO miner's lock, the PPLNS blocks to the pool's --------
            for block_hash in solo_blocks + pplns_blocks:
                body = await client.get_block(bytes.fromhex(block_hash))
                assert body is not None
                cellbase = Transaction.from_json(body["transactions"][0], "cellbase")
                lock = parse_cellbase_witness(cellbase.witnesses[0]).lock
                assert (lock == solo_lock) == (block_hash in solo_blocks), block_hash
            # every block of ours, SOLO and PPLNS: the tracker below credits a PPLNS block only once it is finalized
            heights = {
                h: int((await client.get_header(bytes.fromhex(h)) or {})["number"], 16)
                for h in solo_blocks + pplns_blocks
            }

            # -- the finalization delay: the node's own blocks (they pay its block assembler's key) ----------------
            for _ in range(40):  # bounded: the delay is 11
                if await client.get_tip_block_number() >= max(heights.values()) + 11:
                    break
                await mine_block(client)
            await indexed(client)

            # -- the node paid each SOLO block's reward to the SOLO address, from a cellbase -----------------------
            paid: dict[str, int] = {}  # paying cellbase tx hash -> reward
            for block_hash in solo_blocks:
                state = await client.call("get_block_economic_state", ["0x" + block_hash])
                assert isinstance(state, dict), f"SOLO block {block_hash} not finalized"
                paying = await client.get_block(bytes.fromhex(state["finalized_at"].removeprefix("0x")))
                assert paying is not None
                cellbase = Transaction.from_json(paying["transactions"][0], "cellbase")
                assert cellbase.outputs[0].lock == solo_lock and cellbase.outputs[0].capacity == _reward(state)
                paid[cellbase.hash().hex()] = _reward(state)
            capacity, _ = await live_cells_capacity(client, solo_lock)
            assert capacity == sum(paid.values()) > 0
            cells = [cell async for cell in iter_live_cells(client, solo_lock)]
            assert {c.out_point.tx_hash.hex() for c in cells} == set(paid), "every SOLO coin came from a cellbase"
            for cell in cells:
                tx = await client.call("get_transaction", ["0x" + cell.out_point.tx_hash.hex()])
                assert tx["transaction"]["inputs"][0]["previous_output"]["tx_hash"] == CELLBASE_PREVIOUS
                assert len(tx["transaction"]["inputs"]) == 1

            # -- the books: SOLO shares logged as such; the SOLO blocks mode solo; PPLNS windows without them ------
            users = {share["user"] for share in await read_shares(redis, SHARELOG_KEY)}
            assert users == {SOLO_ACCOUNT, PPLNS}, users
            tracker = BlockTracker(ledger, client, PayoutPolicy(fee_address=OPERATOR, fee_bps=100), redis)
            await tracker.step()
            await tracker.step()
            for block_hash in solo_blocks:
                view = ledger.block(block_hash)
                assert view is not None and view.mode == "solo" and view.finder == SOLO, view
                assert view.status == "credited" and view.credits == (), view
            for block_hash in pplns_blocks:
                view = ledger.block(block_hash)
                assert view is not None and view.mode == "pplns" and view.status == "credited", view
                assert view.window_work and view.window_work > 0
                assert {address for address, _, _ in view.credits} <= {PPLNS, OPERATOR}
                assert any(address == PPLNS for address, _, _ in view.credits)
                assert sum(amount for _, _, amount in view.credits) == view.reward_total
            assert ledger.check_invariants() == []
            assert SOLO not in ledger.balances() and SOLO_ACCOUNT not in ledger.balances()
    finally:
        ledger.close()
        await redis.aclose()


def _proxy_config(pool: Pool, authority: str, account: str, identity: str) -> ProxyConfig:
    assert pool.server is not None
    host, port = pool.server.address
    return load_proxy_config(
        data={
            "network": "dev",
            "identity": identity,
            "http": {"listen_port": 0},
            "upstream": {"host": host, "port": port, "authority_public_key": authority, "user_identity": account},
            "v1": {"listen_host": "127.0.0.1", "listen_port": 0, "vardiff": {"initial_difficulty": 1e4}},
        }
    )


async def test_v1_devices_mine_solo_behind_a_solo_proxy(node: CkbNode, tmp_path: Path) -> None:
    credentials, authority = pool_keys()
    async with Pool(pool_config(node, tmp_path), credentials=credentials) as pool:
        # per-worker proxy: a device cannot name a SOLO account (its shares would ride a PPLNS channel's jobs)
        async with Proxy(_proxy_config(pool, authority, f"{PPLNS}.proxy", "per-worker")) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            reader, writer = await asyncio.open_connection(*proxy.v1.address)
            writer.write(b'{"id":1,"method":"mining.subscribe","params":["test/1"]}\n')
            assert json.loads(await asyncio.wait_for(reader.readline(), 10))["result"]
            authorize = {"id": 2, "method": "mining.authorize", "params": [f"solo:{SOLO_V1}.rig", "x"]}
            writer.write(json.dumps(authorize).encode() + b"\n")
            answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
            assert answer["result"] is None and answer["error"][0] == 29, answer
            assert "SOLO needs its own upstream channel" in answer["error"][1], answer
            writer.close()

        # a SOLO proxy (aggregated): every device's work is the proxy's SOLO account's, on SOLO jobs
        async with Proxy(_proxy_config(pool, authority, f"solo:{SOLO_V1}.farm", "aggregated")) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            device = V1Miner(*proxy.v1.address, "rig1", threads=1, chunk=5_000)
            task = asyncio.create_task(device.run(duration=90))

            def found() -> list[str]:
                return [
                    b.block_hash.hex()
                    for b in pool.recent_blocks
                    if b.status == "accepted" and b.user == f"solo:{SOLO_V1}"
                ]

            try:
                await until(found, 80, "a SOLO block from a V1 device")
            finally:
                device.stop()
                await task
            assert device.stats.accepted > 0
    async with node.client() as client:
        for block_hash in found():
            body = await client.get_block(bytes.fromhex(block_hash))
            assert body is not None
            cellbase = Transaction.from_json(body["transactions"][0], "cellbase")
            assert parse_cellbase_witness(cellbase.witnesses[0]).lock == parse_address(SOLO_V1)
