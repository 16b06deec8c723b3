"""The public API's pure parts: address checks, rate limiter, answer cache, hashrate windows, the OpenAPI
document, the [web] settings. The HTTP side against a real Redis is tests/integration/test_web_api.py."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

import pytest
from openapi_spec_validator import validate as validate_spec

from ckbpool.ckb.address import encode_address, secp256k1_lock
from ckbpool.pool.config import ConfigError, load_pool_config
from ckbpool.web.api import ApiError, check_address
from ckbpool.web.app import STATIC_FILES, page_url
from ckbpool.web.books import ROLL_DELAY_MIN, rates_from
from ckbpool.web.limits import AnswerCache, RateLimiter, client_key
from ckbpool.web.models import openapi_document

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def address(network: str = "dev") -> str:
    return encode_address(secp256k1_lock(secrets.token_bytes(20)), network)


# -- addresses ------------------------------------------------------------------------------------------------
def test_a_dev_address_is_accepted_and_keyed_in_lower_case() -> None:
    a = address()
    assert check_address(a, "dev") == a
    assert check_address(a.upper(), "dev") == a  # bech32 in capitals is the same address


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("hello", "invalid-address", "not a CKB address"),
        ("", "invalid-address", "empty"),
        (" ckt1qq", "invalid-address", "spaces"),
        ("x" * 5000, "invalid-address", "too long"),
    ],
)
def test_bad_addresses_are_400_with_the_reason(text: str, error: str, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_address(text, "dev")
    assert caught.value.status == 400 and caught.value.error == error
    assert words in caught.value.detail


def test_a_mainnet_address_on_a_dev_pool_is_named_as_such() -> None:
    with pytest.raises(ApiError) as caught:
        check_address(address("mainnet"), "dev")
    assert caught.value.error == "address-wrong-network" and "(dev)" in caught.value.detail


def test_a_broken_checksum_is_refused() -> None:
    a = address()
    broken = a[:-1] + ("q" if a[-1] != "q" else "p")
    with pytest.raises(ApiError) as caught:
        check_address(broken, "dev")
    assert caught.value.status == 400 and "not a CKB address" in caught.value.detail


# -- rate limit -----------------------------------------------------------------------------------------------
def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=5, clock=clock)
    assert [limiter.take("a") for _ in range(5)] == [0.0] * 5
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert RateLimiter.retry_after(wait) == "1"
    assert limiter.take("b") == 0.0, "another client has its own bucket"
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    clock.now += 100
    assert [limiter.take("a") for _ in range(5)] == [0.0] * 5, "refilled up to the burst, not beyond"
    assert limiter.take("a") > 0
    assert limiter.limited == 3


def test_the_limiter_forgets_the_least_recent_clients_beyond_its_bound() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_clients=3, clock=Clock())
    for key in "abcd":
        limiter.take(key)
    assert limiter.take("a") == 0.0, "a was forgotten (full bucket again)"
    assert limiter.take("d") > 0, "d is remembered"


def test_client_keys_group_ipv6_by_64_and_believe_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = frozenset({"10.0.0.5"})
    assert client_key("203.0.113.9", None, trusted) == "203.0.113.9"
    assert client_key("2001:db8:1:2::1", None, trusted) == client_key("2001:db8:1:2:ffff::9", None, trusted)
    assert client_key("2001:db8:1:2::1", None, trusted) != client_key("2001:db8:1:3::1", None, trusted)
    assert client_key("::ffff:198.51.100.7", None, trusted) == "198.51.100.7"
    assert client_key("203.0.113.9", "1.2.3.4", trusted) == "203.0.113.9", "an untrusted peer's header is ignored"
    assert client_key("10.0.0.5", "1.2.3.4, 198.51.100.1", trusted) == "198.51.100.1"


# -- cache ----------------------------------------------------------------------------------------------------
async def test_the_cache_computes_once_for_concurrent_callers_and_expires() -> None:
    clock = Clock()
    cache = AnswerCache(5.0, clock=clock)
    calls = 0
    release = asyncio.Event()

    async def compute() -> tuple[int, bytes]:
        nonlocal calls
        calls += 1
        await release.wait()
        return 200, b"x%d" % calls

    waiters = [asyncio.create_task(cache.get("k", compute)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert {await w for w in waiters} == {(200, b"x1")}
    assert calls == 1
    clock.now += 4.9
    assert await cache.get("k", compute) == (200, b"x1")
    clock.now += 0.2
    assert await cache.get("k", compute) == (200, b"x2")


async def test_the_cache_keeps_no_failures() -> None:
    cache = AnswerCache(5.0, clock=Clock())

    async def broken() -> tuple[int, bytes]:
        raise ConnectionError("redis away")

    async def server_error() -> tuple[int, bytes]:
        return 503, b"later"

    async def fine() -> tuple[int, bytes]:
        return 200, b"ok"

    with pytest.raises(ConnectionError):
        await cache.get("k", broken)
    assert await cache.get("k", server_error) == (503, b"later")
    assert await cache.get("k", fine) == (200, b"ok")


# -- hashrate windows -----------------------------------------------------------------------------------------
def test_a_steady_rate_reads_the_same_in_every_window() -> None:
    rate = 1234.0
    now = 1_700_000_000.0 + 37 * 60 + 20  # 37 min 20 s into an hour
    current = int(now // 60)
    minutes = [rate * 60] * 60
    # the rolled hours hold only rolled minutes; the current hour's unrolled ones come from `minutes`
    hours = [rate * 3600] * 24 + [rate * 60 * ((current - ROLL_DELAY_MIN + 1) - (current // 60) * 60)]
    rates = rates_from(minutes, hours, now)
    assert rates.windows["10m"] == pytest.approx(rate)
    assert rates.windows["1h"] == pytest.approx(rate)
    # the current minute is counted whole while only 20 s of it passed, so 24 h reads a hair high
    assert rates.windows["24h"] == pytest.approx(rate, rel=1e-3)
    assert len(rates.minutes) == 60 and len(rates.hours) == 24
    assert rates.hours[0] == pytest.approx(rate)


def test_an_idle_address_reads_zero_and_a_recent_burst_only_in_short_windows() -> None:
    now = 1_700_000_000.0
    minutes = [0.0] * 59 + [600.0]
    rates = rates_from(minutes, [0.0] * 25, now)
    assert rates.windows["10m"] == pytest.approx(1.0)
    assert rates.windows["1h"] == pytest.approx(600 / 3600)
    assert rates.windows["24h"] == pytest.approx(600 / 86400)


# -- OpenAPI and settings --------------------------------------------------------------------------------------
def test_the_openapi_document_is_valid_openapi_31() -> None:
    doc = openapi_document()
    validate_spec(doc)
    assert set(doc["paths"]) == {"/api/pool", "/api/blocks", "/api/address/{address}"}
    for name in ("PoolOverview", "AddressStats", "BlockList", "Problem", "Worker", "Balance", "Payment"):
        assert name in doc["components"]["schemas"], name


def test_web_settings_are_off_by_default_and_strict() -> None:
    config = load_pool_config(data={})
    assert config.web.enabled is False
    assert page_url(config.web) == "http://127.0.0.1:8280/"
    wild = load_pool_config(data={"web": {"enabled": True, "listen_host": "0.0.0.0", "listen_port": 80}})
    assert page_url(wild.web) == "http://127.0.0.1:80/"
    published = load_pool_config(data={"web": {"public_url": "https://pool.example/"}})
    assert page_url(published.web) == "https://pool.example/"
    with pytest.raises(ConfigError, match=r"web\.rate_limit_per_s"):
        load_pool_config(data={"web": {"rate_limit_per_s": 0}})
    with pytest.raises(ConfigError, match=r"web\.colour"):
        load_pool_config(data={"web": {"colour": "red"}})


def test_the_page_is_as_small_as_the_docs_say() -> None:
    """docs/web.md gives the page's size (its files, uncompressed, as served): it must stay the measured one,
    within half a KB, so that "small" stays a figure and not a claim."""
    static = Path(__file__).resolve().parents[2] / "src" / "ckbpool" / "web" / "static"
    names = ["index.html", *STATIC_FILES]
    total = sum((static / name).stat().st_size for name in names)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "web.md").read_text()
    found = re.search(r"`ckbpool/web/static/`, ~(\d+) KB together", docs)
    assert found, "docs/web.md no longer gives the page's size"
    assert abs(total / 1000 - int(found.group(1))) <= 0.5, (
        f"the page's files are {total:,} bytes; docs/web.md says ~{found.group(1)} KB"
    )
