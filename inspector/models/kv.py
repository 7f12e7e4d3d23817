"""CAS slots: the navigator's namespace/key tree, the slot table and one key's timeline.

- :class:`KvTreeModel`: namespaces (AccountIDs) with their keys as children.
- :class:`CasSlotsModel`: every slot with generation and state; values are redacted
  (size and salted hash) unless :meth:`CasSlotsModel.set_show_values` turns them on.
- :class:`CasTimelineModel`: the selected key's CAS outcomes from the store's history,
  oldest first, the lost races (``conflict``) included and highlighted.

All three re-read the target on :meth:`refresh` (after the change throttle) and keep only
what they last read as a row cache. They emit ``modelReset`` when the set of rows changed
in a way that is not an append, ``rowsInserted`` for appended timeline records, and
``dataChanged`` otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont

from engine.diagnostics.kv_slots import Redactor, timeline_summary
from engine.errors import KintsugiError
from engine.kv.detail import SlotRow
from engine.kv.store import CASRecord
from inspector.models.roles import Role
from inspector.models.table import RIGHT, Index, TableModel
from inspector.style import LOST_BACKGROUND, MUTED, format_ms, format_value, short_id
from inspector.targets.base import Target

__all__ = ["CasSlotsModel", "CasTimelineModel", "KvTreeModel"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _guarded(read: Callable[[], T], fallback: T) -> T:
    """A KV read that may meet damaged rows (an envelope that does not decode): log it and
    show nothing rather than fail the whole window."""
    try:
        return read()
    except KintsugiError as exc:
        logger.warning("reading CAS slots failed: %s", exc)
        return fallback


class KvTreeModel(QAbstractItemModel):
    """Two levels: namespace rows (internal id 0) and key rows (internal id = 1 + the row
    of their namespace)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self._tree: list[tuple[str, list[SlotRow]]] = []

    def set_target(self, target: Target | None) -> None:
        self.beginResetModel()
        self._target = target
        self._tree = self._read()
        self.endResetModel()

    def _read(self) -> list[tuple[str, list[SlotRow]]]:
        if self._target is None:
            return []
        target = self._target
        return _guarded(lambda: [(ns, target.kv_slots(ns)) for ns in target.kv_namespaces()], [])

    def refresh(self) -> None:
        tree = self._read()
        shape = [(ns, [s.key for s in slots]) for ns, slots in tree]
        if shape != [(ns, [s.key for s in slots]) for ns, slots in self._tree]:
            self.beginResetModel()
            self._tree = tree
            self.endResetModel()
        elif tree != self._tree:
            self._tree = tree
            for row, (_ns, slots) in enumerate(tree):
                parent = self.index(row, 0)
                if slots:
                    self.dataChanged.emit(self.index(0, 0, parent), self.index(len(slots) - 1, 0, parent))

    def key_index(self, namespace: str, key: str) -> QModelIndex:
        for row, (ns, slots) in enumerate(self._tree):
            if ns == namespace:
                for child, slot in enumerate(slots):
                    if slot.key == key:
                        return self.index(child, 0, self.index(row, 0))
        return QModelIndex()

    def index(self, row: int, column: int, parent: Index = QModelIndex()) -> QModelIndex:  # noqa: B008
        if column != 0 or row < 0:
            return QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, 0, 0) if row < len(self._tree) else QModelIndex()
        if parent.internalId() == 0 and parent.row() < len(self._tree) and row < len(self._tree[parent.row()][1]):
            return self.createIndex(row, 0, parent.row() + 1)
        return QModelIndex()

    def parent(self, child: Index = QModelIndex()) -> QModelIndex:  # type: ignore[override] # noqa: B008
        if not child.isValid() or child.internalId() == 0:
            return QModelIndex()
        return self.createIndex(child.internalId() - 1, 0, 0)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        if not parent.isValid():
            return len(self._tree)
        if parent.internalId() == 0 and parent.column() == 0:
            return len(self._tree[parent.row()][1])
        return 0

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 1

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return "KV namespaces and keys"
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if index.internalId() == 0:
            namespace, slots = self._tree[index.row()]
            if role == Qt.ItemDataRole.DisplayRole:
                return f"{short_id(namespace, 12, 4)}  ({len(slots)})"
            if role == Qt.ItemDataRole.ToolTipRole:
                return f"namespace {namespace}"
            if role == Role.NAMESPACE:
                return namespace
            return None
        namespace, slots = self._tree[index.internalId() - 1]
        slot = slots[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{slot.key}  · gen {slot.generation}" + ("" if slot.present else "  · tombstone")
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{namespace}\n{slot.key}\ngeneration {slot.generation}, {slot.state}"
        if role == Qt.ItemDataRole.ForegroundRole and not slot.present:
            return QColor(MUTED)
        if role == Role.NAMESPACE:
            return namespace
        if role == Role.KEY:
            return slot.key
        return None


class CasSlotsModel(TableModel):
    """Every slot of the target. Emits ``showValuesChanged(bool)`` and ``dataChanged`` for
    the value column when redaction is toggled."""

    NAMESPACE, KEY, GENERATION, STATE, VALUE = range(5)
    HEADERS = ("Namespace", "Key", "Gen", "State", "Value")

    showValuesChanged = Signal(bool)

    def __init__(self, parent: QObject | None = None, *, redactor: Redactor | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self._rows: list[SlotRow] = []
        self._redact = redactor or Redactor()
        self.show_values = False

    def set_target(self, target: Target | None) -> None:
        self.beginResetModel()
        self._target = target
        self._rows = self._read()
        self.endResetModel()

    def _read(self) -> list[SlotRow]:
        if self._target is None:
            return []
        target = self._target
        return _guarded(lambda: [slot for ns in target.kv_namespaces() for slot in target.kv_slots(ns)], [])

    def refresh(self) -> None:
        rows = self._read()
        if [(r.namespace, r.key) for r in rows] != [(r.namespace, r.key) for r in self._rows]:
            self.beginResetModel()
            self._rows = rows
            self.endResetModel()
        elif rows != self._rows:
            self._rows = rows
            self.all_changed()

    def set_show_values(self, show: bool) -> None:
        if show == self.show_values:
            return
        self.show_values = show
        if self._rows:
            self.dataChanged.emit(self.index(0, self.VALUE), self.index(len(self._rows) - 1, self.VALUE))
        self.showValuesChanged.emit(show)

    def slot(self, row: int) -> SlotRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, namespace: str, key: str) -> int:
        return next((i for i, r in enumerate(self._rows) if (r.namespace, r.key) == (namespace, key)), -1)

    def row_count(self) -> int:
        return len(self._rows)

    def value_text(self, slot: SlotRow) -> str:
        if self._target is not None and not self._target.kv_values:
            return "(values stay on the node)" if slot.present else "tombstone"
        if not slot.present:
            return f"tombstone: by {short_id(str(slot.deleted_by), 12, 4)} at {format_ms(slot.deleted_at)}"
        return format_value(slot.value) if self.show_values else self._redact(slot.value)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        slot = self.slot(index.row()) if index.isValid() else None
        if slot is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return {
                self.NAMESPACE: short_id(slot.namespace, 12, 4),
                self.KEY: slot.key,
                self.GENERATION: str(slot.generation),
                self.STATE: slot.state,
                self.VALUE: self.value_text(slot),
            }.get(column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == self.NAMESPACE:
                return slot.namespace
            if column == self.VALUE and slot.present and self.show_values:
                return format_value(slot.value, limit=2000)
            return None
        hidden = column == self.VALUE and not self.show_values
        if role == Qt.ItemDataRole.ForegroundRole and (hidden or not slot.present):
            return QColor(MUTED)
        if role == Qt.ItemDataRole.TextAlignmentRole and column == self.GENERATION:
            return RIGHT
        if role == Role.NAMESPACE:
            return slot.namespace
        if role == Role.KEY:
            return slot.key
        if role == Role.RAW:
            return {self.VALUE: slot.value, self.GENERATION: slot.generation}.get(column)
        return None


class CasTimelineModel(TableModel):
    """The CAS history of one key, oldest first."""

    TIME, EXPECTED, OUTCOME, GENERATION, WRITER = range(5)
    HEADERS = ("Time", "Expected gen", "Outcome", "Gen after", "Writer")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self.slot: tuple[str, str] | None = None
        self._records: list[CASRecord] = []

    def set_slot(self, target: Target | None, namespace: str | None, key: str | None) -> None:
        self.beginResetModel()
        self._target = target
        self.slot = (namespace, key) if namespace is not None and key is not None else None
        self._records = self._read()
        self.endResetModel()

    def _read(self) -> list[CASRecord]:
        if self._target is None or self.slot is None:
            return []
        target, slot = self._target, self.slot
        return _guarded(lambda: target.kv_history(*slot), [])

    def refresh(self) -> None:
        records = self._read()
        old = len(self._records)
        if records[:old] == self._records and len(records) > old:
            self.beginInsertRows(QModelIndex(), old, len(records) - 1)
            self._records = records
            self.endInsertRows()
        elif records != self._records:
            # The history keeps a bounded number of records per key, so old ones drop off.
            self.beginResetModel()
            self._records = records
            self.endResetModel()

    def counts(self) -> dict[str, int]:
        return timeline_summary(self._records)

    @property
    def available(self) -> bool:
        """False when the target does not have CAS histories (a node older than the
        ``kv_slot`` admin read keeps them)."""
        return self._target is None or self._target.kv_values

    def record(self, row: int) -> CASRecord | None:
        return self._records[row] if 0 <= row < len(self._records) else None

    def records(self) -> tuple[CASRecord, ...]:
        """The rows' records, oldest first (what the generation chart draws)."""
        return tuple(self._records)

    def row_count(self) -> int:
        return len(self._records)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        record = self.record(index.row()) if index.isValid() else None
        if record is None:
            return None
        column = index.column()
        lost = record.outcome == "conflict"
        if role == Qt.ItemDataRole.DisplayRole:
            return {
                self.TIME: format_ms(record.at_ms),
                self.EXPECTED: str(record.expected_gen),
                self.OUTCOME: "lost (conflict)" if lost else "stored",
                self.GENERATION: str(record.generation),
                self.WRITER: record.writer or "",
            }.get(column)
        if role == Qt.ItemDataRole.ToolTipRole and column == self.OUTCOME:
            if lost:
                return f"expected generation {record.expected_gen}, but the slot was at {record.generation}"
            return f"generation {record.expected_gen} → {record.generation}"
        if role == Qt.ItemDataRole.BackgroundRole and lost:
            return QColor(LOST_BACKGROUND)
        if role == Qt.ItemDataRole.FontRole and lost and column == self.OUTCOME:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (self.EXPECTED, self.GENERATION):
            return RIGHT
        if role == Role.RAW:
            return {
                self.TIME: record.at_ms,
                self.EXPECTED: record.expected_gen,
                self.OUTCOME: record.outcome,
                self.GENERATION: record.generation,
            }.get(column)
        return None
