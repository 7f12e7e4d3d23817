"""Recently opened targets, remembered across runs in :class:`QSettings`.

The application uses ``QSettings("Kintsugi", "inspector")``; tests hand in a
:class:`QSettings` on a temporary ini file instead. The list is stored as one JSON string so
it reads back the same from every settings format.

:class:`WindowLayout` keeps the main window's layout in the same settings: geometry, splitter
sizes, tab order and current tab, and column widths, saved on close and restored on start.
"""

from __future__ import annotations

import json
from typing import TypeVar

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QMainWindow,
    QSplitter,
    QTableView,
    QTabWidget,
    QTreeView,
    QWidget,
)

from inspector.targets.base import TargetSpec

__all__ = ["MAX_RECENT", "RecentTargets", "WindowLayout", "default_settings"]

#: Targets remembered.
MAX_RECENT = 10
KEY = "recent/targets"
T = TypeVar("T")


def default_settings() -> QSettings:
    return QSettings("Kintsugi", "inspector")


class RecentTargets:
    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def list(self) -> list[TargetSpec]:
        """Most recent first; entries that no longer parse are skipped."""
        raw = self.settings.value(KEY, "[]")
        try:
            items = json.loads(str(raw))
        except ValueError:
            return []
        if not isinstance(items, list):
            return []
        specs = [TargetSpec.from_json(item) for item in items if isinstance(item, str)]
        return [s for s in specs if s is not None]

    def add(self, spec: TargetSpec) -> None:
        specs = [spec, *(s for s in self.list() if s != spec)][:MAX_RECENT]
        self.settings.setValue(KEY, json.dumps([s.to_json() for s in specs]))
        self.settings.sync()


# -- the window's layout ------------------------------------------------------------------

#: Settings keys of the window's layout (all under ``window/``).
GEOMETRY_KEY = "window/geometry"
STATE_KEY = "window/state"
TABS_KEY = "window/tabs"
CURRENT_TAB_KEY = "window/currentTab"
SPLITTER_PREFIX = "window/splitters/"
COLUMNS_PREFIX = "window/columns/"


def _named(widgets: list[T]) -> dict[str, T]:
    """``widgets`` by object name; unnamed ones, and names several widgets share (e.g. one
    table per session lane), are left out: their key would not say which one it is."""
    seen: dict[str, list[T]] = {}
    for widget in widgets:
        name = widget.objectName()  # type: ignore[attr-defined]
        if name:
            seen.setdefault(name, []).append(widget)
    return {name: found[0] for name, found in seen.items() if len(found) == 1}


def _tables(root: QWidget) -> dict[str, QHeaderView]:
    """The horizontal headers of ``root``'s named tables and trees."""
    return {
        name: view.header() if isinstance(view, QTreeView) else view.horizontalHeader()
        for name, view in _named(root.findChildren(QAbstractItemView)).items()
        if isinstance(view, QTableView | QTreeView)
    }


def _widths(value: object) -> list[int]:
    """A saved list of column widths (QSettings' ini format gives back strings)."""
    try:
        items = json.loads(str(value))
    except ValueError:
        return []
    return [int(w) for w in items if isinstance(w, int) and w > 0] if isinstance(items, list) else []


class WindowLayout:
    """Saves a main window's layout into :class:`QSettings` and restores it: geometry and
    toolbar state, the sizes of every named :class:`QSplitter`, the order and current tab of
    ``tabs`` (by tab text, so a renamed or new tab does not shift the others) and the widths
    of the interactive columns of every named table and tree. Restoring skips anything
    missing or unreadable (a first run, an older settings file)."""

    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def save(self, window: QMainWindow, tabs: QTabWidget) -> None:
        s = self.settings
        s.setValue(GEOMETRY_KEY, window.saveGeometry())
        s.setValue(STATE_KEY, window.saveState())
        s.setValue(TABS_KEY, json.dumps([tabs.tabText(i) for i in range(tabs.count())]))
        s.setValue(CURRENT_TAB_KEY, tabs.tabText(tabs.currentIndex()))
        for name, splitter in _named(window.findChildren(QSplitter)).items():
            s.setValue(SPLITTER_PREFIX + name, json.dumps(splitter.sizes()))
        for name, header in _tables(window).items():
            widths = [
                header.sectionSize(i) if header.sectionResizeMode(i) == QHeaderView.ResizeMode.Interactive else 0
                for i in range(header.count())
            ]
            s.setValue(COLUMNS_PREFIX + name, json.dumps(widths))
        s.sync()

    def restore(self, window: QMainWindow, tabs: QTabWidget) -> None:
        s = self.settings
        geometry = s.value(GEOMETRY_KEY)
        if isinstance(geometry, QByteArray | bytes):
            window.restoreGeometry(QByteArray(geometry))
        state = s.value(STATE_KEY)
        if isinstance(state, QByteArray | bytes):
            window.restoreState(QByteArray(state))
        try:
            order = json.loads(str(s.value(TABS_KEY, "[]")))
        except ValueError:
            order = []
        bar = tabs.tabBar()
        for place, text in enumerate(t for t in order if isinstance(t, str)):
            found = next((i for i in range(tabs.count()) if tabs.tabText(i) == text), -1)
            if found >= 0 and place < tabs.count():
                bar.moveTab(found, min(place, tabs.count() - 1))
        current = str(s.value(CURRENT_TAB_KEY, ""))
        for i in range(tabs.count()):
            if tabs.tabText(i) == current:
                tabs.setCurrentIndex(i)
        for name, splitter in _named(window.findChildren(QSplitter)).items():
            sizes = _widths(s.value(SPLITTER_PREFIX + name, "[]"))
            if len(sizes) == splitter.count() and any(sizes):
                splitter.setSizes(sizes)
        for name, header in _tables(window).items():
            raw = s.value(COLUMNS_PREFIX + name)
            if raw is not None:
                _apply_widths(header, _saved_widths(raw))


def _saved_widths(value: object) -> list[int]:
    """Saved widths, with 0 where a column was not interactive (kept, so columns line up)."""
    try:
        items = json.loads(str(value))
    except ValueError:
        return []
    return [w if isinstance(w, int) and w >= 0 else 0 for w in items] if isinstance(items, list) else []


def _apply_widths(header: QHeaderView, widths: list[int]) -> None:
    """Give ``header``'s interactive columns their saved widths, now and whenever its
    columns are laid out again (a model filled later, or reset)."""

    def apply() -> None:
        for column, width in enumerate(widths[: header.count()]):
            if width > 0 and header.sectionResizeMode(column) == QHeaderView.ResizeMode.Interactive:
                header.resizeSection(column, width)

    apply()
    header.sectionCountChanged.connect(lambda _old, _new: apply())
