"""``kintsugi node serve``: run a node on a store until SIGTERM/SIGINT, then stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from engine.crypto import AccountKey
from engine.errors import UsageError
from engine.ids import AccountID, parse_account_id
from engine.net.client import SyncClient
from engine.net.recover import AdminRecoverer
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.limits import DEFAULT_LIMITS, Limits
from engine.storage import store_directory

logger = logging.getLogger(__name__)

#: Name of the node's own account key inside its store directory (created on first start).
NODE_KEY_FILE = "node.key"


def node_key(store: Path, key_file: Path | None) -> AccountKey:
    """The node's account key: ``key_file``, or ``<store dir>/node.key`` (created if missing)."""
    if key_file is not None:
        return AccountKey.load(key_file)
    directory = store_directory(store)
    if directory is None:
        raise UsageError("a node on a database server needs --key FILE")
    path = directory / NODE_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        AccountKey.generate().save(path)
    return AccountKey.load(path)


def write_ready_file(path: Path, url: str) -> None:
    """Write the URL atomically, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


async def serve(
    store: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    admins: Sequence[str] = (),
    upstreams: Sequence[str] = (),
    ready_file: Path | None = None,
    key_file: Path | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> None:
    key = node_key(store, key_file)
    node = LocalNode.open(store, key, instance_id=f"node-{os.getpid()}", background_commits=True)
    shell = SyncShell(node, limits=limits)
    shell.manager.on_admin_action = AdminRecoverer(node, shell.send_to)
    admin_ids: list[AccountID] = [parse_account_id(a) for a in admins]
    server = NodeServer(shell, admins=admin_ids)
    url = await server.start(host, port)
    links = [SyncClient(shell, u, role="node") for u in upstreams]
    for link in links:
        link.start()
    if ready_file is not None:
        write_ready_file(ready_file, url)
    logger.warning("node %s serving %s on %s", key.account_id, store, url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.warning("node stopping")
        for link in links:
            await link.stop()
        await server.close()
        shell.close()
        await node.aclose()
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                ready_file.unlink()
