"""Abuse runs against the pool's Stratum V2 side, each while an honest CPU miner mines (issue 15, "Must show").

Four runs, each on a fresh pool process with the **default** abuse limits (only vardiff is set for a quick test
chain: a share interval of 0.05 s, so the floor is 1e4 H/s x 0.05 s = 500 hashes a share), against a real ckb dev
node whose target (2^220) is harder than the share floor:

1. **tiny**: a second CPU miner declares ``nominal_hash_rate = 1e-9`` and mines as fast as it can.
2. **channels**: one connection asks for 1,000 extended channels (at 1e-9 H/s each) and stays connected.
3. **half-open**: one address (127.0.0.3) keeps up to 5,000 TCP connections open that never start the Noise
   handshake, topping them up as the pool closes them, for the whole window.
4. **names**: one address (127.0.0.4) opens 100,000 extended channels, each under a distinct worker name
   (``mallory.n<i>``, 256 a connection: the default channel cap), and mines one share for each at its channel's
   target (the difficulty floor: one hashing thread, as an attacker's core) -- so every name reaches the stratum
   server's channel state and, once its share is accepted, the books: here the pool's accounting writes to a real
   ``redis-server`` (AOF always, ``maxmemory`` 1 GiB, ``noeviction``, as rendered) and the books are read after
   the run (attacker worker hashes, keys, memory). ``benchmarks.abuse_identity`` floods the books alone with 100k
   accepted names (the cost the attacker did not pay here is the difficulty floor of each).

Each run: the honest miner (127.0.0.1, one C Eaglesong thread, 1e4 hashes a share at a target that never moves:
vardiff's tolerance is huge) warms up, then its accepted shares are counted over a baseline window without abuse
and then over the same length of window with the abuse running -- the same run, the same pool process. Figures:
the honest miner's accepted shares/s and hashes/s in both windows, the loss in shares/s and in shares per hash
(what the pool lost or refused, whatever CPU the abuser took); the pool process's RSS before the abuse and its
peak (VmHWM) at the end; what the abuser got (channels, shares, the targets it was given, sockets the pool held)
and the pool's ``ckbpool_stratum_limited_total`` counts.

Caveat the numbers carry: the machine has 2 shared cores, so the honest miner's share rate also moves with CPU
contention (the abusers' processes and hashing threads compete with it; other jobs may run too): the per-hash
figure separates that. Poisson noise on ~15 s x ~50 shares/s is ~3 %.

Bounded: every window has a deadline, the pool child has a hard lifetime and dies with its stdin. Loopback only.
``python -m benchmarks.abuse_pool`` prints the markdown section; ``main()`` returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WARMUP_S = 5.0
WINDOW_S = 15.0
#: longer windows where the abuse takes longer to set up (100k channels opened and a share mined for each)
WINDOWS = {"names": 40.0}
POOL_LIFETIME_S = 240  # the pool child kills itself after this (SIGALRM)
KINDS = ("tiny", "channels", "half-open", "names")
HALF_OPEN = 5_000
CHANNELS = 1_000
NAMES = 100_000
NAMES_PER_CONNECTION = 256  # stratum.max_channels_per_connection's default
EASY = (1 << 256) - 1
TWO_256 = 1 << 256


# --- the pool, in its own process -------------------------------------------------------------------------------------


def _status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def _serve_pool(config_path: str) -> None:
    """Child: the real embedded Pool; answers ``stats`` lines on stdin with one JSON line; exits on EOF."""
    from ckbpool.pool.config import load_pool_config
    from ckbpool.pool.metrics import LIMIT_REASONS
    from ckbpool.pool.service import Pool
    from ckbpool.pool.stratum import server_stats
    from ckbpool.sv2.certs import Certificate
    from ckbpool.sv2.keys import Keypair
    from ckbpool.sv2.noise import ResponderCredentials

    signal.alarm(POOL_LIFETIME_S)
    authority, static = Keypair.generate(), Keypair.generate()
    now = int(time.time())
    cert = Certificate.issue(authority, static.xonly_public, now - 60, now + 3600)
    credentials = ResponderCredentials.from_certificate(static.secret, cert)
    pool = Pool(load_pool_config(Path(config_path)), credentials=credentials)
    await pool.start()
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=read_stdin, daemon=True).start()
    try:
        for _ in range(200):
            if pool.watcher is not None and pool.watcher.current is not None:
                break
            await asyncio.sleep(0.1)
        assert pool.server is not None
        print(json.dumps({"port": pool.server.address[1], "authority": authority.authority_public_key}), flush=True)
        registry = pool.metrics.registry
        while await lines.get() == "stats":
            stats = server_stats(pool.server)
            limited = {
                r: registry.get_sample_value("ckbpool_stratum_limited_total", {"reason": r}) for r in LIMIT_REASONS
            }
            accepted = registry.get_sample_value("ckbpool_shares_total", {"result": "accepted"})
            print(
                json.dumps(
                    {
                        "rss_kb": _status_kb("self", "VmRSS"),
                        "peak_rss_kb": _status_kb("self", "VmHWM"),
                        "connections": stats.connections,
                        "admitted": pool.server.limiter.connections,
                        "channels": stats.channels,
                        "accepted": accepted,
                        "limited": {k: v for k, v in limited.items() if v},
                    }
                ),
                flush=True,
            )
    finally:
        await pool.close()


class PoolChild:
    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        path = workdir / "pool.toml"
        path.write_text(_toml(config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.abuse_pool", "--serve-pool", str(path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        first = self._line(60)
        self.port: int = first["port"]
        self.authority: str = first["authority"]

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError("the pool process did not answer")
        return json.loads(result[0])  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self._line(20)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    out = [f"[{prefix}]"] if prefix and scalars else []
    out += [f"{k} = {json.dumps(v)}" for k, v in scalars.items()]
    for key, value in data.items():
        if isinstance(value, dict):
            out.append(_toml(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out) + "\n"


# --- abusers ----------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    baseline_rate: float = 0.0
    abused_rate: float = 0.0
    baseline_hashrate: float = 0.0
    abused_hashrate: float = 0.0
    rss_before_kb: int = 0
    peak_rss_kb: int = 0
    abuser: dict[str, Any] = field(default_factory=dict)
    limited: dict[str, float] = field(default_factory=dict)
    window_s: float = WINDOW_S
    books: dict[str, Any] = field(default_factory=dict)

    @property
    def loss(self) -> float:
        return 0.0 if self.baseline_rate <= 0 else max(0.0, 1 - self.abused_rate / self.baseline_rate)

    @property
    def per_hash_loss(self) -> float:
        """Loss in accepted shares per hash computed: what the pool lost or refused, whatever CPU the abuser took."""
        if self.baseline_rate <= 0 or self.baseline_hashrate <= 0 or self.abused_hashrate <= 0:
            return 0.0
        per_hash = (self.abused_rate / self.abused_hashrate) / (self.baseline_rate / self.baseline_hashrate)
        return max(0.0, 1 - per_hash)


async def _tiny_miner(host: str, port: int, authority: str, stop: asyncio.Event) -> dict[str, Any]:
    from ckbpool.miner.sv2 import Sv2Miner

    miner = Sv2Miner(host, port, "abuser.tiny", authority_public_key=authority, nominal_hash_rate=1e-9)
    task = asyncio.create_task(miner.run(duration=WINDOW_S + 5))
    await stop.wait()
    miner.stop()
    stats = await asyncio.wait_for(task, 15)
    targets = stats.targets or [EASY]
    return {
        "accepted shares": stats.accepted,
        "shares/s": round(stats.accepted / WINDOW_S, 1),
        "first target (hashes/share)": round(TWO_256 / targets[0]),
        "last target (hashes/share)": round(TWO_256 / targets[-1]),
        "hashes done": stats.hashes,
    }


async def _raw_session(host: str, port: int, authority: str, source: str) -> Any:
    from ckbpool.sv2.client import ClientConnection
    from ckbpool.sv2.events import ConnectionSetUp
    from ckbpool.sv2.messages import SetupConnection
    from ckbpool.sv2.noise import MSG2_SIZE, NoiseInitiator

    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), 5)
    initiator = NoiseInitiator(authority)
    writer.write(initiator.start())
    noise = initiator.complete(await asyncio.wait_for(reader.readexactly(MSG2_SIZE), 5))
    conn = ClientConnection()
    writer.write(noise.encrypt_frame(conn.send(SetupConnection(0, 2, 2, 0, host, port, "abuser", "", "", ""))))
    for _ in range(100):  # until SetupConnection.Success (bounded)
        data = await asyncio.wait_for(reader.read(1 << 16), 5)
        if not data:
            raise ConnectionError("the pool closed the connection during setup")
        for event in (e for f in noise.feed(data) for e in conn.receive_frame(f)):
            if isinstance(event, ConnectionSetUp):
                return reader, writer, noise, conn, event
    raise ConnectionError("no SetupConnection.Success")


async def _many_channels(host: str, port: int, authority: str, stop: asyncio.Event) -> dict[str, Any]:
    from ckbpool.sv2.events import ChannelOpened, ChannelOpenRejected
    from ckbpool.sv2.messages import OpenExtendedMiningChannel

    reader, writer, noise, conn, _setup = await _raw_session(host, port, authority, "127.0.0.2")
    opened = rejected = 0
    codes: dict[str, int] = {}
    frames_in = 0
    writer.write(
        b"".join(
            noise.encrypt_frame(conn.send(OpenExtendedMiningChannel(i, "abuser.many", 1e-9, EASY, 0)))
            for i in range(1, CHANNELS + 1)
        )
    )
    while not stop.is_set():  # keep reading (jobs to every channel it got) until the window ends
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), 0.5)
        except TimeoutError:
            continue
        if not data:
            break
        for frame in noise.feed(data):
            frames_in += 1
            for event in conn.receive_frame(frame):
                if isinstance(event, ChannelOpened):
                    opened += 1
                elif isinstance(event, ChannelOpenRejected):
                    rejected += 1
                    codes[event.response.error_code] = codes.get(event.response.error_code, 0) + 1
    writer.close()
    return {"channels asked": CHANNELS, "granted": opened, "refused": rejected, "codes": codes, "frames in": frames_in}


@dataclass
class _NameChannel:
    """One of the name abuser's channels: its name's one share is mined once a job is active on it."""

    prefix: bytes
    extranonce_size: int
    target: int
    jobs: dict[int, Any] = field(default_factory=dict)
    submitted: bool = False


async def _many_names(host: str, port: int, authority: str, stop: asyncio.Event) -> dict[str, Any]:
    """NAMES distinct worker names, each an extended channel (MAX_CHANNELS a connection, the default cap) from one
    address, and for each name one share mined at its channel's target (the difficulty floor: the attacker pays
    it): every name reaches the stratum server's per-channel state and, with an accepted share, the books."""
    from ckbpool.ckb.eaglesong import search
    from ckbpool.sv2 import ckb_profile
    from ckbpool.sv2.events import ChannelOpened, ChannelOpenRejected, MessageReceived
    from ckbpool.sv2.messages import (
        NewExtendedMiningJob,
        OpenExtendedMiningChannel,
        SetNewPrevHash,
        SubmitSharesError,
        SubmitSharesExtended,
        SubmitSharesSuccess,
    )

    counts = {"connections": 0, "connect failures": 0, "channels": 0, "refused": 0, "shares sent": 0,
              "accepted": 0, "rejected": 0, "hashes": 0}  # fmt: skip
    gate = asyncio.Semaphore(32)  # handshakes at a time (the per-IP in-progress cap is 256)
    mining = asyncio.Lock()  # one hashing thread: the attacker's one core, as the tiny-rate run
    sessions: list[Any] = []

    async def connection(first: int) -> None:
        async with gate:
            try:
                reader, writer, noise, conn, setup = await _raw_session(host, port, authority, "127.0.0.4")
            except (OSError, TimeoutError, ConnectionError):
                counts["connect failures"] += 1
                return
        counts["connections"] += 1
        sessions.append(writer)
        blake2b = ckb_profile.pow_function_from_flags(setup.response.flags) is ckb_profile.PowFunction.EAGLESONG_BLAKE2B
        names = range(first, min(first + NAMES_PER_CONNECTION, NAMES))
        writer.write(
            b"".join(
                noise.encrypt_frame(conn.send(OpenExtendedMiningChannel(i + 1, f"mallory.n{n:06d}", 1e-9, EASY, 0)))
                for i, n in enumerate(names)
            )
        )
        channels: dict[int, _NameChannel] = {}
        ready: asyncio.Queue[tuple[int, _NameChannel, Any]] = asyncio.Queue()
        seq = 0

        async def submit_all() -> None:
            nonlocal seq
            while not stop.is_set():
                channel_id, channel, job = await ready.get()
                prefix = channel.prefix + bytes(channel.extranonce_size)
                found = None
                counter = 0
                async with mining:
                    while found is None and not stop.is_set():
                        # in the event loop: ~500 hashes at the floor, well under a millisecond (a thread hop per
                        # share cost more than the hashing)
                        found = search(
                            job.pow_hash, counter, 4096, channel.target, blake2b=blake2b, nonce_prefix=prefix
                        )
                        counter += 4096
                        counts["hashes"] += 4096 if found is None else (found >> (8 * len(prefix))) - counter + 4097
                        await asyncio.sleep(0)
                if found is None:
                    return
                parts = ckb_profile.split_nonce16(found.to_bytes(16, "little"), len(channel.prefix))
                seq += 1
                message = SubmitSharesExtended(
                    channel_id, seq, job.job_id, parts.nonce, job.min_ntime or 0, parts.version, parts.extranonce
                )
                writer.write(noise.encrypt_frame(conn.send(message)))
                counts["shares sent"] += 1

        submitter = asyncio.create_task(submit_all())
        try:
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(1 << 16), 0.5)
                except TimeoutError:
                    continue
                if not data:
                    break
                for event in (e for f in noise.feed(data) for e in conn.receive_frame(f)):
                    if isinstance(event, ChannelOpened):
                        counts["channels"] += 1
                        info = event.channel
                        channels[info.channel_id] = _NameChannel(
                            info.extranonce_prefix, info.extranonce_size, info.target
                        )
                    elif isinstance(event, ChannelOpenRejected):
                        counts["refused"] += 1
                    elif isinstance(event, MessageReceived):
                        msg = event.message
                        if isinstance(msg, NewExtendedMiningJob) and msg.channel_id in channels:
                            job = ckb_profile.job_info(msg)
                            channel = channels[msg.channel_id]
                            channel.jobs[job.job_id] = job
                            if job.min_ntime is not None and not channel.submitted:
                                channel.submitted = True
                                ready.put_nowait((msg.channel_id, channel, job))
                        elif isinstance(msg, SetNewPrevHash) and msg.channel_id in channels:
                            channel = channels[msg.channel_id]
                            future = channel.jobs.get(msg.job_id)
                            if future is not None and not channel.submitted:
                                channel.submitted = True
                                ready.put_nowait((msg.channel_id, channel, replace(future, min_ntime=msg.min_ntime)))
                        elif isinstance(msg, SubmitSharesSuccess):
                            counts["accepted"] += msg.new_submits_accepted_count
                        elif isinstance(msg, SubmitSharesError):
                            counts["rejected"] += 1
        except (ConnectionError, OSError):
            pass
        finally:
            submitter.cancel()
            with contextlib.suppress(BaseException):
                await submitter

    tasks = [asyncio.create_task(connection(first)) for first in range(0, NAMES, NAMES_PER_CONNECTION)]
    await stop.wait()
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for writer in sessions:
        writer.close()
    return {"names asked": NAMES, **counts}


