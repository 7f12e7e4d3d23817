"""The main window: navigator on the left; chains, content, tombstones, CAS slots, peers,
sync events, anomalies, the peers × sessions matrix, the audit log and the cluster in tabs; a banner for
targets that failed to open (red) or opened with a warning such as version skew (amber);
target, node, counts and loop lag in the status bar. Clicking a sync event shows its CoValue
in the navigator and its session chains.

The window title is the open target's label, said once: the platform adds the application's
display name after it. The menu bar:

- File: Connect… (Ctrl+O, the connect dialog), Open store… (Ctrl+Shift+O, a file dialog;
  the chosen file opens as ``kintsugi-inspector PATH`` would), Open bundle… (a diagnostic
  bundle, offline), Export bundle… (Ctrl+E: a bundle of the open target, with a progress
  dialog that can cancel; disabled with no target or a bundle open), Address book… (names
  for accounts, :mod:`inspector.views.addressbook`), Quit (Ctrl+Q).
- View: one entry per tab (Ctrl+1, Ctrl+2, …, Ctrl+0 for the tenth: the Cluster), Search CoValues (Ctrl+F focuses the
  navigator's search), Reload (F5: re-reads a target that is not live, i.e. a store; a live
  target updates by itself, so there it is disabled and its tooltip says why).
- Actions: Recover… (also on the toolbar, a CoValue's context menu in the navigator and a
  session lane's: :class:`~inspector.views.recover.RecoverDialog` for the selected CoValue;
  its tooltip says why when the target cannot be recovered from here) and Compare… (pick two
  targets; :class:`~inspector.views.compare_pick.CompareLauncher` opens the compare view, also
  from a session lane's context menu). After a recovery the audit log is read again and a
  store (not live) is reloaded.
- Help: About (versions of Kintsugi, the protocol, Qt, PySide6 and Python; the data folder
  and the settings file).

The status bar always says what the operator is looking at (live, reconnecting, lost since
when, a snapshot and when it was taken, progress while connecting), with a banner over the
views when they are stale or a snapshot: :class:`~inspector.views.status.TargetStatus`.

The window's layout (geometry, splitters, tab order and current tab, column widths) is
restored from the settings of the recent-targets list when the window is first shown and
saved when it closes (:class:`~inspector.recent.WindowLayout`; the tabs can be dragged).

Emits ``closing`` from :meth:`closeEvent` and nothing else happens there besides saving the
layout: the application's main coroutine waits for it and shuts the engine down (closing the
last window must not stop the loop under a running coroutine).
"""

from __future__ import annotations

import html
import platform
from collections.abc import Callable

import platformdirs
import PySide6
from PySide6.QtCore import Qt, Signal, qVersion
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine import __version__
from engine.diagnostics.analysis import close_stores
from engine.diagnostics.anomalies import Anomaly
from engine.diagnostics.covalue_summary import Badge
from engine.ids import CoValueID
from engine.protocol.limits import PROTOCOL_VERSION
from inspector.controller import Inspector
from inspector.models.recover import recover_block
from inspector.recent import WindowLayout, default_settings
from inspector.style import BADGE_LABELS, BADGE_ORDER, adapt_views, banner_style
from inspector.targets.base import TargetSpec
from inspector.views.addressbook import AddressBookDialog
from inspector.views.anomalies import AnomaliesView, counts_text
from inspector.views.audit import AuditView
from inspector.views.chain import ChainView
from inspector.views.cluster import ClusterView
from inspector.views.compare_pick import CompareLauncher
from inspector.views.connect import ConnectDialog
from inspector.views.content import ContentView, TombstonesView
from inspector.views.events import EventsView
from inspector.views.export import ExportDialog
from inspector.views.files import FileActions
from inspector.views.kv import CasView
from inspector.views.matrix import MatrixView
from inspector.views.navigator import NameDelegate, NavigatorView
from inspector.views.peers import PeersView
from inspector.views.recover import RecoverDialog
from inspector.views.status import TargetStatus

__all__ = ["MainWindow"]

