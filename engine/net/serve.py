"""``kintsugi node serve``: run a node on a store until SIGTERM/SIGINT, then stop cleanly.

The admin ops that act are served here (:class:`AdminActions`): ``recover``
(:class:`~engine.net.recover.AdminRecoverer`) and ``export``, by which an admin who has just
written a diagnostic bundle of this node has the node record it: an ``export`` record in the
node's audit log, signed by the node's own key, naming the admin as ``requested_by`` (and
their signed intent, when given).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.crypto import AccountKey, verify_signature
from engine.errors import KintsugiError, ListenFailed, PermissionDenied, ProtocolError, UsageError
from engine.ids import AccountID, parse_account_id
from engine.model.audit import AuditAction
from engine.net.client import SyncClient
from engine.net.cluster import DEFAULT_HEARTBEAT_INTERVAL, ClusterMonitor
from engine.net.follow import ClusterFollower
from engine.net.kv_worker import KvWorker
from engine.net.recover import AdminRecoverer
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.node.recovery import append_audit
from engine.protocol.limits import DEFAULT_LIMITS, Limits
from engine.protocol.messages import Admin, AdminResult, Message
from engine.protocol.messages.admin import ExportArgs, admin_args, intent_message
from engine.storage import make_store_directory, store_directory
from engine.storage.interface import ChangeLogStore, OwnKVStore

logger = logging.getLogger(__name__)

#: Name of the node's own account key inside its store directory (created on first start).
NODE_KEY_FILE = "node.key"
#: Highest TCP port number.
MAX_PORT = 65535


def node_key(store: Path | str, key_file: Path | None) -> AccountKey:
    """The node's account key: ``key_file``, or ``<store dir>/node.key`` (created if missing)."""
    if key_file is not None:
        return AccountKey.load(key_file)
    directory = store_directory(store)
    if directory is None:
        raise UsageError("a node on a database server needs --key FILE")
    path = directory / NODE_KEY_FILE
    if not path.exists():
        make_store_directory(store)  # 0700, as the store makes its own directory
        AccountKey.generate().save(path)
    return AccountKey.load(path)


class AdminActions:
    """The manager's ``on_admin_action``: ``export`` is recorded here, every other op that
    acts goes to :class:`~engine.net.recover.AdminRecoverer`. Exactly one ``admin_result``
    answers each request."""

    def __init__(self, node: LocalNode, send: Callable[[str, Message], None], *, node_name: str) -> None:
        self.node = node
        self.send = send
        self.node_name = node_name
        self.recoverer = AdminRecoverer(node, send, node_name=node_name)

    def __call__(self, peer_id: str, account: AccountID, msg: Admin) -> None:
        if msg.op == "export":
            self.send(peer_id, self.record_export(account, msg))
        else:
            self.recoverer(peer_id, account, msg)

    def record_export(self, account: AccountID, msg: Admin) -> AdminResult:
        """Append the ``export`` record the admin ``account`` asked for; the reply is
        ``{seq, head}`` of the new record, or a refusal with a stable code (bad arguments,
        an intent that does not verify, a store that cannot take it) and nothing written."""
        try:
            args = admin_args(msg)
            assert isinstance(args, ExportArgs)
            if msg.intent is not None and not verify_signature(
                account, intent_message(self.node_name, msg.op, msg.args), msg.intent
            ):
                raise PermissionDenied("the export intent is not this admin's signature of this request")
            store = self.node.store
            if store is None:
                raise ProtocolError("this node has no store to record the export in", code="unsupported_op")
            details = {**args.details(), "requested_by": account, "intent": msg.intent.hex() if msg.intent else None}
            record = append_audit(
                store, self.node.account, AuditAction.EXPORT, "node", details=details, at_ms=int(time.time() * 1000)
            )
        except KintsugiError as exc:
            logger.warning("export record asked by admin %s refused: %s", account, exc)
            return AdminResult(msg.rid, False, {"code": exc.code, "detail": exc.detail[:500]})
        logger.warning("bundle %s exported by admin %s recorded in the audit log", args.bundle, account)
        return AdminResult(msg.rid, True, {"seq": record.fields()["seq"], "head": record.hash.hex()})


def listen_error(host: str, port: int, exc: OSError) -> KintsugiError:
    """The typed error for a failed bind of ``host``:``port``. An address that is not one of
    this machine's (or a host name that does not resolve) is a :class:`UsageError`: the
    arguments are wrong, and binding says so at once, without trying to reach anything.
    Anything else (the port is in use, or needs privileges) is
    :class:`~engine.errors.ListenFailed` (``listen_failed``)."""
    why = exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return UsageError(f"--host {host}: cannot listen there: the name does not resolve ({why})")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
        return UsageError(f"--host {host}: cannot listen there: not an address of this machine ({why})")
    return ListenFailed(f"cannot listen on {host} port {port}: {why}")


