"""The stratum server's share queue handed to the bus as whole lists (``on_shares``: a stratum worker's IPC link,
issue 19), and vardiff's shortcut for a channel flooding at its hardest target.

The server runs without Noise over a recording transport (no sockets): what matters is the order of events --
every share in the list, in submit order, Successes only after the list was taken, a failed hand-over retried
with the same list -- not timing.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from ckbpool.bus.events import Share
from ckbpool.ckb.template import BlockTemplate, job_from_template
from ckbpool.pool.channels import TWO_256, Vardiff, _target_bounds, easiest_target
from ckbpool.pool.config import PoolConfig, VardiffSettings
from ckbpool.pool.metrics import PoolMetrics
from ckbpool.pool.stratum import MinerSession, StratumServer
from ckbpool.sv2.messages import encode_message
from ckbpool.sv2.messages_common import PROTOCOL_MINING, SetupConnection
from ckbpool.sv2.messages_mining import (
    OpenStandardMiningChannel,
    OpenStandardMiningChannelSuccess,
    SubmitSharesError,
    SubmitSharesStandard,
    SubmitSharesSuccess,
)
from support.transport import RecordingTransport

pytestmark = pytest.mark.unit

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
EASY = (1 << 256) - 1


def _server(on_shares: Any, on_share: Any = None) -> tuple[StratumServer, MinerSession, RecordingTransport, int]:
    config = PoolConfig.model_validate(
        {
            "stratum": {"noise": False},
            "success_batch_shares": 1,
            # every nonce is a share (target 2^256-1) and the target cannot move (as in bench_pool)
            "vardiff": {
                "min_share_difficulty": 1e-9,
                "min_hashrate": 1e-9,
                "max_share_difficulty": 1.0,
                "initial_hashrate": 1e-9,
            },
        }
    )
    server = StratumServer(config, PoolMetrics(), None, on_shares=on_shares, on_share=on_share)
    template = json.loads((DATA_DIR / "rfc0031_vector.json").read_text())["template"]
    template["compact_target"] = "0x1a08a97e"
    server.new_job(1, job_from_template(BlockTemplate.from_json(template)))
    transport = RecordingTransport()
    session = MinerSession(server, transport, None)  # type: ignore[arg-type]
    server.sessions.add(session)
    session.feed(encode_message(SetupConnection(PROTOCOL_MINING, 2, 2, 0, "127.0.0.1", 0, "test", "", "", "")))
    session.feed(encode_message(OpenStandardMiningChannel(1, "alice.rig", 1e6, EASY)))
    (opened,) = transport.of(OpenStandardMiningChannelSuccess)
    return server, session, transport, opened.channel_id


def _submit(session: MinerSession, channel_id: int, sequences: range, nonce_of: Any = None) -> None:
    data = b"".join(
        encode_message(SubmitSharesStandard(channel_id, seq, 1, seq if nonce_of is None else nonce_of(seq), 0, 0))
        for seq in sequences
    )
    session.feed(data)


async def test_the_queue_goes_over_as_lists_in_order_and_successes_follow_the_hand_over() -> None:
    batches: list[list[Share]] = []
    successes_seen_at_hand_over: list[int] = []
    gate = asyncio.Event()

    async def on_shares(shares: list[Share]) -> None:
        successes_seen_at_hand_over.append(len(transport.of(SubmitSharesSuccess)))
        await gate.wait()
        batches.append(list(shares))

    server, session, transport, channel_id = _server(on_shares)
    _submit(session, channel_id, range(1, 6))
    _submit(session, channel_id, range(6, 9), nonce_of=lambda seq: seq - 5)  # 3 duplicates of nonces 1..3
    await asyncio.sleep(0)  # the publishing task starts and waits at the gate
    assert not transport.of(SubmitSharesSuccess)  # nothing answered before the bus took it
    assert len(transport.of(SubmitSharesError)) == 3  # rejections need no bus
    _submit(session, channel_id, range(9, 12))  # arrives while the first list is in flight: the next list
    gate.set()
    assert await server.flush_shares(5.0)
    assert [len(b) for b in batches] == [8, 3]
    shares = [s for b in batches for s in b]
    assert [s.seq for s in shares] == list(range(1, 12))  # stable ids in submit order
    assert [s.accepted for s in shares] == [True] * 5 + [False] * 3 + [True] * 3
    assert {s.reason for s in shares[5:8]} == {"duplicate-share"}
    acked = sum(m.new_submits_accepted_count for m in transport.of(SubmitSharesSuccess))
    assert acked == 8 and successes_seen_at_hand_over == [0, 5]
    session.close()


async def test_a_failed_hand_over_is_retried_with_the_same_list_and_only_then_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[list[int]] = []

    async def on_shares(shares: list[Share]) -> None:
        attempts.append([s.seq for s in shares])
        if len(attempts) == 1:
            raise ConnectionError("the bus is away")

    server, session, transport, channel_id = _server(on_shares)
    _submit(session, channel_id, range(1, 4))
    assert await server.flush_shares(30.0)
    assert attempts == [[1, 2, 3], [1, 2, 3]]
    assert sum(m.new_submits_accepted_count for m in transport.of(SubmitSharesSuccess)) == 3
    session.close()


async def test_one_share_at_a_time_still_answers_each_only_after_the_bus_took_it() -> None:
    taken: list[int] = []
    gate = asyncio.Event()

    async def on_share(share: Share) -> None:
        await gate.wait()
        taken.append(share.seq)

    server, session, transport, channel_id = _server(None, on_share)
    _submit(session, channel_id, range(1, 4))
    await asyncio.sleep(0)
    assert not transport.of(SubmitSharesSuccess) and not taken
    gate.set()
    assert await server.flush_shares(5.0)
    assert taken == [1, 2, 3]
    assert sum(m.new_submits_accepted_count for m in transport.of(SubmitSharesSuccess)) == 3
    session.close()


def test_a_flood_at_the_hardest_target_changes_nothing_and_below_it_still_retargets() -> None:
    settings = VardiffSettings(
        share_interval_s=10.0, retarget_interval_s=60.0, max_share_difficulty=1.0, min_share_difficulty=1e-9
    )
    hardest = _target_bounds(settings)[1]
    start = time.monotonic() + 0.001  # after the windows' start
    at_ceiling = Vardiff(settings, hardest, 1)
    assert at_ceiling.target == hardest
    for i in range(200):  # 200 shares in 2 s: a flood, but there is no harder target to go to
        assert at_ceiling.on_share(now=start + i * 0.01, work=TWO_256 / hardest) is None
    assert at_ceiling.target == hardest and at_ceiling._window_shares == 200  # the window kept measuring
    roomy = VardiffSettings(share_interval_s=10.0, retarget_interval_s=60.0)  # far from its ceiling
    easy = Vardiff(roomy, easiest_target(roomy), 1)
    initial = easy.target
    changes = [easy.on_share(now=start + i * 0.01, work=TWO_256 / easy.target) for i in range(200)]
    assert any(c is not None for c in changes) and easy.target < initial  # a flood makes it harder
