"""The Kafka bus's credentials: a deployment CA, broker certificates and SCRAM passwords (issue 18, item 1).

Between hosts the bus carries what stratum servers turn into jobs (templates, payout cellbase included) and what
gets credited (shares), so every hop is TLS and every client authenticates. Files in ``secrets_dir`` (0600, the
directory 0700; only missing files are created, so re-running ``init`` never rotates anything by surprise):

==============================  ==================================================================================
kafka-ca.key                    the deployment CA's private key (signs broker certificates; nothing else reads it)
kafka-ca.pem                    the trust bundle clients and brokers verify against: the CA certificate, plus the
                                previous one for a while after :func:`rotate_ca`
kafka-broker-<name>.pem         one broker's keystore: PKCS#8 private key, its certificate, the CA certificate.
                                Kafka reads it as ``ssl.keystore.type=PEM`` (no keytool, no keystore password)
kafka-<principal>.password      a SCRAM-SHA-512 principal's password (``password_file=`` of a ``kafka://`` bus
                                URL; the broker gets it salted, :func:`scram_format_argument`)
==============================  ==================================================================================

Principals (:data:`KAFKA_PRINCIPALS`): ``admin`` (super user: creates topics and ACLs at deploy time), one per
pool role that uses the bus (``jobmaker``, ``stratum``, ``blockmaker``, ``accounting``) and ``exporter`` (the
Kafka exporter: describe only). The payout engine reads the ledger and Redis, not the bus: it has no principal.
The ACLs given to each are in :mod:`ckbpool.deploy.kafka_security`.

Brokers and controllers authenticate each other with their certificates (mutual TLS, CN ``kafka-broker``), not
with SCRAM: KRaft controllers cannot use SCRAM (its credentials live in the metadata log they serve), and so
no password has to be written into ``server.properties``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import SecretsError

KAFKA_CA_KEY = "kafka-ca.key"
KAFKA_CA_CERT = "kafka-ca.pem"
#: the roles' principals plus the deploy-time super user and the exporter (no payouts: it does not use the bus)
KAFKA_PRINCIPALS: tuple[str, ...] = ("admin", "jobmaker", "stratum", "blockmaker", "accounting", "exporter")
#: the certificate CN brokers and controllers present to each other (a super user in the broker settings)
BROKER_CN = "kafka-broker"
CA_DAYS = 3650
BROKER_CERT_DAYS = 825  # what browsers accept too: rotate well within it (`rotate_broker_certs`)
#: a server certificate of the deployment CA closer than this to its end is re-issued by the next init or deploy
#: (before the 30-day expiry alert fires), so a deployment that is deployed now and then never runs on an expired one
RENEW_BEFORE_DAYS = 60
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192  # Kafka's default for SCRAM credentials (RFC 5802 asks for >= 4096)
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def broker_keystore_file(broker: str) -> str:
    return f"kafka-broker-{_checked(broker, 'broker')}.pem"


def password_file(principal: str) -> str:
    return f"kafka-{_checked(principal, 'principal')}.password"


def _checked(name: str, what: str) -> str:
    """Names become file names and Kafka principals: keep them to a safe alphabet (no quoting anywhere)."""
    if not _NAME.match(name):
        raise SecretsError(f"Kafka {what} name {name!r}: use lower-case letters, digits, '-' and '_' (max 63)")
    return name


def _write_private(path: Path, data: bytes) -> None:
    """Create or replace ``path`` with mode 0600 from the first byte (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _prepare(secrets_dir: Path) -> None:
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(secrets_dir, 0o700)


@contextlib.contextmanager
def secrets_lock(secrets_dir: Path) -> Iterator[None]:
    """Hold ``secrets_dir/.lock`` (flock) while creating files: the Ansible role renders each host in its own
    worker process, and two of them issuing the same CA or keystore at once would leave two that do not match."""
    _prepare(secrets_dir)
    fd = os.open(secrets_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ---------------------------------------------------------------------------------------------- the CA


def new_ca(name: str, days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed P-256 CA that may sign leaves only (path length 0): the deployment's, and the tests'."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} Kafka CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8, unencrypted: what Kafka's PEM keystore reads without ssl.key.password (the file is 0600 instead)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_ca(secrets_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA key and its (newest) certificate, the first in the trust bundle."""
    try:
        key = serialization.load_pem_private_key((secrets_dir / KAFKA_CA_KEY).read_bytes(), password=None)
        certs = x509.load_pem_x509_certificates((secrets_dir / KAFKA_CA_CERT).read_bytes())
    except (OSError, ValueError) as exc:
        raise SecretsError(
            f"{secrets_dir}: cannot read the Kafka CA ({exc.__class__.__name__}): run `ckbpool init`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or certs[0].public_key() != key.public_key():
        raise SecretsError(f"{secrets_dir / KAFKA_CA_KEY} does not match the first certificate of {KAFKA_CA_CERT}")
    return key, certs[0]


def ensure_ca(secrets_dir: Path, *, name: str = "ckbpool", days: int = CA_DAYS) -> bool:
    """Create the CA if ``kafka-ca.key`` is missing; True if it did. A lone key without its certificate is an
    error (never silently replaced: brokers may already trust it)."""
    _prepare(secrets_dir)
    key_path, cert_path = secrets_dir / KAFKA_CA_KEY, secrets_dir / KAFKA_CA_CERT
    if key_path.exists():
        load_ca(secrets_dir)
        return False
    if cert_path.exists():
        raise SecretsError(f"{cert_path} exists without {KAFKA_CA_KEY}: restore the key or `rotate_ca`")
    key, cert = new_ca(name, days)
    _write_private(cert_path, _cert_pem(cert))
    _write_private(key_path, _key_pem(key))
    return True


# ---------------------------------------------------------------------------------------------- brokers


def _issue_broker(secrets_dir: Path, broker: str, sans: Sequence[str], days: int) -> None:
    if not sans:
        raise SecretsError(f"Kafka broker {broker}: give at least one host name or address for its certificate")
    _issue_server(secrets_dir, broker_keystore_file(broker), BROKER_CN, sans, days)


def server_keystore_file(service: str) -> str:
    """The keystore of another TLS server of the deployment CA (Redis, the node's RPC filter)."""
    return f"tls-{_checked(service, 'service')}.pem"


def ensure_server_keystore(
    secrets_dir: Path, service: str, sans: Sequence[str], *, days: int = BROKER_CERT_DAYS
) -> bool:
    """``tls-<service>.pem`` (key, certificate, CA: what Redis's ``tls-cert-file``/``tls-key-file`` and Python's
    ``load_cert_chain`` both read from one file) signed by the deployment CA for ``sans``. Issued when missing, when
    a SAN asked for now is not in it (the deployment gained an address) or when it ends within
    :data:`RENEW_BEFORE_DAYS`; True if it was."""
    if not sans:
        raise SecretsError(f"TLS server {service}: give at least one host name or address for its certificate")
    path = secrets_dir / server_keystore_file(service)
    if path.exists() and _current(x509.load_pem_x509_certificates(path.read_bytes())[0], sans):
        return False
    _issue_server(secrets_dir, path.name, service, sans, days)
    return True


def _issue_server(secrets_dir: Path, file: str, cn: str, sans: Sequence[str], days: int) -> None:
    ca_key, ca_cert = load_ca(secrets_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        # the DN is just CN=<cn>: for brokers CN=kafka-broker, which the broker settings map to User:kafka-broker
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # server for clients; client too: brokers and controllers authenticate each other with these certificates
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(secrets_dir / file, _key_pem(key) + _cert_pem(cert) + _cert_pem(ca_cert))


def broker_certificate(secrets_dir: Path, broker: str) -> x509.Certificate:
    """The certificate in a broker's keystore (for checks: SANs, expiry)."""
    return x509.load_pem_x509_certificates((secrets_dir / broker_keystore_file(broker)).read_bytes())[0]


def _current(cert: x509.Certificate, sans: Sequence[str]) -> bool:
    """Keep ``cert``: it names every SAN asked for now and is further than :data:`RENEW_BEFORE_DAYS` from its end."""
    renew_at = cert.not_valid_after_utc - dt.timedelta(days=RENEW_BEFORE_DAYS)
    return set(sans) <= set(_broker_sans(cert)) and _now() < renew_at


def _broker_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in ext]


# ---------------------------------------------------------------------------------------------- SCRAM


def new_password() -> str:
    return secrets.token_urlsafe(32)  # 256 bits, [A-Za-z0-9_-]: nothing to quote in JAAS or properties


def read_password(secrets_dir: Path, principal: str) -> str:
    path = secrets_dir / password_file(principal)
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsError(f"{path}: cannot read ({exc.__class__.__name__}): run `ckbpool init`") from None


@dataclass(frozen=True)
class ScramCredential:
    """What the broker stores for a SCRAM user (RFC 5802): the salted password, never the password."""

    salt: bytes
    salted_password: bytes
    iterations: int = SCRAM_ITERATIONS

    def __repr__(self) -> str:  # the salted password is password-equivalent for a client
        return f"ScramCredential(iterations={self.iterations}, salted_password=<hidden>)"


def scram_credential(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> ScramCredential:
    """SaltedPassword = PBKDF2-HMAC-SHA-512(password, salt, iterations), as Kafka's SCRAM-SHA-512 computes it."""
    salt = salt if salt is not None else secrets.token_bytes(32)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return ScramCredential(salt, salted, iterations)


def scram_format_argument(principal: str, credential: ScramCredential) -> str:
    """One ``--add-scram`` value of ``kafka-storage.sh format`` (KIP-900), salted so the password itself never
    reaches the broker's command line: ``SCRAM-SHA-512=[name=x,iterations=8192,salt="..",saltedpassword=".."]``."""
    b64 = base64.b64encode
    return (
        f"{SCRAM_MECHANISM}=[name={_checked(principal, 'principal')},iterations={credential.iterations},"
        f'salt="{b64(credential.salt).decode()}",saltedpassword="{b64(credential.salted_password).decode()}"]'
    )


# ---------------------------------------------------------------------------------------------- init / rotate


def generate_kafka_secrets(
    secrets_dir: Path,
    brokers: Mapping[str, Sequence[str]],
    principals: Iterable[str] = KAFKA_PRINCIPALS,
    *,
    name: str = "ckbpool",
    ca_days: int = CA_DAYS,
    cert_days: int = BROKER_CERT_DAYS,
) -> list[str]:
    """Create what is missing: the CA, each broker's keystore (``brokers``: name -> the host names / addresses
    clients and peers reach it by, its certificate's SANs) and a password per principal. Returns the names of the
    files created (never their content). A broker whose certificate lacks a SAN asked for now (the deployment
    gained an address) or ends within :data:`RENEW_BEFORE_DAYS` is re-issued; nothing else is ever replaced."""
    created: list[str] = []
    if ensure_ca(secrets_dir, name=name, days=ca_days):
        created += [KAFKA_CA_KEY, KAFKA_CA_CERT]
    for broker, sans in brokers.items():
        path = secrets_dir / broker_keystore_file(broker)
        if path.exists() and _current(broker_certificate(secrets_dir, broker), sans):
            continue
        _issue_broker(secrets_dir, broker, sans, cert_days)
        created.append(path.name)
    for principal in principals:
        path = secrets_dir / password_file(principal)
        if not path.exists():
            _write_private(path, (new_password() + "\n").encode())
            created.append(path.name)
    return created


KAFKA_SCRAM_ARGS = "kafka-scram.args"


def ensure_scram_format_file(secrets_dir: Path, principals: Iterable[str]) -> bool:
    """``kafka-scram.args``: the ``--add-scram`` arguments of ``kafka-storage.sh format`` for ``principals``
    (salted credentials, :func:`scram_format_argument`), one line the broker's container reads at its first
    start. Written when missing only (its salts are random: rewriting it would restart the broker for nothing;
    the storage is formatted once anyway -- later password changes go through ``kafka-configs.sh``)."""
    path = secrets_dir / KAFKA_SCRAM_ARGS
    if path.exists():
        return False
    args: list[str] = []
    for principal in sorted(set(principals)):
        args += [
            "--add-scram",
            scram_format_argument(principal, scram_credential(read_password(secrets_dir, principal))),
        ]
    _write_private(path, (" ".join(args) + "\n").encode())
    return True


def rotate_passwords(secrets_dir: Path, principals: Iterable[str]) -> list[str]:
    """New passwords for ``principals``, the files replaced at once: for a bus that is not running (nothing to
    tell). A running cluster must learn them first -- ``ckbpool keys rotate kafka``
    (:func:`ckbpool.deploy.kafka_security.rotate_scram`) stages them with :func:`stage_passwords`, alters the
    broker's credentials, then :func:`commit_passwords`."""
    rotated = []
    for principal in principals:
        _write_private(secrets_dir / password_file(principal), (new_password() + "\n").encode())
        rotated.append(password_file(principal))
    return rotated


def pending_password_file(principal: str) -> str:
    """Where a staged password waits (``kafka-<p>.password.pending``) between :func:`stage_passwords` and
    :func:`commit_passwords`: no compose secret and no host's file list names it, so nothing deploys it early."""
    return password_file(principal) + ".pending"


def stage_passwords(secrets_dir: Path, principals: Iterable[str]) -> dict[str, str]:
    """The next password of each principal, written to its pending file (0600) before the broker is told, so a
    rotation interrupted after the broker took them (crash, lost connection) loses nothing: a pending file left
    by an earlier attempt is reused, not replaced, and the retry sends the same password again."""
    out: dict[str, str] = {}
    for principal in principals:
        path = secrets_dir / pending_password_file(principal)
        password = path.read_text(encoding="ascii").strip() if path.exists() else ""
        if not password:
            password = new_password()
            _write_private(path, (password + "\n").encode())
        out[principal] = password
    return out


def commit_passwords(secrets_dir: Path, principals: Iterable[str]) -> list[str]:
    """Move each staged password over the current file (one ``rename`` each: a reader sees the old or the new
    file); what the deploy then pushes to the hosts. Returns the files replaced."""
    done = []
    for principal in principals:
        pending = secrets_dir / pending_password_file(principal)
        if pending.exists():
            os.replace(pending, secrets_dir / password_file(principal))
            done.append(password_file(principal))
    return done


def refresh_scram_format_file(secrets_dir: Path, principals: Iterable[str]) -> bool:
    """After a rotation: ``kafka-scram.args`` re-salted for ``principals`` from their (new) password files, each
    other user's argument kept byte for byte. The running broker never reads it again, but a broker whose storage
    is formatted anew (a lost volume, a new node) must start with the passwords the clients hold. False when
    there is no such file (a deployment without the secured bus)."""
    path = secrets_dir / KAFKA_SCRAM_ARGS
    if not path.exists():
        return False
    wanted = set(principals)
    parts = path.read_text(encoding="ascii").split()
    values = [v for flag, v in zip(parts[::2], parts[1::2], strict=False) if flag == "--add-scram"]
    names = [m.group(1) for v in values if (m := re.search(r"\[name=([a-z0-9_-]+),", v))]
    if len(names) != len(values) or len(values) * 2 != len(parts):
        raise SecretsError(f"{path}: not the --add-scram list ckbpool writes; remove it and run `ckbpool init`")
    args: list[str] = []
    for name, value in zip(names, values, strict=True):
        if name in wanted:
            value = scram_format_argument(name, scram_credential(read_password(secrets_dir, name)))
        args += ["--add-scram", value]
    _write_private(path, (" ".join(args) + "\n").encode())
    return True


def scram_alter_config(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """The ``--add-config-file`` content that sets a principal's SCRAM-SHA-512 password on a running cluster."""
    return f"{SCRAM_MECHANISM}=[iterations={iterations},password={password}]\n"


def rotate_broker_certs(
    secrets_dir: Path, brokers: Mapping[str, Sequence[str]], *, days: int = BROKER_CERT_DAYS
) -> list[str]:
    """Re-issue the brokers' certificates (new keys) from the current CA; brokers pick them up on restart (or
    through ``kafka-configs.sh --alter`` of the listener's keystore, which reloads it live)."""
    for broker, sans in brokers.items():
        _issue_broker(secrets_dir, broker, sans, days)
    return [broker_keystore_file(b) for b in brokers]


def rotate_ca(
    secrets_dir: Path,
    brokers: Mapping[str, Sequence[str]],
    *,
    name: str = "ckbpool",
    days: int = CA_DAYS,
    cert_days: int = BROKER_CERT_DAYS,
) -> list[str]:
    """A new CA, the brokers re-issued from it. The trust bundle keeps the previous CA certificate after the new
    one, so clients and brokers that already have the new bundle accept peers still presenting old certificates
    during a rolling restart; the next ``rotate_ca`` drops it."""
    _prepare(secrets_dir)
    old: bytes = b""
    with_old = secrets_dir / KAFKA_CA_CERT
    if with_old.exists():
        old = _cert_pem(x509.load_pem_x509_certificates(with_old.read_bytes())[0])
    key, cert = new_ca(name, days)
    _write_private(secrets_dir / KAFKA_CA_KEY, _key_pem(key))
    _write_private(secrets_dir / KAFKA_CA_CERT, _cert_pem(cert) + old)
    return [KAFKA_CA_KEY, KAFKA_CA_CERT, *rotate_broker_certs(secrets_dir, brokers, days=cert_days)]


def kafka_expiry(secrets_dir: Path, brokers: Iterable[str]) -> dict[str, dt.datetime]:
    """When the CA and each broker certificate expire (for ``validate`` warnings and an expiry metric)."""
    out = {KAFKA_CA_CERT: load_ca(secrets_dir)[1].not_valid_after_utc}
    for broker in brokers:
        out[broker_keystore_file(broker)] = broker_certificate(secrets_dir, broker).not_valid_after_utc
    return out
