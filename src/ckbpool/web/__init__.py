"""The pool's public face: a read-only JSON API (with its OpenAPI document) and the miners' web page, on a
listener of their own (``[web]`` in the pool config, :class:`ckbpool.pool.config.WebSettings`).

- :mod:`.books` -- reads of the books in Redis, and the rollups (24 h hashrate, each address's workers)
- :mod:`.models` -- the answers as pydantic models; the OpenAPI document is generated from them
- :mod:`.api` -- the answers: pool overview, blocks, one address (address checks, the payouts ledger)
- :mod:`.limits` -- per-client token bucket and the answer cache
- :mod:`.app` -- the aiohttp listener: routes, guards, the page's static files (``static/``)

docs/web.md describes the API and how to publish it.
"""

from .app import WebServer, page_url

__all__ = ["WebServer", "page_url"]
