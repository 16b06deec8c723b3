"""The miners' page in a real browser, on a live pool: real dev ckb node -> real Pool (Redis books, [web] on)
-> V1 proxy (per-worker identity) -> V1 CPU miners under two addresses, and one of them also mining SOLO with an
SV2 CPU miner (``solo:<address>.solorig``, straight to the pool) whose figures must appear apart from its PPLNS
ones. Headless Chromium (Debian's, driven by
Selenium through Debian's chromedriver) loads the overview and both address pages; the test reads the DOM
against the books in Redis and the node, takes screenshots (desktop and phone width), and checks from the
browser's own network log that no request left 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from test_pool_e2e import pool_config, pool_keys, pool_node  # noqa: F401  (pool_node is a fixture)
from test_proxy_worker_identity import dev_address, proxy_config, settle_accounting

from ckbpool.ckb.node import CkbNode
from ckbpool.ckb.target import compact_to_target, target_to_difficulty
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.accounting import PREFIX
from ckbpool.pool.service import Pool
from ckbpool.proxy import Proxy
from support.redis import RedisServer

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MINING_S = 20.0
#: screenshots and the network log land here (printed by the test); build/artifacts/web by default
ARTIFACTS = Path(os.environ.get("CKBPOOL_ARTIFACTS", "build/artifacts")) / "web"


async def tip_header(rpc_url: str) -> dict[str, Any]:
    """The node's ``get_tip_header``, asked over JSON-RPC directly (not through the pool's client)."""
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "get_tip_header", "params": []})
    header: dict[str, Any] = answer.json()["result"]
    return header


def shown_number(text: str) -> float:
    """A figure as the page shows it ("123456", "1.23 M") back to a number."""
    units = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18, "Z": 1e21}
    value, _, unit = text.partition(" ")
    return float(value) * units.get(unit, 1.0)


def _need_chromium() -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make deps installs them)")
    pytest.importorskip("selenium", reason="selenium is a dev dependency (pip install -e '.[dev]')")


def browse(base: str, addresses: list[str], shots: Path) -> dict[str, Any]:
    """Load the overview and each address page in headless Chromium; return what the DOM shows and every URL
    the browser requested. Blocking (Selenium): run it in a thread while the pool serves."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="ckbpool-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        "--window-size=1280,1400",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    out: dict[str, Any] = {"urls": [], "console": [], "pages": {}}
    try:

        def loaded(selector: str) -> None:
            WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, selector))

        def cells(selector: str) -> list[dict[str, str]]:
            rows = []
            for row in driver.find_elements(By.CSS_SELECTOR, selector):
                values = {td.get_attribute("data-field") or "": td.text for td in row.find_elements(By.TAG_NAME, "td")}
                values["data-hash"] = row.get_attribute("data-hash") or ""
                values["data-worker"] = row.get_attribute("data-worker") or ""
                hps = row.find_elements(By.CSS_SELECTOR, "td[data-field='hashrate-10m']")
                values["hps"] = (hps[0].get_attribute("data-hps") or "") if hps else ""
                rows.append(values)
            return rows

        driver.get(base + "/")
        loaded("body[data-loaded]")
        out["pages"]["overview"] = {
            "hashrate": driver.find_element(By.ID, "pool-hashrate-10m").text,
            "miners": driver.find_element(By.ID, "pool-miners").text,
            "height": driver.find_element(By.ID, "network-height").text,
            "difficulty": driver.find_element(By.ID, "network-difficulty").text,
            "difficulty_value": driver.find_element(By.ID, "network-difficulty").get_attribute("data-value"),
            "blocks": cells("#pool-blocks tbody tr[data-hash]"),
            "chart": len(driver.find_elements(By.CSS_SELECTOR, "#pool-chart svg polyline")),
        }
        driver.save_screenshot(str(shots / "overview.png"))
        for index, address in enumerate(addresses):
            # the search box, as a miner would use it
            box = driver.find_element(By.ID, "search-address")
            box.clear()
            box.send_keys(address)
            driver.find_element(By.CSS_SELECTOR, "#search button").click()
            WebDriverWait(driver, 30).until(lambda d, a=address: d.current_url.endswith("/address/" + a))
            loaded("#workers tbody tr[data-worker]")
            out["pages"][address] = {
                "address": driver.find_element(By.ID, "account-address").text,
                "accepted": driver.find_element(By.ID, "account-accepted").text,
                "hashrate": driver.find_element(By.ID, "account-hashrate-10m").text,
                "workers": cells("#workers tbody tr[data-worker]"),
                "blocks": cells("#account-blocks tbody tr[data-hash]"),
                "solo_hidden": driver.find_element(By.ID, "solo").get_attribute("hidden") is not None,
                "solo_accepted": driver.find_element(By.ID, "solo-accepted").get_attribute("textContent"),
                "solo_workers": cells("#solo-workers tbody tr[data-worker]"),
                "solo_blocks": cells("#solo-blocks tbody tr[data-hash]"),
                "error_hidden": driver.find_element(By.ID, "error").get_attribute("hidden") is not None,
            }
            driver.save_screenshot(str(shots / f"address-{index}.png"))
            if out["pages"][address]["solo_hidden"] is False:
                driver.execute_script("document.getElementById('solo').scrollIntoView()")
                driver.save_screenshot(str(shots / f"address-{index}-solo.png"))
        # a phone: the same page must fit the width (no sideways scrolling of the page itself)
        driver.set_window_size(390, 844)
        driver.get(base + "/address/" + addresses[0])
        loaded("#workers tbody tr[data-worker]")
        out["phone_overflow"] = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        driver.save_screenshot(str(shots / "address-phone.png"))
        # an address nobody mined to: the page says so
        driver.get(base + "/address/" + dev_address())
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "error").text)
        out["unknown_error"] = driver.find_element(By.ID, "error").text
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                out["urls"].append(message["params"]["request"]["url"])
        out["console"] = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return out


