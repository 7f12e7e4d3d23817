"""The session chain: windowed rows, verification state, a corrupt chain's first broken
link, invalid transactions, live growth — model and lane view."""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import QModelIndex, Qt
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult
from engine.diagnostics.chain_verify import ChainVerifier, RowState
from engine.diagnostics.covalue_summary import Badge
from engine.diagnostics.session_rows import LogSessionSource, StoreSessionSource
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.node.facade import LocalNode
from engine.storage.sqlite.store import SessionWrite, SQLiteStore
from inspector.controller import Inspector
from inspector.models.chain import PAGE_ROWS, SessionChainModel
from inspector.models.roles import Role
from inspector.style import BROKEN_BACKGROUND, INVALID_BACKGROUND
from inspector.targets import TargetSpec
from inspector.verification import VerificationRunner
from inspector.views.chain import LANE_BUILD_DELAY_MS, ChainView, column_widths
from inspector.views.main_window import MainWindow
from tests.engine.diagnostics._build import T0, comap, fill, key, session_of, stored, tamper_tx
from tests.inspector.conftest import ms, run, save_screenshot, wait_for

BROKEN_AT = 1500


def corrupt_store(path: Path) -> tuple[str, str]:
    store, core, log = stored(path, 3000, every=100)
    tamper_tx(store, log.session, BROKEN_AT, encode_transaction(T0, [["set", "evil", True]]))
    store.close()
    return core.id, log.session


