"""Provision, start and stop a ckb node: the same code serves the ``local`` deploy target and the test fixtures.

``ckb init`` writes the stock config; we then patch only what a pool needs (RPC modules and private listen
addresses, the block assembler lock from the payout address, the Prometheus exporter, and for the dev chain an
Eaglesong PoW at a CPU-mineable difficulty). Patching the generated files (rather than writing our own) keeps
every other setting at the node's own defaults for the pinned version.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomlkit

from .epoch import EpochNumberWithFraction
from .errors import NodeSetupError, NodeUnavailable
from .install import find_or_install_ckb
from .rpc import CkbRpcClient
from .structures import HASH_TYPE_NAMES, Script

log = logging.getLogger(__name__)

Chain = Literal["dev", "testnet", "mainnet"]
PowFunc = Literal["Eaglesong", "EaglesongBlake2b", "Dummy"]
# "Indexer" starts the node's built-in indexer (get_cells, get_cells_capacity): the payout wallet finds its live
# cells with it. `ckb init` leaves it out of the stock list (resource/ckb.toml), so we add it.
POOL_RPC_MODULES = ["Net", "Pool", "Miner", "Chain", "Stats", "Subscription", "Experiment", "Indexer"]
DEV_GENESIS_COMPACT_TARGET = 0x20010000  # difficulty 256: a few hundred Eaglesong hashes a block


def dev_cellbase_maturity(blocks: int, epoch_length: int) -> int:
    """The spec's packed ``cellbase_maturity`` for ``blocks`` blocks of an epoch of ``epoch_length`` blocks."""
    if not 0 <= blocks < epoch_length:
        raise NodeSetupError(f"cellbase maturity of {blocks} blocks must be within one epoch ({epoch_length} blocks)")
    return EpochNumberWithFraction(0, blocks, epoch_length).full_value()


