"""The public listener over HTTPS with an operator's certificate (``[web] tls_cert_file`` / ``tls_key_file``):
a self-signed certificate made here for 127.0.0.1, a client that trusts exactly it gets the page and the API's
OpenAPI document; plain HTTP on the same port gets no answer; a key that does not match the certificate stops the
start before anything listens; the page URL says https."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from ckbpool.pool.config import PoolConfig, WebSettings
from ckbpool.web.app import WebServer, page_url

pytestmark = pytest.mark.integration


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ckbpool test page")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "web-tls.crt", directory / "web-tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def _config(cert: Path, key: Path) -> PoolConfig:
    return PoolConfig.model_validate(
        {"web": {"enabled": True, "listen_port": 0, "tls_cert_file": str(cert), "tls_key_file": str(key)}}
    )


async def test_the_page_is_served_over_https_with_the_operators_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = WebServer(_config(cert, key))
    await server.start()
    try:
        assert server.url == f"https://127.0.0.1:{server.port}/"
        trust = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=trust, timeout=5) as client:
            page = await client.get(server.url)
            assert page.status_code == 200 and "<html" in page.text.lower()
            assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
            doc = await client.get(f"{server.url}api/openapi.json")
            assert doc.status_code == 200 and doc.json()["openapi"].startswith("3.")
        # a client that trusts only the system's authorities refuses the self-signed certificate
        async with httpx.AsyncClient(timeout=5) as strict:
            with pytest.raises(httpx.ConnectError):
                await strict.get(server.url)
        # plain HTTP on the TLS port gets no page
        async with httpx.AsyncClient(timeout=5) as plain:
            try:
                answer = await plain.get(f"http://127.0.0.1:{server.port}/")
            except httpx.HTTPError:
                pass  # the TLS server drops a request that is not a handshake
            else:
                assert "<html" not in answer.text.lower()
    finally:
        await server.close()


async def test_a_key_that_does_not_match_stops_the_start(tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_key = _self_signed(other)
    server = WebServer(_config(cert, wrong_key))
    with pytest.raises(ssl.SSLError):
        await server.start()
    await server.close()
    missing = WebServer(_config(cert, tmp_path / "absent.key"))
    with pytest.raises(OSError):
        await missing.start()
    await missing.close()


def test_tls_needs_both_files() -> None:
    with pytest.raises(ValidationError) as bad:
        WebSettings.model_validate({"tls_cert_file": "/x.crt"})
    assert "set both tls_cert_file and tls_key_file" in str(bad.value)
    plain = WebSettings(listen_host="0.0.0.0", listen_port=8280)
    assert not plain.tls and page_url(plain) == "http://127.0.0.1:8280/"
    secure = WebSettings(listen_port=443, tls_cert_file=Path("/c"), tls_key_file=Path("/k"))
    assert secure.tls and page_url(secure) == "https://127.0.0.1:443/"
