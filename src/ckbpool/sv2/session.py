"""One SV2 client connection over asyncio: connect, Noise, SetupConnection, RequestExtensions, read loop.

The proxy's upstream (:mod:`ckbpool.proxy.upstream`) and the CPU miner (:mod:`ckbpool.miner.sv2`) both are a
client of one pool connection; this is the part they share, on top of the sans-IO
:class:`~ckbpool.sv2.client.ClientConnection`. What stays theirs is what they do with the connection: which
channel to open once the session is ready, and what to do with jobs, targets and share verdicts.

The order on the wire is fixed by the spec: SetupConnection; then, when extensions are requested,
RequestExtensions right after SetupConnection.Success and before any Mining message (0x0001 section 4); the
answer is awaited before ``on_ready`` runs, so a channel is only opened once both ends agree on the
extensions. With 0x0002 negotiated every SubmitSharesExtended must carry a ``user_identity`` TLV: use
:meth:`ClientSession.submit_extended` (or build the TLV with
:func:`ckbpool.sv2.extensions.user_identity_tlv`); the state machine refuses an untagged share.

Writes are coalesced: frames sent during one pass of the event loop leave in one ``write`` (the proxy forwards
shares in bursts; one encrypted write per burst instead of one per share).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from ckbpool.sv2.client import ClientConnection
from ckbpool.sv2.events import ChannelOpened, ConnectionSetUp, Event, ExtensionsNegotiated
from ckbpool.sv2.extensions import share_tlvs, user_identity_tlv
from ckbpool.sv2.framing import DEFAULT_MAX_PAYLOAD
from ckbpool.sv2.messages_base import Message
from ckbpool.sv2.messages_common import RequestExtensions, SetupConnection
from ckbpool.sv2.messages_mining import SubmitSharesExtended
from ckbpool.sv2.noise import MSG2_SIZE, NoiseInitiator, NoiseTransport
from ckbpool.sv2.types import Tlv

__all__ = ["ClientSession"]


class ClientSession:
    """One client connection to an SV2 server; :meth:`connect`, then :meth:`run` until the server closes.

    ``authority_public_key``: the pool's authority key (Base58Check or the 32-byte x-only key) its Noise
    certificate must be signed with; None accepts any certificate (encrypted, but not authenticated).
    ``noise=False``: a plaintext connection (tests, a local plaintext listener). ``extensions``: extension
    types to request with RequestExtensions (none: no request is sent). ``on_event`` receives every event of
    the state machine, in order, after the session's own handling; ``on_ready`` runs once, when channels may
    be opened (right after SetupConnection.Success, or after the RequestExtensions answer when extensions
    were requested: :attr:`extensions` then holds the ones both ends use). Either callback may raise to end
    :meth:`run`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        setup: SetupConnection,
        *,
        authority_public_key: bytes | str | None,
        noise: bool = True,
        on_event: Callable[[Event], None],
        on_ready: Callable[[], None],
        extensions: Iterable[int] = (),
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.host = host
        self.port = port
        self.setup = setup
        self.authority_public_key = authority_public_key
        self.noise = noise
        self.requested_extensions = tuple(dict.fromkeys(extensions))
        self.max_payload = max_payload
        self.conn = ClientConnection(max_payload=max_payload)
        self.bytes_in = 0
        self.bytes_out = 0
        #: The TCP connection was made (the handshake may still have failed).
        self.tcp_connected = False
        self.ready = False
        self.channel_opened = False
        self._on_event = on_event
        self._on_ready = on_ready
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._noise: NoiseTransport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False

    @property
    def extensions(self) -> frozenset[int]:
        """The extensions negotiated on this connection (empty until the RequestExtensions answer)."""
        return self.conn.extensions

    async def connect(self, timeout: float | None = None) -> None:
        """Open the TCP connection, complete the Noise handshake (when encrypted) and send SetupConnection."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        self._reader, self._writer = reader, writer
        self.tcp_connected = True
        if self.noise:
            initiator = NoiseInitiator(self.authority_public_key, max_frame_payload=self.max_payload)
            writer.write(initiator.start())
            msg2 = await asyncio.wait_for(reader.readexactly(MSG2_SIZE), timeout)
            self._noise = initiator.complete(msg2)
        self.send(self.setup)

    async def run(self, *, setup_timeout: float | None = None) -> None:
        """Read and handle frames until the server closes the connection or the state machine does.

        ``setup_timeout``: a channel must be open within this many seconds of the call, else TimeoutError
        (a pool that accepts TCP but never answers must not hold a client forever).
        """
        reader = self._reader
        assert reader is not None, "connect() first"
        deadline = None if setup_timeout is None else time.monotonic() + setup_timeout
        while True:
            timeout = None if deadline is None or self.channel_opened else max(0.01, deadline - time.monotonic())
            try:
                data = await asyncio.wait_for(reader.read(1 << 16), timeout)
            except TimeoutError:
                raise TimeoutError("no channel within the setup timeout") from None
            if not data:
                return
            self.bytes_in += len(data)
            if self._noise is not None:
                events = [e for frame in self._noise.feed(data) for e in self.conn.receive_frame(frame)]
            else:
                events = self.conn.receive_data(data)
            for event in events:
                self._handle(event)
                if self.conn.closed:
                    return

    def _handle(self, event: Event) -> None:
        if isinstance(event, ConnectionSetUp):
            if self.requested_extensions:
                self.send(RequestExtensions(request_id=1, requested_extensions=self.requested_extensions))
                self._on_event(event)
                return
            self._on_event(event)
            self._become_ready()
            return
        if isinstance(event, ChannelOpened):
            self.channel_opened = True
        self._on_event(event)
        if isinstance(event, ExtensionsNegotiated):
            self._become_ready()

    def _become_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self._on_ready()

    # -- output -----------------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Validate (state machine), encode, encrypt and queue ``message``; it leaves with this loop pass's
        other frames. Raises :class:`~ckbpool.sv2.errors.LocalProtocolError` for what the state forbids."""
        frame = self.conn.send(message)
        self._out.append(self._noise.encrypt_frame(frame) if self._noise is not None else frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def submit_extended(
        self,
        channel_id: int,
        sequence_number: int,
        job_id: int,
        nonce: int,
        ntime: int,
        version: int,
        extranonce: bytes,
        user_identity: str | None = None,
        ckb_user_identity: str | None = None,
        share_target: int | None = None,
    ) -> None:
        """Send a SubmitSharesExtended, tagged with ``user_identity`` (extension 0x0002) when given.

        Tagging needs 0x0002 negotiated on this connection, and once it is, every share needs an identity:
        the state machine raises LocalProtocolError otherwise; an identity over 32 UTF-8 bytes (or empty)
        raises EncodeError. ``ckb_user_identity`` (the account, ``<address>.<worker>``) and ``share_target``
        (the target the share was validated against) are the 0x4CCB TLVs (need 0x4CCB negotiated).
        """
        tlvs: tuple[Tlv, ...]
        if ckb_user_identity is None and share_target is None:
            tlvs = () if user_identity is None else (user_identity_tlv(user_identity),)
        else:
            tlvs = share_tlvs(user_identity, ckb_user_identity, share_target)
        self.send(SubmitSharesExtended(channel_id, sequence_number, job_id, nonce, ntime, version, extranonce, tlvs))

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        if self._writer is not None and not self._writer.is_closing():
            self.bytes_out += len(data)
            self._writer.write(data)

    def close(self) -> None:
        """Close the transport (queued frames not yet flushed are dropped)."""
        self._out.clear()
        if self._writer is not None:
            self._writer.close()

    async def wait_closed(self) -> None:
        """Wait for the transport to close; errors of a connection that is going away do not matter."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
