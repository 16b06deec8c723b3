"""Issue 18 item 6: the authority key kept out of the deployment, `ckbpool keys rotate`, the expiry metric."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ckbpool.cli.app import app
from ckbpool.deploy.config import load_config
from ckbpool.deploy.errors import SecretsError
from ckbpool.deploy.secrets import generate_secrets
from ckbpool.pool.metrics import PoolMetrics
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.keys import Keypair, decode_secret_key

pytestmark = pytest.mark.unit


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_init_moves_the_authority_key_out_and_rotate_renews_from_there(tmp_path: Path) -> None:
    config = tmp_path / "ckbpool.yaml"
    offline = tmp_path / "usb" / "authority.key"
    result = run("init", "-c", str(config), "--non-interactive", "--name", "keys", "--authority-key-out", str(offline))
    assert result.exit_code == 0, result.stderr
    secrets = tmp_path / "secrets"
    assert not (secrets / "authority.key").exists()
    assert stat.S_IMODE(offline.stat().st_mode) == 0o600
    pub = (secrets / "authority.pub").read_text().strip()
    authority = Keypair.from_secret(decode_secret_key(offline.read_text()))
    assert authority.authority_public_key == pub
    static_before = (secrets / "pool-static.key").read_text()
    cert_before = Certificate.from_hex((secrets / "pool-certificate.hex").read_text())

    # a second init (or render's secret pass) never regenerates the authority nor the keys it signed for
    again = run("init", "-c", str(config), "--non-interactive", "--force", "--name", "keys")
    assert again.exit_code == 0, again.stderr
    assert not (secrets / "authority.key").exists() and (secrets / "authority.pub").read_text().strip() == pub
    assert (secrets / "pool-static.key").read_text() == static_before

    # rotate without the key: a clear error; with it: a new window for the same static key, verified
    missing = run("keys", "rotate", "--secrets-dir", str(secrets))
    assert missing.exit_code != 0 and "offline authority key" in missing.output
    time.sleep(1.1)  # a later valid_from than init's certificate
    rotated = run(
        "keys", "rotate", "--secrets-dir", str(secrets), "--authority-key", str(offline), "--valid-days", "90"
    )
    assert rotated.exit_code == 0, rotated.output
    assert "SIGHUP" in rotated.output
    cert = Certificate.from_hex((secrets / "pool-certificate.hex").read_text())
    static = Keypair.from_secret(decode_secret_key((secrets / "pool-static.key").read_text()))
    cert.verify(static.xonly_public, authority.xonly_public)
    assert cert.valid_from > cert_before.valid_from and cert.not_valid_after - cert.valid_from == 90 * 86400
    assert stat.S_IMODE((secrets / "pool-certificate.hex").stat().st_mode) == 0o600
    assert (secrets / "pool-static.key").read_text() == static_before
    # --new-static-key replaces the static key too, and the certificate signs the new one
    assert (
        run(
            "keys", "rotate", "--secrets-dir", str(secrets), "--authority-key", str(offline), "--new-static-key"
        ).exit_code
        == 0
    )
    new_static = Keypair.from_secret(decode_secret_key((secrets / "pool-static.key").read_text()))
    assert new_static.secret != static.secret
    Certificate.from_hex((secrets / "pool-certificate.hex").read_text()).verify(
        new_static.xonly_public, authority.xonly_public
    )
    assert not list(secrets.glob(".*.tmp"))


def test_authority_key_out_refuses_to_overwrite_or_stay_inside(tmp_path: Path) -> None:
    existing = tmp_path / "taken.key"
    existing.write_text("do not touch\n")
    config = tmp_path / "ckbpool.yaml"
    result = run("init", "-c", str(config), "--non-interactive", "--name", "keys", "--authority-key-out", str(existing))
    assert result.exit_code != 0 and "exists" in result.output
    assert existing.read_text() == "do not touch\n" and (tmp_path / "secrets" / "authority.key").exists()
    inside = run(
        "init", "-c", str(config), "--non-interactive", "--force", "--name", "keys",
        "--authority-key-out", str(tmp_path / "secrets" / "copy.key"),
    )  # fmt: skip
    assert inside.exit_code != 0 and "inside" in inside.output


def test_offline_authority_with_a_missing_certificate_is_an_error_not_a_new_authority(tmp_path: Path) -> None:
    config = tmp_path / "ckbpool.yaml"
    assert run("init", "-c", str(config), "--non-interactive", "--name", "keys").exit_code == 0
    secrets = tmp_path / "secrets"
    cfg = load_config(config)
    pub = (secrets / "authority.pub").read_text()
    (secrets / "authority.key").unlink()
    (secrets / "pool-certificate.hex").unlink()
    with pytest.raises(SecretsError, match="keys rotate"):
        generate_secrets(cfg, secrets)
    assert (secrets / "authority.pub").read_text() == pub


def test_certificate_expiry_metric_is_exported() -> None:
    metrics = PoolMetrics()
    metrics.certificate_expiry.set(1_900_000_000)
    assert metrics.registry.get_sample_value("ckbpool_pool_certificate_expiry_timestamp_seconds") == 1_900_000_000
