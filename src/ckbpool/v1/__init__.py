"""CKB Stratum V1 (newline-delimited JSON-RPC, as CKB ASICs speak it), sans-IO: bytes in, events out.

* :mod:`.dialect` -- every wire format in one place (compact JSON, lowercase hex, the notify/set_target shapes,
  extranonce size rules);
* :mod:`.errors` -- btcpool's error codes and texts;
* :mod:`.server` -- :class:`ServerSession`, the state machine a pool or proxy runs per miner connection;
* :mod:`.client` -- :class:`ClientSession`, the miner's side (CPU test miner, tests);
* :mod:`.events` -- what both report; :mod:`.lines` -- newline framing with a hard line limit.

No sockets, no asyncio here: the proxy (:mod:`ckbpool.proxy`) and the miner (:mod:`ckbpool.miner.v1`) do I/O.
"""

from ckbpool.v1.client import ClientSession
from ckbpool.v1.dialect import CKB_DIALECT, Dialect
from ckbpool.v1.errors import StratumErrorCode, V1Error, V1LocalProtocolError
from ckbpool.v1.lines import DEFAULT_MAX_LINE_BYTES, LineBuffer, LineTooLong
from ckbpool.v1.server import ServerSession, SessionState

__all__ = [
    "CKB_DIALECT",
    "DEFAULT_MAX_LINE_BYTES",
    "ClientSession",
    "Dialect",
    "LineBuffer",
    "LineTooLong",
    "ServerSession",
    "SessionState",
    "StratumErrorCode",
    "V1Error",
    "V1LocalProtocolError",
]
