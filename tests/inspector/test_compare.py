"""The compare view, offscreen: opened from a conflict lane (folded prefix, fork row,
next/previous difference on the keys), a million-transaction pair shown from windows, two
whole targets picked from Actions → Compare…, and the fork mark on the origin lane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from engine.covalue import CoValueCore
from engine.crypto import AccountKey, chain_extend, signed_message
from engine.demo.scenario import DemoResult
from engine.diagnostics import analysis
from engine.diagnostics.chain_verify import RowState
from engine.diagnostics.compare import RowKind
from engine.diagnostics.compare_scopes import CoValueStatus
from engine.ids import CoValueID, SessionID, SessionKind, parse_session_id
from engine.model.header import Header, UnsafeAllowAll
from engine.model.session_log import MAX_BATCH_TRANSACTIONS, SessionLog
from engine.model.transaction import encode_transaction
from engine.storage.sqlite.store import SessionWrite, SQLiteStore
from inspector.controller import Inspector
from inspector.lag import LoopLagMonitor
from inspector.models.compare import PAGE_ROWS, CompareModel
from inspector.recent import RecentTargets
from inspector.style import DIFFERENT_BACKGROUND, FORK_BACKGROUND, ONLY_LEFT_BACKGROUND
from inspector.targets import TargetSpec
from inspector.views import compare as compare_view
from inspector.views.compare import CompareWindow
from inspector.views.compare_pick import ComparePickDialog
from inspector.views.connect import ConnectDialog
from inspector.views.main_window import MainWindow
from tests.engine.diagnostics._build import forked_stores, stored
from tests.inspector.conftest import ms, run, save_screenshot, wait_for
from tests.util import UNIT, run_cli

N = 1_000_000
FORK = 500_000
T0 = 1_700_000_000_000


def open_store_target(qtbot: QtBot, inspector: Inspector, path: str) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(30)):
        inspector.open_later(TargetSpec("store", path))


def the_compare_window(window: MainWindow) -> CompareWindow:
    (compare,) = window.comparer.windows
    return compare


KEYS = {
    "F8": (Qt.Key.Key_F8, Qt.KeyboardModifier.NoModifier),
    "Shift+F8": (Qt.Key.Key_F8, Qt.KeyboardModifier.ShiftModifier),
    "Alt+Down": (Qt.Key.Key_Down, Qt.KeyboardModifier.AltModifier),
    "Alt+Up": (Qt.Key.Key_Up, Qt.KeyboardModifier.AltModifier),
}


def press(qtbot: QtBot, compare: CompareWindow, keys: str) -> None:
    """Press ``keys`` in the compare view's left pane (its shortcuts work there)."""
    compare.activateWindow()
    compare.panes.left.setFocus()
    wait_for(qtbot, lambda: QApplication.focusWidget() is compare.panes.left)
    qtbot.keyClick(compare.panes.left, *KEYS[keys])