async def _half_open(host: str, port: int, stop: asyncio.Event) -> dict[str, Any]:
    """Keep up to HALF_OPEN sockets from 127.0.0.3 open without a handshake byte; reopen what the pool closes."""
    open_socks: dict[int, asyncio.StreamWriter] = {}
    attempts = connect_failures = closed_by_pool = 0
    peak_open = 0
    next_id = 0

    async def one() -> None:
        nonlocal attempts, connect_failures, closed_by_pool, next_id
        attempts += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=("127.0.0.3", 0)), 2)
        except (OSError, TimeoutError):
            connect_failures += 1
            return
        ident = next_id = next_id + 1
        open_socks[ident] = writer
        with contextlib.suppress(ConnectionError, OSError):
            await reader.read(1)  # EOF or reset when the pool closes it; the stop event cancels us
        closed_by_pool += 1
        open_socks.pop(ident, None)
        writer.close()

    tasks: set[asyncio.Task[None]] = set()
    while not stop.is_set():  # once a second: top up to HALF_OPEN sockets, 250 connects at a time
        wave = time.monotonic()
        while len(tasks) < HALF_OPEN and not stop.is_set():
            for _ in range(min(250, HALF_OPEN - len(tasks))):
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.01)
        peak_open = max(peak_open, len(open_socks))
        await asyncio.sleep(max(0.1, 1.0 - (time.monotonic() - wave)))
    held_at_end = len(open_socks)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for writer in open_socks.values():
        writer.close()
    return {
        "connection attempts": attempts,
        "connect timeouts/errors": connect_failures,
        "closed by the pool": closed_by_pool,
        "peak sockets open (client side)": peak_open,
        "open at the end": held_at_end,
    }


