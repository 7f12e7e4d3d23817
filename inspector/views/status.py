"""What the operator is looking at: the connection state in the status bar, a banner over the
views when they are stale or a snapshot, and the store watch.

:class:`TargetStatus` reads :meth:`Target.connection <inspector.targets.base.Target.connection>`
every :data:`TICK_MS` and shows, in its fixed-width ``connectionState`` label (a label that
changes width would re-lay out the window):

- while a target opens: ``connecting to …`` with what it is doing and a busy progress bar;
- ``live``; ``lost since HH:MM:SS · reconnecting (attempt N, next try in S s)`` when a node's
  connection dropped, with the banner saying the views show what the node sent until then
  (the ``stale`` property of the banner and of the tabs is set, so a style can tint them);
- ``snapshot taken at HH:MM:SS`` for a store opened read-only, with the banner's Reload
  button (as F5) and its *Watch for changes* box: watching re-reads the store when its file
  or write-ahead log changes (a :class:`QFileSystemWatcher`; throttled: at most one reload per
  :data:`WATCH_THROTTLE_MS`, and only when the files really changed since the snapshot);
- ``offline bundle`` for a diagnostic bundle.

Emits ``reloadRequested()`` when the banner's Reload is clicked or a watched store changed.
"""

from __future__ import annotations

import os
import time

from PySide6.QtCore import QFileSystemWatcher, QObject, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QCheckBox, QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from inspector.controller import Inspector
from inspector.style import banner_style
from inspector.targets.base import ConnectionState
from inspector.targets.store import StoreTarget

__all__ = ["TICK_MS", "WATCH_THROTTLE_MS", "TargetStatus", "connection_text"]

#: How often the state is read (ms): the reconnect countdown ticks at this pace.
TICK_MS = 250
#: A watched store is re-read at most this often (ms); changes in between are coalesced.
WATCH_THROTTLE_MS = 500
#: The label's width is that of this text, so it never changes (see the module docstring).
WIDTH_TEMPLATE = "lost since 00:00:00 · reconnecting (attempt 99, next try in 30 s)"


def clock(seconds: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(seconds)) if seconds is not None else "?"


def connection_text(state: ConnectionState) -> str:
    """The status bar's words for ``state``."""
    if state.kind == "reconnecting":
        if state.next_try is None:
            retry = "trying now"
        else:
            retry = f"next try in {max(0.0, state.next_try - time.monotonic()):.0f} s"
        return f"lost since {clock(state.lost_at)} · reconnecting (attempt {state.attempt}, {retry})"
    if state.kind == "snapshot":
        return f"snapshot taken at {clock(state.taken_at)}"
    if state.kind == "offline":
        return "offline bundle"
    return "live"


