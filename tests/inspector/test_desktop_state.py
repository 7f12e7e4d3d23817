"""The window behaves like a desktop application's: its layout (geometry, splitters, tab
order and current tab, column widths) comes back after a restart from the same settings,
clicking a sync event scrolls to the lane of its session and frames it, and on a dark palette
the badge, lane, compare and banner colours keep text readable."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QPoint, QSettings, QSize, Qt
from PySide6.QtGui import QColor, QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QApplication, QSplitter, QStyleOptionViewItem
from pytestqt.qtbot import QtBot

from engine.sync.events import SyncEvent, SyncEventKind
from inspector import style
from inspector.controller import Inspector
from inspector.models.events import SyncEventsModel
from inspector.recent import RecentTargets, WindowLayout
from inspector.targets import NodeTarget
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import covalue_named, ms, run, wait_for


def splitter(window: MainWindow) -> QSplitter:
    found = window.findChild(QSplitter, "mainSplitter")
    assert isinstance(found, QSplitter)
    return found


def tab_texts(window: MainWindow) -> list[str]:
    return [window.tabs.tabText(i) for i in range(window.tabs.count())]


def new_window(qtbot: QtBot, inspector: Inspector) -> MainWindow:
    main = MainWindow(inspector)
    qtbot.addWidget(main)
    main.resize(1440, 880)  # as the application does before showing: the saved layout wins
    main.show()
    qtbot.waitExposed(main)
    return main


def test_the_layout_is_restored_after_a_restart(qtbot: QtBot, inspector: Inspector, settings: QSettings) -> None:
    first = new_window(qtbot, inspector)
    default_order = tab_texts(first)
    # A size that fits the screen (restoring a geometry fits it into the screen, as it should)
    # and differs from the default.
    screen = first.screen().availableGeometry()
    size = QSize(min(1100, screen.width() - 30), min(700, screen.height() - 30)).expandedTo(first.minimumSizeHint())
    first.resize(size)
    wait_for(qtbot, lambda: first.size() == size)
    splitter(first).setSizes([300, size.width() - 320])
    sizes = splitter(first).sizes()
    side = first.findChild(QSplitter, "navigatorSplitter")
    assert isinstance(side, QSplitter)
    side.setSizes([200, 300])
    side_sizes = side.sizes()
    bar = first.tabs.tabBar()
    bar.moveTab(default_order.index("Sync events"), 0)  # dragged to the front
    first.tabs.setCurrentWidget(first.peers)
    header = first.sync_events.table.horizontalHeader()
    header.resizeSection(SyncEventsModel.KIND, 233)
    order = tab_texts(first)
    assert order[0] == "Sync events" and order != default_order
    first.close()
    assert settings.value("window/currentTab") == "Peers"

    # A second run: the same settings file, a fresh window (and a fresh RecentTargets on it).
    again = Inspector(pool=inspector.pool, recent=RecentTargets(QSettings(settings.fileName(), settings.format())))
    try:
        second = new_window(qtbot, again)
        assert tab_texts(second) == order
        assert second.tabs.currentWidget() is second.peers
        assert second.size() == size
        assert splitter(second).sizes() == sizes
        assert second.findChild(QSplitter, "navigatorSplitter").sizes() == side_sizes  # type: ignore[union-attr]
        assert second.sync_events.table.horizontalHeader().sectionSize(SyncEventsModel.KIND) == 233
        # Ctrl+1 follows the tab, not its old place
        second.tab_actions[0].trigger()
        assert second.tabs.currentWidget() is second.chain
        assert second.tab_actions[0].isChecked()
        second.close()
    finally:
        run(qtbot, again.close())


def test_a_missing_or_broken_layout_leaves_the_defaults(
    qtbot: QtBot, inspector: Inspector, settings: QSettings
) -> None:
    settings.setValue("window/tabs", "not json")
    settings.setValue("window/splitters/mainSplitter", "[1, 2, 3]")  # not its number of parts
    settings.setValue("window/columns/eventsTable", "{}")
    window = new_window(qtbot, inspector)
    assert tab_texts(window)[0] == "Session chains"
    assert all(size > 0 for size in splitter(window).sizes())
    window.close()
    assert WindowLayout(settings).settings.value("window/geometry") is not None  # saved on close


def test_clicking_a_sync_event_scrolls_to_and_frames_its_lane(
    qtbot: QtBot, inspector: Inspector, node_target: NodeTarget
) -> None:
    window = new_window(qtbot, inspector)
    window.resize(760, 700)  # narrow: not every lane fits
    assert run(qtbot, inspector.open(node_target.spec, node_target), units=30)
    notes = covalue_named(inspector, "notes")
    summary = node_target.summary(notes)  # type: ignore[arg-type]
    assert summary is not None and len(summary.sessions) >= 3
    last = str(summary.sessions[-1].id)
    node_target.recorder.record(SyncEvent(SyncEventKind.FORK_DETECTED, "out:1:test", notes, last, "seen by a test"))
    events = inspector.sync_events
    wait_for(qtbot, lambda: events.row_of(notes) >= 0)
    window.tabs.setCurrentWidget(window.sync_events)
    table = window.sync_events.table
    index = events.index(events.row_of(notes), SyncEventsModel.KIND)
    with qtbot.waitSignal(window.chain.laneHighlighted, timeout=ms(20)) as framed:
        qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=table.visualRect(index).center())
    assert framed.args == [last]
    assert window.tabs.currentWidget() is window.chain
    lanes = window.chain.lane_widgets
    row = [str(window.chain.lanes.session(r).id) for r in range(len(lanes))].index(last)
    lane = lanes[row]
    assert lane.property("highlighted") is True
    assert [w.property("highlighted") for w in lanes].count(True) == 1
    viewport = window.chain.lanes_area.viewport()
    left = lane.mapTo(viewport, QPoint(0, 0)).x()
    assert left >= 0 and left + lane.width() <= viewport.width() + 1, (left, viewport.width())
    assert window.chain.lanes_area.horizontalScrollBar().value() > 0  # it had to scroll
    window.close()


# -- a dark theme stays readable -------------------------------------------------------------


def dark_palette() -> QPalette:
    """A dark desktop theme's palette (as Breeze Dark or Adwaita-dark set it up)."""
    palette = QPalette()
    for role, color in {
        QPalette.ColorRole.Window: "#2a2e32",
        QPalette.ColorRole.WindowText: "#fcfcfc",
        QPalette.ColorRole.Base: "#1b1e20",
        QPalette.ColorRole.AlternateBase: "#232629",
        QPalette.ColorRole.Text: "#fcfcfc",
        QPalette.ColorRole.Button: "#31363b",
        QPalette.ColorRole.ButtonText: "#fcfcfc",
        QPalette.ColorRole.Highlight: "#3daee9",
        QPalette.ColorRole.HighlightedText: "#fcfcfc",
    }.items():
        palette.setColor(role, QColor(color))
    return palette


