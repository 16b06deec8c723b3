"""Per-worker identity through the translator: address checks (ckbpool.pool.identity), the 0x4CCB share TLVs
(ckb_user_identity, share_target) next to 0x0002's user_identity, and the channel vardiff that aims at one
share per interval per active worker."""

from __future__ import annotations

import dataclasses

import pytest
from test_sv2_connection import connected, only, open_extended, replies

from ckbpool.ckb.address import encode_address
from ckbpool.ckb.devwallet import DEV_GENESIS_PRIVATE_KEY, DevKey
from ckbpool.pool.channels import TWO_256, Vardiff, target_for_hashrate
from ckbpool.pool.config import VardiffSettings
from ckbpool.pool.identity import (
    DEFAULT_WORKER,
    ERROR_ADDRESS_WRONG_NETWORK,
    ERROR_INVALID_ADDRESS,
    ERROR_INVALID_WORKER,
    IdentityError,
    parse_identity,
)
from ckbpool.sv2.client import ClientConnection
from ckbpool.sv2.errors import EncodeError, LocalProtocolError
from ckbpool.sv2.events import ExtensionsNegotiated, Rejected, ShareSubmitted
from ckbpool.sv2.extensions import (
    ERROR_EXTENSION_NOT_NEGOTIATED,
    ERROR_INVALID_SHARE_TARGET,
    ERROR_INVALID_TLV,
    ERROR_INVALID_USER_IDENTITY,
    EXTENSION_TYPE_CKB,
    EXTENSION_TYPE_WORKER_HASHRATE_TRACKING,
    FIELD_TYPE_CKB_SHARE_TARGET,
    FIELD_TYPE_CKB_USER_IDENTITY,
    ShareTlvs,
    TlvRejected,
    ckb_share_target_tlv,
    ckb_user_identity_tlv,
    read_share_extensions,
    share_tlvs,
    user_identity_tlv,
)
from ckbpool.sv2.messages import RequestExtensions, SubmitSharesError, SubmitSharesExtended, encode_message
from ckbpool.sv2.server import ServerConnection
from ckbpool.sv2.types import TLV_LIST, Tlv

pytestmark = pytest.mark.unit

LOCK = DevKey(DEV_GENESIS_PRIVATE_KEY).lock
DEV_ADDRESS = encode_address(LOCK, "dev")  # full format: 97 characters
MAINNET_ADDRESS = encode_address(LOCK, "mainnet")
WORKER = EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
CKB = EXTENSION_TYPE_CKB
SHARE = SubmitSharesExtended(8, 1, 3, 0x26401100, 1700000000, 0, bytes(4))


# --- identities ------------------------------------------------------------------------------------------------------


def test_identity_is_an_address_of_the_network_and_a_worker() -> None:
    assert len(DEV_ADDRESS) == 97
    identity = parse_identity(f"{DEV_ADDRESS}.rig1", "dev")
    assert (identity.user, identity.worker) == (DEV_ADDRESS, "rig1")
    assert str(identity) == f"{DEV_ADDRESS}.rig1"
    assert parse_identity(DEV_ADDRESS, "testnet").worker == DEFAULT_WORKER
    assert parse_identity(f"{DEV_ADDRESS.upper()}.rig1", "dev").user == DEV_ADDRESS  # one account, one key
    assert parse_identity(f"{DEV_ADDRESS}.a.b", "dev").worker == "a.b"  # split at the first dot
    assert parse_identity("alice.rig1", None) == parse_identity("alice.rig1", None)  # no network: any account


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (f"{MAINNET_ADDRESS}.rig1", ERROR_ADDRESS_WRONG_NETWORK),
        ("alice.rig1", ERROR_INVALID_ADDRESS),
        (f"{DEV_ADDRESS[:-1]}x.rig1", ERROR_INVALID_ADDRESS),  # checksum
        (f"{DEV_ADDRESS}.{'w' * 300}", ERROR_INVALID_WORKER),
        (f"{DEV_ADDRESS}.{'w' * 33}", ERROR_INVALID_WORKER),  # over 0x0002's 32 bytes
        (f"{DEV_ADDRESS}.rig 1", ERROR_INVALID_WORKER),
        (f"{DEV_ADDRESS}.", ERROR_INVALID_WORKER),
        (".rig1", ERROR_INVALID_ADDRESS),
        (f" {DEV_ADDRESS}.rig1", ERROR_INVALID_ADDRESS),
    ],
)
def test_bad_identities_are_refused_with_their_code(text: str, code: str) -> None:
    with pytest.raises(IdentityError) as info:
        parse_identity(text, "dev")
    assert info.value.code == code and info.value.message


