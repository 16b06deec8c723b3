"""`ckbpool keys rotate` + SIGHUP on a running pool (issue 18 item 6): the pool reloads its key and certificate
without a restart; the miner connected before keeps mining on its connection (no reconnect), a miner connecting
after gets the new certificate, the expiry metric follows, and a bad file keeps the current credentials."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from test_pool_e2e import pool_config, pool_node  # noqa: F401  (module-scoped node fixture)

from ckbpool.ckb.node import CkbNode
from ckbpool.miner.sv2 import Sv2Miner
from ckbpool.pool.service import Pool
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.keys import main as keys_main
from support.waiting import until

pytestmark = pytest.mark.integration


async def test_rotate_and_sighup_reload_without_dropping_miners(pool_node: CkbNode, tmp_path: Path) -> None:  # noqa: F811
    secrets = tmp_path / "secrets"
    assert keys_main(["generate", "--out-dir", str(secrets), "--valid-days", "20"]) == 0
    authority = (secrets / "authority.pub").read_text().strip()
    config = pool_config(
        pool_node,
        tmp_path,
        stratum={
            "listen_host": "127.0.0.1", "listen_port": 0,
            "static_key_file": str(secrets / "pool-static.key"),
            "certificate_file": str(secrets / "pool-certificate.hex"),
        },
    )  # fmt: skip
    async with Pool(config) as pool:
        assert pool.server is not None
        expiry = pool.metrics.registry.get_sample_value
        first = Certificate.from_hex((secrets / "pool-certificate.hex").read_text())
        assert expiry("ckbpool_pool_certificate_expiry_timestamp_seconds") == first.not_valid_after
        host, port = pool.server.address
        old = Sv2Miner(host, port, "alice.before", authority_public_key=authority)
        old_task = asyncio.create_task(old.run(duration=120))
        try:
            await until(lambda: old.stats.accepted >= 3, "the first miner's shares", 60.0)

            # rotate: a new static key and a year's certificate; SIGHUP as `ckbpool pool run` wires it
            assert keys_main([
                "rotate", "--secrets-dir", str(secrets), "--new-static-key", "--valid-days", "365",
            ]) == 0  # fmt: skip
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, pool.reload_credentials)
            try:
                os.kill(os.getpid(), signal.SIGHUP)
                await until(
                    lambda: pool.metrics.registry.get_sample_value(
                        "ckbpool_pool_certificate_reloads_total", {"result": "ok"}
                    ) == 1,
                    "the SIGHUP reload",
                    60.0,
                )  # fmt: skip
            finally:
                loop.remove_signal_handler(signal.SIGHUP)
            second = Certificate.from_hex((secrets / "pool-certificate.hex").read_text())
            assert second.not_valid_after > first.not_valid_after + 300 * 86400
            assert expiry("ckbpool_pool_certificate_expiry_timestamp_seconds") == second.not_valid_after
            assert pool.server.credentials is pool.credentials and pool.credentials.certificate == second

            # the connected miner keeps mining on the same connection; a new one handshakes with the new key
            accepted = old.stats.accepted
            new = Sv2Miner(host, port, "bob.after", authority_public_key=authority)
            new_task = asyncio.create_task(new.run(duration=60))
            try:
                await until(
                    lambda: new.stats.accepted >= 3 and old.stats.accepted >= accepted + 3, "shares after", 60.0
                )
            finally:
                new.stop()
                await new_task
            assert pool.metrics.connections_total._value.get() == 2  # nobody reconnected

            # a broken certificate file: refused, the current credentials stay
            (secrets / "pool-certificate.hex").write_text("not hex\n")
            assert pool.reload_credentials() is False
            assert pool.credentials.certificate == second
            assert expiry("ckbpool_pool_certificate_reloads_total", {"result": "failed"}) == 1
        finally:
            old.stop()
            await old_task
