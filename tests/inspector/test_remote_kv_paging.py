"""The remote target lists every CAS slot of a namespace, page after page (``kv_list`` with
``after``/``limit``, ``more``): a node holding more slots than one page shows them all."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.kv.envelope import Present
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from inspector.targets import RemoteTarget, TargetSpec
from inspector.workers import WorkerPool
from tests.inspector.conftest import run

#: Slots in the namespace, and keys per page asked for: several pages and a short last one.
SLOTS, PAGE = 23, 5


def test_every_slot_of_a_namespace_is_listed_over_several_pages(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot, pool: WorkerPool, tmp_path: Path
) -> None:
    admin = AccountKey.generate()
    admin_key = tmp_path / "admin.key"
    admin.save(admin_key)
    node = LocalNode.open(tmp_path / "store", admin, instance_id="served")
    for i in range(SLOTS):
        node.kv.cas(admin.account_id, f"slot/{i:02}", 0, Present(i))
    shell = SyncShell(node)
    server = NodeServer(shell, name="paging-node", admins=[admin.account_id])
    url = run(qtbot, server.start("127.0.0.1", 0))
    target = RemoteTarget(TargetSpec("node", url, str(admin_key)), pool)
    target.kv_page = PAGE
    try:
        run(qtbot, target.open())
        keys = [row.key for row in target.kv_slots(admin.account_id) if row.key.startswith("slot/")]
        assert keys == [f"slot/{i:02}" for i in range(SLOTS)]
    finally:
        run(qtbot, target.close())
        run(qtbot, server.close())
        shell.close()
        node.close()
