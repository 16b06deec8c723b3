"""The public API's answers as pydantic models: the handlers build them, and the OpenAPI document
(:func:`openapi_document`) is generated from them, so the schema cannot drift from what is served.

Amounts are in shannons (1 CKB = 10^8 shannons) as integers; hashrates in hashes per second; times in Unix
seconds. A field that the pool cannot know (no payouts ledger configured, a node not answering) is null, and
``notes`` says why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hashrate(_Out):
    """Average hashes per second over the window ending now (minutes without shares count as zero)."""

    h10m: float = Field(ge=0, description="last 10 minutes")
    h1h: float = Field(ge=0, description="last hour")
    h24h: float = Field(ge=0, description="last 24 hours")


class HashrateHistory(_Out):
    minutes: list[float] = Field(description="H/s per minute, the last 60, oldest first (the current one partial)")
    hours: list[float] = Field(description="H/s per hour, the last 24, oldest first (the current one so far)")


class Network(_Out):
    height: int | None = Field(description="the node's tip block number")
    difficulty: str | None = Field(description="network difficulty (floor(2^256 / target)) as a decimal string")
    tip_hash: str | None = Field(description="0x-prefixed hash of the tip block")


class Block(_Out):
    height: int
    hash: str = Field(pattern="^0x[0-9a-f]{64}$")
    status: str = Field(
        description="pending, accepted, stale or rejected as submitted; the ledger's life "
        "stage (found, accepted, finalized, mature, credited, void) when it knows the block"
    )
    reward: int | None = Field(description="shannons, once the ledger knows the block's reward; else null")
    found_at: float | None


class PoolOverview(_Out):
    network_name: Literal["dev", "testnet", "mainnet"]
    hashrate: Hashrate
    history: HashrateHistory
    miners_online: int = Field(ge=0, description="addresses with an accepted share in the online window")
    workers_online: int = Field(ge=0)
    online_window_s: int
    network: Network
    payout_scheme: Literal["PPLNS"] | None = Field(description="null when this pool has no payouts configured")
    fee_percent: float | None = Field(description="pool fee, % of each block's reward; null without payouts")
    blocks: list[Block] = Field(description="the latest blocks found by the pool, newest first")
    updated_at: float
    notes: list[str]


class BlockList(_Out):
    blocks: list[Block]
    updated_at: float


class Worker(_Out):
    name: str
    hashrate: Hashrate
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    last_share: float | None = Field(description="time of the last accepted share")
    online: bool


class Balance(_Out):
    immature: int = Field(ge=0, description="shannons credited from blocks not yet mature")
    payable: int = Field(description="shannons ready to be paid")
    paid: int = Field(ge=0, description="shannons paid in committed transactions")


class Payment(_Out):
    tx_hash: str = Field(pattern="^0x[0-9a-f]{64}$")
    amount: int = Field(ge=0, description="shannons paid to this address by the transaction")
    status: str = Field(description="recorded, sent, committed or gone")


class SoloStats(_Out):
    """An address's SOLO mining (workers named ``solo:<address>.<worker>``): fee-free, each block's whole reward
    goes to the address through the block's own cellbase, so none of it is in the pool's balance or payments.
    Kept apart from the address's PPLNS figures, which never include SOLO work."""

    account: str = Field(description="the books' account of this SOLO mining: solo:<address>")
    hashrate: Hashrate
    history: HashrateHistory
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    last_share: float | None = Field(description="time of the last accepted SOLO share")
    workers: list[Worker] = Field(description="the SOLO workers, newest share first")
    workers_online: int = Field(ge=0)
    blocks: list[Block] = Field(
        description="blocks this address found SOLO, newest first; the reward goes to the address itself"
    )


class AddressStats(_Out):
    address: str
    hashrate: Hashrate
    history: HashrateHistory
    accepted: int = Field(ge=0)
    rejected: int = Field(ge=0)
    last_share: float | None
    workers: list[Worker]
    workers_online: int = Field(ge=0)
    blocks: list[Block] = Field(description="PPLNS blocks found by this address's workers, newest first")
    solo: SoloStats | None = Field(
        description="this address's SOLO mining (solo:<address>.<worker>), separate from every figure above; "
        "null when the pool has no SOLO shares or blocks of it"
    )
    balance: Balance | None = Field(description="null when the pool has no payouts ledger configured")
    payments: list[Payment] | None = Field(description="null when the pool has no payouts ledger configured")
    updated_at: float
    notes: list[str]


class Problem(_Out):
    """Every error answer: what was wrong, in a sentence a miner can act on."""

    error: str
    detail: str


MODELS: tuple[type[BaseModel], ...] = (PoolOverview, BlockList, AddressStats, Problem)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Problem")}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def openapi_document(title: str = "ckbpool public API", version: str = "1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the public API (served at /api/openapi.json)."""
    _, top = models_json_schema([(m, "serialization") for m in MODELS], ref_template="#/components/schemas/{model}")
    limited = _problem("too many requests from this address; retry after the Retry-After header's seconds")
    common = {
        "414": _problem("the query string is longer than the server takes"),
        "429": limited,
        "503": _problem("the pool's books cannot be read right now (Redis unavailable)"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Read-only figures of a CKB mining pool: the pool, its blocks, one address. Answers "
            "are cached for a few seconds; each client address is rate limited (429 + Retry-After).",
        },
        "paths": {
            "/api/pool": {
                "get": {
                    "operationId": "getPool",
                    "summary": "pool overview: hashrate, miners online, network, fee, latest blocks",
                    "responses": {"200": _ok("PoolOverview", "the pool"), **common},
                }
            },
            "/api/blocks": {
                "get": {
                    "operationId": "getBlocks",
                    "summary": "the latest blocks found by the pool, newest first",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                        }
                    ],
                    "responses": {
                        "200": _ok("BlockList", "blocks"),
                        "400": _problem("a bad limit"),
                        **common,
                    },
                }
            },
            "/api/address/{address}": {
                "get": {
                    "operationId": "getAddress",
                    "summary": "one address: PPLNS hashrate, workers, shares, blocks, balance, payments; SOLO apart",
                    "parameters": [
                        {
                            "name": "address",
                            "in": "path",
                            "required": True,
                            "description": "a CKB address of the pool's network",
                            "schema": {"type": "string", "maxLength": 1000},
                        }
                    ],
                    "responses": {
                        "200": _ok("AddressStats", "the address's figures"),
                        "400": _problem("not a CKB address of this pool's network (the detail says why)"),
                        "404": _problem("a valid address this pool has no shares, balance or payments of"),
                        **common,
                    },
                }
            },
        },
        "components": {"schemas": top.get("$defs", {})},
    }
