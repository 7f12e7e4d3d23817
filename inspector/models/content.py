"""Content with provenance, and the tombstones of the target.

:class:`ContentModel` adapts a :class:`~engine.diagnostics.covalue_summary.ContentSnapshot`
(a CoValue's content as the target computed it): a row per content key (a CoMap key, or a
group member) with the value and where it came from — the winning session, its transaction
index and madeAt. Deleted keys stay as rows, marked deleted. It keeps only the sorted key
list; values are read from the snapshot's entries on demand.

:class:`TombstonesModel` lists the deleted CoValues of the target with the delete session,
who deleted and when.

Both emit ``modelReset`` for a new CoValue/target, ``rowsInserted`` (one per run of new keys)
and ``dataChanged`` after a live change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QModelIndex, QObject, Qt
from PySide6.QtGui import QColor, QFont

from engine.content.comap import Entry
from engine.diagnostics.covalue_summary import ContentSnapshot, TombstoneInfo
from engine.ids import CoValueID
from inspector.models.batch import runs
from inspector.models.roles import Role
from inspector.models.table import Index, TableModel
from inspector.style import MUTED, format_ms, format_value, short_id, short_session
from inspector.targets.base import Target

__all__ = ["ContentModel", "TombstonesModel"]

DELETED_TEXT = "— deleted —"


class ContentModel(TableModel):
    KEY, VALUE, SESSION, TX, MADE_AT = range(5)
    HEADERS = ("Key", "Value", "Winning session", "Tx", "madeAt")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.snapshot: ContentSnapshot | None = None
        self._keys: list[str] = []  # row order cache

    def set_content(self, snapshot: ContentSnapshot | None) -> None:
        """Show ``snapshot`` (None: nothing)."""
        self.beginResetModel()
        self.snapshot = snapshot
        self._keys = sorted(snapshot.entries) if snapshot is not None else []
        self.endResetModel()

    @property
    def covalue(self) -> CoValueID | None:
        return self.snapshot.covalue if self.snapshot is not None else None

    @property
    def _entries(self) -> Mapping[str, Entry]:
        return self.snapshot.entries if self.snapshot is not None else {}

    def heading(self) -> str:
        """One line about the CoValue shown: name, type and key counts, or its tombstone."""
        snap = self.snapshot
        if snap is None:
            return "Select a CoValue to see its content"
        name = snap.name or "(unnamed)"
        if snap.deleted:
            tomb = snap.tombstone
            if tomb is None:
                return f"{name} — deleted; its content was purged"
            return (
                f"{name} — deleted by {short_id(tomb.by, 12, 4)} at {format_ms(tomb.at)} "
                f"in {short_session(tomb.session)}; its content was purged"
            )
        deleted = sum(1 for e in snap.entries.values() if e.deleted)
        what = "members" if snap.type == "group" else "keys"
        return f"{name} · {snap.type} · {len(self._keys)} {what}" + (f" ({deleted} deleted)" if deleted else "")

    def update_content(self, snapshot: ContentSnapshot | None) -> None:
        """The same CoValue, changed: insert new keys in runs and repaint the rest; reset
        when keys disappeared or another CoValue is given."""
        old = self.snapshot
        if (
            snapshot is None
            or old is None
            or snapshot.covalue != old.covalue
            or not set(self._keys) <= set(snapshot.entries)
        ):
            self.set_content(snapshot)
            return
        self.snapshot = snapshot
        keys = sorted(snapshot.entries)
        new = sorted(set(keys) - set(self._keys))
        positions = {k: i for i, k in enumerate(keys)}
        for first, last in runs(positions[k] for k in new):
            self.beginInsertRows(QModelIndex(), first, last)
            self._keys[first:first] = keys[first : last + 1]
            self.endInsertRows()
        self.all_changed()

    def entry(self, row: int) -> tuple[str, Entry] | None:
        if not 0 <= row < len(self._keys):
            return None
        key = self._keys[row]
        entry = self._entries.get(key)
        return None if entry is None else (key, entry)

    def row_of(self, key: str) -> int:
        try:
            return self._keys.index(key)
        except ValueError:
            return -1

    def row_count(self) -> int:
        return len(self._keys)

    def header(self, section: int) -> str:
        group = self.snapshot is not None and self.snapshot.type == "group"
        if group and section in (self.KEY, self.VALUE):
            return "Member" if section == self.KEY else "Role"
        return super().header(section)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        item = self.entry(index.row()) if index.isValid() else None
        if item is None:
            return None
        key, entry = item
        column = index.column()
        from_header = entry.index < 0
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.KEY:
                return key
            if column == self.VALUE:
                return DELETED_TEXT if entry.deleted else format_value(entry.value)
            if column == self.SESSION:
                return "(header: initial admin)" if from_header else short_session(entry.session)
            if column == self.TX:
                return "" if from_header else str(entry.index)
            if column == self.MADE_AT:
                return "" if from_header else format_ms(entry.made_at)
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == self.VALUE and not entry.deleted:
                return format_value(entry.value, limit=2000)
            if column == self.SESSION and not from_header:
                return entry.session
            if column == self.MADE_AT and not from_header:
                return f"{entry.made_at} ms"
            return key if column == self.KEY else None
        if role == Qt.ItemDataRole.ForegroundRole and (entry.deleted or column in (self.SESSION, self.TX)):
            return QColor(MUTED)
        if role == Qt.ItemDataRole.FontRole and entry.deleted and column == self.VALUE:
            font = QFont()
            font.setItalic(True)
            return font
        if role == Role.KEY:
            return key
        if role == Role.RAW:
            return {self.VALUE: entry.value, self.TX: entry.index, self.MADE_AT: entry.made_at}.get(column)
        return None


class TombstonesModel(TableModel):
    COVALUE, SESSION, BY, AT, STATE = range(5)
    HEADERS = ("CoValue", "Delete session", "Deleted by", "At", "Marker")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self._rows: list[tuple[CoValueID, int]] = []  # (covalue, marker number): a cache

    def set_target(self, target: Target | None) -> None:
        self.beginResetModel()
        self._target = target
        self._rows = self._scan()
        self.endResetModel()

    def _scan(self) -> list[tuple[CoValueID, int]]:
        if self._target is None:
            return []
        rows = []
        for cid in self._target.ids():
            summary = self._target.summary(cid)
            if summary is not None:
                rows += [(cid, n) for n in range(len(summary.tombstones))]
        return rows

    def refresh(self) -> None:
        rows = self._scan()
        if rows != self._rows:
            self.set_target(self._target)
        else:
            self.all_changed()

    def tombstone(self, row: int) -> TombstoneInfo | None:
        if self._target is None or not 0 <= row < len(self._rows):
            return None
        cid, n = self._rows[row]
        summary = self._target.summary(cid)
        return summary.tombstones[n] if summary is not None and n < len(summary.tombstones) else None

    def row_count(self) -> int:
        return len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        tomb = self.tombstone(index.row()) if index.isValid() else None
        if tomb is None or self._target is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.COVALUE:
                summary = self._target.summary(tomb.covalue)
                name = summary.name if summary is not None and summary.name else "(unnamed)"
                return f"{name}  {short_id(tomb.covalue)}"
            if column == self.SESSION:
                return short_session(tomb.session)
            if column == self.BY:
                return short_id(tomb.by, 12, 4)
            if column == self.AT:
                return format_ms(tomb.at)
            if column == self.STATE:
                return "valid" if tomb.valid else f"ignored: {tomb.problem}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return {self.COVALUE: tomb.covalue, self.SESSION: tomb.session, self.BY: tomb.by}.get(column)
        if role == Qt.ItemDataRole.ForegroundRole and not tomb.valid:
            return QColor(MUTED)
        if role == Role.ID:
            return tomb.covalue
        return None
