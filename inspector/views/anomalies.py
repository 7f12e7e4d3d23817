"""The anomalies view ("expert info"): what is wrong with the target, worst first, with the
counts per severity above. Read-only.

Emits ``anomalyActivated(object)`` with the :class:`~engine.diagnostics.anomalies.Anomaly`
of a row clicked or activated; the main window then goes to the entry it concerns (the
CoValue and its session chains, the peer, or the CAS slot).
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from inspector.models.anomalies import AnomaliesModel
from inspector.models.roles import Role
from inspector.views.content import make_table

__all__ = ["AnomaliesView", "counts_text"]


def counts_text(counts: dict[str, int]) -> str:
    """``2 critical · 1 high`` (severities with none left out); ``none`` when empty."""
    parts = [f"{n} {severity}" for severity, n in counts.items() if n]
    return " · ".join(parts) if parts else "none"


class AnomaliesView(QWidget):
    anomalyActivated = Signal(object)

    def __init__(self, anomalies: AnomaliesModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.anomalies = anomalies
        heading = QLabel("Anomalies")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.summary = QLabel()
        self.summary.setObjectName("anomaliesSummary")
        self.summary.setWordWrap(True)
        self.table = make_table(
            anomalies,
            AnomaliesModel.EXPLANATION,
            {AnomaliesModel.SEVERITY: 80, AnomaliesModel.KIND: 170, AnomaliesModel.SUBJECT: 320},
            "anomaliesTable",
        )
        self.table.clicked.connect(self._activated)
        self.table.activated.connect(self._activated)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        anomalies.modelReset.connect(self._update_text)
        self._update_text()

    def _update_text(self) -> None:
        if not self.anomalies.row_count():
            self.summary.setText("No anomalies: nothing the rules look for is wrong here.")
            return
        self.summary.setText(f"{counts_text(self.anomalies.counts())} — click a row to go to what it concerns")

    def _activated(self, index: QModelIndex) -> None:
        anomaly = index.data(Role.RAW) if index.isValid() else None
        if anomaly is not None:
            self.anomalyActivated.emit(anomaly)
