"""A CKB Stratum V1 conversation through the proxy, checked line by line against protocols.md, and bad input.

Real dev ckb node -> real Pool (encrypted SV2) -> Proxy -> a raw TCP client that speaks V1 by hand: every line the
proxy sends must match the exact JSON shape (compact, key order, lowercase hex, JSON null, newline). The shares it
submits are real (found with Eaglesong), one of them a block the node must accept, after which the proxy must
send a clean notify built on that block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)

from ckbpool.ckb.eaglesong import pow_output, search
from ckbpool.ckb.node import CkbNode
from ckbpool.miner.v1 import V1Miner
from ckbpool.pool.service import Pool
from ckbpool.pool.stratum import ChannelState
from ckbpool.proxy import Proxy, load_proxy_config

pytestmark = pytest.mark.integration

USER = "ckt1qproxytestaccount"
HEX64 = "[0-9a-f]{64}"
RE_SUBSCRIBE = re.compile(rb'\{"id":1,"result":\[null,"([0-9a-f]{12})",10\],"error":null\}\n')
RE_SET_TARGET = re.compile(('{"id":null,"method":"mining\\.set_target","params":\\["(' + HEX64 + ')"\\]}\n').encode())
RE_NOTIFY = re.compile(
    (
        '{"id":null,"method":"mining\\.notify","params":\\["([0-9a-f]+)","('
        + HEX64
        + ')",(\\d+),"('
        + HEX64
        + ')",(true|false)\\]}\n'
    ).encode()
)


@dataclass
class Stack:
    pool: Pool
    proxy: Proxy
    address: tuple[str, int]

    def pool_channel(self) -> ChannelState:
        assert self.pool.server is not None
        channels = [c for s in self.pool.server.sessions for c in s.channels.values() if c.user == USER]
        assert len(channels) == 1, channels
        return channels[0]


@pytest.fixture
async def stack(pool_node: CkbNode, tmp_path: Path) -> AsyncIterator[Stack]:  # noqa: F811
    credentials, authority = pool_keys()
    # shares of at least difficulty 1000 (btcpool scale): a random nonce is "low difficulty" with p = 0.999
    config = pool_config(
        pool_node,
        tmp_path,
        vardiff={"share_interval_s": 0.05, "retarget_interval_s": 1.0, "min_share_difficulty": 1000.0},
    )
    async with Pool(config, credentials=credentials) as pool:
        for _ in range(200):
            if pool.watcher is not None and pool.watcher.current is not None:
                break
            await asyncio.sleep(0.05)
        assert pool.server is not None
        host, port = pool.server.address
        proxy_config = load_proxy_config(
            data={
                "identity": "aggregated",  # account names here are not addresses
                "http": {"listen_port": 0},  # /metrics on a free port
                "upstream": {
                    "host": host,
                    "port": port,
                    "authority_public_key": authority,
                    "user_identity": f"{USER}.farm",
                },
                "v1": {"listen_host": "127.0.0.1", "listen_port": 0, "vardiff": {"enabled": False}},
            }
        )
        async with Proxy(proxy_config) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            yield Stack(pool, proxy, proxy.v1.address)


class RawV1:
    """A hand-driven V1 client: the bytes exactly as the proxy sends them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.notifications: list[bytes] = []

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> RawV1:
        reader, writer = await asyncio.open_connection(*address, limit=1 << 20)
        return cls(reader, writer)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, request_id: Any, method: str, params: list[Any]) -> None:
        self.send_raw(json.dumps({"id": request_id, "method": method, "params": params}).encode() + b"\n")

    async def line(self, timeout: float = 20.0) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)

    async def response(self, request_id: Any, timeout: float = 20.0) -> bytes:
        """The response line for ``request_id``; notifications on the way are kept in order."""
        deadline = time.monotonic() + timeout
        while True:
            raw = await self.line(max(0.1, deadline - time.monotonic()))
            assert raw, "connection closed"
            if json.loads(raw).get("method"):
                self.notifications.append(raw)
                continue
            assert json.loads(raw)["id"] == request_id, raw
            return raw

    async def notification(self, pattern: re.Pattern[bytes], timeout: float = 20.0) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            while self.notifications:
                raw = self.notifications.pop(0)
                match = pattern.fullmatch(raw)
                if match:
                    return match
                assert RE_SET_TARGET.fullmatch(raw) or RE_NOTIFY.fullmatch(raw), f"unexpected line {raw!r}"
            raw = await self.line(max(0.1, deadline - time.monotonic()))
            assert raw, "connection closed"
            self.notifications.append(raw)

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        with contextlib.suppress(ConnectionError):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = await asyncio.wait_for(self.reader.read(1 << 16), deadline - time.monotonic())
                if not data:
                    return True
        return True

    def close(self) -> None:
        self.writer.close()


