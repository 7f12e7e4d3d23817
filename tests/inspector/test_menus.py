"""The main window's menu bar: entries, shortcuts (pressed as keys), disabled entries that say
why, About, Open store and Reload, Recover… (menu and toolbar) and the audit view, Quit.
(Address book… is tested in test_addressbook.py.)"""

from __future__ import annotations

import platform
from pathlib import Path

import PySide6
from PySide6.QtCore import qVersion
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QFileDialog, QMenu, QToolBar
from pytestqt.qtbot import QtBot

from engine import __version__
from engine.protocol.limits import PROTOCOL_VERSION
from engine.storage.sqlite.store import STORE_FILE
from inspector.controller import Inspector
from inspector.models.recover import NO_TARGET
from inspector.targets import NodeTarget, TargetSpec
from inspector.views import main_window as mw
from inspector.views.files import EXPORT_NO_TARGET_TIP
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import ms, run, wait_for

#: Every menu with its entries: (text, shortcut, enabled when no target is open). Connect…
#: has the platform's Open key (a standard key is only known once the application runs).
OPEN_KEY = "the platform's Open key"
MENUS = {
    "&File": [
        ("Connect…", OPEN_KEY, True),
        ("Open store…", "Ctrl+Shift+O", True),
        ("Open bundle…", "", True),
        ("Export bundle…", "Ctrl+E", False),
        ("Address book…", "", True),
        ("Quit", "Ctrl+Q", True),
    ],
    "&View": [
        ("Session chains", "Ctrl+1", True),
        ("Content", "Ctrl+2", True),
        ("Tombstones", "Ctrl+3", True),
        ("CAS slots", "Ctrl+4", True),
        ("Peers", "Ctrl+5", True),
        ("Sync events", "Ctrl+6", True),
        ("Anomalies", "Ctrl+7", True),
        ("Peers × sessions", "Ctrl+8", True),
        ("Audit log", "Ctrl+9", True),
        ("Cluster", "Ctrl+0", True),
        ("Search CoValues", "Ctrl+F", True),
        ("Reload", "F5", False),
    ],
    "&Actions": [("Recover…", "", True), ("Compare…", "", True)],
    "&Help": [("About Kintsugi inspector", "", True)],
}


def menus(window: MainWindow) -> dict[str, QMenu]:
    found = {}
    for action in window.menuBar().actions():
        menu = action.menu()
        assert isinstance(menu, QMenu)
        found[action.text()] = menu
    return found


def entries(menu: QMenu) -> list[QAction]:
    return [a for a in menu.actions() if not a.isSeparator()]


def activate(qtbot: QtBot, window: MainWindow) -> None:
    """Make the window the active one, so its shortcuts take key presses."""
    window.activateWindow()
    wait_for(qtbot, lambda: QApplication.activeWindow() is window)


def press(qtbot: QtBot, window: MainWindow, shortcut: str) -> None:
    """Press ``shortcut`` (e.g. ``Ctrl+3``) as keys on the window."""
    combo = QKeySequence(shortcut)[0]
    qtbot.keyClick(window, combo.key(), combo.keyboardModifiers())


def test_the_menus_and_their_shortcuts(window: MainWindow) -> None:
    found = menus(window)
    assert list(found) == list(MENUS)
    open_key = QKeySequence(QKeySequence.StandardKey.Open).toString()
    for title, listed in MENUS.items():
        expected = [(text, open_key if key == OPEN_KEY else key, enabled) for text, key, enabled in listed]
        actual = [(a.text(), a.shortcut().toString(), a.isEnabled()) for a in entries(found[title])]
        assert actual == expected, title
        assert found[title].toolTipsVisible()
    tips = {a.text(): a.toolTip() for m in found.values() for a in entries(m) if not a.isEnabled()}
    assert set(tips) == {"Export bundle…", "Reload"}
    assert tips["Export bundle…"] == EXPORT_NO_TARGET_TIP
    assert tips["Reload"] == mw.RELOAD_NO_TARGET_TIP
    # Recover… is enabled; with no target its tooltip says what to open first
    assert window.recover_action.toolTip() == NO_TARGET
    # the toolbar's Connect and Recover… are the menus'
    toolbar = window.findChild(QToolBar, "targetToolbar")
    assert toolbar.actions() == [window.connect_action, window.recover_action]
    assert window.connect_action in entries(found["&File"])
    assert window.recover_action in entries(found["&Actions"])
    assert window.quit_action.menuRole() == QAction.MenuRole.QuitRole
    assert window.about_action.menuRole() == QAction.MenuRole.AboutRole


def test_ctrl_digits_switch_tabs_and_the_menu_follows(qtbot: QtBot, window: MainWindow) -> None:
    activate(qtbot, window)
    for index in (2, 5, 0):
        press(qtbot, window, f"Ctrl+{index + 1}")
        assert window.tabs.currentIndex() == index
        assert window.tab_actions[index].isChecked()
    window.tabs.setCurrentWidget(window.peers)  # clicking a tab checks its View entry
    assert window.tab_actions[window.tabs.indexOf(window.peers)].isChecked()
    assert sum(a.isChecked() for a in window.tab_actions) == 1


