"""The audit view: the target's log of operator actions (connect, elevate, recover, export)
and whether it verifies — a green line when every record's hash, link, seq and signature and
every receipt hold, a red one naming the first failure (its record painted red). Read-only;
Refresh reads the log again (the window also refreshes it after a recovery).
"""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from inspector.models.audit import AuditModel
from inspector.views.content import make_table

__all__ = ["OK_STYLE", "TAMPERED_STYLE", "AuditView"]

OK_STYLE = "color: #1e7b34; font-weight: bold;"
TAMPERED_STYLE = "color: #c0392b; font-weight: bold;"


class AuditView(QWidget):
    def __init__(self, audit: AuditModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.audit = audit
        heading = QLabel("Audit log")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.status = QLabel()
        self.status.setObjectName("auditStatus")
        self.status.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setObjectName("auditRefresh")
        self.refresh_button.clicked.connect(audit.refresh)
        self.table = make_table(
            audit,
            AuditModel.DETAILS,
            {
                AuditModel.SEQ: 50,
                AuditModel.TIME: 160,
                AuditModel.ACTION: 80,
                AuditModel.TARGET: 260,
                AuditModel.ACTOR: 150,
            },
            "auditTable",
        )
        top = QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.refresh_button)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        audit.modelReset.connect(self._update_status)
        self._update_status()

    def _update_status(self) -> None:
        audit = self.audit
        if not audit.available:
            self.status.setStyleSheet("")
            self.status.setText(audit.note)
            return
        count = audit.row_count()
        if audit.ok:
            self.status.setStyleSheet(OK_STYLE)
            head = f" · head {audit.head[:16]}…" if audit.head else ""
            self.status.setText(f"✓ verifies: {count} record{'' if count == 1 else 's'}{head}")
        else:
            self.status.setStyleSheet(TAMPERED_STYLE)
            where = f" at record {audit.failing}" if audit.failing is not None else ""
            self.status.setText(f"✗ does not verify{where}: " + "; ".join(audit.problems))