# --- the 0x4CCB share TLVs ---------------------------------------------------------------------------------------


def test_share_tlvs_bytes_and_order() -> None:
    full = f"{DEV_ADDRESS}.rig1"
    items = share_tlvs("rig1", full, 0x1234)
    assert items == (
        user_identity_tlv("rig1"),
        Tlv(CKB, FIELD_TYPE_CKB_USER_IDENTITY, full.encode()),
        Tlv(CKB, FIELD_TYPE_CKB_SHARE_TARGET, (0x1234).to_bytes(32, "little")),
    )
    raw = TLV_LIST.encode(items, "t")
    # little-endian headers like 0x0002's: cb 4c | 01 | len (2) | value
    assert raw[9:14] == b"\xcb\x4c\x01" + len(full).to_bytes(2, "little")
    assert len(raw) == (5 + 4) + (5 + 102) + (5 + 32)
    assert read_share_extensions(items, {WORKER, CKB}) == ShareTlvs("rig1", full, 0x1234)
    assert read_share_extensions((), {WORKER, CKB}) == ShareTlvs()
    with pytest.raises(EncodeError):
        ckb_user_identity_tlv("x" * 256)
    with pytest.raises(EncodeError):
        ckb_user_identity_tlv("")
    with pytest.raises(EncodeError):
        ckb_share_target_tlv(0)
    with pytest.raises(EncodeError):
        ckb_share_target_tlv(1 << 256)


def test_0x4ccb_tlv_refusals() -> None:
    ok = ckb_user_identity_tlv(f"{DEV_ADDRESS}.rig1")
    cases: list[tuple[tuple[Tlv, ...], frozenset[int], str]] = [
        ((ok,), frozenset(), ERROR_EXTENSION_NOT_NEGOTIATED),
        ((ok,), frozenset({WORKER}), ERROR_EXTENSION_NOT_NEGOTIATED),
        ((ok, user_identity_tlv("rig1")), frozenset({WORKER, CKB}), ERROR_INVALID_TLV),  # order
        ((ok, ok), frozenset({CKB}), ERROR_INVALID_TLV),
        ((Tlv(CKB, FIELD_TYPE_CKB_USER_IDENTITY, b""),), frozenset({CKB}), ERROR_INVALID_USER_IDENTITY),
        ((Tlv(CKB, FIELD_TYPE_CKB_USER_IDENTITY, b"a" * 300),), frozenset({CKB}), ERROR_INVALID_USER_IDENTITY),
        ((Tlv(CKB, FIELD_TYPE_CKB_USER_IDENTITY, b"\xc3\x28"),), frozenset({CKB}), ERROR_INVALID_USER_IDENTITY),
        ((Tlv(CKB, FIELD_TYPE_CKB_SHARE_TARGET, b"\x01" * 31),), frozenset({CKB}), ERROR_INVALID_SHARE_TARGET),
        ((Tlv(CKB, FIELD_TYPE_CKB_SHARE_TARGET, bytes(32)),), frozenset({CKB}), ERROR_INVALID_SHARE_TARGET),
    ]
    for items, negotiated, code in cases:
        with pytest.raises(TlvRejected) as info:
            read_share_extensions(items, negotiated)
        assert info.value.error_code == code, (items, negotiated)


def _negotiated(requested: tuple[int, ...]) -> tuple[ServerConnection, ClientConnection]:
    server, client = connected(supported_extensions=(WORKER, CKB))
    event = only(server.receive_data(client.send(RequestExtensions(1, requested))))
    assert isinstance(event, ExtensionsNegotiated)
    assert isinstance(only(client.receive_data(event.reply)), ExtensionsNegotiated)
    return server, client


