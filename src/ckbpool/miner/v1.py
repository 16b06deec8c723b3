"""A CPU miner that speaks CKB Stratum V1, as CKB ASICs do: for the demo, the proxy tests and load generation.

subscribe (extranonce1, extranonce2_size) and authorize, then mining.set_target / mining.notify in, shares out as
``mining.submit [worker, job_id, extranonce2]`` with ``nonce16 = extranonce1 || extranonce2``. Hashing is the C
Eaglesong batch search in worker threads (it releases the GIL). One connection; if the server drops it the miner
stops with :class:`MinerError` (tests check that a proxy keeps its miners connected). ``run()`` ends by draining:
no new shares, and up to ``drain_s`` for the answers to the shares already sent, so the accepted count is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from ..ckb.eaglesong import pow_output, search
from ..v1.client import ClientSession
from ..v1.events import (
    AuthorizeResult,
    ConnectionClosed,
    Event,
    JobNotified,
    SubmitResult,
    SubscribeResult,
    TargetSet,
)
from .journal import ShareJournal
from .sv2 import HashPacer, MinerError

__all__ = ["V1Miner", "V1MinerStats"]

log = logging.getLogger(__name__)


@dataclass
class V1MinerStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_codes: dict[int, int] = field(default_factory=dict)
    hashes: int = 0
    jobs: int = 0
    clean_jobs: int = 0
    targets: list[int] = field(default_factory=list)
    connects: int = 0
    unanswered: int = 0


@dataclass
class _Job:
    job_id: str
    pow_hash: bytes
    height: int


class V1Miner:
    """One V1 connection. ``run()`` mines until ``stop()`` or the limits given to it."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        *,
        password: str = "x",
        threads: int = 1,
        chunk: int = 20_000,
        agent: str = "ckbpool-cpu-v1/1.0",
        drain_s: float = 5.0,
        max_hashrate: float | None = None,
        journal: ShareJournal | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.threads = max(1, threads)
        self.chunk = chunk
        self.agent = agent
        self.drain_s = drain_s
        self.pacer = HashPacer(max_hashrate)
        self.journal = journal  # every share (nonce16 = extranonce1 || extranonce2) and its answer, for audits
        self.stats = V1MinerStats()
        self.session = ClientSession()
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.target = 0
        self._active: _Job | None = None
        self._job_changed = asyncio.Event()
        self._outstanding: set[int] = set()
        self._answered = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._stop = asyncio.Event()
        self._authorized = False
        self.ready = asyncio.Event()
        self.subscribed = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self._job_changed.set()

    # -- wire -------------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                raise MinerError("the server closed the connection")
            for event in self.session.receive_data(data):
                self._on_event(event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, SubmitResult):
            self._outstanding.discard(event.request_id)
            if self.journal is not None and isinstance(event.request_id, int):
                if event.accepted:
                    self.journal.success(event.request_id)
                else:
                    self.journal.error(event.request_id, str(event.error_code))
            if event.accepted:
                self.stats.accepted += 1
            else:
                self.stats.rejected += 1
                code = event.error_code if event.error_code is not None else -1
                self.stats.rejected_codes[code] = self.stats.rejected_codes.get(code, 0) + 1
            if not self._outstanding:
                self._answered.set()
        elif isinstance(event, JobNotified):
            self.stats.jobs += 1
            self.stats.clean_jobs += event.clean
            self._active = _Job(event.job_id, event.pow_hash, event.height)
            self._job_changed.set()
        elif isinstance(event, TargetSet):
            self.target = event.target
            self.stats.targets.append(event.target)
            self._job_changed.set()
        elif isinstance(event, SubscribeResult):
            self.extranonce1, self.extranonce2_size = event.extranonce1, event.extranonce2_size
            self.subscribed.set()
        elif isinstance(event, AuthorizeResult):
            if not event.authorized:
                raise MinerError(f"authorize refused: {event.error!r}")
            self._authorized = True
        elif isinstance(event, ConnectionClosed):
            raise MinerError(f"unreadable server: {event.reason}")
        if self._authorized and self.subscribed.is_set() and self.target and self._active is not None:
            self.ready.set()

    # -- mining -----------------------------------------------------------------------------------
    async def _mine_loop(self, worker: int) -> None:
        await self.ready.wait()
        while not self._stop.is_set():
            job, target = self._active, self.target
            if job is None or not target:
                self._job_changed.clear()
                await self._job_changed.wait()
                continue
            # workers own disjoint ranges: the top byte of the extranonce2 counter is the worker number
            size = self.extranonce2_size
            counter = worker << (8 * size - 8)
            limit = (worker + 1) << (8 * size - 8)
            while job is self._active and not self._stop.is_set() and counter < limit:
                target = self.target
                count = min(self.chunk, limit - counter)
                found = await asyncio.to_thread(
                    search, job.pow_hash, counter, count, target, nonce_prefix=self.extranonce1
                )
                if found is None:
                    counter += count
                    self.stats.hashes += count
                    await self.pacer.pace(count)
                    continue
                hit = found >> (8 * len(self.extranonce1))
                searched = hit - counter + 1
                self.stats.hashes += searched
                counter = hit + 1
                nonce16 = found.to_bytes(16, "little")
                # as firmware does: a share found against a target that has since become harder is dropped
                current = int.from_bytes(pow_output(job.pow_hash, nonce16), "big") <= self.target
                if job is self._active and current and not self._stop.is_set():
                    self._submit(job, nonce16[len(self.extranonce1) :])
                await self.pacer.pace(searched)  # after the submit: a share is never held back

    def _submit(self, job: _Job, extranonce2: bytes) -> None:
        request_id, line = self.session.submit(self.username, job.job_id, extranonce2)
        self._outstanding.add(request_id)
        self._answered.clear()
        self.stats.submitted += 1
        self._write(line)
        if self.journal is not None:
            nonce16 = self.extranonce1 + extranonce2
            self.journal.submitted(request_id, job.job_id, int.from_bytes(nonce16, "little"))

    async def run(self, *, duration: float | None = None, shares: int | None = None) -> V1MinerStats:
        """Mine until ``duration`` seconds pass, ``shares`` are answered, or stop() is called; then drain."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writer = writer
        self.stats.connects += 1
        # pipelined like many ASICs: subscribe and authorize without waiting for the first answer
        self._write(
            self.session.subscribe(self.agent, self.host, self.port)
            + self.session.authorize(self.username, self.password)
        )
        reader_task = asyncio.create_task(self._read_loop(reader))
        miners = [asyncio.create_task(self._mine_loop(i)) for i in range(self.threads)]
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set():
                if reader_task.done():
                    reader_task.result()
                for task in miners:
                    if task.done():
                        task.result()
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if shares is not None and self.stats.accepted + self.stats.rejected >= shares:
                    break
                await asyncio.sleep(0.02)
        finally:
            self.stop()
            for task in miners:
                task.cancel()
            for task in miners:
                with contextlib.suppress(asyncio.CancelledError, MinerError):
                    await task
            if self._outstanding and not reader_task.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._answered.wait(), self.drain_s)
            self.stats.unanswered = len(self._outstanding)
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MinerError, ConnectionError):
                await reader_task
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return self.stats


async def run_many(
    host: str,
    port: int,
    usernames: list[str],
    *,
    duration: float,
    hashing_threads: int = 2,
    chunk: int = 20_000,
) -> list[V1MinerStats]:
    """Many V1 connections from one process (a farm in miniature), hashing on ``hashing_threads`` threads."""
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=max(1, hashing_threads)))
    miners = [V1Miner(host, port, name, chunk=chunk) for name in usernames]
    results = await asyncio.gather(*(m.run(duration=duration) for m in miners), return_exceptions=True)
    stats: list[V1MinerStats] = []
    for miner, result in zip(miners, results, strict=True):
        if isinstance(result, BaseException):
            log.error("%s: %s", miner.username, result)
            miner.stats.connects = -1  # marks a miner that lost its connection
        stats.append(miner.stats)
    return stats


def main(argv: list[str] | None = None) -> int:
    """``python -m ckbpool.miner.v1 HOST:PORT --count N``: N miners in one process; JSON stats on stdout."""
    import argparse
    import dataclasses
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("address", help="host:port of a CKB Stratum V1 server (e.g. the proxy)")
    parser.add_argument("--user", default="ckbpool-test", help="account; workers are <user>.rig<i>")
    parser.add_argument(
        "--usernames", nargs="+", metavar="NAME", help="one miner per username (e.g. each its own address.worker)"
    )
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--hashing-threads", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=20_000)
    args = parser.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    names = args.usernames or [f"{args.user}.rig{i:03d}" for i in range(args.count)]
    stats = asyncio.run(
        run_many(host, int(port), names, duration=args.duration, hashing_threads=args.hashing_threads, chunk=args.chunk)
    )
    print(json.dumps([dataclasses.asdict(s) for s in stats]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
