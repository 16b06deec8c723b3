"""The translator's typed configuration (pydantic, unknown keys rejected), shared with the CLI.

::

    network = "mainnet"              # the pool's: V1 usernames must be `<address of this network>.<worker>`
    identity = "per-worker"          # or "aggregated": everything credited to upstream.user_identity

    [upstream]                       # the SV2 pool
    host = "pool.example.org"
    port = 34255
    authority_public_key = "9b...."  # Base58Check, from the pool operator
    user_identity = "ckb1qyq....farm1"

    [v1]                             # CKB Stratum V1 for ASICs
    listen_port = 3333
    extranonce2_size = 10            # 16 - len(pool prefix) - miner id bytes
    max_connections_per_ip = 4096    # abuse limits: see V1Settings (all have defaults)
    idle_timeout_s = 900
    upstream_loss_grace_s = 5.0      # pool gone this long: V1 miners closed and refused until it is back

    [getwork]                        # JSON-RPC for the official `ckb miner`
    enabled = true
    listen_port = 8118

    [http]                           # /metrics (Prometheus), /status, /health -- for the operator only
    listen_port = 8181
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..pool.config import load_toml_model
from ..v1.dialect import EXTRANONCE2_MAX, PROFILE_EXTRANONCE2_MIN
from ..v1.lines import DEFAULT_MAX_LINE_BYTES

__all__ = [
    "GetworkSettings",
    "HttpSettings",
    "ProxyConfig",
    "ProxyConfigError",
    "UpstreamSettings",
    "V1Settings",
    "V1VardiffSettings",
    "load_proxy_config",
]

Port = Annotated[int, Field(ge=0, le=65535)]  # 0 = let the OS pick (tests)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(_Strict):
    host: str = "127.0.0.1"
    port: Port = 34255
    noise: bool = True  # off only for plaintext test pools
    authority_public_key: str | None = None  # required when noise is on: the proxy must authenticate the pool
    # the channel's identity: the account credited in aggregated mode (all V1 miners as one worker) and for
    # untagged shares; in per-worker mode each share names its V1 miner (docs/sv2-ckb.md section 12)
    user_identity: str = Field(min_length=1, max_length=255)
    nominal_hash_rate: Annotated[float, Field(ge=0)] = 0.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    reconnect_min_s: Annotated[float, Field(gt=0)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0)] = 30.0
    # a pool that leaves a forwarded share unanswered this long: the miner is told "stale" (21)
    share_timeout_s: Annotated[float, Field(gt=0)] = 30.0


class V1VardiffSettings(_Strict):
    enabled: bool = True
    # a new miner's first share difficulty (btcpool scale, ~hashes per share), bounded by the channel's target.
    # ASIC-sized: a 10 TH/s device sends ~10^4 shares/s for the moment until the flood rule retargets it; a CPU
    # miner waits for a few silence retargets. Set it to your hardware's rate x share_interval_s.
    initial_difficulty: Annotated[float, Field(gt=0)] = 1e9
    share_interval_s: Annotated[float, Field(gt=0)] = 10.0
    retarget_interval_s: Annotated[float, Field(gt=0)] = 30.0
    tolerance: Annotated[float, Field(ge=1.0)] = 1.5
    # after a harder target, shares found against the previous one still count for this long
    grace_s: Annotated[float, Field(ge=0)] = 5.0


class V1Settings(_Strict):
    enabled: bool = True
    listen_host: str = "0.0.0.0"
    listen_port: Port = 3333
    # V1 extranonce2 = (rest of the SV2 extranonce) || version || nonce; extranonce1 = pool prefix || miner id.
    # With the usual 4-byte pool prefix: 10 -> 2-byte miner ids (65,536 miners), 8 -> 4-byte ids (an 8+8 split).
    extranonce2_size: Annotated[int, Field(ge=PROFILE_EXTRANONCE2_MIN, le=EXTRANONCE2_MAX)] = 10
    max_line_bytes: Annotated[int, Field(ge=256, le=1 << 20)] = DEFAULT_MAX_LINE_BYTES
    # Abuse limits (the V1 port faces the internet). Connections are counted at accept, before any line is read;
    # a farm behind one NAT shares an address, hence the large per-IP cap. With the usual 4-byte pool prefix and
    # extranonce2_size = 10 there are 65,536 miner ids: a subscribed connection holds one until it closes.
    max_connections: Annotated[int, Field(ge=1)] = 100_000
    max_connections_per_ip: Annotated[int, Field(ge=1)] = 4096
    max_bad_requests: Annotated[int, Field(ge=1)] = 32
    # mining.subscribe within this long of connecting, then an accepted mining.authorize within this long of the
    # subscribe (a miner held back because the pool is not up yet is not timed out until its subscribe is answered)
    subscribe_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    authorize_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    # authorized, then no line at all for this long: closed. ASICs submit every share_interval_s (vardiff keeps
    # even slow ones talking), so this only ends dead or parked sockets -- like the pool's stratum.idle_timeout_s.
    idle_timeout_s: Annotated[float, Field(gt=0)] = 900.0
    # lines per connection (token bucket): a flood past it closes the connection. Generous: a new 10 TH/s device
    # sends ~10^4 shares/s at the initial difficulty until vardiff's flood rule moves it (one round trip).
    max_messages_per_second: Annotated[float, Field(gt=0)] = 1000.0
    message_burst: Annotated[int, Field(ge=1)] = 5000
    # Upstream loss: once the pool channel has been gone (or without a job) for this long, every V1 connection is
    # closed and new ones are refused until the pool sends a job again, so the miners' own backup pools take over
    # instead of hashing a dead job behind a live TCP connection. The grace covers a quick reconnect (a pool
    # restart, a network blip): within it the miners stay connected and get the new job with clean_jobs=true.
    upstream_loss_grace_s: Annotated[float, Field(ge=0)] = 5.0
    # true: keep the miners connected however long the pool is away (shares answered 21 "stale" meanwhile) --
    # for a farm whose miners have no backup pool (BTCAgent's always_keep_downconn)
    keep_miners_without_upstream: bool = False
    notify_parent_hash: bool = True  # 5-parameter mining.notify (False: the 4-parameter form)
    extranonce_subscribe: bool = True  # answer mining.extranonce.subscribe with true (False: error 20)
    vardiff: V1VardiffSettings = V1VardiffSettings()


class GetworkSettings(_Strict):
    enabled: bool = False
    listen_host: str = "127.0.0.1"
    listen_port: Port = 8118
    # identity of the getwork channel; default: the upstream account with worker "ckb-miner"
    user_identity: str | None = None
    submit_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    max_request_bytes: Annotated[int, Field(ge=1024)] = 4 << 20


class HttpSettings(_Strict):
    enabled: bool = True
    listen_host: str = "127.0.0.1"  # metrics and status are the operator's, never the internet's
    listen_port: Port = 8181


class ProxyConfig(_Strict):
    # the pool's network: in per-worker mode a V1 username must be `<CKB address of it>.<worker>`
    network: Literal["dev", "testnet", "mainnet"] | None = None
    # per-worker: every forwarded share is tagged with its V1 username (extensions 0x0002 + 0x4CCB) and the pool
    # credits that address; aggregated: one identity (upstream.user_identity) for the whole farm, as before
    identity: Literal["per-worker", "aggregated"] = "per-worker"
    upstream: UpstreamSettings
    v1: V1Settings = V1Settings()
    getwork: GetworkSettings = GetworkSettings()
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _per_worker_needs_network(self) -> ProxyConfig:
        if self.identity == "per-worker" and self.network is None:
            raise ValueError(
                "network is required with identity = \"per-worker\" (the pool's network, to check the miners' "
                'addresses): dev, testnet or mainnet; or set identity = "aggregated"'
            )
        return self

    @property
    def per_worker(self) -> bool:
        return self.identity == "per-worker"

    @property
    def getwork_identity(self) -> str:
        if self.getwork.user_identity:
            return self.getwork.user_identity
        account = self.upstream.user_identity.partition(".")[0]
        return f"{account}.ckb-miner"


class ProxyConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names the file and each bad key path."""


def load_proxy_config(path: Path | None = None, data: dict[str, Any] | None = None) -> ProxyConfig:
    source = str(path) if path is not None else "<config>"
    config = load_toml_model(ProxyConfig, path, data, error=ProxyConfigError)
    if config.upstream.noise and not config.upstream.authority_public_key:
        raise ProxyConfigError(f"{source}: upstream.authority_public_key is required (or set upstream.noise = false)")
    return config
