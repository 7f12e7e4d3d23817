"""Telling node URLs from paths, and checking a node URL before anything connects to it.

A command argument that looks like a URL (``scheme://…``) is never opened as a path: a store
path that happens to be ``ws://host`` would otherwise become ``ws:/host`` (one slash lost to
path normalisation) and fail far from the cause. :func:`check_url_arguments` checks every
such argument of a parsed command line once, before the command runs; a malformed one is a
:class:`~engine.errors.UsageError` (exit 2):

- the scheme is ``ws`` or ``wss`` (a node), or ``postgres``/``postgresql`` (a store on a
  database server, which the store layer answers for itself);
- a ``ws``/``wss`` URL names a host, and its port, when given, is a number in 1-65535;
- a ``postgres``/``postgresql`` URL can be taken apart (a port that is a number, a query of
  ``name=value`` pairs), or the error says why without repeating the URL.

:func:`hide_store_secrets` then replaces every PostgreSQL URL among the arguments by its
public location (no password, no secret parameter), keeping its secrets in this process only
(:mod:`engine.storage.postgres.location`): nothing a command prints, logs, records or exports
can repeat a password given on its command line, and the store still opens. Messages that
quote a URL the parser rejected go through :func:`hide_passwords`.

:func:`resolve_node` then runs right before a command connects: a host name that does not
resolve fails at once with ``host_not_found``, never as "connection refused" (nothing was
refused: there was nowhere to connect to), and never after the connect timeout.

Where a command may use any of several nodes (the nodes of one cluster), its URL argument
takes them comma-separated, ``ws://a:4100,ws://b:4100`` (:func:`node_urls`); one URL is
still one URL. A node URL with a comma of its own cannot be given that way.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
from urllib.parse import SplitResult, urlsplit

from engine.errors import ConnectFailed, HostNotFound, UsageError
from engine.storage.opener import is_postgres_location
from engine.storage.postgres.location import remember, split_location

__all__ = [
    "NODE_SCHEMES",
    "check_url_arguments",
    "hide_passwords",
    "hide_store_secrets",
    "is_node_url",
    "looks_like_url",
    "node_url",
    "node_urls",
    "resolve_node",
    "resolve_node_blocking",
    "resolve_nodes",
]

#: URL schemes of a node.
NODE_SCHEMES = ("ws", "wss")
#: URL schemes the store layer takes as a location (it answers for them itself).
STORE_SCHEMES = ("postgres", "postgresql")
#: Seconds a host name may take to resolve when the command names no timeout of its own.
RESOLVE_TIMEOUT = 10.0
#: Arguments never checked as URLs (handlers, not values).
_SKIPPED = frozenset({"func"})
#: The password of a URL's user part (``scheme://user:password@``), whatever the scheme.
_USER_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):[^\s/@]*@")
#: A secret query parameter of a URL (``password=…``, ``sslpassword=…``).
_SECRET_PARAM = re.compile(r"([?&](?:ssl)?password=)[^\s&#]*", re.IGNORECASE)


def hide_passwords(text: str) -> str:
    """``text`` with the password of every URL in it taken out (``user:secret@`` becomes
    ``user@``) and the values of ``password=``/``sslpassword=`` parameters replaced by
    ``***``: for messages that quote what was typed."""
    return _SECRET_PARAM.sub(r"\1***", _USER_PASSWORD.sub(r"\1@", text))


def looks_like_url(text: str) -> bool:
    """Whether ``text`` is written as a URL (``scheme://…``) rather than a path."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()


def is_node_url(text: str) -> bool:
    """Whether ``text`` is a node's ``ws://`` or ``wss://`` URL."""
    return text.lower().startswith(("ws://", "wss://"))


def _split(url: str) -> tuple[SplitResult, int | None]:
    """``url`` split, and its port (None: not given). Raises :class:`UsageError`."""
    parts = urlsplit(url)
    shown = hide_passwords(url)
    scheme = parts.scheme.lower()
    if scheme not in NODE_SCHEMES + STORE_SCHEMES:
        raise UsageError(
            f"{shown}: {scheme}:// names neither a node (ws:// or wss://) nor a store (a path); "
            "give a node as ws://HOST:PORT"
        )
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition(":")[2]
        raise UsageError(f"{shown}: the port {port_text!r} is not a number from 1 to 65535") from None
    if scheme in NODE_SCHEMES:
        if not parts.hostname:
            raise UsageError(f"{shown}: no host in the URL (a node is ws://HOST:PORT)")
        if port == 0:
            raise UsageError(f"{shown}: port 0 is not a port a node listens on (1 to 65535)")
    return parts, port


def node_url(text: str) -> str:
    """``text`` if it is a well-formed ``ws://``/``wss://`` URL (an argparse ``type``: a
    :class:`UsageError` becomes argparse's usage error, exit 2)."""
    if not is_node_url(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a node URL: a node is ws://HOST:PORT or wss://HOST:PORT")
    try:
        _split(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None
    return text


def node_urls(text: str) -> list[str]:
    """The comma-separated node URLs of ``text`` (one or more, each as :func:`node_url`
    takes it; a repeated one counted once), in their order (an argparse ``type``)."""
    urls = [part.strip() for part in text.split(",")]
    if not all(urls):
        raise argparse.ArgumentTypeError(f"{text!r}: an empty node URL between commas (give ws://A,ws://B)")
    return list(dict.fromkeys(node_url(url) for url in urls))


def check_url_arguments(args: argparse.Namespace) -> None:
    """Check every argument value written as a URL (strings, and lists of them). Raises
    :class:`UsageError` naming the first malformed one (a PostgreSQL URL by what is wrong
    with it, never by its text: it may hold a password)."""
    for name, value in sorted(vars(args).items()):
        if name in _SKIPPED:
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and is_postgres_location(item):
                split_location(item)
            elif isinstance(item, str) and looks_like_url(item):
                _split(item)


def hide_store_secrets(args: argparse.Namespace) -> None:
    """Replace every PostgreSQL URL among ``args`` (strings, and lists of them) by its public
    location, its secrets kept in this process (the store opens with them). Raises
    :class:`UsageError` for one that is not a valid URL."""
    for name, value in vars(args).items():
        if name in _SKIPPED:
            continue
        if isinstance(value, str) and is_postgres_location(value):
            setattr(args, name, remember(value))
        elif isinstance(value, list) and any(isinstance(v, str) and is_postgres_location(v) for v in value):
            setattr(args, name, [remember(v) if isinstance(v, str) and is_postgres_location(v) else v for v in value])


async def resolve_node(url: str, timeout: float = RESOLVE_TIMEOUT) -> None:
    """Resolve the host of the node URL ``url`` within ``timeout`` seconds. Raises
    :class:`~engine.errors.HostNotFound` (``host_not_found``) when the name does not resolve
    (or not in time); an address (IPv4 or IPv6) resolves at once."""
    parts, port = _split(url)
    host = parts.hostname or ""
    default = 443 if parts.scheme.lower() == "wss" else 80
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.getaddrinfo(host, port or default, type=socket.SOCK_STREAM), timeout=max(timeout, 0.1)
        )
    except socket.gaierror as exc:
        raise _host_not_found(url, host, exc.strerror or str(exc)) from None
    except TimeoutError:
        raise _host_not_found(url, host, f"no answer from the resolver within {timeout:g} s") from None


async def resolve_nodes(urls: list[str], timeout: float = RESOLVE_TIMEOUT) -> None:
    """:func:`resolve_node` for each of ``urls``, all at once. Each must resolve (the first
    that does not is the :class:`~engine.errors.HostNotFound` raised), so a mistyped host is
    found when the command starts, not on the day its node is needed."""
    results = await asyncio.gather(*(resolve_node(url, timeout) for url in urls), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def resolve_node_blocking(url: str, timeout: float = RESOLVE_TIMEOUT) -> None:
    """:func:`resolve_node` for a caller outside an event loop."""
    asyncio.run(resolve_node(url, timeout))


def _host_not_found(url: str, host: str, why: str) -> ConnectFailed:
    return HostNotFound(url, f"cannot resolve the host name {host!r} of {url}: {why}")
