"""The cluster view against two nodes served in process on one PostgreSQL database (each a
NodeServer + SyncShell + LocalNode with its heartbeat, on the test's loop): the inspector
connected to one shows both (and a node that stopped beating as gone), and switches to the
other by a double-click, and back by the context menu."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QTest
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.net.cluster import ClusterMonitor
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.storage.interface import ClusterStore, NodeRegistration
from inspector.controller import Inspector
from inspector.models.cluster import ClusterModel
from inspector.style import LOST_BACKGROUND
from inspector.targets import RemoteTarget, TargetSpec
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import ms, run, wait_for

#: Seconds between the served nodes' heartbeats.
HEARTBEAT = 0.2


@dataclass
class ServedNode:
    node: LocalNode
    shell: SyncShell
    server: NodeServer
    monitor: ClusterMonitor
    url: str


@dataclass
class Cluster:
    a: ServedNode
    b: ServedNode
    admin_key: Path


@pytest.fixture
def cluster(pg_url: str, loop: asyncio.AbstractEventLoop, qtbot: QtBot, tmp_path: Path) -> Iterator[Cluster]:
    """Two nodes on one database, one node key, a separate operator account as their admin.
    Request it before ``inspector``: it stops last. (``pg_url`` comes before ``loop``: making
    the database's schema runs a loop of its own, which cannot start inside the test's.)"""
    admin = AccountKey.generate()
    admin_key = tmp_path / "admin.key"
    admin.save(admin_key)
    key = AccountKey.generate()
    served: list[ServedNode] = []
    try:
        for name in ("a", "b"):
            node = LocalNode.open(pg_url, key, instance_id=f"node-{name}")
            shell = SyncShell(node)
            server = NodeServer(shell, name=f"node-{name}", admins=[admin.account_id])
            url = run(qtbot, server.start("127.0.0.1", 0))
            monitor = ClusterMonitor(shell, url=url, interval=HEARTBEAT, node_id=f"node-{name}")
            served.append(ServedNode(node, shell, server, monitor, url))
            run(qtbot, monitor.start())
            shell.manager.cluster_report = monitor.report
        yield Cluster(served[0], served[1], admin_key)
    finally:
        for one in reversed(served):
            run(qtbot, one.monitor.stop())
            run(qtbot, one.server.close())
            one.shell.close()
            one.node.close()


def open_node(qtbot: QtBot, inspector: Inspector, url: str, key: Path) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        inspector.open_later(TargetSpec("node", url, str(key)))


def rows(model: ClusterModel) -> dict[str, tuple[str, bool]]:
    """URL → (state, this) of every row."""
    out = {}
    for row in range(model.rowCount()):
        node = model.node(row)
        assert node is not None
        out[node.url] = (model.index(row, ClusterModel.STATE).data(), node.this)
    return out


def test_the_cluster_view_shows_the_nodes_and_switches_between_them(
    qtbot: QtBot, cluster: Cluster, inspector: Inspector, window: MainWindow
) -> None:
    a, b = cluster.a, cluster.b
    open_node(qtbot, inspector, a.url, cluster.admin_key)
    window.tabs.setCurrentWidget(window.cluster)
    wait_for(qtbot, lambda: rows(inspector.cluster) == {a.url: ("alive", True), b.url: ("alive", False)})
    assert "2 nodes · 2 alive · 0 gone" in window.cluster.summary.text()
    this_row = inspector.cluster.row_of(a.url)
    assert inspector.cluster.index(this_row, ClusterModel.URL).data().endswith("(this node)")
    assert inspector.cluster.index(this_row, ClusterModel.URL).data(Qt.ItemDataRole.FontRole).bold()

    # A node that stopped beating without unregistering (a crash) shows as gone.
    store = a.node.store
    assert isinstance(store, ClusterStore)
    registry = store.cluster_registry()
    ghost = "ws://127.0.0.1:9"
    try:
        registry.register(NodeRegistration("ghost", "acc_zghost", ghost, 50))
    finally:
        registry.close()
    wait_for(qtbot, lambda: rows(inspector.cluster).get(ghost) == ("gone", False))
    ghost_row = inspector.cluster.row_of(ghost)
    background = inspector.cluster.index(ghost_row, ClusterModel.STATE).data(Qt.ItemDataRole.BackgroundRole)
    assert background == QColor(LOST_BACKGROUND)
    assert "3 nodes · 2 alive · 1 gone" in window.cluster.summary.text()

    # The context menu switches to any node but this one.
    assert not window.cluster.context_menu(this_row).actions()[0].isEnabled()
    assert window.cluster.context_menu(inspector.cluster.row_of(b.url)).actions()[0].isEnabled()

    # view → engine: a double-click on b reconnects the inspector to b, with the same key.
    table = window.cluster.table
    b_index = inspector.cluster.index(inspector.cluster.row_of(b.url), ClusterModel.URL)
    table.scrollTo(b_index)
    where = table.visualRect(b_index).center()
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, where)
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        # (a double-click counts on the row its press went to, as a real one does)
        QTest.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, where)
    target = inspector.target
    assert isinstance(target, RemoteTarget) and target.url == b.url
    assert target.spec.key_file == str(cluster.admin_key)
    wait_for(qtbot, lambda: rows(inspector.cluster).get(b.url) == ("alive", True))
    assert rows(inspector.cluster)[a.url] == ("alive", False)

    # ... and the context menu's action takes it back to a.
    action = window.cluster.context_menu(inspector.cluster.row_of(a.url)).actions()[0]
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        action.trigger()
    assert isinstance(inspector.target, RemoteTarget) and inspector.target.url == a.url


def test_a_target_without_a_cluster_says_why(qtbot: QtBot, inspector: Inspector, window: MainWindow) -> None:
    window.tabs.setCurrentWidget(window.cluster)
    assert not inspector.cluster.available and inspector.cluster.rowCount() == 0
    assert window.cluster.summary.text() == "No target open."
    # View → Cluster is reachable from the keyboard
    index = window.tabs.indexOf(window.cluster)
    assert window.tab_actions[index].shortcut().toString() == "Ctrl+0"
