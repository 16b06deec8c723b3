"""SOLO mining, the pure parts: the cellbase witness (molecule), the leaf-0 CBMT path, SOLO jobs built from the
RFC 0031 template (checked against a full, independent job build), the ``solo:`` identity, the SOLO job cache,
PPLNS windows that skip SOLO work, and the tracker recording SOLO blocks as mode "solo"."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckbpool.ckb.address import encode_address, secp256k1_lock
from ckbpool.ckb.cellbase import (
    CellbaseRewriter,
    CellbaseWitness,
    SoloJobError,
    leaf0_path,
    parse_cellbase_witness,
    patch_template_json,
    root_from_leaf0,
)
from ckbpool.ckb.errors import MalformedError
from ckbpool.ckb.merkle import merkle_root
from ckbpool.ckb.rpc import CkbRpcClient
from ckbpool.ckb.structures import Script
from ckbpool.ckb.template import BlockTemplate, MiningJob, job_from_template
from ckbpool.payouts.ledger import Ledger
from ckbpool.payouts.pplns import ShareRecord, window_from_shares
from ckbpool.payouts.tracker import BlockTracker, PayoutPolicy
from ckbpool.pool.channels import JobEntry
from ckbpool.pool.identity import (
    ERROR_ADDRESS_WRONG_NETWORK,
    ERROR_INVALID_ADDRESS,
    IdentityError,
    is_solo,
    parse_identity,
    solo_address,
)
from ckbpool.pool.solo import SoloJobs, solo_lock_error

pytestmark = pytest.mark.unit
DATA = Path(__file__).parent.parent / "data"
MINER = secp256k1_lock(bytes(range(20)))
MINER_ADDRESS = encode_address(MINER, "dev")


def _template_json() -> dict:  # type: ignore[type-arg]
    return json.loads((DATA / "rfc0031_vector.json").read_text())["template"]  # type: ignore[no-any-return]


def _template(extra_txs: int = 0) -> BlockTemplate:
    template = BlockTemplate.from_json(_template_json())
    return dataclasses.replace(template, transactions=template.transactions * (1 + extra_txs))


def _reference_job(job: MiningJob, lock: Script) -> MiningJob:
    """The SOLO job built the long way: a whole new template with the witness replaced, then a full job build."""
    template = job.template
    witness = parse_cellbase_witness(template.cellbase.witnesses[0])
    cellbase = dataclasses.replace(template.cellbase, witnesses=(CellbaseWitness(lock, witness.message).serialize(),))
    return job_from_template(dataclasses.replace(template, cellbase=cellbase))


# -- cellbase witness and the leaf-0 path ------------------------------------------------------------------


def test_the_templates_cellbase_witness_parses_and_serializes_back_to_the_same_bytes() -> None:
    raw = _template().cellbase.witnesses[0]
    witness = parse_cellbase_witness(raw)
    assert witness.lock.hash_type == 1 and len(witness.lock.args) == 20
    assert witness.serialize() == raw


@pytest.mark.parametrize("cut", [0, 3, 8, 20])
def test_a_truncated_cellbase_witness_is_malformed(cut: int) -> None:
    raw = _template().cellbase.witnesses[0]
    with pytest.raises(MalformedError):
        parse_cellbase_witness(raw[:cut] if cut else raw[:-1])


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=70), st.binary(min_size=32, max_size=32))
def test_root_from_leaf0_equals_the_whole_tree_with_leaf0_replaced(leaves: list[bytes], new_leaf: bytes) -> None:
    path = leaf0_path(leaves)
    assert root_from_leaf0(leaves[0], path) == merkle_root(leaves)
    assert root_from_leaf0(new_leaf, path) == merkle_root([new_leaf, *leaves[1:]])


# -- SOLO jobs ------------------------------------------------------------------------------------------------


def test_the_pools_own_lock_gives_back_the_pools_job() -> None:
    job = job_from_template(_template())
    rewriter = CellbaseRewriter(job)
    same = rewriter.job_for(rewriter.template_witness.lock)
    assert same.pow_hash == job.pow_hash and same.block(7) == job.block(7)


@pytest.mark.parametrize("extra_txs", [0, 1, 4, 9])
def test_a_solo_job_commits_to_the_miners_lock_exactly_as_a_full_rebuild_does(extra_txs: int) -> None:
    job = job_from_template(_template(extra_txs))
    solo = CellbaseRewriter(job).job_for(MINER)
    reference = _reference_job(job, MINER)
    assert solo.pow_hash != job.pow_hash
    assert solo.raw_header == reference.raw_header and solo.pow_hash == reference.pow_hash
    block = solo.block(0x1234)
    assert block == reference.block(0x1234)
    cellbase = block.transactions[0]
    assert cellbase.hash() == job.template.cellbase.hash(), "the witness is not part of the tx hash"
    witness = parse_cellbase_witness(cellbase.witnesses[0])
    assert witness.lock == MINER
    assert witness.message == parse_cellbase_witness(job.template.cellbase.witnesses[0]).message
    assert block.transactions[1:] == job.block(0).transactions[1:]
    assert (solo.target, solo.work_id, solo.height, solo.parent_hash) == (
        job.target, job.work_id, job.height, job.parent_hash,
    )  # fmt: skip


def test_a_lock_that_would_overflow_the_block_size_limit_is_refused() -> None:
    job = job_from_template(_template())
    size = len(job.block(0).serialize())
    tight = dataclasses.replace(job, template=dataclasses.replace(job.template, bytes_limit=size))
    rewriter = CellbaseRewriter(tight)
    assert rewriter.job_for(MINER).pow_hash  # same size as the template's lock: fits exactly
    longer = Script(code_hash=MINER.code_hash, hash_type=1, args=bytes(21))
    with pytest.raises(SoloJobError, match="bytes_limit"):
        rewriter.job_for(longer)
    roomy = dataclasses.replace(job, template=dataclasses.replace(job.template, bytes_limit=size + 1))
    assert CellbaseRewriter(roomy).job_for(longer).pow_hash


def test_a_lock_with_a_hash_type_ckb_does_not_enable_is_refused() -> None:
    rewriter = CellbaseRewriter(job_from_template(_template()))
    with pytest.raises(SoloJobError, match="hash_type"):
        rewriter.job_for(Script(code_hash=MINER.code_hash, hash_type=3, args=MINER.args))


def test_the_patched_template_json_builds_the_solo_job() -> None:
    raw = _template_json()
    job = job_from_template(BlockTemplate.from_json(raw))
    solo = CellbaseRewriter(job).job_for(MINER)
    patched = json.loads(patch_template_json(json.dumps(raw).encode(), solo.template.cellbase))
    assert patched["cellbase"]["hash"] == raw["cellbase"]["hash"]
    assert job_from_template(BlockTemplate.from_json(patched)).pow_hash == solo.pow_hash


# -- the solo: identity -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["solo:", "SOLO:", "Solo:"])
def test_a_solo_identity_names_the_solo_account(prefix: str) -> None:
    identity = parse_identity(f"{prefix}{MINER_ADDRESS.upper()}.rig-1", "dev")
    assert identity.user == f"solo:{MINER_ADDRESS}" and identity.worker == "rig-1" and identity.solo
    assert str(identity) == f"solo:{MINER_ADDRESS}.rig-1"
    assert solo_address(identity.user) == MINER_ADDRESS
    assert parse_identity(f"solo:{MINER_ADDRESS}", None).worker == "default"


def test_a_solo_identity_needs_an_address_even_where_any_account_name_is_accepted() -> None:
    assert not parse_identity("alice.rig", None).solo
    with pytest.raises(IdentityError) as err:
        parse_identity("solo:alice.rig", None)
    assert err.value.code == ERROR_INVALID_ADDRESS
    mainnet = encode_address(MINER, "mainnet")
    with pytest.raises(IdentityError) as err:
        parse_identity(f"solo:{mainnet}.rig", "dev")
    assert err.value.code == ERROR_ADDRESS_WRONG_NETWORK
    # no network required by the pool: the server still checks the lock against its own network at channel open
    assert parse_identity(f"solo:{mainnet}.rig", None).solo
    assert solo_lock_error(f"solo:{mainnet}", "dev") is not None
    assert solo_lock_error(f"solo:{MINER_ADDRESS}", "dev") is None
    assert not is_solo(MINER_ADDRESS)
    with pytest.raises(ValueError):
        solo_address(MINER_ADDRESS)


# -- the SOLO job cache ---------------------------------------------------------------------------------------


def test_solo_jobs_build_one_variant_per_job_and_account_and_forget_old_jobs() -> None:
    job = job_from_template(_template())
    other = encode_address(secp256k1_lock(bytes(19) + b"\x01"), "dev")
    solo: SoloJobs[tuple[int, MiningJob, JobEntry]] = SoloJobs("dev")

    def make(job_id: int, variant: MiningJob, entry: JobEntry) -> tuple[int, MiningJob, JobEntry]:
        return job_id, variant, entry

    a = solo.variant(5, job, f"solo:{MINER_ADDRESS}", make)
    assert solo.variant(5, job, f"solo:{MINER_ADDRESS}", make) is a and solo.built == 1
    b = solo.variant(5, job, f"solo:{other}", make)
    assert solo.built == 2 and a[1].pow_hash != b[1].pow_hash != job.pow_hash
    assert a[2].pow_hash == a[1].pow_hash and a[2].job_id == 5
    assert solo.get(5, f"solo:{MINER_ADDRESS}") is a and solo.get(6, f"solo:{MINER_ADDRESS}") is None
    assert solo.get(5, MINER_ADDRESS) is None, "a PPLNS account never finds a SOLO job"
    a[2].seen.add(b"x" * 16)
    solo.prune([5], b"another parent")
    assert solo.get(5, f"solo:{MINER_ADDRESS}") is a and a[2].seen == set(), "older heights: duplicates forgotten"
    solo.prune([6], job.parent_hash)
    assert solo.get(5, f"solo:{MINER_ADDRESS}") is None and solo.get(5, f"solo:{other}") is None


# -- books ------------------------------------------------------------------------------------------------------


def test_a_pplns_window_skips_solo_work() -> None:
    records = [
        ShareRecord("alice", 100, 10.0),
        ShareRecord(f"solo:{MINER_ADDRESS}", 1_000, 9.0),
        ShareRecord("bob", 100, 8.0),
        ShareRecord(f"solo:{MINER_ADDRESS}", 1_000, 7.0),
        ShareRecord("alice", 100, 6.0),
    ]
    window = window_from_shares(records, 250)
    assert window.weights == {"alice": 150, "bob": 100} and window.complete and window.shares == 3


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        yield ledger
    finally:
        ledger.close()


async def test_the_tracker_records_a_solo_block_as_mode_solo_with_its_address(ledger: Ledger) -> None:
    tracker = BlockTracker(ledger, CkbRpcClient("http://127.0.0.1:9"), PayoutPolicy(fee_address="op"))
    now = dt.datetime.now(dt.UTC).timestamp()
    assert await tracker.record_outcome("11" * 32, 7, "accepted", f"solo:{MINER_ADDRESS}", "rig", now)
    assert await tracker.record_outcome("22" * 32, 8, "accepted", MINER_ADDRESS, "rig", now)
    solo, pplns = ledger.block("11" * 32), ledger.block("22" * 32)
    assert solo is not None and solo.mode == "solo" and solo.finder == MINER_ADDRESS
    assert pplns is not None and pplns.mode == "pplns" and pplns.finder == MINER_ADDRESS
    assert not await tracker.record_outcome("11" * 32, 7, "accepted", f"solo:{MINER_ADDRESS}", "rig", now)
