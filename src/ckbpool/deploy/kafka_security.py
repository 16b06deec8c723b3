"""The broker side of the secured bus: server.properties for TLS + SASL/SCRAM listeners, the SCRAM users to
bootstrap at format time, and the ACLs that decide which service may write and read which topic.

Listeners (each broker/controller node):

- ``CLIENT`` (SASL_SSL, SCRAM-SHA-512): the pool services and the exporter, each with its own principal;
- ``INTERNAL`` (SSL, client certificate required): broker to broker;
- ``CONTROLLER`` (SSL, client certificate required): KRaft controller traffic. SCRAM cannot serve here (the
  controllers hold the SCRAM credentials in the metadata log they replicate), and certificates mean no password
  in ``server.properties``. Brokers present ``CN=kafka-broker`` (:mod:`ckbpool.deploy.pki`), which the mapping
  rule turns into ``User:kafka-broker``, a super user.

Authorization: KRaft's ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false`` (deny by default),
super users ``admin`` (deploy time: topics, ACLs) and ``kafka-broker``. :func:`role_acls` gives each pool role
exactly what its code does on the bus (``ckbpool.pool.service``):

==========  ========================================================  =====================================
role        writes                                                    reads (consumer group prefix)
==========  ========================================================  =====================================
jobmaker    templates                                                 --
stratum     shares, found_blocks                                      templates (``stratum-``)
blockmaker  block_outcomes                                            found_blocks (``blockmaker@``)
accounting  -- (IdempotentWrite on the cluster: its producer starts)    shares, block_outcomes (``accounting@``)
exporter    -- (describe topics, groups and the cluster)              --
==========  ========================================================  =====================================

ACLs are created at deploy time through the Kafka admin API (:func:`apply_acls`, CreateAcls v1, which Kafka
4.x still serves) -- no Java on the machine that runs it -- or with ``kafka-acls.sh`` from :func:`acl_command`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..bus.base import Topic
from .pki import BROKER_CN, SCRAM_MECHANISM, ScramCredential

ADMIN_PRINCIPAL = "admin"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
#: a process's roles -> the principal it connects as, when each role runs under its own name
ROLE_PRINCIPALS: tuple[str, ...] = ("jobmaker", "stratum", "blockmaker", "accounting", "exporter")
#: the pool roles that use the bus, in the order a combined principal names them
BUS_ROLES: tuple[str, ...] = ("jobmaker", "stratum", "blockmaker", "accounting")
EXPORTER_PRINCIPAL = "exporter"


def pool_principal(roles: Iterable[str]) -> str:
    """The principal of a pool process that runs ``roles``: their names joined by ``-`` in :data:`BUS_ROLES`
    order (``stratum``; ``jobmaker-blockmaker-accounting``; the embedded pool ``jobmaker-stratum-blockmaker-
    accounting``). One principal per *set of roles*, not per host: two stratum hosts share ``stratum``, and the
    name says exactly what its ACLs allow."""
    wanted = set(roles) & set(BUS_ROLES)
    if not wanted:
        raise ValueError(f"no pool role that uses the bus in {sorted(roles)}")
    return "-".join(r for r in BUS_ROLES if r in wanted)


def all_principals() -> list[str]:
    """Every principal a deployment may use: ``admin``, ``exporter`` and one per non-empty set of bus roles (15).

    ``init`` gives each a password and the broker's storage is formatted with all of them, so placing roles on
    hosts differently later needs no new SCRAM user (a principal without ACLs can authenticate and do nothing:
    the authorizer denies by default); the ACLs given at deploy time follow the actual placement."""
    out = [ADMIN_PRINCIPAL, EXPORTER_PRINCIPAL]
    n = len(BUS_ROLES)
    for mask in range(1, 1 << n):
        out.append(pool_principal(BUS_ROLES[i] for i in range(n) if mask >> i & 1))
    return out


def placement_acls(processes: Iterable[Iterable[str]], *, exporter: bool, topic_prefix: str = "") -> list[AclBinding]:
    """The ACLs of a deployment whose pool processes run these role sets (one per pool host), plus the
    exporter's when it runs: each process's principal gets exactly the union of its roles' rules."""
    mapping: dict[str, tuple[str, ...]] = {}
    for roles in processes:
        bus = tuple(r for r in BUS_ROLES if r in set(roles))
        if bus:
            mapping[pool_principal(bus)] = bus
    if exporter:
        mapping[EXPORTER_PRINCIPAL] = ("exporter",)
    return acl_bindings(mapping, topic_prefix=topic_prefix)


