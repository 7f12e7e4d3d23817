"""The main window: navigator on the left; chains, content, tombstones, CAS slots, peers and
sync events in tabs; a banner for targets that failed to open (red) or opened with a warning
such as version skew (amber); target, node, counts and loop lag in the status bar. Clicking a
sync event shows its CoValue in the navigator and its session chains.

Emits ``closing`` from :meth:`closeEvent` and nothing else happens there: the application's
main coroutine waits for it and shuts the engine down (closing the last window must not stop
the loop under a running coroutine).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.diagnostics.covalue_summary import Badge
from engine.ids import CoValueID
from inspector.controller import Inspector
from inspector.style import BADGE_LABELS, BADGE_ORDER
from inspector.targets.base import TargetSpec
from inspector.views.chain import ChainView
from inspector.views.connect import ConnectDialog
from inspector.views.content import ContentView, TombstonesView
from inspector.views.events import EventsView
from inspector.views.kv import CasView
from inspector.views.navigator import NavigatorView
from inspector.views.peers import PeersView

__all__ = ["MainWindow"]

#: Lag samples between two status bar updates.
LAG_DISPLAY_EVERY = 25
BANNER_STYLES = {
    "error": "QFrame#errorBanner { background: #fdecea; border: 1px solid #c0392b; }",
    "warning": "QFrame#errorBanner { background: #fff4d6; border: 1px solid #d9822b; }",
}


class MainWindow(QMainWindow):
    closing = Signal()

    def __init__(self, inspector: Inspector, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inspector = inspector
        self.setObjectName("mainWindow")
        self.setWindowTitle("Kintsugi inspector")
        self.connect_dialog: ConnectDialog | None = None
        self._lag_samples: list[float] = []

        self.navigator = NavigatorView(inspector.navigator, inspector.kv_tree)
        self.chain = ChainView(inspector.lanes)
        self.content = ContentView(inspector.content)
        self.tombstones = TombstonesView(inspector.tombstones)
        self.cas = CasView(inspector.cas_slots, inspector.cas_timeline)
        self.peers = PeersView(inspector.peers, inspector.peer_log)
        self.sync_events = EventsView(inspector.sync_events)
        self.tabs = QTabWidget()
        self.tabs.setObjectName("tabs")
        self.tabs.addTab(self.chain, "Session chains")
        self.tabs.addTab(self.content, "Content")
        self.tabs.addTab(self.tombstones, "Tombstones")
        self.tabs.addTab(self.cas, "CAS slots")
        self.tabs.addTab(self.peers, "Peers")
        self.tabs.addTab(self.sync_events, "Sync events")

        self.banner = QFrame()
        self.banner.setObjectName("errorBanner")
        self.banner.setStyleSheet(BANNER_STYLES["error"])
        self.banner_text = QLabel()
        self.banner_text.setObjectName("errorText")
        self.banner_text.setWordWrap(True)
        self.banner_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        dismiss = QToolButton()
        dismiss.setText("✕")
        dismiss.setToolTip("Dismiss")
        dismiss.clicked.connect(self.banner.hide)
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.addWidget(self.banner_text, 1)
        banner_layout.addWidget(dismiss)
        self.banner.hide()

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self.navigator)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([420, 980])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)

        self.target_label = QLabel("no target")
        self.target_label.setObjectName("targetLabel")
        self.node_label = QLabel()
        self.node_label.setObjectName("nodeLabel")
        self.stats_label = QLabel()
        self.stats_label.setObjectName("statsLabel")
        self.lag_label = QLabel()
        self.lag_label.setObjectName("lagLabel")
        self.statusBar().addWidget(self.target_label)
        self.statusBar().addWidget(self.node_label)
        self.statusBar().addWidget(self.stats_label, 1)
        self.statusBar().addPermanentWidget(self.lag_label)

        toolbar = self.addToolBar("Target")
        toolbar.setObjectName("targetToolbar")
        toolbar.setMovable(False)
        self.connect_action = QAction("Connect…", self)
        self.connect_action.setShortcut(QKeySequence.StandardKey.Open)
        self.connect_action.triggered.connect(self.show_connect_dialog)
        toolbar.addAction(self.connect_action)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)

        self.navigator.covalueSelected.connect(inspector.select_covalue)
        self.navigator.slotSelected.connect(self._slot_from_navigator)
        self.cas.slotSelected.connect(inspector.select_slot)
        self.sync_events.covalueActivated.connect(self.show_covalue)
        inspector.opened.connect(self._opened)
        inspector.failed.connect(self.show_error)
        inspector.warned.connect(self.show_warning)
        inspector.loaded.connect(self._show_stats)
        inspector.selected.connect(self._selected)
        inspector.changesApplied.connect(self._changes_applied)

    # -- reactions -----------------------------------------------------------------------

    def _opened(self, label: str) -> None:
        self.banner.hide()
        self.setWindowTitle(f"Kintsugi inspector — {label}")
        self.target_label.setText(f"target: {label}")
        target = self.inspector.target
        info = target.node_info if target is not None else None
        if info is None:
            self.node_label.clear()
        else:
            who = "" if info.admin else " · not an admin: only what this account may read"
            skew = " ⚠ version skew" if info.skewed else ""
            self.node_label.setText(f"node {info.name} · Kintsugi {info.version}{skew} · protocol {info.proto}{who}")
        self.stats_label.setText("verifying…")
        self.chain.set_heading("Select a CoValue to see its session chains")

    def show_error(self, code: str, message: str) -> None:
        self._banner("error", f"<b>Could not open the target</b> ({code}): {message}")

    def show_warning(self, code: str, message: str) -> None:
        self._banner("warning", f"<b>Warning</b> ({code}): {message}")

    def _banner(self, kind: str, html: str) -> None:
        self.banner.setStyleSheet(BANNER_STYLES[kind])
        self.banner.setProperty("kind", kind)
        self.banner_text.setText(html)
        self.banner.show()

    def _show_stats(self, stats: dict[str, int]) -> None:
        self.stats_label.setText(
            f"CoValues: {stats['covalues']} · conflict sessions: {stats['conflict_sessions']} · "
            f"deleted: {stats['deleted']} · corrupt sessions: {stats['corrupt']} · forked: {stats.get('forked', 0)}"
        )

    def _changes_applied(self, _count: int) -> None:
        target = self.inspector.target
        if target is not None and self.inspector.is_loaded:
            self._show_stats(target.stats())
        self._selected(self.inspector.selected_covalue or "")

    def _selected(self, covalue: str) -> None:
        target = self.inspector.target
        summary = target.summary(CoValueID(covalue)) if target is not None and covalue else None
        if summary is None:
            self.chain.set_heading("Select a CoValue to see its session chains")
            return
        badges = ", ".join(BADGE_LABELS[b] for b in BADGE_ORDER if b in summary.badges)
        sessions = len(summary.sessions)
        self.chain.set_heading(
            f"{summary.name or '(unnamed)'} · {summary.type} · {sessions} session{'' if sessions == 1 else 's'} · "
            f"{summary.transactions:,} transactions" + (f" · {badges}" if badges else "")
        )

    def show_covalue(self, covalue: str) -> bool:
        """Select ``covalue`` in the navigator (clearing a filter that hides it) and show its
        session chains; False when the target has no such CoValue."""
        if not self.navigator.select_covalue(covalue):
            self.navigator.set_badge_filter(None)
            self.navigator.search.clear()
            if not self.navigator.select_covalue(covalue):
                return False
        self.tabs.setCurrentWidget(self.chain)
        return True

    def _slot_from_navigator(self, namespace: str, key: str) -> None:
        self.tabs.setCurrentWidget(self.cas)
        self.cas.select(namespace, key)
        self.inspector.select_slot(namespace, key)

    def on_lag_sample(self, lag: float) -> None:
        """Called by the loop-lag monitor after each sample."""
        self._lag_samples.append(lag)
        if len(self._lag_samples) >= LAG_DISPLAY_EVERY:
            recent = max(self._lag_samples) * 1000
            self._lag_samples.clear()
            worst = self.inspector.monitor.max_lag * 1000 if self.inspector.monitor is not None else recent
            self.lag_label.setText(f"loop lag {recent:.0f} ms (max {worst:.0f} ms)")

    # -- actions -------------------------------------------------------------------------

    def show_connect_dialog(self) -> ConnectDialog:
        target = self.inspector.target
        dialog = ConnectDialog(self.inspector.recent, target.spec if target is not None else None, self)
        dialog.chosen.connect(self._connect_chosen)
        dialog.finished.connect(dialog.deleteLater)
        self.connect_dialog = dialog
        dialog.open()
        return dialog

    def _connect_chosen(self, spec: TargetSpec) -> None:
        self.inspector.open_later(spec)

    def select_first(self, badge: Badge) -> bool:
        """Select the first CoValue with ``badge`` in the navigator (for screenshots)."""
        covalue = self.inspector.first_with(badge)
        return covalue is not None and self.navigator.select_covalue(covalue)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Only report it: the main coroutine shuts the engine down and returns.
        self.closing.emit()
        event.accept()