def test_compare_with_origin_from_a_conflict_lane(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_copy: Path, demo_store: DemoResult
) -> None:
    open_store_target(qtbot, inspector, str(demo_copy))
    notes = demo_store.maps["notes"]
    assert window.navigator.select_covalue(notes)
    wait_for(qtbot, lambda: len(window.chain.lane_widgets) == 4 and not window.chain.building)
    (fork,) = [f["index"] for f in demo_store.forks_detected]
    lanes = {lane.lanes.session(lane.row).kind: lane for lane in window.chain.lane_widgets}
    conflict_lane = lanes[SessionKind.CONFLICT]
    conflict = inspector.lanes.session(conflict_lane.row).id
    origin_row = next(
        r for r in range(inspector.lanes.rowCount()) if inspector.lanes.session(r).id == parse_session_id(conflict).base
    )
    # the origin lane marks where the conflict session was split off
    origin_chain = inspector.lanes.chain(origin_row)
    assert list(origin_chain.fork_marks) == [fork]
    assert origin_chain.index(fork, 0).data() == f"⋔ {fork}"
    assert origin_chain.index(fork, 2).data(Qt.ItemDataRole.BackgroundRole).name() == FORK_BACKGROUND
    assert "recorded" in origin_chain.index(fork, 0).data(Qt.ItemDataRole.ToolTipRole)

    menu = conflict_lane.compare_menu()
    assert menu is not None
    entries = {a.text(): a for a in menu.actions()}
    assert "Compare with origin" in entries and "Compare with…" in entries
    others = [a.text() for a in entries["Compare with…"].menu().actions() if not a.isSeparator()]  # type: ignore[union-attr]
    assert others[-1] == "The same session on another target…" and len(others) == 4  # the three other lanes
    entries["Compare with origin"].trigger()
    compare = the_compare_window(window)
    wait_for(qtbot, lambda: compare.session_model is not None)
    model = compare.session_model
    assert isinstance(model, CompareModel)
    alignment = model.alignment
    assert alignment.conflict is not None and alignment.conflict.recorded and alignment.common_prefix == fork
    # the folded prefix: one row with its count; then the fork row, marked and bold
    assert model.has_fold and model.rowCount() == 1 + alignment.total - fork
    assert f"{fork:,} common rows" in model.index(0, CompareModel.LEFT_CHANGE).data()
    assert model.fork_row == 1 and model.index(1, 0).data() == f"⋔ {fork}"
    assert model.index(1, 0).data(Qt.ItemDataRole.FontRole).bold()
    assert model.kind(1) is RowKind.DIFFERENT
    assert model.index(1, CompareModel.LEFT_CHANGE).data(Qt.ItemDataRole.BackgroundRole).name() == DIFFERENT_BACKGROUND
    assert "tab1" in model.index(1, CompareModel.LEFT_CHANGE).data()
    assert "tab2" in model.index(1, CompareModel.RIGHT_CHANGE).data()
    last = model.rowCount() - 1
    assert model.kind(last) is RowKind.ONLY_LEFT and model.index(last, CompareModel.RIGHT_CHANGE).data() == ""
    assert model.index(last, 2).data(Qt.ItemDataRole.BackgroundRole).name() == ONLY_LEFT_BACKGROUND
    assert "recorded" in compare.panes.summary.text()
    # both sides' verification marks
    wait_for(qtbot, lambda: model.state(1, True) is RowState.VERIFIED and model.state(1, False) is RowState.VERIFIED)
    wait_for(qtbot, lambda: model.index(1, CompareModel.RIGHT_STATE).data() == "✓")
    # next / previous difference on the keys: the fork row is current, F8 goes to the
    # only-left run, Shift+F8 back; Alt+Down / Alt+Up do the same
    wait_for(qtbot, compare.isVisible)
    assert compare.panes.current_row == 1
    only_left = model.display_row(alignment.common_prefix + 3)
    press(qtbot, compare, "F8")
    assert compare.panes.current_row == only_left
    assert compare.panes.right.currentIndex().row() == only_left  # both panes follow
    press(qtbot, compare, "Shift+F8")
    assert compare.panes.current_row == 1
    press(qtbot, compare, "Alt+Down")
    assert compare.panes.current_row == only_left
    press(qtbot, compare, "Alt+Up")
    assert compare.panes.current_row == 1
    save_screenshot(compare, "compare-origin.png")
    # a click on the fold row expands the prefix, another folds it again
    compare.panes.left.clicked.emit(model.index(0, CompareModel.LEFT_CHANGE))
    assert model.expanded and model.rowCount() == 1 + alignment.total and model.fork_row == fork + 1
    assert model.kind(1) is RowKind.COMMON and model.index(1, 0).data() == "0"
    compare.panes.fold_button.click()
    assert not model.expanded and model.fork_row == 1
    compare.close()
    wait_for(qtbot, lambda: not window.comparer.windows and not inspector.busy)


def write_million(path: Path, side: str) -> tuple[CoValueID, SessionID]:
    key = AccountKey.from_seed(b"\x02" * 32)
    core = CoValueCore(Header("comap", UnsafeAllowAll(), {"name": "a million to compare"}, b"pair", T0))
    log = SessionLog(core.id, SessionID(f"{key.account_id}_session_z2xXM3eePfED"))
    log.txs.extend(encode_transaction(T0 + i, [["set", f"k{i % 64}", i]]) for i in range(FORK))
    log.txs.extend(encode_transaction(T0 + i, [["set", f"k{i % 64}", f"{side}{i}"]]) for i in range(FORK, N))
    log.hashes.extend(chain_extend(log.base, log.txs))
    for n in range(MAX_BATCH_TRANSACTIONS, N + 1, MAX_BATCH_TRANSACTIONS):
        log.sigs[n] = key.sign(signed_message(core.id, log.session, n, log.hashes[n - 1]))
    store = SQLiteStore(path, synchronous="OFF")
    store.write([core.header], [SessionWrite(log, 0, N)])
    store.close()
    return core.id, log.session


@pytest.fixture(scope="module")
def million_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CoValueID, SessionID]:
    started = time.perf_counter()
    base = tmp_path_factory.mktemp("million-pair")
    covalue, session = write_million(base / "a", "a")
    write_million(base / "b", "b")
    print(f"\ntwo 1M-transaction stores generated in {time.perf_counter() - started:.1f} s")
    return base / "a", base / "b", covalue, session