# --- a run ------------------------------------------------------------------------------------------------------------


async def _run(kind: str, config: dict[str, Any], workdir: Path) -> Outcome:
    from ckbpool.miner.sv2 import Sv2Miner

    pool = await asyncio.to_thread(PoolChild, config, workdir)
    window = WINDOWS.get(kind, WINDOW_S)
    outcome = Outcome(kind, window_s=window)
    try:
        honest = Sv2Miner("127.0.0.1", pool.port, "honest.rig1", authority_public_key=pool.authority)
        honest_task = asyncio.create_task(honest.run(duration=WARMUP_S + 2 * window + 30))
        await asyncio.sleep(WARMUP_S)
        start, hashes = honest.stats.accepted, honest.stats.hashes
        await asyncio.sleep(window)
        outcome.baseline_rate = (honest.stats.accepted - start) / window
        outcome.baseline_hashrate = (honest.stats.hashes - hashes) / window
        before = await asyncio.to_thread(pool.stats)
        outcome.rss_before_kb = before["rss_kb"]
        honest_hashes = honest.stats.hashes
        # the abuser runs in its own process: its event loop and hashing must not share this one with the honest miner
        abuser = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.abuse_pool",
            "--abuse",
            kind,
            str(pool.port),
            pool.authority,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        start = honest.stats.accepted
        await asyncio.sleep(window)
        outcome.abused_rate = (honest.stats.accepted - start) / window
        outcome.abused_hashrate = (honest.stats.hashes - honest_hashes) / window
        during = await asyncio.to_thread(pool.stats)
        out, _ = await asyncio.wait_for(abuser.communicate(), window + 30)
        outcome.abuser = json.loads(out.decode().strip().splitlines()[-1])
        outcome.abuser["pool: connections admitted / channels open (in the window)"] = (
            f"{during['admitted']} / {during['channels']}"
        )
        honest.stop()
        await asyncio.wait_for(honest_task, 15)
        after = await asyncio.to_thread(pool.stats)
        outcome.peak_rss_kb = after["peak_rss_kb"]
        outcome.limited = after["limited"]
    finally:
        await asyncio.to_thread(pool.close)
    return outcome


