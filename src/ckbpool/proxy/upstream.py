"""One encrypted SV2 connection to the pool carrying one channel, kept up with reconnects and backoff.

The connection itself (Noise NX against the pool's authority key, SetupConnection, RequestExtensions when the
CKB template extension is wanted, the read loop, coalesced writes) is :class:`ckbpool.sv2.session.ClientSession`,
shared with the CPU miner. This module adds what a proxy needs on top: one Open*MiningChannel once the session
is ready, every job, target and share verdict handed to its :class:`UpstreamHandler`, and reconnects. When the
connection breaks, the handler hears ``upstream_down`` once and the loop reconnects with exponential backoff
(with jitter, capped); the handler's downstream miners stay connected meanwhile. The backoff starts over once a
connection got as far as an open channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Protocol

from .. import __version__
from ..retry import Backoff, retry
from ..sv2 import ckb_profile
from ..sv2.certs import CertificateError
from ..sv2.errors import Sv2Error
from ..sv2.events import (
    ChannelInfo,
    ChannelOpened,
    ChannelOpenRejected,
    ConnectionClosed,
    ConnectionSetUp,
    Event,
    MessageIgnored,
    MessageReceived,
)
from ..sv2.extensions import EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
from ..sv2.framing import MAX_PAYLOAD
from ..sv2.messages_base import Message
from ..sv2.messages_ckb import EXTENSION_TYPE_CKB_TEMPLATE, CkbSubmitSolution, CkbTemplateSubscribe
from ..sv2.messages_common import PROTOCOL_MINING, SetupConnection
from ..sv2.messages_mining import (
    REQUIRES_STANDARD_JOBS,
    OpenExtendedMiningChannel,
    OpenStandardMiningChannel,
)
from ..sv2.session import ClientSession
from .config import UpstreamSettings

__all__ = ["Upstream", "UpstreamHandler", "UpstreamRefused"]

log = logging.getLogger(__name__)
_MAX_TARGET = (1 << 256) - 1


class UpstreamRefused(Exception):
    """The pool refused the setup, the extension or the channel (retrying may not help: check the config)."""


class _Lost(Exception):
    """One connection attempt ended before or without a working channel: retried with growing waits."""


class _ChannelLost(Exception):
    """A connection that had its channel open ended: the backoff starts over."""


class UpstreamHandler(Protocol):
    def upstream_up(self, upstream: Upstream, channel: ChannelInfo) -> None:
        """The channel is open (``channel.extranonce_prefix``, ``channel.target``); jobs follow."""

    def upstream_down(self, upstream: Upstream, reason: str) -> None:
        """The connection is gone; no verdict will come for shares in flight."""

    def upstream_message(self, upstream: Upstream, message: Message) -> None:
        """A job, SetNewPrevHash, SetTarget, SubmitShares.Success/.Error, CkbJobTemplate, ... for our channel."""


class Upstream:
    """``extended``: an extended channel (V1 miners) or a standard one (getwork); ``templates``: negotiate the
    CKB template extension and subscribe the channel to it; ``worker_identities``: negotiate extension 0x0002
    (worker-specific hashrate tracking), after which every share must name its worker
    (``submit_extended(..., user_identity=...)``); ``ckb_identities``: negotiate our extension 0x4CCB for its
    share TLVs (the account ``<address>.<worker>`` and the validated share target; no template subscription).
    A pool that refuses either is treated as a refusal rather than mined on without it: the workers' shares
    would be credited to the channel's identity instead.
    """

    def __init__(
        self,
        settings: UpstreamSettings,
        handler: UpstreamHandler,
        *,
        user_identity: str,
        extended: bool,
        min_extranonce_size: int = 0,
        templates: bool = False,
        worker_identities: bool = False,
        ckb_identities: bool = False,
        name: str = "upstream",
    ) -> None:
        self.settings = settings
        self.handler = handler
        self.user_identity = user_identity
        self.extended = extended
        self.min_extranonce_size = min_extranonce_size
        self.templates = templates
        self.worker_identities = worker_identities
        self.ckb_identities = ckb_identities
        self.name = name
        self.session: ClientSession | None = None
        self.channel: ChannelInfo | None = None
        self.blake2b = False
        self.connections = 0
        self.last_error = ""
        self._bytes_out = 0
        self._bytes_in = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"{self.name}-loop")

    async def close(self) -> None:
        self._stopping = True
        if self.session is not None:
            self.session.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    @property
    def connected(self) -> bool:
        return self.channel is not None

    @property
    def bytes_out(self) -> int:
        """Bytes written to the pool over every connection so far."""
        return self._bytes_out + (self.session.bytes_out if self.session is not None else 0)

    @property
    def bytes_in(self) -> int:
        """Bytes read from the pool over every connection so far."""
        return self._bytes_in + (self.session.bytes_in if self.session is not None else 0)

    async def run(self) -> None:
        """Keep the channel up: reconnects back off through :mod:`ckbpool.retry` (exponential, jittered, capped
        at ``reconnect_max_s``); a connection that got as far as an open channel starts the backoff over, after
        one short pause so that a pool which accepts and drops at once is not hammered."""
        settings = self.settings
        low, high = settings.reconnect_min_s, settings.reconnect_max_s
        policy = Backoff(initial=low, maximum=high, jitter=low)  # jitter: proxies must not reconnect in lock-step
        while not self._stopping:
            try:
                await retry(self._connect_once, on=_Lost, policy=policy, what=f"{self.name} upstream")
            except _ChannelLost:
                await asyncio.sleep(low * random.uniform(0.5, 1.0))

    async def _connect_once(self) -> None:
        """One connection, from connect to its end; always raises unless the proxy is stopping."""
        refused = False
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
        if self._stopping:
            return
        log.warning("%s: %s; reconnecting", self.name, reason)
        # a refusal (e.g. a config that does not fit the pool) keeps backing off even after an open channel
        raise (_ChannelLost if reached_channel and not refused else _Lost)(reason)

    def _teardown(self) -> None:
        self.channel = None
        self.up.clear()
        session, self.session = self.session, None
        if session is not None:
            self._bytes_out += session.bytes_out
            self._bytes_in += session.bytes_in
            session.close()

    async def _session(self) -> None:
        s = self.settings
        setup = SetupConnection(
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
        session = self.session = ClientSession(
            s.host,
            s.port,
            setup,
            authority_public_key=s.authority_public_key,
            noise=s.noise,
            on_event=self._on_event,
            on_ready=self._on_ready,
            extensions=self._extensions(),
            max_payload=MAX_PAYLOAD,
        )
        try:
            await session.connect(s.connect_timeout_s)
        finally:
            if session.tcp_connected:  # attempts that found no pool are not connections
                self.connections += 1
        await session.run(setup_timeout=s.connect_timeout_s)

    def _extensions(self) -> tuple[int, ...]:
        wanted = []
        if self.worker_identities:
            wanted.append(EXTENSION_TYPE_WORKER_HASHRATE_TRACKING)
        if self.templates or self.ckb_identities:
            wanted.append(EXTENSION_TYPE_CKB_TEMPLATE)
        return tuple(wanted)

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

    def _on_ready(self) -> None:
        """Setup (and the extension answer, when we asked) is done: open our one channel."""
        assert self.session is not None
        if self.templates and EXTENSION_TYPE_CKB_TEMPLATE not in self.session.extensions:
            raise UpstreamRefused("the pool does not support the CKB template extension (0x4CCB)")
        if self.ckb_identities and EXTENSION_TYPE_CKB_TEMPLATE not in self.session.extensions:
            raise UpstreamRefused("the pool does not support the CKB extension's share identities (0x4CCB)")
        if self.worker_identities and EXTENSION_TYPE_WORKER_HASHRATE_TRACKING not in self.session.extensions:
            raise UpstreamRefused("the pool does not support worker-specific hashrate tracking (0x0002)")
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
        assert self.session is not None
        self.session.send(message)

    def submit_extended(
        self,
        sequence_number: int,
        job_id: int,
        ntime: int,
        nonce16: bytes,
        user_identity: str | None = None,
        ckb_user_identity: str | None = None,
        share_target: int | None = None,
    ) -> bool:
        """Forward a share whose nonce16 starts with the channel's prefix; False if there is no channel.

        ``user_identity``: the worker to credit (extension 0x0002; needs ``worker_identities=True``, and is then
        required). At most 32 UTF-8 bytes, else EncodeError. ``ckb_user_identity`` (``<address>.<worker>``) and
        ``share_target`` (the target the share met here): the 0x4CCB TLVs (need ``ckb_identities=True``).
        """
        channel = self.channel
        if channel is None or self.session is None:
            return False
        prefix_size = len(channel.extranonce_prefix)
        self.session.submit_extended(
            channel.channel_id,
            sequence_number,
            job_id,
            int.from_bytes(nonce16[12:16], "little"),
            ntime,
            int.from_bytes(nonce16[8:12], "little"),
            nonce16[prefix_size:8],
            user_identity,
            ckb_user_identity,
            share_target,
        )
        return True

    def submit_solution(self, sequence_number: int, job_id: int, nonce16: bytes) -> bool:
        """Forward a whole-nonce solution (CkbSubmitSolution, template extension); False if there is no channel."""
        channel = self.channel
        if channel is None:
            return False
        self.send(CkbSubmitSolution(channel.channel_id, sequence_number, job_id, nonce16))
        return True
