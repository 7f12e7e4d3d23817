"""Recent sync events of the target (forks detected, corrections sent, applied or rejected,
content rejected), newest first, each linking to its CoValue.

:class:`SyncEventsModel` adapts the target's :class:`~inspector.targets.events.SyncEventRecorder`:
rows are a cache of its recent events, re-read on :meth:`refresh` (after the ``events``
throttle fires). It emits ``rowsInserted`` at the top for new events, ``rowsRemoved`` at the
bottom for events the recorder no longer keeps, ``modelReset`` for a new target. Fork rows are
highlighted; ``Role.ID`` of any cell is the event's CoValue id.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor, QFont

from inspector.models.batch import Index, NewestFirstModel
from inspector.models.roles import Role
from inspector.style import FORK_BACKGROUND, format_ms_short, short_id, short_session
from inspector.targets.base import Target
from inspector.targets.events import TimedEvent

__all__ = ["EVENT_LABELS", "SyncEventsModel"]

EVENT_LABELS = {
    "fork_detected": "fork detected",
    "fork_suspected": "fork suspected",
    "correction_sent": "correction sent",
    "correction_applied": "correction applied",
    "correction_rejected": "correction rejected",
    "rejected": "content rejected",
}


class SyncEventsModel(NewestFirstModel):
    TIME, KIND, COVALUE, SESSION, PEER, DETAIL = range(6)
    HEADERS = ("Time", "Event", "CoValue", "Session", "Peer", "Detail")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None

    def set_target(self, target: Target | None) -> None:
        self._target = target
        self.reset()

    def read(self) -> list[TimedEvent]:
        return self._target.recorder.recent() if self._target is not None else []

    def counts(self) -> dict[str, int]:
        """Kept events per kind."""
        out: dict[str, int] = {}
        for timed in self._rows:
            out[timed.event.kind] = out.get(timed.event.kind, 0) + 1
        return out

    def row_of(self, covalue: str, kind: str | None = None) -> int:
        """The newest row about ``covalue`` (of ``kind``, if given), or -1."""
        for row, timed in enumerate(self._rows):
            if timed.event.covalue == covalue and (kind is None or timed.event.kind == kind):
                return row
        return -1

    def _covalue_text(self, timed: TimedEvent) -> str:
        cid = timed.event.covalue
        summary = self._target.summary(cid) if self._target is not None else None
        name = summary.name if summary is not None and summary.name else "(unnamed)"
        return f"{name}  {short_id(cid)}"

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        timed: TimedEvent | None = self.entry(index.row()) if index.isValid() else None
        if timed is None:
            return None
        event = timed.event
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return {
                self.TIME: format_ms_short(timed.at_ms),
                self.KIND: EVENT_LABELS.get(event.kind, event.kind),
                self.COVALUE: self._covalue_text(timed),
                self.SESSION: short_session(event.session) if event.session else "",
                self.PEER: event.peer,
                self.DETAIL: event.detail,
            }.get(column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return {
                self.COVALUE: f"{event.covalue}\nclick to show it in the navigator",
                self.SESSION: event.session,
                self.DETAIL: event.detail,
            }.get(column)
        if role == Qt.ItemDataRole.BackgroundRole and timed.is_fork:
            return QColor(FORK_BACKGROUND)
        if role == Qt.ItemDataRole.FontRole and timed.is_fork and column == self.KIND:
            font = QFont()
            font.setBold(True)
            return font
        if role == Role.ID:
            return event.covalue
        if role == Role.RAW:
            return {self.TIME: timed.at_ms, self.KIND: event.kind}.get(column)
        return None
