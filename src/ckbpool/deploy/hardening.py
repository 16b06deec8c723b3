"""How each service of the compose stack is confined: the ``hardening`` of ``render.compose_stack``'s services.

The compose target and every host of the hosts target run the same ``compose.yaml`` (templates/compose.yaml.j2),
and its ``wiring`` macro writes what :func:`for_service` returns into each service (issue 18, item 5):

* ``cap_drop: [ALL]`` everywhere, and ``cap_add`` only for the one service whose image needs root for a moment:
  PostgreSQL (below). Nothing else binds a port below 1024 or changes owners, so nothing else gets any.
* ``security_opt: [no-new-privileges:true]`` everywhere: no setuid binary or file capability can raise a
  process above what it started with (PostgreSQL's entrypoint drops root with gosu/setpriv, which needs no
  setuid bit: root itself calls setuid).
* ``read_only: true`` where the image allows it, with a ``tmpfs`` for each path the image still writes outside
  its volumes and bind mounts. Docker mounts these ``noexec,nosuid,nodev`` unless told otherwise, owned by root
  with mode 0755 (so each names the owner or mode its writer needs: the image's own uid where it is fixed,
  1777 where it is not), and their pages count against the service's memory limit; each is capped in size.
* ``mem_limit`` and ``pids_limit`` sized per service (:data:`LIMITS`, with why), overridable per service in
  ``ckbpool.yaml`` (``resources.<service>.memory_mb`` / ``pids``; ``-`` in a name is ``_`` there). A limit is a
  ceiling, not a reservation: the kernel kills the service's biggest process when it goes over (compose then
  restarts it: ``restart: unless-stopped``), and a fork loop stops at ``pids_limit`` instead of at the host's.

What each image writes, from its contract (docker/local/README.md, which also says where a stand-in differs):

* ckb (nervos/ckb, uid 1000): the chain, its logs (``log_to_file``) and its lock under ``data_dir`` =
  ``/var/lib/ckb``, the named volume; ``/etc/ckb`` is a read-only bind mount. Read-only root, ``/tmp`` only.
* pool, payouts, proxy, rpc-filter, scrape-gateway, miner (ckbpool's own image, run as CKBPOOL_UID or the
  image's 10001): found blocks, the Kafka spool and the SQLite ledger under ``/var/lib/ckbpool`` (bind mount);
  Python's ``tempfile`` (SQLite's temporary files included) uses ``/tmp``. Read-only root, ``/tmp``.
* redis (``redis-server`` as CKBPOOL_UID, the image's entrypoint not used): AOF and snapshots in ``/data`` (bind
  mount). Read-only root, ``/tmp``.
* kafka (apache/kafka, appuser 1000): its run script writes the final ``server.properties``, ``log4j2.yaml`` and
  ``tools-log4j2.yaml`` into ``/opt/kafka/config`` at every start (KafkaDockerWrapper ``setup``, from the
  defaults in ``/etc/kafka/docker``: nothing of the image's own ``/opt/kafka/config`` is read, so an empty tmpfs
  there is enough); ``kafka-run-class.sh`` makes ``LOG_DIR`` = ``/opt/kafka/logs`` and the broker's GC log goes
  there (``-loggc``, 10 x 100 MB rotation upstream: the tmpfs caps it); the JVM keeps ``hsperfdata`` in
  ``/tmp``, and compression codecs (snappy, zstd, lz4) unpack their JNI library into ``/tmp`` and load it from
  there, so that ``/tmp`` is mounted ``exec``. The data is the named volume ``/var/lib/kafka/data``. The secured
  bus (issue 18) skips the run script: only ``/tmp`` then (:data:`KAFKA_SECURED_TMPFS`).
* postgres (postgres:15, starts as root): the entrypoint reads ``POSTGRES_PASSWORD_FILE`` (a 0600 secret of
  CKBPOOL_UID), fixes the modes and owners of ``PGDATA`` (the named volume) and ``/var/run/postgresql``, and
  re-runs itself as postgres (999). Running it as 999 instead would leave the secret unreadable (it is
  CKBPOOL_UID's, 0600), and running it as CKBPOOL_UID needs the image's nss_wrapper path and a ``PGDATA``
  subdirectory, which would move an existing ledger; so it starts as root with exactly those capabilities:
  ``CHOWN`` + ``FOWNER`` (the owners and modes), ``DAC_READ_SEARCH`` (read the secret, walk the 0700
  ``PGDATA``: read-only, narrower than ``DAC_OVERRIDE``), ``SETUID`` + ``SETGID`` (become postgres). The server
  itself then runs as 999 with none (a uid change from 0 clears them). Read-only root; the socket and lock
  directory ``/var/run/postgresql`` and ``/tmp`` are tmpfs (``/dev/shm`` is ``shm_size``).
* prometheus (nobody): the TSDB in ``/prometheus`` (named volume); scraping other hosts' gateways (hosts target)
  it reads the CA and the token, so it runs as CKBPOOL_UID with the TSDB in ``data/prometheus``. node-exporter,
  redis-exporter, kafka-exporter, postgres-exporter: single static binaries that write nothing. Read-only root,
  ``/tmp``.
* grafana (as CKBPOOL_UID): its database and plugins in ``/var/lib/grafana`` (named volume); it also logs to
  ``/var/log/grafana`` (``[log] mode = console file`` by default) and stages plugin downloads in ``/tmp``, both
  tmpfs. (No stand-in: not started by the e2e tests.)

Secret readers (pool, payouts, redis, the exporters that read a secret, grafana) run as CKBPOOL_UID, the owner
of the secrets: render leaves it out of ``.env`` when that owner is root (``render.compose_user``) and the
compose target refuses a ``CKBPOOL_UID`` of 0 (``ComposeTarget.check_user``). With every capability dropped, a
root user in those containers could not even read another uid's 0600 file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import DeployConfig, ServiceLimits

#: every compose service runs with this, whatever else it gets
NO_NEW_PRIVILEGES = "no-new-privileges:true"
#: the default ``/tmp`` of a read-only service: scratch space only, sticky and writable by any user
TMP = "/tmp:size=64m,mode=1777"
#: Kafka's ``/tmp`` (JVM perf data, JNI libraries of the compression codecs: ``exec``)
KAFKA_TMP = "/tmp:size=128m,mode=1777,exec"


@dataclass(frozen=True)
class Confinement:
    """What a service's image needs: whether its root filesystem can be read-only, the tmpfs mounts it then
    still needs (``path[:options]``, docker's ``--tmpfs`` syntax), and the capabilities it needs back."""

    read_only: bool
    tmpfs: tuple[str, ...] = (TMP,)
    cap_add: tuple[str, ...] = ()


#: per service; the reasons are in the module docstring
CONFINEMENT: dict[str, Confinement] = {
    "ckb": Confinement(read_only=True),
    "pool": Confinement(read_only=True),
    "redis": Confinement(read_only=True),
    "kafka": Confinement(
        read_only=True,
        tmpfs=(
            KAFKA_TMP,
            "/opt/kafka/config:size=8m,uid=1000,gid=1000,mode=0755",
            "/opt/kafka/logs:size=64m,uid=1000,gid=1000,mode=0755",
        ),
    ),
    "postgres": Confinement(
        read_only=True,
        tmpfs=(TMP, "/var/run/postgresql:size=8m,uid=999,gid=999,mode=3775"),
        cap_add=("CHOWN", "DAC_READ_SEARCH", "FOWNER", "SETGID", "SETUID"),
    ),
    "payouts": Confinement(read_only=True),
    "proxy": Confinement(read_only=True),
    "rpc-filter": Confinement(read_only=True),  # the node's RPC filter (pool image; hosts target, issue 18)
    "scrape-gateway": Confinement(read_only=True),  # TLS + token in front of a host's exporters (pool image)
    "miner": Confinement(read_only=True),
    "prometheus": Confinement(read_only=True),
    "node-exporter": Confinement(read_only=True),
    "redis-exporter": Confinement(read_only=True),
    "kafka-exporter": Confinement(read_only=True),
    "postgres-exporter": Confinement(read_only=True),
    "grafana": Confinement(read_only=True, tmpfs=(TMP, "/var/log/grafana:size=64m,mode=1777")),
}
#: The secured bus (``kafka.secure`` in the template's context, issue 18): the broker is started directly as
#: CKBPOOL_UID from a rendered, bind-mounted properties file with ``LOG_DIR`` under ``/tmp`` -- the run script
#: never runs, so nothing writes ``/opt/kafka/config``, and the JVM reads the image's own ``tools-log4j2.yaml``
#: there: it must not be hidden under an empty tmpfs.
KAFKA_SECURED_TMPFS: tuple[str, ...] = (KAFKA_TMP,)


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    pids: int


#: Default ceilings of the services whose needs do not follow from ckbpool.yaml (those are computed in
#: :func:`default_limits`). Memory in MiB; pids counts processes and threads.
#:
#: - ckb: a synced mainnet node with RocksDB's caches (ckb's own guidance is 4 GB+ of RAM for a full node);
#:   threads: tokio workers per core, RocksDB background jobs, the network and RPC pools (a few hundred on a
#:   large host).
#: - pool: the parent plus one Stratum V2 worker process per core (``stratum.workers`` unset): ~76 MiB each
#:   measured at start (peak RSS of importing ckbpool.pool), more with many miners; 4 GiB covers ~32 cores
#:   with room for connections. Each process has a handful of threads (asyncio's default executor included).
#: - kafka: the broker's heap is fixed by the compose file at 512 MiB (KAFKA_HEAP_OPTS); metaspace, direct
#:   buffers, the code cache and the tmpfs above take the rest; JVM threads scale with cores.
#: - payouts, proxy: one asyncio process each. miner: ``services.miner.threads`` hashing threads, little memory.
#: - prometheus: the TSDB head of a few thousand series and its queries; exporters: one small Go binary each.
#: - grafana: its server, SQLite and the dashboards' queries.
LIMITS: dict[str, Limits] = {
    "ckb": Limits(memory_mb=4096, pids=1024),
    "pool": Limits(memory_mb=4096, pids=2048),
    "kafka": Limits(memory_mb=1536, pids=512),
    "payouts": Limits(memory_mb=512, pids=256),
    "proxy": Limits(memory_mb=512, pids=256),
    "scrape-gateway": Limits(memory_mb=192, pids=64),  # one asyncio process relaying a few /metrics bodies
    "rpc-filter": Limits(memory_mb=256, pids=128),  # one asyncio process forwarding small JSON-RPC calls
    "miner": Limits(memory_mb=256, pids=128),
    "prometheus": Limits(memory_mb=1024, pids=512),
    "node-exporter": Limits(memory_mb=128, pids=128),
    "redis-exporter": Limits(memory_mb=128, pids=128),
    "kafka-exporter": Limits(memory_mb=128, pids=128),
    "postgres-exporter": Limits(memory_mb=128, pids=128),
    "grafana": Limits(memory_mb=512, pids=512),
}
#: the broker's fixed heap (compose.yaml.j2's KAFKA_HEAP_OPTS) plus the JVM's own needs: below it, OOM kills
KAFKA_MIN_MEMORY_MB = 768


def redis_memory_mb(maxmemory_mb: int) -> int:
    """Redis: ``maxmemory`` (the books; writes are refused beyond it, never evicted) + half again for the
    copy-on-write of the AOF rewrite's fork (it counts against the same cgroup) and allocator fragmentation, +
    256 MiB for client and AOF buffers."""
    return maxmemory_mb * 3 // 2 + 256


def postgres_memory_mb(shared_buffers_mb: int, max_connections: int) -> int:
    """PostgreSQL: ``shared_buffers`` + ~10 MiB per connection (a backend and its ``work_mem`` sorts) + 256 MiB
    for the server's own processes and the catalog caches."""
    return shared_buffers_mb + 10 * max_connections + 256


def default_limits(name: str, config: DeployConfig) -> Limits:
    """The ceiling of service ``name`` before ``resources`` overrides: :data:`LIMITS`, or computed from the
    settings that decide it (Redis's ``maxmemory``, PostgreSQL's buffers and connections)."""
    if name == "redis":
        return Limits(memory_mb=redis_memory_mb(config.redis.maxmemory_mb), pids=128)
    if name == "postgres":
        p = config.payouts
        # one process per connection, plus the checkpointer, WAL writer, autovacuum and friends
        return Limits(
            memory_mb=postgres_memory_mb(p.postgres_shared_buffers_mb, p.postgres_max_connections),
            pids=p.postgres_max_connections + 64,
        )
    if name == "miner":
        return Limits(memory_mb=LIMITS["miner"].memory_mb, pids=LIMITS["miner"].pids + config.services.miner.threads)
    return LIMITS[name]


def override(name: str, config: DeployConfig) -> ServiceLimits:
    """``resources.<name>`` of ``ckbpool.yaml`` (``-`` in a service name is ``_`` there)."""
    limits: ServiceLimits = getattr(config.resources, name.replace("-", "_"))
    return limits


def limits(name: str, config: DeployConfig) -> Limits:
    """The ceiling of service ``name``: the default, with what ``resources.<name>`` sets instead."""
    base, given = default_limits(name, config), override(name, config)
    return Limits(
        memory_mb=given.memory_mb if given.memory_mb is not None else base.memory_mb,
        pids=given.pids if given.pids is not None else base.pids,
    )


def limit_problems(config: DeployConfig) -> list[str]:
    """Overrides that would keep a service from running at all, each naming its key: a Redis limit below its
    own ``maxmemory``, a Kafka limit below the broker's fixed heap, a PostgreSQL limit below its
    ``shared_buffers`` or with fewer pids than its connections. (Other sizes are the operator's call.)"""
    problems: list[str] = []
    r, k, p = config.resources.redis, config.resources.kafka, config.resources.postgres
    floor = config.redis.maxmemory_mb + 64
    if r.memory_mb is not None and r.memory_mb < floor:
        problems.append(
            f"resources.redis.memory_mb: {r.memory_mb} MiB is below Redis's own redis.maxmemory_mb "
            f"({config.redis.maxmemory_mb}) + 64; give at least {floor} or lower redis.maxmemory_mb"
        )
    if k.memory_mb is not None and k.memory_mb < KAFKA_MIN_MEMORY_MB:
        problems.append(
            f"resources.kafka.memory_mb: {k.memory_mb} MiB is below the {KAFKA_MIN_MEMORY_MB} MiB the broker "
            "needs (its heap is fixed at 512 MiB)"
        )
    shared = config.payouts.postgres_shared_buffers_mb
    if p.memory_mb is not None and p.memory_mb < shared + 128:
        problems.append(
            f"resources.postgres.memory_mb: {p.memory_mb} MiB is below payouts.postgres_shared_buffers_mb "
            f"({shared}) + 128; give at least {shared + 128}"
        )
    conns = config.payouts.postgres_max_connections
    if p.pids is not None and p.pids < conns + 16:
        problems.append(
            f"resources.postgres.pids: {p.pids} is below payouts.postgres_max_connections ({conns}) + 16, one "
            f"process per connection and the server's own; give at least {conns + 16}"
        )
    return problems


def for_service(name: str, config: DeployConfig) -> dict[str, Any]:
    """The ``hardening`` of one service in ``render.compose_stack``, as the ``wiring`` macro writes it."""
    try:
        confinement = CONFINEMENT[name]
    except KeyError:
        raise ValueError(f"no hardening is defined for compose service {name!r}") from None
    ceiling = limits(name, config)
    out: dict[str, Any] = {
        "read_only": confinement.read_only,
        "tmpfs": list(confinement.tmpfs) if confinement.read_only else [],
        "cap_drop": ["ALL"],
        "cap_add": list(confinement.cap_add),
        "security_opt": [NO_NEW_PRIVILEGES],
        "mem_limit": f"{ceiling.memory_mb}m",
        "pids_limit": ceiling.pids,
    }
    if name == "kafka":
        # which Kafka runs is the template's choice (``kafka.secure``): the wiring macro takes this one then
        out["secured_tmpfs"] = list(KAFKA_SECURED_TMPFS)
    return out
