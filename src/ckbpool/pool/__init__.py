"""The pool services (asyncio): template watcher, SV2 server, block maker, share accounting, metrics, status."""
