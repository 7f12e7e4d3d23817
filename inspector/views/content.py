"""Content with provenance, and the tombstones of the target.

:class:`ContentView` shows the selected CoValue's keys (or a group's members) with value,
winning session, transaction index and madeAt; deleted keys are kept as rows, marked
deleted; a deleted CoValue says who deleted it, when, in which delete session.
:class:`TombstonesView` lists every deleted CoValue. Both only read their models.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

from inspector.models.content import ContentModel, TombstonesModel

__all__ = ["ContentView", "TombstonesView", "make_table"]


def make_table(model: QAbstractItemModel, stretch: int, widths: dict[int, int], name: str) -> QTableView:
    """A read-only row-selecting table with fixed-height rows over ``model``."""
    table = QTableView()
    table.setObjectName(name)
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    table.setShowGrid(False)
    table.verticalHeader().hide()
    table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    table.verticalHeader().setDefaultSectionSize(22)
    header = table.horizontalHeader()
    header.setHighlightSections(False)
    for column, width in widths.items():
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(column, width)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    return table


class ContentView(QWidget):
    def __init__(self, content: ContentModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.content = content
        self.heading = QLabel()
        self.heading.setObjectName("contentHeading")
        self.heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.heading.setWordWrap(True)
        note = QLabel(
            "Last writer wins per key over all valid transactions of all sessions, conflict sessions "
            "included; each row shows the change that won and where it came from."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: #666;")
        self.table = make_table(
            content,
            ContentModel.VALUE,
            {ContentModel.KEY: 200, ContentModel.SESSION: 210, ContentModel.TX: 60, ContentModel.MADE_AT: 180},
            "contentTable",
        )
        self.table.horizontalHeader().setSectionResizeMode(ContentModel.VALUE, QHeaderView.ResizeMode.Stretch)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(note)
        layout.addWidget(self.table, 1)
        for signal in (content.modelReset, content.rowsInserted, content.dataChanged):
            signal.connect(self._update_heading)
        self._update_heading()

    def _update_heading(self) -> None:
        self.heading.setText(self.content.heading())


class TombstonesView(QWidget):
    def __init__(self, tombstones: TombstonesModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        heading = QLabel("Tombstones: CoValues deleted by a delete marker")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        note = QLabel(
            "A deleted CoValue keeps only its header and delete sessions; a replace or a recovery never brings it back."
        )
        note.setWordWrap(True)
        note.setStyleSheet("color: #666;")
        self.table = make_table(
            tombstones,
            TombstonesModel.STATE,
            {
                TombstonesModel.COVALUE: 240,
                TombstonesModel.SESSION: 200,
                TombstonesModel.BY: 170,
                TombstonesModel.AT: 180,
            },
            "tombstonesTable",
        )
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(note)
        layout.addWidget(self.table, 1)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
