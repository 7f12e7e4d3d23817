"""Telling node URLs from paths, and checking a node URL before anything connects to it.

A command argument that looks like a URL (``scheme://…``) is never opened as a path: a store
path that happens to be ``ws://host`` would otherwise become ``ws:/host`` (one slash lost to
path normalisation) and fail far from the cause. :func:`check_url_arguments` checks every
such argument of a parsed command line once, before the command runs; a malformed one is a
:class:`~engine.errors.UsageError` (exit 2):

- the scheme is ``ws`` or ``wss`` (a node), or ``postgres``/``postgresql`` (a store on a
  database server, which the store layer answers for itself);
- a ``ws``/``wss`` URL names a host, and its port, when given, is a number in 1-65535.

:func:`resolve_node` then runs right before a command connects: a host name that does not
resolve fails at once with ``host_not_found``, never as "connection refused" (nothing was
refused: there was nowhere to connect to), and never after the connect timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from urllib.parse import SplitResult, urlsplit

from engine.errors import ConnectFailed, HostNotFound, UsageError

__all__ = [
    "NODE_SCHEMES",
    "check_url_arguments",
    "is_node_url",
    "looks_like_url",
    "node_url",
    "resolve_node",
    "resolve_node_blocking",
]

#: URL schemes of a node.
NODE_SCHEMES = ("ws", "wss")
#: URL schemes the store layer takes as a location (it answers for them itself).
STORE_SCHEMES = ("postgres", "postgresql")
#: Seconds a host name may take to resolve when the command names no timeout of its own.
RESOLVE_TIMEOUT = 10.0
#: Arguments never checked as URLs (handlers, not values).
_SKIPPED = frozenset({"func"})


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
    scheme = parts.scheme.lower()
    if scheme not in NODE_SCHEMES + STORE_SCHEMES:
        raise UsageError(
            f"{url}: {scheme}:// names neither a node (ws:// or wss://) nor a store (a path); "
            "give a node as ws://HOST:PORT"
        )
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition(":")[2]
        raise UsageError(f"{url}: the port {port_text!r} is not a number from 1 to 65535") from None
    if scheme in NODE_SCHEMES:
        if not parts.hostname:
            raise UsageError(f"{url}: no host in the URL (a node is ws://HOST:PORT)")
        if port == 0:
            raise UsageError(f"{url}: port 0 is not a port a node listens on (1 to 65535)")
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


def check_url_arguments(args: argparse.Namespace) -> None:
    """Check every argument value written as a URL (strings, and lists of them). Raises
    :class:`UsageError` naming the first malformed one."""
    for name, value in sorted(vars(args).items()):
        if name in _SKIPPED:
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and looks_like_url(item):
                _split(item)


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


def resolve_node_blocking(url: str, timeout: float = RESOLVE_TIMEOUT) -> None:
    """:func:`resolve_node` for a caller outside an event loop."""
    asyncio.run(resolve_node(url, timeout))


def _host_not_found(url: str, host: str, why: str) -> ConnectFailed:
    return HostNotFound(url, f"cannot resolve the host name {host!r} of {url}: {why}")
