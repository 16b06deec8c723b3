"""The pool's typed configuration (pydantic, unknown keys rejected), shared with the CLI.

Every field has a safe default except what only the operator can know (the node, the payout address is the
node's business). Listen addresses default to loopback for everything but Stratum, which is the one port a pool
publishes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Port = Annotated[int, Field(ge=0, le=65535)]  # 0 = let the OS pick (tests)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Strict):
    rpc_url: str = "http://127.0.0.1:8114"
    # TCP RPC of the node for the new_tip_header subscription; None = poll only. With an https:// rpc_url (the
    # node's RPC filter, `ckbpool rpc-filter run`, in front of a node on another host) it is the filter's TLS
    # subscription port
    subscribe_address: str | None = "127.0.0.1:18114"
    poll_interval_ms: Annotated[int, Field(ge=50, le=60_000)] = 500
    rpc_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # https:// only: the CA the filter's certificate is verified against (the deployment CA), a bearer token
    # the filter requires (file, 0600), and a client certificate when it requires mutual TLS
    ca_file: Path | None = None
    token_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    @model_validator(mode="after")
    def _check_tls(self) -> NodeSettings:
        scheme = self.rpc_url.partition("://")[0]
        if scheme not in ("http", "https"):
            raise ValueError(f"rpc_url must be http:// or https://, not {self.rpc_url!r}")
        extras = [name for name in ("ca_file", "token_file", "client_cert_file") if getattr(self, name) is not None]
        if extras and scheme != "https":
            raise ValueError(f"{', '.join(extras)} need an https:// rpc_url (TLS to the RPC filter)")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("set both client_cert_file and client_key_file, or neither")
        return self


#: server ids (extranonce prefix spaces, Kafka consumer groups) one stratum host may use for its processes: the
#: deploy renderers give stratum host k the ids 1 + k * IDS_PER_STRATUM_HOST onwards, so the default worker count
#: stops there (a host with more cores than this runs this many stratum processes unless `workers` says otherwise)
IDS_PER_STRATUM_HOST = 16


class StratumSettings(_Strict):
    listen_host: str = "0.0.0.0"
    listen_port: Port = 34255
    # Noise: the pool's static key and certificate (files written by `ckbpool init` / `python -m ckbpool.sv2.keys`)
    noise: bool = True  # off only for local experiments; the server logs a warning when it is off
    static_key_file: Path | None = None
    certificate_file: Path | None = None
    server_id: Annotated[int, Field(ge=0, le=255)] = 1
    extended_prefix_bytes: Annotated[int, Field(ge=2, le=7)] = 4
    # Stratum V2 server processes on listen_port (SO_REUSEPORT; ckbpool.pool.procs): unset = one per core under
    # `ckbpool pool run`; 1 = the server in the pool's own process (also what a Pool built in code without it runs).
    # Worker i runs with server_id + i (its extranonce prefixes and share ids), so server_id + workers - 1 <= 255
    # and stratum hosts sharing a bus need server_ids at least `workers` apart.
    workers: Annotated[int, Field(ge=1, le=256)] | None = None
    # --- abuse limits (each refusal is counted in ckbpool_stratum_limited_total{reason}) ---------------------------
    # Connections are counted from accept, before the Noise handshake: a handshake costs EC work on the event loop,
    # so a peer that never finishes one must still count.
    max_connections: Annotated[int, Field(ge=1)] = 100_000
    # Per IPv4 address / IPv6 /64. A farm behind one NAT shows up as one address: 10,000 devices still fit, while
    # the pool-wide cap keeps one address from taking all of it.
    max_connections_per_ip: Annotated[int, Field(ge=1)] = 10_000
    # Noise handshakes started per second per address (token bucket: a burst, then this rate). A farm that
    # reconnects after a pool restart gets its first 1,000 devices in at once and the rest within seconds (refused
    # devices retry); one address cannot keep the event loop busy with EC work.
    handshake_rate_per_ip: Annotated[float, Field(gt=0)] = 200.0
    handshake_burst_per_ip: Annotated[int, Field(ge=1)] = 1000
    # Handshakes in progress per address (accepted, Noise not finished): half-open sockets that never send the
    # first handshake message hold a slot until handshake_timeout_s; a real device finishes in one round trip.
    max_handshakes_in_progress_per_ip: Annotated[int, Field(ge=1)] = 256
    # Channels one connection may open (more: OpenMiningChannel.Error "too-many-channels"). Every job goes to every
    # channel, so this bounds one connection's share of each fan-out. Our V1 proxy opens one channel per upstream
    # connection (its getwork channel has a connection of its own); SRI's translator opens one per device only
    # when it does not aggregate — 256 devices behind one such translator still fit.
    max_channels_per_connection: Annotated[int, Field(ge=1)] = 256
    # Channels open from one IPv4 address / IPv6 /64 over all its connections: without it one address could hold
    # max_connections_per_ip x max_channels_per_connection (2.56M) channels, ~3 GiB of pool memory (docs/abuse.md).
    # 20,000 fits the 10,000-device farm behind one NAT with two channels a device.
    max_channels_per_ip: Annotated[int, Field(ge=1)] = 20_000
    # UpdateChannel honoured per channel: a bucket of `update_channel_burst`, refilled one per
    # `update_channel_interval_s`. Excess UpdateChannels are ignored (counted), and an honoured one moves the
    # target without resetting vardiff's measurement, so repeating a tiny nominal_hash_rate buys nothing.
    update_channel_interval_s: Annotated[float, Field(gt=0)] = 10.0
    update_channel_burst: Annotated[int, Field(ge=1)] = 3
    # Largest inbound frame payload. Everything a miner or proxy legitimately sends the pool is small (the biggest,
    # a SetupConnection with five full strings, is 1,291 bytes; a share with a 32-byte extranonce and every
    # identity/target TLV is 391; sizes in ckbpool.sv2.framing's docstring). 64 KiB (one Noise chunk's worth)
    # leaves ~50x room, and a peer announcing more is closed from the frame header alone, before any payload is
    # buffered: a connection holds at most one frame of this size plus one socket read. (RequestExtensions and
    # SetCustomMiningJob could be larger only by listing tens of thousands of extension ids / by doing work
    # selection, which this pool refuses.)
    max_frame_bytes: Annotated[int, Field(ge=1024, le=1 << 24)] = 64 * 1024
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

    @model_validator(mode="after")
    def _check_workers(self) -> StratumSettings:
        if self.workers is not None and self.server_id + self.workers - 1 > 255:
            raise ValueError(
                f"workers: {self.workers} workers from server_id {self.server_id} need server_ids up to "
                f"{self.server_id + self.workers - 1}; each must fit one byte (lower server_id or workers)"
            )
        return self


class VardiffSettings(_Strict):
    share_interval_s: Annotated[float, Field(gt=0)] = 10.0
    retarget_interval_s: Annotated[float, Field(gt=0)] = 30.0
    # The share difficulty floor, as a hashrate: no channel's target is ever easier than one share per
    # share_interval_s at this rate, and a declared nominal_hash_rate below it (OpenChannel, UpdateChannel) counts
    # as this rate. Without it a miner declaring 1e-9 H/s had every hash accepted as a share, each costing the pool
    # a check, a bus event and ~10 Redis commands. 10 kH/s: one C Eaglesong thread does ~4 MH/s (~0.3 MH/s on a
    # loaded shared test core), so the floor never binds for our CPU miners in tests or any real device, yet a
    # share always costs its sender >= 1e4 x share_interval_s hashes (1e5 at the default interval, ~25 ms of a
    # core) against the pool's tens of microseconds; vardiff then moves a fast sender up within a few shares.
    min_hashrate: Annotated[float, Field(gt=0)] = 1e4
    # an absolute floor as well (btcpool CKB scale, diff-1 = 0xffff << 240); the harder of the two floors applies
    min_share_difficulty: Annotated[float, Field(gt=0)] = 1e-6
    max_share_difficulty: Annotated[float, Field(gt=0)] = 1e18
    initial_hashrate: Annotated[float, Field(gt=0)] = 1e6  # used when a miner declares 0 H/s (min_hashrate floors it)
    # a new target is sent only if it moves by more than this factor, to avoid churn
    tolerance: Annotated[float, Field(ge=1.0)] = 1.5


class BlockSettings(_Strict):
    data_dir: Path = Path("ckbpool-data/blocks")
    submit_retries: Annotated[int, Field(ge=0)] = 20
    fsync: bool = True


class BusSettings(_Strict):
    """``url``: None / memory:// = in-process; ``kafka://host:port?...`` = Kafka (parameters:
    ``ckbpool.bus.kafka.KafkaBusConfig.from_url``). Between hosts the bus is secured by URL parameters naming
    files, never holding a secret: ``security_protocol=SASL_SSL&username=<principal>&password_file=<path>
    &ca_file=<kafka-ca.pem>`` (``ckbpool.deploy.kafka_security.client_url`` builds it; ``ckbpool.deploy.pki``
    makes the files). A Kafka URL is checked when the config loads, so a typo or a password in it is refused
    with the config's error, not at the first publish."""

    url: str | None = None

    @model_validator(mode="after")
    def _check_kafka_url(self) -> BusSettings:
        if self.url is not None and self.url.startswith("kafka://"):
            from ..bus.kafka import KafkaBusConfig  # aiokafka only for configs that use Kafka

            KafkaBusConfig.from_url(self.url)  # ValueError -> a ValidationError naming bus
        return self


