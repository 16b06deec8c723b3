"""``ckbpool payouts status`` and ``history`` against a real ledger (SQLite, migrated by the real code) and, for
``status``, a real ckb dev node: what the operator reads must be what the ledger and the wallet hold.

The ledger is filled through its own API (found -> accepted -> finalized -> mature -> credited, then payout
transactions recorded / sent / committed), so every figure the commands print is checked against the ledger's
own ``balances()`` and ``payouts()``, not against numbers written into the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from ckbpool.ckb.address import encode_address, secp256k1_lock
from ckbpool.ckb.devwallet import DevKey
from ckbpool.ckb.node import CkbNode
from ckbpool.cli import payouts_cmds
from ckbpool.cli.app import app
from ckbpool.payouts.ledger import Ledger, MinerReward
from ckbpool.payouts.pplns import Window
from ckbpool.payouts.wallet import create_key_file

pytestmark = pytest.mark.integration

CKB = 100_000_000
ALICE = encode_address(secp256k1_lock(bytes([1]) * 20), "dev")
BOB = encode_address(secp256k1_lock(bytes([2]) * 20), "dev")
CAROL = encode_address(secp256k1_lock(bytes([3]) * 20), "dev")
OPERATOR = encode_address(secp256k1_lock(bytes([9]) * 20), "dev")
BLOCKS = [f"{i:064x}" for i in range(1, 10)]
TXS = [f"{i:064x}" for i in range(100, 110)]


def _ckb(shannons: int) -> str:
    """The commands' own CKB formatting (whole part with thousands separators, 8 decimals)."""
    whole, frac = divmod(shannons, CKB)
    return f"{whole:,}.{frac:08d} CKB"


