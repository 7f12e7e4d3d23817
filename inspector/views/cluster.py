"""The cluster view: the nodes sharing the open node's store (advertised URL, alive or gone,
last heartbeat, peers, lag behind the database), as the node's registry has them, refreshed
with the inspector's periodic poll.

"Switch to this node" (a row's context menu, or a double-click) asks to connect the inspector
to that node's URL with the same account key: the view emits ``switchRequested(str)`` with
the URL and the window opens it. The node the inspector is connected to cannot be switched
to (it is open already). Emits nothing else.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel, QMenu, QVBoxLayout, QWidget

from inspector.models.cluster import ClusterModel
from inspector.views.content import make_table

__all__ = ["ClusterView"]


class ClusterView(QWidget):
    switchRequested = Signal(str)

    def __init__(self, cluster: ClusterModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cluster = cluster
        heading = QLabel("Cluster")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.summary = QLabel()
        self.summary.setObjectName("clusterSummary")
        self.summary.setWordWrap(True)
        self.table = make_table(
            cluster,
            ClusterModel.URL,
            {
                ClusterModel.STATE: 60,
                ClusterModel.BEAT: 110,
                ClusterModel.PEERS: 60,
                ClusterModel.LAG: 70,
                ClusterModel.NODE: 160,
                ClusterModel.ACCOUNT: 150,
            },
            "clusterTable",
        )
        self.table.setToolTip("Double-click a node, or use its context menu, to switch the inspector to it")
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._show_menu)
        self.table.doubleClicked.connect(self._activated)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        for signal in (cluster.modelReset, cluster.dataChanged):
            signal.connect(self._update_text)
        self._update_text()

    def _update_text(self) -> None:
        report = self.cluster.report()
        if report is None:
            self.summary.setText(self.cluster.note())
            return
        alive = sum(1 for n in report.nodes if n.alive)
        gone = len(report.nodes) - alive
        text = f"{len(report.nodes)} nodes · {alive} alive · {gone} gone (highlighted) · refreshed every second"
        if not report.shared:
            text = "This node's store is not shared (SQLite): the cluster is this node alone."
        if report.note:
            text += f"\n{report.note}"
        self.summary.setText(text)

    def can_switch(self, row: int) -> bool:
        """True for a node other than the one the inspector is connected to."""
        node = self.cluster.node(row)
        return node is not None and not node.this

    def context_menu(self, row: int) -> QMenu:
        """The menu of a row: "Switch to this node" (disabled for the node open now)."""
        menu = QMenu(self)
        menu.setObjectName("clusterMenu")
        menu.setToolTipsVisible(True)
        node = self.cluster.node(row)
        action = QAction("Switch to this node", menu)
        action.setObjectName("switchNodeAction")
        action.setEnabled(self.can_switch(row))
        if node is not None:
            action.setToolTip(
                "The inspector is connected to this node" if node.this else f"Connect the inspector to {node.url}"
            )
            action.triggered.connect(lambda _checked=False, url=node.url: self.switchRequested.emit(url))
        menu.addAction(action)
        return menu

    def _show_menu(self, where: QPoint) -> None:
        index = self.table.indexAt(where)
        if not index.isValid():
            return
        menu = self.context_menu(index.row())
        menu.aboutToHide.connect(menu.deleteLater)
        menu.popup(self.table.viewport().mapToGlobal(where))

    def _activated(self, index: QModelIndex) -> None:
        if index.isValid() and self.can_switch(index.row()):
            node = self.cluster.node(index.row())
            assert node is not None
            self.switchRequested.emit(node.url)