def _pool_config(node: Any, data_dir: Path) -> dict[str, Any]:
    return {
        "network": "dev",
        "node": {
            "rpc_url": node.config.rpc_url,
            "subscribe_address": f"127.0.0.1:{node.config.tcp_rpc_port}",
            "poll_interval_ms": 200,
        },
        "stratum": {"listen_host": "127.0.0.1", "listen_port": 0},  # every abuse limit at its default
        # the honest miner (declaring 0 H/s: initial_hashrate) gets 1e4 hashes a share, ~50/s at its ~500 kH/s (Poisson
        # noise ~3 % in a 15 s window), and its target never moves (a huge tolerance): its accepted shares per hash
        # are then a constant
        # unless the pool loses or refuses its shares, and its shares/s follows its hashing only. (With vardiff on,
        # a pool stalled by the abuse sees a gap, eases the target and the share rate *rises*: meaningless.) The
        # abusers' targets stay at the difficulty floor, their worst case.
        "vardiff": {"share_interval_s": 0.05, "retarget_interval_s": 1.0, "initial_hashrate": 2e5, "tolerance": 1e12},
        "blocks": {"data_dir": str(data_dir / "blocks")},
        "http": {"listen_host": "127.0.0.1", "listen_port": 0},
        "success_batch_ms": 20,
    }


