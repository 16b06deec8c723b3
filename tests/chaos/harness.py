"""The chaos harness (issue 15, item 4): real components under steady load, ``kill -9`` at random moments, then an
exact audit of the books against what every miner was told.

Topologies
----------
- **Kafka** (:class:`KafkaChaos`): a ckb dev node, one Kafka broker (KRaft), Redis with AOF (``appendfsync
  always``), and the pool as ``ckbpool pool run`` processes: ``maker`` (jobmaker + blockmaker), ``stratum-1``,
  ``stratum-2``, ``accounting``; the V1 proxy (``ckbpool proxy run``, per-worker identities) in front of
  ``stratum-2``. SV2 CPU miners mine on both stratum servers, V1 CPU miners through the proxy. A seeded driver
  kills (SIGKILL) one of: a stratum process (the parent: ``ckbpool pool run`` runs one stratum worker child per
  core, which then lose their link and stop on their own), one stratum worker child (its parent starts it
  again), the accounting process, the block maker, the broker, Redis -- and restarts it (same ports, same data:
  spool, block store, Kafka log, AOF).
- **Embedded** (:class:`EmbeddedChaos`): one pool with every role on the in-process bus (in this process, so its
  bus can be tapped), the same miners, Redis kills only.

What is checked (:func:`audit_shares`, :func:`audit_blocks`), after a bounded drain
------------------------------------------------------------------------------------
Every miner connection has its own worker name (``<user>.c<n>``) and a :class:`~ckbpool.miner.journal.ShareJournal`
of every share it sent -- header nonce, job -- and the answer it got: success, error, or none. A share whose
answer never came (its stratum server was killed after publishing it, or the proxy lost its upstream and
answered "stale", V1 code 21, in its place) is *in doubt*: the miner cannot know whether it counts. The audit
does not settle for bounds: the published share events (the Kafka shares topic read from the beginning; in
embedded mode a tap on the in-process bus) carry each share's id ``source:seq`` and its nonce, and the books'
share log carries the id, so every book entry is followed back to the one share a miner sent. Then, exactly:

- every share answered Success is in the books once; no book entry is a share answered with a definite error,
  or a share no miner sent; no id is in the share log twice;
- in-doubt shares are in the books exactly when their accepted event reached the bus, and every accepted
  event on the bus is in the books (nothing lost between bus and books);
- per (user, worker) and per user, the ``accepted`` counters equal the share log's entries, and equal the
  shares answered Success plus the in-doubt ones the bus holds;
- every found block (a share event flagged as a block, a FoundBlock event, a finder's record on disk) has a
  final outcome (accepted / stale / rejected) at the block maker, reported, in the books' block list, and an
  accepted one is on the node's main chain.

The numbers are returned as a :class:`ChaosReport` (and printed); ``violations`` lists what failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from ckbpool.bus.base import Topic
from ckbpool.bus.events import FoundBlock, Share
from ckbpool.ckb.address import encode_address, secp256k1_lock
from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.miner.journal import ShareJournal, SubmittedShare
from ckbpool.miner.sv2 import MinerError, Sv2Miner
from ckbpool.miner.v1 import V1Miner
from ckbpool.payouts.pplns import read_shares_sync
from ckbpool.pool.blocks import FINAL_STATUSES, BlockRecord, BlockStore
from ckbpool.pool.config import IDS_PER_STRATUM_HOST
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.keys import Keypair, encode_secret_key
from support.kafka import KafkaBroker, child_guard, free_port
from support.redis import RedisServer

log = logging.getLogger("chaos")
CKBPOOL = str(Path(sys.executable).parent / "ckbpool")
PREFIX = "ckbpool:"
#: ``stratum`` kills a stratum process (the parent: its worker processes lose their link and close on their own),
#: ``stratum-worker`` one of a stratum process's worker children (the parent starts it again)
KINDS = ("stratum", "stratum-worker", "accounting", "blockmaker", "kafka", "redis")
#: V1 "job not found / stale": also what the proxy answers for shares whose verdict its lost upstream took along
V1_STALE = "21"


# -- configuration ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChaosSettings:
    """One run: ``duration_s`` of load and kills, then at most ``drain_timeout_s`` for the books to settle."""

    duration_s: float
    seed: int
    kinds: tuple[str, ...] = KINDS
    kill_every_s: tuple[float, float] = (4.0, 10.0)  # wait before each kill (after the previous restart)
    down_s: tuple[float, float] = (0.5, 4.0)  # how long the victim stays dead
    sv2_miners: int = 4
    v1_miners: int = 3
    hashrate: float = 50_000.0  # per miner (HashPacer cap): a steady, bounded load on a shared machine
    share_interval_s: float = 1.0
    drain_timeout_s: float = 240.0


@dataclass
class Kill:
    kind: str
    target: str
    at_s: float  # since the start of the load
    down_s: float
    restart_s: float  # how long the restart itself took


@dataclass
class ShareAudit:
    submitted: int = 0
    success: int = 0
    errors: int = 0  # definite errors (never credited)
    no_answer: int = 0
    v1_stale: int = 0  # V1 code 21: the pool's "stale" or the proxy's own after losing its upstream
    in_doubt: int = 0  # no_answer + v1_stale
    in_doubt_in_books: int = 0
    in_books: int = 0  # share log entries
    books_duplicates: int = 0  # share ids in the share log more than once
    bus_records: int = 0  # accepted share records on the bus, redeliveries included
    bus_redeliveries: int = 0  # the same share id on the bus more than once (absorbed by dedup)
    connections: int = 0
    users: int = 0
    count_mismatches: int = 0
    stray_answers: int = 0
    #: per user: [answered Success, in doubt found in the books, share log entries] (the summary's per-user line)
    per_user: dict[str, list[int]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)


@dataclass
class BlockAudit:
    found: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    books_entries: int = 0
    books_duplicate_entries: int = 0
    violations: list[str] = field(default_factory=list)


@dataclass
class ChaosReport:
    topology: str
    seed: int
    duration_s: float
    kills: list[Kill]
    shares: ShareAudit
    blocks: BlockAudit
    unexpected_exits: list[str]
    drain_s: float

    @property
    def violations(self) -> list[str]:
        return (
            self.shares.violations + self.blocks.violations + [f"died on its own: {e}" for e in self.unexpected_exits]
        )

    def kills_by_kind(self) -> Counter[str]:
        return Counter(k.kind for k in self.kills)

    def summary(self) -> str:
        s, b = self.shares, self.blocks
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kills_by_kind().items()))
        lines = [
            f"chaos [{self.topology}] seed={self.seed} load {self.duration_s:.0f}s, drain {self.drain_s:.0f}s",
            f"  kills: {len(self.kills)} ({kinds})",
            f"  miner connections {s.connections} ({s.users} users); shares submitted {s.submitted}: "
            f"answered Success {s.success}, error {s.errors}, in doubt {s.in_doubt} "
            f"(no answer {s.no_answer}, V1 stale {s.v1_stale})",
            f"  books: {s.in_books} = Success {s.success} + in-doubt found on the bus {s.in_doubt_in_books}; "
            f"duplicates in books {s.books_duplicates}; bus records {s.bus_records} "
            f"(redelivered ids {s.bus_redeliveries}, deduplicated)",
            "  per user (Success + in doubt in books = books): "
            + "; ".join(
                f"{user if len(user) <= 12 else '..' + user[-8:]} {ok} + {doubt} = {booked}"
                for user, (ok, doubt, booked) in sorted(s.per_user.items())
            ),
            f"  blocks found {b.found}: outcomes {dict(b.outcomes)}; book entries {b.books_entries} "
            f"(repeated {b.books_duplicate_entries})",
            f"  violations: {len(self.violations)}",
        ]
        lines += [f"    - {v}" for v in self.violations[:30]]
        return "\n".join(lines)


# -- processes --------------------------------------------------------------------------------------------------
class Service:
    """One ``ckbpool`` process, restartable with the same config (same ports, spool, block store)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, http_port: int) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.http_port = http_port
        self.popen: subprocess.Popen[bytes] | None = None
        self.expected_down = False
        self.unexpected_exits: list[str] = []

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            out.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=child_guard(),
            )
        self.expected_down = False

    def kill9(self) -> None:
        self.expected_down = True
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        self.expected_down = True
        popen = self.popen
        if popen is not None and popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(20)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(5)

    def check(self) -> None:
        """Restart a process that exited although nobody killed it, and remember that it did."""
        if self.expected_down or self.popen is None or self.popen.poll() is None:
            return
        self.unexpected_exits.append(f"{self.name} (exit {self.popen.returncode}): {self.tail(8)}")
        self.start()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def toml_text(sections: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    lines = [f"{k} = {value(v)}" for k, v in sections.items() if not isinstance(v, dict)]
    for name, table in sections.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


@dataclass
class PoolKeys:
    authority: str  # Base58Check authority public key, for the miners and the proxy
    key_file: Path
    cert_file: Path

    @classmethod
    def write(cls, directory: Path) -> PoolKeys:
        authority, static = Keypair.generate(), Keypair.generate()
        now = int(time.time())
        key_file = directory / "pool-static.key"
        key_file.write_text(encode_secret_key(static.secret))
        cert_file = directory / "pool-certificate.hex"
        cert = Certificate.issue(authority, static.xonly_public, now - 60, now + 24 * 3600)
        cert_file.write_text(cert.to_bytes().hex())
        return cls(authority.authority_public_key, key_file, cert_file)


def proxy_service(tmp: Path, keys: PoolKeys, upstream_port: int, account: str) -> tuple[Service, int]:
    """The V1 proxy as its own process (per-worker identities: each V1 username is credited to itself)."""
    v1_port, http_port = free_port(), free_port()
    config = {
        "network": "dev",
        "identity": "per-worker",
        "upstream": {
            "host": "127.0.0.1",
            "port": upstream_port,
            "authority_public_key": keys.authority,
            "user_identity": account,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
            "share_timeout_s": 15.0,
        },
        "v1": {"listen_host": "127.0.0.1", "listen_port": v1_port},
        "http": {"listen_host": "127.0.0.1", "listen_port": http_port},
    }
    path = tmp / "proxy.toml"
    path.write_text(toml_text(config) + toml_text({"v1.vardiff": _V1_VARDIFF}))
    argv = [CKBPOOL, "proxy", "run", "-c", str(path), "--log-level", "info"]
    return Service("proxy", argv, tmp / "proxy.log", http_port), v1_port


_V1_VARDIFF = {"initial_difficulty": 2e4, "share_interval_s": 1.0, "retarget_interval_s": 5.0}


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str, on_timeout: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_timeout()}")
        await asyncio.sleep(0.25)


