"""The V1 proxy's abuse limits as pure logic: the token bucket, the miner-id space, per-IP counts, the phase
deadlines of a connection, refusals at accept and on id exhaustion, the config's defaults and errors.

The same limits against real sockets, a real pool and a real ckb node: tests/integration/test_proxy_abuse.py."""

from __future__ import annotations

import json

import pytest

from ckbpool.proxy.config import ProxyConfigError, load_proxy_config
from ckbpool.proxy.downstream import V1Connection, V1Server
from ckbpool.proxy.limits import FD_RESERVE, ExtranonceIds, PerIpCount, Refusal, TokenBucket, connection_cap
from ckbpool.proxy.metrics import ProxyCollector
from ckbpool.proxy.service import Proxy
from ckbpool.sv2.events import ChannelInfo, ChannelKind
from ckbpool.v1.errors import StratumErrorCode

pytestmark = pytest.mark.unit

BASE = {"identity": "aggregated", "upstream": {"user_identity": "acct.proxy", "noise": False}}


def config(**v1: object) -> dict[str, object]:
    return {**BASE, "http": {"enabled": False}, "v1": {"listen_host": "127.0.0.1", "listen_port": 0, **v1}}


# --- token bucket ---------------------------------------------------------------------------------------------


def test_token_bucket_allows_the_burst_then_the_rate_and_refuses_a_flood() -> None:
    bucket = TokenBucket(rate=10.0, burst=20, now=0.0)
    assert bucket.take(20, now=0.0)  # the whole burst at once
    assert not bucket.take(1, now=0.0)  # nothing left
    bucket = TokenBucket(rate=10.0, burst=20, now=0.0)
    # a steady 10 lines/s for a minute is always fine
    assert all(bucket.take(1, now=t / 10) for t in range(600))
    # 20 lines/s is not: the burst runs out after ~2 s
    flood = TokenBucket(rate=10.0, burst=20, now=0.0)
    results = [flood.take(1, now=t / 20) for t in range(200)]
    assert not all(results)
    assert results.index(False) > 20  # the burst was honoured first


def test_token_bucket_refills_to_the_burst_only() -> None:
    bucket = TokenBucket(rate=100.0, burst=5, now=0.0)
    assert bucket.take(5, now=0.0)
    assert bucket.take(5, now=1000.0)  # a long pause refills, but only up to the burst
    assert not bucket.take(1, now=1000.0)


# --- miner ids ------------------------------------------------------------------------------------------------


def test_ids_fresh_first_then_oldest_freed_and_none_when_all_are_held() -> None:
    ids = ExtranonceIds(4)
    got = [ids.allocate() for _ in range(4)]
    assert got == [0, 1, 2, 3]
    assert ids.allocate() is None and ids.available == 0
    ids.release(2)
    ids.release(0)
    assert ids.in_use == 2 and ids.available == 2
    assert ids.allocate() == 2  # given back first, reused first
    assert ids.allocate() == 0
    assert ids.allocate() is None


def test_ids_reset_starts_a_new_space_and_drops_ids_of_the_old_one() -> None:
    ids = ExtranonceIds(256)
    for _ in range(10):
        ids.allocate()
    ids.reset(2)
    assert ids.capacity == 2 and ids.in_use == 0
    ids.release(200)  # from the old space: not a valid id of the new one
    assert [ids.allocate(), ids.allocate(), ids.allocate()] == [0, 1, None]


def test_ids_churn_never_exhausts_the_space() -> None:
    ids = ExtranonceIds(3)
    for _ in range(10_000):
        miner_id = ids.allocate()
        assert miner_id is not None
        ids.release(miner_id)
    assert ids.in_use == 0 and ids.available == 3


# --- per IP ---------------------------------------------------------------------------------------------------


