"""Security settings of the Kafka bus URL (no broker): SASL_SSL parsing, refusals, what reaches aiokafka."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from ckbpool.bus import BusError
from ckbpool.bus.kafka import KafkaBusConfig

pytestmark = pytest.mark.unit


def test_sasl_ssl_url(tmp_path: Path) -> None:
    password = tmp_path / "kafka-stratum.password"
    password.write_text("s3cret-value\n")
    config = KafkaBusConfig.from_url(
        f"kafka://k1:9093?security_protocol=sasl_ssl&username=stratum&password_file={password}"
        "&sasl_mechanism=scram-sha-512&check_hostname=0"
    )
    assert config.security_protocol == "SASL_SSL" and config.username == "stratum"
    assert config.password_file == password and config.ca_file is None and not config.check_hostname
    assert "s3cret" not in repr(config)  # the password is read when a client is made, never kept
    kwargs = config.client_security()
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "stratum" and kwargs["sasl_plain_password"] == "s3cret-value"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2 and not context.check_hostname
    assert KafkaBusConfig.from_url("kafka://k1:9092").client_security() == {}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("security_protocol=SSL", "security_protocol must be one of"),
        ("security_protocol=SASL_SSL", "needs username and password_file"),
        ("security_protocol=SASL_SSL&username=u", "needs password_file"),
        ("security_protocol=SASL_SSL&username=u&password_file=/p&sasl_mechanism=PLAIN", "sasl_mechanism"),
        ("username=u&password_file=/p", "never sent in the clear"),
        ("ca_file=/ca.pem", "never sent in the clear"),
        ("security_protocol=SASL_SSL&username=u&password=hunter2", "never put the password in the URL"),
    ],
)
def test_bad_security_urls(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaBusConfig.from_url(f"kafka://k1:9093?{query}")
    with pytest.raises(ValueError, match="never put the password"):
        KafkaBusConfig.from_url("kafka://u:hunter2@k1:9093")


def test_unreadable_secrets_are_clear_errors(tmp_path: Path) -> None:
    base = "kafka://k1:9093?security_protocol=SASL_SSL&username=u"
    with pytest.raises(BusError, match="cannot read"):
        KafkaBusConfig.from_url(f"{base}&password_file={tmp_path / 'missing'}").client_security()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(BusError, match="is empty"):
        KafkaBusConfig.from_url(f"{base}&password_file={tmp_path / 'empty'}").client_security()
    (tmp_path / "p").write_text("x")
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(BusError, match="ca_file"):
        KafkaBusConfig.from_url(
            f"{base}&password_file={tmp_path / 'p'}&ca_file={tmp_path / 'ca.pem'}"
        ).client_security()


def test_pool_config_checks_the_bus_url_when_it_loads(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from ckbpool.pool.config import BusSettings

    secured = (
        f"kafka://10.0.0.5:9093?security_protocol=SASL_SSL&username=stratum&password_file={tmp_path}/p"
        f"&ca_file={tmp_path}/kafka-ca.pem&client_id=pool-a&spool_dir=none"
    )
    assert BusSettings(url=secured).url == secured  # files need not exist yet: read when the bus starts
    assert BusSettings(url="memory://").url == "memory://"
    with pytest.raises(ValidationError, match="never put the password in the URL"):
        BusSettings(url="kafka://k:9093?security_protocol=SASL_SSL&username=u&password=hunter2")
    with pytest.raises(ValidationError, match="never sent in the clear"):
        BusSettings(url=f"kafka://k:9092?username=u&password_file={tmp_path}/p")
