"""The pool's typed configuration (pydantic, unknown keys rejected), shared with the CLI.

Every field has a safe default except what only the operator can know (the node, the payout address is the
node's business). Listen addresses default to loopback for everything but Stratum, which is the one port a pool
publishes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Port = Annotated[int, Field(ge=0, le=65535)]  # 0 = let the OS pick (tests)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Strict):
    rpc_url: str = "http://127.0.0.1:8114"
    # TCP RPC of the node for the new_tip_header subscription; None = poll only
    subscribe_address: str | None = "127.0.0.1:18114"
    poll_interval_ms: Annotated[int, Field(ge=50, le=60_000)] = 500
    rpc_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class StratumSettings(_Strict):
    listen_host: str = "0.0.0.0"
    listen_port: Port = 34255
    # Noise: the pool's static key and certificate (files written by `ckbpool init` / `python -m ckbpool.sv2.keys`)
    noise: bool = True  # off only for local experiments; the server logs a warning when it is off
    static_key_file: Path | None = None
    certificate_file: Path | None = None
    server_id: Annotated[int, Field(ge=0, le=255)] = 1
    extended_prefix_bytes: Annotated[int, Field(ge=2, le=7)] = 4
    max_connections: Annotated[int, Field(ge=1)] = 100_000
    max_frame_bytes: Annotated[int, Field(ge=1024, le=1 << 24)] = 1 << 20
    handshake_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    setup_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # after setup: close a connection that sends nothing for this long (vardiff keeps honest miners talking)
    idle_timeout_s: Annotated[float, Field(gt=0)] = 900.0
    # per-connection message rate limit (token bucket); a connection that floods past it is closed
    max_messages_per_second: Annotated[float, Field(gt=0)] = 2000.0
    message_burst: Annotated[int, Field(ge=1)] = 4000
    # every identity credited (a channel's user_identity, a share's 0x4CCB ckb_user_identity TLV) must be
    # `<CKB address of this pool's network>.<worker>`; anything else is refused (OpenMiningChannel.Error,
    # SubmitShares.Error). Off: any non-empty name is an account (test pools). Rendered deployments set it.
    require_address_identity: bool = False


class VardiffSettings(_Strict):
    share_interval_s: Annotated[float, Field(gt=0)] = 10.0
    retarget_interval_s: Annotated[float, Field(gt=0)] = 30.0
    min_share_difficulty: Annotated[float, Field(gt=0)] = 1e-6
    max_share_difficulty: Annotated[float, Field(gt=0)] = 1e18
    initial_hashrate: Annotated[float, Field(gt=0)] = 1e6  # used when a miner declares 0 H/s
    # a new target is sent only if it moves by more than this factor, to avoid churn
    tolerance: Annotated[float, Field(ge=1.0)] = 1.5


class BlockSettings(_Strict):
    data_dir: Path = Path("ckbpool-data/blocks")
    submit_retries: Annotated[int, Field(ge=0)] = 20
    fsync: bool = True


class BusSettings(_Strict):
    url: str | None = None  # None / memory:// = in-process; kafka://host:port = Kafka


class RedisSettings(_Strict):
    url: str | None = None  # None = accounting off (shares still counted in metrics)
    password_file: Path | None = None
    share_log_maxlen: Annotated[int, Field(ge=1000)] = 1_000_000
    # every Redis call is bounded by this (connect and each reply); failed writes are retried with backoff
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # /health turns false (and ckbpool_accounting_up 0) when shares wait longer than this to reach Redis
    max_lag_s: Annotated[float, Field(gt=0)] = 30.0
    # at shutdown, how long accounting may take to write what the bus still holds for it
    drain_timeout_s: Annotated[float, Field(ge=0)] = 15.0


class HttpSettings(_Strict):
    listen_host: str = "127.0.0.1"
    listen_port: Port = 8180


Role = Literal["jobmaker", "stratum", "blockmaker", "accounting"]
ALL_ROLES: tuple[Role, ...] = ("jobmaker", "stratum", "blockmaker", "accounting")


class PoolConfig(_Strict):
    network: Literal["dev", "testnet", "mainnet"] = "dev"
    # which services this process runs; all of them = the embedded pool. Split roles across processes/hosts
    # only with a shared bus (Kafka).
    roles: tuple[Role, ...] = ALL_ROLES
    node: NodeSettings = NodeSettings()
    stratum: StratumSettings = StratumSettings()
    vardiff: VardiffSettings = VardiffSettings()
    blocks: BlockSettings = BlockSettings()
    bus: BusSettings = BusSettings()
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    # submit SubmitShares.Success after this many shares or this long, whichever first
    success_batch_shares: Annotated[int, Field(ge=1)] = 16
    success_batch_ms: Annotated[int, Field(ge=0)] = 100

    @property
    def pow_blake2b(self) -> bool:
        """Testnet uses EaglesongBlake2b; dev and mainnet plain Eaglesong."""
        return self.network == "testnet"


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names the file and each bad key path."""


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"  {path}: {error['msg']}")
    return "\n".join(lines)


def load_pool_config(path: Path | None = None, data: dict[str, Any] | None = None) -> PoolConfig:
    """Load from a TOML file (or a dict), reporting every bad key with its path."""
    source = str(path) if path is not None else "<config>"
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return PoolConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None
