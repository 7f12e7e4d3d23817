"""The sync events view: what the sync layer reported — forks detected or suspected,
corrections sent, applied or rejected, content rejected — newest first, with time, CoValue,
session and peer. Fork rows are highlighted.

Emits ``covalueActivated(str)`` (CoValue id) and ``eventActivated(str, str)`` (CoValue id,
session id or '') when a row is clicked or activated; the main window then shows that CoValue
in the navigator and its session chains, scrolled to the lane of the event's session.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from inspector.models.events import EVENT_LABELS, SyncEventsModel
from inspector.models.roles import Role
from inspector.views.content import make_table

__all__ = ["EventsView"]


class EventsView(QWidget):
    covalueActivated = Signal(str)
    eventActivated = Signal(str, str)

    def __init__(self, events: SyncEventsModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.events = events
        heading = QLabel("Sync events")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.summary = QLabel()
        self.summary.setObjectName("eventsSummary")
        self.summary.setWordWrap(True)
        self.table = make_table(
            events,
            SyncEventsModel.DETAIL,
            {
                SyncEventsModel.TIME: 100,
                SyncEventsModel.KIND: 140,
                SyncEventsModel.COVALUE: 200,
                SyncEventsModel.SESSION: 170,
                SyncEventsModel.PEER: 180,
            },
            "eventsTable",
        )
        self.table.clicked.connect(self._activated)
        self.table.activated.connect(self._activated)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        for signal in (events.modelReset, events.rowsInserted, events.rowsRemoved):
            signal.connect(self._update_text)
        self._update_text()

    def _update_text(self) -> None:
        counts = self.events.counts()
        if not counts:
            self.summary.setText("No sync events yet. Forks and corrections show here as the sync layer meets them.")
            return
        parts = [f"{n} {EVENT_LABELS.get(kind, kind)}" for kind, n in sorted(counts.items())]
        self.summary.setText(" · ".join(parts) + " — click a row to show its CoValue")

    def _activated(self, index: QModelIndex) -> None:
        covalue = index.data(Role.ID) if index.isValid() else None
        if covalue:
            timed = self.events.entry(index.row())
            self.covalueActivated.emit(str(covalue))
            self.eventActivated.emit(str(covalue), (timed.event.session or "") if timed is not None else "")
