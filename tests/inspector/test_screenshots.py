"""Screenshots of the main views, written to artifacts/screenshots/ (git-ignored) for the
README and docs, from the embedded demo as a user first sees it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from engine.diagnostics.covalue_summary import Badge
from inspector.controller import Inspector
from inspector.models.roles import Role
from inspector.targets import TargetSpec
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import covalue_named, ms, save_screenshot, wait_for


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage(str(path))
    assert image.width() >= 800 and image.height() >= 400


def test_screenshots_of_the_main_views(qtbot: QtBot, inspector: Inspector, window: MainWindow, tmp_path: Path) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(30)):
        inspector.open_later(TargetSpec("demo"))
    assert window.select_first(Badge.CONFLICT_SESSION)
    wait_for(qtbot, lambda: not window.chain.building and not inspector.busy)
    check_png(save_screenshot(window, "navigator-chains.png"))

    window.tabs.setCurrentWidget(window.content)
    check_png(save_screenshot(window, "content.png"))

    window.tabs.setCurrentWidget(window.tombstones)
    check_png(save_screenshot(window, "tombstones.png"))

    alice = window.navigator.tree.model().index(0, 0).data(Role.NAMESPACE)
    index = inspector.kv_tree.key_index(alice, "prefs/recent")
    window.navigator.tree.setCurrentIndex(index)
    wait_for(qtbot, lambda: inspector.cas_timeline.rowCount() > 0)
    assert window.tabs.currentWidget() is window.cas
    check_png(save_screenshot(window, "cas-timeline.png"))

    window.tabs.setCurrentWidget(window.chain)
    assert window.navigator.select_covalue(covalue_named(inspector, "Demo team"))
    wait_for(qtbot, lambda: not window.chain.building and not inspector.busy)

    dialog = window.show_connect_dialog()
    dialog.store.click()
    dialog.store_path.setText(str(tmp_path / "no-store-here"))
    qtbot.waitExposed(dialog)
    path = save_screenshot(dialog, "connect-dialog.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with qtbot.waitSignal(inspector.failed, timeout=ms(10)):
        dialog.accept()
    check_png(save_screenshot(window, "error-banner.png"))