ROW_TINTS = [
    *style.COMPARE_COLORS.values(),
    style.BROKEN_BACKGROUND,
    style.UNVERIFIABLE_BACKGROUND,
    style.INVALID_BACKGROUND,
    style.LOST_BACKGROUND,
    style.LAGGED_BACKGROUND,
    style.FORK_BACKGROUND,
    style.COMPARE_FOLD_BACKGROUND,
]
MARKS = [*style.BADGE_COLORS.values(), *style.KIND_COLORS.values(), style.MUTED, style.OK_GREEN]


@pytest.mark.parametrize("dark", [True, False], ids=["dark", "light"])
def test_badge_lane_and_compare_colours_keep_their_contrast(dark: bool) -> None:
    palette = dark_palette() if dark else QPalette(QColor("#efefef"))
    text, base = palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base)
    assert style.is_dark(palette) is dark
    for tint in ROW_TINTS:
        behind = style.on_palette(tint, palette)
        assert style.contrast_ratio(text, behind) >= 4.5, (tint, behind.name())
        assert behind != base  # still tinted: the row stands out
    for color in MARKS:
        shown = style.foreground(color, palette)
        assert style.contrast_ratio(shown, base) >= 4.5, (color, shown.name())
    for badge in style.BADGE_COLORS.values():  # chips: their own text on their own fill
        fill = QColor(badge)
        assert style.contrast_ratio(style.chip_text(fill), fill) >= 3.0, badge
    for kind in style.BANNER_ACCENTS:
        background, _border = style.banner_style(palette, kind)
        assert style.contrast_ratio(palette.color(QPalette.ColorRole.WindowText), background) >= 4.5, kind


def test_the_window_on_a_dark_palette(qtbot: QtBot, inspector: Inspector) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    previous = app.palette()
    app.setPalette(dark_palette())
    try:
        window = new_window(qtbot, inspector)
        table = window.sync_events.table
        delegate = table.itemDelegate()
        assert isinstance(delegate, style.PaletteDelegate)
        # A fork row of the events model, as the delegate paints it.
        model = QStandardItemModel(1, 1)
        item = QStandardItem("fork detected")
        item.setData(QColor(style.FORK_BACKGROUND), Qt.ItemDataRole.BackgroundRole)
        item.setData(QColor(style.KIND_COLORS[next(iter(style.KIND_COLORS))]), Qt.ItemDataRole.ForegroundRole)
        model.setItem(0, 0, item)
        option = QStyleOptionViewItem()
        option.initFrom(table)
        delegate.initStyleOption(option, model.index(0, 0))
        text = option.palette.color(QPalette.ColorRole.Text)
        assert style.contrast_ratio(text, option.backgroundBrush.color()) >= 4.5
        assert style.contrast_ratio(option.palette.color(QPalette.ColorRole.Text), QColor("#1b1e20")) >= 4.5
        window.show_error("test", "a banner")
        sheet = window.banner.styleSheet()
        background = QColor(re.findall(r"background: (#[0-9a-f]{6})", sheet)[0])
        assert style.contrast_ratio(QColor("#fcfcfc"), background) >= 4.5
        window.close()
    finally:
        app.setPalette(previous)
