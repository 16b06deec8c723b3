"""Who a share is credited to: ``<CKB address>.<worker>``, checked the same way wherever it enters.

A V1 miner names its account in ``mining.authorize`` (the username), an SV2 miner in its channel's
``user_identity``, and a proxy forwards a V1 device's username with each share (the 0x4CCB
``ckb_user_identity`` TLV, docs/sv2-ckb.md section 13). The pool pays the address, so all three go
through :func:`parse_identity`: a malformed address, an address of another network or an unusable
worker name is refused where it arrives (authorize error, OpenMiningChannel.Error,
SubmitShares.Error) -- never credited to someone else.

The worker name is 1..32 characters of ``A-Z a-z 0-9 . _ -`` (:data:`WORKER_CHARSET`):

- 32 is the limit of the spec's 0x0002 ``user_identity`` TLV: the proxy tags each share with the worker
  name there too, so generic SV2 tooling sees exactly the worker names the pool's books use (no
  truncation, no two workers collapsing into one). ASCII only, so 32 characters are 32 bytes.
- The charset is what V1 miners actually type after the dot (``rig1``, ``s19-07``, ``farm_a.rack2``: the
  username is split at the *first* dot, so dots may follow), and nothing else: a worker name becomes part
  of Redis keys (``worker:<user>.<worker>``), Prometheus-facing status, logs and a CSV-ish share log, so
  spaces, colons, quotes, control and look-alike Unicode characters are refused instead of escaped
  everywhere. Every name is also one more key in the books, which is why the names are short and plain
  (the number of them is bounded in the books by the idle TTL, see :mod:`ckbpool.pool.accounting`).

The same checks run wherever an identity enters: :func:`parse_identity` at an SV2 channel open, a V1
``mining.authorize`` at the proxy (per-worker mode) and a share's 0x4CCB tag; :func:`check_worker` for a
0x0002 tag alone. Errors say which character or length is wrong, so a miner can fix its config.

SOLO (docs/payouts.md): ``solo:<address>.<worker>`` asks for non-custodial solo mining -- the channel's jobs
carry the address's lock in their cellbase witness, so the node pays a block's reward to that address itself.
The prefix is case-insensitive; the account in the books is ``solo:<address>`` (lowercase), so every book keeps
solo work apart from the PPLNS work by its name alone (the share log, the block list, the ledger). A solo
identity must be a CKB address (of the pool's network when one is required) even on pools that accept any
account name: the pool needs its lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..ckb.address import parse_address
from ..ckb.errors import MalformedError

__all__ = [
    "DEFAULT_WORKER",
    "ERROR_ADDRESS_WRONG_NETWORK",
    "ERROR_INVALID_ADDRESS",
    "ERROR_INVALID_IDENTITY",
    "ERROR_INVALID_WORKER",
    "MAX_IDENTITY_BYTES",
    "MAX_WORKER_BYTES",
    "SOLO_PREFIX",
    "WORKER_CHARSET",
    "Identity",
    "IdentityError",
    "check_worker",
    "is_solo",
    "parse_identity",
    "solo_address",
]

#: the worker of ``address`` alone (no dot)
DEFAULT_WORKER = "default"
#: = the 0x0002 ``user_identity`` limit (spec, SRI's MAX_USER_IDENTITY_LENGTH)
MAX_WORKER_BYTES = 32
#: characters a worker name may use (a regex character class body; see the module docstring)
WORKER_CHARSET = "A-Za-z0-9._-"
_WORKER_RE = re.compile(f"[{WORKER_CHARSET}]+")
_BAD_CHAR_RE = re.compile(f"[^{WORKER_CHARSET}]")
#: an identity (and the books' account) that starts with this mines SOLO to the address after it
SOLO_PREFIX = "solo:"
#: = the 0x4CCB ``ckb_user_identity`` limit (STR0_255), and the SV2 channel ``user_identity`` limit
MAX_IDENTITY_BYTES = 255

# SV2 error codes (STR0_32): SubmitShares.Error / OpenMiningChannel.Error
ERROR_INVALID_ADDRESS = "invalid-address"
ERROR_ADDRESS_WRONG_NETWORK = "address-wrong-network"
ERROR_INVALID_WORKER = "invalid-worker-name"
ERROR_INVALID_IDENTITY = "invalid-user-identity"


class IdentityError(ValueError):
    """An identity the pool cannot credit; ``code`` is its SV2 error code, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    worker: str

    def __str__(self) -> str:
        return f"{self.user}.{self.worker}"

    @property
    def solo(self) -> bool:
        """This account mines SOLO (``user`` is ``solo:<address>``)."""
        return is_solo(self.user)