#: Lag samples between two status bar updates.
LAG_DISPLAY_EVERY = 25
#: The window title while no target is open (the application's display name, so the
#: platform does not repeat it).
BASE_TITLE = "Kintsugi inspector"
#: Tabs reachable with Ctrl+1 … Ctrl+9 and Ctrl+0, in the keyboard's order (the View menu
#: lists any others without a shortcut).
MAX_TAB_SHORTCUTS = 10
#: Recover…'s tooltip when the target can be recovered, and what it says with none selected.
RECOVER_TIP = "Replace the selected CoValue, its group or a session with a chosen peer's copy, after a plan"
RECOVER_SELECT_FIRST = "Select a CoValue first: Recover… works on the selected one"
#: Reload's tooltip when it can reload, when the target is live, and with no target.
RELOAD_TIP = "Re-read the store from disk"
RELOAD_LIVE_TIP = "A live target updates by itself: there is nothing to reload"
RELOAD_NO_TARGET_TIP = "Open a store first: Reload re-reads it from disk"


def banner_sheet(widget: QWidget, kind: str) -> str:
    """The error banner's style for ``kind`` (``error``, ``warning``), from the palette."""
    background, border = banner_style(widget.palette(), kind)
    return f"QFrame#errorBanner {{ background: {background.name()}; border: 1px solid {border.name()}; }}"