ResourceType = Literal["topic", "group", "cluster"]
PatternType = Literal["literal", "prefixed"]
Operation = Literal["read", "write", "describe", "create", "all", "idempotent_write"]

# Kafka's wire codes (org.apache.kafka.common.resource.ResourceType, PatternType, acl.AclOperation/AclPermissionType)
RESOURCE_CODES: dict[str, int] = {"topic": 2, "group": 3, "cluster": 4}
PATTERN_CODES: dict[str, int] = {"literal": 3, "prefixed": 4}
OPERATION_CODES: dict[str, int] = {"all": 2, "read": 3, "write": 4, "create": 5, "describe": 8, "idempotent_write": 12}
ALLOW = 3


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: ``User:<principal>`` may ``operation`` on the resource, from any host."""

    principal: str
    resource_type: ResourceType
    resource_name: str
    pattern: PatternType
    operation: Operation

    @property
    def kafka_principal(self) -> str:
        return f"User:{self.principal}"


def _rules(prefix: str) -> dict[str, list[tuple[ResourceType, str, PatternType, Operation]]]:
    def topic(t: Topic) -> str:
        return prefix + t.value

    def read(t: Topic, group: str) -> list[tuple[ResourceType, str, PatternType, Operation]]:
        return [("topic", topic(t), "literal", "read"), ("group", group, "prefixed", "read")]

    return {
        "jobmaker": [("topic", topic(Topic.TEMPLATES), "literal", "write")],
        "stratum": [
            ("topic", topic(Topic.SHARES), "literal", "write"),
            ("topic", topic(Topic.FOUND_BLOCKS), "literal", "write"),
            *read(Topic.TEMPLATES, "stratum-"),  # group stratum-<server_id>@<topic>
        ],
        "blockmaker": [
            ("topic", topic(Topic.BLOCK_OUTCOMES), "literal", "write"),
            *read(Topic.FOUND_BLOCKS, "blockmaker@"),
        ],
        # IdempotentWrite on the cluster lets its bus's (idempotent) producer start -- InitProducerId needs it or
        # WRITE on some topic -- and writes nothing: a producer still needs WRITE on a topic to publish there
        "accounting": [
            *read(Topic.SHARES, "accounting@"),
            *read(Topic.BLOCK_OUTCOMES, "accounting@"),
            ("cluster", "kafka-cluster", "literal", "idempotent_write"),
        ],
        "exporter": [
            ("topic", prefix + "ckbpool.", "prefixed", "describe"),
            ("group", "*", "literal", "describe"),
            ("cluster", "kafka-cluster", "literal", "describe"),
        ],
    }


def role_acls(principal: str, roles: Iterable[str], *, topic_prefix: str = "") -> list[AclBinding]:
    """The ACLs of a principal that runs ``roles`` (a process with several roles gets their union)."""
    rules = _rules(topic_prefix)
    out: set[AclBinding] = set()
    for role in roles:
        if role not in rules:
            raise ValueError(f"no Kafka ACLs for role {role!r} (known: {', '.join(rules)})")
        out.update(AclBinding(principal, *rule) for rule in rules[role])
    return sorted(out)


def acl_bindings(principals: Mapping[str, Iterable[str]] | None = None, *, topic_prefix: str = "") -> list[AclBinding]:
    """Every ACL of a deployment: ``principals`` maps a principal to the roles it runs (default: one principal per
    role, named after it)."""
    mapping = principals if principals is not None else {p: (p,) for p in ROLE_PRINCIPALS}
    return sorted(
        {b for principal, roles in mapping.items() for b in role_acls(principal, roles, topic_prefix=topic_prefix)}
    )


def acl_command(binding: AclBinding, bootstrap: str, command_config: str) -> list[str]:
    """``kafka-acls.sh`` arguments creating one binding (``command_config``: the admin's client properties file)."""
    args = ["kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config", command_config, "--add",
            "--allow-principal", binding.kafka_principal, "--operation",
            binding.operation.title().replace("_", "")]  # fmt: skip
    if binding.resource_type == "cluster":
        args.append("--cluster")
    else:
        args += [f"--{binding.resource_type}", binding.resource_name]
    if binding.pattern == "prefixed":
        args += ["--resource-pattern-type", "prefixed"]
    return args


def broker_security_properties(
    *,
    bind_host: str,
    advertised_host: str,
    client_port: int,
    internal_port: int,
    controller_port: int,
    keystore: str,
    truststore: str,
    plaintext_port: int | None = None,
    extra_super_users: Sequence[str] = (),
) -> dict[str, str]:
    """server.properties keys (overriding the plaintext ones) for a broker+controller node with the listeners of
    the module docstring. ``keystore`` / ``truststore``: paths *as the broker sees them* of
    ``kafka-broker-<name>.pem`` and ``kafka-ca.pem``. ``plaintext_port`` adds an unauthenticated ``PLAIN``
    listener (tests and benchmarks only: its principal is ``User:ANONYMOUS``, which has no ACLs unless
    ``extra_super_users`` names it). For the official image's environment: ``KAFKA_`` + key upper-cased with
    ``.`` -> ``_``."""
    listeners = {"CLIENT": client_port, "INTERNAL": internal_port}
    protocols = {"CLIENT": "SASL_SSL", "INTERNAL": "SSL", "CONTROLLER": "SSL"}
    if plaintext_port is not None:
        listeners["PLAIN"] = plaintext_port
        protocols["PLAIN"] = "PLAINTEXT"
    mechanism = SCRAM_MECHANISM.lower()
    super_users = [f"User:{ADMIN_PRINCIPAL}", f"User:{BROKER_CN}", *extra_super_users]
    return {
        "listeners": ",".join(
            [
                *(f"{name}://{bind_host}:{port}" for name, port in listeners.items()),
                f"CONTROLLER://{bind_host}:{controller_port}",
            ]
        ),
        "advertised.listeners": ",".join(f"{name}://{advertised_host}:{port}" for name, port in listeners.items()),
        "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
        "inter.broker.listener.name": "INTERNAL",
        "controller.listener.names": "CONTROLLER",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": keystore,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": truststore,
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "ssl.endpoint.identification.algorithm": "https",  # peers' certificates must name the advertised host
        "ssl.client.auth": "none",  # clients authenticate with SCRAM on CLIENT ...
        "listener.name.internal.ssl.client.auth": "required",  # ... brokers and controllers with certificates
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.client.sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"listener.name.client.{mechanism}.sasl.jaas.config": SCRAM_JAAS,
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(super_users),
    }


def format_arguments(credentials: Mapping[str, str]) -> list[str]:
    """``kafka-storage.sh format`` arguments bootstrapping the SCRAM users (principal -> ``--add-scram`` value
    from :func:`ckbpool.deploy.pki.scram_format_argument`): ``["--add-scram", v1, "--add-scram", v2, ...]``."""
    out: list[str] = []
    for principal in sorted(credentials):
        out += ["--add-scram", credentials[principal]]
    return out


def client_url(
    bootstrap: str,
    principal: str,
    *,
    password_file: str,
    ca_file: str,
    client_id: str | None = None,
    **params: str,
) -> str:
    """The ``kafka://`` bus URL of a pool process connecting as ``principal`` (secrets by file name only)."""
    query = {
        "security_protocol": "SASL_SSL",
        "username": principal,
        "password_file": password_file,
        "ca_file": ca_file,
        "client_id": client_id or principal,
        **params,
    }
    return f"kafka://{bootstrap}?" + "&".join(f"{k}={v}" for k, v in query.items())


async def apply_acls(admin_url: str, bindings: Iterable[AclBinding]) -> int:
    """Create ``bindings`` through the admin API as the principal of ``admin_url`` (a ``kafka://`` URL with the
    admin's credentials); idempotent (Kafka keeps one copy of an identical binding). Returns how many were sent.

    aiokafka has the CreateAcls request (v1: the baseline Kafka 4.x keeps) but no admin method for it, so this
    sends the request itself through the admin client's connection."""
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
    from aiokafka.protocol.admin import CreateAclsRequest  # type: ignore[import-untyped]

    from ..bus.base import BusError
    from ..bus.kafka import KafkaBusConfig

    config = KafkaBusConfig.from_url(admin_url)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id}-acls",
        request_timeout_ms=config.request_timeout_ms,
        **config.client_security(),
    )
    await admin.start()
    sent = 0
    try:
        for b in bindings:
            request = CreateAclsRequest(
                RESOURCE_CODES[b.resource_type], b.resource_name, PATTERN_CODES[b.pattern], b.kafka_principal, "*",
                OPERATION_CODES[b.operation], ALLOW,
            )  # fmt: skip
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code != 0:
                    raise BusError(f"Kafka refused the ACL {b}: error {code} {message or ''}".strip())
            sent += 1
    finally:
        await admin.close()
    return sent


