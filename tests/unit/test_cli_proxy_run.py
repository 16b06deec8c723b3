"""`ckbpool proxy run` through the shared service runner (cli/serve.py): a start that fails is exit code 2 with the
reason, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckbpool.cli.app import app
from ckbpool.sv2.keys import Keypair

pytestmark = pytest.mark.unit


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _config(tmp_path: Path, v1_port: int, getwork_port: int) -> Path:
    authority = Keypair.generate().authority_public_key
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'identity = "aggregated"\n\n[upstream]\nhost = "127.0.0.1"\nport = 1\nauthority_public_key = "{authority}"\n'
        'user_identity = "operator.proxy"\n\n'
        f'[v1]\nlisten_host = "127.0.0.1"\nlisten_port = {v1_port}\n\n'
        f'[getwork]\nenabled = true\nlisten_host = "127.0.0.1"\nlisten_port = {getwork_port}\n\n'
        "[http]\nenabled = false\n"
    )
    return path


def test_a_taken_v1_port_is_exit_2_with_the_reason(tmp_path: Path) -> None:
    with _bound() as taken:
        port = taken.getsockname()[1]
        with _bound() as spare:
            getwork_port = spare.getsockname()[1]
        result = CliRunner().invoke(app, ["proxy", "run", "-c", str(_config(tmp_path, port, getwork_port))])
    assert result.exit_code == 2, result.output
    assert "cannot start the proxy" in result.output and "Traceback" not in result.output