def find_nonce(pow_hash: bytes, extranonce1: bytes, target: int, start: int = 0, above: int = -1) -> bytes:
    """extranonce2 of the first nonce from ``start`` whose Eaglesong output is <= target and > ``above``.

    ``above`` lets a test ask for a share that is *not* a block: on the dev chain the network target is close
    enough to a share target that a share is sometimes a block too, and a block moves the tip (every job stale).
    """
    counter = start
    while True:
        found = search(pow_hash, counter, 200_000, target, nonce_prefix=extranonce1)
        if found is None:
            counter += 200_000
            continue
        nonce16 = found.to_bytes(16, "little")
        if int.from_bytes(pow_output(pow_hash, nonce16), "big") > above:
            return nonce16[len(extranonce1) :]
        counter = (found >> (8 * len(extranonce1))) + 1


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_v1_conversation_matches_the_wire_formats_byte_for_byte(stack: Stack, pool_node: CkbNode) -> None:  # noqa: F811
    pool = stack.pool
    assert pool.watcher is not None and pool.watcher.current is not None
    miner = await RawV1.connect(stack.address)
    try:
        miner.send(1, "mining.subscribe", ["ckbminer-v1.0.0", None])
        subscribe = RE_SUBSCRIBE.fullmatch(await miner.response(1))
        assert subscribe, "subscribe result shape"
        extranonce1 = bytes.fromhex(subscribe.group(1).decode())
        channel = stack.pool_channel()
        assert extranonce1.startswith(channel.info.extranonce_prefix)  # pool prefix || 2-byte miner id

        miner.send(2, "mining.authorize", [f"{USER}.rig1", "x"])
        assert await miner.response(2) == b'{"id":2,"result":true,"error":null}\n'
        # set_target comes before the first notify
        first = miner.notifications.pop(0) if miner.notifications else await miner.line()
        assert RE_SET_TARGET.fullmatch(first), f"set_target first, got {first!r}"
        notify = await miner.notification(RE_NOTIFY)
        job_id, pow_hex, height, parent_hex, clean = (g.decode() for g in notify.groups())
        assert clean == "true"
        current = pool.server.jobs.current if pool.server else None
        assert current is not None
        if pow_hex != current.job.pow_hash.hex():  # a same-height refresh may already be on its way
            notify = await miner.notification(RE_NOTIFY)
            job_id, pow_hex, height, parent_hex, clean = (g.decode() for g in notify.groups())
        job = pool.server.jobs.current
        assert job is not None
        assert (pow_hex, int(height), parent_hex) == (job.job.pow_hash.hex(), job.job.height, job.job.parent_hash.hex())
        assert stack.proxy.v1 is not None
        # the pool's vardiff may move the target meanwhile: meet the harder of the two views
        share_target = min(channel.target, stack.proxy.v1.upstream_target)

        # a real share -> result true (the pool's verdict)
        pow_hash = bytes.fromhex(pow_hex)
        # ... that is not also a block: a block would make the job stale before the duplicate check below
        extranonce2 = find_nonce(pow_hash, extranonce1, share_target, above=job.job.target)
        miner.send(3, "mining.submit", [f"{USER}.rig1", job_id, extranonce2.hex()])
        assert await miner.response(3) == b'{"id":3,"result":true,"error":null}\n'
        await _wait(lambda: channel.accepted == 1, 10, "the pool to count the share")

        # the same share again -> 22, answered by the proxy
        miner.send(4, "mining.submit", [f"{USER}.rig1", job_id, extranonce2.hex()])
        assert await miner.response(4) == b'{"id":4,"result":null,"error":[22,"Duplicate share",null]}\n'

        # a nonce that misses the target -> 23
        easiest = (0xFFFF << 240) // 1000  # min_share_difficulty 1000: no target is easier than this
        counter = 10**9
        while int.from_bytes(pow_output(pow_hash, extranonce1 + counter.to_bytes(10, "little")), "big") <= easiest:
            counter += 1
        miner.send("five", "mining.submit", [f"{USER}.rig1", job_id, counter.to_bytes(10, "little").hex()])
        assert await miner.response("five") == b'{"id":"five","result":null,"error":[23,"Low difficulty",null]}\n'

        # unknown job -> 21; a worker that never authorized -> 24; wrong extranonce2 size -> 27
        miner.send(6, "mining.submit", [f"{USER}.rig1", "ffffffffff", extranonce2.hex()])
        assert await miner.response(6) == b'{"id":6,"result":null,"error":[21,"Job not found (=stale)",null]}\n'
        miner.send(7, "mining.submit", [f"{USER}.rig2", job_id, extranonce2.hex()])
        assert await miner.response(7) == (
            b'{"id":7,"result":null,"error":[24,"Unauthorized worker: ' + USER.encode() + b'.rig2",null]}\n'
        )
        miner.send(8, "mining.submit", [f"{USER}.rig1", job_id, "00" * 12])
        assert await miner.response(8) == (
            b'{"id":8,"result":null,"error":[27,"Illegal params: extranonce2 must be 10 bytes (20 hex digits)",null]}\n'
        )
        miner.send(9, "mining.extranonce.subscribe", [])
        assert await miner.response(9) == b'{"id":9,"result":true,"error":null}\n'

        # a block: the node accepts it, and the proxy sends a clean notify built on it
        network_target = job.job.target
        block_extranonce2 = find_nonce(pow_hash, extranonce1, network_target, start=1 << 40)
        miner.send(10, "mining.submit", [f"{USER}.rig1", job_id, block_extranonce2.hex()])
        assert await miner.response(10) == b'{"id":10,"result":true,"error":null}\n'
        await _wait(lambda: any(b.status == "accepted" for b in pool.recent_blocks), 30, "the block")
        block = next(b for b in pool.recent_blocks if b.status == "accepted")
        assert block.height == int(height)
        async with pool_node.client() as client:
            header = await client.call("get_header_by_number", [hex(block.height)])
        assert header["hash"] == "0x" + block.block_hash.hex()
        assert block.worker == "farm"  # the pool sees the proxy's channel

        deadline = time.monotonic() + 30
        while True:
            notify = await miner.notification(RE_NOTIFY, timeout=max(0.1, deadline - time.monotonic()))
            if notify.group(4).decode() == block.block_hash.hex():
                break
        assert notify.group(5) == b"true" and int(notify.group(3)) == block.height + 1
        assert channel.accepted == 2 and stack.proxy.v1 is not None and stack.proxy.v1.accepted == 2
    finally:
        miner.close()