def _credit(ledger: Ledger, block_hash: str, height: int, weights: dict[str, int], total: int) -> None:
    work = sum(weights.values())
    window = Window(target_work=work, weights=weights, counted_work=work, shares=len(weights), complete=True)
    ledger.record_found(block_hash, height, ALICE, "rig")
    ledger.accept(block_hash, network_difficulty=256, window=window, n=2, fee_bps=100, fee_address=OPERATOR)
    reward = MinerReward(primary=total - 3, secondary=1, committed=1, proposal=1)
    ledger.finalize(block_hash, reward, finalized_by=BLOCKS[-1], cellbase_epoch=0)
    ledger.mark_mature(block_hash)
    ledger.mark_credited(block_hash)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands print through rich, which wraps at the terminal's width (80 under the test runner): wide
    enough here that each printed line stays one line to compare."""
    monkeypatch.setattr(payouts_cmds, "out", Console(width=400))
    monkeypatch.setattr(payouts_cmds, "err", Console(width=400, stderr=True))


@pytest.fixture
def pool_toml(tmp_path: Path) -> Iterator[Path]:
    """A pool.toml with [payouts] on a SQLite ledger holding: two credited blocks, one finalized (immature), a
    committed payout to alice, a sent one to bob; the node URL is filled in by the tests that need a node."""
    db = tmp_path / "ledger.sqlite"
    key = tmp_path / "payout-wallet.key"
    create_key_file(key)
    ledger = Ledger.open(f"sqlite:///{db}")
    try:
        _credit(ledger, BLOCKS[0], 10, {ALICE: 3, BOB: 1}, 2000 * CKB)
        _credit(ledger, BLOCKS[1], 11, {ALICE: 1, CAROL: 1}, 1000 * CKB)
        ledger.record_found(BLOCKS[2], 12, BOB, "rig")
        work = Window(target_work=2, weights={BOB: 2}, counted_work=2, shares=1, complete=True)
        ledger.accept(BLOCKS[2], network_difficulty=256, window=work, n=2, fee_bps=100, fee_address=OPERATOR)
        ledger.finalize(BLOCKS[2], MinerReward(500 * CKB, 0, 0, 0), finalized_by=BLOCKS[-1], cellbase_epoch=0)
        ledger.record_payout(TXS[0], "0x00", 1000, {ALICE: 700 * CKB})
        ledger.mark_sent(TXS[0])
        ledger.mark_committed(TXS[0], BLOCKS[3])
        ledger.record_payout(TXS[1], "0x00", 2000, {BOB: 400 * CKB, ALICE: 100 * CKB})
        ledger.mark_sent(TXS[1])
    finally:
        ledger.close()
    path = tmp_path / "pool.toml"
    path.write_text(
        'network = "dev"\n'
        "[node]\n"
        'rpc_url = "http://127.0.0.1:1"\n'
        "[payouts]\n"
        "enabled = true\n"
        f'sqlite_path = "{db}"\n'
        f'wallet_key_file = "{key}"\n'
        f'fee_address = "{OPERATOR}"\n'
        "metrics_port = 0\n"
    )
    yield path


def _run(*args: str) -> Result:
    return CliRunner().invoke(app, ["payouts", *args])


def _ledger(pool_toml: Path) -> Ledger:
    return Ledger.open(f"sqlite:///{pool_toml.parent / 'ledger.sqlite'}")


def test_history_lists_each_payout_newest_first_with_its_lines(pool_toml: Path) -> None:
    result = _run("history", "-c", str(pool_toml))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    ledger = _ledger(pool_toml)
    try:
        rows = ledger.payouts()
    finally:
        ledger.close()
    heads = [line for line in lines if not line.startswith(" ")]
    assert [h.split()[0] for h in heads] == [r.tx_hash for r in reversed(rows)], "newest first"
    assert heads[0].split()[1] == "sent" and heads[1].split()[1] == "committed"
    for row in rows:
        for address, amount in row.outputs:
            assert f"    {address}  {_ckb(amount)}" in lines

    only_bob = _run("history", "-c", str(pool_toml), "--address", BOB)
    assert only_bob.exit_code == 0, only_bob.output
    assert TXS[1] in only_bob.output and TXS[0] not in only_bob.output
    assert BOB in only_bob.output and ALICE not in only_bob.output

    newest = _run("history", "-c", str(pool_toml), "--limit", "1")
    assert TXS[1] in newest.output and TXS[0] not in newest.output
    nobody = _run("history", "-c", str(pool_toml), "--address", CAROL)
    assert nobody.exit_code == 0 and "no payout transactions" in nobody.output


def test_history_and_status_refuse_a_config_without_a_ledger(tmp_path: Path) -> None:
    bare = tmp_path / "pool.toml"
    bare.write_text('network = "dev"\n[payouts]\nenabled = false\n')
    for command in ("history", "status"):
        result = _run(command, "-c", str(bare))
        assert result.exit_code == 2
        assert "needs a database, wallet_key_file and fee_address" in result.output
    broken = tmp_path / "broken.toml"
    broken.write_text('network = "moonnet"\n')
    result = _run("history", "-c", str(broken))
    assert result.exit_code == 2 and "network" in result.output


def test_status_shows_the_wallet_the_ledger_totals_and_the_next_batch(pool_toml: Path, dev_node: CkbNode) -> None:
    text = pool_toml.read_text().replace("http://127.0.0.1:1", dev_node.config.rpc_url)
    pool_toml.write_text(text)
    result = _run("status", "-c", str(pool_toml))
    assert result.exit_code == 0, result.output
    out = result.output
    from ckbpool.payouts.wallet import load_key_file

    wallet = encode_address(load_key_file(pool_toml.parent / "payout-wallet.key").lock, "dev")
    assert f"wallet:  {wallet}" in out
    # a fresh key on a fresh chain owns nothing
    assert f"spendable {_ckb(0)}, immature {_ckb(0)}" in out
    ledger = _ledger(pool_toml)
    try:
        balances = ledger.balances()
        by_status: dict[str, int] = {}
        for block in ledger.blocks():
            by_status[block.status] = by_status.get(block.status, 0) + 1
    finally:
        ledger.close()
    totals = {k: sum(getattr(b, k) for b in balances.values()) for k in ("immature", "payable", "in_flight", "paid")}
    assert totals["immature"] > 0 and totals["payable"] > 0 and totals["in_flight"] > 0 and totals["paid"] > 0
    assert (
        f"ledger:  immature {_ckb(totals['immature'])}, payable {_ckb(totals['payable'])}, "
        f"in flight {_ckb(totals['in_flight'])}, paid {_ckb(totals['paid'])}"
    ) in out
    assert "blocks:  " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) in out
    # the wallet holds nothing, so it is short by everything payable
    assert f"the wallet is short by {_ckb(totals['payable'])}" in " ".join(out.split())
    assert "1 payout transaction(s) not yet committed" in out and TXS[1][:16] in out
    # the next batch: every balance at or over the threshold (100 CKB by default), all in one batch of <= 200
    due = {a: b.payable for a, b in balances.items() if b.payable >= 100 * CKB}
    assert len(due) >= 2
    assert f"next:    batch 1: {len(due)} outputs, {_ckb(sum(due.values()))}" in out
    assert "batch 2" not in out
    assert os.stat(pool_toml.parent / "payout-wallet.key").st_mode & 0o077 == 0


def _pool_size(rpc_url: str) -> tuple[int, int]:
    """(pending, proposed) transactions in the node's pool (``tx_pool_info``)."""
    import asyncio

    from ckbpool.ckb.rpc import CkbRpcClient

    async def ask() -> tuple[int, int]:
        async with CkbRpcClient(rpc_url) as client:
            info = await client.call("tx_pool_info")
        return int(info["pending"], 16), int(info["proposed"], 16)

    return asyncio.run(ask())


