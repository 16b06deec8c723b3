"""The pool's side of "credited work = proven work" (issue 14): a share tagged with the 0x4CCB ``share_target`` TLV
(the target a proxy validated it against, a device's own) is checked against that target and credited exactly the
work it proves -- never more than the channel's target allows, never less than the declared one proves.

A lying proxy is the case that matters: it declares a harder target than the share meets, to have the pool credit
more work than was done. The pool must refuse such a share (difficulty-too-low, nothing credited) -- not credit it at
the easier channel target either, since the share's owner claimed work it did not prove. A target easier than the
channel's is no claim at all: the share is checked and credited at the channel's target.

The server runs in-process without Noise over a recording transport (as tests/unit/test_pool_share_batches.py); the
shares go straight to the pool as a proxy sends them (RequestExtensions 0x0002 + 0x4CCB, an extended channel,
SubmitSharesExtended with user_identity, ckb_user_identity and share_target TLVs). "Credited" is read where the pool
writes it: the Share event on the bus (its target: the books' work is ``2^256 // share_target``), what the
accounting consumer sums per (user, worker) for Redis (``_batch_args``), the pool's work counter, and the
SubmitShares.Success sum.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckbpool.bus.events import Share
from ckbpool.ckb.address import encode_address
from ckbpool.ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, DevKey
from ckbpool.ckb.template import BlockTemplate, job_from_template
from ckbpool.pool.accounting import _batch_args, share_work_int
from ckbpool.pool.channels import U256_MAX, JobEntry, ShareResult, check_share, target_to_share_difficulty
from ckbpool.pool.config import PoolConfig
from ckbpool.pool.metrics import PoolMetrics
from ckbpool.pool.stratum import MinerSession, StratumServer
from ckbpool.sv2 import ckb_profile
from ckbpool.sv2.extensions import EXTENSION_TYPE_CKB, EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, share_tlvs
from ckbpool.sv2.messages import encode_message
from ckbpool.sv2.messages_common import (
    PROTOCOL_MINING,
    RequestExtensions,
    RequestExtensionsSuccess,
    SetupConnection,
)
from ckbpool.sv2.messages_mining import (
    NewExtendedMiningJob,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    SubmitSharesError,
    SubmitSharesExtended,
    SubmitSharesSuccess,
)
from support.transport import RecordingTransport

pytestmark = pytest.mark.unit

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
ADDRESS = encode_address(DevKey(DEV_GENESIS_PRIVATE_KEY).lock, "dev")
DEVICE = f"{ADDRESS}.rig7"
HALF = 1 << 255  # a declared device target: about every second nonce meets it


@dataclasses.dataclass
class Proxy:
    """One proxy connection to the pool: the channel it opened and what the pool published and answered."""

    server: StratumServer
    session: MinerSession
    transport: RecordingTransport
    published: list[Share]
    opened: OpenExtendedMiningChannelSuccess
    job: NewExtendedMiningJob
    entry: JobEntry
    sequence: int = 0

    def nonces(self) -> Iterator[tuple[SubmitSharesExtended, int]]:
        """Untagged shares of this channel with the Eaglesong value each proves (computed on a copy of the job, so
        the pool's duplicate set is untouched)."""
        probe = dataclasses.replace(self.entry, seen=set())
        for nonce in range(1, 5000):
            share = SubmitSharesExtended(
                self.opened.channel_id, 0, self.job.job_id, nonce, 0, 0, bytes(self.opened.extranonce_size)
            )
            nonce16 = ckb_profile.nonce16_from_share(self.opened.extranonce_prefix, share)
            verdict = check_share(probe, None, nonce16, U256_MAX, self.server.blake2b)
            assert verdict.result is ShareResult.ACCEPTED
            yield share, verdict.value

    def first(self, low: int, high: int) -> SubmitSharesExtended:
        """A share whose value is in ``(low, high]``."""
        return next(share for share, value in self.nonces() if low < value <= high)

    def submit(self, share: SubmitSharesExtended, declared: int) -> None:
        self.sequence += 1
        tagged = dataclasses.replace(share, sequence_number=self.sequence, tlvs=share_tlvs("rig7", DEVICE, declared))
        self.session.feed(encode_message(tagged))

    async def published_shares(self) -> list[Share]:
        assert await self.server.flush_shares(5.0)
        return self.published


def _proxy(vardiff: dict[str, float]) -> Proxy:
    """A pool (addresses of the dev chain required, as the stack renders it) and a proxy connected to it."""
    config = PoolConfig.model_validate(
        {
            "network": "dev",
            "stratum": {"noise": False, "require_address_identity": True},
            "success_batch_shares": 1,
            "vardiff": vardiff,
        }
    )
    published: list[Share] = []
    server = StratumServer(config, PoolMetrics(), None, on_shares=published.extend)
    template = json.loads((DATA_DIR / "rfc0031_vector.json").read_text())["template"]
    template["compact_target"] = "0x1a08a97e"  # a network target no test nonce meets: no block in the way
    server.new_job(1, job_from_template(BlockTemplate.from_json(template)))
    transport = RecordingTransport()
    session = MinerSession(server, transport, None)  # type: ignore[arg-type]
    server.sessions.add(session)
    session.feed(encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "127.0.0.1", 0, "proxy", "", "", "")))
    session.feed(encode_message(RequestExtensions(1, (EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, EXTENSION_TYPE_CKB))))
    (negotiated,) = transport.of(RequestExtensionsSuccess)
    assert set(negotiated.supported_extensions) == {EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, EXTENSION_TYPE_CKB}
    session.feed(encode_message(OpenExtendedMiningChannel(1, f"{ADDRESS}.proxy", 1e6, U256_MAX, 0)))
    (opened,) = transport.of(OpenExtendedMiningChannelSuccess)
    (job,) = transport.of(NewExtendedMiningJob)
    active = server.jobs.get(job.job_id)
    assert active is not None
    return Proxy(server, session, transport, published, opened, job, active.entry)


