"""The node's built-in indexer RPC (module ``Indexer`` in ckb.toml's ``[rpc] modules``): live cells of a lock.

``get_cells(search_key, order, limit, after)`` pages through live cells; ``get_cells_capacity(search_key)`` sums
them (nervosnetwork/ckb rpc/README.md, "Module Indexer"). A page shorter than ``limit`` is the last one; the
cursor of the next page is the reply's ``last_cursor``.

A payout wallet spends only plain cells: the search filter asks for no type script (``script_len_range``
[0, 1)) and no data (``output_data_len_range`` [0, 1)), so a DAO deposit or a token cell sent to the wallet's
lock is never consumed as if it were plain CKB.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .errors import MalformedError, RpcError
from .jsonhex import field, hex_uint, parse_list, parse_uint
from .rpc import CkbRpcClient
from .structures import OutPoint, Script
from .txbuild import LiveCell

MAX_PAGES = 100_000  # a bound on any loop over pages: 100k pages of 1000 cells is far beyond a pool's wallet


def plain_cells_search_key(lock: Script) -> dict[str, Any]:
    """Cells locked by exactly ``lock`` with no type script and no data."""
    return {
        "script": lock.to_json(),
        "script_type": "lock",
        "script_search_mode": "exact",
        "filter": {"script_len_range": ["0x0", "0x1"], "output_data_len_range": ["0x0", "0x1"]},
        "with_data": False,
    }


class IndexerDisabled(RpcError):
    """The node does not serve the indexer RPC: its ckb.toml lacks ``"Indexer"`` in ``[rpc] modules``."""


async def _indexer_call(client: CkbRpcClient, method: str, params: list[Any]) -> Any:
    try:
        return await client.call(method, params)
    except RpcError as exc:
        if exc.code == -32601:  # method not found: the module is not enabled
            raise IndexerDisabled(
                method, exc.code, f'{exc.message} (enable the indexer: add "Indexer" to [rpc] modules)'
            ) from exc
        raise


async def iter_live_cells(
    client: CkbRpcClient, lock: Script, *, page_size: int = 1000, order: str = "asc"
) -> AsyncIterator[LiveCell]:
    """Every plain live cell of ``lock``, oldest first (``asc``) by block number and position."""
    if order not in ("asc", "desc"):
        raise ValueError("order must be asc or desc")
    key = plain_cells_search_key(lock)
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        reply = await _indexer_call(client, "get_cells", [key, order, hex_uint(page_size), cursor])
        objects = parse_list(field(reply, "objects", "get_cells"), "get_cells.objects")
        for i, obj in enumerate(objects):
            yield _live_cell(obj, f"get_cells.objects[{i}]")
        if len(objects) < page_size:
            return
        last = field(reply, "last_cursor", "get_cells")
        if not isinstance(last, str) or last == cursor:
            raise MalformedError("get_cells.last_cursor", f"no progress in pagination: {last!r}")
        cursor = last
    raise MalformedError("get_cells", f"more than {MAX_PAGES} pages of {page_size} cells")


async def live_cells_capacity(client: CkbRpcClient, lock: Script) -> tuple[int, int]:
    """(total shannons in the plain live cells of ``lock``, the indexer's tip block number)."""
    reply = await _indexer_call(client, "get_cells_capacity", [plain_cells_search_key(lock)])
    if reply is None:  # the indexer has not indexed anything yet
        return 0, 0
    capacity = parse_uint(field(reply, "capacity", "get_cells_capacity"), "get_cells_capacity.capacity", 64)
    number = parse_uint(field(reply, "block_number", "get_cells_capacity"), "get_cells_capacity.block_number", 64)
    return capacity, number


async def indexer_tip(client: CkbRpcClient) -> int | None:
    """The block number the indexer has reached (None before it indexed the genesis block)."""
    reply = await _indexer_call(client, "get_indexer_tip", [])
    if reply is None:
        return None
    return parse_uint(field(reply, "block_number", "get_indexer_tip"), "get_indexer_tip.block_number", 64)


def _live_cell(obj: Any, path: str) -> LiveCell:
    output = field(obj, "output", path)
    return LiveCell(
        out_point=OutPoint.from_json(field(obj, "out_point", path), f"{path}.out_point"),
        capacity=parse_uint(field(output, "capacity", f"{path}.output"), f"{path}.output.capacity", 64),
        block_number=parse_uint(field(obj, "block_number", path), f"{path}.block_number", 64),
        tx_index=parse_uint(field(obj, "tx_index", path), f"{path}.tx_index", 32),
    )
