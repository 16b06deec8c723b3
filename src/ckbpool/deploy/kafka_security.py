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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..bus.base import Topic
from .pki import BROKER_CN, SCRAM_MECHANISM

ADMIN_PRINCIPAL = "admin"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
#: a process's roles -> the principal it connects as, when each role runs under its own name
ROLE_PRINCIPALS: tuple[str, ...] = ("jobmaker", "stratum", "blockmaker", "accounting", "exporter")

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
