"""Screenshots of the store-file views and the dialogs, written to artifacts/screenshots/
(git-ignored). The main views of the embedded demo are taken by test_embedded.py; with
``KINTSUGI_DOCS_SCREENSHOTS=1`` both also write the copies the README shows (docs/screenshots/).
"""

from __future__ import annotations

from pathlib import Path

from pytestqt.qtbot import QtBot

from engine.demo.scenario import DemoResult
from inspector.controller import Inspector
from inspector.targets import TargetSpec
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import check_png, covalue_named, ms, save_screenshot, wait_for


def check_dialog(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_screenshots_of_a_store_and_the_dialogs(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_store: DemoResult, tmp_path: Path
) -> None:
    dialog = window.show_connect_dialog()
    dialog.node.click()
    dialog.url.setText("ws://localhost:4242")
    dialog.key_file.setText("~/operator.key")
    qtbot.waitExposed(dialog)
    check_dialog(save_screenshot(dialog, "connect-dialog.png", docs=True))
    dialog.reject()

    with qtbot.waitSignal(inspector.loaded, timeout=ms(30)):
        inspector.open_later(TargetSpec("store", demo_store.store))
    assert window.navigator.select_covalue(covalue_named(inspector, "notes"))
    wait_for(qtbot, lambda: not window.chain.building and not inspector.busy)
    check_png(save_screenshot(window, "store-chains.png"))

    window.tabs.setCurrentWidget(window.tombstones)
    check_png(save_screenshot(window, "tombstones.png"))

    window.tabs.setCurrentWidget(window.peers)
    assert "A store file has no peers" in window.peers.summary.text()

    dialog = window.show_connect_dialog()
    dialog.store.click()
    dialog.store_path.setText(str(tmp_path / "no-store-here"))
    with qtbot.waitSignal(inspector.failed, timeout=ms(10)):
        dialog.accept()
    check_png(save_screenshot(window, "error-banner.png"))
