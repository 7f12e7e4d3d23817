"""A 1,000,000-transaction session: rows come from windows, never all at once.

The store is generated once per session (encode_transaction + a SessionLog signed every
1,000 transactions + SQLiteStore.write). The tests count rows read from storage and time
the first rows and the jump to the end (printed, not asserted tightly), and hold the loop to
the UI budget (DESIGN §11: no stall over 50 ms, scaled by the test unit) from opening the
store until the worker process has analysed it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from engine.covalue import CoValueCore
from engine.crypto import AccountKey, chain_extend, signed_message
from engine.diagnostics.chain_verify import ChainVerifier
from engine.diagnostics.session_rows import StoreSessionSource
from engine.ids import CoValueID, SessionID
from engine.model.header import Header, UnsafeAllowAll
from engine.model.session_log import MAX_BATCH_TRANSACTIONS, SessionLog
from engine.model.transaction import encode_transaction
from engine.storage.sqlite.store import SessionWrite, SQLiteStore
from inspector.controller import Inspector
from inspector.lag import LoopLagMonitor
from inspector.models.chain import KEEP_PAGES, PAGE_ROWS, SessionChainModel
from inspector.recent import RecentTargets
from inspector.targets import TargetSpec
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import ms, run, save_screenshot, wait_for
from tests.util import UNIT

N = 1_000_000
T0 = 1_700_000_000_000
#: The UI budget (DESIGN §11), scaled like every other bound in the suite.
STALL_BUDGET = 0.05 * UNIT


@pytest.fixture(scope="session")
def million(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CoValueID, SessionID]:
    started = time.perf_counter()
    key = AccountKey.from_seed(b"\x01" * 32)
    core = CoValueCore(Header("comap", UnsafeAllowAll(), {"name": "a million edits"}, b"million", T0))
    log = SessionLog(core.id, SessionID(f"{key.account_id}_session_z2xXM3eePfED"))
    log.txs.extend(encode_transaction(T0 + i, [["set", f"k{i % 64}", i]]) for i in range(N))
    log.hashes.extend(chain_extend(log.base, log.txs))
    for n in range(MAX_BATCH_TRANSACTIONS, N + 1, MAX_BATCH_TRANSACTIONS):
        log.sigs[n] = key.sign(signed_message(core.id, log.session, n, log.hashes[n - 1]))
    core.sessions[log.session] = log
    path = tmp_path_factory.mktemp("million") / "store"
    store = SQLiteStore(path, synchronous="OFF")
    store.write([core.header], [SessionWrite(log, 0, N)])
    store.close()
    print(f"\n1M-transaction store generated in {time.perf_counter() - started:.1f} s")
    return path, core.id, log.session


@pytest.fixture
def million_store(million: tuple[Path, CoValueID, SessionID]) -> Iterator[tuple[SQLiteStore, CoValueID, SessionID]]:
    path, covalue, session = million
    store = SQLiteStore(path, readonly=True)
    yield store, covalue, session
    store.close()


def test_the_model_serves_rows_from_windows(million_store: tuple[SQLiteStore, CoValueID, SessionID]) -> None:
    store, covalue, session = million_store
    source = StoreSessionSource(store, covalue, session)
    started = time.perf_counter()
    model = SessionChainModel(source)
    first = [model.index(i, SessionChainModel.CHANGE).data() for i in range(40)]
    first_rows = time.perf_counter() - started
    started = time.perf_counter()
    last = [model.index(i, SessionChainModel.CHANGE).data() for i in range(N - 40, N)]
    jump = time.perf_counter() - started
    print(f"\n1M rows, model only: first 40 rows in {first_rows * 1000:.1f} ms, last 40 in {jump * 1000:.1f} ms")
    assert model.rowCount() == N
    assert first[0] == "set k0 = 0" and last[-1] == f"set k{(N - 1) % 64} = {N - 1}"
    assert model.index(N - 1, SessionChainModel.CHECKPOINT).data() == "◆"
    # two windows read, not a million rows
    assert source.rows_read <= 2 * PAGE_ROWS
    assert model.cached_rows <= 2 * PAGE_ROWS
    # scrolling through many pages keeps only a bounded cache
    for row in range(0, 200 * PAGE_ROWS, PAGE_ROWS):
        model.index(row, SessionChainModel.CHANGE).data()
    assert model.cached_rows <= KEEP_PAGES * PAGE_ROWS


def test_verification_runs_in_slices_and_is_chunked(million_store: tuple[SQLiteStore, CoValueID, SessionID]) -> None:
    store, covalue, session = million_store
    verifier = ChainVerifier(StoreSessionSource(store, covalue, session))
    started = time.perf_counter()
    verifier.step(5000)
    step = time.perf_counter() - started
    print(f"\n1M rows: one 5,000-row verification step takes {step * 1000:.1f} ms")
    assert verifier.linked == 5000 and verifier.verified == 5000 and not verifier.done
    assert verifier.source.rows_read == 5000  # type: ignore[attr-defined]


def test_the_window_opens_a_million_row_lane_quickly_and_never_stalls_while_it_is_analysed(
    heap_frozen: None,
    qtbot: QtBot,
    loop: object,
    settings: QSettings,
    million: tuple[Path, CoValueID, SessionID],
) -> None:
    path, covalue, _session = million
    monitor = LoopLagMonitor()
    monitor.start()
    # Its own worker process: analysing a million-row CoValue takes the worker a while,
    # and closing terminates it instead of leaving it busy for the next test.
    inspector = Inspector(recent=RecentTargets(settings), monitor=monitor)
    inspector.start()
    window = MainWindow(inspector)
    qtbot.addWidget(window)
    window.resize(1440, 880)
    window.show()
    try:
        # The window is up, and painted once, before anyone opens a store in it.
        qtbot.waitExposed(window)
        wait_for(qtbot, lambda: monitor.samples >= 3)
        monitor.reset()
        opened = time.perf_counter()
        with qtbot.waitSignal(inspector.opened, timeout=ms(10)):
            inspector.open_later(TargetSpec("store", str(path)))
        qtbot.wait(100)  # the window shows the store; then a click on the CoValue
        started = time.perf_counter()
        assert window.navigator.select_covalue(covalue)
        wait_for(qtbot, lambda: len(window.chain.lane_widgets) == 1)
        lane = window.chain.lane_widgets[0]
        chain = lane.chain
        assert chain is not None
        wait_for(qtbot, lambda: chain.cached_rows > 0)  # the first paint asked for rows
        first_rows = time.perf_counter() - started
        assert lane.table.rowAt(1) == 0 and chain.rowCount() == N

        qtbot.wait(100)  # a look at the first rows, then a click on "last rows"
        started = time.perf_counter()
        lane.end_button.click()
        qtbot.wait(1)  # let the jump paint
        jump = time.perf_counter() - started
        assert lane.table.rowAt(lane.table.viewport().height() - 2) == N - 1
        assert lane.table.model().index(N - 1, SessionChainModel.INDEX).data() == str(N - 1)

        # materialised: a few windows, not the session
        assert chain.rows_fetched <= 4 * PAGE_ROWS, chain.rows_fetched
        wait_for(qtbot, lambda: chain.verifier is not None and chain.verifier.linked >= 20_000)
        verifier = chain.verifier
        assert verifier is not None and not verifier.done  # still going, in slices
        # Meanwhile the worker process loads, verifies and summarizes the CoValue (seconds):
        # its results come back to the models, then the content.
        wait_for(qtbot, lambda: inspector.is_loaded, units=90)
        wait_for(qtbot, lambda: inspector.content.covalue == covalue, units=30)
        analysed = time.perf_counter() - opened
        print(
            f"\n1M rows in the window: first rows {first_rows * 1000:.0f} ms after selecting the CoValue, "
            f"jump to end {jump * 1000:.0f} ms, rows read by the view {chain.rows_fetched}, "
            f"longest verification slice {inspector.runner.longest_slice * 1000:.1f} ms; "
            f"analysed by the worker in {analysed:.1f} s: max loop lag {monitor.max_lag * 1000:.1f} ms "
            f"({monitor.max_busy * 1000:.1f} ms working) "
            f"over {monitor.samples} samples, {monitor.stalls} stalls over 50 ms"
        )
        assert first_rows < 5 * UNIT and jump < 2 * UNIT  # loose: machines differ; see the print
        assert inspector.runner.longest_slice < 0.05 * UNIT
        assert monitor.max_busy < STALL_BUDGET, [round(lag * 1000) for lag in monitor.recent(500) if lag > 0.02]
        save_screenshot(window, "million-rows.png")
    finally:
        window.close()
        run(qtbot, inspector.close())
        run(qtbot, monitor.stop())
