"""A real single-node Apache Kafka 4.x (KRaft: broker + controller in one JVM) on loopback ports, for tests.

The jars come from ``scripts/kafka-deps.sh`` (Maven Central, cached under ``$CKBPOOL_CACHE/kafka-<ver>/libs``).
We run the same classes the official scripts run: ``kafka.tools.StorageTool format --standalone`` once, then
``java -cp '<libs>/*' kafka.Kafka server.properties``.

``stop(keep_data=True)`` + ``start()`` restarts the broker on the same ports with the same data: an outage as
clients see it. ``stop()`` (the default) also removes the directory.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
POM = REPO / "deps" / "kafka" / "pom.xml"


class KafkaUnavailable(RuntimeError):
    """The Kafka jars are not in the cache (run scripts/kafka-deps.sh), or java is missing."""


def kafka_version() -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not match:
        raise KafkaUnavailable(f"no <kafka.version> in {POM}")
    return match.group(1).strip()


def cache_dir() -> Path:
    return Path(os.environ.get("CKBPOOL_CACHE") or Path.home() / ".cache" / "ckbpool")


def kafka_libs() -> Path:
    """The cached jar directory, checked against the stamp kafka-deps.sh writes last."""
    libs = cache_dir() / f"kafka-{kafka_version()}" / "libs"
    stamp = libs / ".complete"
    if not stamp.is_file():
        raise KafkaUnavailable(f"Kafka {kafka_version()} jars not in {libs}: run scripts/kafka-deps.sh (make deps)")
    missing = [j for j in stamp.read_text().splitlines()[1:] if not (libs / j).is_file()]
    if missing:
        raise KafkaUnavailable(f"{libs} is incomplete ({len(missing)} jars missing): rerun scripts/kafka-deps.sh")
    if shutil.which("java") is None:
        raise KafkaUnavailable("java (>= 17) is not on PATH")
    return libs


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the child when its parent dies (Linux PR_SET_PDEATHSIG), so a killed test run leaves
    no broker behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def child_guard() -> Callable[[], None] | None:
    """The ``preexec_fn`` for a test server: the death signal is tied to the *thread* that forks, so only a child
    forked from the main thread gets it (a broker restarted from ``asyncio.to_thread`` must outlive that
    worker thread)."""
    return _die_with_parent if threading.current_thread() is threading.main_thread() else None


def random_cluster_id() -> str:
    """A Kafka cluster id: base64url of 16 random bytes, no padding (as ``kafka-storage.sh random-uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class KafkaBroker:
    """One KRaft node on 127.0.0.1: ``bootstrap`` is what clients connect to."""

    HOST = "127.0.0.1"

    def __init__(self, base_dir: Path | None = None, *, heap: str = "512m", partitions: int = 1) -> None:
        self.libs = kafka_libs()
        self.version = kafka_version()
        self._own_dir = base_dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="ckbpool-kafka-")) if base_dir is None else Path(base_dir)
        self.heap = heap
        self.partitions = partitions
        self.port = free_port()
        self.controller_port = free_port()
        self.cluster_id = random_cluster_id()
        self.process: subprocess.Popen[bytes] | None = None
        self._formatted = False
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "broker.log"

    def url(self, **params: str) -> str:
        """A ``kafka://`` bus URL for this broker, with query parameters."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"kafka://{self.bootstrap}" + (f"?{query}" if query else "")

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # C1 only: a faster start, plenty for tests
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        path = self.dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self._properties().items()))
        return path

    def _properties(self) -> dict[str, str]:
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{self.HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.HOST}:{self.port},CONTROLLER://{self.HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "log.flush.interval.messages": "9223372036854775807",
        }

    def _format_args(self) -> list[str]:
        """Extra ``StorageTool format`` arguments (the secured broker's SCRAM users)."""
        return []

    def _format(self, config: Path) -> None:
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id,
                "-c",
                str(config),
                "--standalone",
                *self._format_args(),
            ),
            capture_output=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka StorageTool format failed: {result.stderr.decode(errors='replace')[-2000:]}")
        self._formatted = True

    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart, same ports and data) the broker; return once it accepts connections."""
        if self.process is not None:
            return
        config = self._write_config()
        if not self._formatted:
            self._format(config)
        log = open(self.log_path, "ab")  # noqa: SIM115  # kept open for the process's lifetime
        self._log_file = log
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(config)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_guard(),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kafka exited with {self.process.returncode}:\n{self.log_tail()}")
            if _accepts(self.HOST, self.port) and "Kafka Server started" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        self.stop(keep_data=True)
        raise TimeoutError(f"kafka did not start within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, keep_data: bool = False, timeout: float = 30.0, kill: bool = False) -> None:
        """Stop the broker (SIGTERM, or SIGKILL with ``kill=True`` / after ``timeout``).

        ``keep_data=True`` keeps the directory for a ``start()`` on the same ports; otherwise it is removed.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        deadline = time.monotonic() + 10
        while _accepts(self.HOST, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not keep_data:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                shutil.rmtree(self.dir / "data", ignore_errors=True)
            self._formatted = False

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def running_broker(tmp_path_factory: Any) -> Iterator[KafkaBroker]:
    """A started broker for a test module's ``kafka`` fixture, stopped afterwards. Without Kafka (no Java, no jars)
    the module is skipped on a developer machine and fails under CI, where `make deps` must have provided it."""
    import pytest

    try:
        broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    except KafkaUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {exc}")
        pytest.skip(str(exc))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class SecureKafkaBroker(KafkaBroker):
    """The same single KRaft node with the listeners a multi-host deployment gets (``ckbpool.deploy.kafka_security``):
    ``CLIENT`` (SASL_SSL + SCRAM-SHA-512, ``port``/``bootstrap``), ``INTERNAL`` and ``CONTROLLER`` (TLS, client
    certificates), the StandardAuthorizer denying by default, the SCRAM users of ``principals`` bootstrapped at
    format time (salted), and credentials from ``ckbpool.deploy.pki`` in ``secrets_dir``.

    ``plaintext=True`` adds a ``PLAIN`` listener (``plain_port``) whose anonymous principal is a super user: the
    same broker process serves both, for benchmarks comparing TLS+SASL with plaintext. Tests of the ACLs leave
    it off. Create ACLs with :meth:`grant` (the admin API, as ``admin``)."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        principals: tuple[str, ...] | None = None,
        plaintext: bool = False,
        **kwargs: Any,
    ) -> None:
        from ckbpool.deploy import pki

        super().__init__(base_dir, **kwargs)
        self.secrets_dir = self.dir / "secrets"
        self.principals = principals or pki.KAFKA_PRINCIPALS
        pki.generate_kafka_secrets(self.secrets_dir, {"test": [self.HOST, "localhost"]}, self.principals)
        self.internal_port = free_port()
        self.plain_port: int | None = free_port() if plaintext else None
        self.ca_file = self.secrets_dir / pki.KAFKA_CA_CERT

    def password_file(self, principal: str) -> Path:
        from ckbpool.deploy import pki

        return self.secrets_dir / pki.password_file(principal)

    def url(self, principal: str = "admin", **params: str) -> str:  # type: ignore[override]
        """A secured ``kafka://`` bus URL connecting as ``principal`` (its password by file)."""
        from ckbpool.deploy.kafka_security import client_url

        return client_url(self.bootstrap, principal, password_file=str(self.password_file(principal)),
                          ca_file=str(self.ca_file), **params)  # fmt: skip

    def plain_url(self, **params: str) -> str:
        assert self.plain_port is not None, "started without plaintext=True"
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"kafka://{self.HOST}:{self.plain_port}" + (f"?{query}" if query else "")

    def _properties(self) -> dict[str, str]:
        from ckbpool.deploy import pki
        from ckbpool.deploy.kafka_security import broker_security_properties

        props = super()._properties()
        props.update(
            broker_security_properties(
                bind_host=self.HOST,
                advertised_host=self.HOST,
                client_port=self.port,
                internal_port=self.internal_port,
                controller_port=self.controller_port,
                keystore=str(self.secrets_dir / pki.broker_keystore_file("test")),
                truststore=str(self.ca_file),
                plaintext_port=self.plain_port,
                extra_super_users=("User:ANONYMOUS",) if self.plain_port is not None else (),
            )
        )
        return props

    def _format_args(self) -> list[str]:
        from ckbpool.deploy import pki
        from ckbpool.deploy.kafka_security import format_arguments

        return format_arguments({
            p: pki.scram_format_argument(p, pki.scram_credential(pki.read_password(self.secrets_dir, p)))
            for p in self.principals
        })  # fmt: skip

    async def grant(self, principals: dict[str, tuple[str, ...]] | None = None, *, topic_prefix: str = "") -> int:
        """Create the deployment's ACLs (``ckbpool.deploy.kafka_security.acl_bindings``) as ``admin``."""
        from ckbpool.deploy.kafka_security import acl_bindings, apply_acls

        return await apply_acls(self.url("admin"), acl_bindings(principals, topic_prefix=topic_prefix))


def running_secure_broker(tmp_path_factory: Any, **kwargs: Any) -> Iterator[SecureKafkaBroker]:
    """:func:`running_broker` for the secured broker."""
    import pytest

    try:
        broker = SecureKafkaBroker(tmp_path_factory.mktemp("kafka-secure"), **kwargs)
    except KafkaUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {exc}")
        pytest.skip(str(exc))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
