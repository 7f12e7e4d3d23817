"""The navigator's CoValue list and its badge/search filter.

:class:`CoValueListModel` adapts a target's summaries: it keeps only the row order (ids) and
reads each summary from the target when asked. Live changes arrive batched
(:meth:`CoValueListModel.update`): new CoValues are inserted in id order with one
``beginInsertRows`` per contiguous run, changed ones emit one ``dataChanged`` per run.
:class:`CoValueFilterModel` narrows it by badge and by a search over id and name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QModelIndex, QObject, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor, QFont

from engine.diagnostics.covalue_summary import Badge, CoValueSummary
from engine.ids import CoValueID
from inspector.models.batch import runs
from inspector.models.roles import Role
from inspector.models.table import RIGHT, Index, TableModel
from inspector.style import BADGE_HELP, BADGE_LABELS, BADGE_ORDER, MUTED, short_id, type_icon
from inspector.targets.base import Target

__all__ = ["CoValueFilterModel", "CoValueListModel"]


class CoValueListModel(TableModel):
    """One row per CoValue of the target. Emits ``modelReset`` on a new target,
    ``rowsInserted`` for new CoValues and ``dataChanged`` for changed ones."""

    NAME, TYPE, BADGES, TRANSACTIONS, ID = range(5)
    HEADERS = ("Name", "Type", "Badges", "Txs", "Id")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self._ids: list[CoValueID] = []  # row order (a cache of target.ids())

    def set_target(self, target: Target | None) -> None:
        self.beginResetModel()
        self._target = target
        self._ids = target.ids() if target is not None else []
        self.endResetModel()

    def summary_at(self, row: int) -> CoValueSummary | None:
        if self._target is None or not 0 <= row < len(self._ids):
            return None
        return self._target.summary(self._ids[row])

    def row_of(self, covalue: str) -> int:
        """The row of ``covalue``, or -1."""
        try:
            return self._ids.index(CoValueID(covalue))
        except ValueError:
            return -1

    def update(self, covalues: Iterable[CoValueID]) -> None:
        """The summaries of ``covalues`` changed (or they are new): update rows in batches."""
        if self._target is None:
            return
        wanted = set(covalues)
        known = set(self._ids)
        new = sorted(wanted - known)
        if new:
            merged = sorted(known | set(new))
            positions = [merged.index(cid) for cid in new]
            # Insert run by run, in ascending order, so each run's position is final.
            for first, last in runs(positions):
                self.beginInsertRows(QModelIndex(), first, last)
                self._ids[first:first] = merged[first : last + 1]
                self.endInsertRows()
        changed = [self._ids.index(cid) for cid in wanted & known]
        for first, last in runs(changed):
            self.dataChanged.emit(self.index(first, 0), self.index(last, self.columnCount() - 1))

    # -- Qt model API --------------------------------------------------------------------

    def row_count(self) -> int:
        return len(self._ids)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        summary = self.summary_at(index.row()) if index.isValid() else None
        if summary is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.NAME:
                return summary.name or "(unnamed)"
            if column == self.TYPE:
                return summary.type
            if column == self.BADGES:
                text = ", ".join(BADGE_LABELS[b] for b in BADGE_ORDER if b in summary.badges)
                return text if summary.analysed else (text + " …" if text else "…")
            if column == self.TRANSACTIONS:
                return f"{summary.transactions:,}"
            if column == self.ID:
                return short_id(summary.id)
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            counts = f"{summary.type}, {summary.transactions} transactions, {len(summary.sessions)} sessions"
            lines = [summary.id, counts]
            lines += [BADGE_HELP[b] for b in BADGE_ORDER if b in summary.badges]
            if not summary.analysed:
                lines.append("still verifying: badges may change")
            return "\n".join(lines)
        if role == Qt.ItemDataRole.DecorationRole and column == self.NAME:
            return type_icon(summary.type)
        if role == Qt.ItemDataRole.ForegroundRole and summary.deleted:
            return QColor(MUTED)
        if role == Qt.ItemDataRole.FontRole and summary.deleted and column == self.NAME:
            font = QFont()
            font.setItalic(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column == self.TRANSACTIONS:
            return RIGHT
        if role == Role.ID:
            return summary.id
        if role == Role.BADGES:
            return summary.badges
        if role == Role.NAME:
            return summary.name or ""
        if role == Role.RAW and column == self.TRANSACTIONS:
            return summary.transactions
        return None


class CoValueFilterModel(QSortFilterProxyModel):
    """Shows the rows that carry ``badge`` (None: any) and match ``search`` (a
    case-insensitive substring of the id or the name; empty: any)."""

    def __init__(self, source: CoValueListModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setSourceModel(source)
        self._badge: Badge | None = None
        self._search = ""

    @property
    def badge(self) -> Badge | None:
        return self._badge

    def set_badge(self, badge: Badge | None) -> None:
        if badge != self._badge:
            self.beginFilterChange()
            self._badge = badge
            self.endFilterChange()

    def set_search(self, text: str) -> None:
        text = text.strip().lower()
        if text != self._search:
            self.beginFilterChange()
            self._search = text
            self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        index = model.index(source_row, 0, source_parent)
        if self._badge is not None and self._badge not in (model.data(index, Role.BADGES) or ()):
            return False
        if self._search:
            haystack = f"{model.data(index, Role.ID) or ''}\n{model.data(index, Role.NAME) or ''}".lower()
            return self._search in haystack
        return True