class TargetStatus(QObject):
    reloadRequested = Signal()

    def __init__(self, inspector: Inspector, tabs: QWidget, parent: QWidget) -> None:
        super().__init__(parent)
        self.inspector = inspector
        self.tabs = tabs
        self.label = QLabel("no target")
        self.label.setObjectName("connectionState")
        self.label.setFixedWidth(self.label.fontMetrics().horizontalAdvance(WIDTH_TEMPLATE) + 8)
        self.progress = QProgressBar()
        self.progress.setObjectName("connectProgress")
        self.progress.setRange(0, 0)  # busy: opening has no known length
        self.progress.setFixedWidth(120)
        self.progress.hide()

        self.banner = QFrame()
        self.banner.setObjectName("stateBanner")
        self.banner_text = QLabel()
        self.banner_text.setObjectName("stateBannerText")
        self.banner_text.setWordWrap(True)
        self.reload_button = QPushButton("Reload (F5)")
        self.reload_button.setObjectName("bannerReload")
        self.reload_button.clicked.connect(self.reloadRequested)
        self.watch_box = QCheckBox("Watch for changes")
        self.watch_box.setObjectName("watchStore")
        self.watch_box.setToolTip("Re-read the store whenever another process writes to it")
        self.watch_box.toggled.connect(self._watch_toggled)
        layout = QHBoxLayout(self.banner)
        layout.setContentsMargins(6, 3, 6, 3)
        layout.addWidget(self.banner_text, 1)
        layout.addWidget(self.watch_box)
        layout.addWidget(self.reload_button)
        self.banner.hide()

        self.watcher = QFileSystemWatcher(self)
        self.watcher.fileChanged.connect(self._file_changed)
        self.watcher.directoryChanged.connect(self._file_changed)
        self.watch_timer = QTimer(self)
        self.watch_timer.setObjectName("kintsugi.storeWatch")
        self.watch_timer.setSingleShot(True)
        self.watch_timer.setInterval(WATCH_THROTTLE_MS)
        self.watch_timer.timeout.connect(self._watch_fired)
        self.timer = QTimer(self)
        self.timer.setObjectName("kintsugi.connectionState")
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.update)
        self.state: ConnectionState | None = None
        inspector.connecting.connect(self.update)
        inspector.opened.connect(self._opened)
        inspector.failed.connect(self.update)
        self.timer.start()

    def stop(self) -> None:
        """Stop the timers (the window is closing)."""
        self.timer.stop()
        self.watch_timer.stop()

    def update(self) -> None:
        """Show the current state (called every tick and on the controller's signals)."""
        opening = self.inspector.opening
        self.progress.setVisible(opening is not None)
        if opening is not None:
            self._set_label(f"connecting: {opening.progress or opening.label}…")
            return
        target = self.inspector.target
        if target is None:
            self.state = None
            self._set_label("no target")
            self._show_banner("")
            return
        state = target.connection()
        self.state = state
        self._set_label(connection_text(state))
        stale = state.stale
        if self.tabs.property("stale") != stale:
            self.tabs.setProperty("stale", stale)
            self.tabs.setAutoFillBackground(stale)
            palette = self.tabs.palette()
            role = QPalette.ColorRole.Window
            palette.setColor(role, banner_style(self.tabs.palette(), "warning")[0] if stale else QPalette().color(role))
            self.tabs.setPalette(palette)
        if stale:
            self._show_banner(
                f"<b>Stale</b>: the connection to {target.label} is lost since {clock(state.lost_at)}; the views show "
                "what the node sent until then and follow it again once it is back.",
                "warning",
            )
        elif state.kind == "snapshot":
            self._show_banner(
                f"<b>Snapshot</b> of {target.label} taken at {clock(state.taken_at)}: writes made since do not "
                "show until it is reloaded.",
                "info",
                snapshot=True,
            )
        else:
            self._show_banner("")

    def _set_label(self, text: str) -> None:
        if self.label.text() != text:
            self.label.setText(text)
            self.label.setToolTip(text)

    def _show_banner(self, html: str, kind: str = "info", *, snapshot: bool = False) -> None:
        if not html:
            self.banner.hide()
            self.banner.setProperty("stale", False)
            return
        if self.banner_text.text() != html:
            self.banner_text.setText(html)
            background, border = banner_style(self.banner.palette(), kind)
            self.banner.setStyleSheet(
                f"QFrame#stateBanner {{ background: {background.name()}; border: 1px solid {border.name()}; }}"
            )
        self.banner.setProperty("stale", kind == "warning")
        self.reload_button.setVisible(snapshot)
        self.watch_box.setVisible(snapshot)
        self.banner.show()

    # -- the store watch ---------------------------------------------------------------------

    def _opened(self) -> None:
        self.update()
        self._watch_toggled(self.watch_box.isChecked())

    def _watch_toggled(self, on: bool) -> None:
        if not on:
            self.watch_timer.stop()
        paths = self.watcher.files() + self.watcher.directories()
        if paths:
            self.watcher.removePaths(paths)
        target = self.inspector.target
        if on and isinstance(target, StoreTarget):
            existing = [p for p in target.watch_paths() if os.path.exists(p)]
            if existing:
                self.watcher.addPaths(existing)
            if target.changed_on_disk():  # written while the box was off
                self.watch_timer.start()

    def _file_changed(self, _path: str) -> None:
        if self.watch_box.isChecked() and not self.watch_timer.isActive():
            self.watch_timer.start()

    def _watch_fired(self) -> None:
        target = self.inspector.target
        if not self.watch_box.isChecked() or not isinstance(target, StoreTarget) or self.inspector.opening:
            return
        if target.changed_on_disk():
            self.reloadRequested.emit()
        else:
            # Re-arm: a write-ahead log created since is watched from now on.
            self._watch_toggled(True)
