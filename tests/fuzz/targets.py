"""Fuzz targets: each is ``target(data: bytes) -> None``.

The rule every target enforces: peer- or node-supplied input may only make the code raise the library's own
errors (``ckbpool.sv2.errors.Sv2Error`` and subclasses -- DecodeError, FrameTooLarge, ProtocolError, the Noise
and certificate errors -- for SV2; ``ckbpool.ckb.errors.MalformedError`` for templates; the pool's ``Flooding``).
Those are caught here. Anything else escapes and is a finding: an ``AssertionError`` from an invariant check
below, or an unexpected ``TypeError``/``IndexError``/``struct.error``/... from the code under test.

Targets interpret their bytes through :class:`Input` (a small FuzzedDataProvider that never runs dry: an
exhausted input reads as zeros), so every byte string is a valid test case and atheris' mutations stay
meaningful. Nothing here imports atheris.
"""

from __future__ import annotations

import copy
import json
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ckbpool.ckb.address import encode_address, secp256k1_lock
from ckbpool.ckb.errors import MalformedError
from ckbpool.ckb.structures import Block
from ckbpool.ckb.template import BlockTemplate, MiningJob, job_from_template
from ckbpool.pool.identity import Identity, IdentityError, parse_identity
from ckbpool.sv2.certs import Certificate
from ckbpool.sv2.errors import DecodeError, EncodeError, FrameTooLarge, LocalProtocolError, Sv2Error
from ckbpool.sv2.events import (
    ChannelClosed,
    ChannelKind,
    ChannelUpdateRequested,
    ConnectionClosed,
    Event,
    MessageReceived,
    OpenExtendedChannelRequested,
    OpenStandardChannelRequested,
    ShareSubmitted,
)
from ckbpool.sv2.extensions import (
    EXTENSION_TYPE_CKB,
    EXTENSION_TYPE_WORKER_HASHRATE_TRACKING,
    FIELD_TYPE_CKB_SHARE_TARGET,
    FIELD_TYPE_CKB_USER_IDENTITY,
    FIELD_TYPE_USER_IDENTITY,
    MAX_CKB_USER_IDENTITY_LENGTH,
    MAX_USER_IDENTITY_LENGTH,
    ShareTlvs,
    TlvRejected,
    read_share_extensions,
    share_tlvs,
)
from ckbpool.sv2.framing import HEADER_SIZE, Frame, FrameDecoder
from ckbpool.sv2.keys import Keypair
from ckbpool.sv2.messages import (
    MESSAGE_CLASSES,
    CkbJobTemplate,
    CkbSubmitSolution,
    CkbTemplateSubscribe,
    CloseChannel,
    Message,
    NewExtendedMiningJob,
    NewMiningJob,
    OpenExtendedMiningChannel,
    OpenStandardMiningChannel,
    RequestExtensions,
    SetCustomMiningJob,
    SetExtranoncePrefix,
    SetGroupChannel,
    SetNewPrevHash,
    SetTarget,
    SetupConnection,
    SubmitSharesExtended,
    SubmitSharesStandard,
    UnknownMessage,
    UpdateChannel,
    decode_frame_bytes,
    decode_message,
    encode_message,
)
from ckbpool.sv2.messages_base import layout_of
from ckbpool.sv2.messages_ckb import EXTENSION_TYPE_CKB_TEMPLATE
from ckbpool.sv2.messages_mining import REQUIRES_EXTENDED_CHANNELS, REQUIRES_FIXED_VERSION
from ckbpool.sv2.noise import (
    ENCRYPTED_HEADER_SIZE,
    MAX_CHUNK_PLAINTEXT,
    MSG1_SIZE,
    MSG2_SIZE,
    NoiseError,
    NoiseInitiator,
    NoiseResponder,
    NoiseStateError,
    NoiseTransport,
    ResponderCredentials,
    encrypted_payload_size,
)
from ckbpool.sv2.server import ServerConnection
from ckbpool.sv2.types import (
    _F32,
    TLV_LIST,
    Sv2Type,
    Tlv,
    _Bool,
    _FixedBytes,
    _Option,
    _Seq,
    _Str0_255,
    _U256Int,
    _UInt,
    _VarBytes,
)

T = TypeVar("T")
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


# --- input -----------------------------------------------------------------------------------------------------


class Input:
    """Reads structured values out of fuzz bytes; reads past the end return zeros / empty bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size).ljust(size, b"\0"), "little")

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + max(0, n)]
        self.pos += len(chunk)
        return chunk

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def below(self, n: int) -> int:
        """An integer in ``range(n)`` (n <= 65536)."""
        return (self.uint(1) if n <= 256 else self.uint(2)) % n

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.below(len(seq))]

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def cuts(self, max_parts: int = 8) -> list[int]:
        """Raw cut points for :func:`split` (read them before the data they will cut)."""
        return [self.uint(3) for _ in range(self.below(max_parts))]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given points (modulo its length; pieces may be empty)."""
    parts, start = [], 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        parts.append(data[start:cut])
        start = cut
    return parts


# --- SV2 values and messages from fuzz bytes ---------------------------------------------------------------------

_FLOATS = (0.0, 1.0, 1e6, 1e15, -1.0, math.inf, -math.inf, math.nan, 3.4e38, 1e-40, 5e-324)
_STRINGS = ("", "user.worker", "ckt1qtest.rig1", ".", "u", "a" * 255, "é" * 127, ".\x00.")
_TARGETS = (0, 1, (1 << 256) - 1, 1 << 236, 1 << 248, 0xFFFF << 240)


