"""Which node RPC methods cross the filter, and the ckb module each belongs to.

The allowlist is exactly what ckbpool itself calls (``tests/unit/test_rpcfilter.py`` greps ``src/ckbpool`` for
every ``.call("...")``, indexer call and probe call and fails when the two differ): a new call in the code must be
added here on purpose, and nothing else the node offers is reachable from another host.

Module membership comes from ckb 0.210's ``rpc/src/module/*.rs`` (``#[rpc(name = ...)]``); it is only a metrics
label (a bounded set, unlike method names a client may invent).
"""

from __future__ import annotations

#: every method ckbpool calls (pool, template watcher, block maker, payouts engine and wallet, web API, probe)
ALLOWED_METHODS: frozenset[str] = frozenset(
    {
        # Chain
        "get_block",
        "get_block_by_number",
        "get_block_economic_state",
        "get_block_hash",
        "get_consensus",
        "get_epoch_by_number",
        "get_header",
        "get_header_by_number",
        "get_tip_block_number",
        "get_tip_header",
        "get_transaction",
        # Miner
        "get_block_template",
        "submit_block",
        # Pool: payouts send their transactions (clear_tx_pool, remove_transaction stay out)
        "send_transaction",
        # Stats
        "get_blockchain_info",
        # Indexer (the payout wallet's live cells)
        "get_cells",
        "get_cells_capacity",
        "get_indexer_tip",
        # Net, read-only (the deploy probe): set_ban, set_network_active, add_node ... stay out
        "local_node_info",
        "sync_state",
    }
)

#: subscription topics the TCP port forwards (ckb: new_tip_header, new_tip_block, new_transaction,
#: proposed_transaction, rejected_transaction); the pool follows only the tip
ALLOWED_TOPICS: frozenset[str] = frozenset({"new_tip_header"})

_MODULES: dict[str, tuple[str, ...]] = {
    "alert": ("send_alert",),
    "chain": (
        "estimate_cycles", "get_block", "get_block_by_number", "get_block_economic_state", "get_block_filter",
        "get_block_hash", "get_block_median_time", "get_consensus", "get_current_epoch", "get_epoch_by_number",
        "get_fee_rate_statics", "get_fee_rate_statistics", "get_fork_block", "get_header", "get_header_by_number",
        "get_live_cell", "get_tip_block_number", "get_tip_header", "get_transaction",
        "get_transaction_and_witness_proof", "get_transaction_proof", "verify_transaction_and_witness_proof",
        "verify_transaction_proof",
    ),
    "debug": ("jemalloc_profiling_dump", "set_extra_logger", "update_main_logger"),
    "experiment": ("calculate_dao_maximum_withdraw", "dry_run_transaction", "estimate_fee_rate"),
    "indexer": ("get_cells", "get_cells_capacity", "get_indexer_tip", "get_transactions"),
    "miner": ("get_block_template", "submit_block"),
    "net": (
        "add_node", "clear_banned_addresses", "get_banned_addresses", "get_peers", "local_node_info", "ping_peers",
        "remove_node", "set_ban", "set_network_active", "sync_state",
    ),
    "pool": (
        "clear_tx_pool", "clear_tx_verify_queue", "get_pool_tx_detail_info", "get_raw_tx_pool", "remove_transaction",
        "send_transaction", "test_tx_pool_accept", "tx_pool_info", "tx_pool_ready",
    ),
    "stats": ("get_blockchain_info", "get_deployments_info"),
    "subscription": ("subscribe", "unsubscribe"),
    "terminal": ("get_overview",),
    "integration_test": (
        "calculate_dao_field", "generate_block", "generate_block_with_template", "generate_epochs",
        "notify_transaction", "process_block_without_verify", "send_test_transaction", "truncate",
    ),
}  # fmt: skip
_FAMILY = {method: module for module, methods in _MODULES.items() for method in methods}
#: every value of the ``family`` label (bounded: a client's invented method names all count as "unknown")
FAMILIES: tuple[str, ...] = (*sorted(_MODULES), "unknown")


def method_family(method: object) -> str:
    """The ckb module of ``method`` (the metrics label), ``unknown`` for anything else, including non-strings."""
    return _FAMILY.get(method, "unknown") if isinstance(method, str) else "unknown"


def is_allowed(method: object) -> bool:
    return isinstance(method, str) and method in ALLOWED_METHODS
