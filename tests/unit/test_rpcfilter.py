"""The RPC filter's allowlist stays equal to what ckbpool calls; families and settings (issue 18 item 3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ckbpool.pool.config import ConfigError, NodeSettings
from ckbpool.rpcfilter import ALLOWED_METHODS, method_family
from ckbpool.rpcfilter.allowlist import FAMILIES, is_allowed
from ckbpool.rpcfilter.config import load_filter_config

pytestmark = pytest.mark.unit

SRC = Path(__file__).resolve().parents[2] / "src" / "ckbpool"
# every way ckbpool names a node RPC method: client.call("m", ...), the indexer's _indexer_call(client, "m", ...),
# the deploy probe's rpc_call(url, "m", ...)
CALL_PATTERNS = (
    re.compile(r"""\.call\(\s*["']([a-z_]+)["']"""),
    re.compile(r"""_indexer_call\(\s*\w+\s*,\s*["']([a-z_]+)["']"""),
    re.compile(r"""\brpc_call\(\s*\w+\s*,\s*["']([a-z_]+)["']"""),
)


def called_methods() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if "rpcfilter" in path.parts:
            continue
        text = path.read_text()
        for pattern in CALL_PATTERNS:
            found.update(pattern.findall(text))
    return found


def test_allowlist_equals_the_methods_ckbpool_calls() -> None:
    called = called_methods()
    assert "submit_block" in called and "get_cells" in called and "sync_state" in called  # the grep itself works
    assert called - ALLOWED_METHODS == set(), "called but not allowed through the filter: add them to allowlist.py"
    assert ALLOWED_METHODS - called == set(), "allowed but never called: remove them from allowlist.py"


def test_dangerous_methods_are_not_allowed_and_families_are_bounded() -> None:
    for method in ("set_network_active", "clear_tx_pool", "set_ban", "remove_transaction", "add_node", "truncate",
                   "generate_block", "send_alert", "update_main_logger", "subscribe"):  # fmt: skip
        assert not is_allowed(method)
    assert method_family("clear_tx_pool") == "pool" and method_family("send_transaction") == "pool"
    assert method_family("set_ban") == "net" and method_family("get_cells") == "indexer"
    assert method_family("x" * 1000) == "unknown" and method_family(["get_tip_header"]) == "unknown"
    assert {method_family(m) for m in ALLOWED_METHODS} <= set(FAMILIES)
    assert not is_allowed(None) and not is_allowed(["get_tip_header"])


def test_filter_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "filter.toml"
    path.write_text('listen_port = 8124\nupstream_url = "ftp://x"\nbogus = 1\n')
    with pytest.raises(ConfigError) as info:
        load_filter_config(path)
    text = str(info.value)
    assert "tls_cert_file" in text and "bogus" in text  # TLS is required; unknown keys are refused
    with pytest.raises(ConfigError, match="upstream_url"):
        load_filter_config(data={"tls_cert_file": "c", "tls_key_file": "k", "upstream_url": "ftp://x"})
    with pytest.raises(ConfigError, match="upstream_tcp"):
        load_filter_config(data={"tls_cert_file": "c", "tls_key_file": "k", "tcp_listen_port": 1, "upstream_tcp": None})
    cfg = load_filter_config(data={"tls_cert_file": "c", "tls_key_file": "k", "upstream_tcp": "[::1]:18114"})
    assert cfg.upstream_tcp_address() == ("::1", 18114)
    short = tmp_path / "token"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter"):
        load_filter_config(data={"tls_cert_file": "c", "tls_key_file": "k", "token_file": str(short)}).token()


def test_node_settings_refuse_tls_options_without_https() -> None:
    with pytest.raises(ValueError, match="https"):
        NodeSettings(rpc_url="http://10.0.0.5:8124", ca_file=Path("ca.pem"))
    with pytest.raises(ValueError, match="https"):
        NodeSettings(rpc_url="http://10.0.0.5:8124", token_file=Path("t"))
    with pytest.raises(ValueError, match="both"):
        NodeSettings(rpc_url="https://10.0.0.5:8124", client_cert_file=Path("c.pem"))
    with pytest.raises(ValueError, match="http"):
        NodeSettings(rpc_url="10.0.0.5:8124")
    assert NodeSettings(rpc_url="https://10.0.0.5:8124", ca_file=Path("ca.pem")).ca_file == Path("ca.pem")