async def setup_bus(admin_url: str, bindings: Sequence[AclBinding], *, timeout: float = 180.0) -> tuple[int, int]:
    """Deploy time, as ``admin``: wait (bounded by ``timeout``) for the broker to take the admin's connection,
    create the bus's missing topics as the pool's own bus would (:meth:`ckbpool.bus.kafka.KafkaBus.ensure_topics`:
    the pool processes may not, no principal but ``admin`` has CREATE) and the ACLs. Returns (topics created,
    ACLs sent). Kafka keeps one copy of an identical binding, so this is idempotent."""
    import asyncio
    import time

    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from ..bus.base import BusError
    from ..bus.kafka import MAX_MESSAGE_BYTES, KafkaBusConfig

    config = KafkaBusConfig.from_url(admin_url)
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=config.bootstrap_servers,
            client_id=f"{config.client_id}-topics",
            request_timeout_ms=config.request_timeout_ms,
            **config.client_security(),
        )
        try:
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                wanted = [
                    NewTopic(
                        config.topic_name(topic),
                        config.partitions.get(topic, 1),
                        config.replication_factor,
                        topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
                    )
                    for topic in Topic
                    if config.topic_name(topic) not in existing
                ]
                if wanted:
                    response = await admin.create_topics(wanted)
                    for name, code, *rest in response.topic_errors:
                        if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
                            raise BusError(f"creating Kafka topic {name} failed: error {code} {rest}")
            finally:
                await admin.close()
            break
        except BusError:
            raise
        except Exception as exc:  # the broker still starting (any client error): retried until the deadline
            if time.monotonic() > deadline:
                raise BusError(f"Kafka did not take the admin's connection within {timeout:.0f}s: {exc!r}") from None
            await asyncio.sleep(3)
    return len(wanted), await apply_acls(admin_url, bindings)