def test_per_ip_counts_each_address_up_to_the_limit() -> None:
    count = PerIpCount(2)
    assert count.add("10.0.0.1") and count.add("10.0.0.1")
    assert not count.add("10.0.0.1")
    assert count.add("10.0.0.2")
    count.remove("10.0.0.1")
    assert count["10.0.0.1"] == 1 and count.add("10.0.0.1")
    for _ in range(3):
        count.remove("10.0.0.1")
    count.remove("10.0.0.2")
    assert len(count) == 0  # no address lingers once its connections are gone


def test_the_connection_cap_stays_below_the_descriptor_limit() -> None:
    assert connection_cap(100_000, 20_000) == 20_000 - FD_RESERVE  # accept must never hit EMFILE
    assert connection_cap(5_000, 1 << 20) == 5_000  # the configured cap when descriptors are plenty
    assert connection_cap(100_000, 10) == 1  # absurd limits still leave a usable port


# --- config ---------------------------------------------------------------------------------------------------


def test_config_defaults_are_generous_for_farms_and_bounded() -> None:
    v1 = load_proxy_config(data=config()).v1
    assert v1.idle_timeout_s == 900.0
    assert 0 < v1.subscribe_timeout_s <= 60 and 0 < v1.authorize_timeout_s <= 60
    assert v1.max_connections_per_ip >= 1024  # a farm behind one NAT
    assert v1.max_connections_per_ip <= v1.max_connections
    assert v1.message_burst >= v1.max_messages_per_second


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_connections_per_ip", 0),
        ("idle_timeout_s", 0),
        ("subscribe_timeout_s", -1),
        ("authorize_timeout_s", 0),
        ("max_messages_per_second", 0),
        ("message_burst", 0),
    ],
)
def test_config_rejects_nonsense_limits_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(ProxyConfigError) as info:
        load_proxy_config(data=config(**{key: value}))
    assert f"v1.{key}" in str(info.value)


# --- the server's policy (no sockets: a connection object without a transport) -----------------------------


def channel(prefix: bytes) -> ChannelInfo:
    return ChannelInfo(1, ChannelKind.EXTENDED, "acct.proxy", 0.0, (1 << 255), prefix, 16 - len(prefix), 0)


def connection(server: V1Server, host: str) -> V1Connection:
    conn = V1Connection(server)
    conn.host = host
    conn.peer = (host, 1234)
    return conn


def test_caps_are_counted_at_accept_and_give_the_reason() -> None:
    server = V1Server(load_proxy_config(data=config(max_connections=3, max_connections_per_ip=2)))
    a1, a2, a3, b1, c1 = (connection(server, h) for h in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"))
    assert server.add_connection(a1) is None and server.add_connection(a2) is None
    assert server.add_connection(a3) is Refusal.PER_IP
    assert server.add_connection(b1) is None
    assert server.add_connection(c1) is Refusal.MAX_CONNECTIONS  # counted before any line is read
    server.remove_connection(a1)
    assert server.add_connection(a3) is None  # a freed slot is usable again, for that address too


def test_no_free_miner_id_refuses_the_subscribe_closes_and_a_closed_connection_gives_its_id_back() -> None:
    # a 7-byte pool prefix and extranonce2_size 9: 16 - 7 - 9 = 0 id bytes, one miner id
    server = V1Server(load_proxy_config(data=config(extranonce2_size=9)))
    server.upstream_up(server.upstream, channel(b"\x01" * 7))
    assert server.ids.capacity == 1
    first, second = connection(server, "10.0.0.1"), connection(server, "10.0.0.2")
    for conn in (first, second):
        assert server.add_connection(conn) is None
        conn.session.receive_data(b'{"id":1,"method":"mining.subscribe","params":["x"]}\n')
    assert server._answer_subscribe(first, 1)  # the subscribe answer
    assert first.miner_id == 0 and first.subscribed_at is not None
    assert server._answer_subscribe(second, 1) == []
    assert second.closed and second not in server.connections
    assert server.refusals[Refusal.NO_MINER_ID] == 1
    # the collector carries the refusal by reason and the free-id gauge (a metric, not only a log line)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in ProxyCollector(_ProxyView(server)).collect()  # type: ignore[arg-type]
        for s in family.samples
    }
    assert samples[("ckbpool_proxy_v1_refusals_total", (("reason", "no_miner_id"),))] == 1.0
    assert samples[("ckbpool_proxy_v1_miner_ids_free", ())] == 0.0
    first.close()
    assert server.ids.available == 1 and server.stats()["miner_ids"] == {"in_use": 0, "capacity": 1}
    third = connection(server, "10.0.0.3")
    assert server.add_connection(third) is None
    third.session.receive_data(b'{"id":7,"method":"mining.subscribe","params":[]}\n')
    line = server._answer_subscribe(third, 7)[0]
    assert json.loads(line)["error"] is None and third.miner_id == 0


