"""The base of the flat table models: headers, column count and row count said once.

A :class:`TableModel` subclass names its columns in ``HEADERS`` (and, if it explains them,
``HEADER_HELP``), says how many rows it has in :meth:`TableModel.row_count`, and implements
``data``; rows and columns exist only at the top level. The base stores nothing, so the
models stay adapters over engine objects.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

__all__ = ["RIGHT", "Index", "TableModel"]

#: What Qt passes as a model index.
Index = QModelIndex | QPersistentModelIndex

#: ``TextAlignmentRole`` of a numeric cell.
RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)


class TableModel(QAbstractTableModel):
    """A flat table with ``len(HEADERS)`` columns and :meth:`row_count` rows.

    Horizontal headers show :meth:`header` (``HEADERS[section]`` unless overridden) and, as
    their tooltip, ``HEADER_HELP[section]`` (no tooltip past its end); vertical headers and
    sections out of range have no data. Emits nothing of its own: subclasses emit the
    signals of their changes, :meth:`all_changed` for a change to every cell.
    """

    HEADERS: tuple[str, ...] = ()
    #: per-column header tooltips, in column order; may be shorter than HEADERS
    HEADER_HELP: tuple[str, ...] = ()

    def row_count(self) -> int:
        """Rows at the top level."""
        raise NotImplementedError

    def header(self, section: int) -> str:
        """The text of column ``section``'s header."""
        return self.HEADERS[section]

    def all_changed(self) -> None:
        """Emit one ``dataChanged`` over every cell; nothing when there are no rows."""
        rows = self.row_count()
        if rows:
            self.dataChanged.emit(self.index(0, 0), self.index(rows - 1, len(self.HEADERS) - 1))

    # -- Qt model API --------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else self.row_count()

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.HEADERS):
            return None
        if role == _DISPLAY:
            return self.header(section)
        if role == _TOOLTIP and section < len(self.HEADER_HELP):
            return self.HEADER_HELP[section]
        return None
