"""Helpers for batched model updates: one begin/end pair per run of rows, not per row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QModelIndex, QObject

# Index lives with the table base; it stays importable from here for the views that use it.
from inspector.models.table import Index, TableModel

__all__ = ["Index", "NewestFirstModel", "runs"]


def runs(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Rows as sorted, inclusive ``(first, last)`` runs of consecutive numbers."""
    out: list[tuple[int, int]] = []
    for row in sorted(set(rows)):
        if out and row == out[-1][1] + 1:
            out[-1] = (out[-1][0], row)
        else:
            out.append((row, row))
    return out


class NewestFirstModel(TableModel):
    """A table over a log the engine keeps oldest first and bounded (old entries drop off):
    shown newest first, and :meth:`refresh` turns what changed into one ``rowsRemoved`` run
    (entries that dropped off the end) and one ``rowsInserted`` run (new entries at the top),
    or a ``modelReset`` when the log changed some other way. Subclasses say how to read the
    log (:meth:`read`, oldest first); the rows are a cache of it."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Any] = []

    def read(self) -> list[Any]:
        """The log now, oldest first."""
        raise NotImplementedError

    def reset(self) -> None:
        self.beginResetModel()
        self._rows = list(reversed(self.read()))
        self.endResetModel()

    def refresh(self) -> None:
        rows = list(reversed(self.read()))
        old = self._rows
        if rows == old:
            return
        # how many entries are new (above the newest one shown); -1: not a plain prepend
        fresh = len(rows) if not old else rows.index(old[0]) if old[0] in rows else -1
        kept = len(rows) - fresh
        if fresh < 0 or rows[fresh:] != old[:kept]:
            self.beginResetModel()
            self._rows = rows
            self.endResetModel()
            return
        if kept < len(old):
            self.beginRemoveRows(QModelIndex(), kept, len(old) - 1)
            del self._rows[kept:]
            self.endRemoveRows()
        if fresh:
            self.beginInsertRows(QModelIndex(), 0, fresh - 1)
            self._rows[0:0] = rows[:fresh]
            self.endInsertRows()

    def entry(self, row: int) -> Any:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_count(self) -> int:
        return len(self._rows)
