"""``kintsugi node serve``: run a sync node on a store until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.output import EXIT_OK, Output


def cmd_node_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio

    from engine.net.serve import serve

    asyncio.run(
        serve(
            args.store,
            host=args.host,
            port=args.port,
            admins=args.admin,
            upstreams=args.upstream,
            ready_file=args.ready_file,
            key_file=args.key,
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
        "account key is --key, or node.key in the store directory (created on first start).",
    )
    p.set_defaults(func=cmd_node_serve)
    p.add_argument("--store", required=True, type=Path, help="store directory (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    p.add_argument("--admin", action="append", default=[], metavar="ACCOUNT", help="an admin AccountID (repeatable)")
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="URL",
        help="a node to sync with (repeatable); to relay everything, this node's account must be an --admin there",
    )
    p.add_argument("--ready-file", type=Path, help="write the actual ws:// URL here once listening")
    p.add_argument("--key", type=Path, help="the node's account key file")
