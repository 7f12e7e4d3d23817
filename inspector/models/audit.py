"""The audit log of the open target (DESIGN §10) as a table, and whether it verifies.

:class:`AuditModel` lists the records of the target's store, oldest first: seq, time, action,
target, actor and details. :meth:`AuditModel.refresh` reads them again and checks them as
``kintsugi audit verify`` does (:func:`engine.cli.audit.check_store`: the chain, every
receipt, every recover record's receipt); :attr:`AuditModel.ok` and
:attr:`AuditModel.problems` say how it went and :attr:`AuditModel.failing` which record
broke the chain first (its row is painted red). A target without a store of its own (a
remote node, a bundle) has no log here: :attr:`AuditModel.available` is False and
:attr:`AuditModel.note` says why.

Emits ``modelReset`` after each refresh, and ``verified(bool)`` with the outcome.
"""

from __future__ import annotations

import json
import re
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor

from engine.cli.audit import check_store
from engine.errors import KintsugiError
from engine.model.audit import AuditRecord
from engine.storage import Store
from inspector.models.table import RIGHT, Index, TableModel
from inspector.style import format_ms, short_id
from inspector.targets.base import Target
from inspector.targets.node import NodeTarget
from inspector.targets.store import StoreTarget

__all__ = ["FAILING_BACKGROUND", "AuditModel", "audit_store"]

#: Background of the record where the chain first fails.
FAILING_BACKGROUND = "#f5c6c0"
NO_LOG_NOTE = "This target keeps no audit log here: open its store, or the embedded demo."
_RECORD = re.compile(r"^record (\d+):")


def audit_store(target: Target | None) -> Store | None:
    """The store whose audit log ``target`` shows (None: it has none here)."""
    if isinstance(target, StoreTarget):
        return target.store
    if isinstance(target, NodeTarget) and target.node is not None:
        return target.node.store
    return None


def _details(details: Any) -> str:
    if not isinstance(details, dict):
        return ""
    return ", ".join(f"{k}: {json.dumps(v, sort_keys=True, default=str)}" for k, v in sorted(details.items()))


class AuditModel(TableModel):
    HEADERS = ("Seq", "Time", "Action", "Target", "Actor", "Details")
    HEADER_HELP = (
        "Position in the log (from 1, no gaps)",
        "When the action was taken (UTC)",
        "connect, elevate, recover or export",
        "What the action was taken on",
        "The operator's account, whose key signed the record",
        "Peer, plan hash, receipt, counts",
    )
    SEQ, TIME, ACTION, TARGET, ACTOR, DETAILS = range(6)

    verified = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.target: Target | None = None
        self._rows: list[dict[str, Any]] = []
        self.ok = True
        self.problems: list[str] = []
        #: seq of the record where the chain first fails (None: the chain holds)
        self.failing: int | None = None
        self.head: str | None = None

    @property
    def available(self) -> bool:
        return audit_store(self.target) is not None

    @property
    def note(self) -> str:
        return "" if self.available else NO_LOG_NOTE

    def set_target(self, target: Target | None) -> None:
        self.target = target
        self.refresh()

    def refresh(self) -> None:
        """Read and verify the log again."""
        store = audit_store(self.target)
        self.beginResetModel()
        self._rows, self.problems, self.failing, self.head, self.ok = [], [], None, None, True
        if store is not None:
            records = store.audit_log()
            self._rows = [self._row(r) for r in records]
            report = check_store(store)
            self.ok, self.problems, self.head = bool(report["ok"]), list(report["problems"]), report["head"]
            for problem in self.problems:
                match = _RECORD.match(problem)
                if match:
                    self.failing = int(match.group(1))
                    break
        self.endResetModel()
        self.verified.emit(self.ok)

    @staticmethod
    def _row(record: AuditRecord) -> dict[str, Any]:
        try:
            return record.to_json()
        except KintsugiError as exc:
            return {"seq": None, "error": exc.detail, "hash": record.hash.hex()}

    def row_count(self) -> int:
        return len(self._rows)

    def record(self, row: int) -> dict[str, Any]:
        return self._rows[row]

    def actions(self) -> list[str]:
        return [str(r.get("action", "?")) for r in self._rows]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if "error" in row:
                return {self.SEQ: "?", self.DETAILS: f"unreadable record: {row['error']}"}.get(column, "")
            values = {
                self.SEQ: str(row["seq"]),
                self.TIME: format_ms(row["at"]),
                self.ACTION: row["action"],
                self.TARGET: row["target"],
                self.ACTOR: short_id(str(row["actor"])),
                self.DETAILS: _details(row["details"]),
            }
            return values.get(column)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == self.ACTOR:
                return row.get("actor")
            if column == self.DETAILS:
                return _details(row.get("details"))
            return f"hash {row.get('hash', '')}"
        if role == Qt.ItemDataRole.BackgroundRole:
            failing = self.failing is not None and (row.get("seq") == self.failing or "error" in row)
            return QColor(FAILING_BACKGROUND) if failing else None
        if role == Qt.ItemDataRole.TextAlignmentRole and column == self.SEQ:
            return RIGHT
        return None