async def http_ok(http: httpx.AsyncClient, port: int, path: str = "/health") -> bool:
    try:
        return (await http.get(f"http://127.0.0.1:{port}{path}")).status_code == 200
    except httpx.HTTPError:
        return False


# -- miners -----------------------------------------------------------------------------------------------------
def dev_address(rng: random.Random) -> str:
    return encode_address(secp256k1_lock(rng.randbytes(20)), "dev")


class MinerFleet:
    """SV2 miners (one per stratum port given) and V1 miners (through the proxy), each reconnecting after its
    connection ends, each connection under its own worker name with its own journal."""

    def __init__(self, settings: ChaosSettings, authority: str, rng: random.Random) -> None:
        self.settings = settings
        self.authority = authority
        self.rng = rng
        self.journals: list[ShareJournal] = []
        self._stop = asyncio.Event()
        self._current: dict[str, Sv2Miner | V1Miner] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, sv2_ports: list[int], v1_port: int | None) -> None:
        for i in range(self.settings.sv2_miners):
            port = sv2_ports[i % len(sv2_ports)]
            self._tasks.append(asyncio.create_task(self._sv2_loop(f"sv2m{i}", port, extended=i % 2 == 1)))
        if v1_port is not None:
            for _ in range(self.settings.v1_miners):
                self._tasks.append(asyncio.create_task(self._v1_loop(dev_address(self.rng), v1_port)))

    def accepted(self) -> int:
        return sum(j.answers()["success"] for j in self.journals)

    async def _sv2_loop(self, user: str, port: int, *, extended: bool) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            journal = ShareJournal(user, f"c{n}")
            self.journals.append(journal)
            miner = Sv2Miner(
                "127.0.0.1",
                port,
                f"{user}.c{n}",
                authority_public_key=self.authority,
                extended=extended,
                nominal_hash_rate=self.settings.hashrate,
                connect_timeout=5.0,
                max_hashrate=self.settings.hashrate,
                journal=journal,
                drain_s=5.0,
            )
            await self._run(user, miner)

    async def _v1_loop(self, address: str, port: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            journal = ShareJournal(address, f"c{n}")
            self.journals.append(journal)
            miner = V1Miner("127.0.0.1", port, f"{address}.c{n}", max_hashrate=self.settings.hashrate, journal=journal)
            await self._run(address, miner)

    async def _run(self, user: str, miner: Sv2Miner | V1Miner) -> None:
        self._current[user] = miner
        try:
            await miner.run()
        except (MinerError, ConnectionError, OSError, TimeoutError, EOFError) as exc:
            log.info("miner %s: %r; reconnecting", user, exc)
        except Exception:  # a miner bug must not stop the load; it shows in the log and the audit
            log.exception("miner %s failed; reconnecting", user)
        if not self._stop.is_set():
            await asyncio.sleep(0.5)

    async def stop(self, timeout: float = 30.0) -> None:
        """No new connections; each miner stops sending shares and waits (bounded) for the answers to its last."""
        self._stop.set()
        for miner in list(self._current.values()):
            miner.stop()
        _done, pending = await asyncio.wait(self._tasks, timeout=timeout) if self._tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task


# -- the books and the bus --------------------------------------------------------------------------------------
@dataclass
class Books:
    sharelog: list[tuple[str, str, str]]  # (user, worker, id) per share
    workers: dict[tuple[str, str], int]  # accepted per (user, worker)
    users: dict[str, int]
    blocks: list[dict[str, Any]]

    @classmethod
    def read(cls, url: str) -> Books:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
        try:
            # per share, whatever an entry holds (one share, or a batch chunk of them)
            entries = [(s["user"], s["worker"], s.get("id", "")) for s in read_shares_sync(client, f"{PREFIX}sharelog")]
            # every counter hash there is (not only the members of the users/workers indexes, whose type the
            # accounting module is free to change)
            workers: dict[tuple[str, str], int] = {}
            for key in client.scan_iter(match=f"{PREFIX}worker:*", count=1000):
                user, _, worker = key[len(f"{PREFIX}worker:") :].partition(".")
                workers[(user, worker)] = int(client.hget(key, "accepted") or 0)
            users: dict[str, int] = {}
            for key in client.scan_iter(match=f"{PREFIX}user:*", count=1000):
                users[key[len(f"{PREFIX}user:") :]] = int(client.hget(key, "accepted") or 0)
            blocks = [json.loads(b) for b in client.lrange(f"{PREFIX}blocks", 0, -1)]
            return cls(entries, workers, users, blocks)
        finally:
            client.close()


async def read_topic(bootstrap: str, topic: Topic, timeout: float = 60.0) -> list[bytes]:
    """Every record value of a topic, all partitions, from the beginning to the end offsets of now."""
    from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

    consumer = AIOKafkaConsumer(
        topic.value, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        ends: dict[Any, int] | None = None
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic.value} did not reach its end offsets within {timeout}s")
            tps = consumer.assignment()  # without a group: every partition, once the metadata is in
            if tps and ends is None:
                ends = await consumer.end_offsets(list(tps))
            if ends is not None and all([await consumer.position(tp) >= ends[tp] for tp in ends]):
                return values
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                values += [r.value for r in records if r.value is not None]
    finally:
        await consumer.stop()


# -- the audit --------------------------------------------------------------------------------------------------
def audit_shares(published: Iterable[Share], books: Books, journals: list[ShareJournal]) -> ShareAudit:
    """Match the books against the miners' journals one share at a time (module docstring)."""
    audit = ShareAudit()
    bus: dict[str, Share] = {}
    for share in published:
        if not share.accepted:
            continue
        audit.bus_records += 1
        if share.share_id in bus:
            audit.bus_redeliveries += 1
        bus.setdefault(share.share_id, share)

    index: dict[tuple[str, str, int], list[SubmittedShare]] = defaultdict(list)
    v1_users: set[str] = set()
    for journal in journals:
        if not journal.shares:
            continue
        audit.connections += 1
        audit.count_mismatches += journal.count_mismatches
        audit.stray_answers += journal.stray_answers
        is_v1 = not journal.user.startswith("sv2m")
        if is_v1:
            v1_users.add(journal.user)
        for share in journal.shares:
            index[(journal.user, journal.worker, share.nonce)].append(share)
            audit.submitted += 1
            if share.answer == "success":
                audit.success += 1
                audit.per_user.setdefault(journal.user, [0, 0, 0])[0] += 1
            elif share.answer == "none":
                audit.no_answer += 1
            elif is_v1 and share.error == V1_STALE:
                audit.v1_stale += 1
            else:
                audit.errors += 1
    audit.in_doubt = audit.no_answer + audit.v1_stale
    audit.users = len({j.user for j in journals if j.shares})

    def in_doubt(share: SubmittedShare, user: str) -> bool:
        return share.answer == "none" or (user in v1_users and share.answer == "error" and share.error == V1_STALE)

    v = audit.violations
    seen: set[str] = set()
    matched: set[int] = set()  # id() of journal entries matched to a book entry
    per_worker: Counter[tuple[str, str]] = Counter()
    for user, worker, share_id in books.sharelog:
        audit.in_books += 1
        per_worker[(user, worker)] += 1
        if share_id in seen:
            audit.books_duplicates += 1
            v.append(f"share {share_id} ({user}.{worker}) is in the share log twice")
            continue
        seen.add(share_id)
        event = bus.get(share_id)
        if event is None:
            v.append(f"share log entry {share_id} ({user}.{worker}) has no accepted event on the bus")
            continue
        if (event.user, event.worker) != (user, worker):
            v.append(f"share log entry {share_id}: {user}.{worker}, its bus event {event.user}.{event.worker}")
        candidates = [s for s in index.get((event.user, event.worker, event.nonce), []) if id(s) not in matched]
        if not candidates:
            v.append(f"share {share_id} ({event.user}.{event.worker} nonce {event.nonce:#x}) was sent by no miner")
            continue
        candidates.sort(key=lambda s: s.answer != "success")  # an exact nonce repeat: pair Success first
        chosen = candidates[0]
        matched.add(id(chosen))
        if chosen.answer == "success":
            continue
        if in_doubt(chosen, event.user):
            audit.in_doubt_in_books += 1
            audit.per_user.setdefault(event.user, [0, 0, 0])[1] += 1
        else:
            told = f"the miner was told error {chosen.error}"
            v.append(f"share {share_id} ({event.user}.{event.worker}) is in the books; {told}")

    for journal in journals:
        for share in journal.shares:
            if share.answer == "success" and id(share) not in matched:
                v.append(
                    f"{journal.user}.{journal.worker} share (key {share.key}, nonce {share.nonce:#x}) answered "
                    "Success is not in the books"
                )
    missing = set(bus) - seen
    for share_id in sorted(missing)[:20]:
        event = bus[share_id]
        v.append(f"accepted share {share_id} ({event.user}.{event.worker}) is on the bus, not in the books")
    if len(missing) > 20:
        v.append(f"... {len(missing) - 20} more accepted shares on the bus and not in the books")

    # the counters the payouts read, against the share log and the miners
    for ident in set(per_worker) | set(books.workers):
        if books.workers.get(ident, 0) != per_worker.get(ident, 0):
            v.append(
                f"{ident[0]}.{ident[1]}: accepted {books.workers.get(ident, 0)}, share log {per_worker.get(ident, 0)}"
            )
    user_log: Counter[str] = Counter()
    for (user, _worker), count in per_worker.items():
        user_log[user] += count
        audit.per_user.setdefault(user, [0, 0, 0])[2] += count
    for user in set(user_log) | set(books.users):
        if books.users.get(user, 0) != user_log.get(user, 0):
            v.append(f"user {user}: accepted {books.users.get(user, 0)}, share log {user_log.get(user, 0)}")
    if audit.in_books != audit.success + audit.in_doubt_in_books + audit.books_duplicates and not v:
        v.append(f"books {audit.in_books} != Success {audit.success} + in doubt in books {audit.in_doubt_in_books}")
    if audit.count_mismatches:
        v.append(f"{audit.count_mismatches} SubmitShares.Success counts differ from the shares they covered")
    if audit.success == 0:
        v.append("no share was answered Success: the load never ran")
    return audit


async def audit_blocks(
    found_events: Iterable[FoundBlock],
    block_shares: Iterable[Share],
    finder_records: Iterable[BlockRecord],
    maker_records: Iterable[BlockRecord],
    books: Books,
    rpc: CkbRpcClient,
) -> BlockAudit:
    audit = BlockAudit()
    found: dict[bytes, int] = {}
    for event in found_events:
        found[event.block_hash] = event.height
    for share in block_shares:
        if share.is_block and share.accepted:
            found[share.block_hash] = share.height
    for record in finder_records:
        found[record.found.block_hash] = record.found.height
    maker = {r.found.block_hash: r for r in maker_records}
    for block_hash, record in maker.items():
        found.setdefault(block_hash, record.found.height)
    booked = Counter(bytes.fromhex(entry["block_hash"]) for entry in books.blocks)
    audit.found = len(found)
    audit.books_entries = sum(booked.values())
    audit.books_duplicate_entries = sum(n - 1 for n in booked.values() if n > 1)
    v = audit.violations
    for block_hash, height in sorted(found.items(), key=lambda item: item[1]):
        name = f"block {block_hash.hex()[:16]} (height {height})"
        record = maker.get(block_hash)
        if record is None or record.status not in FINAL_STATUSES:
            v.append(f"{name}: no outcome at the block maker ({'unknown' if record is None else record.status})")
            continue
        audit.outcomes[record.status] += 1
        if not record.reported:
            v.append(f"{name}: outcome {record.status} never reported")
        if block_hash not in booked:
            v.append(f"{name}: outcome {record.status} not in the books' block list")
        if record.status == "accepted":
            on_chain = await rpc.get_block_by_number(height)
            if on_chain is None or on_chain.get("header", {}).get("hash") != "0x" + block_hash.hex():
                v.append(f"{name}: 'accepted' but not the node's main-chain block at that height")
    return audit


# -- the driver -------------------------------------------------------------------------------------------------
class Driver:
    """Kills one victim at a time at seeded random moments, restarts it after a seeded random outage. Kinds are
    taken in shuffled rounds, so every kind is hit once per ``len(kinds)`` kills; the run goes on past its
    deadline until each kind has been hit at least once."""

    def __init__(self, settings: ChaosSettings, victims: dict[str, Callable[[random.Random], Victim]]) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.victims = victims
        self.kills: list[Kill] = []

    async def run(self, started: float, watch: Callable[[], None]) -> None:
        deadline = started + self.settings.duration_s
        round_: list[str] = []
        hit: set[str] = set()
        while time.monotonic() < deadline or hit != set(self.settings.kinds):
            wait = self.rng.uniform(*self.settings.kill_every_s)
            end = time.monotonic() + wait
            while time.monotonic() < end:
                watch()
                await asyncio.sleep(0.25)
            if time.monotonic() >= deadline and hit == set(self.settings.kinds):
                break
            if not round_:
                round_ = list(self.settings.kinds)
                self.rng.shuffle(round_)
            kind = round_.pop()
            victim = self.victims[kind](self.rng)
            down = self.rng.uniform(*self.settings.down_s)
            at = time.monotonic() - started
            print(f"chaos: t={at:6.1f}s kill -9 {victim.name} ({kind}), down {down:.1f}s", flush=True)
            await asyncio.to_thread(victim.kill)
            await asyncio.sleep(down)
            t0 = time.monotonic()
            if victim.blocking:  # a broker or Redis: start() waits until it answers
                await asyncio.to_thread(victim.restart)
            else:  # a pool process: forked from the main thread, so it dies with this run (PDEATHSIG)
                victim.restart()
            self.kills.append(Kill(kind, victim.name, at, down, time.monotonic() - t0))
            hit.add(kind)


@dataclass
class Victim:
    name: str
    kill: Callable[[], None]
    restart: Callable[[], None]
    blocking: bool = True


def service_victim(service: Service) -> Victim:
    return Victim(service.name, service.kill9, service.start, blocking=False)


def live_workers(service: Service) -> tuple[list[int], int]:
    """The pids of a stratum process's live worker children by its ``/status`` (``stratum_processes``), each
    checked to be a child of that process right now (a stale row must not send SIGKILL to a reused pid), and
    how many workers it runs (``ckbpool pool run``: one per core)."""
    popen = service.popen
    if popen is None or popen.poll() is not None:
        return [], 0
    try:
        rows = httpx.get(f"http://127.0.0.1:{service.http_port}/status", timeout=3).json()["stratum_processes"]
    except (httpx.HTTPError, ValueError, KeyError):
        return [], 0
    pids = []
    for row in rows:
        pid = row.get("pid")
        if row.get("alive") and isinstance(pid, int) and parent_pid(pid) == popen.pid:
            pids.append(pid)
    return pids, len(rows)


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])  # the field after the state, past "(command)"