def check_listen(host: str, port: int) -> None:
    """Bind ``host``:``port`` once and let go, before the store is opened, so a node that
    could not listen fails at once and creates nothing. Raises :func:`listen_error`'s errors."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, address in infos:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        raise listen_error(host, port, exc) from None


def write_ready_file(path: Path, url: str) -> None:
    """Write the URL atomically, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


async def serve(
    store: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    admins: Sequence[str] = (),
    upstreams: Sequence[str | Sequence[str]] = (),
    ready_file: Path | None = None,
    key_file: Path | None = None,
    limits: Limits = DEFAULT_LIMITS,
    advertise: str | None = None,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
) -> None:
    """Serve ``store`` until SIGTERM/SIGINT. ``advertise`` is the ``ws://`` URL other nodes'
    operators reach this node at (default: the listening URL); with a shared store the node
    registers there and beats every ``heartbeat_interval`` seconds (:mod:`engine.net.cluster`).
    Each of ``upstreams`` is one upstream link: a node's URL, or several (the nodes of one
    cluster) among which the link fails over (:class:`~engine.net.client.SyncClient`)."""
    if advertise is not None and not advertise.lower().startswith(("ws://", "wss://")):
        raise UsageError(f"--advertise {advertise}: a node's URL is a ws:// or wss:// URL")
    if heartbeat_interval <= 0:
        raise UsageError(f"--heartbeat {heartbeat_interval}: the interval is more than 0 seconds")
    admin_ids: list[AccountID] = [parse_account_id(a) for a in admins]
    upstream_urls = [[u] if isinstance(u, str) else list(u) for u in upstreams]
    for urls in upstream_urls:
        if not urls:
            raise UsageError("--upstream: an upstream needs at least one node URL")
        for upstream in urls:
            if not upstream.lower().startswith(("ws://", "wss://")):
                raise UsageError(f"--upstream {upstream}: a node to sync with is a ws:// or wss:// URL")
    if not 0 <= port <= MAX_PORT:
        raise UsageError(f"--port {port}: a port is a number from 0 to {MAX_PORT} (0: any free port)")
    check_listen(host, port)
    key = node_key(store, key_file)
    node = LocalNode.open(store, key, instance_id=f"node-{os.getpid()}", background_commits=True)
    shell = SyncShell(node, limits=limits)
    server = NodeServer(shell, admins=admin_ids)
    shell.manager.on_admin_action = AdminActions(node, shell.send_to, node_name=server.name)
    # On a store other nodes write too, follow their changes (before anyone can connect).
    # Answer CAS-slot requests off the loop: each is a database round trip, a write an fsync.
    shared = node.store if isinstance(node.store, ChangeLogStore) else None
    follower = ClusterFollower(shell, shared.change_feed()) if shared is not None else None
    kv_worker = KvWorker(shell, node.store) if isinstance(node.store, OwnKVStore) else None

    async def stop_following() -> None:
        if kv_worker is not None:
            await kv_worker.stop()
        if follower is not None:
            await follower.stop()

    try:
        if follower is not None:
            await follower.start()
        if kv_worker is not None:
            await kv_worker.start()
        url = await server.start(host, port)
    except BaseException as exc:
        await stop_following()
        shell.close()
        await node.aclose()
        if isinstance(exc, OSError):
            raise listen_error(host, port, exc) from None
        raise
    position = (lambda: (follower.cursor, follower.lag)) if follower is not None else None
    cluster = ClusterMonitor(shell, url=advertise or url, interval=heartbeat_interval, position=position)
    try:
        await cluster.start()
    except BaseException:
        await stop_following()
        await server.close()
        shell.close()
        await node.aclose()
        raise
    shell.manager.cluster_report = cluster.report
    # Stop cleanly on SIGTERM/SIGINT from the moment anyone can know the node is up (the
    # ready file, the log line): a signal before this would kill it without closing.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    links = [SyncClient(shell, urls, role="node") for urls in upstream_urls]
    for link in links:
        link.start()
    if ready_file is not None:
        write_ready_file(ready_file, url)
    logger.info("node %s serving %s, listening on %s", key.account_id, store, url)
    try:
        await stop.wait()
    finally:
        logger.info("node stopping")
        await cluster.stop()
        for link in links:
            await link.stop()
        await stop_following()
        await server.close()
        shell.close()
        await node.aclose()
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                ready_file.unlink()
