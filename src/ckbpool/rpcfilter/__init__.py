"""The ckb node's RPC, reachable from other hosts only through an allowlist of methods, over TLS (issue 18).

Why a proxy and not the node's own settings: ckb 0.210's ``[rpc]`` section (util/app-config/src/configs/rpc.rs)
enables whole *modules* (``modules = ["Net", "Pool", "Miner", "Chain", ...]``), never single methods, and has no
TLS and no authentication. The pool needs methods from modules that also hold dangerous ones: ``send_transaction``
(payouts) sits in ``Pool`` next to ``clear_tx_pool`` and ``remove_transaction``; ``sync_state`` /
``local_node_info`` (the deploy probe) sit in ``Net`` next to ``set_ban`` and ``set_network_active``. So the node
keeps its RPC on loopback / its private address and ``ckbpool rpc-filter run`` in the pool image fronts it:

- :mod:`.allowlist` -- the methods the pool, the payouts engine, the web API and the deploy probe call (a unit
  test keeps it equal to what ``src/ckbpool`` calls) and each method's ckb module (the metrics' label);
- :mod:`.config` -- ``[filter]`` settings (TOML);
- :mod:`.server` -- HTTP JSON-RPC (single and batch requests) and the TCP subscription port, TLS with the
  deployment CA's certificate, optional client certificates and/or a bearer token, bounded requests, metrics.
"""

from .allowlist import ALLOWED_METHODS, ALLOWED_TOPICS, method_family
from .config import RpcFilterConfig, load_filter_config
from .server import RpcFilter

__all__ = ["ALLOWED_METHODS", "ALLOWED_TOPICS", "RpcFilter", "RpcFilterConfig", "load_filter_config", "method_family"]
