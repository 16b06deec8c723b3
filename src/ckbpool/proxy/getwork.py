"""The JSON-RPC endpoint the official ``ckb miner`` mines from, fed by an SV2 channel with the template extension.

What ``ckb miner`` (crate ckb-miner 1.x, ``src/client/mod.rs``) calls, JSON-RPC 2.0 over HTTP POST with id 0:

* ``get_block_template`` with params ``[]``, every ``poll_interval`` ms and right after each submit. It takes
  new work only when ``work_id`` changes, so each job is served with its own ``work_id`` (the proxy's job id);
* ``submit_block`` with ``[work_id as a decimal string, block]``; the result must parse as a 32-byte hash.

Nothing else. The channel is a *standard* SV2 channel (the miner picks arbitrary u128 nonces, so the prefix is
never used) subscribed to CkbJobTemplate; a solution goes up as CkbSubmitSolution (the whole nonce16) and the
HTTP answer waits for the pool's verdict: the block hash when the pool accepted the share, an error otherwise.
Every template is checked before it is served: the header built from it must give the job's pow_hash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

from aiohttp import web

from ..ckb.eaglesong import pow_output
from ..ckb.errors import CkbError
from ..ckb.jsonhex import hex_uint
from ..ckb.structures import Block
from ..ckb.template import BlockTemplate, job_from_template
from ..sv2.events import ChannelInfo
from ..sv2.messages_base import Message
from ..sv2.messages_ckb import CkbJobTemplate
from ..sv2.messages_mining import (
    NewMiningJob,
    SetNewPrevHash,
    SetTarget,
    SubmitSharesError,
    SubmitSharesSuccess,
)
from ..v1.dialect import encode_id
from .config import ProxyConfig
from .jobs import ChannelJobs, ProxyJob
from .pending import PendingShare, PendingShares
from .upstream import Upstream

__all__ = ["GetworkServer"]

log = logging.getLogger(__name__)

# JSON-RPC error codes (the 2.0 spec's, plus server-defined ones in -32000..-32099)
ERR_PARSE = -32700
ERR_INVALID_REQUEST = -32600
ERR_METHOD_NOT_FOUND = -32601
ERR_INVALID_PARAMS = -32602
ERR_NO_WORK = -32000
ERR_STALE = -32001
ERR_REJECTED = -32002


class RpcFailure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GetworkServer:
    """HTTP JSON-RPC for ``ckb miner`` + the getwork channel's upstream (an :class:`UpstreamHandler`)."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.jobs = ChannelJobs()
        self.pending = PendingShares()
        self.upstream = Upstream(
            config.upstream,
            self,
            user_identity=config.getwork_identity,
            extended=False,
            templates=True,
            name="getwork-upstream",
        )
        self.share_target = 0
        self.serving: ProxyJob | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._address: tuple[str, int] = ("", 0)
        self.templates_received = 0
        self.templates_bad = 0
        self.templates_served = 0
        self.submitted = 0
        self.accepted = 0
        self.rejected: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        g = self.config.getwork
        app = web.Application(client_max_size=g.max_request_bytes)
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.create_server((g.listen_host, g.listen_port), reuse_port=False)
        self._address = sock.getsockname()[:2]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()
        self.upstream.start()
        log.info("ckb-miner getwork endpoint on http://%s:%d/", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    async def close(self) -> None:
        await self.upstream.close()
        for share in self.pending.drain():
            self._settle(share, "upstream-closed")
        if self._runner is not None:
            await self._runner.cleanup()

    # -- upstream ---------------------------------------------------------------------------------
    def upstream_up(self, upstream: Upstream, channel: ChannelInfo) -> None:
        self.jobs.reset()
        self.serving = None
        self.share_target = channel.target

    def upstream_down(self, upstream: Upstream, reason: str) -> None:
        log.warning("getwork: pool connection lost (%s); ckb miner gets no work until it is back", reason)
        self.jobs.reset()
        self.serving = None
        for share in self.pending.drain():
            self._settle(share, "stale-share")

    def upstream_message(self, upstream: Upstream, message: Message) -> None:
        if isinstance(message, NewMiningJob):
            self.jobs.on_job(message)  # a refresh becomes servable once its template arrived
        elif isinstance(message, CkbJobTemplate):
            self._on_template(message)
        elif isinstance(message, SetNewPrevHash):
            job = self.jobs.on_prev_hash(message)
            self.serving = job if job is not None and job.template_body is not None else None
        elif isinstance(message, SetTarget):
            self.share_target = message.maximum_target
        elif isinstance(message, SubmitSharesSuccess):
            for share in self.pending.accept_through(message.last_sequence_number):
                self._settle(share, None)
        elif isinstance(message, SubmitSharesError):
            rejected = self.pending.reject(message.sequence_number)
            if rejected is not None:
                self._settle(rejected, message.error_code)

    def _on_template(self, message: CkbJobTemplate) -> None:
        self.templates_received += 1
        job = self.jobs.by_upstream_id(message.job_id)
        if job is None:
            return
        try:
            raw = json.loads(message.template)
            mining_job = job_from_template(BlockTemplate.from_json(raw))
        except (ValueError, CkbError) as exc:
            self.templates_bad += 1
            log.error("getwork: template for job %d is malformed: %s", message.job_id, exc)
            return
        if mining_job.pow_hash != job.pow_hash:
            self.templates_bad += 1
            log.error("getwork: template for job %d does not give the job's pow_hash; not serving it", job.upstream_id)
            return
        raw["work_id"] = hex_uint(job.downstream_id)
        job.template_body = json.dumps(raw, separators=(",", ":")).encode()
        job.mining_job = mining_job
        if job is self.jobs.current:
            self.serving = job

    def _settle(self, share: PendingShare, error_code: str | None) -> None:
        future: asyncio.Future[str | None] = share.owner
        if error_code is None:
            self.accepted += 1
        else:
            self.rejected[error_code] = self.rejected.get(error_code, 0) + 1
        if not future.done():
            future.set_result(error_code)

    # -- JSON-RPC ---------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        request_id: Any = None
        try:
            try:
                call = json.loads(await request.read())
            except ValueError:
                raise RpcFailure(ERR_PARSE, "parse error") from None
            if not isinstance(call, dict):
                raise RpcFailure(ERR_INVALID_REQUEST, "a request is a JSON object")
            request_id = call.get("id")
            method, params = call.get("method"), call.get("params", [])
            if not isinstance(params, list):
                raise RpcFailure(ERR_INVALID_PARAMS, "params must be a list")
            if method == "get_block_template":
                body = self._get_block_template()
                return self._reply(b'{"jsonrpc":"2.0","result":' + body + b',"id":' + encode_id(request_id) + b"}")
            if method == "submit_block":
                result = await self._submit_block(params)
                return self._reply(
                    json.dumps({"jsonrpc": "2.0", "result": result, "id": request_id}, separators=(",", ":")).encode()
                )
            raise RpcFailure(ERR_METHOD_NOT_FOUND, f"method not found: {str(method)[:64]}")
        except RpcFailure as failure:
            error = {"code": failure.code, "message": failure.message}
            text = json.dumps({"jsonrpc": "2.0", "error": error, "id": request_id}, separators=(",", ":"))
            return self._reply(text.encode())

    @staticmethod
    def _reply(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    def _get_block_template(self) -> bytes:
        job = self.serving
        if job is None or job.template_body is None or not self.jobs.is_live(job) or not self.upstream.connected:
            raise RpcFailure(ERR_NO_WORK, "no work: waiting for the pool")
        self.templates_served += 1
        return job.template_body

    async def _submit_block(self, params: list[Any]) -> str:
        if len(params) != 2:
            raise RpcFailure(ERR_INVALID_PARAMS, "expected [work_id, block]")
        work_id, block_json = params
        try:
            number = int(work_id, 0) if isinstance(work_id, str) else int(work_id)
        except (TypeError, ValueError):
            raise RpcFailure(ERR_INVALID_PARAMS, "work_id is a number") from None
        job = self.jobs.get(number)
        if job is None or job.mining_job is None or not self.jobs.is_live(job) or not self.upstream.connected:
            self.rejected["stale-work"] = self.rejected.get("stale-work", 0) + 1
            raise RpcFailure(ERR_STALE, "stale work: the pool has moved on")
        try:
            block = Block.from_json(block_json)
        except (CkbError, ValueError, TypeError, KeyError) as exc:
            raise RpcFailure(ERR_INVALID_PARAMS, f"malformed block: {exc}") from None
        if block.header.raw != job.mining_job.raw_header:
            raise RpcFailure(ERR_INVALID_PARAMS, "the block's header does not match the work it names")
        self.submitted += 1
        nonce16 = block.header.nonce.to_bytes(16, "little")
        if nonce16 in job.seen:
            raise RpcFailure(ERR_REJECTED, "duplicate-share")
        # like the node's submit_block: a solution must be a block (ckb miner aims at compact_target)
        value = int.from_bytes(pow_output(job.pow_hash, nonce16, self.upstream.blake2b), "big")
        if value > job.network_target:
            self.rejected["difficulty-too-low"] = self.rejected.get("difficulty-too-low", 0) + 1
            raise RpcFailure(ERR_REJECTED, "difficulty-too-low: the nonce does not meet the header's compact_target")
        job.seen.add(nonce16)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        sequence_number = self.pending.next_sequence_number()
        now = time.monotonic()
        if not self.upstream.submit_solution(sequence_number, job.upstream_id, nonce16):
            raise RpcFailure(ERR_STALE, "stale work: the pool is away")
        self.pending.add(
            PendingShare(
                sequence_number, future, None, "ckb-miner", self.share_target, now, value <= job.network_target
            )
        )
        try:
            error_code = await asyncio.wait_for(future, self.config.getwork.submit_timeout_s)
        except TimeoutError:
            self.pending.reject(sequence_number)
            raise RpcFailure(ERR_REJECTED, "the pool did not answer in time") from None
        if error_code is not None:
            raise RpcFailure(ERR_REJECTED, error_code)
        block_hash: bytes = job.mining_job.block_hash(block.header.nonce)
        log.info("getwork: solution for height %d accepted by the pool: %s", job.mining_job.height, block_hash.hex())
        return "0x" + block_hash.hex()

    # -- reporting --------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "upstream": {
                "connected": self.upstream.connected,
                "connections": self.upstream.connections,
                "last_error": self.upstream.last_error,
            },
            "templates_received": self.templates_received,
            "templates_bad": self.templates_bad,
            "templates_served": self.templates_served,
            "submitted": self.submitted,
            "accepted": self.accepted,
            "rejected": dict(self.rejected),
            "serving_height": None if self.serving is None else self.serving.mining_job.height,
        }