async def test_the_page_shows_each_address_its_own_books_in_chromium(
    pool_node: CkbNode,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    _need_chromium()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    credentials, authority = pool_keys()
    config = pool_config(
        pool_node,
        tmp_path,
        vardiff={"share_interval_s": 2.0, "retarget_interval_s": 5.0, "initial_hashrate": 1e5},
        redis={"url": redis_server.url},
        web={"enabled": True, "listen_host": "127.0.0.1", "listen_port": 0, "cache_ttl_s": 0},
    )
    config = config.model_copy(update={"stratum": config.stratum.model_copy(update={"require_address_identity": True})})
    alice, bob = dev_address(), dev_address()
    usernames = [f"{alice}.rig1", f"{alice}.rig2", f"{bob}.solo"]
    shots = ARTIFACTS.resolve()
    shots.mkdir(parents=True, exist_ok=True)
    async with Pool(config, credentials=credentials) as pool:
        assert pool.web_server is not None and pool.status_server is not None
        base = f"http://127.0.0.1:{pool.web_server.port}"
        pc = proxy_config(
            pool, authority, f"{dev_address()}.proxy",
            vardiff={"initial_difficulty": 4e4, "share_interval_s": 2.0, "retarget_interval_s": 5.0},
        )  # fmt: skip
        async with Proxy(pc) as proxy:
            await proxy.wait_upstream(30)
            assert proxy.v1 is not None
            host, port = proxy.v1.address
            assert pool.server is not None
            solo_miner = Sv2Miner(
                *pool.server.address, f"solo:{alice}.solorig", authority_public_key=authority, extended=True
            )
            solo_task = asyncio.create_task(solo_miner.run(duration=MINING_S))
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ckbpool.miner.v1", f"{host}:{port}", "--usernames", *usernames,
                "--duration", str(MINING_S), "--hashing-threads", "2", "--chunk", "10000",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(process.communicate(), MINING_S + 90)
            assert process.returncode == 0
            assert len(json.loads(out)) == len(usernames)
            await asyncio.wait_for(solo_task, 60)
            assert solo_miner.stats.accepted >= 1, "the SOLO miner had no accepted share"
            await settle_accounting(pool)
            assert pool.web_server.rollup is not None
            await pool.web_server.rollup.run_once()  # the worker index of the minutes just mined (else within 10 s)

            # the books and the node, read directly
            redis = pool.web_server.redis
            assert redis is not None
            books = {}
            for name in usernames:
                raw = await redis.hgetall(f"{PREFIX}worker:{name}")
                books[name] = {k.decode(): v.decode() for k, v in raw.items()}
            user_books = {}
            for address in (alice, bob, f"solo:{alice}"):
                raw = await redis.hgetall(f"{PREFIX}user:{address}")
                user_books[address] = {k.decode(): v.decode() for k, v in raw.items()}
            raw = await redis.hgetall(f"{PREFIX}worker:solo:{alice}.solorig")
            solo_books = {k.decode(): v.decode() for k, v in raw.items()}
            logged = [json.loads(x) for x in await redis.lrange(f"{PREFIX}blocks", 0, -1)]
            accepted = [b for b in logged if b["status"] == "accepted"]
            pplns_accepted = [b for b in accepted if not b["user"].startswith("solo:")]
            assert pplns_accepted, "the PPLNS miners found no block"
            newest = pplns_accepted[0]
            async with pool_node.client() as client:
                header = await client.get_header(bytes.fromhex(newest["block_hash"]))
            assert header is not None and header["hash"] == "0x" + newest["block_hash"], "the node has the block"

            # the operator's endpoints stay on their own listener
            async with httpx.AsyncClient(timeout=10) as http:
                status = (await http.get(f"http://127.0.0.1:{pool.status_server.port}/status")).json()
                assert status["web"] == base + "/"
                for path in ("/status", "/metrics", "/health"):
                    assert (await http.get(base + path)).status_code == 404, path

            tip_before = await tip_header(pool_node.config.rpc_url)
            seen = await asyncio.to_thread(browse, base, [alice, bob], shots)
            async with httpx.AsyncClient(timeout=10) as http:
                api_pool = (await http.get(base + "/api/pool")).json()
            tip = await tip_header(pool_node.config.rpc_url)
    assert tip == tip_before, "the chain moved while the browser read the page (nothing should mine now)"
    print(f"\nscreenshots and network log in {shots}")
    (shots / "network.json").write_text(json.dumps(seen["urls"], indent=1))

    # nothing but this pool's own listener, from the first request to the last
    assert seen["urls"], "the network log is empty"
    # (the browser's own pages -- chrome://, data:, about: -- are not network requests; anything else must be ours)
    local_schemes = {"chrome", "data", "about", "blob"}
    foreign = [
        u for u in seen["urls"] if urlsplit(u).scheme not in local_schemes and urlsplit(u).hostname != "127.0.0.1"
    ]
    assert any(urlsplit(u).scheme == "http" for u in seen["urls"])
    assert foreign == [], foreign
    assert any(u.endswith("/api/pool") for u in seen["urls"]) and any("/api/address/" in u for u in seen["urls"])
    assert seen["console"] == [] or all("404" in m for m in seen["console"]), seen["console"]

    overview = seen["pages"]["overview"]
    # the books' online count is by account: solo:<alice> is one next to <alice> and <bob>
    assert overview["miners"] in ("1", "2", "3") and not overview["hashrate"].startswith("0.00")
    # the network figures are the node's tip: height, and difficulty from its compact target as the pool computes it
    network_difficulty = target_to_difficulty(compact_to_target(int(tip["compact_target"], 16)))
    print(f"node tip {int(tip['number'], 16)}, difficulty {network_difficulty}; the page shows {overview['height']}, "
          f"{overview['difficulty']!r} ({overview['difficulty_value']})")  # fmt: skip
    assert int(tip["number"], 16) >= newest["height"]
    assert api_pool["network"]["height"] == int(tip["number"], 16) and api_pool["network"]["tip_hash"] == tip["hash"]
    assert api_pool["network"]["difficulty"] == str(network_difficulty)
    assert overview["height"] == str(int(tip["number"], 16)), (overview["height"], tip["number"])
    assert overview["difficulty_value"] == str(network_difficulty), (overview["difficulty_value"], network_difficulty)
    assert shown_number(overview["difficulty"]) == pytest.approx(network_difficulty, rel=0.01), overview["difficulty"]
    assert overview["chart"] == 1
    assert "0x" + newest["block_hash"] in {b["data-hash"] for b in overview["blocks"]}, "the newest block is listed"

    for address, names in ((alice, ["rig1", "rig2"]), (bob, ["solo"])):
        page = seen["pages"][address]
        assert page["address"] == address and page["error_hidden"]
        rows = {row["data-worker"]: row for row in page["workers"]}
        mined_names = [n for n in names if int(books[f"{address}.{n}"].get("accepted", 0)) > 0]
        assert sorted(rows) == sorted(mined_names), "the address's workers, and no one else's"
        assert mined_names, f"{address} had no accepted share"
        for name in mined_names:
            assert rows[name]["accepted"] == books[f"{address}.{name}"]["accepted"], "accepted shares == the books"
            assert rows[name]["rejected"] == books[f"{address}.{name}"].get("rejected", "0")
            assert float(rows[name]["hps"]) > 0, "non-zero hashrate"
        assert page["accepted"] == user_books[address]["accepted"]
        assert not page["hashrate"].startswith("0.00 H/s")
        found_here = {"0x" + b["block_hash"] for b in accepted if b["user"] == address}
        listed = {b["data-hash"] for b in page["blocks"]}
        assert listed <= {"0x" + b["block_hash"] for b in logged if b["user"] == address}, "only its own blocks"
        if found_here:
            assert listed, f"{address} found blocks but its page lists none"
    # SOLO: on alice's page only, in its own section, equal to the books of solo:<alice>
    solo_page, plain_page = seen["pages"][alice], seen["pages"][bob]
    assert not solo_page["solo_hidden"] and plain_page["solo_hidden"]
    assert [row["data-worker"] for row in solo_page["solo_workers"]] == ["solorig"]
    assert solo_page["solo_workers"][0]["accepted"] == solo_books["accepted"]
    assert float(solo_page["solo_workers"][0]["hps"]) > 0
    assert solo_page["solo_accepted"] == user_books[f"solo:{alice}"]["accepted"]
    assert "solorig" not in {row["data-worker"] for row in solo_page["workers"]}, "SOLO work is not PPLNS work"
    solo_logged = {"0x" + b["block_hash"] for b in logged if b["user"] == f"solo:{alice}"}
    assert {b["data-hash"] for b in solo_page["solo_blocks"]} <= solo_logged
    if any(b["user"] == f"solo:{alice}" for b in accepted):
        assert solo_page["solo_blocks"], "alice found a SOLO block but her page lists none"
    finder_page = seen["pages"][newest["user"]]
    assert "0x" + newest["block_hash"] in {b["data-hash"] for b in finder_page["blocks"]}
    assert seen["phone_overflow"] <= 0, "the page scrolls sideways on a phone"
    assert "No shares from this address" in seen["unknown_error"]
    for name in ("overview.png", "address-0.png", "address-0-solo.png", "address-1.png", "address-phone.png"):
        assert (shots / name).stat().st_size > 10_000, name