# ---------------------------------------------------------------------------------------------- rotation

#: Kafka's ScramMechanism codes (org.apache.kafka.clients.admin.ScramMechanism)
SCRAM_MECHANISM_CODES: dict[str, int] = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}


@functools.cache
def _alter_scram_request() -> type[Any]:
    """aiokafka's Request for AlterUserScramCredentials (API key 51, KIP-554; v0 is the only version and is
    "flexible": compact strings/bytes and tagged fields). aiokafka has no admin method for it, so the schema
    of Kafka's AlterUserScramCredentials{Request,Response}.json is written out here."""
    from aiokafka.protocol.api import Request, RequestStruct, Response  # type: ignore[import-untyped]
    from aiokafka.protocol.types import (  # type: ignore[import-untyped]
        CompactArray,
        CompactBytes,
        CompactString,
        Int8,
        Int16,
        Int32,
        Schema,
        TaggedFields,
    )

    class AlterUserScramCredentialsResponse_v0(Response):  # type: ignore[misc]
        API_KEY = 51
        API_VERSION = 0
        SCHEMA = Schema(
            ("throttle_time_ms", Int32),
            (
                "results",
                CompactArray(
                    ("user", CompactString("utf-8")),
                    ("error_code", Int16),
                    ("error_message", CompactString("utf-8")),
                    ("tags", TaggedFields),
                ),
            ),
            ("tags", TaggedFields),
        )

    class AlterUserScramCredentialsRequest_v0(RequestStruct):  # type: ignore[misc]
        FLEXIBLE_VERSION = True
        API_KEY = 51
        API_VERSION = 0
        RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
        SCHEMA = Schema(
            ("deletions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields))),
            (
                "upsertions",
                CompactArray(
                    ("name", CompactString("utf-8")),
                    ("mechanism", Int8),
                    ("iterations", Int32),
                    ("salt", CompactBytes),
                    ("salted_password", CompactBytes),
                    ("tags", TaggedFields),
                ),
            ),
            ("tags", TaggedFields),
        )

    class AlterUserScramCredentialsRequest(Request[AlterUserScramCredentialsRequest_v0]):  # type: ignore[misc]
        API_KEY = 51

        def __init__(self, upsertions: list[tuple[str, int, int, bytes, bytes, dict[int, bytes]]]) -> None:
            self._upsertions = upsertions

        def build(self, request_struct_class: type[Any]) -> Any:
            return request_struct_class([], self._upsertions, {})

    return AlterUserScramCredentialsRequest


async def alter_scram_credentials(admin_url: str, credentials: Mapping[str, ScramCredential]) -> None:
    """Set each principal's SCRAM-SHA-512 credential on the running cluster (AlterUserScramCredentials, as the
    principal of ``admin_url``): created if missing, replaced if present, all in one request. Only the salted
    form travels (over the TLS listener); the password itself never leaves this machine. The broker answers once
    the controller has committed the change; every broker applies it from the metadata log. Connections already
    authenticated stay up (Kafka checks SCRAM at authentication only, and ckbpool's brokers do not set
    ``connections.max.reauth.ms``); the next authentication needs the new password."""
    from aiokafka.admin import AIOKafkaAdminClient

    from ..bus.base import BusError
    from ..bus.kafka import KafkaBusConfig

    if not credentials:
        return
    config = KafkaBusConfig.from_url(admin_url)
    mechanism = SCRAM_MECHANISM_CODES[SCRAM_MECHANISM]
    upsertions: list[tuple[str, int, int, bytes, bytes, dict[int, bytes]]] = [
        (name, mechanism, c.iterations, c.salt, c.salted_password, {}) for name, c in sorted(credentials.items())
    ]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap_servers,
        client_id=f"{config.client_id}-scram",
        request_timeout_ms=config.request_timeout_ms,
        **config.client_security(),
    )
    await admin.start()
    try:
        response = await admin._send_request(_alter_scram_request()(upsertions))
    finally:
        await admin.close()
    refused = [f"{user}: error {code} {message or ''}".strip() for user, code, message, _ in response.results if code]
    if refused:
        raise BusError(f"Kafka refused the new SCRAM credentials of {'; '.join(refused)}")
    answered = {user for user, *_ in response.results}
    if answered != set(credentials):
        raise BusError(f"Kafka answered for {sorted(answered)}, not for the principals sent {sorted(credentials)}")


