"""Every V1 miner is its own account at the pool: per-worker identity through the translator.

Real dev ckb node -> real Pool (encrypted SV2, Redis accounting, ``require_address_identity``) -> Proxy
(``identity = "per-worker"``) -> V1 CPU miners, each authorized as ``<its own dev address>.<worker>``. The proxy
tags each forwarded share with 0x0002 user_identity (the worker), 0x4CCB ckb_user_identity (the whole username)
and 0x4CCB share_target (the miner's own target); the pool credits that address with that work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)

from ckbpool.ckb.address import encode_address, secp256k1_lock
from ckbpool.ckb.node import CkbNode
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.miner.v1 import V1Miner
from ckbpool.payouts.pplns import read_shares
from ckbpool.pool.accounting import PREFIX
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy, load_proxy_config
from ckbpool.sv2.events import ChannelOpened, ChannelOpenRejected, Event, MessageReceived
from ckbpool.sv2.extensions import (
    EXTENSION_TYPE_CKB,
    EXTENSION_TYPE_WORKER_HASHRATE_TRACKING,
    FIELD_TYPE_CKB_USER_IDENTITY,
    share_tlvs,
)
from ckbpool.sv2.messages import encode_message
from ckbpool.sv2.messages_common import PROTOCOL_MINING, SetupConnection
from ckbpool.sv2.messages_mining import OpenExtendedMiningChannel, SubmitSharesError, SubmitSharesExtended
from ckbpool.sv2.session import ClientSession
from ckbpool.sv2.types import Tlv
from support.redis import RedisServer

pytestmark = pytest.mark.integration

MINERS = int(os.environ.get("CKBPOOL_TEST_V1_MINERS", "100"))
MINING_S = 30.0


def dev_address(network: str = "dev") -> str:
    """A fresh secp256k1 address (random args): every miner its own account."""
    return encode_address(secp256k1_lock(secrets.token_bytes(20)), network)


def identity_pool_config(node: CkbNode, tmp_path: Path, redis: RedisServer, **vardiff: float) -> Any:
    config = pool_config(
        node,
        tmp_path,
        vardiff={"share_interval_s": 2.0, "retarget_interval_s": 5.0, "initial_hashrate": 1e5, **vardiff},
        redis={"url": redis.url},
    )
    stratum = config.stratum.model_copy(update={"require_address_identity": True})
    return config.model_copy(update={"stratum": stratum})


def proxy_config(pool: Pool, authority: str, account: str, **v1: Any) -> Any:
    assert pool.server is not None
    host, port = pool.server.address
    return load_proxy_config(
        data={
            "network": "dev",
            "identity": "per-worker",
            "http": {"listen_port": 0},
            "upstream": {"host": host, "port": port, "authority_public_key": authority, "user_identity": account},
            "v1": {"listen_host": "127.0.0.1", "listen_port": 0, **v1},
        }
    )


async def settle_accounting(pool: Pool, timeout: float = 20.0) -> None:
    """Wait until accounting wrote every share the stratum server published."""
    assert pool.server is not None and pool.accounting is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        acc = pool.accounting
        if not pool.server._share_queue and acc.written + acc.duplicates + acc.ignored >= pool.server._share_seq:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("accounting did not catch up")


async def redis_hash(pool: Pool, key: str) -> dict[str, str]:
    assert pool.accounting is not None
    raw = await pool.accounting.redis.hgetall(f"{PREFIX}{key}")
    return {k.decode(): v.decode() for k, v in raw.items()}


async def redis_set(pool: Pool, key: str) -> set[str]:
    assert pool.accounting is not None
    # users / workers are sorted sets by last accepted share (ckbpool.pool.accounting: idle members expire)
    return {v.decode() for v in await pool.accounting.redis.zrange(f"{PREFIX}{key}", 0, -1)}


# --- many miners, each its own account --------------------------------------------------------------------------


async def test_v1_miners_each_credited_to_their_own_address(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    credentials, authority = pool_keys()
    # one share per second per device (the pool's channel target follows the slowest active device, and no device
    # target is easier than it): ~30 shares per miner on an idle machine, several on a loaded one
    config = identity_pool_config(pool_node, tmp_path, redis_server, share_interval_s=1.0)
    proxy_account = f"{dev_address()}.proxy"
    usernames = [f"{dev_address()}.rig{i:03d}" for i in range(MINERS)]
    async with Pool(config, credentials=credentials) as pool:
        pc = proxy_config(
            pool,
            authority,
            proxy_account,
            # a low first difficulty (~1 s of a miner's 1/100 of two hashing threads): every miner has shares
            # within seconds, then the proxy's vardiff moves each to one share per second
            vardiff={"initial_difficulty": 1e4, "share_interval_s": 1.0, "retarget_interval_s": 5.0},
        )
        async with Proxy(pc) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            v1_host, v1_port = proxy.v1.address
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ckbpool.miner.v1",
                f"{v1_host}:{v1_port}",
                "--usernames",
                *usernames,
                "--duration",
                str(MINING_S),
                "--hashing-threads",
                "2",
                "--chunk",
                "10000",
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(process.communicate(), MINING_S + 90)
            elapsed = time.monotonic() - started
            assert process.returncode == 0
            results = [SimpleNamespace(**r) for r in json.loads(out)]
            assert len(results) == MINERS
            assert all(r.unanswered == 0 and r.connects == 1 for r in results)
            await settle_accounting(pool)
            stats = proxy.v1.stats()

            assert pool.server is not None
            (channel,) = [c for s in pool.server.sessions for c in s.channels.values()]
            assert f"{channel.user}.{channel.worker}" == proxy_account  # one upstream channel for all of them

            addresses = [name.partition(".")[0] for name in usernames]
            assert len(set(addresses)) == MINERS
            users = await redis_set(pool, "users")
            # exactly the miners' addresses: each mined, nothing went to the proxy's account or to anyone else
            assert users == set(addresses)
            per_miner = []
            for name, result in zip(usernames, results, strict=True):
                address, _, worker = name.partition(".")
                worker_books = await redis_hash(pool, f"worker:{address}.{worker}")
                user_books = await redis_hash(pool, f"user:{address}")
                books = int(worker_books.get("accepted", 0))
                per_miner.append(books)
                # exactly what the miner was answered true for, under its own address
                assert books == result.accepted == int(user_books.get("accepted", 0)), name
                assert float(worker_books["work"]) > 0, name
            # the share log (what PPLNS reads): each accepted share once, under the share's own (user, worker)
            assert pool.accounting is not None
            log = await read_shares(pool.accounting.redis)
            logged: dict[str, int] = {}
            for fields in log:
                key = f"{fields['user']}.{fields['worker']}"
                logged[key] = logged.get(key, 0) + 1
            assert logged == dict(zip(usernames, per_miner, strict=True))
            total = sum(r.accepted for r in results)
            print(
                f"\n{MINERS} miners with their own addresses, {elapsed:.1f}s: accepted {total} (proxy "
                f"{stats['accepted']}, pool channel {channel.accepted}, Redis {sum(per_miner)}, share log {len(log)}), "
                f"shares per miner {min(per_miner)}..{max(per_miner)}, rejected {sum(r.rejected for r in results)} "
                f"{stats['rejected']}, blocks {stats['blocks']}, upstream {stats['upstream']['bytes_out']} B out"
            )
            assert min(per_miner) >= 1  # every miner, not most of them
            assert total == stats["accepted"] == channel.accepted == sum(per_miner) == len(log)
            status = await pool.status()
            assert set(status["workers"]) == set(usernames) and proxy_account not in status["workers"]
            # metrics carry no per-worker labels: no account or worker name in the pool's /metrics
            assert pool.status_server is not None
            async with httpx.AsyncClient(timeout=10) as http:
                metrics = (await http.get(f"http://127.0.0.1:{pool.status_server.port}/metrics")).text
            assert "ckbpool_shares_total" in metrics
            leaked = [n for n in usernames if n.partition(".")[0] in metrics or n.partition(".")[2] in metrics]
            assert not leaked and proxy_account.partition(".")[0] not in metrics, leaked[:3]

            # blocks: each accepted one is credited to the address whose share found it
            accepted_blocks = [b for b in pool.recent_blocks if b.status == "accepted"]
            assert accepted_blocks, "the miners found no block"
            for block in accepted_blocks:
                finder = f"{block.user}.{block.worker}"
                assert finder in usernames
                assert stats["workers"][finder]["blocks"] >= 1  # the proxy saw that miner's share meet the network
            assert pool.accounting is not None
            logged = [json.loads(x) for x in await pool.accounting.redis.lrange(f"{PREFIX}blocks", 0, -1)]
            # (recent_blocks keeps the last 50; a loaded machine's longer run may find more)
            in_redis = {(b["user"], b["worker"]) for b in logged if b["status"] == "accepted"}
            assert {(b.user, b.worker) for b in accepted_blocks} <= in_redis
            assert {f"{user}.{worker}" for user, worker in in_redis} <= set(usernames)
            async with pool_node.client() as client:
                for block in accepted_blocks:
                    header = await client.call("get_header_by_number", [hex(block.height)])
                    assert header["hash"] == "0x" + block.block_hash.hex()


# --- bad identities --------------------------------------------------------------------------------------------------


class RawClient:
    """An SV2 client whose shares skip the client state machine's checks: a misbehaving proxy."""

    def __init__(self, pool: Pool, authority: str, extensions: tuple[int, ...]) -> None:
        assert pool.server is not None
        host, port = pool.server.address
        setup = SetupConnection(PROTOCOL_MINING, 2, 2, 0, host, port, "test", "", "", "raw")
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.session = ClientSession(
            host,
            port,
            setup,
            authority_public_key=authority,
            on_event=self.events.put_nowait,
            on_ready=lambda: self.events.put_nowait(MessageReceived(setup)),  # "ready" marker
            extensions=extensions,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.session.connect(10)
        self.task = asyncio.create_task(self.session.run())
        await self.next(MessageReceived)

    async def next(self, kind: type[Event], timeout: float = 10.0) -> Any:
        while True:
            event = await asyncio.wait_for(self.events.get(), timeout)
            if isinstance(event, kind):
                return event

    async def open(self, identity: str) -> ChannelOpened | ChannelOpenRejected:
        self.session.send(OpenExtendedMiningChannel(1, identity, 1e6, (1 << 256) - 1, 4))
        while True:
            event = await asyncio.wait_for(self.events.get(), 10)
            if isinstance(event, ChannelOpened | ChannelOpenRejected):
                return event

    async def submit_unchecked(self, share: SubmitSharesExtended) -> SubmitSharesError:
        frame = encode_message(share)
        assert self.session._noise is not None
        self.session._out.append(self.session._noise.encrypt_frame(frame))
        self.session._flush()
        while True:
            event = await self.next(MessageReceived)
            if isinstance(event.message, SubmitSharesError) and event.message.sequence_number == share.sequence_number:
                return event.message

    async def close(self) -> None:
        self.session.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


async def v1_lines(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(reader.readline(), 10)) for _ in range(count)]