def _books(client: Any) -> dict[str, Any]:
    """What the names left in Redis after the run (the pool closed: accounting drained)."""
    from ckbpool.payouts.pplns import read_shares_sync

    attacker_workers = sum(1 for _ in client.scan_iter(match="ckbpool:worker:mallory.*", count=10_000))
    return {
        "used_memory_mib": int(client.info("memory")["used_memory"]) / 2**20,
        "keys": int(client.dbsize()),
        "attacker worker hashes": attacker_workers,
        "workers index": int(client.zcard("ckbpool:workers")),
        "share log shares": len(read_shares_sync(client)),  # an entry holds a batch's chunk of shares
        "share log entries": int(client.xlen("ckbpool:sharelog")),
    }


def run(kinds: tuple[str, ...] = KINDS) -> list[Outcome]:
    from ckbpool.ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, DevKey
    from ckbpool.ckb.install import CKB_VERSION, find_or_install_ckb
    from ckbpool.ckb.node import CkbNode, NodeConfig
    from ckbpool.ckb.target import target_to_compact

    from .bench_accounting import RedisProcess

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    explicit = os.environ.get("CKBPOOL_CKB_BINARY")
    binary = find_or_install_ckb(
        CKB_VERSION, Path(explicit) if explicit else None, allow_download=False, allow_build=False
    )
    workdir = Path(tempfile.mkdtemp(prefix="abuse_pool-"))
    node = CkbNode(
        NodeConfig.for_tests(
            workdir / "node",
            DevKey(DEV_GENESIS_PRIVATE_KEY).lock,
            genesis_compact_target=target_to_compact(1 << 220),
            die_with_parent=True,
        ),
        binary,
    )
    outcomes = []
    try:
        node.init(force=True)
        node.start()
        asyncio.run(node.wait_ready(timeout=60))
        for kind in kinds:
            run_dir = workdir / kind
            run_dir.mkdir()
            config = _pool_config(node, run_dir)
            if kind != "names":
                outcomes.append(asyncio.run(_run(kind, config, run_dir)))
                continue
            # the names reach the books: the pool's accounting writes to a real redis-server as rendered
            with RedisProcess(appendfsync="always") as redis:
                client = redis.client()
                try:
                    client.config_set("maxmemory", "1gb")
                    client.config_set("maxmemory-policy", "noeviction")
                    config["redis"] = {"url": redis.url}
                    outcome = asyncio.run(_run(kind, config, run_dir))
                    outcome.books = _books(client)
                finally:
                    client.close()
            outcomes.append(outcome)
    finally:
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return outcomes


