"""One encrypted SV2 connection to the pool carrying one channel, kept up with reconnects and backoff.

The connection does what a miner's does (Noise NX against the pool's authority key, SetupConnection, optionally
RequestExtensions for the CKB template extension, one Open*MiningChannel), then hands every job, target and
share verdict to its :class:`UpstreamHandler`. When the connection breaks, the handler hears
``upstream_down`` once and the loop reconnects with exponential backoff (with jitter, capped); the handler's
downstream miners stay connected meanwhile. The backoff starts over once a connection got as far as an open
channel.

Writes are coalesced: frames sent during one pass of the event loop leave in one ``write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Protocol

from .. import __version__
from ..sv2 import ckb_profile
from ..sv2.certs import CertificateError
from ..sv2.client import ClientConnection
from ..sv2.errors import Sv2Error
from ..sv2.events import (
    ChannelInfo,
    ChannelOpened,
    ChannelOpenRejected,
    ConnectionClosed,
    ConnectionSetUp,
    Event,
    ExtensionsNegotiated,
    MessageIgnored,
    MessageReceived,
)
from ..sv2.framing import MAX_PAYLOAD
from ..sv2.messages_base import Message
from ..sv2.messages_ckb import EXTENSION_TYPE_CKB_TEMPLATE, CkbSubmitSolution, CkbTemplateSubscribe
from ..sv2.messages_common import PROTOCOL_MINING, RequestExtensions, SetupConnection
from ..sv2.messages_mining import (
    REQUIRES_STANDARD_JOBS,
    OpenExtendedMiningChannel,
    OpenStandardMiningChannel,
    SubmitSharesExtended,
)
from ..sv2.noise import MSG2_SIZE, NoiseInitiator, NoiseTransport
from .config import UpstreamSettings

__all__ = ["Upstream", "UpstreamHandler", "UpstreamRefused"]

log = logging.getLogger(__name__)
_MAX_TARGET = (1 << 256) - 1


class UpstreamRefused(Exception):
    """The pool refused the setup, the extension or the channel (retrying may not help: check the config)."""


class UpstreamHandler(Protocol):
    def upstream_up(self, upstream: Upstream, channel: ChannelInfo) -> None:
        """The channel is open (``channel.extranonce_prefix``, ``channel.target``); jobs follow."""

    def upstream_down(self, upstream: Upstream, reason: str) -> None:
        """The connection is gone; no verdict will come for shares in flight."""

    def upstream_message(self, upstream: Upstream, message: Message) -> None:
        """A job, SetNewPrevHash, SetTarget, SubmitShares.Success/.Error, CkbJobTemplate, ... for our channel."""


class Upstream:
    """``extended``: an extended channel (V1 miners) or a standard one (getwork); ``templates``: negotiate the
    CKB template extension and subscribe the channel to it."""

    def __init__(
        self,
        settings: UpstreamSettings,
        handler: UpstreamHandler,
        *,
        user_identity: str,
        extended: bool,
        min_extranonce_size: int = 0,
        templates: bool = False,
        name: str = "upstream",
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.user_identity = user_identity
        self.extended = extended
        self.min_extranonce_size = min_extranonce_size
        self.templates = templates
        self.name = name
        self.conn: ClientConnection | None = None
        self.channel: ChannelInfo | None = None
        self.blake2b = False
        self.connections = 0
        self.last_error = ""
        self.bytes_out = 0
        self.bytes_in = 0
        self._writer: asyncio.StreamWriter | None = None
        self._noise: NoiseTransport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"{self.name}-loop")

    async def close(self) -> None:
        self._stopping = True
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @property
    def connected(self) -> bool:
        return self.channel is not None

    async def run(self) -> None:
        delay = self.settings.reconnect_min_s
        while not self._stopping:
            reached_channel = refused = False
            try:
                await self._session()
                reason = "the pool closed the connection"
            except asyncio.CancelledError:
                raise
            except UpstreamRefused as exc:
                reason = f"refused: {exc}"
                refused = True
            except (OSError, TimeoutError, asyncio.IncompleteReadError, Sv2Error, CertificateError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a bug must not end the reconnect loop
                log.exception("%s: unexpected error", self.name)
                reason = f"internal error: {exc}"
            finally:
                reached_channel = self.channel is not None
                self._teardown()
            self.last_error = reason
            if reached_channel:
                self.handler.upstream_down(self, reason)
                if not refused:  # a refusal (e.g. a config that does not fit the pool) keeps backing off
                    delay = self.settings.reconnect_min_s
            if self._stopping:
                break
            wait = delay * random.uniform(0.5, 1.0)
            log.warning("%s: %s; reconnecting in %.1fs", self.name, reason, wait)
            await asyncio.sleep(wait)
            delay = min(self.settings.reconnect_max_s, delay * 2)

    def _teardown(self) -> None:
        self.channel = None
        self.up.clear()
        self.conn = None
        self._noise = None
        self._out.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def _session(self) -> None:
        s = self.settings
        reader, writer = await asyncio.wait_for(asyncio.open_connection(s.host, s.port), s.connect_timeout_s)
        self._writer = writer
        self.connections += 1
        if s.noise:
            initiator = NoiseInitiator(s.authority_public_key, max_frame_payload=MAX_PAYLOAD)
            writer.write(initiator.start())
            msg2 = await asyncio.wait_for(reader.readexactly(MSG2_SIZE), s.connect_timeout_s)
            self._noise = initiator.complete(msg2)
        self.conn = ClientConnection(max_payload=MAX_PAYLOAD)
        self.send(
            SetupConnection(
                protocol=PROTOCOL_MINING,
                min_version=2,
                max_version=2,
                flags=0 if self.extended else REQUIRES_STANDARD_JOBS,
                endpoint_host=s.host,
                endpoint_port=s.port,
                vendor="ckbpool-proxy",
                hardware_version="v1-translator",
                firmware=__version__,
                device_id=self.name,
            )
        )
        setup_deadline = time.monotonic() + s.connect_timeout_s
        while not self._stopping:
            timeout = None if self.channel is not None else max(0.01, setup_deadline - time.monotonic())
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout)
            except TimeoutError:
                raise TimeoutError("no channel within the connect timeout") from None
            if not data:
                return
            self.bytes_in += len(data)
            frames = self._noise.feed(data) if self._noise is not None else None
            assert self.conn is not None
            events = (
                self.conn.receive_data(data)
                if frames is None
                else [e for f in frames for e in self.conn.receive_frame(f)]
            )
            for event in events:
                self._on_event(event)
                if self.conn is None or self.conn.closed:
                    return

    # -- events -----------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self.handler.upstream_message(self, event.message)
        elif isinstance(event, ConnectionSetUp):
            try:
                pow_function = ckb_profile.pow_function_from_flags(event.response.flags)
            except ValueError as exc:
                raise UpstreamRefused(str(exc)) from None
            self.blake2b = pow_function is ckb_profile.PowFunction.EAGLESONG_BLAKE2B
            if self.templates:
                self.send(RequestExtensions(request_id=1, requested_extensions=(EXTENSION_TYPE_CKB_TEMPLATE,)))
            else:
                self._open_channel()
        elif isinstance(event, ExtensionsNegotiated):
            if EXTENSION_TYPE_CKB_TEMPLATE not in event.extensions:
                raise UpstreamRefused("the pool does not support the CKB template extension (0x4CCB)")
            self._open_channel()
        elif isinstance(event, ChannelOpened):
            self.channel = event.channel
            if self.templates:
                self.send(CkbTemplateSubscribe(event.channel.channel_id))
            log.info(
                "%s: channel %d open as %s, prefix %s, extranonce_size %d",
                self.name,
                event.channel.channel_id,
                self.user_identity,
                event.channel.extranonce_prefix.hex(),
                event.channel.extranonce_size,
            )
            self.up.set()
            self.handler.upstream_up(self, event.channel)
        elif isinstance(event, ChannelOpenRejected):
            raise UpstreamRefused(f"channel refused: {event.response.error_code}")
        elif isinstance(event, ConnectionClosed):
            raise UpstreamRefused(f"{event.error_code} {event.detail}".strip())
        elif isinstance(event, MessageIgnored):
            log.debug("%s: ignored %s: %s", self.name, type(event.message).__name__, event.reason)

    def _open_channel(self) -> None:
        request: OpenExtendedMiningChannel | OpenStandardMiningChannel
        if self.extended:
            request = OpenExtendedMiningChannel(
                request_id=1,
                user_identity=self.user_identity,
                nominal_hash_rate=self.settings.nominal_hash_rate,
                max_target=_MAX_TARGET,
                min_extranonce_size=self.min_extranonce_size,
            )
        else:
            request = OpenStandardMiningChannel(
                request_id=1,
                user_identity=self.user_identity,
                nominal_hash_rate=self.settings.nominal_hash_rate,
                max_target=_MAX_TARGET,
            )
        self.send(request)

    # -- output -----------------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Validate, encode, encrypt and queue a message; it leaves with this loop pass's other frames."""
        assert self.conn is not None
        frame = self.conn.send(message)
        data = self._noise.encrypt_frame(frame) if self._noise is not None else frame
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        if self._writer is not None:
            self.bytes_out += len(data)
            self._writer.write(data)

    def submit_extended(self, sequence_number: int, job_id: int, ntime: int, nonce16: bytes) -> bool:
        """Forward a share whose nonce16 starts with the channel's prefix; False if there is no channel."""
        channel = self.channel
        if channel is None:
            return False
        prefix_size = len(channel.extranonce_prefix)
        self.send(
            SubmitSharesExtended(
                channel.channel_id,
                sequence_number,
                job_id,
                int.from_bytes(nonce16[12:16], "little"),
                ntime,
                int.from_bytes(nonce16[8:12], "little"),
                nonce16[prefix_size:8],
            )
        )
        return True

    def submit_solution(self, sequence_number: int, job_id: int, nonce16: bytes) -> bool:
        """Forward a whole-nonce solution (CkbSubmitSolution, template extension); False if there is no channel."""
        channel = self.channel
        if channel is None:
            return False
        self.send(CkbSubmitSolution(channel.channel_id, sequence_number, job_id, nonce16))
        return True