def _die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL the child when the parent dies (PR_SET_PDEATHSIG = 1)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _on_main_thread() -> bool:
    # the death signal follows the forking *thread*; a node started from a worker thread must outlive it
    return threading.current_thread() is threading.main_thread()


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (the OS picks it, so parallel test runs do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class NodeConfig:
    """What the pool needs from its node. Listen addresses are private by default (loopback)."""

    data_dir: Path
    block_assembler_lock: Script
    chain: Chain = "dev"
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 8114
    tcp_rpc_port: int | None = 18114
    p2p_host: str = "127.0.0.1"
    p2p_port: int = 8115
    metrics_port: int | None = 8100
    block_assembler_message: bytes = b""
    block_assembler_notify: list[str] = field(default_factory=list)
    block_assembler_update_interval_ms: int = 800
    rpc_modules: list[str] = field(default_factory=lambda: list(POOL_RPC_MODULES))
    # dev chain only
    pow_func: PowFunc = "Eaglesong"
    genesis_compact_target: int = DEV_GENESIS_COMPACT_TARGET
    genesis_epoch_length: int = 1000
    # Blocks before a cellbase output can be spent. ckb's dev spec says 0 (at once); the spec stores an epoch
    # fraction, so N is written as N/genesis_epoch_length epochs (params.cellbase_maturity, a packed
    # EpochNumberWithFraction): exact within the first epoch, which is as far as a test chain gets.
    cellbase_maturity_blocks: int | None = None
    log_filter: str = "info,ckb-pow=debug"
    # tests: SIGKILL the node when the process that started it dies (a killed test run leaves no node behind).
    # The local deploy target leaves it False: the node must outlive the CLI that started it.
    die_with_parent: bool = False

    @classmethod
    def for_tests(cls, data_dir: Path, lock: Script, **overrides: Any) -> NodeConfig:
        """A dev node on free loopback ports."""
        config = cls(
            data_dir=data_dir,
            block_assembler_lock=lock,
            rpc_port=free_port(),
            tcp_rpc_port=free_port(),
            p2p_port=free_port(),
            metrics_port=free_port(),
        )
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise TypeError(f"NodeConfig has no field {key!r}")
            setattr(config, key, value)
        return config

    @property
    def rpc_url(self) -> str:
        return f"http://{self.rpc_host}:{self.rpc_port}"


class CkbNode:
    """One ckb node process on this machine."""

    def __init__(self, config: NodeConfig, binary: Path | None = None) -> None:
        self.config = config
        self.binary = binary or find_or_install_ckb()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = config.data_dir / "ckb-run.log"

    # -- provisioning ---------------------------------------------------------------------------------
    def init(self, force: bool = False) -> None:
        """Run ``ckb init`` and apply the pool's settings; a dev chain always starts from an empty data dir."""
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        lock = cfg.block_assembler_lock
        cmd = [
            str(self.binary),
            "init",
            "-C",
            str(cfg.data_dir),
            "--chain",
            cfg.chain,
            "--ba-code-hash",
            "0x" + lock.code_hash.hex(),
            "--ba-hash-type",
            HASH_TYPE_NAMES[lock.hash_type],
            "--ba-arg",
            "0x" + lock.args.hex(),
            "--ba-message",
            "0x" + cfg.block_assembler_message.hex(),
            "--rpc-port",
            str(cfg.rpc_port),
            "--p2p-port",
            str(cfg.p2p_port),
        ]
        if force:
            cmd.append("--force")
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise NodeSetupError(f"ckb init failed: {result.stderr.strip() or result.stdout.strip()}")
        self._patch_ckb_toml()
        if cfg.chain == "dev":
            self._patch_dev_spec()
            shutil.rmtree(cfg.data_dir / "data", ignore_errors=True)
        self._patch_miner_toml()

    def _patch_ckb_toml(self) -> None:
        cfg = self.config
        path = cfg.data_dir / "ckb.toml"
        doc = tomlkit.parse(path.read_text())
        rpc = doc["rpc"]
        assert isinstance(rpc, dict)
        rpc["listen_address"] = f"{cfg.rpc_host}:{cfg.rpc_port}"
        rpc["modules"] = list(cfg.rpc_modules)
        if cfg.tcp_rpc_port is not None:
            rpc["tcp_listen_address"] = f"{cfg.rpc_host}:{cfg.tcp_rpc_port}"
        network = doc["network"]
        assert isinstance(network, dict)
        network["listen_addresses"] = [f"/ip4/{cfg.p2p_host}/tcp/{cfg.p2p_port}"]
        if cfg.chain == "dev":
            network["bootnodes"] = []
        logger = doc.get("logger")
        if isinstance(logger, dict):
            logger["filter"] = cfg.log_filter
            logger["log_to_stdout"] = True
        ba = doc.get("block_assembler")
        if not isinstance(ba, dict):
            raise NodeSetupError(f"{path} has no [block_assembler] after ckb init")
        ba["update_interval_millis"] = cfg.block_assembler_update_interval_ms
        if cfg.block_assembler_notify:
            ba["notify"] = list(cfg.block_assembler_notify)
        if cfg.metrics_port is not None:
            metrics = tomlkit.table()
            exporter = tomlkit.table()
            prom = tomlkit.table()
            prom["target"] = {"type": "prometheus", "listen_address": f"{cfg.rpc_host}:{cfg.metrics_port}"}
            exporter["prometheus"] = prom
            metrics["exporter"] = exporter
            doc["metrics"] = metrics
        path.write_text(tomlkit.dumps(doc))

    def _patch_dev_spec(self) -> None:
        cfg = self.config
        path = cfg.data_dir / "specs" / "dev.toml"
        doc = tomlkit.parse(path.read_text())
        pow_table = doc["pow"]
        assert isinstance(pow_table, dict)
        pow_table["func"] = cfg.pow_func
        genesis = doc["genesis"]
        assert isinstance(genesis, dict)
        genesis["compact_target"] = cfg.genesis_compact_target
        params = doc.get("params")
        if isinstance(params, dict):
            params["genesis_epoch_length"] = cfg.genesis_epoch_length
            if cfg.cellbase_maturity_blocks is not None:
                maturity = dev_cellbase_maturity(cfg.cellbase_maturity_blocks, cfg.genesis_epoch_length)
                params["cellbase_maturity"] = maturity
        path.write_text(tomlkit.dumps(doc))

    def _patch_miner_toml(self) -> None:
        path = self.config.data_dir / "ckb-miner.toml"
        if not path.exists():
            return
        doc = tomlkit.parse(path.read_text())
        miner = doc.get("miner")
        if isinstance(miner, dict) and isinstance(miner.get("client"), dict):
            miner["client"]["rpc_url"] = self.config.rpc_url + "/"
            path.write_text(tomlkit.dumps(doc))

    # -- process --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if not (self.config.data_dir / "ckb.toml").exists():
            raise NodeSetupError(f"{self.config.data_dir} is not initialised: run init first")
        log_file = self.log_path.open("ab")
        guard = _die_with_parent if self.config.die_with_parent and _on_main_thread() else None
        self.process = subprocess.Popen(
            [str(self.binary), "run", "-C", str(self.config.data_dir)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=guard,
        )
        log_file.close()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until RPC answers; fail fast (with the log tail) if the process exits."""

        def alive() -> None:
            if self.process is not None and self.process.poll() is not None:
                raise NodeSetupError(f"ckb exited with code {self.process.returncode}:\n{self.log_tail()}")

        async with CkbRpcClient(self.config.rpc_url, retries=0, timeout=2.0) as client:
            try:
                await client.wait_ready(timeout, interval=0.1, check=alive)
            except NodeUnavailable:
                raise NodeSetupError(f"ckb RPC did not answer within {timeout:.0f}s:\n{self.log_tail()}") from None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: ckb flushes RocksDB on a clean shutdown."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("ckb did not stop within %.0fs; killing it", timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, **kwargs: Any) -> CkbRpcClient:
        return CkbRpcClient(self.config.rpc_url, **kwargs)
