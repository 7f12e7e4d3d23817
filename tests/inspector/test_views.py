"""View → engine: what the operator does in the window reaches the engine (through the
controller), and what fails is shown as a message in the window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QDialogButtonBox, QToolButton
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult
from engine.diagnostics.covalue_summary import Badge
from inspector.controller import Inspector
from inspector.lag import LoopLagMonitor
from inspector.models.roles import Role
from inspector.recent import RecentTargets
from inspector.targets import TargetSpec
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import ms, wait_for


def open_store(qtbot: QtBot, inspector: Inspector, path: str) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        inspector.open_later(TargetSpec("store", path))


def click_row(qtbot: QtBot, view: object, index: object) -> None:
    rect = view.visualRect(index)  # type: ignore[attr-defined]
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())  # type: ignore[attr-defined]


def test_clicking_a_covalue_shows_its_lanes(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_store: DemoResult, monitor: LoopLagMonitor
) -> None:
    open_store(qtbot, inspector, demo_store.store)
    nav = window.navigator
    proxy = inspector.navigator
    row = next(r for r in range(proxy.rowCount()) if proxy.index(r, 0).data(Role.ID) == demo_store.maps["notes"])
    monitor.reset()
    with qtbot.waitSignal(inspector.contentLoaded, timeout=ms(10)):
        click_row(qtbot, nav.list, proxy.index(row, 0))
    assert inspector.selected_covalue == demo_store.maps["notes"]
    wait_for(qtbot, lambda: len(window.chain.lane_widgets) == 4 and not inspector.busy)
    titles = [lane.title.text() for lane in window.chain.lane_widgets]
    assert titles[1].startswith("conflict") and titles[0].startswith("active")
    assert window.chain.heading.text().startswith("notes · comap · 4 sessions")
    assert "verified" in window.chain.lane_widgets[0].info.text()
    print(f"\nselect a CoValue with 4 lanes: max loop lag {monitor.max_lag * 1000:.1f} ms")

    lane = max(window.chain.lane_widgets, key=lambda w: w.chain.rowCount())
    bar = lane.table.verticalScrollBar()
    lane.end_button.click()
    assert bar.maximum() > 0 and bar.value() == bar.maximum()
    lane.top_button.click()
    assert bar.value() == 0 and lane.table.rowAt(1) == 0
    assert not lane.break_button.isVisibleTo(lane)

    window.tabs.setCurrentWidget(window.content)
    assert "notes" in window.content.heading.text() and window.content.table.model().rowCount() > 0


def test_badge_filter_and_search_narrow_the_navigator(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_store: DemoResult
) -> None:
    open_store(qtbot, inspector, demo_store.store)
    nav = window.navigator
    assert nav.count.text() == "4 CoValues"
    nav.badge_filter.setCurrentIndex(nav.badge_filter.findText("Deleted"))
    assert inspector.navigator.badge is Badge.DELETED
    assert nav.list.model().rowCount() == 1 and nav.count.text() == "1 of 4 CoValues"
    nav.set_badge_filter(None)
    qtbot.keyClicks(nav.search, "tod")
    assert nav.list.model().rowCount() == 1 and nav.list.model().index(0, 0).data() == "todo"
    nav.search.clear()
    assert nav.list.model().rowCount() == 4


def test_kv_key_selection_shows_its_timeline_and_values_on_request(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_store: DemoResult
) -> None:
    open_store(qtbot, inspector, demo_store.store)
    tree = window.navigator.tree
    index = inspector.kv_tree.key_index(demo_store.accounts["alice"], "prefs/recent")
    tree.scrollTo(index)
    click_row(qtbot, tree, index)
    assert window.tabs.currentWidget() is window.cas
    assert inspector.selected_slot == (demo_store.accounts["alice"], "prefs/recent")
    assert inspector.cas_timeline.rowCount() == inspector.cas_timeline.counts()["attempts"] > 36
    assert "lost races" in window.cas.timeline_heading.text()
    assert window.cas.table.currentIndex().data(Role.KEY) == "prefs/recent"

    slots = inspector.cas_slots
    row = slots.row_of(demo_store.accounts["alice"], "prefs/recent")
    assert slots.index(row, slots.VALUE).data().startswith("‹hidden")
    window.cas.show_values.click()
    assert slots.show_values and "tab-" in slots.index(row, slots.VALUE).data()
    slots.set_show_values(False)  # the model drives the box too
    assert not window.cas.show_values.isChecked()

    # selecting another slot row in the table asks for its timeline
    other = slots.row_of(demo_store.accounts["alice"], "cursor/sync")
    click_row(qtbot, window.cas.table, slots.index(other, 1))
    assert inspector.selected_slot == (demo_store.accounts["alice"], "cursor/sync")
    assert inspector.cas_timeline.counts()["attempts"] == 3


def test_connect_dialog_opens_a_store_and_remembers_it(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_store: DemoResult, settings: QSettings
) -> None:
    dialog = window.show_connect_dialog()
    assert dialog.demo.isChecked() and not dialog.store_path.isEnabled()
    dialog.store.click()
    assert dialog.store_path.isEnabled()
    dialog.buttons.button(QDialogButtonBox.StandardButton.Open).click()
    assert dialog.isVisible() and "path" in dialog.error.text()  # nothing given yet
    qtbot.keyClicks(dialog.store_path, demo_store.store)
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        dialog.buttons.button(QDialogButtonBox.StandardButton.Open).click()
    assert window.windowTitle().endswith(demo_store.store) and inspector.covalues.rowCount() == 4
    assert "CoValues: 4" in window.stats_label.text()
    recent = RecentTargets(settings)
    assert recent.list() == [TargetSpec("store", demo_store.store)]

    again = window.show_connect_dialog()
    assert again.store.isChecked() and again.store_path.text() == demo_store.store
    assert again.recent_list.count() == 1 and demo_store.store in again.recent_list.item(0).text()
    again.demo.click()
    item = again.recent_list.item(0)
    where = again.recent_list.visualItemRect(item).center()
    qtbot.mouseClick(again.recent_list.viewport(), Qt.MouseButton.LeftButton, pos=where)
    assert again.store.isChecked()  # a click fills the fields in
    again.reject()


def test_failures_are_messages_in_the_window(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_store: DemoResult, tmp_path: Path
) -> None:
    open_store(qtbot, inspector, demo_store.store)
    with qtbot.waitSignal(inspector.failed, timeout=ms(10)) as failed:
        inspector.open_later(TargetSpec("store", str(tmp_path / "nothing-here")))
    assert failed.args[0] == "store_not_found"
    assert window.banner.isVisibleTo(window)
    text = window.banner_text.text()
    assert "There is no Kintsugi store there" in text and "Traceback" not in text
    assert inspector.covalues.rowCount() == 4  # the previous target stays open
    event = inspector.events.last("error")
    assert event is not None and event["code"] == "store_not_found"

    dialog = window.show_connect_dialog()
    dialog.node.click()
    qtbot.keyClicks(dialog.url, "localhost:1")
    dialog.accept()
    assert "ws://" in dialog.error.text()
    dialog.url.setText("ws://localhost:1")
    dialog.accept()
    assert "key file" in dialog.error.text()
    dialog.key_file.setText(str(tmp_path / "missing.key"))
    with qtbot.waitSignal(inspector.failed, timeout=ms(10)) as failed:
        dialog.accept()
    assert failed.args[0] == "key_file" and "The key file cannot be used" in window.banner_text.text()

    key = tmp_path / "me.key"
    AccountKey.generate().save(key)
    with qtbot.waitSignal(inspector.failed, timeout=ms(10)) as failed:
        inspector.open_later(TargetSpec("node", "ws://localhost:1", str(key)))
    assert failed.args[0] == "connection_refused" and "Could not connect to the node" in window.banner_text.text()
    dismiss = window.banner.findChild(QToolButton)
    assert dismiss is not None
    dismiss.click()
    assert not window.banner.isVisibleTo(window)


def test_closing_the_window_is_reported_not_acted_on(qtbot: QtBot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.closing, timeout=ms(1)):
        window.close()
    assert not window.isVisible()


def test_the_status_bar_shows_loop_lag(window: MainWindow, inspector: Inspector) -> None:
    for _ in range(25):
        window.on_lag_sample(0.004)
    assert window.lag_label.text().startswith("loop lag 4 ms")
