"""Exceptions of the chain core.

One small hierarchy so callers (pool, CLI) can tell "the node said no" from "the node is unreachable" from
"the data we were given is malformed" without parsing messages.
"""

from __future__ import annotations


class CkbError(Exception):
    """Base class of every error raised by ``ckbpool.ckb``."""


class MalformedError(CkbError, ValueError):
    """Input data (template JSON, hex, molecule bytes) is malformed; ``path`` names the offending field."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class RpcError(CkbError):
    """The node answered a JSON-RPC call with an error object."""

    def __init__(self, method: str, code: int, message: str, data: object = None) -> None:
        self.method = method
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"ckb RPC {method} failed: code {code}: {message}")


class BlockRejected(RpcError):
    """submit_block was refused by the node (verification failure, e.g. ``InvalidNonce``)."""


class NodeUnavailable(CkbError):
    """The node could not be reached (connection refused, timeout) after the configured retries."""

    def __init__(self, method: str, url: str, cause: str) -> None:
        self.method = method
        self.url = url
        super().__init__(f"ckb node at {url} unreachable during {method}: {cause}")


class NodeSetupError(CkbError):
    """Provisioning or starting a local ckb node failed."""
