"""``kintsugi node serve``: run a sync node on a store until SIGTERM/SIGINT.

Before anything is created or bound, the arguments are checked (usage errors, exit 2): the
port is 0-65535, every ``--upstream`` is a ``ws://``/``wss://`` URL, ``--store`` is a store
directory or a store's database file (:func:`~engine.cli.stores.check_servable`), and
``--config`` and the limit flags are valid (:mod:`engine.cli.limits_config`). A ``--host``
that is not an address of this machine fails at once when binding (exit 2), a port in use
with ``listen_failed`` (exit 1). The node logs at INFO by default (its listening URL among
the first lines); ``--log-level`` and ``--log-format json`` change that.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.limits_config import add_limit_flags, config_help, limits_from
from engine.cli.logs import FORMATS, LEVELS
from engine.cli.output import EXIT_OK, Output
from engine.cli.stores import check_servable
from engine.cli.urls import node_url
from engine.errors import InvalidId
from engine.ids import parse_account_id
from engine.storage.opener import POSTGRES_SCHEMES

#: Level ``node serve`` logs at unless ``--log-level`` or ``-v`` says otherwise.
NODE_LOG_LEVEL = "INFO"


def port_number(text: str) -> int:
    """A TCP port to listen on, 0-65535 (an argparse ``type``)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535; 0: any free port)")
    return port


def account_id(text: str) -> str:
    """An AccountID (an argparse ``type``)."""
    try:
        return parse_account_id(text)
    except InvalidId as exc:
        raise argparse.ArgumentTypeError(exc.detail or f"{text!r} is not an AccountID") from None


def cmd_node_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio

    from engine.net.serve import serve

    limits = limits_from(args)
    check_servable(args.store)
    asyncio.run(
        serve(
            args.store if args.store.startswith(POSTGRES_SCHEMES) else Path(args.store).expanduser(),
            host=args.host,
            port=args.port,
            admins=args.admin,
            upstreams=args.upstream,
            ready_file=args.ready_file,
            key_file=args.key,
            limits=limits,
        )
    )
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = sub.add_parser("node", help="run a sync node", description="Run a Kintsugi sync node.")
    node_sub = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    p = node_sub.add_parser(
        "serve",
        help="serve a store over WebSockets until SIGTERM/SIGINT",
        description="Serve the CoValues of a store to authenticated peers over WebSockets. The node's "
        "account key is --key, or node.key in the store directory (created on first start). It logs "
        "to stderr, at INFO unless --log-level says otherwise; its listening URL is logged once it "
        "listens (and written to --ready-file). " + config_help(),
    )
    p.set_defaults(func=cmd_node_serve, default_log_level=NODE_LOG_LEVEL)
    p.add_argument(
        "--store",
        required=True,
        help="store directory (created if missing), a store's NAME.db file, or a postgresql:// URL "
        "(the database must exist; a node there needs --key)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=0, help="port, 0-65535 (default 0: any free port)")
    p.add_argument(
        "--admin",
        action="append",
        default=[],
        metavar="ACCOUNT",
        type=account_id,
        help="an admin AccountID (repeatable)",
    )
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="URL",
        type=node_url,
        help="a node to sync with, ws:// or wss:// (repeatable); to relay everything, this node's account "
        "must be an --admin there",
    )
    p.add_argument("--ready-file", type=Path, help="write the actual ws:// URL here once listening")
    p.add_argument("--key", type=Path, help="the node's account key file")
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="limits in a [limits] table (format above)")
    p.add_argument("--log-level", choices=LEVELS, help=f"log this level and above (default {NODE_LOG_LEVEL})")
    p.add_argument("--log-format", choices=FORMATS, default="text", help="text (default) or json: one object a line")
    add_limit_flags(p)