@pytest.fixture
def lone_inspector(
    heap_frozen: None, qtbot: QtBot, loop: object, settings: QSettings
) -> Iterator[tuple[Inspector, LoopLagMonitor]]:
    monitor = LoopLagMonitor()
    monitor.start()
    inspector = Inspector(recent=RecentTargets(settings), monitor=monitor)
    inspector.start()
    yield inspector, monitor
    run(qtbot, inspector.close())
    run(qtbot, monitor.stop())


def test_a_million_transaction_pair_shows_its_first_rows_from_windows(
    qtbot: QtBot,
    lone_inspector: tuple[Inspector, LoopLagMonitor],
    million_pair: tuple[Path, Path, CoValueID, SessionID],
) -> None:
    inspector, monitor = lone_inspector
    left, right, covalue, session = million_pair
    compare = CompareWindow(inspector)
    qtbot.addWidget(compare)
    compare.show()
    qtbot.waitExposed(compare)
    try:
        # measured once the inspector's worker process is up: its start-up is not the compare's
        run(qtbot, inspector.pool.run(analysis.ping))
        wait_for(qtbot, lambda: monitor.samples >= 3)
        monitor.reset()
        started = time.perf_counter()
        specs = TargetSpec("store", str(left)), TargetSpec("store", str(right))
        assert run(qtbot, compare.compare_sessions(*specs, covalue, session, session))
        model = compare.session_model
        assert model is not None
        wait_for(qtbot, lambda: model.cached_rows > 0)
        first_rows = time.perf_counter() - started
        al = model.alignment
        assert al.fork is not None and al.fork.index == FORK and al.common_prefix == FORK
        assert model.rowCount() == 1 + N - FORK
        assert model.index(1, 0).data() == f"⋔ {FORK}"
        assert model.index(1, CompareModel.LEFT_CHANGE).data() == f'set k{FORK % 64} = "a{FORK}"'
        assert model.index(1, CompareModel.RIGHT_CHANGE).data() == f'set k{FORK % 64} = "b{FORK}"'
        # windows, not the sessions: the alignment's binary search and a page or two
        assert model.rows_fetched <= 4 * PAGE_ROWS + 2 * 24, model.rows_fetched
        # the last row, at the end of the panes (scrolled to once the first rows were shown
        # and the loop has turned: a user's next action)
        turns = monitor.samples
        wait_for(qtbot, lambda: monitor.samples >= turns + 2)
        compare.panes.left.scrollToBottom()
        assert model.index(model.rowCount() - 1, 0).data() == str(N - 1)
        assert model.rows_fetched <= 8 * PAGE_ROWS + 2 * 24
        # verification goes on in slices, never stalling the loop
        wait_for(qtbot, lambda: all(v.linked >= 20_000 for v in compare._verifiers))
        assert inspector.runner.longest_slice < 0.05 * UNIT
        assert monitor.max_busy < 0.05 * UNIT, [round(lag * 1000) for lag in monitor.recent(500)]
        print(
            f"\n1M pair in the compare view: first rows {first_rows * 1000:.0f} ms, rows read {model.rows_fetched}, "
            f"max loop lag {monitor.max_lag * 1000:.1f} ms ({monitor.max_busy * 1000:.1f} ms working)"
        )
        assert first_rows < 5 * UNIT
        save_screenshot(compare, "compare-million.png")
    finally:
        compare.close()
        run(qtbot, compare.release())


def test_actions_compare_picks_two_targets(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_copy: Path, tmp_path: Path
) -> None:
    assert window.compare_action.isEnabled()
    small, core, _log = stored(tmp_path / "small", 30)
    small.close()
    open_store_target(qtbot, inspector, str(demo_copy))
    window.compare_action.trigger()
    dialog = window.comparer.dialog
    assert isinstance(dialog, ComparePickDialog)
    assert dialog.left.currentData() == TargetSpec("store", str(demo_copy))
    ComparePickDialog._add(dialog.right, TargetSpec("store", str(tmp_path / "small")))
    dialog.accept()
    compare = the_compare_window(window)
    with qtbot.waitSignal(compare.compared, timeout=ms(30)):
        pass
    rows = {row.covalue: row.status for row in compare.covalues.items}
    assert rows[core.id] is CoValueStatus.ONLY_RIGHT
    assert sum(status is CoValueStatus.ONLY_LEFT for status in rows.values()) == 4
    # a CoValue of the list: its sessions paired by id, then its content compared
    notes = next(row for row in compare.covalues.items if row.status is CoValueStatus.ONLY_LEFT)
    index = compare.covalues.index(compare.covalues.items.index(notes), 0)
    with qtbot.waitSignal(compare.compared, timeout=ms(30)):
        compare.covalues_table.clicked.emit(index)
    assert compare.pairs.row_count() == len(notes.sessions) > 0
    assert compare.pairs.index(0, 1).data() == "only left"
    compare.close()
    wait_for(qtbot, lambda: not window.comparer.windows and not inspector.busy)


