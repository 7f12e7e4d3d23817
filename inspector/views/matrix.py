"""The peers × sessions view: for the selected CoValue (or group), one row per peer of the
node and one column per session, each cell how far behind that peer is (``✓``, ``−N``,
``forked``), coloured; the first column is the peer's total lag. A note says why there is
nothing to show (no sync layer, no selection, a node that sends totals only). Read-only;
follows its model, which the inspector refreshes with the selection and the periodic poll.
Emits nothing.
"""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

from inspector.models.matrix import MatrixModel

__all__ = ["MatrixView"]

#: Width of a session column (cells are short: ``✓``, ``−1,234``, ``forked``).
CELL_WIDTH = 96


class MatrixView(QWidget):
    def __init__(self, matrix: MatrixModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.matrix = matrix
        heading = QLabel("Peers × sessions")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.summary = QLabel()
        self.summary.setObjectName("matrixSummary")
        self.summary.setWordWrap(True)
        self.table = QTableView()
        self.table.setObjectName("matrixTable")
        self.table.setModel(matrix)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setDefaultSectionSize(CELL_WIDTH)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        for signal in (matrix.modelReset, matrix.dataChanged):
            signal.connect(self._update_text)
        self._update_text()

    def _update_text(self) -> None:
        note = self.matrix.note()
        peers = self.matrix.row_count()
        sessions = self.matrix.columnCount() - 1
        if note:
            self.summary.setText(note if not peers else f"{peers} peers · {note}")
            return
        self.summary.setText(
            f"{peers} peers × {sessions} sessions: ✓ acknowledged everything, −N transactions behind, "
            "forked: acknowledged another history; empty: the peer does not follow that CoValue"
        )
