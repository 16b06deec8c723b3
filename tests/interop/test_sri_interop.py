"""ckbpool's SV2 stack against the SRI reference crates (tests/interop, binary ``sv2-interop``).

(a) Python initiator <-> Rust (noise_sv2) responder, (b) Rust initiator <-> Python responder: the
Noise handshake, certificate checks both ways (including the clock leeway and refusals), and
SetupConnection / OpenStandardMiningChannel / OpenExtendedMiningChannel with their replies over the
encrypted channel, plus a multi-chunk frame. (c) Every message type of common_messages_sv2 /
mining_sv2 / extensions_sv2 (0x0001) encoded by one side and decoded by the other, byte-identical both
ways, including SubmitSharesExtended with TLV fields; (d) extension 0x0002's user_identity TLV through
SRI's own UserIdentity / TlvList frame builder / parse_message_frame_with_tlvs, both directions; (e) our
0x4CCB share TLVs (ckb_user_identity, share_target) next to 0x0002 as SRI's generic TLV code sees them.

The library is sans-IO; the tiny blocking-socket drivers live here. Build the harness with
``tests/interop/build.sh`` (``make deps`` does); without it these tests skip and say so.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import socket
import string
import struct
import subprocess
import threading
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ckbpool.sv2.certs import (
    Certificate,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateWrongAuthority,
)
from ckbpool.sv2.keys import Keypair
from ckbpool.sv2.noise import (
    MSG1_SIZE,
    MSG2_SIZE,
    NoiseInitiator,
    NoiseResponder,
    NoiseTransport,
    ResponderCredentials,
)
from ckbpool.sv2.types import Tlv

pytestmark = pytest.mark.integration

_DEFAULT_BIN = Path.home() / ".cache" / "ckbpool" / "interop-target" / "release" / "sv2-interop"
BIN = Path(os.environ.get("SV2_INTEROP_BIN", str(_DEFAULT_BIN)))
TIMEOUT = 20.0

if not BIN.is_file():
    pytest.skip(
        f"SRI interop harness not built ({BIN} missing): run tests/interop/build.sh",
        allow_module_level=True,
    )


# ------------------------------------------------------------------------------------------ helpers


class Harness:
    """A running ``sv2-interop`` process whose stdout JSON lines are read by a background thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next_event(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            item = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if item is None:
                raise AssertionError(f"harness exited before {name!r}: {self.stderr()}")
            self.seen.append(item)
            if item.get("event") == name:
                return item

    def finish(self) -> tuple[int, list[dict[str, Any]]]:
        """Wait for exit; return (exit code, every event printed)."""
        code = self.proc.wait(timeout=TIMEOUT)
        while True:
            item = self.lines.get(timeout=TIMEOUT)
            if item is None:
                break
            self.seen.append(item)
        return code, self.seen

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)


def run_lines(subcommand: str, lines: list[str]) -> list[dict[str, Any]]:
    """Run a batch subcommand (encode/decode/samples) once over many input lines."""
    out = subprocess.run(
        [str(BIN), subcommand],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def sri_encode(messages: list[dict[str, Any]]) -> list[bytes]:
    results = run_lines("encode", [json.dumps(m) for m in messages])
    errors = [r for r in results if "error" in r]
    assert not errors, errors
    return [bytes.fromhex(r["hex"]) for r in results]


def sri_decode(frames: list[bytes]) -> list[dict[str, Any]]:
    return run_lines("decode", [f.hex() for f in frames])


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, transport: NoiseTransport, pending: list[bytes]) -> bytes:
    """Next plaintext frame from an encrypted socket (``pending`` keeps frames read ahead)."""
    while not pending:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("peer closed")
        pending.extend(transport.feed(data))
    return pending.pop(0)


def strip_header_fields(decoded: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in decoded.items() if k not in ("extension_type", "msg_type", "channel_msg")}