def test_tagged_share_reaches_the_pool_with_account_worker_and_target() -> None:
    server, client = _negotiated((WORKER, CKB))
    channel = open_extended(server, client)
    full = f"{DEV_ADDRESS}.rig1"
    share = dataclasses.replace(SHARE, channel_id=channel.channel_id, tlvs=share_tlvs("rig1", full, 1 << 200))
    event = only(server.receive_data(client.send(share)))
    assert isinstance(event, ShareSubmitted)
    assert (event.user_identity, event.ckb_user_identity, event.share_target) == ("rig1", full, 1 << 200)


def test_0x4ccb_tlvs_on_a_connection_without_0x4ccb_are_refused_both_ways() -> None:
    server, client = _negotiated((WORKER,))
    channel = open_extended(server, client)
    share = dataclasses.replace(SHARE, channel_id=channel.channel_id, tlvs=share_tlvs("rig1", f"{DEV_ADDRESS}.rig1"))
    with pytest.raises(LocalProtocolError, match="did not negotiate"):
        client.send(share)
    event = only(server.receive_data(encode_message(share)))
    assert isinstance(event, Rejected) and event.error_code == ERROR_EXTENSION_NOT_NEGOTIATED
    assert replies([event]) == [SubmitSharesError(channel.channel_id, share.sequence_number, event.error_code)]
    assert not server.closed


# --- the channel's vardiff with identities -------------------------------------------------------------------------


def test_vardiff_of_a_tagged_channel_aims_at_the_slowest_active_worker() -> None:
    # floors out of the way: the slow device (1e4 H/s) is at the default min_hashrate floor, which no easing passes
    settings = VardiffSettings(
        share_interval_s=10, retarget_interval_s=30, tolerance=1.5, min_share_difficulty=1e-9, min_hashrate=1.0
    )
    vd = Vardiff(settings, target_for_hashrate(1e6, 10), network_target=1)
    start = 1000.0
    vd._window_start = start
    slow, fast = 1e4, 1e5  # H/s; each device shares once per 10 s at its own target (work = rate x 10 s)
    for i in range(3):
        vd.on_share(start + 1 + 10 * i, work=slow * 10, worker="a.slow")
        vd.on_share(start + 2 + 10 * i, work=fast * 10, worker="a.fast")
    assert vd.active_workers(start + 20) == 2 and sorted(vd.recent_workers(start + 20)) == ["a.fast", "a.slow"]
    new = vd.maybe_retarget(start + 30)
    assert new is not None
    # the slow device's rate (3 x 1e5 hashes / 30 s = 1e4 H/s) at one share per 10 s
    assert TWO_256 / new == pytest.approx(slow * 10, rel=0.01)
    # a window where an active worker found nothing eases the target (at least 2x), the others notwithstanding
    for i in range(3):
        vd.on_share(start + 31 + 10 * i, work=fast * 10, worker="a.fast")
    eased = vd.maybe_retarget(start + 62)
    assert eased is not None and eased >= 2 * new
    # a worker silent for ACTIVE_WINDOWS windows is gone: it no longer holds the target down
    assert vd.recent_workers(start + 31 + Vardiff.ACTIVE_WINDOWS * 30) == ["a.fast"]


def test_vardiff_without_identities_is_unchanged() -> None:
    settings = VardiffSettings(share_interval_s=10, retarget_interval_s=30, tolerance=1.5)
    vd = Vardiff(settings, target_for_hashrate(1e6, 10), network_target=1)
    vd._window_start = 0.0
    for i in range(6):
        vd.on_share(float(5 * i))
    assert vd.active_workers(30.0) == 0
    new = vd.maybe_retarget(30.0)  # 6 shares in 30 s at 1e7 hashes each: 2e6 H/s -> 2e7 hashes per share
    assert new is not None and TWO_256 / new == pytest.approx(2e7, rel=0.01)