async def test_bad_input_costs_only_that_connection(stack: Stack) -> None:
    proxy = stack.proxy
    assert proxy.v1 is not None
    honest = V1Miner(*stack.address, f"{USER}.honest", chunk=5_000)
    honest_task = asyncio.create_task(honest.run(duration=120))
    try:
        await _wait(lambda: honest.stats.accepted >= 1, 30, "the honest miner's first share")

        async def subscribed() -> RawV1:
            client = await RawV1.connect(stack.address)
            client.send(1, "mining.subscribe", ["bad-actor", None])
            assert RE_SUBSCRIBE.fullmatch(await client.response(1))
            return client

        # malformed JSON, a non-object, unknown method: JSON-RPC errors, and the connection still works
        client = await subscribed()
        client.send_raw(b'{"id":2,"method":"mining.authorize","params":["x"\n')
        assert await client.response(None) == (
            b'{"id":null,"result":null,"error":[26,"Illegal method: malformed JSON",null]}\n'
        )
        client.send_raw(b"[1,2,3]\n")
        assert await client.response(None) == (
            b'{"id":null,"result":null,"error":[26,"Illegal method: not a JSON object",null]}\n'
        )
        client.send(3, "mining.get_transactions", [])
        assert await client.response(3) == (
            b'{"id":3,"result":null,"error":[26,"Illegal method: mining.get_transactions",null]}\n'
        )
        client.send(4, "mining.submit", [f"{USER}.x", "1", "00" * 10])  # submit before authorize
        assert await client.response(4) == b'{"id":4,"result":null,"error":[24,"Unauthorized worker",null]}\n'
        client.send(5, "mining.authorize", [f"{USER}.x", "x"])
        assert await client.response(5) == b'{"id":5,"result":true,"error":null}\n'
        client.send(6, "mining.submit", [f"{USER}.x", "1", "00" * 9])  # wrong extranonce2 size
        assert await client.response(6) == (
            b'{"id":6,"result":null,"error":[27,"Illegal params: extranonce2 must be 10 bytes (20 hex digits)",null]}\n'
        )
        client.close()

        # submit before subscribe
        client = await RawV1.connect(stack.address)
        client.send(1, "mining.submit", [f"{USER}.x", "1", "00" * 10])
        assert await client.response(1) == b'{"id":1,"result":null,"error":[25,"Not subscribed",null]}\n'
        client.close()

        # a line over 16 KiB: the proxy closes that connection
        client = await subscribed()
        closes_before = proxy.v1.bad_closes
        client.send_raw(b'{"id":2,"method":"mining.authorize","params":["' + b"a" * (17 * 1024) + b'"]}\n')
        assert await client.closed_by_server()
        await _wait(lambda: proxy.v1 is not None and proxy.v1.bad_closes == closes_before + 1, 10, "the close")
        client.close()

        # an endless line without newline: closed as soon as it passes the limit
        client = await subscribed()
        client.send_raw(b"x" * (20 * 1024))
        assert await client.closed_by_server()
        client.close()

        # nothing of that touched anyone else: the honest miner keeps its connection and keeps getting shares in
        accepted = honest.stats.accepted
        await _wait(lambda: honest.stats.accepted > accepted, 30, "more honest shares")
        assert not honest_task.done()
        assert proxy.v1.upstream.connected and proxy.v1.upstream.connections == 1
    finally:
        honest.stop()
        stats = await honest_task
    assert stats.connects == 1 and stats.unanswered == 0
    assert set(stats.rejected_codes) <= {21}, stats.rejected_codes


