"""The peers × sessions matrix of the selected CoValue (or group): who acknowledged how much.

:func:`target_matrix` reads the matrix of the open target: the one it carries (a bundle's,
or a remote node's as the node sent it with its peers, ``admin{matrix}``, every cell); for a
node with a sync shell, the shell's per-peer beliefs over the node's loaded CoValues
(:func:`~engine.diagnostics.matrix.matrix_of`); for a remote node that does not send it (an
older node, or an account that is not an admin), its peers with their total lag and no
cells; None for a store.

:class:`MatrixModel` is a table: one row per peer, the first column its total lag, then one
column per session of the selected CoValue — or, for a group, of the group and every CoValue
it owns. A cell says how far behind the peer is on that session: ``✓`` (nothing), ``−N``
(N transactions not acknowledged), ``forked`` (it acknowledged another history); empty when
the peer does not follow that CoValue. Cells are coloured by that state.

:meth:`MatrixModel.refresh` (the inspector's periodic poll and live changes) re-reads the
matrix and emits ``modelReset`` when rows or columns changed, ``dataChanged`` otherwise;
:meth:`MatrixModel.set_covalue` (selection) resets. It keeps only the last matrix read.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor

from engine.diagnostics.matrix import REMOTE_MATRIX_NOTE, MatrixColumn, PeersSessionsMatrix, matrix_of, partial_matrix
from engine.ids import CoValueID
from inspector.models.roles import Role
from inspector.models.table import RIGHT, Index, TableModel
from inspector.style import LOST_BACKGROUND, OK_GREEN, short_id, short_session
from inspector.targets.base import Target
from inspector.targets.node import NodeTarget
from inspector.targets.remote import RemoteTarget

__all__ = ["BEHIND_COLOR", "DIVERGED_COLOR", "UP_TO_DATE_COLOR", "MatrixModel", "target_matrix"]

#: Cell backgrounds: acknowledged everything, behind, acknowledged another history.
UP_TO_DATE_COLOR = "#dff0d8"
BEHIND_COLOR = LOST_BACKGROUND
DIVERGED_COLOR = "#f9d0cc"


def target_matrix(target: Target | None) -> PeersSessionsMatrix | None:
    """The peers × sessions matrix of ``target`` now (None: it has none)."""
    if target is None:
        return None
    carried = target.matrix()
    if carried is not None:
        return carried
    if isinstance(target, RemoteTarget):
        peers = target.peers()
        node = target.node
        if peers is None or node is None:
            return None
        columns = [
            MatrixColumn(cid, sid, log.signed_count)
            for cid, core in sorted(node.covalues.items())
            for sid, log in sorted(core.sessions.items())
        ]
        return partial_matrix([(p.peer_id, p.account, p.kind, p.behind) for p in peers], columns, REMOTE_MATRIX_NOTE)
    if isinstance(target, NodeTarget) and target.shell is not None and target.node is not None:
        return matrix_of(target.shell.manager, dict(target.node.covalues))
    return None


class MatrixModel(TableModel):
    TOTAL = 0

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self.covalue: CoValueID | None = None
        self.matrix: PeersSessionsMatrix | None = None
        self._columns: list[int] = []  # matrix column numbers shown, in order

    # -- following the inspector ---------------------------------------------------------

    def set_target(self, target: Target | None) -> None:
        self._target = target
        self.covalue = None
        self._reset()

    def set_covalue(self, covalue: CoValueID | None) -> None:
        """Show the sessions of ``covalue`` (a group: also of the CoValues it owns)."""
        self.covalue = covalue
        self._reset()

    def _read(self) -> tuple[PeersSessionsMatrix | None, list[int]]:
        matrix = target_matrix(self._target)
        columns = matrix.columns_of(self.covalue) if matrix is not None and self.covalue is not None else []
        return matrix, columns

    def _reset(self) -> None:
        self.beginResetModel()
        self.matrix, self._columns = self._read()
        self.endResetModel()

    def refresh(self) -> None:
        matrix, columns = self._read()
        old = self.matrix
        shape = (
            [p.peer_id for p in matrix.peers] if matrix else None,
            [(matrix.columns[c].covalue, matrix.columns[c].session) for c in columns] if matrix else None,
        )
        old_shape = (
            [p.peer_id for p in old.peers] if old else None,
            [(old.columns[c].covalue, old.columns[c].session) for c in self._columns] if old else None,
        )
        if shape != old_shape:
            self.beginResetModel()
            self.matrix, self._columns = matrix, columns
            self.endResetModel()
        else:
            self.matrix, self._columns = matrix, columns
            self.all_changed()

    # -- reading ---------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True when cells are known (not only the peers' totals)."""
        return self.matrix is not None and self.matrix.available

    def note(self) -> str:
        if self._target is None:
            return "No target open."
        if self.matrix is None:
            carried_note = getattr(self._target, "matrix_note", None)
            if callable(carried_note) and carried_note():
                return str(carried_note())
            return "This target has no sync layer: the matrix belongs to a running node."
        if not self.matrix.available:
            return self.matrix.note
        if self.covalue is None:
            return "Select a CoValue (or a group) to see its sessions."
        return ""

    def column_session(self, column: int) -> MatrixColumn | None:
        """The session shown in ``column`` (None for the total column)."""
        if self.matrix is None or not 1 <= column <= len(self._columns):
            return None
        return self.matrix.columns[self._columns[column - 1]]

    def row_count(self) -> int:
        return len(self.matrix.peers) if self.matrix is not None else 0

    def all_changed(self) -> None:
        rows = self.row_count()
        if rows:
            self.dataChanged.emit(self.index(0, 0), self.index(rows - 1, len(self._columns)))

    def columnCount(self, parent: Index | None = None) -> int:
        if parent is not None and parent.isValid():
            return 0
        return 1 + len(self._columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Vertical:
            if self.matrix is None or not 0 <= section < len(self.matrix.peers):
                return None
            peer = self.matrix.peers[section]
            if role == Qt.ItemDataRole.DisplayRole:
                return peer.peer_id
            if role == Qt.ItemDataRole.ToolTipRole:
                return f"{peer.peer_id}\naccount {peer.account}\n{peer.kind}"
            return None
        if section == self.TOTAL:
            if role == Qt.ItemDataRole.DisplayRole:
                return "Behind (all)"
            if role == Qt.ItemDataRole.ToolTipRole:
                return "transactions this node holds that the peer has not acknowledged, over every CoValue it follows"
            return None
        col = self.column_session(section)
        if col is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return short_session(col.session)
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{col.session}\nof {col.covalue}\nthe node holds {col.count:,} transactions"
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        matrix = self.matrix
        if matrix is None or not index.isValid() or not 0 <= index.row() < len(matrix.peers):
            return None
        row, column = index.row(), index.column()
        if column == self.TOTAL:
            if role == Qt.ItemDataRole.DisplayRole:
                return f"{matrix.behind(row):,}"
            if role == Qt.ItemDataRole.TextAlignmentRole:
                return RIGHT
            if role == Role.RAW:
                return matrix.behind(row)
            if role == Role.ID:
                return matrix.peers[row].peer_id
            return None
        if not 1 <= column <= len(self._columns):
            return None
        cell = matrix.cell(row, self._columns[column - 1])
        if role == Role.RAW:
            return cell
        if role == Role.ID:
            return matrix.peers[row].peer_id
        if cell is None:
            if role == Qt.ItemDataRole.ToolTipRole:
                return "the peer does not follow this CoValue" if matrix.available else matrix.note
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            if cell.diverged:
                return "forked"
            return "✓" if cell.behind == 0 else f"−{cell.behind:,}"
        if role == Qt.ItemDataRole.ToolTipRole:
            peer = short_id(matrix.peers[row].peer_id, 16, 4)
            what = "another history (a fork)" if cell.diverged else f"{cell.behind:,} behind"
            return f"{peer} acknowledged {cell.acked:,} transactions: {what}"
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignCenter)
        if role == Qt.ItemDataRole.BackgroundRole:
            if cell.diverged:
                return QColor(DIVERGED_COLOR)
            return QColor(UP_TO_DATE_COLOR if cell.behind == 0 else BEHIND_COLOR)
        if role == Qt.ItemDataRole.ForegroundRole and cell.behind == 0 and not cell.diverged:
            return QColor(OK_GREEN)
        return None
