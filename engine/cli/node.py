"""``kintsugi node serve``: run a sync node on a store until SIGTERM/SIGINT.

Before anything is created or bound, the arguments are checked (usage errors, exit 2): the
port is 0-65535, every URL of every ``--upstream`` is a ``ws://``/``wss://`` URL, ``--store``
is a store directory or a store's database file (:func:`~engine.cli.stores.check_servable`), and
``--config`` and the limit flags are valid (:mod:`engine.cli.limits_config`). A ``--host``
that is not an address of this machine fails at once when binding (exit 2), a port in use
with ``listen_failed`` (exit 1). The node logs at INFO by default (its listening URL among
the first lines); ``--log-level`` and ``--log-format json`` change that. ``--advertise`` is
the URL the node registers in a shared store's node registry (default: where it listens), and
``--heartbeat`` how often it beats there. Each ``--upstream`` is one upstream link: one node,
or several nodes of one cluster comma-separated (``ws://a:4100,ws://b:4100``), among which the
link fails over (:class:`~engine.net.client.SyncClient`); the option repeats for independent
upstreams.

``kintsugi node cluster URL --key KEYFILE``: the cluster the node at ``URL`` belongs to (admin
``cluster``): every node registered in its store, with URL, alive or gone, the age of its last
heartbeat, its peers and its lag behind the database (``--json``: the node's reply as is).
Exit 0, or 1 when the node cannot be reached or refuses (``permission_denied``: the key's
account is not an admin there).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.limits_config import add_limit_flags, config_help, limits_from
from engine.cli.logs import FORMATS, LEVELS
from engine.cli.output import EXIT_OK, Output, add_json_flag
from engine.cli.stores import check_servable
from engine.cli.urls import node_url, node_urls, resolve_node
from engine.errors import InvalidId
from engine.ids import parse_account_id
from engine.storage.opener import POSTGRES_SCHEMES

#: Level ``node serve`` logs at unless ``--log-level`` or ``-v`` says otherwise.
NODE_LOG_LEVEL = "INFO"
#: Seconds ``node cluster`` may take to connect, and then to get its answer.
CLUSTER_CLI_TIMEOUT = 30.0
#: Heartbeat interval of ``node serve`` unless ``--heartbeat`` says otherwise (seconds; the
#: value of :data:`engine.net.cluster.DEFAULT_HEARTBEAT_INTERVAL`, which is not imported here
#: so that ``--help`` does not load the network stack).
DEFAULT_HEARTBEAT = 5.0


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


def positive_seconds(text: str) -> float:
    """A number of seconds above 0 (an argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds above 0")
    return value


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
            advertise=args.advertise,
            heartbeat_interval=args.heartbeat,
        )
    )
    return EXIT_OK


def cluster_text(report: dict[str, Any]) -> str:
    """The ``cluster`` reply as lines: a heading, then one line per node (``*``: the node
    asked), its peers indented below it."""
    from engine.sync.cluster import ClusterReport

    parsed = ClusterReport.from_json(report)
    alive = sum(1 for n in parsed.nodes if n.alive)
    kind = "shared store" if parsed.shared else "store not shared: a cluster of one"
    lines = [f"{len(parsed.nodes)} nodes, {alive} alive ({kind}), as seen by {parsed.node}"]
    if parsed.note:
        lines.append(f"note: {parsed.note}")
    for n in parsed.nodes:
        lag = "-" if n.lag is None else str(n.lag)
        state = "alive" if n.alive else "GONE"
        lines.append(
            f"{'*' if n.this else ' '} {n.url}  {state}  beat {n.age_ms / 1000:.1f} s ago  peers {n.peers}  "
            f"lag {lag}  node {n.node}  {n.account}"
        )
        for row in n.peer_rows:
            lines.append(f"      {row.get('peer_id', '?')}  {row.get('kind', '')}  behind {row.get('behind', '?')}")
    if parsed.nodes_dropped:
        lines.append(f"({parsed.nodes_dropped} more nodes left out of the reply)")
    return "\n".join(lines)


def cmd_node_cluster(args: argparse.Namespace, out: Output) -> int:
    import asyncio

    from engine.crypto import AccountKey
    from engine.net.remote import RemoteSession

    key = AccountKey.load(args.key)

    async def run() -> Any:
        await resolve_node(args.url, args.timeout)
        out.progress(f"connecting to {args.url}")
        session = RemoteSession(args.url, key)
        await session.open(args.timeout)
        try:
            return await session.admin("cluster", None, args.timeout)
        finally:
            await session.close()

    report = asyncio.run(run())
    out.result(report, cluster_text(report))
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
        type=node_urls,
        help="a node to sync with, ws://HOST:PORT or wss://HOST:PORT; or several nodes of one cluster, "
        "comma-separated (ws://A:PORT,ws://B:PORT): one upstream, reached through the first that answers and "
        "through the next one when it goes away. Repeatable: each --upstream is another upstream. To relay "
        "everything, this node's account must be an --admin there (on every node of the list)",
    )
    p.add_argument("--ready-file", type=Path, help="write the actual ws:// URL here once listening")
    p.add_argument(
        "--advertise",
        type=node_url,
        metavar="URL",
        help="the ws://HOST:PORT this node registers in a shared store's node registry, where operators and "
        "other nodes reach it (default: the address it listens on)",
    )
    p.add_argument(
        "--heartbeat",
        type=positive_seconds,
        default=DEFAULT_HEARTBEAT,
        metavar="SECONDS",
        help=f"seconds between heartbeats in a shared store's node registry (default {DEFAULT_HEARTBEAT:g}); "
        "a node is gone after 3 missed ones",
    )
    p.add_argument("--key", type=Path, help="the node's account key file")
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="limits in a [limits] table (format above)")
    p.add_argument("--log-level", choices=LEVELS, help=f"log this level and above (default {NODE_LOG_LEVEL})")
    p.add_argument("--log-format", choices=FORMATS, default="text", help="text (default) or json: one object a line")
    add_limit_flags(p)

    c = node_sub.add_parser(
        "cluster",
        help="show the nodes sharing a node's store: URL, alive or gone, heartbeat, peers, lag",
        description="Ask the node at URL (admin accounts only) for its cluster: every node registered in "
        "its store's node registry. A node on a store that is not shared is a cluster of one.",
    )
    c.set_defaults(func=cmd_node_cluster, default_log_level="ERROR")
    c.add_argument("url", type=node_url, metavar="URL", help="any node of the cluster, ws://HOST:PORT")
    c.add_argument("--key", required=True, type=Path, metavar="KEYFILE", help="an admin account's key file")
    c.add_argument(
        "--timeout", type=positive_seconds, default=CLUSTER_CLI_TIMEOUT, help="seconds to connect and to answer"
    )
    add_json_flag(c)