FF32 = "ff" * 32
SETUP = {
    "type": "SetupConnection", "protocol": 0, "min_version": 2, "max_version": 2, "flags": 1,
    "endpoint_host": "127.0.0.1", "endpoint_port": 3333, "vendor": "ckbpool", "hardware_version": "",
    "firmware": "test", "device_id": "python-initiator",
}  # fmt: skip
OPEN_STANDARD = {
    "type": "OpenStandardMiningChannel", "request_id": 7, "user_identity": "ckb1qyq.worker",
    "nominal_hash_rate": 1099511627776.0, "max_target": FF32,
}  # fmt: skip
OPEN_EXTENDED = {
    "type": "OpenExtendedMiningChannel", "request_id": 8, "user_identity": "ckb1qyq.proxy",
    "nominal_hash_rate": 562949953421312.0, "max_target": FF32, "min_extranonce_size": 8,
}  # fmt: skip
BIG_JOB = {
    "type": "NewExtendedMiningJob", "channel_id": 2, "job_id": 99, "min_ntime": None, "version": 0,
    "version_rolling_allowed": False, "merkle_path": ["ab" * 32] * 3,
    "coinbase_tx_prefix": "5a" * 65535, "coinbase_tx_suffix": "a5" * 60000,
}  # fmt: skip


@dataclass
class Authority:
    keys: Keypair
    now: int


@pytest.fixture
def authority() -> Authority:
    return Authority(Keypair.generate(), int(time.time()))


@pytest.fixture
def rust_responder(authority: Authority) -> Iterator[Any]:
    """Factory: start an SRI responder with a given certificate window; killed at teardown."""
    started: list[Harness] = []

    def start(valid_from: int, not_valid_after: int) -> tuple[Harness, int]:
        h = Harness(
            "responder", "--port", "0", "--authority-secret", authority.keys.secret.hex(),
            "--valid-from", str(valid_from), "--not-valid-after", str(not_valid_after),
        )  # fmt: skip
        started.append(h)
        ev = h.next_event("listening")
        # SRI's key_utils prints the authority public key; ours must be the same string.
        assert ev["authority_pub"] == authority.keys.authority_public_key
        return h, int(ev["port"])

    yield start
    for h in started:
        h.kill()


# ------------------------------------------------- (a) Python initiator <-> Rust (SRI) responder


def test_python_initiator_with_sri_responder(authority: Authority, rust_responder: Any) -> None:
    valid_from, not_valid_after = authority.now - 60, authority.now + 3600
    harness, port = rust_responder(valid_from, not_valid_after)
    frames = sri_encode([SETUP, OPEN_STANDARD, OPEN_EXTENDED, BIG_JOB])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        initiator = NoiseInitiator(authority.keys.authority_public_key)
        msg1 = initiator.start()
        assert len(msg1) == MSG1_SIZE
        sock.sendall(msg1)
        transport = initiator.complete(recv_exactly(sock, MSG2_SIZE))
        assert initiator.certificate is not None
        assert (initiator.certificate.valid_from, initiator.certificate.not_valid_after) == (
            valid_from,
            not_valid_after,
        )
        pending: list[bytes] = []
        replies = []
        for frame in frames:
            sock.sendall(transport.encrypt_frame(frame))
            replies.append(recv_frame(sock, transport, pending))
    code, events = harness.finish()
    assert code == 0, harness.stderr()

    received = [e for e in events if e["event"] == "received"]
    assert [bytes.fromhex(e["hex"]) for e in received] == frames  # SRI decrypted exactly our bytes
    assert [strip_header_fields(e["message"]) for e in received] == [SETUP, OPEN_STANDARD, OPEN_EXTENDED, BIG_JOB]

    decoded = sri_decode(replies)
    assert [d["type"] for d in decoded] == [
        "SetupConnectionSuccess",
        "OpenStandardMiningChannelSuccess",
        "OpenExtendedMiningChannelSuccess",
        "NewExtendedMiningJob",
    ]
    assert decoded[1]["request_id"] == 7 and decoded[2]["request_id"] == 8
    assert replies[3] == frames[3]  # the 125 kB echo came back through SRI's chunked encryption
    sent = [strip_header_fields(e["message"]) for e in events if e["event"] == "sent"]
    assert sri_encode(sent) == replies