def worker_victim(service: Service, rng: random.Random, timeout: float = 90.0) -> Victim:
    """SIGKILL one live worker child of a stratum process. The parent itself starts it again (with its own
    backoff), so ``restart`` only waits (bounded) until the parent lists every worker alive again, the killed one
    replaced. The worker is picked at the kill: the parent may still be starting after an earlier kill, so this
    waits (bounded) for a live one."""
    chosen: list[int] = []

    def kill() -> None:
        deadline = time.monotonic() + timeout
        while True:
            pids, _count = live_workers(service)
            if pids:
                pid = rng.choice(sorted(pids))
                chosen.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{service.name}: no live stratum worker within {timeout:.0f}s\n{service.tail()}")
            time.sleep(0.5)

    def restart() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids, count = live_workers(service)
            if pids and chosen[-1] not in pids and len(pids) == count:
                return
            time.sleep(0.5)
        raise AssertionError(f"{service.name}: its killed worker was not started again within {timeout:.0f}s")

    return Victim(f"{service.name}/worker", kill, restart)


def kafka_victim(broker: KafkaBroker) -> Victim:
    def kill() -> None:
        broker.stop(keep_data=True, kill=True)

    return Victim("kafka", kill, lambda: broker.start(timeout=120))


def redis_victim(server: RedisServer) -> Victim:
    return Victim("redis", server.kill, lambda: server.start(timeout=60))


