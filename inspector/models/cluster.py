"""The cluster the open node belongs to: one row per node registered in its store
(:class:`~engine.sync.cluster.ClusterNode`: advertised URL, alive or gone, age of its last
heartbeat, peers, lag behind the database, node id, account), as the node answered the admin
op ``cluster``. A gone node's row is highlighted; the node the inspector is connected to is
bold.

:class:`ClusterModel` re-reads the target on :meth:`~ClusterModel.refresh` (the inspector's
periodic ``poll`` refresh) and keeps only what it last read as a row cache; it emits
``modelReset`` when the set of nodes changed and ``dataChanged`` when only their figures did.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor, QFont

from engine.sync.cluster import ClusterNode, ClusterReport
from inspector.models.roles import Role
from inspector.models.table import RIGHT, Index, TableModel
from inspector.style import LOST_BACKGROUND, short_id
from inspector.targets.base import Target

__all__ = ["ClusterModel", "age_text"]


def age_text(age_ms: int) -> str:
    """``0.4 s ago``, ``12 s ago``, ``3 min ago``, ``2 h ago``."""
    seconds = age_ms / 1000
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


class ClusterModel(TableModel):
    URL, STATE, BEAT, PEERS, LAG, NODE, ACCOUNT = range(7)
    HEADERS = ("Node URL", "State", "Last heartbeat", "Peers", "Lag", "Node id", "Account")
    HEADER_HELP = (
        "where the node says it is reached (node serve --advertise)",
        "gone: the node missed three heartbeats in a row (it stopped without unregistering)",
        "when the node last wrote its heartbeat, by the database's clock",
        "connections the node reported with its last heartbeat",
        "changes in the database the node has not caught up with (– : not reported)",
        "the node's process in the registry (host:pid)",
        "the node's account",
    )
    NUMERIC = frozenset({BEAT, PEERS, LAG})

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self._rows: list[ClusterNode] = []

    def set_target(self, target: Target | None) -> None:
        self.beginResetModel()
        self._target = target
        self._rows = self._read()
        self.endResetModel()

    def report(self) -> ClusterReport | None:
        """The node's last answer (None: not available, :meth:`note` says why)."""
        return self._target.cluster() if self._target is not None else None

    def _read(self) -> list[ClusterNode]:
        report = self.report()
        return list(report.nodes) if report is not None else []

    @property
    def available(self) -> bool:
        return self.report() is not None

    def note(self) -> str:
        if self._target is None:
            return "No target open."
        return self._target.cluster_note()

    def refresh(self) -> None:
        rows = self._read()
        if [r.node for r in rows] != [r.node for r in self._rows]:
            self.beginResetModel()
            self._rows = rows
            self.endResetModel()
        elif rows != self._rows:
            self._rows = rows
            self.all_changed()

    def node(self, row: int) -> ClusterNode | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, url: str) -> int:
        """The row of the node advertised at ``url``; -1 when there is none."""
        return next((i for i, n in enumerate(self._rows) if n.url == url), -1)

    def row_count(self) -> int:
        return len(self._rows)

    def _raw(self, node: ClusterNode, column: int) -> Any:
        return (
            node.url,
            "alive" if node.alive else "gone",
            node.age_ms,
            node.peers,
            node.lag,
            node.node,
            node.account,
        )[column]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        node = self.node(index.row()) if index.isValid() else None
        if node is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.URL:
                return f"{node.url}  (this node)" if node.this else node.url
            if column == self.BEAT:
                return age_text(node.age_ms)
            if column == self.LAG:
                return "–" if node.lag is None else f"{node.lag:,}"
            if column == self.ACCOUNT:
                return short_id(node.account, 12, 4)
            value = self._raw(node, column)
            return f"{value:,}" if isinstance(value, int) else str(value)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == self.PEERS and node.peer_rows:
                return "\n".join(f"{r.get('peer_id', '?')} · behind {r.get('behind', '?')}" for r in node.peer_rows)
            if column == self.ACCOUNT:
                return node.account
            if column == self.STATE and not node.alive:
                return f"no heartbeat for {age_text(node.age_ms)} (every {node.interval_ms / 1000:g} s expected)"
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and column in self.NUMERIC:
            return RIGHT
        if role == Qt.ItemDataRole.BackgroundRole and not node.alive:
            return QColor(LOST_BACKGROUND)
        if role == Qt.ItemDataRole.FontRole and node.this:
            font = QFont()
            font.setBold(True)
            return font
        if role == Role.ID:
            return node.url
        if role == Role.RAW:
            return self._raw(node, column)
        return None
