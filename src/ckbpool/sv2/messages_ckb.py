"""The CKB template extension (extension_type 0x4CCB), specified in ``docs/sv2-ckb.md``.

Negotiated with ``RequestExtensions``. It lets a channel receive, for each job, the full block
template the job's ``pow_hash`` was built from, and submit a solution as the raw 16-byte nonce.
That is what a proxy needs to serve the official ``ckb miner``, which mines from a whole
``BlockTemplate`` (not from ``pow_hash``) and picks its nonces itself (so they do not start with the
channel's extranonce prefix).

0x4CCB lies in the spec's experimental range 0x4000-0x7fff (03-Protocol-Overview.md 3.4) until an
id is allocated at stratumprotocol.org.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from ckbpool.sv2.messages_base import Message
from ckbpool.sv2.types import B0_16M, U32, Bytes

__all__ = [
    "EXTENSION_TYPE_CKB_TEMPLATE",
    "CkbJobTemplate",
    "CkbSubmitSolution",
    "CkbTemplateSubscribe",
]

EXTENSION_TYPE_CKB_TEMPLATE = 0x4CCB


class _CkbTemplateExtension(Message):
    __slots__ = ()
    EXTENSION_TYPE = EXTENSION_TYPE_CKB_TEMPLATE
    CHANNEL_MSG = True


@dataclass(frozen=True, slots=True)
class CkbTemplateSubscribe(_CkbTemplateExtension):
    """0x00, client -> server: send CkbJobTemplate for every later job of this channel."""

    MSG_TYPE = 0x00

    channel_id: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class CkbJobTemplate(_CkbTemplateExtension):
    """0x01, server -> client: the block template behind ``job_id``.

    ``template`` is UTF-8 JSON of a ckb ``BlockTemplate`` object (the node's
    ``get_block_template`` result schema), exactly the one the pool computed the job's pow_hash
    from, so a miner rebuilding the header from it gets the same pow_hash.
    """

    MSG_TYPE = 0x01

    channel_id: Annotated[int, U32]
    job_id: Annotated[int, U32]
    template: Annotated[bytes, B0_16M]


@dataclass(frozen=True, slots=True)
class CkbSubmitSolution(_CkbTemplateExtension):
    """0x02, client -> server: a share given as the whole nonce16 (the Eaglesong input's last 16 bytes).

    Answered like any share, with SubmitShares.Success / SubmitShares.Error on the same
    ``sequence_number`` space as the channel's other submits.
    """

    MSG_TYPE = 0x02

    channel_id: Annotated[int, U32]
    sequence_number: Annotated[int, U32]
    job_id: Annotated[int, U32]
    nonce16: Annotated[bytes, Bytes(16)]
