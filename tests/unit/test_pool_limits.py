"""The pool's Stratum V2 abuse limits, each on its own and without sockets.

The share difficulty floor (vardiff.min_hashrate), the UpdateChannel rate limit that keeps vardiff's window,
channels per connection, connection admission at accept (global, per address, handshakes in progress, handshake
rate), the inbound frame cap (no more than one capped frame is ever buffered) and the refusal counter. The
session-level checks drive the real MinerSession/StratumServer with plaintext frames and a writer that records
what the pool sends.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from ckbpool.ckb.target import U256_MAX
from ckbpool.ckb.template import BlockTemplate, job_from_template
from ckbpool.pool.channels import TWO_256, Vardiff, easiest_target, floored_hashrate, target_for_hashrate
from ckbpool.pool.config import PoolConfig, StratumSettings, VardiffSettings
from ckbpool.pool.limits import ConnectionLimiter, TokenBucket, ip_key
from ckbpool.pool.metrics import LIMIT_REASONS, PoolMetrics
from ckbpool.pool.stratum import ERROR_TOO_MANY_CHANNELS, MinerSession, StratumServer
from ckbpool.sv2.errors import FrameTooLarge
from ckbpool.sv2.extensions import share_tlvs
from ckbpool.sv2.framing import DEFAULT_MAX_INBOUND_PAYLOAD, HEADER_SIZE, FrameDecoder, FrameHeader
from ckbpool.sv2.messages import encode_message
from ckbpool.sv2.messages_ckb import CkbSubmitSolution, CkbTemplateSubscribe
from ckbpool.sv2.messages_common import PROTOCOL_MINING, RequestExtensions, SetupConnection
from ckbpool.sv2.messages_mining import (
    CloseChannel,
    OpenExtendedMiningChannel,
    OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError,
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SetTarget,
    SubmitSharesExtended,
    UpdateChannel,
)
from ckbpool.sv2.noise_transport import MAC_SIZE, NoiseEncryptor, NoiseTransport, encrypted_payload_size
from support.transport import RecordingTransport

pytestmark = pytest.mark.unit
EASY = (1 << 256) - 1
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


# --- the share difficulty floor ---------------------------------------------------------------------------------


def test_the_floor_is_one_share_per_interval_at_min_hashrate_and_the_harder_of_the_two_floors() -> None:
    settings = VardiffSettings()
    assert settings.min_hashrate == 1e4
    floor = easiest_target(settings)
    assert floor == target_for_hashrate(1e4, settings.share_interval_s)
    assert TWO_256 / floor == pytest.approx(1e4 * settings.share_interval_s, rel=1e-9)  # hashes per share
    # min_share_difficulty harder than the hashrate floor: it wins
    hard = VardiffSettings(min_share_difficulty=1e9)
    assert easiest_target(hard) == int((0xFFFF << 240) / 1e9) < floor


@pytest.mark.parametrize(
    ("declared", "expected"),
    [(1e-9, 1e4), (9_999.0, 1e4), (0.0, 1e6), (-5.0, 1e6), (math.nan, 1e6), (2e12, 2e12)],
)
def test_declared_hashrates_below_the_floor_count_as_the_floor(declared: float, expected: float) -> None:
    assert floored_hashrate(declared, VardiffSettings()) == expected


def test_vardiff_never_goes_easier_than_the_floor() -> None:
    settings = VardiffSettings(share_interval_s=1.0, retarget_interval_s=1.0, min_hashrate=1e4)
    floor = easiest_target(settings)
    vd = Vardiff(settings, U256_MAX, network_target=1)
    assert vd.target == floor  # a 1e-9 H/s target is clamped on creation
    vd = Vardiff(settings, floor // 64, network_target=1)
    now = 1e9  # silence for many windows: each one eases (at least halves) the difficulty, down to the floor only
    for _ in range(20):
        now += 2.0
        vd.maybe_retarget(now)
    assert vd.target == floor


def test_a_declaration_moves_the_target_but_keeps_the_measurement_window() -> None:
    settings = VardiffSettings(share_interval_s=10.0, retarget_interval_s=30.0, min_hashrate=1e4)
    vd = Vardiff(settings, target_for_hashrate(1e9, 10.0), network_target=1)
    start = vd._window_start
    for i in range(5):
        assert vd.on_share(now=start + 0.01 * i) is None
    assert vd.declare(U256_MAX) == easiest_target(settings)  # "1e-9 H/s": floored
    assert vd._window_shares == 5 and vd._window_start == start  # nothing reset
    assert vd.declare(U256_MAX) is None  # same target: no change to announce
    # the flood detection still sees the earlier shares: 3 more (8 in the window, far above 4x expected) retarget
    results = [vd.on_share(now=start + 0.1 + 0.01 * i) for i in range(3)]
    assert results[-1] is not None and vd.target < easiest_target(settings)


# --- connection admission --------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **overrides: Any) -> ConnectionLimiter:
    args: dict[str, Any] = {
        "max_connections": 100,
        "max_per_ip": 10,
        "max_handshaking_per_ip": 4,
        "handshake_rate_per_ip": 2.0,
        "handshake_burst_per_ip": 1000,
        "clock": clock,
    }
    args.update(overrides)
    return ConnectionLimiter(**args)


def test_handshakes_in_progress_per_address_are_capped_and_freed_when_done() -> None:
    lim = limiter(Clock())
    assert [lim.admit("10.0.0.1") for _ in range(5)] == [None] * 4 + ["ip-handshakes-in-progress"]
    assert lim.admit("10.0.0.2") is None  # another address is not affected
    lim.handshake_done("10.0.0.1")
    assert lim.admit("10.0.0.1") is None
    assert lim.handshaking_from("10.0.0.1") == 4 and lim.open_from("10.0.0.1") == 5
    lim.release("10.0.0.1", handshaking=True)  # a half-open one timed out
    assert lim.handshaking_from("10.0.0.1") == 3 and lim.open_from("10.0.0.1") == 4


def test_connections_per_address_and_in_total_are_counted_from_accept() -> None:
    lim = limiter(Clock(), max_connections=12)
    for _ in range(10):
        assert lim.admit("10.0.0.1") is None
        lim.handshake_done("10.0.0.1")
    assert lim.admit("10.0.0.1") == "ip-connections"
    assert lim.admit("10.0.0.2") is None and lim.admit("10.0.0.3") is None
    assert lim.connections == 12
    assert lim.admit("10.0.0.4") == "max-connections"  # counted before any handshake finished
    lim.release("10.0.0.2", handshaking=True)
    assert lim.admit("10.0.0.4") is None
    for _ in range(10):
        lim.release("10.0.0.1", handshaking=False)
    assert lim.open_from("10.0.0.1") == 0 and lim.connections == 2


def test_handshake_rate_per_address_is_a_token_bucket_that_survives_closed_connections() -> None:
    clock = Clock()
    lim = limiter(clock, handshake_burst_per_ip=3, handshake_rate_per_ip=2.0, max_handshaking_per_ip=100)
    for _ in range(3):
        assert lim.admit("10.0.0.1") is None
        lim.release("10.0.0.1", handshaking=True)  # connect and close again at once
    assert lim.admit("10.0.0.1") == "ip-handshake-rate"
    assert lim.admit("10.0.0.9") is None
    clock.now += 0.5  # one token back at 2/s
    assert lim.admit("10.0.0.1") is None
    assert lim.admit("10.0.0.1") == "ip-handshake-rate"


def test_rate_buckets_are_bounded_and_connected_addresses_keep_theirs() -> None:
    clock = Clock()
    lim = limiter(clock, handshake_burst_per_ip=1, max_tracked=8)
    assert lim.admit("192.0.2.1") is None  # stays connected, bucket now empty
    for i in range(50):
        key = f"198.51.100.{i}"
        assert lim.admit(key) is None
        lim.release(key, handshaking=True)
    assert lim.tracked <= 9
    assert lim.admit("192.0.2.1") == "ip-handshake-rate"  # its (empty) bucket was not forgotten


def test_ip_key_counts_ipv4_addresses_and_ipv6_slash_64s() -> None:
    assert ip_key("203.0.113.7") == "203.0.113.7"
    assert ip_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert ip_key("2001:db8:1:2::1") == ip_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("fe80::1%eth0") == "fe80::/64"


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(0.1, 3, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 10.0
    assert bucket.take() and not bucket.take()
    clock.now += 1000.0
    assert bucket.full


# --- the pool's session: channels per connection, UpdateChannel, the hashrate floor, the frame cap ----------------


def pool_session(**stratum: Any) -> tuple[StratumServer, MinerSession, RecordingTransport]:
    config = PoolConfig.model_validate({"stratum": {"noise": False, **stratum}, "success_batch_shares": 1})
    server = StratumServer(config, PoolMetrics(), None)
    # a mainnet-hard job: the floor, not the network target, is what bounds a channel's target
    template = json.loads((DATA_DIR / "rfc0031_vector.json").read_text())["template"]
    template["compact_target"] = "0x1a08a97e"
    server.new_job(1, job_from_template(BlockTemplate.from_json(template)))
    writer = RecordingTransport()
    session = MinerSession(server, writer, None)  # type: ignore[arg-type]
    server.sessions.add(session)
    session.feed(encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "127.0.0.1", 0, "test", "", "", "")))
    assert session.setup_complete
    return server, session, writer


def limited(server: StratumServer, reason: str) -> float:
    value = server.metrics.registry.get_sample_value("ckbpool_stratum_limited_total", {"reason": reason})
    assert value is not None
    return value


async def test_channels_beyond_the_cap_are_refused_with_too_many_channels() -> None:
    server, session, writer = pool_session(max_channels_per_connection=3)
    for request_id in range(1, 6):
        session.feed(encode_message(OpenExtendedMiningChannel(request_id, "abuser.w", 1e6, EASY, 0)))
    assert len(writer.of(OpenExtendedMiningChannelSuccess)) == 3
    errors = writer.of(OpenMiningChannelError)
    assert [(e.request_id, e.error_code) for e in errors] == [
        (4, ERROR_TOO_MANY_CHANNELS),
        (5, ERROR_TOO_MANY_CHANNELS),
    ]
    assert len(session.channels) == 3 and limited(server, "channels-per-connection") == 2
    # a closed channel frees its place
    session.feed(encode_message(CloseChannel(next(iter(session.channels)), "bye")))
    session.feed(encode_message(OpenStandardMiningChannel(9, "abuser.w", 1e6, EASY)))
    assert len(writer.of(OpenStandardMiningChannelSuccess)) == 1 and len(session.channels) == 3
    session.close()


async def test_channels_per_address_are_capped_over_all_its_connections_and_freed_on_close() -> None:
    """One address cannot multiply the per-connection cap by opening connections: max_channels_per_ip counts
    the channels of all its connections (docs/abuse.md: 10,000 connections x 256 channels would be ~3 GiB)."""
    server, first, first_writer = pool_session(max_channels_per_connection=3, max_channels_per_ip=4)
    for request_id in range(1, 4):
        first.feed(encode_message(OpenExtendedMiningChannel(request_id, "abuser.w", 1e6, EASY, 0)))
    second_writer = RecordingTransport()  # the same peer address (127.0.0.1), another connection
    second = MinerSession(server, second_writer, None)  # type: ignore[arg-type]
    server.sessions.add(second)
    second.feed(encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "127.0.0.1", 0, "test", "", "", "")))
    for request_id in range(1, 4):
        second.feed(encode_message(OpenExtendedMiningChannel(request_id, "abuser.w", 1e6, EASY, 0)))
    assert len(first.channels) == 3 and len(second.channels) == 1
    errors = second_writer.of(OpenMiningChannelError)
    assert [(e.request_id, e.error_code) for e in errors] == [
        (2, ERROR_TOO_MANY_CHANNELS),
        (3, ERROR_TOO_MANY_CHANNELS),
    ]
    assert limited(server, "ip-channels") == 2 and limited(server, "channels-per-connection") == 0
    # the first connection's channels are the address's again once it goes
    first.close()
    for request_id in range(4, 7):
        second.feed(encode_message(OpenExtendedMiningChannel(request_id, "abuser.w", 1e6, EASY, 0)))
    assert len(second.channels) == 3 and len(first_writer.of(OpenExtendedMiningChannelSuccess)) == 3
    second.close()
    assert server.limiter.channels_from("127.0.0.1") == 0, "every closed channel is given back"


def test_the_default_channel_cap_fits_proxies_and_stops_a_thousand() -> None:
    cap = StratumSettings().max_channels_per_connection
    assert 2 <= cap < 1000


async def test_a_tiny_declared_hashrate_opens_the_channel_at_the_floor() -> None:
    server, session, writer = pool_session()
    session.feed(encode_message(OpenStandardMiningChannel(1, "abuser.tiny", 1e-9, EASY)))
    session.feed(encode_message(OpenStandardMiningChannel(2, "honest.asic", 2.0**40, EASY)))
    tiny, asic = writer.of(OpenStandardMiningChannelSuccess)
    vd = server.config.vardiff
    assert tiny.target == easiest_target(vd) == target_for_hashrate(vd.min_hashrate, vd.share_interval_s)
    assert asic.target == target_for_hashrate(2.0**40, vd.share_interval_s)
    assert limited(server, "hashrate-floor") == 1
    session.close()


async def test_update_channel_is_rate_limited_and_never_resets_vardiff() -> None:
    server, session, writer = pool_session(update_channel_burst=2, update_channel_interval_s=3600)
    session.feed(encode_message(OpenStandardMiningChannel(1, "abuser.upd", 1e9, EASY)))
    (opened,) = writer.of(OpenStandardMiningChannelSuccess)
    channel = session.channels[opened.channel_id]
    vardiff = channel.vardiff
    vardiff._window_shares, vardiff._window_work = 5, 123.0  # shares measured so far in this window
    window_start = vardiff._window_start
    for rate in (1e-9, 1e8, 1e-9, 1e-9, 1e-9, 1e-9):
        session.feed(encode_message(UpdateChannel(opened.channel_id, rate, EASY)))
    vd = server.config.vardiff
    # two honoured (floor, then 1e8 H/s), four ignored; the last word was the honoured 1e8
    assert [t.maximum_target for t in writer.of(SetTarget)] == [
        easiest_target(vd),
        target_for_hashrate(1e8, vd.share_interval_s),
    ]
    assert limited(server, "update-channel-rate") == 4
    assert channel.vardiff is vardiff and channel.target == target_for_hashrate(1e8, vd.share_interval_s)
    assert (vardiff._window_shares, vardiff._window_work, vardiff._window_start) == (5, 123.0, window_start)
    session.close()


async def test_an_oversized_frame_is_refused_from_its_header_through_the_session() -> None:
    server, session, _writer = pool_session()
    cap = server.config.stratum.max_frame_bytes
    header = FrameHeader(0, 0x16, cap + 1, True).encode()
    with pytest.raises(FrameTooLarge):
        session.feed(header + bytes(100))
    assert session.buffered == 0
    session.close()


# --- the inbound frame cap ---------------------------------------------------------------------------------------


def test_the_inbound_cap_is_64_kib_and_every_legitimate_client_message_fits_with_room() -> None:
    assert StratumSettings().max_frame_bytes == DEFAULT_MAX_INBOUND_PAYLOAD == 64 * 1024
    full = "x" * 255
    largest = [
        SetupConnection(PROTOCOL_MINING, 2, 2, 0xFFFFFFFF, full, 65535, full, full, full, full),
        OpenStandardMiningChannel(1, full, 1e12, EASY),
        OpenExtendedMiningChannel(1, full, 1e12, EASY, 32),
        UpdateChannel(1, 1e12, EASY),
        CloseChannel(1, full),
        SubmitSharesExtended(
            1, 1, 1, 1, 1, 1, b"x" * 32, share_tlvs(user_identity="w" * 32, ckb_user_identity=full, share_target=EASY)
        ),
        CkbTemplateSubscribe(1),
        CkbSubmitSolution(1, 1, 1, bytes(16)),
        RequestExtensions(1, tuple(range(64))),  # far more extensions than exist
    ]
    sizes = {type(m).__name__: len(encode_message(m)) - HEADER_SIZE for m in largest}
    assert max(sizes.values()) == sizes["SetupConnection"] == 1291
    assert max(sizes.values()) * 40 < DEFAULT_MAX_INBOUND_PAYLOAD


@pytest.mark.parametrize("split", [1, 7, 4096, 1 << 16])
def test_plaintext_decoder_buffers_at_most_one_capped_frame(split: int) -> None:
    cap = DEFAULT_MAX_INBOUND_PAYLOAD
    frame = FrameHeader(0, 0x16, cap, True).encode() + os.urandom(cap)
    decoder = FrameDecoder(cap)
    peak, frames = 0, []
    stream = frame * 2
    for pos in range(0, len(stream), split):
        frames += decoder.feed(stream[pos : pos + split])
        peak = max(peak, decoder.buffered)
    assert len(frames) == 2 and peak < HEADER_SIZE + cap
    over = FrameDecoder(cap)
    with pytest.raises(FrameTooLarge):
        over.feed(FrameHeader(0, 0x16, cap + 1, True).encode())
    assert over.buffered == 0


@pytest.mark.parametrize("split", [1, 1000, 1 << 16])
def test_noise_decryptor_buffers_at_most_one_capped_frame(split: int) -> None:
    cap = DEFAULT_MAX_INBOUND_PAYLOAD
    k1, k2 = os.urandom(32), os.urandom(32)
    sender = NoiseEncryptor(k1)
    receiver = NoiseTransport.from_keys(k2, k1, max_frame_payload=cap)
    frame = FrameHeader(0, 0x16, cap, True).encode() + os.urandom(cap)
    wire = sender.encrypt_frame(frame) + sender.encrypt_frame(frame)
    peak, frames = 0, []
    for pos in range(0, len(wire), split):
        frames += receiver.feed(wire[pos : pos + split])
        peak = max(peak, receiver.decryptor.buffered)
    assert frames == [frame, frame]
    assert peak < HEADER_SIZE + MAC_SIZE + encrypted_payload_size(cap) + split
    # one byte more than the cap: refused from the encrypted header, nothing of the payload kept
    big = FrameHeader(0, 0x16, cap + 1, True).encode() + bytes(cap + 1)
    fresh = NoiseTransport.from_keys(k2, k1, max_frame_payload=cap)
    with pytest.raises(FrameTooLarge):
        fresh.feed(NoiseEncryptor(k1).encrypt_frame(big)[:4096])
    assert fresh.decryptor.buffered == 0


def test_every_limit_has_its_counter_label_and_no_per_peer_labels() -> None:
    metrics = PoolMetrics()
    for reason in LIMIT_REASONS:
        assert metrics.registry.get_sample_value("ckbpool_stratum_limited_total", {"reason": reason}) == 0
    assert metrics.stratum_limited_total._labelnames == ("reason",)