class MainWindow(FileActions, QMainWindow):
    closing = Signal()

    def __init__(self, inspector: Inspector, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.inspector = inspector
        self.setObjectName("mainWindow")
        self.setWindowTitle(BASE_TITLE)
        self.connect_dialog: ConnectDialog | None = None
        self.store_dialog: QFileDialog | None = None
        self.about_dialog: QMessageBox | None = None
        self._lag_samples: list[float] = []
        self._layout_restored = False

        self.navigator = NavigatorView(inspector.navigator, inspector.kv_tree)
        self.chain = ChainView(inspector.lanes)
        self.content = ContentView(inspector.content)
        self.tombstones = TombstonesView(inspector.tombstones)
        self.cas = CasView(inspector.cas_slots, inspector.cas_timeline)
        self.peers = PeersView(inspector.peers, inspector.peer_log)
        self.sync_events = EventsView(inspector.sync_events)
        self.anomalies = AnomaliesView(inspector.anomalies)
        self.matrix = MatrixView(inspector.matrix)
        self.audit = AuditView(inspector.audit)
        self.cluster = ClusterView(inspector.cluster)
        self.recover_dialog: RecoverDialog | None = None
        self.bundle_dialog: QFileDialog | None = None
        self.export_file_dialog: QFileDialog | None = None
        self.export_dialog: ExportDialog | None = None
        self.tabs = QTabWidget()
        self.tabs.setObjectName("tabs")
        self.tabs.setMovable(True)
        self.tabs.addTab(self.chain, "Session chains")
        self.tabs.addTab(self.content, "Content")
        self.tabs.addTab(self.tombstones, "Tombstones")
        self.tabs.addTab(self.cas, "CAS slots")
        self.tabs.addTab(self.peers, "Peers")
        self.tabs.addTab(self.sync_events, "Sync events")
        self.tabs.addTab(self.anomalies, "Anomalies")
        self.tabs.addTab(self.matrix, "Peers × sessions")
        self.tabs.addTab(self.audit, "Audit log")
        self.tabs.addTab(self.cluster, "Cluster")

        self.banner = QFrame()
        self.banner.setObjectName("errorBanner")
        self.banner.setStyleSheet(banner_sheet(self, "error"))
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

        self.status = TargetStatus(inspector, self.tabs, self)
        self.status.reloadRequested.connect(self.reload)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setObjectName("mainSplitter")
        splitter.addWidget(self.navigator)
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([420, 980])
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.banner)
        layout.addWidget(self.status.banner)
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
        self.anomalies_label = QLabel()
        self.anomalies_label.setObjectName("anomaliesLabel")
        self.statusBar().addWidget(self.target_label)
        self.statusBar().addWidget(self.node_label)
        self.statusBar().addWidget(self.stats_label, 1)
        self.statusBar().addPermanentWidget(self.status.progress)
        self.statusBar().addPermanentWidget(self.status.label)
        self.statusBar().addPermanentWidget(self.anomalies_label)
        self.statusBar().addPermanentWidget(self.lag_label)

        toolbar = self.addToolBar("Target")
        toolbar.setObjectName("targetToolbar")
        toolbar.setMovable(False)
        self.connect_action = QAction("Connect…", self)
        self.connect_action.setShortcut(QKeySequence.StandardKey.Open)
        self.connect_action.triggered.connect(self.show_connect_dialog)
        toolbar.addAction(self.connect_action)
        self._build_menus()
        toolbar.addAction(self.recover_action)
        self.comparer = CompareLauncher(self)

        self.navigator.covalueSelected.connect(inspector.select_covalue)
        self.navigator.slotSelected.connect(self._slot_from_navigator)
        self.navigator.recoverRequested.connect(self.show_recover_dialog)
        self.chain.recoverRequested.connect(self.show_recover_dialog)
        inspector.opened.connect(self._update_recover)
        self.cas.slotSelected.connect(inspector.select_slot)
        self.sync_events.eventActivated.connect(self.show_event)
        self.anomalies.anomalyActivated.connect(self.show_anomaly)
        self.cluster.switchRequested.connect(self.switch_node)
        inspector.anomalies.modelReset.connect(self._show_anomaly_counts)
        inspector.opened.connect(self._update_export)
        inspector.opened.connect(self._opened)
        inspector.opened.connect(self._update_reload)
        inspector.failed.connect(self.show_error)
        inspector.warned.connect(self.show_warning)
        inspector.loaded.connect(self._show_stats)
        inspector.selected.connect(self._selected)
        inspector.changesApplied.connect(self._changes_applied)
        adapt_views(self)  # a dark palette: the models' row colours made readable on it
        self.address_book_dialog: AddressBookDialog | None = None
        self.chain.set_account_names(inspector.addressbook.name)
        inspector.addressbook.on_change.append(lambda: self.chain.set_account_names(inspector.addressbook.name))
        if inspector.addressbook_error:
            self.show_warning("invalid_address_book", f"{inspector.addressbook_error}; starting with an empty one")

    def _build_menus(self) -> None:
        """The menu bar (see the module docstring); its actions are attributes of the window."""
        bar = self.menuBar()
        file_menu = self._menu(bar.addMenu("&File"), "fileMenu")
        file_menu.addAction(self.connect_action)
        self.open_store_action = self._action(file_menu, "Open store…", "Ctrl+Shift+O", self.choose_store)
        file_menu.addSeparator()
        self.open_bundle_action = self._action(file_menu, "Open bundle…", "", self.choose_bundle)
        self.export_bundle_action = self._action(file_menu, "Export bundle…", "Ctrl+E", self.choose_export)
        self._update_export()
        file_menu.addSeparator()
        self.address_book_action = self._action(file_menu, "Address book…", "", self.show_address_book)
        self.address_book_action.setToolTip("Name the accounts you know: the names show in the session lanes")
        file_menu.addSeparator()
        self.quit_action = self._action(file_menu, "Quit", "Ctrl+Q", self.close)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)

        view_menu = self._menu(bar.addMenu("&View"), "viewMenu")
        self.tab_actions: list[QAction] = []
        group = QActionGroup(self)
        for index in range(self.tabs.count()):
            shortcut = f"Ctrl+{(index + 1) % 10}" if index < MAX_TAB_SHORTCUTS else ""
            action = self._action(view_menu, self.tabs.tabText(index), shortcut)
            action.setCheckable(True)
            action.setActionGroup(group)
            # by widget, not index: the tabs can be dragged into another order
            page = self.tabs.widget(index)
            action.triggered.connect(lambda _checked=False, w=page: self.tabs.setCurrentWidget(w))
            action.setData(index)
            self.tab_actions.append(action)
        self.tabs.currentChanged.connect(self._tab_changed)
        self._tab_changed(self.tabs.currentIndex())
        view_menu.addSeparator()
        self.search_action = self._action(view_menu, "Search CoValues", "Ctrl+F", self.focus_search)
        self.reload_action = self._action(view_menu, "Reload", "F5", self.reload)
        self._update_reload()

        actions_menu = self._menu(bar.addMenu("&Actions"), "actionsMenu")
        self.recover_action = self._action(actions_menu, "Recover…", "", self.recover_selected)
        self._update_recover()
        self.compare_action = self._action(actions_menu, "Compare…")

        help_menu = self._menu(bar.addMenu("&Help"), "helpMenu")
        self.about_action = self._action(help_menu, "About Kintsugi inspector", "", self.show_about)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)

    @staticmethod
    def _menu(menu: QMenu, name: str) -> QMenu:
        menu.setObjectName(name)
        menu.setToolTipsVisible(True)  # the tooltips say why an entry is disabled
        return menu

    def _action(
        self,
        menu: QMenu,
        text: str,
        shortcut: str = "",
        slot: Callable[[], object] | None = None,
        *,
        pending: str = "",
    ) -> QAction:
        """An entry of ``menu`` with a portable ``shortcut`` (``Ctrl`` is Command on macOS):
        ``slot`` runs when it is triggered; ``pending`` makes it a disabled entry whose
        tooltip says what it waits for."""
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        if slot is not None:
            action.triggered.connect(slot)
        if pending:
            action.setEnabled(False)
            action.setToolTip(pending)
        menu.addAction(action)
        return action

    # -- reactions -----------------------------------------------------------------------

    def _tab_changed(self, index: int) -> None:
        text = self.tabs.tabText(index)
        for action in self.tab_actions:
            if action.text() == text:
                action.setChecked(True)

    def _update_reload(self) -> None:
        target = self.inspector.target
        can = target is not None and not target.live
        self.reload_action.setEnabled(can)
        if target is None:
            self.reload_action.setToolTip(RELOAD_NO_TARGET_TIP)
        else:
            self.reload_action.setToolTip(RELOAD_TIP if can else RELOAD_LIVE_TIP)

    def _opened(self, label: str) -> None:
        self.banner.hide()
        self.setWindowTitle(label)
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

    def _update_recover(self) -> None:
        self.recover_action.setToolTip(recover_block(self.inspector.target) or RECOVER_TIP)

    def recover_selected(self) -> RecoverDialog | None:
        """Recover… from the menu or toolbar: the dialog for the selected CoValue."""
        return self.show_recover_dialog(self.inspector.selected_covalue or "")

    def show_recover_dialog(self, covalue: str, session: str = "") -> RecoverDialog | None:
        """The Recover dialog for ``covalue`` (and ``session``), window-modal, returning at
        once; None, with the reason in the status bar, when the target cannot be recovered
        from here or nothing is selected."""
        why = recover_block(self.inspector.target) or ("" if covalue else RECOVER_SELECT_FIRST)
        if why:
            self.statusBar().showMessage(why, 10_000)
            return None
        dialog = RecoverDialog(self.inspector, covalue, session or None, self)
        dialog.recovered.connect(self._recovered)
        dialog.finished.connect(dialog.deleteLater)
        self.recover_dialog = dialog
        dialog.open()
        return dialog

    def _recovered(self, location: str) -> None:
        self.statusBar().showMessage(f"recovered {location}: the receipt and audit record are in its store", 10_000)
        self.inspector.audit.refresh()
        target = self.inspector.target
        if target is not None and not target.live:  # a live target follows by itself
            self.inspector.spawn(self._reread(target.spec), "reread")

    async def _reread(self, spec: TargetSpec) -> None:
        """Open ``spec`` again after it was written, with the worker's loaded CoValues
        forgotten: a recovery can rewrite a session in place of one with the same head."""
        await self.inspector.pool.run(close_stores, location=spec.location)
        await self.inspector.open(spec)

    def show_error(self, code: str, message: str) -> None:
        self._banner("error", f"<b>Could not open the target</b> ({code}): {message}")

    def show_warning(self, code: str, message: str) -> None:
        self._banner("warning", f"<b>Warning</b> ({code}): {message}")

    def _banner(self, kind: str, html: str) -> None:
        self.banner.setStyleSheet(banner_sheet(self, kind))
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
        name = summary.name or "(unnamed)"
        if summary.name and summary.name in self.navigator.names.shared():  # told apart by its id
            name = f"{name} · …{covalue[-NameDelegate.SUFFIX :]}"
        self.chain.set_heading(
            f"{name} · {summary.type} · {sessions} session{'' if sessions == 1 else 's'} · "
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

    def show_event(self, covalue: str, session: str) -> bool:
        """A sync event was clicked: show its CoValue's chains, scrolled to the lane of
        ``session`` (framed; '' none) once it is built."""
        if not self.show_covalue(covalue):
            return False
        self.chain.highlight_session(session)
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
        current = target.spec if target is not None and target.spec.kind != "bundle" else None
        dialog = ConnectDialog(self.inspector.recent, current, self)
        dialog.chosen.connect(self._connect_chosen)
        dialog.finished.connect(dialog.deleteLater)
        self.connect_dialog = dialog
        dialog.open()
        return dialog

    def _connect_chosen(self, spec: TargetSpec) -> None:
        self.inspector.open_later(spec)

    def switch_node(self, url: str) -> None:
        """Connect to the node at ``url`` (from the cluster view) with the key of the node open
        now: the inspector moves to another node of the same cluster."""
        target = self.inspector.target
        key_file = target.spec.key_file if target is not None and target.spec.kind == "node" else ""
        self.inspector.open_later(TargetSpec("node", url, key_file))

    def _show_anomaly_counts(self) -> None:
        counts = self.inspector.anomalies.counts()
        self.anomalies_label.setText(f"anomalies: {counts_text(counts)}")
        self.anomalies_label.setToolTip("View → Anomalies lists them, worst first")

    def show_anomaly(self, anomaly: Anomaly) -> bool:
        """Go to what ``anomaly`` concerns: its CoValue and session chains, its CAS slot, or
        its peer. False when there is nothing to go to."""
        if anomaly.covalue is not None:
            return self.show_covalue(anomaly.covalue)
        if anomaly.namespace is not None and anomaly.key is not None:
            self._slot_from_navigator(anomaly.namespace, anomaly.key)
            return True
        if anomaly.peer is not None:
            self.tabs.setCurrentWidget(self.peers)
            row = self.inspector.peers.row_of(anomaly.peer)
            if row >= 0:
                self.peers.table.selectRow(row)
            return True
        return False

    def reload(self) -> None:
        """Open the current target again, when it is not live (a store re-read from disk),
        with the worker's loaded CoValues forgotten."""
        target = self.inspector.target
        if target is not None and not target.live and self.inspector.opening is None:
            self.inspector.spawn(self._reread(target.spec), "open")

    def focus_search(self) -> None:
        """Put the keyboard focus in the navigator's search field, its text selected."""
        search = self.navigator.search
        search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        search.selectAll()

    def about_text(self) -> str:
        """The About box's text (HTML): versions and where the inspector keeps its files."""
        recent = self.inspector.recent
        settings = recent.settings if recent is not None else default_settings()
        rows = (
            ("Kintsugi", __version__),
            ("Protocol", str(PROTOCOL_VERSION)),
            ("Qt", qVersion()),
            ("PySide6", PySide6.__version__),
            ("Python", platform.python_version()),
            ("Data folder", str(platformdirs.user_data_path("kintsugi", appauthor=False))),
            ("Settings", settings.fileName()),
            ("Address book", str(self.inspector.addressbook.path or "not saved (no settings file)")),
        )
        table = "".join(f"<tr><td><b>{name}</b></td><td>{html.escape(value)}</td></tr>" for name, value in rows)
        return (
            "<p><b>Kintsugi inspector</b>: see, compare and repair the replicas of a "
            f"Kintsugi sync engine.</p><table cellspacing='4'>{table}</table>"
        )

    def show_address_book(self) -> AddressBookDialog:
        """File → Address book… (window-modal, returns at once), offering the owners of the
        selected CoValue's sessions."""
        target, covalue = self.inspector.target, self.inspector.selected_covalue
        summary = target.summary(covalue) if target is not None and covalue is not None else None
        shown = [str(s.account) for s in summary.sessions] if summary is not None else []
        dialog = AddressBookDialog(self.inspector.addressbook, shown, self)
        dialog.finished.connect(dialog.deleteLater)
        self.address_book_dialog = dialog
        dialog.open()
        return dialog

    def show_about(self) -> QMessageBox:
        """Show the About box (window-modal, returns at once)."""
        box = QMessageBox(self)
        box.setObjectName("aboutDialog")
        box.setWindowTitle("About Kintsugi inspector")
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setText(self.about_text())
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        icon = self.windowIcon()
        if not icon.isNull():
            box.setIconPixmap(icon.pixmap(64, 64))
        box.setStandardButtons(QMessageBox.StandardButton.Close)
        box.finished.connect(box.deleteLater)
        self.about_dialog = box
        box.open()
        return box

    def select_first(self, badge: Badge) -> bool:
        """Select the first CoValue with ``badge`` in the navigator (for screenshots)."""
        covalue = self.inspector.first_with(badge)
        return covalue is not None and self.navigator.select_covalue(covalue)

    def _layout(self) -> WindowLayout | None:
        recent = self.inspector.recent
        return WindowLayout(recent.settings) if recent is not None else None

    def showEvent(self, event: QShowEvent) -> None:
        # Restored on the first show, so it wins over a size the caller set before showing.
        super().showEvent(event)
        layout = self._layout()
        if not self._layout_restored and layout is not None:
            self._layout_restored = True
            layout.restore(self, self.tabs)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Save the layout and report it: the main coroutine shuts the engine down and returns.
        layout = self._layout()
        if layout is not None and self._layout_restored:
            layout.save(self, self.tabs)
        self.status.stop()
        self.closing.emit()
        event.accept()