def sv2_value(t: Sv2Type[Any], inp: Input) -> Any:
    """A value of SV2 type ``t``: mostly small or boundary values, sometimes raw input bytes."""
    if isinstance(t, _UInt):
        mode = inp.byte()
        if mode < 160:
            return (1, 2, 1, 2, 3, 0, 1, 4)[mode % 8]  # small ids: they hit open channels, pending requests, jobs
        if mode < 200:
            return t.limit - 1 - mode % 3
        return inp.uint(t.size)
    if isinstance(t, _Bool):
        return inp.flag()
    if isinstance(t, _F32):
        if inp.flag():
            return inp.choice(_FLOATS)
        return struct.unpack("<f", inp.take(4).ljust(4, b"\0"))[0]
    if isinstance(t, _U256Int):
        return inp.choice(_TARGETS) if inp.flag() else inp.uint(32)
    if isinstance(t, _FixedBytes):
        return inp.take(t.size).ljust(t.size, b"\0")
    if isinstance(t, _VarBytes):
        n = inp.choice((0, 4, 4, 8, 16, 32, 1, 33, 255, 256, 65519, 65535, 70_000, -1))
        n = min(inp.byte() if n < 0 else n, t.max_len)
        return inp.take(min(n, 64)).ljust(n, b"\xab")
    if isinstance(t, _Str0_255):
        if inp.flag():
            return inp.choice(_STRINGS)
        return inp.take(inp.byte() % 48).decode("utf-8", "replace")[:80]
    if isinstance(t, _Seq):
        return tuple(sv2_value(t.element, inp) for _ in range(inp.byte() % 5))
    if isinstance(t, _Option):
        return sv2_value(t.element, inp) if inp.flag() else None
    if t is TLV_LIST:
        return tuple(_tlv(inp) for _ in range(inp.byte() % 4))
    raise TypeError(f"no generator for {t!r}")


_IDENTITIES = (b"ckt1qtest.rig1", b"w", b"", b"x" * 32, b"x" * 33, b"\xff\xfe", "é".encode() * 16, b"a" * 300)


def _tlv(inp: Input) -> Tlv:
    """Mostly 0x0002 user_identity TLVs (valid, too long, empty, not UTF-8), sometimes any (extension, field)."""
    mode = inp.byte()
    if mode < 160:
        return Tlv(EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, 1, inp.choice(_IDENTITIES))
    if mode < 200:
        return Tlv(EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, inp.byte() % 4, inp.take(inp.byte() % 40))
    return Tlv(inp.uint(2), inp.byte(), inp.take(inp.byte() % 40))


def sv2_message(cls: type[Message], inp: Input) -> Message:
    return cls(*(sv2_value(t, inp) for _, t in layout_of(cls)))


CLIENT_MESSAGES: tuple[type[Message], ...] = (
    SetupConnection,
    RequestExtensions,
    OpenStandardMiningChannel,
    OpenExtendedMiningChannel,
    UpdateChannel,
    CloseChannel,
    SubmitSharesStandard,
    SubmitSharesExtended,
    SetCustomMiningJob,
    CkbTemplateSubscribe,
    CkbSubmitSolution,
)
# what a client sends, weighted towards what opens channels and submits shares (the deep states)
_CLIENT_WEIGHTED = (
    *CLIENT_MESSAGES,
    *(OpenStandardMiningChannel, OpenExtendedMiningChannel) * 2,
    *(SubmitSharesStandard, SubmitSharesExtended) * 4,
)


def client_frame(inp: Input) -> bytes:
    """One plaintext frame: mostly a well-formed client message, sometimes any message, an unknown type, or a
    known type with a damaged payload."""
    kind = inp.byte()
    if kind < 208:
        return encode_message(sv2_message(_CLIENT_WEIGHTED[kind % len(_CLIENT_WEIGHTED)], inp))
    if kind < 224:
        return encode_message(sv2_message(inp.choice(MESSAGE_CLASSES), inp))
    if kind < 236:  # an unknown (extension, type), with and without the channel bit
        ext = inp.uint(2) & 0x7FFF
        payload = inp.take(inp.byte())
        return (
            struct.pack("<HB", ext | (0x8000 if inp.flag() else 0), inp.byte())
            + len(payload).to_bytes(3, "little")
            + payload
        )
    frame = bytearray(encode_message(sv2_message(inp.choice(CLIENT_MESSAGES), inp)))
    edit = inp.byte() % 4
    if edit == 0 and len(frame) > HEADER_SIZE:  # truncate the payload, keep the header consistent
        frame = frame[: HEADER_SIZE + inp.below(len(frame) - HEADER_SIZE)]
    elif edit == 1:  # extra bytes after the last field
        frame += inp.take(1 + inp.byte() % 8).ljust(1, b"\0")
    elif edit == 2 and len(frame) > HEADER_SIZE:  # overwrite a payload byte
        frame[HEADER_SIZE + inp.below(len(frame) - HEADER_SIZE)] = inp.byte()
    else:  # flip the channel_msg bit
        frame[1] ^= 0x80
    frame[3:6] = (len(frame) - HEADER_SIZE).to_bytes(3, "little")
    return bytes(frame)


def setup_connection(inp: Input) -> bytes:
    """A SetupConnection the server accepts most of the time (fuzzed flags, versions, strings)."""
    mode = inp.byte()
    flags = (0, 1, 4, 5, 8, 0x80000000)[mode % 6] if mode < 240 else inp.choice((2, 0xFFFFFFFF, 3))
    protocol = 0 if mode < 250 else inp.byte()
    max_version = 2 if mode < 245 else inp.choice((1, 3, 0xFFFF))
    return encode_message(SetupConnection(protocol, 2, max_version, flags, "h", 1, "v", "", "", ""))