def is_solo(user: str) -> bool:
    """Whether a books account (a share's or block's ``user``) is a SOLO miner's: ``solo:<address>``."""
    return user.startswith(SOLO_PREFIX)


def solo_address(user: str) -> str:
    """The address of a SOLO account (``solo:<address>`` -> ``<address>``); ValueError for a PPLNS account."""
    if not is_solo(user):
        raise ValueError(f"{user!r} is not a SOLO account")
    return user[len(SOLO_PREFIX) :]


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_worker(worker: str) -> None:
    """A worker name fit for the books and for a 0x0002 TLV: 1..32 characters of ``A-Z a-z 0-9 . _ -``."""
    if not worker:
        raise IdentityError(ERROR_INVALID_WORKER, "empty worker name")
    if _WORKER_RE.fullmatch(worker) is None:
        bad = _BAD_CHAR_RE.search(worker)
        assert bad is not None
        raise IdentityError(
            ERROR_INVALID_WORKER,
            f"worker name {_short(worker)!r} has {bad.group()!r} at position {bad.start() + 1}; "
            f"allowed: letters, digits, '.', '_', '-'",
        )
    if len(worker) > MAX_WORKER_BYTES:
        raise IdentityError(ERROR_INVALID_WORKER, f"worker name of {len(worker)} characters exceeds {MAX_WORKER_BYTES}")


def parse_identity(text: str, network: str | None) -> Identity:
    """``user.worker`` split at the first dot (no worker: ``default``), checked.

    ``network`` (dev/testnet/mainnet): the user must be a CKB address of that network. None: any
    non-empty user (test pools and deployments that do not require addresses).
    ``solo:<address>[.<worker>]`` (prefix in any case): a SOLO identity, whose user is ``solo:<address>``; its
    address is checked even when ``network`` is None (the pool needs its lock).
    Raises :class:`IdentityError`.
    """
    solo = text[: len(SOLO_PREFIX)].lower() == SOLO_PREFIX
    user, dot, worker = (text[len(SOLO_PREFIX) :] if solo else text).partition(".")
    if dot and not worker:
        raise IdentityError(ERROR_INVALID_WORKER, "empty worker name after the dot")
    worker = worker or DEFAULT_WORKER
    check_worker(worker)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise IdentityError(ERROR_INVALID_IDENTITY, "not valid UTF-8") from None
    if size > MAX_IDENTITY_BYTES:
        raise IdentityError(ERROR_INVALID_IDENTITY, f"{size} bytes exceed {MAX_IDENTITY_BYTES}")
    if not user:
        raise IdentityError(ERROR_INVALID_ADDRESS, "no account before the worker name")
    if network is not None or solo:
        if user != user.strip():
            raise IdentityError(ERROR_INVALID_ADDRESS, "spaces around the address")
        try:
            parse_address(user)
        except MalformedError as exc:
            raise IdentityError(ERROR_INVALID_ADDRESS, f"{_short(user)} is not a CKB address: {exc.problem}") from None
        try:
            if network is not None:
                parse_address(user, network)
        except MalformedError:
            raise IdentityError(
                ERROR_ADDRESS_WRONG_NETWORK, f"{_short(user)} is not an address of this pool's network ({network})"
            ) from None
        user = user.lower()  # bech32 may be written in capitals: one account, one key in the books
        if solo:
            user = SOLO_PREFIX + user
    elif not user.isprintable() or any(c.isspace() for c in user):
        raise IdentityError(ERROR_INVALID_IDENTITY, "account name has spaces or unprintable characters")
    return Identity(user, worker)
