"""The location of a PostgreSQL store: its public form, its secrets, and the secrets this
process was given.

A store is named by a libpq-style URL,
``postgresql://user[:password]@host[:port]/database[?param=value&…]``. Its *public location*
is that URL with every secret taken out — the password of the user part and the query
parameters in :data:`SECRET_PARAMS` — and is the only form that leaves the store: in
``Store.location``, messages, logs, audit records, bundles, labels and the locations handed to
other processes. Passwords belong in ``PGPASSWORD`` or a ``.pgpass`` file (libpq's and
asyncpg's own), which the URL then does not need.

When a URL does carry secrets, :func:`remember` keeps them for the life of this process,
under its public location, so the public location reopens the same store in this process —
a read-only view of it, a forked child, a worker thread — without the secrets travelling
anywhere. A child process started with ``exec`` inherits none of it: hand it
:func:`child_environment`, which puts the password in ``PGPASSWORD`` (never on a command
line). The memory is a process-wide map on purpose: what opens a store by location (the
opener, the analysis code, the node) knows the location only, and the secrets must not ride
along with it.

Nothing here imports asyncpg (the opener imports this module for every location).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit, urlunsplit

from engine.errors import UsageError

__all__ = [
    "POSTGRES_SCHEMES",
    "SECRET_PARAMS",
    "Secrets",
    "child_environment",
    "connect_location",
    "is_postgres_location",
    "public_location",
    "remember",
    "split_location",
]

#: Location prefixes that name a PostgreSQL database rather than a SQLite file.
POSTGRES_SCHEMES = ("postgres://", "postgresql://")
#: Query parameters of a URL whose values are secrets (libpq's names): taken out of the
#: public location like the password of the user part.
SECRET_PARAMS = frozenset({"password", "sslpassword"})
#: What a message shows of a location too malformed to take apart.
UNREADABLE = "postgresql://…"


def is_postgres_location(location: object) -> bool:
    """Whether ``location`` (a string or path) names a PostgreSQL database."""
    return str(location).lower().startswith(POSTGRES_SCHEMES)


@dataclass(frozen=True, slots=True)
class Secrets:
    """The secrets of one URL: the password of its user part (None: none there) and its
    secret query parameters, as written (still URL-encoded)."""

    password: str | None = field(default=None, repr=False)
    params: tuple[str, ...] = field(default=(), repr=False)

    def __bool__(self) -> bool:
        return self.password is not None or bool(self.params)


def _bad(why: str) -> UsageError:
    return UsageError(f"{UNREADABLE} is not a valid PostgreSQL URL: {why}")


def _parts(location: str) -> SplitResult:
    try:
        parts = urlsplit(location)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    if parts.scheme.lower() not in ("postgres", "postgresql"):
        raise _bad("the scheme is not postgresql:// or postgres://")
    return parts


def _check_hosts(hostspec: str) -> None:
    """Every ``host[:port]`` of a (possibly comma-separated) host list has a numeric port."""
    for host in hostspec.split(","):
        if host.startswith("["):
            port = host.partition("]")[2].removeprefix(":")
        else:
            port = host.rpartition(":")[2] if ":" in host else ""
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise _bad(f"the port {port!r} is not a number from 1 to 65535")


def split_location(location: str) -> tuple[str, Secrets]:
    """``location`` as its public location and its secrets. Raises :class:`UsageError`
    (naming no part of the URL) when it is not a PostgreSQL URL asyncpg could connect with:
    another scheme, a port that is not a number, a malformed query."""
    parts = _parts(str(location))
    userinfo, at, hostspec = parts.netloc.rpartition("@")
    _check_hosts(hostspec)
    user, colon, password = userinfo.partition(":")
    netloc = f"{user}{at}{hostspec}" if at else hostspec
    kept: list[str] = []
    secret: list[str] = []
    if parts.query:
        try:
            parse_qsl(parts.query, strict_parsing=True, keep_blank_values=True)
        except ValueError:
            raise _bad("its query is not name=value pairs joined by '&'") from None
        for item in parts.query.split("&"):
            name = unquote(item.partition("=")[0]).lower()
            (secret if name in SECRET_PARAMS else kept).append(item)
    public = urlunsplit(parts._replace(netloc=netloc, query="&".join(kept), fragment=""))
    return public, Secrets(unquote(password) if colon else None, tuple(secret))


def public_location(location: str) -> str:
    """``location`` without its secrets (see the module); :data:`UNREADABLE` for a URL too
    malformed to take apart, so a message about it can still be written."""
    try:
        return split_location(location)[0]
    except UsageError:
        return UNREADABLE


_lock = threading.Lock()
_remembered: dict[str, Secrets] = {}


def remember(location: str) -> str:
    """Keep the secrets of ``location`` (if any) for this process and return its public
    location, which from now on connects with them. Raises what :func:`split_location`
    raises."""
    public, secrets = split_location(location)
    if secrets:
        with _lock:
            _remembered[public] = secrets
    return public


def connect_location(location: str) -> tuple[str, str | None]:
    """The URL to connect to ``location`` with (its secret query parameters put back) and
    the password to pass beside it (None: ``PGPASSWORD`` or ``.pgpass`` decide): the
    location's own secrets, else those remembered for its public location. Raises what
    :func:`split_location` raises."""
    public, secrets = split_location(location)
    if not secrets:
        with _lock:
            secrets = _remembered.get(public, secrets)
    url = public
    if secrets.params:
        url += ("&" if urlsplit(public).query else "?") + "&".join(secrets.params)
    return url, secrets.password


def child_environment(location: str, environ: dict[str, str]) -> dict[str, str]:
    """``environ`` for a process started to open ``location`` (its public location): with
    ``PGPASSWORD`` set to the password this process holds for it, if any — the environment,
    unlike a command line, is not shown to other users."""
    try:
        password = connect_location(location)[1]
    except UsageError:
        return dict(environ)
    return dict(environ) if password is None else {**environ, "PGPASSWORD": password}