def test_a_corrupt_session_shows_its_first_broken_link(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, tmp_path: Path
) -> None:
    covalue, _session = corrupt_store(tmp_path / "corrupt")
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)) as loaded:
        inspector.open_later(TargetSpec("store", str(tmp_path / "corrupt")))
    assert loaded.args[0]["corrupt"] == 1
    summary = inspector.target.summary(covalue)  # type: ignore[union-attr]
    assert summary is not None and Badge.CORRUPT in summary.badges
    assert window.navigator.select_covalue(covalue)
    lanes = inspector.lanes
    chain = lanes.chain(0)
    wait_for(qtbot, lambda: chain.verifier is not None and chain.verifier.done)
    assert chain.break_index() == BROKEN_AT
    assert lanes.index(0).data(Role.BREAK) == BROKEN_AT
    assert lanes.index(0).data(Role.VERIFICATION).startswith(f"broken at #{BROKEN_AT}")
    broken = chain.index(BROKEN_AT, SessionChainModel.STATE)
    assert broken.data(Role.STATE) == RowState.BROKEN and broken.data() == "✗"
    assert broken.data(Qt.ItemDataRole.BackgroundRole).name() == BROKEN_BACKGROUND
    assert chain.index(BROKEN_AT, 0).data(Qt.ItemDataRole.FontRole).bold()
    assert "stored hash does not match" in broken.data(Qt.ItemDataRole.ToolTipRole)
    # checkpoint 1500 signs rows up to 1499; nothing after the break can be verified
    assert chain.index(BROKEN_AT - 1, 0).data(Role.STATE) == RowState.VERIFIED
    assert chain.index(BROKEN_AT + 1, 0).data(Role.STATE) == RowState.UNVERIFIABLE
    assert chain.index(2999, 0).data(Role.STATE) == RowState.UNVERIFIABLE
    # the lane's "first broken link" button brings the row into view and selects it
    wait_for(qtbot, lambda: not window.chain.building)
    lane = window.chain.lane_widgets[0]
    assert lane.break_button.isVisibleTo(lane)
    lane.break_button.click()
    assert lane.table.currentIndex().row() == BROKEN_AT
    assert lane.table.rowAt(lane.table.viewport().height() // 2) in range(BROKEN_AT - 3, BROKEN_AT + 4)
    save_screenshot(window, "corrupt-chain.png")


def test_rows_are_read_a_page_at_a_time(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 3000, every=100)
    source = StoreSessionSource(store, core.id, log.session)
    model = SessionChainModel(source)
    assert model.rowCount() == 3000 and source.rows_read == 0
    assert model.index(5, SessionChainModel.CHANGE).data() == "set k5 = 5"
    assert source.rows_read == PAGE_ROWS
    assert model.index(PAGE_ROWS - 1, SessionChainModel.HASH).data() == log.hashes[PAGE_ROWS - 1][:4].hex()
    assert source.rows_read == PAGE_ROWS  # same page, no read
    assert model.index(2999, SessionChainModel.INDEX).data() == "2999"
    assert model.index(2999, SessionChainModel.MADE_AT).data(Role.RAW) == T0 + 2999
    assert source.rows_read == PAGE_ROWS + 3000 % PAGE_ROWS  # the last page is partial
    assert model.index(99, SessionChainModel.CHECKPOINT).data() == "◆"
    assert model.index(98, SessionChainModel.CHECKPOINT).data() == ""
    assert model.index(5, SessionChainModel.STATE).data() == "…"  # no verifier: not verified
    assert model.verification_text() == "not verified"
    assert model.data(model.index(0, 0), Qt.ItemDataRole.DecorationRole) is None
    assert model.index(3000, 0).data() is None and model.rowCount(model.index(0, 0)) == 0
    store.close()


def test_missing_rows_show_as_missing(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 2500, every=100)
    sid = store.conn.execute("SELECT sid FROM sessions").fetchone()[0]
    store.conn.execute("DELETE FROM blocks WHERE sid = ? AND start = 1000", (sid,))
    model = SessionChainModel(StoreSessionSource(store, core.id, log.session))
    assert model.index(1500, SessionChainModel.CHANGE).data() == "(missing)"
    assert model.index(1500, SessionChainModel.HASH).data() == ""
    assert model.index(2000, SessionChainModel.CHANGE).data() == "set k5 = 2000"
    store.close()


def test_invalid_transactions_are_struck_through_with_the_reason(
    qtbot: QtBot, inspector: Inspector, tmp_path: Path
) -> None:
    alice, mallory = key(1), key(9)
    path = tmp_path / "invalid"
    with LocalNode.open(path, alice) as node:
        group = node.create_group(meta={"name": "team"})
        doc = node.create_map(group.id, meta={"name": "doc"})
        node.set(doc.id, "ok", 1)
        doc_id = doc.id
    store = SQLiteStore(path)
    intruder = SessionLog(doc_id, session_of(mallory))
    intruder.append_pending(encode_transaction(T0, [["set", "owned", "by mallory"]]))
    intruder.sign(mallory)
    core = store.load_covalue(doc_id)
    assert core is not None
    store.write([core.header], [SessionWrite(intruder, 0, 1)])
    store.close()
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        inspector.open_later(TargetSpec("store", str(path)))
    summary = inspector.target.summary(doc_id)  # type: ignore[union-attr]
    assert summary is not None and Badge.INVALID_TRANSACTIONS in summary.badges
    inspector.select_covalue(doc_id)
    lanes = inspector.lanes
    row = next(r for r in range(lanes.rowCount()) if lanes.index(r).data(Role.ID) == intruder.session)
    change = lanes.chain(row).index(0, SessionChainModel.CHANGE)
    assert change.data(Qt.ItemDataRole.FontRole).strikeOut()
    assert change.data(Qt.ItemDataRole.BackgroundRole).name() == INVALID_BACKGROUND
    assert "invalid: author is not a member" in change.data(Qt.ItemDataRole.ToolTipRole)
    # verified all the same: it is signed history, just not content
    wait_for(qtbot, lambda: lanes.chain(row).verifier.done)  # type: ignore[union-attr]
    assert change.siblingAtColumn(SessionChainModel.STATE).data(Role.STATE) == RowState.VERIFIED


def test_a_live_session_grows_in_one_batch_and_is_reset_when_replaced(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot
) -> None:
    who: AccountKey = key(1)
    logs: dict[str, SessionLog] = {}
    sid = session_of(who)
    logs[sid] = log = SessionLog(comap().id, sid)
    fill(log, who, 100, every=50)
    source = LogSessionSource(log.covalue, sid, lambda: logs.get(sid))
    verifier = ChainVerifier(LogSessionSource(log.covalue, sid, lambda: logs.get(sid)))
    model = SessionChainModel(source, verifier)
    inserted: list[tuple[int, int]] = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    resets: list[bool] = []
    model.modelReset.connect(lambda: resets.append(True))
    assert model.index(99, 0).data() == "99"
    fill(log, who, 240, every=50, start=100, sign_tail=False)  # the last 40 stay unsigned
    model.refresh()
    assert inserted == [(100, 339)] and model.rowCount() == 340
    assert model.index(339, SessionChainModel.CHANGE).data() == "set k3 = 339"
    verifier.run()
    assert model.index(339, 0).data(Role.STATE) == RowState.UNSIGNED
    assert model.index(299, 0).data(Role.STATE) == RowState.VERIFIED
    assert model.verification_text() == "verified, 40 unsigned"
    replacement = SessionLog(log.covalue, sid)
    fill(replacement, who, 10, every=10)
    logs[sid] = replacement
    model.refresh()
    assert resets == [True] and model.rowCount() == 10
    model.refresh()
    assert resets == [True] and inserted == [(100, 339)]


def test_an_empty_lanes_model_builds_no_lanes(qtbot: QtBot, inspector: Inspector) -> None:
    view = ChainView(inspector.lanes)
    qtbot.addWidget(view)
    assert view.lane_widgets == [] and not view.building
    assert inspector.lanes.rowCount(QModelIndex()) == 0


def test_lane_widgets_are_rebound_not_rebuilt_and_wait_while_hidden(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, demo_store: DemoResult
) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        inspector.open_later(TargetSpec("store", demo_store.store))
    chain_view = window.chain
    assert window.navigator.select_covalue(demo_store.maps["notes"])
    wait_for(qtbot, lambda: len(chain_view.lane_widgets) == 4 and not chain_view.building)
    first = list(chain_view.lane_widgets)
    assert [lane.row for lane in first] == [0, 1, 2, 3]
    assert all(lane.table.model() is inspector.lanes.chain(lane.row) for lane in first)

    # another CoValue with two sessions: the first two lanes are bound again, the others
    # let go of their chains and are hidden
    assert window.navigator.select_covalue(demo_store.maps["todo"])
    wait_for(qtbot, lambda: not chain_view.building)
    assert chain_view.lane_widgets == first[:2]
    assert all(lane.chain is inspector.lanes.chain(row) for row, lane in enumerate(first[:2]))
    assert [lane.row for lane in first[2:]] == [-1, -1] and not any(lane.isVisible() for lane in first[2:])
    assert all(lane.table.model().rowCount() == 0 and lane.title.text() == "" for lane in first[2:])
    # columns keep the widths computed from the font, whatever was shown before
    header = first[0].table.horizontalHeader()
    assert header.sectionSize(SessionChainModel.INDEX) == column_widths(first[0].table.font())[SessionChainModel.INDEX]

    # while the chains tab is hidden, no lane is bound; they follow once it is shown
    window.tabs.setCurrentWidget(window.content)
    assert window.navigator.select_covalue(demo_store.maps["notes"])
    qtbot.wait(LANE_BUILD_DELAY_MS * 3)
    assert chain_view.building and chain_view.lane_widgets == []
    with qtbot.waitSignal(chain_view.lanesBuilt, timeout=ms(5)) as built:
        window.tabs.setCurrentWidget(chain_view)
    assert built.args == [4] and chain_view.lane_widgets == first


def test_the_verification_runner_stops_even_when_woken_as_it_is_stopped(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot
) -> None:
    # A refresh wakes the runner just before the inspector closes: the stop must not be lost
    # (with asyncio.wait_for, Python 3.11 swallowed it and close() waited forever).
    runner = VerificationRunner()
    runner.start()

    async def wake_and_stop() -> None:
        await asyncio.sleep(0.01)  # the runner now waits for work
        runner.wake()
        await runner.stop()

    run(qtbot, wake_and_stop(), units=5)