def opening_frames(inp: Input) -> list[bytes]:
    """Often a standard and/or an extended channel request right after setup, so that the random part of the
    conversation meets open channels (channel ids 1, 2, ... in the order the pool accepts them)."""
    frames = []
    what = inp.byte()
    if what & 1:
        frames.append(encode_message(OpenStandardMiningChannel(what >> 4, "user.w", inp.choice(_FLOATS), _TARGETS[2])))
    if what & 2:
        size = inp.choice((0, 2, 4, 8, 33))
        frames.append(
            encode_message(OpenExtendedMiningChannel((what >> 4) + 1, "user.x", inp.choice(_FLOATS), _TARGETS[2], size))
        )
    if what & 4:
        frames.reverse()
    return frames


def _same_encoding(a: Message | UnknownMessage, b: Message | UnknownMessage) -> bool:
    if isinstance(a, UnknownMessage) or isinstance(b, UnknownMessage):
        return a == b
    return type(a) is type(b) and encode_message(a) == encode_message(b)


# --- target 1: the plaintext frame decoder -----------------------------------------------------------------------

_LIMITS = (0, 1, 24, 255, 4096, 1 << 18, 1 << 20)


def _reference_frames(stream: bytes, limit: int) -> tuple[list[Frame], bool, int]:
    """Obvious re-implementation: (frames, oversize error?, bytes consumed)."""
    frames, pos = [], 0
    while len(stream) - pos >= HEADER_SIZE:
        length = int.from_bytes(stream[pos + 3 : pos + 6], "little")
        if length > limit:
            return frames, True, pos
        if pos + HEADER_SIZE + length > len(stream):
            break
        frames.append(Frame.decode(stream[pos : pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    return frames, False, pos


def frame_decoder(data: bytes) -> None:
    """FrameDecoder.feed on any byte stream in any split: same frames as a one-piece parse, bounded buffering,
    oversize rejected from the header, poisoned after an error."""
    inp = Input(data)
    limit = inp.choice(_LIMITS)
    cuts = inp.cuts()
    if inp.flag():  # a stream of real frames (with a fuzzed one among them) or raw bytes
        stream = b"".join(client_frame(inp) for _ in range(1 + inp.byte() % 6))
    else:
        stream = inp.rest()
    expected, oversize, consumed = _reference_frames(stream, limit)
    decoder = FrameDecoder(limit)
    got: list[Frame] = []
    error: FrameTooLarge | None = None
    for part in split(stream, cuts):
        try:
            got.extend(decoder.feed(part))
        except FrameTooLarge as exc:
            error = exc
            break
        assert decoder.buffered < HEADER_SIZE + limit, "decoder holds more than one incomplete frame"
    assert (error is not None) == oversize, (error, oversize)
    if error is None:
        assert got == expected
        assert decoder.buffered == len(stream) - consumed
        assert b"".join(f.encode() for f in got) == stream[:consumed]
    else:
        assert got == expected[: len(got)]
        assert decoder.buffered == 0, "oversize frame was buffered"
        try:
            decoder.feed(b"")
        except FrameTooLarge:
            pass
        else:
            raise AssertionError("decoder accepted input after FrameTooLarge")


# --- target 2: message decoding ------------------------------------------------------------------------------------


def message_decode(data: bytes) -> None:
    """decode_frame_bytes / decode_message on arbitrary frames: DecodeError only, both paths agree, and whatever
    decodes re-encodes to something that decodes to the same message."""
    inp = Input(data)
    mode = inp.byte() % 4
    if mode == 0:
        raw = inp.rest()  # anything, including inconsistent headers
    elif mode == 1:
        raw = client_frame(inp)
    else:  # a known (extension, type) with an arbitrary payload
        cls = inp.choice(MESSAGE_CLASSES)
        payload = inp.rest()
        ext = cls.EXTENSION_TYPE | (0x8000 if mode == 3 else 0)
        raw = struct.pack("<HB", ext, cls.MSG_TYPE) + len(payload).to_bytes(3, "little") + payload
    try:
        fast: Message | UnknownMessage | None = decode_frame_bytes(raw)
    except DecodeError:
        fast = None
    try:
        slow: Message | UnknownMessage | None = decode_message(Frame.decode(raw))
    except DecodeError:
        slow = None
    assert (fast is None) == (slow is None), (fast, slow)
    if fast is None or slow is None:
        return
    assert _same_encoding(fast, slow), (fast, slow)
    if isinstance(fast, UnknownMessage):
        assert (fast.extension_type << 8 | fast.msg_type) not in {
            c.EXTENSION_TYPE << 8 | c.MSG_TYPE for c in MESSAGE_CLASSES
        }
        return
    again = encode_message(fast)  # a decoded message must be encodable ...
    assert _same_encoding(decode_frame_bytes(again), fast)  # ... and read back as itself


# --- target 3: Noise ---------------------------------------------------------------------------------------------


@dataclass
class _NoiseKeys:
    credentials: ResponderCredentials
    authority: bytes


_NOISE: _NoiseKeys | None = None


def _noise_keys() -> _NoiseKeys:
    global _NOISE
    if _NOISE is None:
        authority, static = Keypair.generate(), Keypair.generate()
        cert = Certificate.issue(authority, static.xonly_public, 0, 0xFFFFFFFF)
        _NOISE = _NoiseKeys(ResponderCredentials.from_certificate(static.secret, cert), authority.xonly_public)
    return _NOISE


def noise_handshake(data: bytes) -> None:
    """The responder on an arbitrary msg1, the initiator on an arbitrary or tampered msg2: NoiseError only."""
    keys = _noise_keys()
    inp = Input(data)
    mode = inp.byte() % 3
    if mode == 0:
        msg1 = inp.take(MSG1_SIZE) if inp.flag() else inp.rest()
        try:
            msg2, _ = NoiseResponder(keys.credentials).respond(msg1)
        except NoiseError:
            assert len(msg1) != MSG1_SIZE, "every 64-byte msg1 is a valid ElligatorSwift encoding"
            return
        assert len(msg1) == MSG1_SIZE and len(msg2) == MSG2_SIZE
        return
    initiator = NoiseInitiator(keys.authority if inp.flag() else None)
    msg1 = initiator.start()
    if mode == 1:
        msg2 = inp.rest()
    else:
        msg2 = bytearray(NoiseResponder(keys.credentials).respond(msg1)[0])
        for _ in range(inp.byte() % 3):
            msg2[inp.below(MSG2_SIZE)] ^= 1 << (inp.byte() % 8)
        msg2 = bytes(msg2)
    try:
        initiator.complete(msg2)
    except NoiseError:
        return


def _handshake(limit: int) -> tuple[NoiseTransport, NoiseTransport]:
    """(miner side, pool side) after a real handshake."""
    keys = _noise_keys()
    initiator = NoiseInitiator(keys.authority)
    msg2, pool_side = NoiseResponder(keys.credentials, max_frame_payload=limit).respond(initiator.start())
    return initiator.complete(msg2), pool_side


def _encrypt_crafted(miner: NoiseTransport, header: bytes, payload: bytes) -> bytes:
    """Encrypt a frame whose header may lie about the payload length, exactly as the encryptor lays out frames
    (header alone, then payload chunks); the library's own encrypt_frame refuses such frames."""
    seal = miner.encryptor._cipher.seal  # one AEAD message under the miner's sending key and its next nonce
    parts = [seal(header)]
    for start in range(0, len(payload), MAX_CHUNK_PLAINTEXT):
        parts.append(seal(payload[start : start + MAX_CHUNK_PLAINTEXT]))
    return b"".join(parts)


_NOISE_LIMITS = (0, 100, MAX_CHUNK_PLAINTEXT, MAX_CHUNK_PLAINTEXT + 1, 1 << 20)


def noise_transport(data: bytes) -> None:
    """After a real handshake, the pool's NoiseTransport.feed on (a) arbitrary ciphertext, (b) frames encrypted by
    the real peer -- some with lying or oversize headers, some tampered -- in any split. Honest frames come out
    unchanged; anything else raises a NoiseError, never buffers more than one frame, and poisons the stream."""
    inp = Input(data)
    limit = inp.choice(_NOISE_LIMITS)
    miner, pool = _handshake(limit)
    cuts = inp.cuts()
    sent: list[bytes] = []  # plaintext frames, in order
    honest = 0  # how many of them, from the front, are well-formed, within the limit and untampered
    bad = False
    if inp.flag():
        wire = inp.rest()
        bad = bool(wire)
    else:
        chunks: list[bytes] = []
        ends: list[int] = []  # wire offset just after each frame
        for _ in range(1 + inp.byte() % 5):
            kind = inp.byte() % 8
            if kind < 5:
                frame = client_frame(inp)
            else:  # big payloads: multi-chunk, just over the limits, or a header announcing up to 16 MiB
                size = inp.choice((MAX_CHUNK_PLAINTEXT, MAX_CHUNK_PLAINTEXT + 1, 2 * MAX_CHUNK_PLAINTEXT + 5, 101))
                frame = struct.pack("<HB", 0x4CCB | 0x8000, 1) + size.to_bytes(3, "little") + bytes(size)
            header, payload = frame[:HEADER_SIZE], frame[HEADER_SIZE:]
            if kind == 7:  # lie in the header: announce another length (up to 2^24-1) than the payload has
                announced = inp.choice((0xFFFFFF, limit + 1, len(payload) + 1, max(0, len(payload) - 1), inp.uint(3)))
                header = header[:3] + announced.to_bytes(3, "little")
                chunks.append(_encrypt_crafted(miner, header, payload))
                bad = True
            else:
                chunks.append(miner.encrypt_frame(frame))
                bad = bad or len(payload) > limit
            sent.append(header + payload)
            ends.append(ends[-1] + len(chunks[-1]) if ends else len(chunks[-1]))
            honest += not bad
        wire = b"".join(chunks)
        if inp.flag():  # tamper with one bit somewhere
            i = inp.uint(3) % len(wire)
            tampered = bytearray(wire)
            tampered[i] ^= 1 << (inp.byte() % 8)
            wire = bytes(tampered)
            bad = True
            honest = min(honest, sum(end <= i for end in ends))
    got: list[bytes] = []
    failed = False
    bound = ENCRYPTED_HEADER_SIZE + HEADER_SIZE + encrypted_payload_size(limit)
    for part in split(wire, cuts):
        try:
            got.extend(pool.feed(part))
        except NoiseError:
            failed = True
            break
        assert pool.decryptor.buffered < bound, "decryptor buffers more than one frame"
    for frame in got:
        length = int.from_bytes(frame[3:6], "little")
        assert len(frame) == HEADER_SIZE + length <= HEADER_SIZE + limit, "inconsistent or oversize frame out"
    if failed:
        try:
            pool.feed(bytes(ENCRYPTED_HEADER_SIZE))
        except NoiseStateError:
            pass
        else:
            raise AssertionError("transport accepted input after a failure")
    if not bad:
        assert not failed and got == sent, "honest frames did not come out as sent"
    n = min(len(got), honest)
    assert got[:n] == sent[:n], "an honest frame came out altered"


# --- target 4: the server state machine ----------------------------------------------------------------------------


class _PoolSide:
    """What a pool may legitimately do on a ServerConnection, driven by the fuzz input. Every call it makes is
    allowed by the protocol state, so a LocalProtocolError from it means the state machine contradicted itself.

    receive_data returns the events of every frame in the chunk at once, so by the time an event is answered a
    later frame of the same chunk may have closed its channel (or the connection): such events are not answered.
    """

    def __init__(self, conn: ServerConnection, inp: Input) -> None:
        self.conn = conn
        self.inp = inp
        self.next_channel = 1
        self.next_group = 1_000_000
        self.next_job = 1

    def on_event(self, event: Event) -> None:
        conn, inp = self.conn, self.inp
        if isinstance(event, OpenStandardChannelRequested | OpenExtendedChannelRequested):
            request = event.request
            size = 0
            if isinstance(event, OpenExtendedChannelRequested):
                size = max(event.request.min_extranonce_size, inp.choice((0, 4, 8)))
            prefix = inp.take(inp.choice((0, 4, 8))).ljust(4, b"\1")
            if inp.byte() >= 216 or len(prefix) + size > 32:
                conn.reject_channel(request.request_id, "fuzz-says-no")
                return
            cid = self.next_channel
            self.next_channel += 1
            target = inp.choice(_TARGETS[1:])
            if isinstance(event, OpenStandardChannelRequested):
                conn.accept_standard_channel(request.request_id, cid, target, prefix)
            else:
                conn.accept_extended_channel(request.request_id, cid, target, prefix, size)
            self.send_job(cid)
        elif isinstance(event, ShareSubmitted):
            if event.user_identity is not None:  # only ever a checked 0x0002 identity, on a connection that agreed it
                assert EXTENSION_TYPE_WORKER_HASHRATE_TRACKING in conn.extensions, event
                assert 1 <= len(event.user_identity.encode()) <= 32, event
            cid = event.channel.channel_id
            if cid not in conn.channels:  # closed by a later frame of the same receive_data batch
                return
            if not inp.flag():
                conn.acknowledge_shares(cid, event.share.sequence_number, 1, inp.uint(8))
            else:
                conn.reject_share(cid, event.share.sequence_number, "difficulty-too-low")
        elif isinstance(event, ChannelUpdateRequested):
            if event.channel.channel_id not in conn.channels:  # as above
                return
            conn.send(SetTarget(event.channel.channel_id, inp.choice(_TARGETS)))
        elif isinstance(event, MessageReceived) and isinstance(event.message, CkbTemplateSubscribe):
            if event.message.channel_id not in conn.channels:  # as above
                return
            conn.send(CkbJobTemplate(event.message.channel_id, self.next_job, b"{}"))
        elif isinstance(event, ChannelClosed):
            assert event.channel_id not in conn.channels

    def send_job(self, cid: int) -> None:
        conn = self.conn
        channel = conn.channels.get(cid)
        job_id = self.next_job
        self.next_job += 1
        if channel is None or channel.kind is ChannelKind.EXTENDED:  # extended channel or group
            conn.send(NewExtendedMiningJob(cid, job_id, None, 1, True, (), bytes(32), bytes(8)))
        else:
            conn.send(NewMiningJob(cid, job_id, None, 1, bytes(32)))
        conn.send(SetNewPrevHash(cid, job_id, bytes(32), 1, 0x20010000))

    def act(self) -> None:
        """A server-initiated action between client frames."""
        conn, inp = self.conn, self.inp
        ids = sorted(conn.channels)
        action = inp.byte() % 8
        if not ids or action >= 5:
            return
        cid = inp.choice(ids)
        channel = conn.channels[cid]
        if action == 0:
            self.send_job(cid)
        elif action == 1:
            conn.close_channel(cid, "fuzz")
        elif action == 2:
            conn.send(SetTarget(cid, inp.choice(_TARGETS)))
        elif action == 3:
            prefix = inp.take(inp.byte() % 9)
            if len(prefix) + channel.extranonce_size <= 32 and not channel.group_channel_id:
                conn.send(SetExtranoncePrefix(cid, prefix))
        elif action == 4 and not conn.requires_standard_jobs:
            size = len(channel.extranonce_prefix) + channel.extranonce_size
            members = tuple(
                c
                for c in ids
                if len(conn.channels[c].extranonce_prefix) + conn.channels[c].extranonce_size == size
                and not conn.channels[c].group_channel_id
            )
            group = self.next_group
            self.next_group += 1
            conn.send(SetGroupChannel(group, members))
            self.send_job(group)


def _check_connection(conn: ServerConnection) -> None:
    for group, members in conn.groups.items():
        assert group not in conn.channels
        for cid in members:
            assert conn.channels[cid].group_channel_id == group, (group, cid)
    for cid, channel in conn.channels.items():
        assert channel.channel_id == cid
        if channel.group_channel_id:
            assert cid in conn.groups.get(channel.group_channel_id, ()), cid


def server_connection(data: bytes) -> None:
    """ServerConnection.receive_frame / receive_data on a sequence of client messages (valid-typed, sometimes
    damaged), answered by a pool that does whatever the protocol allows. receive_* must never raise; the pool's
    legal answers must never be refused; channel and group bookkeeping must stay consistent."""
    inp = Input(data)
    success_flags = inp.choice((0, 0, REQUIRES_EXTENDED_CHANNELS, REQUIRES_FIXED_VERSION, 0x10000))
    worker = EXTENSION_TYPE_WORKER_HASHRATE_TRACKING
    extensions = inp.choice(((), (EXTENSION_TYPE_CKB_TEMPLATE,), (worker,), (worker, EXTENSION_TYPE_CKB_TEMPLATE)))
    conn = ServerConnection(success_flags=success_flags, supported_extensions=extensions, max_payload=1 << 17)
    pool = _PoolSide(conn, Input(inp.take(inp.byte())))  # its own bytes: it answers after the frames are built
    stream = inp.flag()  # plaintext stream (receive_data, any split) or whole frames (receive_frame)
    cuts = inp.cuts(12)
    frames = [setup_connection(inp), *opening_frames(inp)] if inp.byte() < 230 else []
    for _ in range(64):
        if inp.remaining == 0:
            break
        frames.append(client_frame(inp))
    if stream:
        inputs: list[tuple[bool, bytes]] = [(True, part) for part in split(b"".join(frames), cuts)]
    else:
        inputs = [(False, frame) for frame in frames]
    for is_stream, item in inputs:
        events = conn.receive_data(item) if is_stream else conn.receive_frame(item)
        closes = [e for e in events if isinstance(e, ConnectionClosed)]
        assert conn.closed == bool(closes) and (not closes or events[-1] is closes[0]), events
        for event in events:
            if conn.closed:
                # receive_data batches the events of several frames: once a later frame closed the
                # connection, the earlier requests can no longer be answered (and need not be).
                assert isinstance(events[-1], ConnectionClosed)
                break
            try:
                pool.on_event(event)
            except LocalProtocolError as exc:
                raise AssertionError(f"legal answer to {type(event).__name__} refused: {exc}") from exc
        if conn.closed:
            assert conn.receive_frame(encode_message(CloseChannel(1, "x"))) == []
            break
        try:
            pool.act()
        except LocalProtocolError as exc:
            raise AssertionError(f"legal server action refused: {exc}") from exc
        _check_connection(conn)


# --- target 4b: the pool's session layer on top of it -------------------------------------------------------------


class _FakeWriter:
    """Enough of an asyncio transport for MinerSession: counts what the pool writes."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed or not data, "write after close"
        self.written += len(data)

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("fuzz", 0) if name == "peername" else default


def _seed_template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads((DATA_DIR / "rfc0031_vector.json").read_text())["template"]
    return template


_JOBS: list[MiningJob] = []


def _jobs() -> list[MiningJob]:
    """Jobs at two heights; the first with the vector's easy target (shares are often blocks), the second hard."""
    if not _JOBS:
        first = _seed_template()
        second = copy.deepcopy(first)
        second["parent_hash"] = "0x" + "11" * 32
        second["number"] = "0x4"
        second["compact_target"] = "0x1d00ffff"
        _JOBS.extend(job_from_template(BlockTemplate.from_json(t)) for t in (first, second))
    return _JOBS


def pool_session(data: bytes) -> None:
    """The pool's MinerSession + StratumServer policy (channel opening, vardiff, share checks, block building,
    jobs to every channel) fed client frames without sockets. Only Sv2Error and the rate limit's Flooding may
    come out: anything else is what stratum.py would log as an "internal" error and close the miner for."""
    from ckbpool.pool.config import PoolConfig
    from ckbpool.pool.metrics import PoolMetrics
    from ckbpool.pool.stratum import Flooding, MinerSession, StratumServer

    inp = Input(data)
    config = PoolConfig.model_validate(
        {
            "stratum": {
                "max_messages_per_second": inp.choice((1e9, 1e9, 5.0)),
                "message_burst": inp.choice((10**9, 8)),
                "extended_prefix_bytes": inp.choice((4, 2, 7)),
            },
            "vardiff": {
                "share_interval_s": inp.choice((10.0, 0.001)),
                "initial_hashrate": inp.choice((1e6, 1.0, 1e30)),
                "min_share_difficulty": inp.choice((1e-6, 1e-30)),
            },
            "success_batch_shares": 1,
        }
    )
    server = StratumServer(config, _metrics(PoolMetrics), None)
    jobs = _jobs()
    job_id = 1
    if inp.byte() < 220:
        server.new_job(job_id, jobs[0])
    writer = _FakeWriter()
    session = MinerSession(server, writer, None)  # type: ignore[arg-type]
    server.sessions.add(session)
    cuts = inp.cuts(10)
    decisions = Input(inp.take(inp.byte() % 16))
    frames = [setup_connection(inp), *opening_frames(inp)]
    for _ in range(48):
        if inp.remaining == 0:
            break
        frames.append(client_frame(inp))
    try:
        # frame by frame (as a miner that waits for answers sends them), or the whole stream in arbitrary pieces
        parts = split(b"".join(frames), cuts) if cuts else frames
        for part in parts:
            session.feed(part)
            if session.closed:
                break
            if decisions.byte() >= 216:
                job_id += 1
                server.new_job(job_id, jobs[decisions.flag()])
    except LocalProtocolError as exc:  # the pool itself tried to send something the protocol forbids
        raise AssertionError(f"the pool broke the protocol: {exc}") from exc
    except (Sv2Error, Flooding):
        pass
    finally:
        session.close()
        server.sessions.discard(session)
    assert writer.closed


_METRICS: list[Any] = []


def _metrics(factory: Callable[[], Any]) -> Any:
    """One PoolMetrics for every run (a registry per run would dominate the cost)."""
    if not _METRICS:
        _METRICS.append(factory())
    return _METRICS[0]


# --- target 5: the ckb template parser -----------------------------------------------------------------------------

_SEED_TEXT = ""
_REPLACEMENTS: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1.5,
    2**70,
    "",
    "0x",
    "0x0",
    "0x00",
    "0X1",
    "0xg",
    "0x" + "f" * 66,
    "0x1" + "0" * 64,
    "0x" + "00" * 32,
    "type",
    "data",
    "dep_group",
    [],
    {},
    [[]],
    {"": None},
)


def _replacement(inp: Input) -> Any:
    """A fresh copy: the shared [] / {} must never be mutated, nor end up inside themselves."""
    return copy.deepcopy(inp.choice(_REPLACEMENTS))


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _slots(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _slots(value)


def _mutate(root: dict[str, Any], inp: Input) -> Any:
    for _ in range(1 + inp.byte() % 4):
        slots = list(_slots(root))
        if not slots or inp.byte() == 255:
            return _replacement(inp)  # the whole template replaced
        container, key = slots[inp.below(len(slots))]
        value = container[key]
        op = inp.byte() % 8
        if op == 0:
            del container[key]
        elif op == 1:
            container[key] = _replacement(inp)
        elif op == 2 and isinstance(value, str):  # damage a hex string
            edit = inp.byte() % 6
            if edit == 0:
                container[key] = value[:-1]
            elif edit == 1:
                container[key] = value + "0"
            elif edit == 2:
                container[key] = value.upper()
            elif edit == 3:
                container[key] = value.replace("0x", "0x0", 1)
            elif edit == 4 and len(value) > 2:
                i = 2 + inp.below(len(value) - 2)
                container[key] = value[:i] + inp.choice("0f9aZ \u0660") + value[i + 1 :]
            else:
                container[key] = value[2:]
        elif op == 3:  # wrap in a container / unwrap
            container[key] = [value] if inp.flag() else {"data": value}
        elif op == 4 and isinstance(value, list):
            value.append(copy.deepcopy(value[0]) if value and inp.flag() else _replacement(inp))
        elif op == 5:
            container[key] = "0x" + inp.take(inp.byte() % 40).hex()
        elif op == 6 and isinstance(container, dict):
            container[inp.choice(("extension", "required", "cycles", "type", "hash", "depends", "x"))] = copy.deepcopy(
                value
            )
        else:  # swap with another slot's value (copies: a subtree must not end up inside itself)
            other, other_key = slots[inp.below(len(slots))]
            container[key], other[other_key] = copy.deepcopy(other[other_key]), copy.deepcopy(value)
    return root


def template_parser(data: bytes) -> None:
    """BlockTemplate.from_json on mutated node JSON (or on whatever JSON the bytes are): MalformedError only.
    A template that parses must build a job whose block survives a JSON round trip with the same hash."""
    global _SEED_TEXT
    if not _SEED_TEXT:
        _SEED_TEXT = json.dumps(_seed_template())
    inp = Input(data)
    if inp.byte() < 32:
        try:
            obj: Any = json.loads(inp.rest())
        except (ValueError, RecursionError):
            return
    else:
        obj = _mutate(json.loads(_SEED_TEXT), inp)
    try:
        template = BlockTemplate.from_json(obj)
    except MalformedError:
        return
    job = job_from_template(template)
    nonce = inp.uint(16)
    block = job.block(nonce)
    assert Block.from_json(json.loads(json.dumps(block.to_json()))) == block
    assert block.hash() == job.block_hash(nonce)


# --- target 8: share TLVs (0x0002 user_identity, 0x4CCB ckb_user_identity / share_target) ----------------------------

_DEV_ADDRESS = encode_address(secp256k1_lock(bytes(range(20))), "dev")
_MAIN_ADDRESS = encode_address(secp256k1_lock(bytes(range(20))), "mainnet")
# identities as a proxy forwards them: valid, another network's, a broken checksum, odd workers, not addresses
_CKB_IDENTITIES = (
    f"{_DEV_ADDRESS}.rig1",
    _DEV_ADDRESS,
    f"{_DEV_ADDRESS}.",
    f"{_DEV_ADDRESS}.farm_a.rack-2",
    f"{_DEV_ADDRESS}.{'w' * 33}",
    f"{_DEV_ADDRESS}.rig 1",
    f"{_MAIN_ADDRESS}.rig1",
    f"{_DEV_ADDRESS[:-1]}q.rig1",
    "ckt1.rig1",
    "alice.rig1",
    ".rig1",
)
_KNOWN_FIELDS = (
    (EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, FIELD_TYPE_USER_IDENTITY),
    (EXTENSION_TYPE_CKB, FIELD_TYPE_CKB_USER_IDENTITY),
    (EXTENSION_TYPE_CKB, FIELD_TYPE_CKB_SHARE_TARGET),
)
_NEGOTIATED = (
    frozenset(),
    frozenset({EXTENSION_TYPE_WORKER_HASHRATE_TRACKING}),
    frozenset({EXTENSION_TYPE_CKB}),
    frozenset({EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, EXTENSION_TYPE_CKB}),
)


def _share_tlv(inp: Input) -> Tlv:
    """One TLV of a share: a known field with a plausible, a boundary or an arbitrary value; or any field."""
    mode = inp.byte()
    if mode < 200:
        ext, field_type = inp.choice(_KNOWN_FIELDS)
    else:
        ext, field_type = inp.choice((*_KNOWN_FIELDS, (inp.uint(2), inp.byte())))
        field_type = inp.byte() if inp.flag() else field_type
    kind = inp.byte() % 4
    if kind == 0 and field_type == FIELD_TYPE_CKB_SHARE_TARGET:
        value = inp.choice(_TARGETS).to_bytes(33, "little")[: 31 + inp.byte() % 3]  # 31, 32 or 33 bytes
    elif kind == 0:
        value = inp.choice(_CKB_IDENTITIES).encode()
    elif kind == 1:
        value = inp.choice(_IDENTITIES)
    elif kind == 2:  # a length at or around a limit
        value = b"w" * inp.choice((0, 1, 31, 32, 33, 254, 255, 256))
    else:
        value = inp.take(inp.byte() % 70)
    return Tlv(ext, field_type, value)


def share_tlv_decode(data: bytes) -> None:
    """A SubmitSharesExtended with TLVs, through the codec and the pool's TLV rules, and back.

    Decoding raises DecodeError only; :func:`read_share_extensions` (what the pool runs on every tagged share)
    raises TlvRejected only, and whatever it accepts is in bounds (negotiated extensions only, identities of
    1..32 / 1..255 UTF-8 bytes, a non-zero 256-bit target) and re-encodes with :func:`share_tlvs` to TLVs that
    read back as the same values; an identity it accepts goes through ``parse_identity`` (IdentityError only).
    The encoder side: ``share_tlvs`` either refuses a value (EncodeError) or makes TLVs the reader accepts."""
    inp = Input(data)
    negotiated = inp.choice(_NEGOTIATED)
    tlvs = tuple(_share_tlv(inp) for _ in range(inp.byte() % 5))
    extranonce = inp.take(inp.byte() % 9)
    channel_id, sequence_number, job_id, nonce, ntime, version = (inp.uint(4) for _ in range(6))
    share = SubmitSharesExtended(channel_id, sequence_number, job_id, nonce, ntime, version, extranonce, tlvs)
    frame = encode_message(share)
    # the payload length covers the TLVs: a fuzzed tail (or a cut) makes the TLV list itself malformed
    tail = inp.take(inp.byte() % 8) if inp.flag() else b""
    cut = inp.byte() % 6 if inp.flag() else 0
    body = frame[HEADER_SIZE:] + tail
    body = body[: len(body) - cut]
    raw = frame[:3] + len(body).to_bytes(3, "little") + body
    try:
        decoded = decode_frame_bytes(raw)
    except DecodeError:
        assert tail or cut, "a well-formed TLV list was refused"
        return
    assert isinstance(decoded, SubmitSharesExtended)
    if not tail and not cut:
        assert decoded.tlvs == tlvs
    try:
        read = read_share_extensions(decoded.tlvs, negotiated)
    except TlvRejected as exc:
        assert exc.error_code and exc.detail
        return
    assert all(t.extension_type in negotiated for t in decoded.tlvs)
    _check_share_tlvs(read)
    again = share_tlvs(read.user_identity, read.ckb_user_identity, read.share_target)
    assert read_share_extensions(again, negotiated) == read
    if read.ckb_user_identity is not None:
        try:
            identity = parse_identity(read.ckb_user_identity, inp.choice(("dev", "mainnet", None)))
        except IdentityError as exc:
            assert exc.code
        else:
            assert isinstance(identity, Identity) and identity.user and identity.worker
    # the encoder: a value it takes is one the reader accepts
    worker = inp.choice(_IDENTITIES).decode("utf-8", "replace")
    account = inp.choice(_CKB_IDENTITIES) + ("w" * (inp.byte() % 4 * 80))
    target = inp.choice(_TARGETS)
    try:
        made = share_tlvs(worker, account, target)
    except EncodeError:
        return
    both = frozenset({EXTENSION_TYPE_WORKER_HASHRATE_TRACKING, EXTENSION_TYPE_CKB})
    assert read_share_extensions(made, both) == ShareTlvs(worker, account, target)


def _check_share_tlvs(read: ShareTlvs) -> None:
    for value, limit in (
        (read.user_identity, MAX_USER_IDENTITY_LENGTH),
        (read.ckb_user_identity, MAX_CKB_USER_IDENTITY_LENGTH),
    ):
        if value is not None:
            assert 1 <= len(value.encode("utf-8")) <= limit, value
    if read.share_target is not None:
        assert 0 < read.share_target < 1 << 256


# --- registry --------------------------------------------------------------------------------------------------------

TARGETS: dict[str, Callable[[bytes], None]] = {
    "frame_decoder": frame_decoder,
    "message_decode": message_decode,
    "noise_handshake": noise_handshake,
    "noise_transport": noise_transport,
    "server_connection": server_connection,
    "pool_session": pool_session,
    "template_parser": template_parser,
    "share_tlv_decode": share_tlv_decode,
}


def seeds(name: str) -> list[bytes]:
    """A few starting inputs per target (the fuzzer and the unit test add random ones)."""
    common = [b"", b"\0" * 64, bytes(range(256)), b"\xff" * 128]
    if name == "frame_decoder":
        frames = b"".join(encode_message(sv2_message(c, Input(bytes(64)))) for c in CLIENT_MESSAGES)
        return [*common, b"\0\0" + frames, b"\0\6" + frames[:-3], b"\x06\x00" + b"\0\0\0\xff\xff\xff"]
    if name == "message_decode":
        return [*common, *(b"\0" + encode_message(sv2_message(c, Input(bytes(99)))) for c in MESSAGE_CLASSES)]
    if name == "template_parser":
        return [*common, b"\0" + json.dumps(_seed_template()).encode(), b"\x40" + bytes(40)]
    if name == "share_tlv_decode":
        # both extensions negotiated; 0x0002 "w", 0x4CCB a dev address.rig1, 0x4CCB target 2^236 (what a proxy sends)
        tagged = bytes([3, 3, 0, 0, 1, 1, 0, 1, 0, 0, 0, 2, 0, 3, 1, 4]) + b"\x01\x02\x03\x04" + bytes(26)
        return [*common, tagged, tagged[:1] + b"\x01" + tagged[2:]]
    return common
