"""A CPU miner that speaks encrypted Stratum V2 (CKB profile): for the demo, the tests and load generation.

It does what a real device does: Noise handshake against the pool's authority key, SetupConnection, one
standard or extended channel, jobs + SetNewPrevHash, SetTarget, and shares found with the C Eaglesong search in
worker threads (the search releases the GIL). The connection is :class:`ckbpool.sv2.session.ClientSession`,
the same one the proxy's upstream uses; ``user_identity_tlv`` makes it negotiate extension 0x0002 and tag each
share with that worker identity, as a proxy does for its devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field

from ..ckb.eaglesong import search
from ..sv2 import ckb_profile
from ..sv2.events import ChannelOpened, ChannelOpenRejected, ConnectionClosed, ConnectionSetUp, Event, MessageReceived
from ..sv2.extensions import EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
from ..sv2.messages_common import PROTOCOL_MINING, SetupConnection, SetupConnectionError
from ..sv2.messages_mining import (
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenStandardMiningChannel,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesStandard,
    SubmitSharesSuccess,
)
from ..sv2.session import ClientSession
from .journal import ShareJournal

log = logging.getLogger(__name__)


class MinerError(RuntimeError):
    pass


class HashPacer:
    """Caps a miner's hash rate at ``rate`` H/s over all its threads (None: as fast as the CPU goes).

    After each searched chunk the miner sleeps until the hashes done so far fit the cap, so the rate is the
    cap's, not the machine's load's, as long as the cap is well below what the CPU does: tests that need
    controlled hash-rate ratios (devices of 10x different speed, equal speeds) on a shared, busy machine. The
    budget starts at the first chunk (no burst at start: a second's worth of shares at once would look like a
    flood to vardiff) and at most ``SLACK_S`` of unused budget is kept, so a stall is not followed by a burst."""

    SLACK_S = 0.2

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("max_hashrate must be positive")
        self.rate = rate
        self._due: float | None = None

    async def pace(self, hashes: int) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        due = now if self._due is None else max(self._due, now - self.SLACK_S)
        self._due = due + hashes / self.rate
        if self._due > now:
            await asyncio.sleep(self._due - now)


@dataclass
class MinerStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    hashes: int = 0
    jobs: int = 0
    targets: list[int] = field(default_factory=list)


@dataclass
class _Job:
    job_id: int
    pow_hash: bytes
    min_ntime: int | None


class Sv2Miner:
    """One connection, one channel. ``run()`` mines until ``stop()`` or the limits given to it."""

    def __init__(
        self,
        host: str,
        port: int,
        user_identity: str,
        *,
        authority_public_key: str | None,
        extended: bool = False,
        nominal_hash_rate: float = 0.0,
        threads: int = 1,
        chunk: int = 20_000,
        noise: bool = True,
        vendor: str = "ckbpool-cpu",
        user_identity_tlv: str | None = None,
        connect_timeout: float = 10.0,
        max_hashrate: float | None = None,
        journal: ShareJournal | None = None,
        drain_s: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.user_identity = user_identity
        self.authority_public_key = authority_public_key
        self.extended = extended
        self.nominal_hash_rate = nominal_hash_rate
        self.threads = max(1, threads)
        self.chunk = chunk
        self.noise_on = noise
        self.vendor = vendor
        self.user_identity_tlv = user_identity_tlv
        self.connect_timeout = connect_timeout
        self.pacer = HashPacer(max_hashrate)
        # every share and its answer (audits); with drain_s, run() ends by waiting that long for the answers
        self.journal = journal
        self.drain_s = drain_s
        self.stats = MinerStats()
        self.session = ClientSession(
            host,
            port,
            SetupConnection(
                protocol=PROTOCOL_MINING,
                min_version=2,
                max_version=2,
                flags=0,
                endpoint_host=host,
                endpoint_port=port,
                vendor=vendor,
                hardware_version="cpu",
                firmware="ckbpool",
                device_id=f"pid-{os.getpid()}",
            ),
            authority_public_key=authority_public_key,
            noise=noise,
            on_event=self._on_event,
            on_ready=self._on_ready,
            extensions=(EXTENSION_TYPE_WORKER_HASHRATE_TRACKING,) if user_identity_tlv is not None else (),
        )
        self.channel_id: int | None = None
        self.prefix = b""
        self.extranonce_size = 0
        self.target = 0
        self.blake2b = False
        self._jobs: dict[int, _Job] = {}
        self._active: _Job | None = None
        self._job_changed = asyncio.Event()
        self._seq = 0
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()
        self._job_changed.set()

    # -- wire -------------------------------------------------------------------------------------
    def _open_channel(self) -> None:
        if self.extended:
            msg: OpenStandardMiningChannel | OpenExtendedMiningChannel = OpenExtendedMiningChannel(
                request_id=1,
                user_identity=self.user_identity,
                nominal_hash_rate=self.nominal_hash_rate,
                max_target=(1 << 256) - 1,
                min_extranonce_size=0,
            )
        else:
            msg = OpenStandardMiningChannel(
                request_id=1,
                user_identity=self.user_identity,
                nominal_hash_rate=self.nominal_hash_rate,
                max_target=(1 << 256) - 1,
            )
        self.session.send(msg)

    def _on_ready(self) -> None:
        if (
            self.user_identity_tlv is not None
            and EXTENSION_TYPE_WORKER_HASHRATE_TRACKING not in self.session.extensions
        ):
            raise MinerError("the pool does not support worker-specific hashrate tracking (0x0002)")
        self._open_channel()

    # -- events -----------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, ConnectionSetUp):
            self.blake2b = (
                ckb_profile.pow_function_from_flags(event.response.flags) is ckb_profile.PowFunction.EAGLESONG_BLAKE2B
            )
        elif isinstance(event, ChannelOpened):
            self.channel_id = event.channel.channel_id
            self.prefix = event.channel.extranonce_prefix
            self.extranonce_size = event.channel.extranonce_size
            self.target = event.channel.target
            self.stats.targets.append(self.target)
            self.ready.set()
        elif isinstance(event, ChannelOpenRejected):
            raise MinerError(f"channel refused: {event.response.error_code}")
        elif isinstance(event, ConnectionClosed):
            raise MinerError(f"connection closed: {event.error_code} {event.detail}")
        elif isinstance(event, MessageReceived):
            self._on_message(event.message)

    def _on_message(self, msg: object) -> None:
        if isinstance(msg, NewMiningJob | NewExtendedMiningJob):
            info = ckb_profile.job_info(msg)
            job = _Job(info.job_id, info.pow_hash, info.min_ntime)
            self._jobs[job.job_id] = job
            self.stats.jobs += 1
            if info.min_ntime is not None:  # active now (same-height refresh)
                self._activate(job)
        elif isinstance(msg, SetNewPrevHash):
            future = self._jobs.get(msg.job_id)
            if future is not None:
                future.min_ntime = msg.min_ntime
                self._jobs = {future.job_id: future}
                self._activate(future)
        elif isinstance(msg, SetTarget):
            self.target = msg.maximum_target
            self.stats.targets.append(self.target)
            self._job_changed.set()
        elif isinstance(msg, SubmitSharesSuccess):
            self.stats.accepted += msg.new_submits_accepted_count
            if self.journal is not None:
                self.journal.success_through(msg.last_sequence_number, msg.new_submits_accepted_count)
        elif isinstance(msg, SubmitSharesError):
            if self.journal is not None:
                self.journal.error(msg.sequence_number, msg.error_code)
            self.stats.rejected += 1
            self.stats.rejected_reasons[msg.error_code] = self.stats.rejected_reasons.get(msg.error_code, 0) + 1
        elif isinstance(msg, SetupConnectionError):
            raise MinerError(f"setup refused: {msg.error_code}")

    def _activate(self, job: _Job) -> None:
        self._active = job
        self._job_changed.set()

    # -- mining -----------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        await self.session.run()
        if not self._stop.is_set():
            raise MinerError("pool closed the connection")

    async def _mine_loop(self, worker: int) -> None:
        await self.ready.wait()
        while not self._stop.is_set():
            job = self._active
            if job is None:
                self._job_changed.clear()
                await self._job_changed.wait()
                continue
            # each worker owns a disjoint range of the 8 device bytes: the top byte of the counter
            extranonce = bytes(self.extranonce_size)
            prefix = self.prefix + extranonce
            counter = worker << 56
            while job is self._active and not self._stop.is_set():
                target = self.target
                found = await asyncio.to_thread(
                    search, job.pow_hash, counter, self.chunk, target, blake2b=self.blake2b, nonce_prefix=prefix
                )
                if found is None:
                    counter += self.chunk
                    self.stats.hashes += self.chunk
                    await self.pacer.pace(self.chunk)
                    continue
                hit = found >> (8 * len(prefix))
                searched = hit - counter + 1
                self.stats.hashes += searched
                counter = hit + 1
                if job is self._active:
                    self._submit(job, found.to_bytes(16, "little"))
                await self.pacer.pace(searched)  # after the submit: a share is never held back

    def _submit(self, job: _Job, nonce16: bytes) -> None:
        assert self.channel_id is not None
        parts = ckb_profile.split_nonce16(nonce16, len(self.prefix))
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        ntime = job.min_ntime or 0
        msg: SubmitSharesStandard | SubmitSharesExtended
        if self.extended:
            self.session.submit_extended(
                self.channel_id,
                self._seq,
                job.job_id,
                parts.nonce,
                ntime,
                parts.version,
                parts.extranonce,
                self.user_identity_tlv,
            )
        else:
            msg = SubmitSharesStandard(self.channel_id, self._seq, job.job_id, parts.nonce, ntime, parts.version)
            self.session.send(msg)
        self.stats.submitted += 1
        if self.journal is not None:
            self.journal.submitted(self._seq, str(job.job_id), int.from_bytes(nonce16, "little"))

    async def _drain(self, reader: asyncio.Task[None]) -> None:
        """No new shares any more: wait up to ``drain_s`` for the answers to those sent (journal only)."""
        journal = self.journal
        if journal is None or self.drain_s <= 0:
            return
        deadline = time.monotonic() + self.drain_s
        while journal.waiting and not reader.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def run(self, *, duration: float | None = None, shares: int | None = None) -> MinerStats:
        """Mine until ``duration`` seconds pass, ``shares`` are acknowledged, or stop() is called."""
        await self.session.connect(self.connect_timeout)
        tasks = [asyncio.create_task(self._read_loop())]
        tasks += [asyncio.create_task(self._mine_loop(i)) for i in range(self.threads)]
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set():
                done = [t for t in tasks if t.done()]
                for task in done:
                    task.result()  # re-raise a failure
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if shares is not None and self.stats.accepted + self.stats.rejected >= shares:
                    break
                await asyncio.sleep(0.02)
        finally:
            self.stop()
            reader, miners = tasks[0], tasks[1:]
            for task in miners:
                task.cancel()
            for task in miners:
                with contextlib.suppress(asyncio.CancelledError, MinerError, ConnectionError):
                    await task
            await self._drain(reader)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, MinerError, ConnectionError):
                await reader
            self.session.close()
            await self.session.wait_closed()
        return self.stats
