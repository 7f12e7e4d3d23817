"""The Recover dialog (DESIGN §7.2, §11): REPLACE a scope of the open target from one chosen
peer, after a computed plan and an explicit elevation, ending with the signed receipt.

The steps, one page each:

1. **Choose**: the peer (one the target brings along, such as the embedded demo's origin
   node, or another node's ``ws://`` URL with the operator's key file) and the scope: this
   session, this CoValue, or this CoValue's group (the group and every CoValue it owns).
2. **Plan**: the scope is fetched off the loop (a progress bar counts the pages; Cancel stops
   it and nothing changes) and planned; the plan shows as four tables — sessions replaced,
   transactions dropped, signed transactions at risk, and where those are preserved (a
   conflict session, or the receipt's archive).
3. **Elevate**: Recover… asks for confirmation naming the target, the peer and the plan's
   counts (the inspector opens everything read-only: a store is reopened for writing with
   the operator's key). From here on Cancel is disabled: the apply is one transaction.
4. **Receipt**: the signed receipt (plan hash, before and after heads, archive).

Emits ``recovered(str)`` (the store written) once a recovery is applied. The work is a
:class:`~inspector.models.recover.RecoveryJob` spawned on the inspector; closing the dialog
before the apply step cancels it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QStackedWidget,
    QTabBar,
    QVBoxLayout,
    QWidget,
)

from engine.errors import KintsugiError
from engine.ids import CoValueID, SessionID
from inspector.models.recover import (
    PeerChoice,
    PlanCategory,
    PlanTableModel,
    RecoveryJob,
    ScopeKind,
    load_key,
    suggested_peers,
)
from inspector.style import adapt_views, short_id, short_session
from inspector.targets.base import describe_error
from inspector.views.content import make_table

if TYPE_CHECKING:
    from inspector.controller import Inspector

__all__ = ["OTHER_PEER", "RecoverDialog"]


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


#: The peer chooser's last entry: a node typed in.
OTHER_PEER = "Another node…"
CHOOSE, PLAN, RECEIPT = range(3)


class RecoverDialog(QDialog):
    recovered = Signal(str)

    def __init__(
        self, inspector: Inspector, covalue: str, session: str | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("recoverDialog")
        self.inspector = inspector
        self.target = inspector.target
        assert self.target is not None
        self.covalue = CoValueID(covalue)
        self.session = SessionID(session) if session else None
        self.job: RecoveryJob | None = None
        self.elevation: QMessageBox | None = None
        summary = self.target.summary(self.covalue)
        self.name = (summary.name if summary is not None else None) or short_id(covalue)
        self.setWindowTitle(f"Recover {self.name}")
        self.resize(900, 560)

        self.pages = QStackedWidget()
        self.pages.addWidget(self._choose_page())
        self.pages.addWidget(self._plan_page())
        self.pages.addWidget(self._receipt_page())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("recoverCancel")
        self.cancel_button.clicked.connect(self.reject)
        self.recover_button = QPushButton("Recover…")
        self.recover_button.setObjectName("recoverApply")
        self.recover_button.setEnabled(False)
        self.recover_button.clicked.connect(self.confirm)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.recover_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.pages, 1)
        layout.addLayout(buttons)
        adapt_views(self)  # its own window: readable on a dark palette too

    # -- pages -------------------------------------------------------------------------------

    def _choose_page(self) -> QWidget:
        page = QWidget()
        assert self.target is not None
        intro = QLabel(
            f"Replace <b>{self.name}</b> on <b>{self.target.label}</b> with the copy one chosen peer holds. "
            "Nothing changes until you have seen the plan and confirmed it."
        )
        intro.setWordWrap(True)
        self.peer_choice = QComboBox()
        self.peer_choice.setObjectName("peerChoice")
        self.peers: list[PeerChoice] = suggested_peers(self.target)
        for peer in self.peers:
            self.peer_choice.addItem(peer.label)
        self.peer_choice.addItem(OTHER_PEER)
        self.peer_url = QLineEdit()
        self.peer_url.setObjectName("peerUrl")
        self.peer_url.setPlaceholderText("ws://host:port")
        self.key_file = QLineEdit()
        self.key_file.setObjectName("keyFile")
        self.key_file.setPlaceholderText("the operator's account key file")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_key)
        key_row = QHBoxLayout()
        key_row.addWidget(self.key_file, 1)
        key_row.addWidget(browse)
        peer_box = QGroupBox("Peer to recover from")
        form = QFormLayout(peer_box)
        form.addRow("Peer", self.peer_choice)
        form.addRow("URL", self.peer_url)
        form.addRow("Key", key_row)
        self.peer_choice.currentIndexChanged.connect(self._peer_chosen)
        self._peer_chosen(0)

        scope_box = QGroupBox("Scope")
        scope_layout = QVBoxLayout(scope_box)
        session_text = short_session(self.session) if self.session else "none chosen: use a lane's context menu"
        self.scope_session = QRadioButton(f"This session ({session_text})")
        self.scope_covalue = QRadioButton(f"This CoValue ({self.name})")
        self.scope_group = QRadioButton("This group (the CoValue's group and every CoValue it owns)")
        self.scope_buttons = QButtonGroup(self)
        for button, kind in (
            (self.scope_session, ScopeKind.SESSION),
            (self.scope_covalue, ScopeKind.COVALUE),
            (self.scope_group, ScopeKind.GROUP),
        ):
            button.setProperty("scope", str(kind))
            self.scope_buttons.addButton(button)
            scope_layout.addWidget(button)
        self.scope_session.setEnabled(self.session is not None)
        (self.scope_session if self.session is not None else self.scope_covalue).setChecked(True)

        self.plan_button = QPushButton("Compute plan")
        self.plan_button.setObjectName("computePlan")
        self.plan_button.setDefault(True)
        self.plan_button.clicked.connect(self.compute_plan)
        self.choose_error = QLabel()
        self.choose_error.setObjectName("chooseError")
        self.choose_error.setStyleSheet("color: #c0392b;")
        self.choose_error.setWordWrap(True)
        layout = QVBoxLayout(page)
        layout.addWidget(intro)
        layout.addWidget(peer_box)
        layout.addWidget(scope_box)
        layout.addWidget(self.choose_error)
        layout.addStretch(1)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.plan_button)
        layout.addLayout(row)
        return page

    def _plan_page(self) -> QWidget:
        page = QWidget()
        self.status = QLabel()
        self.status.setObjectName("recoverStatus")
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setObjectName("recoverProgress")
        self.progress.setRange(0, 0)
        self.progress.setFormat("%v page(s)")
        self.summary = QLabel()
        self.summary.setObjectName("planSummary")
        self.summary.setWordWrap(True)
        # One table under a tab bar, its model switched by the tab: a quarter of the widgets
        # to lay out and polish when the page first shows (four tables took ~50 ms).
        self.plan_tabs = QTabBar()
        self.plan_tabs.setObjectName("planTabs")
        self.tables: dict[PlanCategory, PlanTableModel] = {}
        for category in PlanCategory:
            model = PlanTableModel(category, self)
            model.names = self._name_of
            self.tables[category] = model
            self.plan_tabs.addTab(category.capitalize())
        self.plan_table = make_table(
            self.tables[PlanCategory.REPLACED],
            PlanTableModel.DETAIL,
            {PlanTableModel.COVALUE: 170, PlanTableModel.SESSION: 150, PlanTableModel.ACTION: 80},
            "planTable",
        )
        self.plan_tabs.currentChanged.connect(self._category_chosen)
        layout = QVBoxLayout(page)
        layout.addWidget(self.status)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary)
        layout.addWidget(self.plan_tabs)
        layout.addWidget(self.plan_table, 1)
        return page

    def _category_chosen(self, index: int) -> None:
        self.plan_table.setModel(self.tables[list(PlanCategory)[index]])

    def shown_category(self) -> PlanCategory:
        """The plan table the dialog shows."""
        return list(PlanCategory)[self.plan_tabs.currentIndex()]

    def _receipt_page(self) -> QWidget:
        page = QWidget()
        self.receipt_heading = QLabel()
        self.receipt_heading.setObjectName("receiptHeading")
        self.receipt_heading.setWordWrap(True)
        self.receipt_text = QPlainTextEdit()
        self.receipt_text.setObjectName("receiptText")
        self.receipt_text.setReadOnly(True)
        layout = QVBoxLayout(page)
        layout.addWidget(self.receipt_heading)
        layout.addWidget(self.receipt_text, 1)
        return page

    # -- choosing ----------------------------------------------------------------------------

    def _peer_chosen(self, index: int) -> None:
        other = index >= len(self.peers)
        if not other:
            self.peer_url.setText(self.peers[index].url)
            self.key_file.setText(self.peers[index].key_file)
        self.peer_url.setReadOnly(not other)

    def _browse_key(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, "Operator's key file", "", "Key files (*.key);;All files (*)")
        if path:
            self.key_file.setText(path)

    def _name_of(self, covalue: CoValueID) -> str | None:
        summary = self.target.summary(covalue) if self.target is not None else None
        return summary.name if summary is not None else None

    def scope_kind(self) -> ScopeKind:
        button = self.scope_buttons.checkedButton()
        return ScopeKind(str(button.property("scope"))) if button is not None else ScopeKind.COVALUE

    def compute_plan(self) -> RecoveryJob | None:
        """Start fetching and planning (None when the peer or key is not usable: the page
        says why)."""
        url = self.peer_url.text().strip()
        if not url.startswith(("ws://", "wss://")):
            self.choose_error.setText("The peer is a node's ws:// or wss:// URL.")
            return None
        try:
            key = load_key(self.key_file.text().strip())
        except KintsugiError as exc:
            self.choose_error.setText(describe_error(exc)[1])
            return None
        except OSError as exc:
            self.choose_error.setText(describe_error(exc)[1])
            return None
        assert self.target is not None
        job = RecoveryJob(self.target, url, key, self.scope_kind(), self.covalue, session=self.session, parent=self)
        job.progressed.connect(self._progressed)
        job.planned.connect(self._planned)
        job.applied.connect(self._applied)
        job.failed.connect(self._failed)
        self.job = job
        self.status.setText(f"Fetching the {job.kind} from {url}…")
        self.pages.setCurrentIndex(PLAN)
        self.inspector.spawn(job.compute_plan(), "recover-plan")
        return job

    # -- job events --------------------------------------------------------------------------

    def _progressed(self, pages: int, transactions: int) -> None:
        self.progress.setRange(0, 0)
        self.status.setText(f"Fetching: page {pages}, {transactions:,} transactions verified…")

    def _planned(self) -> None:
        job = self.job
        assert job is not None and job.recovery is not None
        plan = job.recovery.plan
        self.progress.setRange(0, max(job.pages, 1))
        self.progress.setValue(max(job.pages, 1))
        for i, (category, model) in enumerate(self.tables.items()):
            model.set_plan(plan)
            self.plan_tabs.setTabText(i, f"{category.capitalize()} ({model.row_count()})")
        counts = plan.summary()
        self.summary.setText(self.counts_text(counts))
        if plan.changes:
            self.status.setText(f"The plan from {job.url} ({_n(job.pages, 'page')}). Recover… applies it.")
            first = next((c for c in PlanCategory if self.tables[c].row_count()), PlanCategory.REPLACED)
            self.plan_tabs.setCurrentIndex(list(PlanCategory).index(first))
        else:
            self.status.setText(f"Nothing to recover: this replica already holds what {job.url} holds.")
        self.recover_button.setEnabled(plan.changes)

    @staticmethod
    def counts_text(counts: dict[str, int]) -> str:
        """The plan's counts in words (as the elevation and the receipt page say them)."""
        changed = counts["covalues"]
        return (
            f"{_n(changed, 'CoValue')} change{'s' if changed == 1 else ''} · "
            f"{_n(counts['replaced'], 'session')} replaced · {_n(counts['dropped'], 'transaction')} dropped "
            f"({counts['unverifiable']} unverifiable) · {counts['at_risk']} at risk · "
            f"{counts['preserved']} preserved as conflict sessions · {counts['archived']} archived in the receipt"
        )

    def _failed(self, code: str, message: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(f"<b>Recovery failed</b> ({code}): {message}. Nothing was changed.")
        self.recover_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Close")

    def _applied(self) -> None:
        job = self.job
        assert job is not None and job.receipt is not None and job.recovery is not None
        self.receipt_heading.setText(
            f"<b>Recovered</b> {self.name} on {job.location} from {job.url}: "
            f"{self.counts_text(job.recovery.plan.summary())}. The receipt below is signed by the operator "
            "and stored with the audit record."
        )
        self.receipt_text.setPlainText(json.dumps(job.receipt.to_json(), indent=2, sort_keys=True))
        self.pages.setCurrentIndex(RECEIPT)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Close")
        self.recover_button.setEnabled(False)
        self.recovered.emit(job.location)

    # -- elevation and apply -------------------------------------------------------------------

    def elevation_text(self) -> str:
        job = self.job
        assert job is not None and job.recovery is not None
        reopen = (
            "The store is reopened for writing with the operator's key."
            if not job.live
            else "The node is changed in place, as its sync does."
        )
        return (
            f"<p>Replace part of <b>{job.location}</b> with what <b>{job.url}</b> holds?</p>"
            f"<p>{self.counts_text(job.recovery.plan.summary())}.</p><p>{reopen} The elevation and the recovery are "
            "recorded in its audit log; the receipt keeps a copy of every signed transaction removed.</p>"
        )

    def confirm(self) -> QMessageBox | None:
        """Ask for the elevation (window-modal, returns at once); Yes applies."""
        job = self.job
        if job is None or job.state != "planned":
            return None
        box = QMessageBox(self)
        box.setObjectName("elevation")
        box.setWindowTitle("Elevate and recover")
        box.setIcon(QMessageBox.Icon.Warning)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(self.elevation_text())
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        yes = box.button(QMessageBox.StandardButton.Yes)
        yes.setText("Recover")
        box.buttonClicked.connect(lambda button: self._apply() if button is yes else None)
        box.finished.connect(box.deleteLater)
        self.elevation = box
        box.open()
        return box

    def _apply(self) -> None:
        job = self.job
        if job is None or job.state != "planned":
            return
        self.recover_button.setEnabled(False)
        self.cancel_button.setEnabled(False)  # the apply is one transaction: no stopping it
        self.status.setText("Applying…")
        self.inspector.spawn(job.apply(), "recover-apply")

    def reject(self) -> None:
        job = self.job
        if job is not None and job.state == "applying":
            return  # the apply finishes first
        if job is not None:
            job.cancel()
        super().reject()
