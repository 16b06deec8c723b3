"""The Kafka deployment PKI (ckbpool.deploy.pki) and the broker/ACL settings built on it (kafka_security)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ckbpool.bus.base import Topic
from ckbpool.deploy import pki
from ckbpool.deploy.errors import SecretsError
from ckbpool.deploy.kafka_security import (
    acl_bindings,
    acl_command,
    broker_security_properties,
    client_url,
    format_arguments,
    role_acls,
)

pytestmark = pytest.mark.unit

BROKERS = {"k1": ["kafka-1.internal", "10.0.0.5"]}


def test_generate_creates_private_files_once(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    created = pki.generate_kafka_secrets(secrets, BROKERS)
    assert set(created) == {pki.KAFKA_CA_KEY, pki.KAFKA_CA_CERT, "kafka-broker-k1.pem"} | {
        pki.password_file(p) for p in pki.KAFKA_PRINCIPALS
    }
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name in created:
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600, name
    before = {p.name: p.read_bytes() for p in secrets.iterdir()}
    assert pki.generate_kafka_secrets(secrets, BROKERS) == []  # idempotent: nothing replaced
    assert {p.name: p.read_bytes() for p in secrets.iterdir()} == before
    passwords = {pki.read_password(secrets, p) for p in pki.KAFKA_PRINCIPALS}
    assert len(passwords) == len(pki.KAFKA_PRINCIPALS) and all(len(p) >= 40 for p in passwords)


def test_broker_keystore_is_a_pem_kafka_reads_and_chains_to_the_ca(tmp_path: Path) -> None:
    pki.generate_kafka_secrets(tmp_path, BROKERS)
    text = (tmp_path / "kafka-broker-k1.pem").read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8 unencrypted: ssl.keystore.type=PEM, no password
    cert, ca_in_chain = x509.load_pem_x509_certificates(text.encode())
    _, ca = pki.load_ca(tmp_path)
    assert ca_in_chain == ca
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["kafka-1.internal"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert cert.subject.rfc4514_string() == f"CN={pki.BROKER_CN}"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {u.dotted_string for u in usages} == {"1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"}  # server + client
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_new_address_reissues_only_that_broker(tmp_path: Path) -> None:
    pki.generate_kafka_secrets(tmp_path, {"k1": ["a"], "k2": ["b"]})
    k2 = (tmp_path / "kafka-broker-k2.pem").read_bytes()
    created = pki.generate_kafka_secrets(tmp_path, {"k1": ["a", "10.1.1.1"], "k2": ["b"]})
    assert created == ["kafka-broker-k1.pem"]
    assert (tmp_path / "kafka-broker-k2.pem").read_bytes() == k2
    assert "10.1.1.1" in {str(n.value) for n in pki.broker_certificate(tmp_path, "k1").extensions
                          .get_extension_for_class(x509.SubjectAlternativeName).value}  # fmt: skip


def test_rotation(tmp_path: Path) -> None:
    pki.generate_kafka_secrets(tmp_path, BROKERS)
    old_password = pki.read_password(tmp_path, "stratum")
    old_jobmaker = pki.read_password(tmp_path, "jobmaker")
    assert pki.rotate_passwords(tmp_path, ["stratum"]) == ["kafka-stratum.password"]
    assert pki.read_password(tmp_path, "stratum") != old_password
    assert pki.read_password(tmp_path, "jobmaker") == old_jobmaker

    old_cert = pki.broker_certificate(tmp_path, "k1")
    pki.rotate_broker_certs(tmp_path, BROKERS)
    new_cert = pki.broker_certificate(tmp_path, "k1")
    assert new_cert.public_key() != old_cert.public_key()
    new_cert.verify_directly_issued_by(pki.load_ca(tmp_path)[1])

    _, old_ca = pki.load_ca(tmp_path)
    pki.rotate_ca(tmp_path, BROKERS)
    _, new_ca = pki.load_ca(tmp_path)
    assert new_ca != old_ca
    bundle = x509.load_pem_x509_certificates((tmp_path / pki.KAFKA_CA_CERT).read_bytes())
    assert bundle == [new_ca, old_ca]  # peers with old certificates still verify during the rolling restart
    pki.broker_certificate(tmp_path, "k1").verify_directly_issued_by(new_ca)
    pki.rotate_ca(tmp_path, BROKERS)
    assert len(x509.load_pem_x509_certificates((tmp_path / pki.KAFKA_CA_CERT).read_bytes())) == 2
    assert stat.S_IMODE((tmp_path / pki.KAFKA_CA_KEY).stat().st_mode) == 0o600
    expiry = pki.kafka_expiry(tmp_path, ["k1"])
    assert expiry["kafka-broker-k1.pem"] <= expiry[pki.KAFKA_CA_CERT]
    assert expiry["kafka-broker-k1.pem"] > dt.datetime.now(dt.UTC) + dt.timedelta(days=800)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="principal name"):
        pki.password_file("Admin; rm -rf")
    with pytest.raises(SecretsError, match="at least one host"):
        pki.generate_kafka_secrets(tmp_path / "a", {"k1": []})
    lone = tmp_path / "b"
    pki.ensure_ca(lone)
    (lone / pki.KAFKA_CA_KEY).unlink()
    with pytest.raises(SecretsError, match=r"without kafka-ca\.key"):
        pki.ensure_ca(lone)
    mismatched = tmp_path / "c"
    pki.ensure_ca(mismatched)
    other = tmp_path / "d"
    pki.ensure_ca(other)
    (mismatched / pki.KAFKA_CA_CERT).write_bytes((other / pki.KAFKA_CA_CERT).read_bytes())
    with pytest.raises(SecretsError, match="does not match"):
        pki.ensure_ca(mismatched)
    assert isinstance(pki.load_ca(other)[0], ec.EllipticCurvePrivateKey)


def test_scram_credential_is_rfc5802_and_hides_itself() -> None:
    """SaltedPassword = Hi(password, salt, i) with HMAC-SHA-512 (RFC 5802 section 2.2), computed independently."""
    salt = b"0123456789abcdef"
    cred = pki.scram_credential("pencil", salt=salt, iterations=4096)
    u = hmac.new(b"pencil", salt + b"\x00\x00\x00\x01", "sha512").digest()
    out = bytearray(u)
    for _ in range(4095):
        u = hmac.new(b"pencil", u, "sha512").digest()
        out = bytearray(a ^ b for a, b in zip(out, u, strict=True))
    assert cred.salted_password == bytes(out)
    assert "salted" in repr(cred) and base64.b64encode(cred.salted_password).decode() not in repr(cred)
    arg = pki.scram_format_argument("stratum", cred)
    assert arg == (f'SCRAM-SHA-512=[name=stratum,iterations=4096,salt="{base64.b64encode(salt).decode()}",'
                   f'saltedpassword="{base64.b64encode(bytes(out)).decode()}"]')  # fmt: skip
    assert "pencil" not in arg
    assert format_arguments({"b": "B", "a": "A"}) == ["--add-scram", "A", "--add-scram", "B"]
    assert hashlib.sha512(b"").digest_size == 64 == len(cred.salted_password)


def test_role_acls_give_each_role_only_its_topics() -> None:
    def grants(role: str) -> set[tuple[str, str, str, str]]:
        return {(b.resource_type, b.resource_name, b.pattern, b.operation) for b in role_acls(role, [role])}

    assert grants("jobmaker") == {("topic", "ckbpool.templates", "literal", "write")}
    assert {(n, o) for t, n, _, o in grants("stratum") if t == "topic"} == {
        ("ckbpool.shares", "write"), ("ckbpool.found_blocks", "write"), ("ckbpool.templates", "read"),
    }  # fmt: skip
    assert ("group", "stratum-", "prefixed", "read") in grants("stratum")
    assert all(o != "write" for _, _, _, o in grants("accounting"))
    assert all(o == "describe" for _, _, _, o in grants("exporter"))
    writers = {b.resource_name: b.principal for b in acl_bindings() if b.operation == "write"}
    assert writers == {
        "ckbpool.templates": "jobmaker", "ckbpool.shares": "stratum", "ckbpool.found_blocks": "stratum",
        "ckbpool.block_outcomes": "blockmaker",
    }  # fmt: skip
    assert set(writers) == {t.value for t in Topic}
    # a process running several roles gets their union under its own principal; prefixes follow topic_prefix
    core = role_acls("pool-core", ["jobmaker", "blockmaker"], topic_prefix="eu.")
    assert {b.resource_name for b in core if b.operation == "write"} == {
        "eu.ckbpool.templates",
        "eu.ckbpool.block_outcomes",
    }
    with pytest.raises(ValueError, match="no Kafka ACLs for role 'payouts'"):
        role_acls("x", ["payouts"])


def test_acl_command_and_client_url() -> None:
    binding = role_acls("stratum", ["stratum"])[0]
    cmd = acl_command(binding, "k:9092", "/run/secrets/admin.properties")
    assert cmd[:2] == ["kafka-acls.sh", "--bootstrap-server"] and "--allow-principal" in cmd
    assert cmd[cmd.index("--allow-principal") + 1] == "User:stratum"
    idem = next(b for b in role_acls("accounting", ["accounting"]) if b.operation == "idempotent_write")
    assert acl_command(idem, "k:9092", "c")[-3:] == ["--operation", "IdempotentWrite", "--cluster"]
    url = client_url("k:9093", "stratum", password_file="/s/kafka-stratum.password", ca_file="/s/kafka-ca.pem")
    assert url.startswith("kafka://k:9093?security_protocol=SASL_SSL&username=stratum&password_file=/s/")


def test_broker_properties() -> None:
    props = broker_security_properties(
        bind_host="10.0.0.5", advertised_host="kafka-1.internal", client_port=9093, internal_port=9094,
        controller_port=9095, keystore="/s/kafka-broker-k1.pem", truststore="/s/kafka-ca.pem",
    )  # fmt: skip
    assert props["listeners"] == ("CLIENT://10.0.0.5:9093,INTERNAL://10.0.0.5:9094,CONTROLLER://10.0.0.5:9095")
    assert props["advertised.listeners"] == "CLIENT://kafka-1.internal:9093,INTERNAL://kafka-1.internal:9094"
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    assert protocols == {"CLIENT": "SASL_SSL", "INTERNAL": "SSL", "CONTROLLER": "SSL"}  # nothing in the clear
    assert props["listener.name.internal.ssl.client.auth"] == props["listener.name.controller.ssl.client.auth"]
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:kafka-broker"
    assert "password" not in " ".join(props.values()).lower().replace("ssl.key.password", "")
    plain = broker_security_properties(
        bind_host="127.0.0.1", advertised_host="127.0.0.1", client_port=1, internal_port=2, controller_port=3,
        keystore="k", truststore="t", plaintext_port=4,
    )  # fmt: skip
    assert "PLAIN://127.0.0.1:4" in plain["listeners"] and "PLAIN:PLAINTEXT" in plain["listener.security.protocol.map"]


def test_server_and_broker_certificates_near_their_end_are_reissued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki.generate_kafka_secrets(tmp_path, {"broker-1": ["10.0.0.2"]}, ())
    assert pki.ensure_server_keystore(tmp_path, "postgres", ["10.0.0.3"])
    before = {f: (tmp_path / f).read_bytes() for f in (pki.broker_keystore_file("broker-1"), "tls-postgres.pem")}
    # a deploy well before the renewal window keeps both
    assert pki.generate_kafka_secrets(tmp_path, {"broker-1": ["10.0.0.2"]}, ()) == []
    assert not pki.ensure_server_keystore(tmp_path, "postgres", ["10.0.0.3"])
    end = pki.broker_certificate(tmp_path, "broker-1").not_valid_after_utc
    # one day inside the renewal window: both are issued again, with a later end, the same SANs, the same CA
    later = end - dt.timedelta(days=pki.RENEW_BEFORE_DAYS - 1)
    monkeypatch.setattr(pki, "_now", lambda: later)
    assert pki.generate_kafka_secrets(tmp_path, {"broker-1": ["10.0.0.2"]}, ()) == [
        pki.broker_keystore_file("broker-1")
    ]
    assert pki.ensure_server_keystore(tmp_path, "postgres", ["10.0.0.3"])
    for file, old in before.items():
        new = (tmp_path / file).read_bytes()
        assert new != old
        cert = x509.load_pem_x509_certificates(new)[0]
        assert cert.not_valid_after_utc > end
        assert cert.issuer == pki.load_ca(tmp_path)[1].subject
