"""The fuzz targets (tests/fuzz/targets.py) in the normal suite, without atheris: every target on its seeds, a few
hundred seeded random inputs and hypothesis-generated ones; checks that the harness does report what it must;
regression tests for what fuzzing found; and the "16 MiB header allocates nothing" check."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckbpool.ckb.errors import MalformedError
from ckbpool.ckb.template import BlockTemplate
from ckbpool.sv2.errors import FrameTooLarge
from ckbpool.sv2.framing import FrameDecoder
from ckbpool.sv2.noise import NoiseFrameTooLarge, NoiseStateError
from fuzz import targets
from fuzz.targets import TARGETS, Input, seeds

pytestmark = pytest.mark.unit

NAMES = sorted(TARGETS)
RANDOM_INPUTS = 300


@pytest.mark.parametrize("name", NAMES)
def test_target_survives_seeds_and_random_inputs(name: str) -> None:
    target = TARGETS[name]
    rng = random.Random(f"fuzz-{name}")
    corpus = seeds(name) + [rng.randbytes(rng.randrange(0, 700)) for _ in range(RANDOM_INPUTS)]
    for data in corpus:
        target(data)  # any exception is a finding (the target swallows the library's own errors)


@pytest.mark.parametrize("name", NAMES)
def test_target_survives_hypothesis_inputs(name: str) -> None:
    target = TARGETS[name]

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(st.binary(max_size=900))
    def run(data: bytes) -> None:
        target(data)

    run()


def test_input_reads_zeros_past_the_end_and_never_fails() -> None:
    inp = Input(b"\x07")
    assert inp.byte() == 7 and inp.byte() == 0 and inp.uint(4) == 0 and inp.take(5) == b""
    assert inp.choice("abc") == "a" and inp.remaining == 0


@pytest.mark.parametrize(
    ("target", "patch", "error"),
    [
        ("frame_decoder", (FrameDecoder, "feed"), IndexError),
        ("template_parser", (BlockTemplate, "from_json"), TypeError),
    ],
)
def test_harness_reports_errors_that_are_not_the_librarys(
    monkeypatch: pytest.MonkeyPatch, target: str, patch: tuple[type, str], error: type[Exception]
) -> None:
    """A target must let a foreign exception escape (that is how atheris sees a crash)."""

    def broken(*args: object, **kwargs: object) -> None:
        raise error("planted")

    monkeypatch.setattr(patch[0], patch[1], broken if patch[1] == "feed" else classmethod(broken))
    data = bytes(64) if target == "frame_decoder" else b"\x40" + bytes(40)
    with pytest.raises(error, match="planted"):
        TARGETS[target](data)


def test_harness_reports_a_broken_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder that silently drops a frame is caught by the differential check, not only crashes."""
    real_feed = FrameDecoder.feed

    def lossy(self: FrameDecoder, data: bytes) -> list[object]:
        return real_feed(self, data)[1:]

    monkeypatch.setattr(FrameDecoder, "feed", lossy)
    two_empty_frames = bytes(12)
    with pytest.raises(AssertionError):
        targets.frame_decoder(b"\x06\x00\x00" + two_empty_frames)  # limit 1 MiB, no cuts, raw stream


# --- regressions found by fuzzing ----------------------------------------------------------------------------------


def _template() -> dict[str, object]:
    vector = json.loads((Path(__file__).parents[1] / "data" / "rfc0031_vector.json").read_text())
    template: dict[str, object] = vector["template"]
    return template


@pytest.mark.parametrize("bad", [{}, [], ["type"], {"type": 1}])
def test_template_with_unhashable_hash_type_is_malformed_not_a_type_error(bad: object) -> None:
    template = _template()
    tx = template["transactions"][0]["data"]  # type: ignore[index]
    tx["outputs"][0]["lock"]["hash_type"] = bad
    with pytest.raises(MalformedError, match=r"transactions\[0\]\.data\.outputs\[0\]\.lock\.hash_type"):
        BlockTemplate.from_json(template)


@pytest.mark.parametrize("bad", [{}, [], ["code"]])
def test_template_with_unhashable_dep_type_is_malformed_not_a_type_error(bad: object) -> None:
    template = _template()
    template["transactions"][0]["data"]["cell_deps"][0]["dep_type"] = bad  # type: ignore[index]
    with pytest.raises(MalformedError, match=r"cell_deps\[0\]\.dep_type"):
        BlockTemplate.from_json(template)


# --- a 16 MiB length in a header allocates nothing -----------------------------------------------------------------


def _peak_allocation(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_plaintext_header_announcing_16_mib_is_refused_without_allocating() -> None:
    decoder = FrameDecoder(1 << 20)
    header = b"\x00\x00\x1a\xff\xff\xff"  # SubmitSharesStandard, msg_length 2^24-1

    def feed() -> None:
        with pytest.raises(FrameTooLarge):
            decoder.feed(header + bytes(10))

    assert _peak_allocation(feed) < 64 * 1024
    assert decoder.buffered == 0


def test_encrypted_header_announcing_16_mib_is_refused_without_allocating() -> None:
    miner, pool = targets._handshake(1 << 20)
    wire = targets._encrypt_crafted(miner, b"\x00\x00\x1a\xff\xff\xff", b"")

    def feed() -> None:
        with pytest.raises(NoiseFrameTooLarge):
            pool.feed(wire + bytes(100))

    assert _peak_allocation(feed) < 64 * 1024
    assert pool.decryptor.buffered == 0
    with pytest.raises(NoiseStateError):
        pool.feed(b"more")


def test_plaintext_session_answers_each_frame_before_the_next_one_closes_the_connection() -> None:
    """Found by the pool_session target: without Noise, MinerSession.feed ran conn.receive_data over the whole chunk
    and answered afterwards, so an OpenStandardMiningChannel followed in the same chunk by a frame that closes the
    connection made the pool send .Success on a closed connection (LocalProtocolError escaping feed)."""
    from ckbpool.pool.config import PoolConfig
    from ckbpool.pool.metrics import PoolMetrics
    from ckbpool.pool.stratum import MinerSession, StratumServer
    from ckbpool.sv2.messages import OpenStandardMiningChannel, SetupConnection, encode_message

    server = StratumServer(PoolConfig(), PoolMetrics(), None)
    writer = targets._FakeWriter()
    session = MinerSession(server, writer, None)  # type: ignore[arg-type]
    setup = encode_message(SetupConnection(0, 2, 2, 0, "h", 1, "v", "", "", ""))
    open_channel = encode_message(OpenStandardMiningChannel(1, "user.w", 1e6, (1 << 256) - 1))
    session.feed(setup + open_channel + setup)  # the second SetupConnection closes the connection
    assert session.closed and writer.closed
    assert server.metrics.connection_errors_total.labels(reason="unexpected-message")._value.get() == 1
    # and the input the fuzzer minimised it to
    targets.pool_session(
        bytes.fromhex("0021020104000605030708090a0b0c0d0e0f1011121314363738c8c9cacbcccdced9dadbdcddffff7a0203")
    )
