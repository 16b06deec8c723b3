"""The translator's pure parts: job activation and staleness, shares awaiting verdicts, per-miner targets, and the
V1 -> SV2 share mapping (nonce16 survives the hop byte for byte)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.proxy.config import ProxyConfigError, load_proxy_config
from ckbpool.proxy.jobs import ChannelJobs
from ckbpool.proxy.pending import PendingShare, PendingShares
from ckbpool.proxy.vardiff import MinerVardiff
from ckbpool.sv2 import ckb_profile
from ckbpool.sv2.messages_mining import NewExtendedMiningJob, SetNewPrevHash, SubmitSharesExtended

pytestmark = pytest.mark.unit

POW_A = bytes([1]) * 32
POW_B = bytes([2]) * 32
PARENT_1 = bytes([0x11]) * 32
PARENT_2 = bytes([0x22]) * 32
COMPACT = 0x20010000


def ext_job(job_id: int, pow_hash: bytes, height: int, future: bool) -> NewExtendedMiningJob:
    return NewExtendedMiningJob(
        1, job_id, None if future else 1000, 0, True, (), pow_hash, height.to_bytes(8, "little")
    )


def prev_hash(job_id: int, parent: bytes) -> SetNewPrevHash:
    return SetNewPrevHash(1, job_id, parent, 1000, COMPACT)


def test_future_job_activates_on_its_prev_hash_and_refreshes_stay_on_the_tip() -> None:
    jobs = ChannelJobs()
    assert jobs.on_job(ext_job(10, POW_A, 5, future=True)) is None
    assert jobs.current is None
    first = jobs.on_prev_hash(prev_hash(10, PARENT_1))
    assert first is not None and first.clean and first.parent_hash == PARENT_1 and first.height == 5
    assert first.network_target == 1 << 248  # compact 0x20010000: difficulty 256
    refresh = jobs.on_job(ext_job(11, POW_B, 5, future=False))
    assert refresh is not None and not refresh.clean and refresh.parent_hash == PARENT_1
    assert jobs.is_live(first) and jobs.is_live(refresh)  # same height: both still count
    assert refresh.downstream_id > first.downstream_id
    jobs.on_job(ext_job(12, POW_A, 6, future=True))
    third = jobs.on_prev_hash(prev_hash(12, PARENT_2))
    assert third is not None
    assert not jobs.is_live(first) and not jobs.is_live(refresh) and jobs.is_live(third)
    assert jobs.get(first.downstream_id) is first  # known, but stale


def test_a_new_connection_makes_every_job_stale_and_ids_never_repeat() -> None:
    jobs = ChannelJobs()
    jobs.on_job(ext_job(10, POW_A, 5, future=True))
    before = jobs.on_prev_hash(prev_hash(10, PARENT_1))
    assert before is not None
    jobs.reset()
    assert not jobs.is_live(before)
    jobs.on_job(ext_job(10, POW_A, 5, future=True))  # a restarted pool may even reuse the upstream id
    after = jobs.on_prev_hash(prev_hash(10, PARENT_1))
    assert after is not None and after.downstream_id != before.downstream_id
    assert jobs.is_live(after) and not jobs.is_live(before)


def test_prev_hash_for_an_unknown_job_and_refresh_before_any_tip_are_ignored() -> None:
    jobs = ChannelJobs()
    assert jobs.on_job(ext_job(3, POW_A, 1, future=False)) is None
    assert jobs.on_prev_hash(prev_hash(99, PARENT_1)) is None
    assert jobs.current is None


def test_old_jobs_are_forgotten_after_keep() -> None:
    jobs = ChannelJobs(keep=4)
    jobs.on_job(ext_job(1, POW_A, 1, future=True))
    first = jobs.on_prev_hash(prev_hash(1, PARENT_1))
    assert first is not None
    for i in range(2, 8):
        jobs.on_job(ext_job(i, POW_A, 1, future=False))
    assert jobs.get(first.downstream_id) is None


def share(seq: int) -> PendingShare:
    return PendingShare(seq, owner=None, request_id=seq, worker="w", target=1, sent_at=0.0)


def test_pending_success_covers_everything_up_to_its_sequence_number_across_the_wrap() -> None:
    pending = PendingShares()
    pending._next = 2**32 - 3
    seqs = [pending.next_sequence_number() for _ in range(6)]
    assert seqs == [2**32 - 2, 2**32 - 1, 0, 1, 2, 3]
    for seq in seqs:
        pending.add(share(seq))
    rejected = pending.reject(0)
    assert rejected is not None and rejected.sequence_number == 0
    done = pending.accept_through(1)
    assert [s.sequence_number for s in done] == [2**32 - 2, 2**32 - 1, 1]
    assert [s.sequence_number for s in pending.drain()] == [2, 3]
    assert len(pending) == 0


def test_pending_expiry_is_by_age() -> None:
    pending = PendingShares()
    pending.add(PendingShare(1, None, 1, "w", 1, sent_at=10.0))
    pending.add(PendingShare(2, None, 2, "w", 1, sent_at=20.0))
    assert [s.sequence_number for s in pending.expire(15.0, now=30.0)] == [1]
    assert len(pending) == 1


def test_miner_target_never_easier_than_the_channel() -> None:
    vardiff = MinerVardiff(1 << 250, share_interval_s=10, retarget_interval_s=30)
    assert vardiff.effective(1 << 240) == 1 << 240
    assert vardiff.effective(1 << 252) == 1 << 250


def test_a_flooding_miner_gets_a_harder_target_and_a_quiet_one_relaxes_to_the_channel() -> None:
    upstream = 1 << 250
    vardiff = MinerVardiff(upstream, share_interval_s=10, retarget_interval_s=30, tolerance=1.5)
    start = vardiff._window_start
    changed = [vardiff.on_share(upstream, now=start + 1.0) for _ in range(40)]
    assert any(changed)
    assert vardiff.effective(upstream) < upstream // 10
    vardiff.maybe_retarget(upstream, now=start + 200)  # closes the window the flood's tail fell into
    hard = vardiff.target
    assert vardiff.maybe_retarget(upstream, now=start + 400)  # a window of silence
    assert hard < vardiff.target <= upstream
    for i in range(10):
        vardiff.maybe_retarget(upstream, now=start + 400 + 100 * i)
    assert vardiff.effective(upstream) == upstream


def test_disabled_vardiff_keeps_the_channel_target() -> None:
    vardiff = MinerVardiff(1 << 250, enabled=False)
    for _ in range(100):
        assert not vardiff.on_share(1 << 250, now=1e9)
    assert vardiff.effective(1 << 250) == 1 << 250


@given(st.binary(min_size=1, max_size=7), st.binary(min_size=16, max_size=16))
def test_v1_share_maps_to_submit_shares_extended_and_back(prefix: bytes, tail: bytes) -> None:
    nonce16 = prefix + tail[len(prefix) :]
    message = SubmitSharesExtended(
        1,
        2,
        3,
        int.from_bytes(nonce16[12:16], "little"),
        0,
        int.from_bytes(nonce16[8:12], "little"),
        nonce16[len(prefix) : 8],
    )
    assert ckb_profile.nonce16_from_share(prefix, message) == nonce16
    # and the V1 view of the same bytes: extranonce2 splits into the SV2 fields
    extranonce2 = nonce16[len(prefix) + 1 :] if len(prefix) < 8 else b""
    if 8 <= len(extranonce2) <= 15:
        rest, version, nonce = ckb_profile.split_v1_extranonce2(extranonce2)
        assert (version, nonce) == (message.version, message.nonce) and rest == message.extranonce[1:]


def test_config_requires_the_authority_key_with_noise_and_rejects_unknown_keys() -> None:
    with pytest.raises(ProxyConfigError, match="authority_public_key"):
        load_proxy_config(data={"network": "dev", "upstream": {"user_identity": "a.b"}})
    with pytest.raises(ProxyConfigError, match=r"v1\.extranonce2_size"):
        load_proxy_config(data={"upstream": {"user_identity": "a.b", "noise": False}, "v1": {"extranonce2_size": 7}})
    with pytest.raises(ProxyConfigError, match="bogus"):
        load_proxy_config(data={"upstream": {"user_identity": "a.b", "noise": False}, "bogus": 1})
    # per-worker identity (the default) checks V1 usernames against the pool's network: it must be given
    with pytest.raises(ProxyConfigError, match="network is required"):
        load_proxy_config(data={"upstream": {"user_identity": "ckb1abc.farm", "noise": False}})
    cfg = load_proxy_config(data={"network": "mainnet", "upstream": {"user_identity": "ckb1abc.farm", "noise": False}})
    assert cfg.identity == "per-worker" and cfg.per_worker
    assert cfg.getwork_identity == "ckb1abc.ckb-miner"
    aggregated = load_proxy_config(
        data={"identity": "aggregated", "upstream": {"user_identity": "a.b", "noise": False}}
    )
    assert not aggregated.per_worker and aggregated.network is None
    assert cfg.v1.extranonce2_size == 10 and cfg.v1.max_line_bytes == 16 * 1024