#: share log kept this long (7 days; RedisSettings.share_log_keep_s explains the choice)
SHARE_LOG_KEEP_S = 7 * 86400
#: a worker's / user's keys in the books expire this long after its last accepted share (30 days)
IDLE_TTL_S = 30 * 86400
#: exactly-once marks of a (stratum run, worker) go this long after its last share (7 days)
DEDUP_TTL_S = 7 * 86400


class RedisSettings(_Strict):
    """Share accounting in Redis (``ckbpool.pool.accounting``); Redis itself should run with ``maxmemory`` and
    ``maxmemory-policy noeviction`` (the rendered redis.conf does): the books are never evicted, a full Redis
    refuses writes, accounting lags and its alert fires."""

    url: str | None = None  # None = accounting off (shares still counted in metrics)
    password_file: Path | None = None
    # the ACL user to AUTH as (the rendered ACL names it "pool"); None = the URL's, or the default user
    username: str | None = None
    # rediss:// URLs use TLS; the server is verified against this CA (the deployment's), else the system store
    tls_ca_file: Path | None = None
    # The share log (stream ``sharelog``: one entry per chunk of up to 1,024 accepted shares of a write, a line per
    # share; logs written before hold an entry per share, and both are read) is what PPLNS reads: the last N x
    # network difficulty of work (N = payouts.pplns_n). That window lasts about N x block interval / the pool's
    # share of the network hashrate: ~30 min for a 1 % pool, ~4.5 h at 0.1 %, ~2 days at 0.01 %. So the log is kept
    # by *work*: every share_log_trim_interval_s the trimmer (ckbpool.pool.accounting.ShareLogTrimmer) drops the
    # entries older than the newest share_log_keep_windows x N x network difficulty of work, never those younger than
    # share_log_min_keep_s, and the script drops anything older than share_log_keep_s at each batch (a cap: a
    # pool too small to fill its windows in that time shows a window ratio < 1 and an alert).
    # Memory: a window is ~N blocks' worth of shares whatever the pool's size (a busy pool has short windows),
    # ~150-250 bytes a share (benchmarks.abuse_identity, bench_payouts) -- without the work bound, 7 days at 1,000
    # shares/s would be ~130 GB against a 1 GiB maxmemory.
    share_log_keep_s: Annotated[int, Field(ge=600, le=90 * 86400)] = SHARE_LOG_KEEP_S
    # Windows of work kept, not 1: (1) a block's window is read when the payouts tracker sees the block accepted
    # (a pass every payouts.interval_s, later if it was down), reaching back from the block's *find* time, so the
    # log must also hold the work done since then; (2) the window is sized by the block's own difficulty, which
    # may exceed the tip's the trimmer last read (an epoch's retarget moves it by up to x2, RFC 0020's tau = 2,
    # and the trimmer reads it once a minute); (3) the trim position comes from a float running sum, not exact.
    # 3 = the window plus two windows of slack for these (a tracker behind by a window of work still reads a
    # full one).
    share_log_keep_windows: Annotated[float, Field(ge=1, le=100)] = 3.0
    # never trimmed by work below this age: a wrong difficulty (a glitching node, a dev chain's tiny one) cannot
    # wipe the log; the time cap share_log_keep_s still applies above it
    share_log_min_keep_s: Annotated[int, Field(ge=60)] = 3600
    # how often the trimmer refreshes the network difficulty from the node and trims (one bounded RPC + a
    # binary search of ~30 XRANGE probes + one XTRIM)
    share_log_trim_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # optional hard cap on the share log's shares on top of the time limit (None: none; about: the log is cut by
    # whole entries, counted by the current write's shares per entry). It trims the PPLNS
    # window silently when the share rate outgrows it, so it is a last resort; watch
    # ckbpool_accounting_share_log_oldest_age_seconds instead.
    share_log_maxlen: Annotated[int, Field(ge=1000)] | None = None
    # worker:/user: hashes and the users/workers sorted sets forget an identity this long after its last
    # accepted share (rejected shares never create or refresh keys); refreshed by every accepted share
    idle_ttl_s: Annotated[int, Field(ge=3600)] = IDLE_TTL_S
    # exactly-once marks of a (stratum run, worker) are kept this long after its last share: a redelivery
    # older than this would count again (Kafka retention and spool outages are far shorter)
    dedup_ttl_s: Annotated[int, Field(ge=3600)] = DEDUP_TTL_S
    # every Redis call is bounded by this (connect and each reply); failed writes are retried with backoff
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # /health turns false (and ckbpool_accounting_up 0) when shares wait longer than this to reach Redis
    max_lag_s: Annotated[float, Field(gt=0)] = 30.0
    # at shutdown, how long accounting may take to write what the bus still holds for it
    drain_timeout_s: Annotated[float, Field(ge=0)] = 15.0
    # the most shares one accounting write (one Lua script) takes: the consumer takes everything queued up to
    # this, so batches are small when the pool is quiet and grow when it falls behind (a write's round trip and
    # fixed work are then shared by more shares: batches of 256 fell behind a busy stratum core, 4,096 kept
    # pace -- docs/benchmarks.md). The cap bounds how long one script holds Redis (other clients wait: ~12 us a
    # share, ~0.1 s at 8,192, measured on a loaded machine) and the consumer's memory; Kafka hands out ~500
    # records a fetch, topped up to it.
    max_batch: Annotated[int, Field(ge=1, le=65536)] = 8192
    # the least time between the starts of two accounting writes while shares keep coming (a quiet pool's share is
    # written at once): a write's cost in Redis is mostly per write (AOF fsync, the script's fixed part), so
    # batches written back to back as soon as one share waits spend Redis' CPU on those parts; the books lag the
    # shares by at most this much more (ShareAccounting.run)
    write_interval_ms: Annotated[int, Field(ge=0, le=10_000)] = 100

    @model_validator(mode="after")
    def _check_share_log(self) -> RedisSettings:
        if self.tls_ca_file is not None and not (self.url or "").startswith("rediss://"):
            raise ValueError("tls_ca_file needs a rediss:// url (TLS); a redis:// url would ignore it")
        if self.share_log_min_keep_s > self.share_log_keep_s:
            raise ValueError(
                f"share_log_min_keep_s ({self.share_log_min_keep_s}) must not exceed share_log_keep_s "
                f"({self.share_log_keep_s}): the time cap would trim what the minimum keeps"
            )
        return self


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
    web: WebSettings = Field(default_factory=lambda: WebSettings())  # defined at the end (ckbpool.web)
    # the payout engine ([payouts]; off by default); defined at the end
    payouts: PayoutSettings = Field(default_factory=lambda: PayoutSettings())
    # submit SubmitShares.Success after this many shares or this long, whichever first
    success_batch_shares: Annotated[int, Field(ge=1)] = 16
    success_batch_ms: Annotated[int, Field(ge=0)] = 100

    @property
    def pow_blake2b(self) -> bool:
        """Testnet uses EaglesongBlake2b; dev and mainnet plain Eaglesong."""
        return self.network == "testnet"