TITLES = {
    "tiny": "a miner declaring 1e-9 H/s (mining on one CPU thread)",
    "channels": f"{CHANNELS:,} channels on one connection",
    "half-open": f"{HALF_OPEN:,} concurrent half-open handshakes from one IP",
    "names": f"{NAMES:,} distinct worker names ({NAMES_PER_CONNECTION} channels a connection, a share mined for each)",
}


def to_markdown(outcomes: list[Outcome]) -> str:
    lines = [
        "## Abuse runs (Stratum V2 side, default limits)",
        "",
        f"Honest CPU miner (1 thread, a fixed target of 1e4 hashes a share) on a fresh pool per run; a baseline window "
        f"({WINDOW_S:.0f} s; {', '.join(f'{k}: {v:.0f} s' for k, v in WINDOWS.items())}), then as long with the "
        f"abuse; real ckb dev node; loopback; {os.cpu_count()} cores shared.",
        "",
        "| abuse | honest shares/s (baseline → abused) | loss | honest kH/s hashed (baseline → abused) "
        "| loss per hash | pool RSS before → peak | within 10 %? (shares/s; per hash) |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {TITLES[o.name]} | {o.baseline_rate:.1f} → {o.abused_rate:.1f} | {o.loss:.1%} | "
            f"{o.baseline_hashrate / 1e3:.0f} → {o.abused_hashrate / 1e3:.0f} | {o.per_hash_loss:.1%} | "
            f"{o.rss_before_kb / 1024:.0f} → {o.peak_rss_kb / 1024:.0f} MiB | "
            f"{'yes' if o.loss <= 0.10 else 'NO'}; {'yes' if o.per_hash_loss <= 0.10 else 'NO'} |"
        )
    lines += [
        "",
        "Loss per hash: the honest miner's accepted shares per hash computed, abused vs baseline (its target is fixed, "
        "so this is what the pool lost, refused or answered late enough to be stale). The shares/s loss adds the "
        "hashing time the abuser's processes took from the honest miner on the same 2 cores (other jobs ran there "
        "too).",
    ]
    lines.append("")
    for o in outcomes:
        got = "; ".join(f"{k}: {v}" for k, v in o.abuser.items())
        limited = ", ".join(f"{k} {v:.0f}" for k, v in sorted(o.limited.items())) or "none"
        lines.append(
            f"- **{TITLES[o.name]}** — abuser got: {got}. Pool refusals (`ckbpool_stratum_limited_total`): {limited}."
        )
        if o.books:
            books = "; ".join(
                f"{k}: {v:,.0f}" if isinstance(v, int | float) else f"{k}: {v}" for k, v in o.books.items()
            )
            lines.append(f"  Books after the run (real redis-server, AOF always, maxmemory 1gb noeviction): {books}.")
    return "\n".join(lines) + "\n"


async def _abuse(kind: str, port: int, authority: str) -> dict[str, Any]:
    """Abuser child: run one abuse for its window, return what it got."""
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(WINDOWS.get(kind, WINDOW_S), stop.set)
    if kind == "tiny":
        return await _tiny_miner("127.0.0.1", port, authority, stop)
    if kind == "channels":
        return await _many_channels("127.0.0.1", port, authority, stop)
    if kind == "names":
        return await _many_names("127.0.0.1", port, authority, stop)
    return await _half_open("127.0.0.1", port, stop)


def main(kinds: tuple[str, ...] = KINDS) -> str:
    """Run the abuse runs (about 5 minutes) and return the markdown section."""
    return to_markdown(run(kinds))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-pool":
        asyncio.run(_serve_pool(sys.argv[2]))
    elif len(sys.argv) == 5 and sys.argv[1] == "--abuse":
        signal.alarm(int(WINDOWS.get(sys.argv[2], WINDOW_S)) + 60)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        print(json.dumps(asyncio.run(_abuse(sys.argv[2], int(sys.argv[3]), sys.argv[4]))), flush=True)
    else:
        print(main(tuple(sys.argv[1:]) or KINDS))