async def test_bad_identities_are_refused_and_nothing_is_credited(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    credentials, authority = pool_keys()
    config = identity_pool_config(pool_node, tmp_path, redis_server)
    good = dev_address()
    foreign = dev_address("mainnet")
    malformed = good[:-1] + ("q" if good[-1] != "q" else "p")  # checksum broken
    async with Pool(config, credentials=credentials) as pool:
        # 1. V1 mining.authorize through the proxy: refused with code 29 and the reason; the connection stays usable
        pc = proxy_config(pool, authority, f"{dev_address()}.proxy", vardiff={"initial_difficulty": 1e4})
        async with Proxy(pc) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            reader, writer = await asyncio.open_connection(*proxy.v1.address)
            writer.write(b'{"id":1,"method":"mining.subscribe","params":["test/1"]}\n')
            assert (await v1_lines(reader, 1))[0]["result"]
            cases = [
                (f"{foreign}.rig1", "network"),
                (f"{malformed}.rig1", "not a CKB address"),
                ("alice.rig1", "not a CKB address"),
                (f"{good}.{'w' * 300}", "over 256 characters"),  # the V1 session's own limit
                (f"{good}.{'w' * 100}", "worker name of 100 characters exceeds 32"),
            ]
            for i, (name, reason) in enumerate(cases, start=2):
                writer.write(
                    json.dumps({"id": i, "method": "mining.authorize", "params": [name, "x"]}).encode() + b"\n"
                )
                (answer,) = await v1_lines(reader, 1)
                assert answer["id"] == i and answer["result"] is None, answer
                assert answer["error"][0] == 29 and reason in answer["error"][1], answer
            writer.write(b'{"id":9,"method":"mining.authorize","params":["' + f"{good}.rig1".encode() + b'","x"]}\n')
            answers = await v1_lines(reader, 2)  # true, then set_target (and notify) for the usable connection
            assert answers[0] == {"id": 9, "result": True, "error": None}
            assert answers[1]["method"] == "mining.set_target"
            writer.close()
            assert proxy.v1.stats()["refused_authorizations"] == len(cases) - 1  # one refused by the V1 session itself

        # 2. SV2 channels: an identity that is not an address of this network is refused at OpenMiningChannel
        for identity, code in [
            (f"{foreign}.rig1", "address-wrong-network"),
            (f"{malformed}.rig1", "invalid-address"),
            ("alice.rig1", "invalid-address"),
            (f"{good}.{'w' * 150}", "invalid-worker-name"),
        ]:
            client = RawClient(pool, authority, ())
            await client.start()
            answer = await client.open(identity)
            assert isinstance(answer, ChannelOpenRejected) and answer.response.error_code == code, (identity, answer)
            await client.close()

        # 3. TLV identities on shares, each refused with its SubmitShares.Error code (checked before the share)
        channel_account = f"{dev_address()}.raw"
        plain = RawClient(pool, authority, ())  # negotiated nothing
        await plain.start()
        opened = await plain.open(channel_account)
        assert isinstance(opened, ChannelOpened)
        cid = opened.channel.channel_id
        share = SubmitSharesExtended(cid, 1, 1, 0, int(time.time()), 0, bytes(opened.channel.extranonce_size))
        error = await plain.submit_unchecked(dataclasses.replace(share, tlvs=share_tlvs("rig1")))
        assert error.error_code == "extension-not-negotiated"
        error = await plain.submit_unchecked(
            dataclasses.replace(share, sequence_number=2, tlvs=share_tlvs(None, f"{good}.rig1"))
        )
        assert error.error_code == "extension-not-negotiated"
        await plain.close()

        tagged = RawClient(pool, authority, (EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, EXTENSION_TYPE_CKB))
        await tagged.start()
        assert tagged.session.extensions == {EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, EXTENSION_TYPE_CKB}
        opened = await tagged.open(channel_account)
        assert isinstance(opened, ChannelOpened)
        share = dataclasses.replace(share, channel_id=opened.channel.channel_id)
        bad = [
            (share_tlvs("rig1", f"{foreign}.rig1"), "address-wrong-network"),
            (share_tlvs("rig1", f"{malformed}.rig1"), "invalid-address"),
            (share_tlvs("rig2", f"{good}.rig1"), "invalid-user-identity"),  # 0x0002 and 0x4CCB disagree
            # a 300-byte worker name: over 0x4CCB's 255 bytes (our encoder refuses it; sent raw)
            (
                (Tlv(EXTENSION_TYPE_CKB, FIELD_TYPE_CKB_USER_IDENTITY, f"{good}.{'w' * 300}".encode()),),
                "invalid-user-identity",
            ),
            (share_tlvs(None, f"{good}.{'w' * 40}"), "invalid-worker-name"),  # fits 255 bytes, not a worker name
        ]
        for seq, (tlvs, code) in enumerate(bad, start=10):
            error = await tagged.submit_unchecked(dataclasses.replace(share, sequence_number=seq, tlvs=tlvs))
            assert error.error_code == code, (seq, error)
        await tagged.close()
        await settle_accounting(pool)
        # nothing credited anywhere: not to the named addresses, not to the channel's owner
        assert await redis_set(pool, "users") == set()
        assert pool.server is not None and pool.server._share_seq == 0


# --- credited work = proven work --------------------------------------------------------------------------------


async def test_a_device_behind_the_proxy_is_credited_the_work_it_did_like_a_direct_sv2_miner(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """One V1 miner through the proxy and one SV2 CPU miner on its own channel, one hashing thread each: the work
    the pool credits each (Redis) per hash it really did (the miners' own count) is the same (±20 %). Before the
    share_target TLV, a V1 device was credited the channel target's work for shares met against its own, much
    harder target (the issue saw 0.018 H/s)."""
    credentials, authority = pool_keys()
    config = identity_pool_config(pool_node, tmp_path, redis_server, share_interval_s=0.1, retarget_interval_s=3.0)
    v1_name = f"{dev_address()}.asic"
    sv2_name = f"{dev_address()}.cpu"
    duration = 40.0
    async with Pool(config, credentials=credentials) as pool:
        assert pool.server is not None
        # the proxy's per-device vardiff aims the V1 device at the same share rate as the pool aims the SV2 miner
        pc = proxy_config(
            pool,
            authority,
            f"{dev_address()}.proxy",
            vardiff={"initial_difficulty": 1e4, "share_interval_s": 0.1, "retarget_interval_s": 3.0},
        )
        async with Proxy(pc) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            v1 = V1Miner(*proxy.v1.address, v1_name, threads=1, chunk=5_000)
            host, port = pool.server.address
            sv2 = Sv2Miner(host, port, sv2_name, authority_public_key=authority, threads=1, chunk=5_000)
            v1_stats, sv2_stats = await asyncio.gather(v1.run(duration=duration), sv2.run(duration=duration))
            await settle_accounting(pool)
            assert pool.accounting is not None
            figures = {}
            for name, hashes in ((v1_name, v1_stats.hashes), (sv2_name, sv2_stats.hashes)):
                books = await redis_hash(pool, f"worker:{name}")
                figures[name] = SimpleNamespace(
                    accepted=int(books.get("accepted", 0)), work=float(books.get("work", 0)), hashes=hashes
                )
            print("\n" + "\n".join(f"{n.split('.')[1]}: {vars(f)}" for n, f in figures.items()))
            v, s = figures[v1_name], figures[sv2_name]
            assert v.accepted == v1_stats.accepted and abs(s.accepted - sv2_stats.accepted) <= 16  # SV2 miner: no drain
            assert v.accepted >= 150 and s.accepted >= 150, "too few shares for a ±20 % comparison"
            v_per_hash, s_per_hash = v.work / v.hashes, s.work / s.hashes
            print(f"credited work per hash: V1 via proxy {v_per_hash:.3f}, SV2 direct {s_per_hash:.3f}")
            assert 0.8 <= v_per_hash / s_per_hash <= 1.25
            # below 1 by the work both lose on a job whose block was just found (frequent on this dev chain)
            for f in (v, s):
                assert 0.6 <= f.work / f.hashes <= 1.3