@pytest.mark.parametrize(
    ("window", "error"),
    [
        ((-7200, -3600), CertificateExpired),
        ((+3600, +7200), CertificateNotYetValid),
    ],
)
def test_python_initiator_refuses_sri_certificate_outside_window(
    authority: Authority, rust_responder: Any, window: tuple[int, int], error: type[Exception]
) -> None:
    _, port = rust_responder(authority.now + window[0], authority.now + window[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        initiator = NoiseInitiator(authority.keys.xonly_public)
        sock.sendall(initiator.start())
        with pytest.raises(error):
            initiator.complete(recv_exactly(sock, MSG2_SIZE))


def test_python_initiator_accepts_sri_certificate_within_leeway(authority: Authority, rust_responder: Any) -> None:
    # SRI tolerates 10 s of drift at both ends; so do we.
    _, port = rust_responder(authority.now - 3600, authority.now - 5)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        initiator = NoiseInitiator(authority.keys.xonly_public, clock=lambda: authority.now)
        sock.sendall(initiator.start())
        initiator.complete(recv_exactly(sock, MSG2_SIZE))


def test_python_initiator_refuses_wrong_authority(authority: Authority, rust_responder: Any) -> None:
    _, port = rust_responder(authority.now - 60, authority.now + 60)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        initiator = NoiseInitiator(Keypair.generate().xonly_public)
        sock.sendall(initiator.start())
        with pytest.raises(CertificateWrongAuthority):
            initiator.complete(recv_exactly(sock, MSG2_SIZE))


# ------------------------------------------------- (b) Rust (SRI) initiator <-> Python responder


class PythonPool:
    """A one-connection Python responder on a thread, answering with pre-encoded reply frames."""

    def __init__(self, credentials: ResponderCredentials, replies: dict[int, bytes]) -> None:
        self.credentials = credentials
        self.replies = replies
        self.received: list[bytes] = []
        self.error: BaseException | None = None
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                msg2, transport = NoiseResponder(self.credentials).respond(recv_exactly(conn, MSG1_SIZE))
                conn.sendall(msg2)
                while data := conn.recv(65536):
                    for frame in transport.feed(data):
                        self.received.append(frame)
                        conn.sendall(transport.encrypt_frame(self.replies[frame[2]]))
        except (ConnectionError, TimeoutError, OSError) as exc:
            self.error = exc
        except Exception as exc:
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(TIMEOUT)


# The Rust initiator's script (tests/interop/src/main.rs initiator_script), for checking what arrived.
RUST_SCRIPT = [
    {"type": "SetupConnection", "protocol": 0, "min_version": 2, "max_version": 2, "flags": 0,
     "endpoint_host": "127.0.0.1", "endpoint_port": 3333, "vendor": "sri-interop", "hardware_version": "",
     "firmware": "noise_sv2-2.0.0", "device_id": "rust-initiator"},
    {"type": "OpenStandardMiningChannel", "request_id": 10, "user_identity": "ckb1qyq.rust",
     "nominal_hash_rate": 1099511627776.0, "max_target": FF32},
    {"type": "OpenExtendedMiningChannel", "request_id": 11, "user_identity": "ckb1qyq.rust-proxy",
     "nominal_hash_rate": 562949953421312.0, "max_target": FF32, "min_extranonce_size": 8},
]  # fmt: skip
POOL_REPLIES = [
    {"type": "SetupConnectionSuccess", "used_version": 2, "flags": 0},
    {"type": "OpenStandardMiningChannelSuccess", "request_id": 10, "channel_id": 1, "target": "0f" * 32,
     "extranonce_prefix": "0011223344556677", "group_channel_id": 0},
    {"type": "OpenExtendedMiningChannelSuccess", "request_id": 11, "channel_id": 2, "target": "0e" * 32,
     "extranonce_size": 12, "extranonce_prefix": "00c904bd", "group_channel_id": 0},
]  # fmt: skip


def start_python_pool(authority: Authority, valid_from: int, not_valid_after: int) -> PythonPool:
    static = Keypair.generate()
    cert = Certificate.issue(authority.keys, static.xonly_public, valid_from, not_valid_after)
    reply_frames = sri_encode(POOL_REPLIES)
    replies = {0x00: reply_frames[0], 0x10: reply_frames[1], 0x13: reply_frames[2]}
    return PythonPool(ResponderCredentials.from_certificate(static.secret, cert), replies)


def test_sri_initiator_with_python_responder(authority: Authority) -> None:
    pool = start_python_pool(authority, authority.now - 60, authority.now + 3600)
    harness = Harness("initiator", "--port", str(pool.port), "--authority-pub", authority.keys.authority_public_key)
    try:
        code, events = harness.finish()
    finally:
        harness.kill()
    pool.join()
    assert code == 0, (harness.stderr(), events)
    assert pool.error is None, pool.error
    assert any(e["event"] == "handshake" for e in events)
    got = [strip_header_fields(e["message"]) for e in events if e["event"] == "received"]
    assert got == POOL_REPLIES
    assert [strip_header_fields(d) for d in sri_decode(pool.received)] == RUST_SCRIPT


@pytest.mark.parametrize(
    ("window", "now_offset", "accepted"),
    [
        ((-60, 3600), 0, True),
        ((-3600, -5), 0, True),  # expired 5 s ago: inside SRI's 10 s leeway
        ((-7200, -3600), 0, False),  # expired
        ((3600, 7200), 0, False),  # not yet valid
        ((-60, 60), 100, False),  # SRI initiator's clock (--now) past the window
    ],
)
def test_sri_initiator_checks_python_certificate_window(
    authority: Authority, window: tuple[int, int], now_offset: int, accepted: bool
) -> None:
    pool = start_python_pool(authority, authority.now + window[0], authority.now + window[1])
    harness = Harness(
        "initiator", "--port", str(pool.port), "--authority-pub", authority.keys.authority_public_key,
        "--now", str(authority.now + now_offset),
    )  # fmt: skip
    try:
        code, events = harness.finish()
    finally:
        harness.kill()
    pool.join()
    refused = any(e["event"] == "handshake_error" for e in events)
    assert (code == 0 and not refused) == accepted, events


def test_sri_initiator_refuses_python_pool_of_another_authority(authority: Authority) -> None:
    other = Authority(Keypair.generate(), authority.now)
    pool = start_python_pool(other, authority.now - 60, authority.now + 60)
    harness = Harness("initiator", "--port", str(pool.port), "--authority-pub", authority.keys.authority_public_key)
    try:
        code, events = harness.finish()
    finally:
        harness.kill()
    pool.join()
    assert code != 0
    assert any(e["event"] == "handshake_error" for e in events)


# ------------------------------------------------------- (c) every message type, byte-identical

# Edge values beyond the harness's samples: empty and maximal strings/bytes, empty sequences,
# both Option states, extreme integers.
EDGE_SAMPLES: list[dict[str, Any]] = [
    {"type": "SetupConnection", "protocol": 2, "min_version": 0, "max_version": 65535, "flags": 4294967295,
     "endpoint_host": "", "endpoint_port": 0, "vendor": "v" * 255, "hardware_version": "é",
     "firmware": "", "device_id": ""},
    {"type": "NewMiningJob", "channel_id": 4294967295, "job_id": 0, "min_ntime": 4294967295, "version": 1,
     "merkle_root": "00" * 32},
    {"type": "NewExtendedMiningJob", "channel_id": 1, "job_id": 2, "min_ntime": None, "version": 3,
     "version_rolling_allowed": False, "merkle_path": [], "coinbase_tx_prefix": "", "coinbase_tx_suffix": ""},
    {"type": "NewExtendedMiningJob", "channel_id": 1, "job_id": 2, "min_ntime": 0, "version": 3,
     "version_rolling_allowed": True, "merkle_path": [f"{i:02x}" * 32 for i in range(255)],
     "coinbase_tx_prefix": "01" * 65535, "coinbase_tx_suffix": "02"},
    {"type": "SetGroupChannel", "group_channel_id": 0, "channel_ids": []},
    {"type": "SetExtranoncePrefix", "channel_id": 0, "extranonce_prefix": "ff" * 32},
    {"type": "SubmitSharesExtended", "channel_id": 0, "sequence_number": 4294967295, "job_id": 0,
     "nonce": 0, "ntime": 0, "version": 0, "extranonce": "", "tlvs": []},
    {"type": "SubmitSharesExtended", "channel_id": 1, "sequence_number": 0, "job_id": 0, "nonce": 0, "ntime": 0,
     "version": 0, "extranonce": "ff" * 32,
     "tlvs": [{"extension_type": 0, "field_type": 0, "value": ""},
              {"extension_type": 2, "field_type": 1, "value": "c3a9" * 16},
              {"extension_type": 65535, "field_type": 255, "value": "ab" * 65535}]},
    {"type": "RequestExtensions", "request_id": 0, "requested_extensions": []},
    {"type": "RequestExtensionsSuccess", "request_id": 7, "supported_extensions": list(range(1, 300))},
    {"type": "RequestExtensionsError", "request_id": 65535, "unsupported_extensions": [],
     "required_extensions": [65535, 0]},
    {"type": "OpenStandardMiningChannel", "request_id": 0, "user_identity": "", "nominal_hash_rate": 0.0,
     "max_target": "00" * 31 + "80"},
    {"type": "UpdateChannel", "channel_id": 1, "nominal_hash_rate": 3.4028234663852886e38,
     "maximum_target": "01" + "00" * 31},
    {"type": "SetCustomMiningJob", "channel_id": 1, "request_id": 2, "token": "", "version": 0,
     "prev_hash": "00" * 32, "min_ntime": 0, "nbits": 0, "coinbase_tx_version": 0, "coinbase_prefix": "aa" * 255,
     "coinbase_tx_input_n_sequence": 0, "coinbase_tx_outputs": "", "coinbase_tx_locktime": 0,
     "merkle_path": []},
]  # fmt: skip


def _messages_module() -> Any:
    return pytest.importorskip("ckbpool.sv2.messages", reason="ckbpool.sv2.messages not written yet")


def _all_samples() -> list[dict[str, Any]]:
    return [s for s in run_lines("samples", []) if s] + EDGE_SAMPLES


def _from_json(cls: type, obj: dict[str, Any]) -> Any:
    """Build a Python message from the harness's JSON, using the dataclass annotations for types."""
    import dataclasses

    hints = typing.get_type_hints(cls, include_extras=True)
    values = []
    for f in dataclasses.fields(cls):
        base = typing.get_args(hints[f.name])[0]
        values.append(_convert(base, obj[f.name]))
    return cls(*values)


def _convert(base: Any, value: Any) -> Any:
    if value is None:
        return None
    if base is Tlv:
        return Tlv(value["extension_type"], value["field_type"], bytes.fromhex(value["value"]))
    origin = typing.get_origin(base)
    if origin is tuple:
        (element, _) = typing.get_args(base)
        return tuple(_convert(element, v) for v in value)
    if origin is not None:  # int | None
        inner = next(a for a in typing.get_args(base) if a is not type(None))
        return _convert(inner, value)
    if base is int and isinstance(value, str):  # U256 carried as a number: little-endian
        return int.from_bytes(bytes.fromhex(value), "little")
    if base is bytes:
        return bytes.fromhex(value)
    if base is float:
        return float(value)
    return value


def _to_json(value: Any, like: Any) -> Any:
    """Python field value -> the harness's JSON convention (``like`` is the JSON value it should equal)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Tlv):
        return _tlv_json(value)
    if isinstance(value, int) and isinstance(like, str):
        return value.to_bytes(32, "little").hex()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [_to_json(v, like[0] if like else None) for v in value]
    return value


def _tlv_json(tlv: Tlv) -> dict[str, Any]:
    return {"extension_type": tlv.extension_type, "field_type": tlv.field_type, "value": tlv.value.hex()}


def test_every_sri_message_type_has_a_python_class() -> None:
    messages = _messages_module()
    names = {s["type"] for s in run_lines("samples", [])}
    assert len(names) == 29  # common_messages_sv2 + mining_sv2 + extensions_sv2 (0x0001)
    missing = sorted(n for n in names if not hasattr(messages, n))
    assert not missing, missing


def test_sri_encoded_messages_decode_in_python_and_reencode_identically() -> None:
    messages = _messages_module()
    samples = _all_samples()
    frames = sri_encode(samples)
    for sample, frame in zip(samples, frames, strict=True):
        msg = messages.decode_frame_bytes(frame)
        assert type(msg).__name__ == sample["type"], sample["type"]
        as_json = {"type": sample["type"]}
        for name, _ in _layout(msg):
            as_json[name] = _to_json(getattr(msg, name), sample[name])
        assert as_json == sample
        assert messages.encode_message(msg) == frame, sample["type"]


def test_python_encoded_messages_match_sri_bytes_and_decode_in_sri() -> None:
    messages = _messages_module()
    samples = _all_samples()
    sri_frames = sri_encode(samples)
    py_frames = [messages.encode_message(_from_json(getattr(messages, s["type"]), s)) for s in samples]
    for sample, py, sri in zip(samples, py_frames, sri_frames, strict=True):
        assert py == sri, f"{sample['type']}: python {py.hex()} != sri {sri.hex()}"
    decoded = sri_decode(py_frames)
    assert [strip_header_fields(d) for d in decoded] == samples
    for d, frame in zip(decoded, py_frames, strict=True):
        cls = getattr(messages, d["type"])
        assert (d["msg_type"], d["channel_msg"], d["extension_type"]) == (
            cls.MSG_TYPE,
            cls.CHANNEL_MSG,
            cls.EXTENSION_TYPE,
        )
        assert frame[2] == cls.MSG_TYPE


def _layout(msg: Any) -> list[tuple[str, None]]:
    import dataclasses

    return [(f.name, None) for f in dataclasses.fields(msg)]


def _random_value(rng: random.Random, name: str, sv2: str, base: Any) -> Any:
    """A random Python value for one field, given its SV2 type name and Python annotation."""
    if name == "protocol":
        return rng.choice([0, 1, 2])  # SRI's Protocol enum only has these
    ints = {"U8": 8, "U16": 16, "U32": 32, "U64": 64}
    if sv2 in ints:
        return rng.choice([0, (1 << ints[sv2]) - 1, rng.getrandbits(ints[sv2])])
    if sv2 == "BOOL":
        return rng.random() < 0.5
    if sv2 == "F32":
        while True:
            (x,) = struct.unpack("<f", rng.randbytes(4))
            if math.isfinite(x):
                return x
    if sv2 == "U256":
        return rng.getrandbits(256) if base is int else rng.randbytes(32)
    if sv2 == "STR0_255":
        return "".join(rng.choice(string.printable) for _ in range(rng.choice([0, 1, 17, 255])))
    limits = {"B0_32": 32, "B0_255": 255, "B0_64K": 65535}
    if sv2 in limits:
        return rng.randbytes(rng.choice([0, 1, limits[sv2], rng.randrange(limits[sv2] + 1) % 300]))
    if sv2 == "SEQ0_255[U256]":
        return tuple(rng.randbytes(32) for _ in range(rng.choice([0, 1, 3])))
    if sv2 == "SEQ0_64K[U32]":
        return tuple(rng.getrandbits(32) for _ in range(rng.choice([0, 1, 5])))
    if sv2 == "OPTION[U32]":
        return None if rng.random() < 0.5 else rng.getrandbits(32)
    if sv2 == "SEQ0_64K[U16]":
        return tuple(rng.getrandbits(16) for _ in range(rng.choice([0, 1, 5])))
    if sv2 == "TLV_LIST":
        return tuple(
            Tlv(rng.getrandbits(16), rng.getrandbits(8), rng.randbytes(rng.choice([0, 1, 32, 200])))
            for _ in range(rng.choice([0, 0, 1, 3]))
        )
    raise AssertionError(f"no generator for {sv2}")


def _json_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Tlv):
        return _tlv_json(value)
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    return value


def test_random_messages_of_every_type_round_trip_through_sri() -> None:
    import dataclasses

    messages = _messages_module()
    from ckbpool.sv2.messages_base import layout_of

    rng = random.Random(20240611)
    names = sorted({s["type"] for s in run_lines("samples", [])})
    py_msgs, expected = [], []
    for name in names:
        cls = getattr(messages, name)
        hints = typing.get_type_hints(cls, include_extras=True)
        for _ in range(8):
            values = {}
            for field_name, sv2 in layout_of(cls):
                values[field_name] = _random_value(rng, field_name, repr(sv2), typing.get_args(hints[field_name])[0])
            msg = cls(**values)
            py_msgs.append(msg)
            as_json: dict[str, Any] = {"type": name}
            for f in dataclasses.fields(msg):
                v = getattr(msg, f.name)
                is_u256_int = (
                    isinstance(v, int) and not isinstance(v, bool) and repr(dict(layout_of(cls))[f.name]) == "U256"
                )
                as_json[f.name] = v.to_bytes(32, "little").hex() if is_u256_int else _json_value(v)
            expected.append(as_json)
    py_frames = [messages.encode_message(m) for m in py_msgs]
    decoded = sri_decode(py_frames)
    for want, got in zip(expected, decoded, strict=True):
        assert "error" not in got, (want["type"], got)
        assert strip_header_fields(got) == want
    assert sri_encode(expected) == py_frames


# ------------------------------------------------------------------- (d) extension 0x0002, SRI's own API


SHARE = {"channel_id": 6, "sequence_number": 12, "job_id": 10, "nonce": 1, "ntime": 2, "version": 3,
         "extranonce": "00000001"}  # fmt: skip
IDENTITIES = ["Worker_001", "w", "x" * 32, "ckt1qzda0cr08m85.rig1", "é" * 16, "矿工.一号"]


def _share_with(identity: str) -> Any:
    from ckbpool.sv2.extensions import user_identity_tlv
    from ckbpool.sv2.messages import SubmitSharesExtended

    fixed = {k: bytes.fromhex(v) if k == "extranonce" else v for k, v in SHARE.items()}
    return SubmitSharesExtended(**fixed, tlvs=(user_identity_tlv(identity),))


def test_sri_user_identity_frames_decode_in_python_byte_identical() -> None:
    from ckbpool.sv2.messages import decode_frame_bytes, encode_message

    results = run_lines("tlv-encode", [json.dumps({"share": SHARE, "user_identity": i}) for i in IDENTITIES])
    for identity, result in zip(IDENTITIES, results, strict=True):
        frame = bytes.fromhex(result["hex"])
        msg = decode_frame_bytes(frame)
        assert msg == _share_with(identity)
        assert encode_message(msg) == frame  # we encode SRI's bytes exactly
        # The TLV is SRI's little-endian layout, at the end of the payload, after the fixed fields.
        value = identity.encode()
        assert frame.endswith(b"\x02\x00\x01" + len(value).to_bytes(2, "little") + value)
        assert frame[:3] == b"\x00\x80\x1b"
    # SRI's UserIdentity refuses what ours refuses: more than 32 bytes.
    (too_long,) = run_lines("tlv-encode", [json.dumps({"share": SHARE, "user_identity": "x" * 33})])
    assert "error" in too_long


def test_python_user_identity_frames_decode_in_sri() -> None:
    from ckbpool.sv2.messages import encode_message

    frames = [encode_message(_share_with(i)) for i in IDENTITIES]
    lines = [json.dumps({"hex": f.hex(), "negotiated": [2]}) for f in frames]
    for identity, got in zip(IDENTITIES, run_lines("tlv-decode", lines), strict=True):
        assert got["user_identity"] == identity, got
        assert got["tlvs"] == [{"extension_type": 2, "field_type": 1, "value": identity.encode().hex()}]
    decoded = sri_decode(frames)
    assert [d["tlvs"] for d in decoded] == [[_tlv_json(m.tlvs[0])] for m in map(_share_with, IDENTITIES)]


def test_sri_reads_tlvs_more_leniently_than_we_do() -> None:
    """What SRI does with TLVs our server refuses (documented in docs/sv2-ckb.md): it drops TLVs of
    un-negotiated extensions silently, and its UserIdentity refuses only the length, not invalid UTF-8."""
    from ckbpool.sv2.messages import SubmitSharesExtended, encode_message

    fixed = {k: bytes.fromhex(v) if k == "extranonce" else v for k, v in SHARE.items()}
    tagged = encode_message(_share_with("rig1"))
    over = encode_message(SubmitSharesExtended(**fixed, tlvs=(Tlv(2, 1, b"x" * 33),)))
    bad_utf8 = encode_message(SubmitSharesExtended(**fixed, tlvs=(Tlv(2, 1, b"\xff\xfe"),)))
    lines = [
        json.dumps({"hex": tagged.hex(), "negotiated": []}),
        json.dumps({"hex": over.hex(), "negotiated": [2]}),
        json.dumps({"hex": bad_utf8.hex(), "negotiated": [2]}),
    ]
    not_negotiated, too_long, not_utf8 = run_lines("tlv-decode", lines)
    assert not_negotiated == {"tlvs": [], "user_identity": None, "user_identity_error": None}
    assert too_long["user_identity"] is None and "TooLong" in too_long["user_identity_error"]
    assert not_utf8["user_identity"] is None and not_utf8["user_identity_error"] is None  # as_str() is None


# ------------------------------------------------------------------- (e) 0x4CCB share TLVs, SRI's generic TLV code

CKB_ADDRESS = "ckt1qzda0cr08m85hc8jlnfp3zer7xulejywt49kt2rr0vthywaa50xwsqgqqypqxpq9qcrsszg2pvxq6rs0zqg3yycldrtrf"
CKB_TAGS = [
    ("rig1", f"{CKB_ADDRESS}.rig1", 1 << 236),
    ("w" * 32, f"{CKB_ADDRESS}.{'w' * 32}", (1 << 256) - 1),
    ("x", "x" * 255, 1),  # the 0x4CCB identity at its 255-byte limit (the pool refuses it as an address, later)
]


def _ckb_tagged(worker: str, account: str, target: int) -> Any:
    from ckbpool.sv2.extensions import share_tlvs
    from ckbpool.sv2.messages import SubmitSharesExtended

    fixed = {k: bytes.fromhex(v) if k == "extranonce" else v for k, v in SHARE.items()}
    return SubmitSharesExtended(**fixed, tlvs=share_tlvs(worker, account, target))


def test_ckb_share_tlvs_are_valid_tlv_frames_for_sri() -> None:
    """What the proxy sends per share (0x0002 user_identity, then 0x4CCB ckb_user_identity and share_target):
    SRI's parse_message_frame_with_tlvs reads it as a TLV-extended SubmitSharesExtended with exactly those TLVs
    when both extensions are negotiated; a generic SRI pool that negotiated only 0x0002 drops the 0x4CCB TLVs
    and still reads the worker (UserIdentity); and SRI's generic TLV frame builder (TlvList) makes the same bytes
    from the same fields."""
    from ckbpool.sv2.extensions import EXTENSION_TYPE_CKB
    from ckbpool.sv2.messages import encode_message

    shares = [_ckb_tagged(*tag) for tag in CKB_TAGS]
    frames = [encode_message(m) for m in shares]
    both = [json.dumps({"hex": f.hex(), "negotiated": [2, EXTENSION_TYPE_CKB]}) for f in frames]
    only_0x0002 = [json.dumps({"hex": f.hex(), "negotiated": [2]}) for f in frames]
    for (worker, _, _), share, got in zip(CKB_TAGS, shares, run_lines("tlv-decode", both), strict=True):
        assert "error" not in got, got
        assert got["tlvs"] == [_tlv_json(t) for t in share.tlvs]
        assert got["user_identity"] == worker and got["user_identity_error"] is None
    for (worker, _, _), share, got in zip(CKB_TAGS, shares, run_lines("tlv-decode", only_0x0002), strict=True):
        assert got["tlvs"] == [_tlv_json(share.tlvs[0])] and got["user_identity"] == worker, got
    as_json = [
        {"type": "SubmitSharesExtended", **SHARE, "tlvs": [_tlv_json(t) for t in share.tlvs]} for share in shares
    ]
    assert sri_encode(as_json) == frames
    decoded = sri_decode(frames)
    assert [d["tlvs"] for d in decoded] == [j["tlvs"] for j in as_json]
