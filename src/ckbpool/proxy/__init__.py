"""The V1<->V2 translator: CKB Stratum V1 ASICs and the official ``ckb miner`` mine through an SV2 pool.

* :mod:`.downstream` -- CKB Stratum V1 server (one SV2 extended channel upstream for all V1 miners);
* :mod:`.getwork` -- the JSON-RPC endpoint ``ckb miner`` polls (a standard channel with the template extension);
* :mod:`.upstream` -- the encrypted SV2 connection with reconnect and backoff;
* :mod:`.jobs`, :mod:`.pending`, :mod:`.vardiff` -- job ids and staleness, shares awaiting the pool's verdict,
  per-miner targets;
* :mod:`.service` -- :class:`Proxy`, what ``ckbpool proxy run`` starts.
"""

from .config import ProxyConfig, ProxyConfigError, load_proxy_config
from .service import Proxy

__all__ = ["Proxy", "ProxyConfig", "ProxyConfigError", "load_proxy_config"]
