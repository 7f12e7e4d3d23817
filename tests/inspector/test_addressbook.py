"""Readable names: the operator's address book (a JSON file beside the settings, edited in
File → Address book…) names accounts in the session lanes, a broken file is a warning and
not a crash, and CoValues that share a name are told apart by a short id suffix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QStyleOptionViewItem, QTableWidgetItem
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.node.facade import LocalNode
from inspector.addressbook import FILE_NAME, AddressBook, AddressBookError
from inspector.controller import Inspector
from inspector.models.covalues import CoValueListModel
from inspector.models.roles import Role
from inspector.recent import RecentTargets
from inspector.targets import NodeTarget, TargetSpec
from inspector.views.addressbook import ACCOUNT, NAME, AddressBookDialog
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import covalue_named, ms, run, wait_for

ALICE = "acc_z" + "A" * 43


def book_path(settings: QSettings) -> Path:
    return Path(settings.fileName()).parent / FILE_NAME


def test_the_book_round_trips_and_refuses_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "config" / FILE_NAME
    assert AddressBook.load(path).names() == {}  # no file yet: empty
    book = AddressBook(path)
    changes: list[int] = []
    book.on_change.append(lambda: changes.append(1))
    book.replace({ALICE: "  Alice   (laptop) "})
    book.save()
    assert changes == [1]
    assert json.loads(path.read_text()) == {"version": 1, "accounts": {ALICE: "Alice (laptop)"}}
    again = AddressBook.load(path)
    assert again.name(ALICE) == "Alice (laptop)" and again.label(ALICE) == "Alice (laptop) (acc_zAAAAA…)"
    assert again.label("acc_zBBBBBBBBBBBBBBB") == "acc_zBBBBB…" and again.name("acc_zB") is None
    for bad in ("{", "[]", '{"version": 2, "accounts": {}}', '{"version": 1, "accounts": {"bob": "Bob"}}'):
        path.write_text(bad)
        with pytest.raises(AddressBookError) as caught:
            AddressBook.load(path)
        assert caught.value.code == "invalid_address_book"
    with pytest.raises(AddressBookError, match="empty"):
        book.replace({ALICE: "  "})
    with pytest.raises(AddressBookError, match="longer than"):
        book.replace({ALICE: "x" * 81})
    assert book.name(ALICE) == "Alice (laptop)"  # a refused change changes nothing


def test_names_from_the_address_book_show_in_the_lanes(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, node_target: NodeTarget, settings: QSettings
) -> None:
    assert run(qtbot, inspector.open(node_target.spec, node_target), units=30)
    notes = covalue_named(inspector, "notes")
    assert window.show_covalue(notes)
    chain = window.chain
    wait_for(qtbot, lambda: len(chain.lane_widgets) == chain.lanes.rowCount() > 0 and not chain.building)
    owner = str(chain.lanes.session(0).account)
    assert not chain.lane_widgets[0].title.text().startswith("Alice")

    window.address_book_action.trigger()
    dialog = window.address_book_dialog
    assert isinstance(dialog, AddressBookDialog) and dialog.isVisible()
    dialog.add_shown.click()  # the owners of the selected CoValue's sessions
    accounts = [dialog.table.item(r, ACCOUNT).text() for r in range(dialog.table.rowCount())]  # type: ignore[union-attr]
    assert owner in accounts
    row = accounts.index(owner)

    # A row without a name is refused, in the dialog; nothing is written.
    assert not dialog.save()
    assert "invalid_address_book" in dialog.error.text() and not book_path(settings).exists()
    for r in range(dialog.table.rowCount()):
        dialog.table.setItem(r, NAME, QTableWidgetItem("Alice" if r == row else f"someone {r}"))
    with qtbot.waitSignal(dialog.saved, timeout=ms(5)):
        dialog.save()
    saved = json.loads(book_path(settings).read_text())
    assert saved["accounts"][owner] == "Alice"
    for lane in chain.lane_widgets:
        if str(chain.lanes.session(lane.row).account) == owner:
            assert lane.title.text().startswith("Alice · ") and "Alice" in lane.title.toolTip()

    # The next start reads the same file.
    again = Inspector(pool=inspector.pool, recent=RecentTargets(QSettings(settings.fileName(), settings.format())))
    try:
        assert again.addressbook.name(owner) == "Alice" and not again.addressbook_error
    finally:
        run(qtbot, again.close())
    window.close()


def test_a_broken_address_book_is_a_warning(qtbot: QtBot, inspector: Inspector, settings: QSettings) -> None:
    book_path(settings).write_text("not json")
    broken = Inspector(pool=inspector.pool, recent=RecentTargets(settings))
    try:
        assert broken.addressbook.names() == {} and "is not JSON" in broken.addressbook_error
        window = MainWindow(broken)
        qtbot.addWidget(window)
        window.show()
        assert window.banner.isVisibleTo(window) and window.banner.property("kind") == "warning"
        assert "invalid_address_book" in window.banner_text.text()
        window.close()
        assert book_path(settings).read_text() == "not json"  # never overwritten unasked
    finally:
        run(qtbot, broken.close())


def test_same_named_covalues_are_told_apart(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, tmp_path: Path
) -> None:
    path = tmp_path / "store"
    with LocalNode.open(path, AccountKey.generate()) as node:
        group = node.create_group(meta={"name": "team"})
        twins = [node.create_map(group.id, meta={"name": "doc"}).id for _ in range(2)]
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        inspector.open_later(TargetSpec("store", str(path)))
    view = window.navigator
    shown = {}
    for row in range(view.covalues.rowCount()):
        index = view.covalues.index(row, CoValueListModel.NAME)
        option = QStyleOptionViewItem()
        view.names.initStyleOption(option, index)  # as the delegate paints the row
        shown[index.data(Role.ID)] = option.text
    assert shown[str(group.id)] == "team"  # a unique name as it is
    texts = [shown[str(cid)] for cid in twins]
    assert texts[0] != texts[1]
    for cid, text in zip(twins, texts, strict=True):
        assert text == f"doc · …{str(cid)[-5:]}"
    assert window.show_covalue(str(twins[1]))
    wait_for(qtbot, lambda: window.chain.heading.text().startswith(f"doc · …{str(twins[1])[-5:]} · comap"))
    window.close()