@pytest.fixture
def funded_toml(tmp_path: Path, dev_node: CkbNode, dev_key: DevKey) -> Path:
    """A pool.toml whose payout wallet is the dev chain's genesis key (its issued cells: spendable at once, the
    dev spec's cellbase maturity is 0) and whose SQLite ledger holds one credited block: alice and bob above the
    default 100 CKB threshold, carol below it, the operator's 1 % fee below it too."""
    key = tmp_path / "payout-wallet.key"
    key.write_text(dev_key.private_key.hex() + "\n")
    key.chmod(0o600)
    db = tmp_path / "ledger.sqlite"
    ledger = Ledger.open(f"sqlite:///{db}")
    try:
        _credit(ledger, BLOCKS[0], 10, {ALICE: 30, BOB: 10, CAROL: 1}, 2000 * CKB)
    finally:
        ledger.close()
    path = tmp_path / "pool.toml"
    path.write_text(
        'network = "dev"\n'
        "[node]\n"
        f'rpc_url = "{dev_node.config.rpc_url}"\n'
        "[payouts]\n"
        "enabled = true\n"
        f'sqlite_path = "{db}"\n'
        f'wallet_key_file = "{key}"\n'
        f'fee_address = "{OPERATOR}"\n'
        "metrics_port = 0\n"
    )
    return path


def test_run_dry_run_names_the_batch_and_neither_records_nor_sends_it(funded_toml: Path, dev_node: CkbNode) -> None:
    """``payouts run --dry-run`` prints the batch a real pass would pay (each output's address and amount) and
    leaves both the ledger and the node as they were; the same command without ``--dry-run`` then pays exactly
    that batch -- so the dry run had something to send and did not."""
    ledger = _ledger(funded_toml)
    try:
        before = ledger.balances()
    finally:
        ledger.close()
    threshold = 100 * CKB  # PayoutSettings' default
    due = sorted(((a, b.payable) for a, b in before.items() if b.payable >= threshold), key=lambda p: (-p[1], p[0]))
    assert [a for a, _ in due] == [ALICE, BOB]  # carol (~48 CKB) and the operator (20 CKB) stay below
    assert before[CAROL].payable > 0 and before[OPERATOR].payable > 0
    pool_before = _pool_size(dev_node.config.rpc_url)

    dry = _run("run", "-c", str(funded_toml), "--dry-run")
    assert dry.exit_code == 0, dry.output
    batch = "batch 1 would pay: " + ", ".join(f"{a} {_ckb(amount)}" for a, amount in due)
    assert batch in dry.output.splitlines(), dry.output
    assert "batch 2" not in dry.output and CAROL not in dry.output
    assert "not paid: dry run" in dry.output and "sent " not in dry.output
    ledger = _ledger(funded_toml)
    try:
        assert ledger.payouts() == []
        assert ledger.balances() == before
    finally:
        ledger.close()
    assert _pool_size(dev_node.config.rpc_url) == pool_before

    # the control: a real pass sends that very batch (one transaction, the same outputs and amounts)
    real = _run("run", "-c", str(funded_toml))
    assert real.exit_code == 0, real.output
    ledger = _ledger(funded_toml)
    try:
        (payout,) = ledger.payouts()
    finally:
        ledger.close()
    assert f"sent {payout.tx_hash}: 2 outputs, {_ckb(sum(a for _, a in due))}" in real.output, real.output
    lines = dict(payout.outputs)
    assert {a: lines[a] for a, _ in due} == dict(due)
    assert set(lines) == {ALICE, BOB, OPERATOR} and lines[OPERATOR] == payout.fee  # the operator pays the fee
    pending, proposed = _pool_size(dev_node.config.rpc_url)
    assert pending + proposed == sum(pool_before) + 1
