"""Every Redis client of the pool is made here: the accounting consumer, the share-log trimmer, the public web
API and the payouts tracker all connect through :func:`redis_from_settings`, so an ACL user, a password file and
TLS are set up the same way everywhere (issue 18: no shared default user, no password in clear between hosts).

Also the ACL file the deployment gives Redis (:func:`render_acl`): one user for the pool (its own keys, the
commands it uses, nothing dangerous), one read-only user for the exporter, and the ``default`` user disabled so a
client that forgets to authenticate as someone gets nothing.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

if TYPE_CHECKING:
    from .config import RedisSettings

#: connect and per-reply bound of every call (RedisSettings.timeout_s overrides it)
DEFAULT_TIMEOUT_S = 5.0
#: every key the pool writes or reads starts with this (ckbpool.pool.accounting.PREFIX; web rollups included)
KEY_PREFIX = "ckbpool:"

POOL_USER = "pool"
EXPORTER_USER = "exporter"


def connect_redis(
    url: str,
    password: str | None = None,
    *,
    username: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    ca_file: Path | None = None,
) -> aioredis.Redis:
    """A client whose every call is bounded in time (a hung Redis must not stall accounting for good) and
    that does not retry by itself: retrying is ``ckbpool.retry``'s job, with one policy for the project.

    ``rediss://`` URLs use TLS, verifying the server against ``ca_file`` (the deployment CA) or the system's
    store, hostname included; a CA file with a plain ``redis://`` URL is refused rather than silently unused.
    ``username``/``password`` override what the URL carries (the AUTH of an ACL user)."""
    tls = urlsplit(url).scheme == "rediss"
    if ca_file is not None and not tls:
        raise ValueError(f"a TLS CA file ({ca_file}) needs a rediss:// URL, not {urlsplit(url).scheme}://")
    kwargs: dict[str, Any] = {}
    if username is not None:
        kwargs["username"] = username
    if password is not None:
        kwargs["password"] = password
    if tls:
        kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        kwargs["ssl_check_hostname"] = True
        if ca_file is not None:
            kwargs["ssl_ca_certs"] = str(ca_file)
    return aioredis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )


def redis_from_settings(settings: RedisSettings) -> aioredis.Redis:
    """The client ``[redis]`` describes (``url`` must be set): the ACL user, its password read from
    ``password_file`` now (a rotated secret takes effect at the next start), TLS per the URL scheme."""
    if settings.url is None:
        raise ValueError("redis.url is not set")
    password = settings.password_file.read_text().strip() if settings.password_file else None
    return connect_redis(
        settings.url,
        password,
        username=settings.username,
        timeout_s=settings.timeout_s,
        ca_file=settings.tls_ca_file,
    )


# --- ACL -------------------------------------------------------------------------------------------------------------

#: the pool's processes (stratum accounting, trimmer, web, payouts): data commands on its own keys, its Lua
#: scripts, pipelines; never admin or dangerous commands (FLUSHALL, CONFIG SET, KEYS, DEBUG, MODULE, ...),
#: and no FUNCTION (a function library outlives the caller and runs as anyone who calls it)
POOL_RULES = (
    "-@all +@read +@write +@scripting +@transaction +@connection -@dangerous -function +info +ping"
    f" resetkeys ~{KEY_PREFIX}* resetchannels"
)
#: redis_exporter: INFO and the server's health figures, read-only commands on any key (its key checks),
#: nothing that changes data or configuration (redis-py's CLIENT SETINFO, Redis >= 7.2, is refused and ignored)
EXPORTER_RULES = (
    "-@all +@read -@dangerous +info +ping +auth +hello +select +client|setname +client|getname"
    " +config|get +slowlog|get +slowlog|len +latency|latest +memory|stats +memory|usage +cluster|info"
    " resetkeys ~* resetchannels"
)

_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def acl_line(username: str, password: str, rules: str) -> str:
    """One ``user`` line of an ACL file: enabled, exactly this password (``>``), these rules.

    Passwords go in as written (``>secret``): Redis stores its SHA-256 only in memory, and an ACL file is a
    secret (0600, the Redis user's) either way. Whitespace would split the rule, so it is refused."""
    if not _USERNAME.match(username):
        raise ValueError(f"invalid Redis user name {username!r} (letters, digits, _ . - only)")
    if not password or any(c.isspace() for c in password) or password.startswith(("<", ">", "#")):
        raise ValueError(f"the password of Redis user {username!r} is empty or has whitespace / a leading <>#")
    return f"user {username} on resetpass >{password} {rules}"


def render_acl(pool_password: str, exporter_password: str, *, extra: dict[str, tuple[str, str]] | None = None) -> str:
    """The deployment's ``users.acl`` (``aclfile`` in redis.conf): ``pool`` and ``exporter`` users, and
    ``default`` switched off (no password, no commands: an unauthenticated client can run nothing but AUTH).

    ``extra`` adds users by name: (password, rules). The renderers write this to a 0600 secret."""
    lines = [  # an ACL file has no comments: every line must be a user
        "user default off resetpass -@all resetkeys resetchannels",
        acl_line(POOL_USER, pool_password, POOL_RULES),
        acl_line(EXPORTER_USER, exporter_password, EXPORTER_RULES),
    ]
    for name, (password, rules) in (extra or {}).items():
        lines.append(acl_line(name, password, rules))
    return "\n".join(lines) + "\n"