def finder_records(directory: Path) -> list[BlockRecord]:
    """A stratum process's found-block records: its own store and each of its worker children's
    (``<blocks.data_dir>/stratum-worker-<i>``, ``procs.worker_config``) -- with worker processes the blocks are
    found, written and submitted there, and the parent's own directory holds none."""
    records = BlockStore(directory).load_all()
    for sub in sorted(directory.glob("stratum-worker-*")):
        if sub.is_dir():
            records += BlockStore(sub).load_all()
    return records


def new_seed() -> int:
    explicit = os.environ.get("CHAOS_SEED")
    return int(explicit) if explicit else secrets.randbelow(2**31)


# -- the Kafka topology -----------------------------------------------------------------------------------------
class KafkaChaos:
    def __init__(self, settings: ChaosSettings, tmp: Path, node: CkbNode) -> None:
        self.settings = settings
        self.tmp = tmp
        self.node = node
        self.rng = random.Random(settings.seed ^ 0x5EED)
        self.keys = PoolKeys.write(tmp)
        self.kafka = KafkaBroker(tmp / "kafka")
        self.redis = RedisServer(tmp / "redis", appendonly=True)
        self.redis_password = tmp / "redis.pass"
        self.services: dict[str, Service] = {}
        self.stratum_ports: dict[str, int] = {}
        self.proxy: Service | None = None
        self.v1_port = 0

    def _pool(self, name: str, roles: list[str], server_id: int = 1) -> Service:
        http_port = free_port()
        stratum_port = free_port() if "stratum" in roles else 0
        if stratum_port:
            self.stratum_ports[name] = stratum_port
        bus = self.kafka.url(
            client_id=name, spool_dir=str(self.tmp / f"spool-{name}"), connect_timeout="3", publish_timeout="2"
        )
        sections: dict[str, Any] = {
            "network": "dev",
            "roles": roles,
            "node": {
                "rpc_url": self.node.config.rpc_url,
                "subscribe_address": f"127.0.0.1:{self.node.config.tcp_rpc_port}",
                "poll_interval_ms": 300,
            },
            "stratum": {
                "listen_host": "127.0.0.1",
                "listen_port": stratum_port,
                "server_id": server_id,
                "static_key_file": str(self.keys.key_file),
                "certificate_file": str(self.keys.cert_file),
            },
            "vardiff": {
                "share_interval_s": self.settings.share_interval_s,
                "retarget_interval_s": 5.0,
                "initial_hashrate": self.settings.hashrate,
            },
            "blocks": {"data_dir": str(self.tmp / f"blocks-{name}")},
            "bus": {"url": bus},
            "redis": {
                "url": f"redis://127.0.0.1:{self.redis.port}/0",
                "password_file": str(self.redis_password),
                "timeout_s": 2.0,
                "max_lag_s": 60.0,
            },
            "http": {"listen_host": "127.0.0.1", "listen_port": http_port},
            "success_batch_ms": 50,
        }
        path = self.tmp / f"{name}.toml"
        path.write_text(toml_text(sections))
        argv = [CKBPOOL, "pool", "run", "-c", str(path), "--log-level", "info"]
        return Service(name, argv, self.tmp / f"{name}.log", http_port)

    def _logs(self) -> str:
        parts = [f"--- {s.name}\n{s.tail(15)}" for s in self.all_services()]
        parts.append(f"--- kafka\n{self.kafka.log_tail(10)}")
        return "\n".join(parts)

    def all_services(self) -> list[Service]:
        return list(self.services.values()) + ([self.proxy] if self.proxy is not None else [])

    async def run(self) -> ChaosReport:
        self.kafka.start(timeout=120)
        self.redis.start()
        self.redis_password.write_text(self.redis.password)
        specs = [
            ("maker", ["jobmaker", "blockmaker"], 1),
            ("stratum-1", ["stratum"], 1),
            # each stratum process takes server_ids server_id .. server_id + workers - 1 (its worker processes;
            # template consumer groups and extranonce prefixes follow them): ranges apart, as deploys place them
            ("stratum-2", ["stratum"], 1 + IDS_PER_STRATUM_HOST),
            ("accounting", ["accounting"], 1),
        ]
        for name, roles, server_id in specs:
            self.services[name] = self._pool(name, roles, server_id)
        account = f"{dev_address(self.rng)}.proxy"
        self.proxy, self.v1_port = proxy_service(self.tmp, self.keys, self.stratum_ports["stratum-2"], account)
        fleet = MinerFleet(self.settings, self.keys.authority, self.rng)
        try:
            for service in self.all_services():
                service.start()
            async with httpx.AsyncClient(timeout=3) as http:

                async def all_up() -> bool:
                    for service in self.all_services():
                        service.check()
                    return all([await http_ok(http, s.http_port) for s in self.all_services()])

                await wait_for(all_up, 120, "every pool process and the proxy to be healthy", self._logs)
                print(f"chaos: seed {self.settings.seed} (CHAOS_SEED={self.settings.seed} repeats the kills)")
                started = time.monotonic()
                fleet.start([self.stratum_ports["stratum-1"], self.stratum_ports["stratum-2"]], self.v1_port)
                await wait_for(lambda: fleet.accepted() > 0, 120, "a first share answered Success", self._logs)
                driver = Driver(
                    self.settings,
                    {
                        "stratum": lambda rng: service_victim(self.services[rng.choice(["stratum-1", "stratum-2"])]),
                        "stratum-worker": lambda rng: worker_victim(
                            self.services[rng.choice(["stratum-1", "stratum-2"])], rng
                        ),
                        "accounting": lambda rng: service_victim(self.services["accounting"]),
                        "blockmaker": lambda rng: service_victim(self.services["maker"]),
                        "kafka": lambda rng: kafka_victim(self.kafka),
                        "redis": lambda rng: redis_victim(self.redis),
                    },
                )

                def watch() -> None:
                    for service in self.all_services():
                        service.check()

                await driver.run(started, watch)
                load_s = time.monotonic() - started
                print(f"chaos: {len(driver.kills)} kills in {load_s:.0f}s; stopping the miners", flush=True)
                await fleet.stop()
                drain_started = time.monotonic()
                books, published = await self._settle(http, watch)
                drain_s = time.monotonic() - drain_started
            shares = audit_shares(published, books, fleet.journals)
            found_events = [
                FoundBlock.from_proto(v) for v in await read_topic(self.kafka.bootstrap, Topic.FOUND_BLOCKS)
            ]
            finder: list[BlockRecord] = []
            for name in ("stratum-1", "stratum-2"):
                finder += finder_records(self.tmp / f"blocks-{name}")
            maker = BlockStore(self.tmp / "blocks-maker").load_all()
            async with CkbRpcClient(self.node.config.rpc_url) as rpc:
                blocks = await audit_blocks(found_events, published, finder, maker, books, rpc)
            exits = [e for s in self.all_services() for e in s.unexpected_exits]
            return ChaosReport("kafka", self.settings.seed, load_s, driver.kills, shares, blocks, exits, drain_s)
        finally:
            await fleet.stop(timeout=10)
            for service in self.all_services():
                service.stop()
            self.kafka.stop(keep_data=True)
            self.redis.stop(keep_data=True)

    async def _settle(self, http: httpx.AsyncClient, watch: Callable[[], None]) -> tuple[Books, list[Share]]:
        """Bounded: until the stratum spools are empty, every accepted share on the bus is in the share log and
        the found blocks all have outcomes at the block maker; returns the books and the bus's share records.

        The books are read *before* the bus: a share reaches the books only through the bus, so every book entry's
        record is in a later read of the bus, while a record published (a spool replayed) after the bus was read
        could otherwise be in the books and missing from the snapshot the audit follows it back to."""
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while True:
            watch()
            spools = 0
            for name in ("stratum-1", "stratum-2"):
                try:
                    bus = (await http.get(f"http://127.0.0.1:{self.services[name].http_port}/status")).json()["bus"]
                    spools += int(bus["spool_depth"]) + int(bus["in_doubt"]) + int(bus["block_spool_depth"])
                except (httpx.HTTPError, KeyError, ValueError):
                    spools += 1
            books = Books.read(self.redis.url)
            published = [Share.from_proto(v) for v in await read_topic(self.kafka.bootstrap, Topic.SHARES)]
            booked = {entry[2] for entry in books.sharelog}
            accepted = {s.share_id for s in published if s.accepted}
            maker = BlockStore(self.tmp / "blocks-maker").load_all()
            listed = {entry.get("block_hash") for entry in books.blocks}
            done = {
                r.found.block_hash
                for r in maker
                if r.status in FINAL_STATUSES and r.reported and r.found.block_hash.hex() in listed
            }
            # every block found -- by the maker's records, the finders' own stores and the found-blocks topic (a
            # block found while Kafka was down reaches the maker only after its consumer rejoined the group, which
            # waits out the killed member's session) -- must have its outcome
            found = {r.found.block_hash for r in maker}
            for name in ("stratum-1", "stratum-2"):
                found |= {r.found.block_hash for r in finder_records(self.tmp / f"blocks-{name}")}
            found |= {
                FoundBlock.from_proto(v).block_hash for v in await read_topic(self.kafka.bootstrap, Topic.FOUND_BLOCKS)
            }
            blocks_open = len(found - done)
            if spools == 0 and accepted <= booked and blocks_open == 0:
                return books, published
            if time.monotonic() > deadline:
                print(
                    f"chaos: drain incomplete: spools {spools}, accepted not booked {len(accepted - booked)}, "
                    f"blocks without outcome {blocks_open}\n{self._logs()}"
                )
                return books, published
            await asyncio.sleep(2.0)