def test_the_same_session_on_another_target(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_copy: Path, demo_store: DemoResult
) -> None:
    """ "Compare with… → The same session on another target…" asks for the target in the
    connect dialog, opens it in the compare window (closed with it) and aligns the session:
    a copy of the store is identical."""
    open_store_target(qtbot, inspector, str(demo_copy))
    assert window.navigator.select_covalue(demo_store.maps["todo"])
    wait_for(qtbot, lambda: len(window.chain.lane_widgets) >= 1 and not window.chain.building)
    menu = window.chain.lane_widgets[0].compare_menu()
    assert menu is not None
    (others,) = [a.menu() for a in menu.actions() if a.text() == "Compare with…"]
    others.actions()[-1].trigger()  # type: ignore[union-attr]
    dialog = window.comparer.dialog
    assert isinstance(dialog, ConnectDialog)
    dialog.set_spec(TargetSpec("store", demo_store.store))
    dialog.accept()
    compare = the_compare_window(window)
    with qtbot.waitSignal(compare.compared, timeout=ms(30)):
        pass
    model = compare.session_model
    assert model is not None and model.alignment.identical
    assert model.rowCount() == 1 and model.fork_row is None and model.next_difference(-1) is None
    assert "Identical" in compare.panes.summary.text()
    assert len(compare._owned) == 1 and compare._owned[0].spec == TargetSpec("store", demo_store.store)
    compare.close()
    wait_for(qtbot, lambda: not window.comparer.windows and not inspector.busy)
    assert compare._owned == []


def test_a_pair_let_go_while_it_was_being_shown_leaves_nothing_behind(
    qtbot: QtBot, inspector: Inspector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Showing two sessions pauses between its steps (the last pause after reading the first
    rows). When the window lets the pair go during that pause (closed, or another pair
    shown), the show gives up: no model, no verifier left running."""
    core, sid, left, right = forked_stores(tmp_path, 250)
    monkeypatch.setattr(compare_view, "STEP_PAUSE", 0.5 * UNIT)  # wide enough to act in
    compare = CompareWindow(inspector)
    qtbot.addWidget(compare)
    try:
        specs = TargetSpec("store", str(left)), TargetSpec("store", str(right))
        showing = asyncio.ensure_future(compare.compare_sessions(*specs, core.id, sid, sid))
        wait_for(qtbot, lambda: len(compare._verifiers) == 2)  # aligned, first rows read: pausing
        verifiers = list(compare._verifiers)
        assert not showing.done()
        run(qtbot, compare.release())
        wait_for(qtbot, showing.done)
        assert showing.result() is False
        assert compare.session_model is None and compare.panes.model is None
        assert not any(e.verifier in verifiers for e in inspector.runner._entries)
        # the next pair shows as usual
        monkeypatch.setattr(compare_view, "STEP_PAUSE", 0.02)
        assert run(qtbot, compare.compare_sessions(*specs, core.id, sid, sid))
        model = compare.session_model
        assert model is not None and compare.panes.model is model
        assert model.alignment.fork is not None and model.alignment.fork.index == 250
    finally:
        compare.close()
        run(qtbot, compare.release())


def test_two_bundles_without_content_in_the_compare_view(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, tmp_path: Path
) -> None:
    """Two content-less bundles of replicas forked at 2345 side by side: the CoValue is
    listed forked, its session pair too (fork within one batch), and showing the session
    pair says the first differing row lies in [2300, 2400) from the checkpoint hashes."""
    core, sid, left, right = forked_stores(tmp_path, 2345)
    zips = []
    for store in (left, right):
        out = tmp_path / f"{store.name}.zip"
        run_cli("bundle", "export", str(store), "--out", str(out), "--json")
        zips.append(TargetSpec.parse(str(out)))
    compare = window.comparer.compare_targets(*zips)
    try:
        wait_for(qtbot, lambda: compare.covalues.rowCount() == 1, units=20)
        assert compare.covalues.items[0].status is CoValueStatus.FORKED
        assert run(qtbot, compare.compare_covalue(core.id))
        pair = compare.pairs.pair(0)
        assert pair.fork is not None and pair.fork_before is not None
        assert pair.fork.index <= 2345 < pair.fork_before and pair.fork_before - pair.fork.index <= 100
        assert run(qtbot, compare.show_sessions(core.id, sid, sid))
        assert "[2,300, 2,400)" in compare.panes.summary.text() and "[2,300, 2,400)" in compare.status.text()
        assert compare.session_model is None  # no rows to align
    finally:
        compare.close()
        run(qtbot, compare.release())