async def test_cli_proxy_run_and_the_v1_cli_miner(stack: Stack, tmp_path: Path) -> None:
    """`ckbpool proxy run -c proxy.toml` (uvloop, as operators run it) and `ckbpool miner --protocol v1`."""
    from ckbpool.ckb.node import free_port

    assert stack.pool.server is not None
    host, port = stack.pool.server.address
    authority = stack.proxy.config.upstream.authority_public_key
    v1_port = free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'identity = "aggregated"\n\n[upstream]\nhost = "{host}"\nport = {port}\nauthority_public_key = "{authority}"\n'
        f'user_identity = "{USER}.cli"\n\n[v1]\nlisten_host = "127.0.0.1"\nlisten_port = {v1_port}\n\n'
        "[v1.vardiff]\ninitial_difficulty = 100000.0\n"
    )
    proxy = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ckbpool.cli", "proxy", "run", "-c", str(config), stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proxy.stderr is not None
        banner = await asyncio.wait_for(proxy.stderr.readline(), 30)
        while b"ckbpool proxy running" not in banner:
            assert banner, "the proxy exited"
            banner = await asyncio.wait_for(proxy.stderr.readline(), 30)
        assert f"V1 on 127.0.0.1:{v1_port}".encode() in banner
        miner = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ckbpool.cli",
            "miner",
            "--protocol",
            "v1",
            "--url",
            f"127.0.0.1:{v1_port}",
            "--user",
            f"{USER}.cli-rig",
            "--duration",
            "4",
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(miner.communicate(), 60)
        assert miner.returncode == 0, err.decode()
        summary = re.search(rb"submitted (\d+), accepted (\d+), rejected (\d+)", err)
        assert summary and int(summary.group(2)) > 0, err.decode()
        channels = [c for s in stack.pool.server.sessions for c in s.channels.values() if c.worker == "cli"]
        assert len(channels) == 1 and channels[0].accepted == int(summary.group(2))
    finally:
        if proxy.returncode is None:
            proxy.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proxy.wait(), 15)
            if proxy.returncode is None:
                proxy.kill()
                await proxy.wait()
    assert proxy.returncode == 0