# -- the embedded topology --------------------------------------------------------------------------------------
class EmbeddedChaos:
    """Every role in one pool on the in-process bus (run here, its share topic tapped), Redis kills only."""

    def __init__(self, settings: ChaosSettings, tmp: Path, node: CkbNode) -> None:
        self.settings = settings
        self.tmp = tmp
        self.node = node
        self.rng = random.Random(settings.seed ^ 0x5EED)
        self.keys = PoolKeys.write(tmp)
        self.redis = RedisServer(tmp / "redis", appendonly=True)

    async def run(self) -> ChaosReport:
        from ckbpool.pool.config import PoolConfig
        from ckbpool.pool.service import Pool, load_credentials

        self.redis.start()
        config = PoolConfig.model_validate(
            {
                "network": "dev",
                "node": {
                    "rpc_url": self.node.config.rpc_url,
                    "subscribe_address": f"127.0.0.1:{self.node.config.tcp_rpc_port}",
                    "poll_interval_ms": 300,
                },
                "stratum": {"listen_host": "127.0.0.1", "listen_port": free_port()},
                "vardiff": {
                    "share_interval_s": self.settings.share_interval_s,
                    "retarget_interval_s": 5.0,
                    "initial_hashrate": self.settings.hashrate,
                },
                "blocks": {"data_dir": str(self.tmp / "blocks")},
                "redis": {"url": self.redis.url, "timeout_s": 2.0, "max_lag_s": 60.0},
                "http": {"listen_host": "127.0.0.1", "listen_port": free_port()},
                "success_batch_ms": 50,
            }
        )
        pool = Pool(config, credentials=load_credentials(self.keys.key_file, self.keys.cert_file))
        await pool.start()
        tap = pool.bus.subscribe(Topic.SHARES, "chaos-audit")
        published: list[Share] = []

        async def record() -> None:
            async for event in tap:
                if isinstance(event, Share):
                    published.append(event)

        recorder = asyncio.create_task(record())
        assert pool.server is not None
        stratum_port = pool.server.address[1]
        proxy, v1_port = proxy_service(self.tmp, self.keys, stratum_port, f"{dev_address(self.rng)}.proxy")
        fleet = MinerFleet(self.settings, self.keys.authority, self.rng)
        closed = False
        try:
            proxy.start()
            async with httpx.AsyncClient(timeout=3) as http:
                await wait_for(lambda: http_ok(http, proxy.http_port), 60, "the proxy", lambda: proxy.tail())
            print(f"chaos: seed {self.settings.seed} (CHAOS_SEED={self.settings.seed} repeats the kills)")
            started = time.monotonic()
            fleet.start([stratum_port], v1_port)
            await wait_for(lambda: fleet.accepted() > 0, 120, "a first share answered Success", lambda: proxy.tail())
            driver = Driver(self.settings, {"redis": lambda rng: redis_victim(self.redis)})
            await driver.run(started, proxy.check)
            load_s = time.monotonic() - started
            await fleet.stop()
            drain_started = time.monotonic()
            # the order under test: stratum flush + Successes, accounting drain (Redis is up again)
            await pool.close()
            closed = True
            drain_s = time.monotonic() - drain_started
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
            books = Books.read(self.redis.url)
            shares = audit_shares(published, books, fleet.journals)
            assert pool.block_maker is not None
            maker = BlockStore(self.tmp / "blocks").load_all()
            async with CkbRpcClient(self.node.config.rpc_url) as rpc:
                blocks = await audit_blocks([], published, [], maker, books, rpc)
            return ChaosReport(
                "embedded", self.settings.seed, load_s, driver.kills, shares, blocks, proxy.unexpected_exits, drain_s
            )
        finally:
            await fleet.stop(timeout=10)
            proxy.stop()
            if not closed:
                await pool.close()
            self.redis.stop(keep_data=True)