async def rotate_scram(
    bootstrap: str, secrets_dir: Path, principals: Sequence[str], *, timeout: float = 60.0
) -> list[str]:
    """``ckbpool keys rotate kafka``: new SCRAM passwords for ``principals``, the running cluster told first.

    1. each new password is staged in ``kafka-<p>.password.pending`` (:func:`ckbpool.deploy.pki.stage_passwords`;
       a retry after a failure reuses it);
    2. the broker gets the new credentials through the admin API, as ``admin`` (:func:`alter_scram_credentials`);
       when ``admin`` itself is rotated and an earlier attempt already changed it, the staged admin password is
       the one that authenticates, and is used;
    3. only then the staged files replace the current ones, and ``kafka-scram.args`` is re-salted to match.

    The deploy then pushes the files and restarts their clients. Returns the files replaced.

    SCRAM keeps one credential per user and mechanism, so a principal cannot hold the old and the new password
    at once: from step 2 until a client restarts with its new file, that client's *new* connections are refused
    (its established ones keep working). Bounded by ``timeout`` for the broker to take the admin's connection."""
    import asyncio
    import time

    from ..bus.base import BusError
    from . import pki

    for principal in principals:
        pki.password_file(principal)  # the name is checked before anything is written
    if not principals:
        raise BusError("no principal to rotate")
    staged = pki.stage_passwords(secrets_dir, principals)
    credentials = {p: pki.scram_credential(password) for p, password in staged.items()}

    def admin_url(password_file: Path) -> str:
        return client_url(bootstrap, ADMIN_PRINCIPAL, password_file=str(password_file),
                          ca_file=str(secrets_dir / pki.KAFKA_CA_CERT), client_id="ckbpool-rotate")  # fmt: skip

    candidates = [secrets_dir / pki.password_file(ADMIN_PRINCIPAL)]
    if ADMIN_PRINCIPAL in staged:
        candidates.append(secrets_dir / pki.pending_password_file(ADMIN_PRINCIPAL))
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    done = False
    while not done:
        for candidate in candidates:
            try:
                await alter_scram_credentials(admin_url(candidate), credentials)
            except BusError:
                raise
            except Exception as exc:  # refused credentials, or the broker not reachable (yet): next / retried
                last = exc
                continue
            done = True
            break
        else:
            if time.monotonic() > deadline:
                raise BusError(
                    f"Kafka at {bootstrap} did not take the admin's connection within {timeout:.0f}s "
                    f"({type(last).__name__}); nothing was replaced: the staged passwords stay for a retry"
                ) from None
            await asyncio.sleep(2)
    replaced = pki.commit_passwords(secrets_dir, principals)
    if pki.refresh_scram_format_file(secrets_dir, principals):
        replaced.append(pki.KAFKA_SCRAM_ARGS)
    return replaced


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m ckbpool.deploy.kafka_security apply --bootstrap H:P --secrets-dir D --process ROLES ...``:
    what the Ansible role runs on the controller once Kafka is up (topics and ACLs through the admin API, as
    ``admin``, whose password never leaves the controller). Prints one line: ``topics created N, acls M``."""
    import argparse
    import asyncio

    from . import pki

    parser = argparse.ArgumentParser(prog="python -m ckbpool.deploy.kafka_security")
    sub = parser.add_subparsers(dest="command", required=True)
    apply = sub.add_parser("apply", help="create the bus topics and the ACLs of the given pool processes")
    apply.add_argument("--bootstrap", required=True, help="host:port of the broker's CLIENT listener")
    apply.add_argument("--secrets-dir", required=True, type=Path)
    apply.add_argument("--process", action="append", default=[], help="roles of one pool process, comma-separated")
    apply.add_argument("--exporter", action="store_true", help="the Kafka exporter runs: give it its ACLs")
    apply.add_argument("--topic-prefix", default="")
    apply.add_argument("--timeout", type=float, default=180.0)
    rotate = sub.add_parser(
        "rotate",
        help="new SCRAM passwords: the running broker first (admin API), then the files (then deploy them)",
    )
    rotate.add_argument("--bootstrap", required=True, help="host:port of the broker's CLIENT listener")
    rotate.add_argument("--secrets-dir", required=True, type=Path)
    rotate.add_argument(
        "--principal", action="append", default=[],
        help="a principal to rotate (repeatable; default: every principal with a password file in --secrets-dir)",
    )  # fmt: skip
    rotate.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "rotate":
        return _rotate_main(args)
    secrets_dir: Path = args.secrets_dir
    url = client_url(
        args.bootstrap,
        ADMIN_PRINCIPAL,
        password_file=str(secrets_dir / pki.password_file(ADMIN_PRINCIPAL)),
        ca_file=str(secrets_dir / pki.KAFKA_CA_CERT),
        client_id="ckbpool-deploy",
        **({"topic_prefix": args.topic_prefix} if args.topic_prefix else {}),
    )
    bindings = placement_acls(
        [p.split(",") for p in args.process], exporter=args.exporter, topic_prefix=args.topic_prefix
    )
    created, sent = asyncio.run(setup_bus(url, bindings, timeout=args.timeout))
    print(f"topics created {created}, acls {sent}")
    return 0


def _rotate_main(args: Any) -> int:
    """``ckbpool keys rotate kafka`` / ``python -m ckbpool.deploy.kafka_security rotate``: prints what changed
    (file names, never content) and what the operator does next."""
    import asyncio
    import sys

    from ..bus.base import BusError
    from . import pki
    from .errors import SecretsError

    secrets_dir: Path = args.secrets_dir
    principals: list[str] = args.principal or [
        p for p in dict.fromkeys([*pki.KAFKA_PRINCIPALS, *all_principals()])
        if (secrets_dir / pki.password_file(p)).exists()
    ]  # fmt: skip
    try:
        missing = [p for p in principals if not (secrets_dir / pki.password_file(p)).exists()]
        if missing:
            raise SecretsError(f"{secrets_dir}: no password file for {', '.join(missing)} (see `ckbpool init`)")
        replaced = asyncio.run(rotate_scram(args.bootstrap, secrets_dir, principals, timeout=args.timeout))
    except (BusError, SecretsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"kafka: new SCRAM credentials of {', '.join(principals)} are live on the broker")
    print(f"replaced in {secrets_dir}: {', '.join(replaced)}")
    print("next: deploy, so each host gets its new password file and its services restart with it (the hosts")
    print("      target restarts the services whose secrets changed; on the compose target `docker compose -p")
    print("      <name> restart`: a container re-reads a secret file only when it restarts). Until a client")
    print("      restarts, its open connections keep working; a new connection with the old password is refused.")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised by the hosts e2e through the role
    raise SystemExit(_main())