#: the channel's target pinned at difficulty 1 (0xFFFF << 240: all but ~1/65536 of nonces meet it)
EASIEST = {"min_share_difficulty": 1e-9, "min_hashrate": 1e-9, "max_share_difficulty": 1.0, "initial_hashrate": 1e-9}
#: the channel's target pinned at difficulty 2 (~2^255): about every second nonce meets it
DIFFICULTY_2 = {"min_share_difficulty": 2.0, "max_share_difficulty": 2.0, "min_hashrate": 1e-9}


def _channel_target(proxy: Proxy) -> int:
    channel = proxy.session.channels[proxy.opened.channel_id]
    return channel.target


def _credited_work(proxy: Proxy) -> float:
    return proxy.server.metrics.accepted_work_hashes_total._value.get()  # type: ignore[no-any-return]


def _books(shares: list[Share]) -> dict[tuple[str, str], tuple[int, int]]:
    """What the accounting consumer writes to Redis for these shares: per (user, worker), (accepted, work)."""
    args = _batch_args(shares)
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for index in range(int(args[0])):
        _source, user, worker, numbers = args[1 + 4 * index : 5 + 4 * index]
        _first_seq, _monotone, n, _difficulty, work = str(numbers).split()[:5]
        out[(str(user), str(worker))] = (int(n), int(work))
    return out


async def test_a_share_missing_its_declared_target_is_refused_and_credits_nothing() -> None:
    """(a) a lying proxy: the share meets the channel's target but not the harder target it declares."""
    proxy = _proxy(EASIEST)
    channel = _channel_target(proxy)
    assert channel > HALF  # difficulty 1: 0xFFFF << 240
    share = proxy.first(HALF, channel)  # meets the channel target, not the declared one
    proxy.submit(share, HALF)
    (error,) = proxy.transport.of(SubmitSharesError)
    assert error.error_code == ShareResult.LOW_DIFFICULTY.value == "difficulty-too-low"
    assert not proxy.transport.of(SubmitSharesSuccess)
    (event,) = await proxy.published_shares()
    assert not event.accepted and event.reason == "difficulty-too-low"
    assert _books([event]) == {(ADDRESS, "rig7"): (0, 0)}  # nothing in the books: not the device, not the channel
    assert _credited_work(proxy) == 0
    assert proxy.session.channels[proxy.opened.channel_id].accepted == 0
    proxy.session.close()


async def test_a_share_meeting_its_harder_declared_target_is_credited_exactly_its_work() -> None:
    """(b) the share meets the harder target it declares: credited 2^256/T, to the device's own account."""
    proxy = _proxy(EASIEST)
    declared = HALF + 12345  # not a power of two: the books' integer division shows
    share = proxy.first(0, declared)
    proxy.submit(share, declared)
    assert not proxy.transport.of(SubmitSharesError)
    (event,) = await proxy.published_shares()
    assert event.accepted and (event.user, event.worker) == (ADDRESS, "rig7")
    assert event.share_target == declared
    assert event.share_difficulty == target_to_share_difficulty(declared)
    work = share_work_int(declared)
    assert work == (1 << 256) // declared == 1  # at ~2^255 + 12345 the exact work is 1 (2^256 // T rounds down)
    assert _books([event]) == {(ADDRESS, "rig7"): (1, work)}
    assert _credited_work(proxy) == pytest.approx((1 << 256) / declared)
    (success,) = proxy.transport.of(SubmitSharesSuccess)
    assert success.new_submits_accepted_count == 1
    assert success.new_shares_sum == max(1, round(target_to_share_difficulty(declared)))
    proxy.session.close()


async def test_a_much_harder_declared_target_is_credited_its_much_larger_work() -> None:
    """(b) with a target ~64x harder than the channel's: the work credited is 2^256 // T, exactly."""
    proxy = _proxy(EASIEST)
    declared = (1 << 250) + 987654321
    share = proxy.first(0, declared)
    proxy.submit(share, declared)
    (event,) = await proxy.published_shares()
    assert event.accepted and event.share_target == declared
    assert _books([event]) == {(ADDRESS, "rig7"): (1, (1 << 256) // declared)}
    assert (1 << 256) // declared == 63  # 2^256 / (2^250 + ~1e9) = 63.99...: floor
    assert _credited_work(proxy) == pytest.approx((1 << 256) / declared)
    proxy.session.close()


async def test_a_declared_target_easier_than_the_channels_is_checked_and_credited_at_the_channel_target() -> None:
    """(c) the declared target is easier than the channel's: the channel's target is what the share must meet and
    what it is credited at -- a share between the two is refused, one below both credited 2^256 // channel target."""
    proxy = _proxy(DIFFICULTY_2)
    channel = _channel_target(proxy)
    assert channel < HALF < U256_MAX  # difficulty 2: 0xFFFF << 239
    easier = U256_MAX
    between = proxy.first(channel, easier)
    proxy.submit(between, easier)
    (error,) = proxy.transport.of(SubmitSharesError)
    assert error.error_code == "difficulty-too-low"
    good = proxy.first(0, channel)
    proxy.submit(good, easier)
    refused, accepted = await proxy.published_shares()
    assert not refused.accepted
    assert accepted.accepted and accepted.share_target == channel
    assert accepted.share_difficulty == target_to_share_difficulty(channel)
    assert _books([refused, accepted]) == {(ADDRESS, "rig7"): (1, (1 << 256) // channel)}
    assert _credited_work(proxy) == pytest.approx((1 << 256) / channel)
    proxy.session.close()