M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file is unreadable or invalid; the message names the file and each bad key path."""


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        lines.append(f"  {path}: {error['msg']}")
    return "\n".join(lines)


def load_toml_model(
    model: type[M],
    path: Path | None = None,
    data: dict[str, Any] | None = None,
    *,
    error: type[ValueError] = ConfigError,
) -> M:
    """A pydantic model from a TOML file (or a dict): unreadable files, bad TOML and every bad key with its path
    are one ``error`` naming the file -- the pool's, the proxy's and the RPC filter's configs alike."""
    source = str(path) if path is not None else "<config>"
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise error(f"{source}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise error(f"{source}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise error(format_validation_error(source, exc)) from None


def load_pool_config(path: Path | None = None, data: dict[str, Any] | None = None) -> PoolConfig:
    """Load from a TOML file (or a dict), reporting every bad key with its path."""
    return load_toml_model(PoolConfig, path, data)


class WebSettings(_Strict):
    """``[web]``: the public, read-only API and the miners' page (:mod:`ckbpool.web`), a listener of its own, apart
    from ``[http]`` (/status, /metrics stay private). Off by default; the deploy renderers turn it on and publish it.

    Everything it shows is what any miner may see: pool totals, blocks, and one address's own figures."""

    enabled: bool = False
    listen_host: str = "127.0.0.1"
    listen_port: Port = 8280
    # the URL miners open (e.g. https://pool.example.com/ behind the TLS proxy); printed by `ckbpool status`.
    # None: http://<listen_host>:<listen_port>/ (0.0.0.0 shown as 127.0.0.1)
    public_url: str | None = None
    # every answer is cached this long (per path and query): a crowd refreshing one page costs one Redis read
    cache_ttl_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    # per client IP (IPv4 address / IPv6 /64) token bucket over every request: a burst, then this rate; 429 beyond
    rate_limit_per_s: Annotated[float, Field(gt=0)] = 10.0
    rate_limit_burst: Annotated[int, Field(ge=1)] = 60
    # peers whose X-Forwarded-For names the client (the TLS reverse proxy in front); nobody else's is believed
    trusted_proxies: tuple[str, ...] = ()
    # query strings longer than this are refused (414) before any handler runs
    max_query_bytes: Annotated[int, Field(ge=64, le=8192)] = 1024
    # a worker is "online" when its last accepted share is this recent
    online_window_s: Annotated[int, Field(ge=60, le=86400)] = 600
    # HTTPS on this listener: a PEM certificate chain and its private key (both, or neither: plain HTTP). Read
    # once at start; the operator's files (e.g. certbot's fullchain.pem / privkey.pem) -- docs/web.md
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # (balances, payments, block rewards, the fee and the scheme come from [payouts] when it is enabled: its
    # ledger, read-only -- nothing to repeat here that could disagree with what the engine does)

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file (HTTPS), or neither (HTTP)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


#: a secp256k1_blake160 output's occupied capacity (8 capacity + 32 code hash + 1 hash type + 20 args bytes):
#: ckb refuses a smaller output (InsufficientCellCapacity), so no payment can be below it
MIN_PAYMENT_SHANNONS = 61 * 100_000_000
# the alert CkbpoolPayoutsStalled fires 900 s after the last engine pass (monitoring/prometheus/rules): a longer
# interval would keep it firing on a healthy engine
PAYOUTS_MAX_INTERVAL_S = 600.0
#: serialized bytes a payout transaction needs per output (CellOutput 97 + empty data 4 + offsets) and for the
#: rest (one dep group, up to a few inputs with their witness, change, headers): bounds its fee for validation
_TX_BYTES_PER_OUTPUT = 110
_TX_BYTES_FIXED = 2_000

# The payment fields' types, shared with the deploy schema (ckbpool.deploy.config.PayoutsOptions): the bounds an
# operator's ckbpool.yaml is checked against are the ones the rendered pool.toml must meet on the host.
#: a balance is paid once it reaches this (>= 61 CKB, a cell's minimum, plus one batch's transaction fee)
PaymentThreshold = Annotated[int, Field(ge=MIN_PAYMENT_SHANNONS)]
#: shannons per 1000 bytes of transaction (the node's tx_pool.min_fee_rate, 1000 by default, is the floor)
PaymentFeeRate = Annotated[int, Field(ge=1, le=10_000_000)]
#: outputs per payout transaction (a 1,000-output transaction is ~110 kB, well inside a block)
PaymentBatchSize = Annotated[int, Field(ge=1, le=1_000)]
#: one engine pass (track blocks, settle sent payouts, pay) every this many seconds
PayoutInterval = Annotated[float, Field(gt=0, le=PAYOUTS_MAX_INTERVAL_S)]


def max_batch_fee(fee_rate: int, batch_size: int) -> int:
    """An upper bound of one full batch's transaction fee, in shannons (rounded up like ckb does)."""
    size = _TX_BYTES_FIXED + batch_size * _TX_BYTES_PER_OUTPUT
    return -(-size * fee_rate // 1000)


def check_payment_threshold(threshold_shannons: int, fee_rate: int, batch_size: int) -> None:
    """Raise ValueError when the threshold is below 61 CKB plus one batch's fee: the operator's balance pays each
    batch's fee, so a lower threshold could leave a payment the wallet cannot make."""
    floor = MIN_PAYMENT_SHANNONS + max_batch_fee(fee_rate, batch_size)
    if threshold_shannons < floor:
        raise ValueError(
            f"threshold_shannons must be at least {floor} (61 CKB, a cell's minimum, plus one batch's "
            f"transaction fee at fee_rate {fee_rate} and batch_size {batch_size})"
        )


class PayoutSettings(_Strict):
    """``[payouts]``: the PPLNS payout engine (:mod:`ckbpool.payouts.engine`, ``ckbpool payouts serve``).

    Off until the operator enables it: it spends real money from the payout wallet. Money is integer shannons
    (1 CKB = 10^8). The network's transaction fee of each payout is paid from the pool fee (charged to
    ``fee_address``'s balance), so a miner receives exactly what it was credited; hence a fee is required
    whenever payouts are enabled. The cellbase of the pool's blocks must pay the wallet (the node's
    ``block_assembler`` lock = the wallet key's address, which ``ckbpool payouts status`` prints)."""

    enabled: bool = False
    # the ledger: a SQLAlchemy URL (postgresql+psycopg://user@host/db, sqlite:////abs/path.db) -- or the parts
    # below (PostgreSQL with the password read from a file, or a SQLite path). Exactly one way.
    database_url: str | None = None
    db_host: str | None = None
    db_port: Port = 5432
    db_name: str = "ckbpool"
    db_user: str = "ckbpool"
    db_password_file: Path | None = None
    # TLS to a PostgreSQL on another host (libpq's sslmode / sslrootcert; the hosts target sets verify-full and
    # the deployment CA when the ledger's server runs elsewhere, issue 18). None: libpq's default (prefer)
    db_sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    db_sslrootcert: Path | None = None
    sqlite_path: Path | None = None
    # the payout wallet's key (64 hex digits, mode 0600; `ckbpool init` generates it into secrets/)
    wallet_key_file: Path | None = None
    # PPLNS window = pplns_n x network difficulty of accepted work before the block
    pplns_n: Annotated[int, Field(ge=1, le=100)] = 2
    # pool fee in basis points of each block's reward (100 = 1 %), credited to fee_address (the pool's own
    # payout address); it also pays the payouts' transaction fees, so it must be >= 1 bps when enabled
    fee_bps: Annotated[int, Field(ge=0, le=10_000)] = 100
    fee_address: str | None = None
    threshold_shannons: PaymentThreshold = 100 * 100_000_000
    fee_rate: PaymentFeeRate = 1_000
    batch_size: PaymentBatchSize = 200
    interval_s: PayoutInterval = 60.0
    # a payout transaction not committed this long after it was sent is reported (metric + alert)
    unconfirmed_alert_s: Annotated[float, Field(gt=0)] = 3600.0
    # send_transaction's outputs validator (wallet.py explains): passthrough to pay non-standard locks
    outputs_validator: Literal["well_known_scripts_only", "passthrough"] = "well_known_scripts_only"
    # the payouts process' Prometheus /metrics (`ckbpool payouts serve`); None = not served
    metrics_host: str = "127.0.0.1"
    metrics_port: Port | None = 8190

    def max_batch_fee(self) -> int:
        """An upper bound of one full batch's transaction fee, in shannons (rounded up like ckb does)."""
        return max_batch_fee(self.fee_rate, self.batch_size)

    @model_validator(mode="after")
    def _check(self) -> PayoutSettings:
        ways = [self.database_url is not None, self.db_host is not None, self.sqlite_path is not None]
        if sum(ways) > 1:
            raise ValueError("set only one of database_url, db_host (PostgreSQL) or sqlite_path")
        if self.db_host is not None and self.db_password_file is None:
            raise ValueError("db_host needs db_password_file (the password is never written in the config)")
        if (self.db_sslmode is not None or self.db_sslrootcert is not None) and self.db_host is None:
            raise ValueError("db_sslmode / db_sslrootcert go with db_host (put them in database_url otherwise)")
        if self.db_sslmode in ("verify-ca", "verify-full") and self.db_sslrootcert is None:
            # libpq would look for ~/.postgresql/root.crt: name the CA rather than depend on a home directory
            raise ValueError(f"db_sslmode {self.db_sslmode} needs db_sslrootcert (the CA that signed the server)")
        check_payment_threshold(self.threshold_shannons, self.fee_rate, self.batch_size)
        if self.enabled:
            missing = [
                name
                for name, value in (("wallet_key_file", self.wallet_key_file), ("fee_address", self.fee_address))
                if value is None
            ]
            if not any(ways):
                missing.append("database_url, db_host or sqlite_path")
            if missing:
                raise ValueError(f"payouts are enabled but {', '.join(missing)} is not set")
            if self.fee_bps < 1:
                raise ValueError("fee_bps must be >= 1 when payouts are enabled: the pool fee pays transaction fees")
        return self

    def database(self) -> str | None:
        """The ledger's SQLAlchemy URL (the password read from ``db_password_file``); None = not configured."""
        if self.database_url is not None:
            return self.database_url
        if self.sqlite_path is not None:
            return f"sqlite:///{self.sqlite_path.resolve()}"
        if self.db_host is not None:
            from urllib.parse import quote

            assert self.db_password_file is not None
            password = self.db_password_file.read_text().strip()
            query = {"sslmode": self.db_sslmode, "sslrootcert": self.db_sslrootcert}
            tls = "&".join(f"{k}={quote(str(v), safe='/')}" for k, v in query.items() if v is not None)
            return (
                f"postgresql+psycopg://{quote(self.db_user, safe='')}:{quote(password, safe='')}"
                f"@{self.db_host}:{self.db_port}/{quote(self.db_name, safe='')}" + (f"?{tls}" if tls else "")
            )
        return None


PoolConfig.model_rebuild()