def test_ctrl_9_shows_the_audit_log_and_recover_without_a_target_says_why(
    qtbot: QtBot, window: MainWindow, inspector: Inspector
) -> None:
    activate(qtbot, window)
    press(qtbot, window, "Ctrl+9")
    assert window.tabs.currentWidget() is window.audit
    assert window.audit.status.text() == inspector.audit.note != ""  # no target: no log
    window.recover_action.trigger()
    assert window.recover_dialog is None and window.statusBar().currentMessage() == NO_TARGET


def test_recover_on_a_store_needs_a_selected_covalue_and_the_audit_log_verifies(
    qtbot: QtBot, window: MainWindow, inspector: Inspector, demo_copy: Path
) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        window.open_store(str(demo_copy))
    assert window.recover_action.toolTip() == mw.RECOVER_TIP
    window.recover_action.trigger()  # nothing selected yet
    assert window.recover_dialog is None and window.statusBar().currentMessage() == mw.RECOVER_SELECT_FIRST
    notes = next(cid for cid in inspector.target.ids() if inspector.target.summary(cid).name == "notes")  # type: ignore[union-attr]
    assert window.navigator.select_covalue(notes)
    window.recover_action.trigger()
    dialog = window.recover_dialog
    assert dialog is not None and dialog.isVisible() and dialog.covalue == notes
    dialog.reject()
    # a demo store has an empty audit log, which verifies
    assert inspector.audit.available and inspector.audit.row_count() == 0 and inspector.audit.ok
    assert window.audit.status.text().startswith("✓ verifies: 0 records")


def test_ctrl_f_focuses_the_search(qtbot: QtBot, window: MainWindow) -> None:
    activate(qtbot, window)
    window.navigator.search.setText("notes")
    window.tabs.currentWidget().setFocus()
    assert not window.navigator.search.hasFocus()
    press(qtbot, window, "Ctrl+F")
    wait_for(qtbot, window.navigator.search.hasFocus)
    assert window.navigator.search.selectedText() == "notes"  # typing replaces the search


def test_about_shows_the_versions_and_paths(qtbot: QtBot, window: MainWindow, inspector: Inspector) -> None:
    window.about_action.trigger()
    box = window.about_dialog
    assert box is not None and box.isVisible() and box.windowTitle() == "About Kintsugi inspector"
    text = box.text()
    for name, value in (
        ("Kintsugi", __version__),
        ("Protocol", str(PROTOCOL_VERSION)),
        ("Qt", qVersion()),
        ("PySide6", PySide6.__version__),
        ("Python", platform.python_version()),
    ):
        assert f"<b>{name}</b></td><td>{value}</td>" in text
    assert inspector.recent is not None
    assert inspector.recent.settings.fileName() in text  # the test's settings file
    assert "kintsugi" in text.split("Data folder", 1)[1]
    assert str(inspector.addressbook.path) in text.split("Address book", 1)[1]  # beside the settings
    box.reject()
    wait_for(qtbot, lambda: not box.isVisible())


def test_quit_closes_the_window(qtbot: QtBot, window: MainWindow) -> None:
    activate(qtbot, window)
    with qtbot.waitSignal(window.closing, timeout=ms(5)):
        press(qtbot, window, "Ctrl+Q")
    assert not window.isVisible()


def test_connect_entry_opens_the_connect_dialog(qtbot: QtBot, window: MainWindow) -> None:
    window.connect_action.trigger()
    dialog = window.connect_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.reject()


def test_open_store_opens_it_as_the_command_line_does_and_reload_rereads_it(
    qtbot: QtBot, window: MainWindow, inspector: Inspector, demo_copy: Path
) -> None:
    window.open_store_action.trigger()
    dialog = window.store_dialog
    assert isinstance(dialog, QFileDialog) and dialog.isVisible()
    path = str(demo_copy / STORE_FILE)
    dialog.selectFile(path)
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        dialog.accept()
    assert inspector.target is not None and inspector.target.spec == TargetSpec.parse(path)
    assert inspector.covalues.rowCount() == 4
    assert window.windowTitle() == path  # the target, once; the platform adds the app's name

    assert window.reload_action.isEnabled() and window.reload_action.toolTip() == mw.RELOAD_TIP
    first = inspector.target
    activate(qtbot, window)
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        press(qtbot, window, "F5")
    assert inspector.target is not first and inspector.target.spec == first.spec
    assert inspector.covalues.rowCount() == 4


def test_reload_is_disabled_for_a_live_target(
    qtbot: QtBot, window: MainWindow, inspector: Inspector, node_target: NodeTarget
) -> None:
    assert run(qtbot, inspector.open(node_target.spec, node_target))
    assert node_target.live
    assert not window.reload_action.isEnabled() and window.reload_action.toolTip() == mw.RELOAD_LIVE_TIP
    window.reload()  # does nothing for a live target
    assert inspector.target is node_target


def test_choosing_no_store_opens_nothing(qtbot: QtBot, window: MainWindow, inspector: Inspector) -> None:
    dialog = window.choose_store()
    dialog.reject()
    assert inspector.target is None
    window.open_store("")
    assert inspector.target is None and not inspector.busy
    assert window.windowTitle() == mw.BASE_TITLE
