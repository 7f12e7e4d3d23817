"""A store opened read-only says it is a snapshot and when it was taken; Reload (F5) re-reads
it after another process wrote to it, and with *Watch for changes* on, a write shows without
F5 (through QFileSystemWatcher, throttled)."""

from __future__ import annotations

import re
from pathlib import Path

from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.node.facade import LocalNode
from inspector.controller import Inspector
from inspector.targets import TargetSpec
from inspector.targets.store import StoreTarget
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import ms, wait_for
from tests.inspector.test_menus import activate, press

SNAPSHOT = re.compile(r"^snapshot taken at \d\d:\d\d:\d\d$")


def make_store(path: Path, key: AccountKey) -> str:
    """A store with a group and one CoMap; returns the group's id."""
    with LocalNode.open(path, key) as node:
        group = node.create_group(meta={"name": "team"})
        doc = node.create_map(group.id, meta={"name": "first"})
        node.set(doc.id, "k", 1)
        return str(group.id)


def add_map(path: Path, key: AccountKey, group: str, name: str) -> None:
    """Another process's write, as a second LocalNode on the same store."""
    with LocalNode.open(path, key, instance_id=f"writer-{name}") as node:
        doc = node.create_map(node.get(group).id, meta={"name": name})  # type: ignore[arg-type]
        node.set(doc.id, "k", 2)


def names(inspector: Inspector) -> set[str]:
    target = inspector.target
    assert target is not None
    return {s.name for s in map(target.summary, target.ids()) if s is not None and s.name}


def open_store(qtbot: QtBot, inspector: Inspector, path: Path) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        inspector.open_later(TargetSpec("store", str(path)))


def test_a_store_is_a_snapshot_and_f5_reloads_it(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, tmp_path: Path
) -> None:
    key = AccountKey.generate()
    path = tmp_path / "store"
    group = make_store(path, key)
    open_store(qtbot, inspector, path)
    status = window.status
    wait_for(qtbot, lambda: bool(SNAPSHOT.match(status.label.text())))
    assert status.banner.isVisibleTo(window) and "Snapshot" in status.banner_text.text()
    assert status.reload_button.isVisibleTo(window) and status.watch_box.isVisibleTo(window)
    assert not status.watch_box.isChecked()  # optional: off until asked for
    assert names(inspector) == {"team", "first"}
    taken = inspector.target.taken_at  # type: ignore[union-attr]

    add_map(path, key, group, "second")
    assert isinstance(inspector.target, StoreTarget) and inspector.target.changed_on_disk()
    assert names(inspector) == {"team", "first"}  # a snapshot: the write does not show by itself
    activate(qtbot, window)
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        press(qtbot, window, "F5")
    assert names(inspector) == {"team", "first", "second"}
    assert inspector.target.taken_at >= taken  # type: ignore[union-attr]

    # The banner's Reload button does the same.
    add_map(path, key, group, "third")
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        status.reload_button.click()
    assert "third" in names(inspector)
    window.close()


def test_watching_a_store_shows_writes_without_f5(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, tmp_path: Path
) -> None:
    key = AccountKey.generate()
    path = tmp_path / "store"
    group = make_store(path, key)
    open_store(qtbot, inspector, path)
    status = window.status
    status.watch_box.setChecked(True)
    assert status.watcher.files()  # the database (and its log when there is one)
    opened = []
    inspector.opened.connect(opened.append)
    add_map(path, key, group, "second")
    wait_for(qtbot, lambda: "second" in names(inspector) and inspector.is_loaded, units=20)
    assert len(opened) == 1  # one reload for the whole write (throttled)

    # Off again: writes wait for F5.
    status.watch_box.setChecked(False)
    assert not status.watcher.files() and not status.watcher.directories()
    add_map(path, key, group, "third")
    assert not status.watch_timer.isActive() and "third" not in names(inspector) and len(opened) == 1
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        window.reload_action.trigger()
    assert "third" in names(inspector) and len(opened) == 2
    window.close()
