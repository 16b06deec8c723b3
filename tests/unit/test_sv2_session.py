"""ClientSession (the SV2 client connection the proxy's upstream and the CPU miner share) against an in-process
server: Noise, SetupConnection, RequestExtensions before any channel, a share tagged with a 0x0002 identity
arriving as ShareSubmitted.user_identity, and the refusals on either side."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.errors import EncodeError, LocalProtocolError
from ckbpool.sv2.events import (
    ChannelOpened,
    Event,
    ExtensionsNegotiated,
    OpenExtendedChannelRequested,
    Rejected,
    ShareSubmitted,
)
from ckbpool.sv2.extensions import ERROR_EXTENSION_NOT_NEGOTIATED, EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
from ckbpool.sv2.keys import Keypair
from ckbpool.sv2.messages import OpenExtendedMiningChannel, SetupConnection
from ckbpool.sv2.noise import MSG1_SIZE, NoiseResponder, NoiseTransport, ResponderCredentials
from ckbpool.sv2.server import ServerConnection
from ckbpool.sv2.session import ClientSession

pytestmark = pytest.mark.unit

WORKER = EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
SETUP = SetupConnection(0, 2, 2, 0, "127.0.0.1", 0, "test", "cpu", "0", "session-test")


@dataclass
class Pool:
    """A minimal pool: ServerConnection behind Noise, accepting every extended channel, recording events."""

    credentials: ResponderCredentials
    supported: tuple[int, ...]
    events: list[Event] = field(default_factory=list)
    first_request_kinds: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        msg1 = await reader.readexactly(MSG1_SIZE)
        msg2, noise = NoiseResponder(self.credentials).respond(msg1)
        writer.write(msg2)
        conn = ServerConnection(supported_extensions=self.supported)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(1 << 16):
                for frame in noise.feed(data):
                    for event in conn.receive_frame(frame):
                        self._answer(conn, noise, writer, event)
        writer.close()

    def _answer(self, conn: ServerConnection, noise: NoiseTransport, writer: asyncio.StreamWriter, e: Event) -> None:
        self.events.append(e)
        if len(self.events) == 2:  # what came right after SetupConnection
            self.first_request_kinds.append(type(e).__name__)
        out = e.reply
        if isinstance(e, OpenExtendedChannelRequested):
            out += conn.accept_extended_channel(e.request.request_id, 5, (1 << 255), b"\x00\x00\x00\x05", 4)
        if out:
            writer.write(noise.encrypt_frame(out))


@pytest.fixture
def keys() -> tuple[Keypair, ResponderCredentials]:
    authority, static = Keypair.generate(), Keypair.generate()
    now = int(time.time())
    cert = Certificate.issue(authority, static.xonly_public, now - 60, now + 3600)
    return authority, ResponderCredentials.from_certificate(static.secret, cert)


@contextlib.asynccontextmanager
async def running(pool: Pool) -> AsyncIterator[int]:
    server = await asyncio.start_server(pool.serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def open_session(
    port: int, authority: Keypair, extensions: tuple[int, ...]
) -> tuple[ClientSession, list[Event], asyncio.Task[None]]:
    seen: list[Event] = []
    opened = asyncio.Event()

    def on_event(event: Event) -> None:
        seen.append(event)
        if isinstance(event, ChannelOpened):
            opened.set()

    def on_ready() -> None:
        session.send(OpenExtendedMiningChannel(1, "ckt1qproxy.farm", 1e12, (1 << 256) - 1, 4))

    session = ClientSession(
        "127.0.0.1",
        port,
        SETUP,
        authority_public_key=authority.xonly_public,
        on_event=on_event,
        on_ready=on_ready,
        extensions=extensions,
    )
    await session.connect(5)
    task = asyncio.create_task(session.run(setup_timeout=5))
    await asyncio.wait_for(opened.wait(), 5)
    return session, seen, task


async def until(predicate: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_negotiated_identity_reaches_the_pool(keys: tuple[Keypair, ResponderCredentials]) -> None:
    authority, creds = keys
    pool = Pool(creds, (WORKER,))
    async with running(pool) as port:
        session, seen, task = await open_session(port, authority, (WORKER,))
        assert pool.first_request_kinds == ["ExtensionsNegotiated"]  # RequestExtensions came before the channel
        assert session.extensions == {WORKER} and session.ready
        assert any(isinstance(e, ExtensionsNegotiated) for e in seen)
        session.submit_extended(5, 1, 1, 7, 0, 0, bytes(4), "ckt1q.rig1")
        with pytest.raises(LocalProtocolError, match="needs a user_identity"):
            session.submit_extended(5, 2, 1, 8, 0, 0, bytes(4))
        with pytest.raises(EncodeError):
            session.submit_extended(5, 3, 1, 9, 0, 0, bytes(4), "x" * 33)
        await until(lambda: any(isinstance(e, ShareSubmitted) for e in pool.events))
        (share,) = [e for e in pool.events if isinstance(e, ShareSubmitted)]
        assert share.user_identity == "ckt1q.rig1" and share.channel.user_identity == "ckt1qproxy.farm"
        assert session.bytes_out > 0 and session.bytes_in > 0
        session.close()
        await asyncio.wait_for(task, 5)


async def test_without_extensions_no_request_is_sent(keys: tuple[Keypair, ResponderCredentials]) -> None:
    authority, creds = keys
    pool = Pool(creds, (WORKER,))
    async with running(pool) as port:
        session, _, task = await open_session(port, authority, ())
        assert pool.first_request_kinds == ["OpenExtendedChannelRequested"]
        assert session.extensions == frozenset()
        with pytest.raises(LocalProtocolError, match="did not negotiate"):
            session.submit_extended(5, 1, 1, 7, 0, 0, bytes(4), "ckt1q.rig1")
        session.submit_extended(5, 2, 1, 7, 0, 0, bytes(4))
        await until(lambda: any(isinstance(e, ShareSubmitted) for e in pool.events))
        session.close()
        await asyncio.wait_for(task, 5)


async def test_a_pool_without_0x0002_leaves_it_off_and_refuses_tagged_shares(
    keys: tuple[Keypair, ResponderCredentials],
) -> None:
    authority, creds = keys
    pool = Pool(creds, ())
    async with running(pool) as port:
        session, seen, task = await open_session(port, authority, (WORKER,))
        negotiated = [e for e in seen if isinstance(e, ExtensionsNegotiated)]
        assert negotiated and negotiated[0].extensions == frozenset() and session.extensions == frozenset()
        # Sent anyway (bypassing the client's check): the pool refuses it, and says why.
        from ckbpool.sv2.extensions import user_identity_tlv
        from ckbpool.sv2.messages import SubmitSharesExtended, encode_message

        frame = encode_message(SubmitSharesExtended(5, 9, 1, 7, 0, 0, bytes(4), (user_identity_tlv("rig"),)))
        assert session._noise is not None and session._writer is not None
        session._writer.write(session._noise.encrypt_frame(frame))
        await until(lambda: any(isinstance(e, Rejected) for e in pool.events))
        (rejected,) = [e for e in pool.events if isinstance(e, Rejected)]
        assert rejected.error_code == ERROR_EXTENSION_NOT_NEGOTIATED
        session.close()
        await asyncio.wait_for(task, 5)


async def test_setup_timeout_when_the_pool_never_answers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = ClientSession(
        "127.0.0.1", port, SETUP, authority_public_key=None, noise=False, on_event=lambda e: None, on_ready=lambda: None
    )
    await session.connect(2)
    with pytest.raises(TimeoutError):
        await session.run(setup_timeout=0.2)
    session.close()
    server.close()