def test_the_refusal_answer_is_a_clear_stratum_error() -> None:
    server = V1Server(load_proxy_config(data=config(extranonce2_size=9)))
    server.upstream_up(server.upstream, channel(b"\x02" * 7))
    holder, refused = connection(server, "10.0.0.1"), connection(server, "10.0.0.1")
    written: list[bytes] = []
    for conn in (holder, refused):
        server.add_connection(conn)
        conn.session.receive_data(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
    server._answer_subscribe(holder, 1)
    refused.write = written.append  # type: ignore[method-assign]  # capture what would go on the wire
    server._answer_subscribe(refused, 1)
    error = json.loads(written[0])["error"]
    assert error[0] == StratumErrorCode.INTERNAL_ERROR and "no free extranonce1" in error[1]


def test_a_new_prefix_closes_everyone_and_starts_a_fresh_id_space() -> None:
    server = V1Server(load_proxy_config(data=config(extranonce2_size=8)))
    server.upstream_up(server.upstream, channel(b"\x01" * 7))  # 1 id byte: 256 ids
    conns = [connection(server, "10.0.0.1") for _ in range(5)]
    for conn in conns:
        server.add_connection(conn)
        conn.session.receive_data(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
        server._answer_subscribe(conn, 1)
    assert server.ids.in_use == 5
    server.upstream_up(server.upstream, channel(b"\x09" * 7))
    assert all(c.closed for c in conns) and not server.connections and len(server.per_ip) == 0
    assert server.ids.in_use == 0 and server.ids.capacity == 256


def test_each_phase_has_its_own_deadline() -> None:
    server = V1Server(load_proxy_config(data=config(subscribe_timeout_s=5, authorize_timeout_s=7, idle_timeout_s=100)))
    conn = connection(server, "10.0.0.1")
    conn.connected_at = conn.last_seen = 1000.0
    assert conn.deadline() == (1005.0, Refusal.SUBSCRIBE_TIMEOUT)
    conn.session.receive_data(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
    conn.last_seen = 1001.0
    # subscribed but held back (no channel from the pool yet, no id taken): only silence ends it
    assert conn.deadline() == (1101.0, Refusal.IDLE_TIMEOUT)
    conn.session.accept_subscribe(1, b"\x00" * 6, 10)
    conn.subscribed_at = 1002.0
    assert conn.deadline() == (1009.0, Refusal.AUTHORIZE_TIMEOUT)
    conn.session.accept_authorize(2, "acct.rig1")
    conn.last_seen = 1003.0
    assert conn.deadline() == (1103.0, Refusal.IDLE_TIMEOUT)
    conn.last_seen = 2000.0  # every line moves the idle deadline
    assert conn.deadline() == (2100.0, Refusal.IDLE_TIMEOUT)


def test_the_proxy_metrics_carry_every_refusal_reason_from_the_start() -> None:
    proxy = Proxy(load_proxy_config(data=config()))
    reasons = {
        s.labels["reason"]
        for family in proxy.registry.collect()
        if family.name == "ckbpool_proxy_v1_refusals"
        for s in family.samples
    }
    assert reasons == {r.value for r in Refusal}


class _ProxyView:
    """What ProxyCollector reads of a Proxy: its two servers (here only the V1 one)."""

    def __init__(self, v1: V1Server) -> None:
        self.v1 = v1
        self.getwork = None
