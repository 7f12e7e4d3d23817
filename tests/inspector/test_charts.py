"""The charts: a CAS slot's generation over time with its lost races, and each peer's lag over
time, offscreen with real widgets.

- The chart models hold the right points: for a CAS history written into a real SQLite store
  with a known clock (steps, stored and lost attempts at their times), and for a sequence of
  peer reads (each ring bounded, oldest dropped, a gone peer's line kept until it ages out).
- The charts draw those points, follow their models through a throttle, redraw only when
  visible, take their colours from the palette (a dark one too), and 600 samples × 50 peers
  redraw within the loop's 50 ms budget.
- In the main window on the embedded demo, the contended slot's chart marks its lost races and
  the lagged peer's line stays after the node closed it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPalette
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult
from engine.diagnostics.bundle import BundleInputs, export_bundle
from engine.diagnostics.redact import Redaction, RedactionPolicy, Tokenizer
from engine.kv.envelope import Present
from engine.kv.store import CASRecord
from engine.storage import open_store
from engine.storage.sqlite.kv import SQLiteKV
from engine.sync.lag import LagHistory
from engine.sync.peers import PeerInfo
from inspector.controller import Inspector
from inspector.lag import LoopLagMonitor
from inspector.models.charts import CasChartModel, CasMark, PeerLagChartModel, cas_chart
from inspector.models.kv import CasTimelineModel
from inspector.models.peers import PeersModel
from inspector.targets import LiveDemoTarget, TargetSpec
from inspector.views.charts import (
    NEW_LINES_PER_REDRAW,
    REDRAW_INTERVAL_MS,
    CasTimelineChart,
    PeerLagChart,
    series_color,
)
from inspector.views.kv import CasView
from inspector.views.main_window import MainWindow
from inspector.views.peers import PeersView
from inspector.workers import WorkerPool
from tests.inspector.conftest import check_png, ms, run, save_screenshot, wait_for
from tests.util import UNIT

T0 = 1_780_000_000_000
KEY = "prefs/recent"
#: The loop's budget (DESIGN §11), scaled like every wait.
STALL_BUDGET = 0.05 * UNIT


def peer(peer_id: str, behind: int, queue_bytes: int = 0, account: str = "acc_zAlice") -> PeerInfo:
    return PeerInfo(peer_id, "in", account, "client", False, 2, behind, 1, queue_bytes, 0)


# -- the CAS chart --------------------------------------------------------------------------


def write_contended_history(path: Path, namespace: str) -> list[tuple[int, str, int, str]]:
    """Two tabs racing on one key of a real store, at known times. Returns (time, writer,
    expected generation, outcome) per attempt."""
    store = open_store(path)
    now = [T0]
    tabs = {name: SQLiteKV(store.conn, writer=name, clock_ms=lambda: now[0]) for name in ("tab-a", "tab-b")}
    plan = [  # (ms after T0, writer, expected generation)
        (0, "tab-a", 0),  # stored: 0 -> 1
        (400, "tab-b", 0),  # lost: the slot was at 1
        (900, "tab-b", 1),  # stored: 1 -> 2
        (1500, "tab-a", 1),  # lost: the slot was at 2
        (1600, "tab-a", 2),  # stored: 2 -> 3
        (2500, "tab-b", 2),  # lost: at 3
    ]
    done = []
    try:
        for offset, writer, expected in plan:
            now[0] = T0 + offset
            result = tabs[writer].cas(namespace, KEY, expected, Present({"by": writer, "at": offset}))
            done.append((now[0], writer, expected, type(result).__name__.lower()))
    finally:
        store.close()
    return done


def test_a_cas_history_charts_as_generation_steps_with_lost_races_marked(
    qtbot: QtBot, inspector: Inspector, tmp_path: Path
) -> None:
    namespace = AccountKey.generate().account_id
    written = write_contended_history(tmp_path / "store", namespace)
    assert [outcome for *_, outcome in written] == ["stored", "conflict", "stored", "conflict", "stored", "conflict"]
    assert run(qtbot, inspector.open(TargetSpec("store", str(tmp_path / "store"))))
    model = CasChartModel(inspector.cas_timeline)
    assert model.chart().line_ms == ()  # no slot selected
    with qtbot.waitSignal(model.changed):
        inspector.select_slot(namespace, KEY)
    chart = model.chart()
    # the line starts at generation 0 and steps up at each stored write, up to the last attempt
    assert list(zip(chart.line_ms, chart.line_gen, strict=True)) == [
        (T0, 0),
        (T0, 1),
        (T0 + 900, 1),
        (T0 + 900, 2),
        (T0 + 1600, 2),
        (T0 + 1600, 3),
        (T0 + 2500, 3),
    ]
    assert [(m.at_ms, m.generation, m.writer) for m in chart.stored] == [
        (T0, 1, "tab-a"),
        (T0 + 900, 2, "tab-b"),
        (T0 + 1600, 3, "tab-a"),
    ]
    # each lost race at its time, on the line: the generation the loser met, not the one it expected
    assert chart.lost == (
        CasMark(1, T0 + 400, 1, 0, "tab-b", True),
        CasMark(3, T0 + 1500, 2, 1, "tab-a", True),
        CasMark(5, T0 + 2500, 3, 2, "tab-b", True),
    )
    assert model.slot == (namespace, KEY) and model.available

    # the view draws what the model holds, and a click on a lost race selects its attempt
    view = CasView(inspector.cas_slots, inspector.cas_timeline)
    qtbot.addWidget(view)
    view.resize(1000, 800)
    view.show()
    view.select(namespace, KEY)
    wait_for(qtbot, lambda: view.chart.redraws >= 1 and len(view.chart.lost.data) == 3)
    xs, ys = view.chart.lost.getData()
    assert list(xs) == [(T0 + t) / 1000 for t in (400, 1500, 2500)] and list(ys) == [1.0, 2.0, 3.0]
    xs, ys = view.chart.line.getData()
    assert list(ys) == [0, 1, 1, 2, 2, 3, 3] and xs[-1] == (T0 + 2500) / 1000
    assert view.chart.stored.getData()[1].tolist() == [1.0, 2.0, 3.0]
    assert "3 lost races" in view.timeline_heading.text()  # the table's heading still counts them
    qtbot.waitUntil(lambda: view.chart.plot.getViewBox().viewRange()[0][1] >= (T0 + 2500) / 1000, timeout=ms(5))
    viewbox = view.chart.plot.getViewBox()
    target = view.chart.plot_widget.mapFromScene(viewbox.mapViewToScene(QPointF((T0 + 1500) / 1000, 2.0)))
    with qtbot.waitSignal(view.chart.markClicked) as clicked:
        qtbot.mouseClick(view.chart.plot_widget.viewport(), Qt.MouseButton.LeftButton, pos=target)
    assert clicked.args == [3] and view.timeline_table.currentIndex().row() == 3
    assert "lost race: expected generation 1, the slot was at 2" in view.chart.lost.opts["tip"](
        x=0.0, y=0.0, data=chart.lost[1]
    )
    check_png(save_screenshot(view, "cas-chart.png"))

    # a new attempt appended to the store reaches the chart on the next refresh
    store = open_store(tmp_path / "store")
    try:
        SQLiteKV(store.conn, writer="tab-a", clock_ms=lambda: T0 + 3000).cas(namespace, KEY, 3, Present("x"))
    finally:
        store.close()
    redraws = view.chart.redraws
    inspector.cas_timeline.refresh()
    wait_for(qtbot, lambda: view.chart.redraws > redraws)
    assert view.chart.stored.getData()[1].tolist() == [1.0, 2.0, 3.0, 4.0]
    inspector.select_slot(None, None)
    wait_for(qtbot, lambda: view.chart.shown.line_ms == () and len(view.chart.lost.data) == 0)


def test_a_history_cut_at_its_oldest_end_still_charts_from_what_is_kept() -> None:
    """The store keeps a bounded history per key: the first record kept may be a lost race."""
    records = [
        CASRecord("ns", "k", T0, 7, "conflict", 9, "w1"),  # the slot was at 9 already
        CASRecord("ns", "k", T0 + 10, 9, "stored", 10, "w2"),
        CASRecord("ns", "k", T0 + 20, 9, "conflict", 10, "w1"),
    ]
    chart = cas_chart(records)
    assert list(zip(chart.line_ms, chart.line_gen, strict=True)) == [
        (T0, 9),
        (T0 + 10, 9),
        (T0 + 10, 10),
        (T0 + 20, 10),
    ]
    assert [(m.at_ms, m.generation) for m in chart.lost] == [(T0, 9), (T0 + 20, 10)]
    assert cas_chart([]).line_ms == () and cas_chart([]).lost == ()
    single = cas_chart([CASRecord("ns", "k", T0, 0, "stored", 1, None)])
    assert list(zip(single.line_ms, single.line_gen, strict=True)) == [(T0, 0), (T0, 1)]


# -- the lag chart --------------------------------------------------------------------------


def test_the_lag_chart_model_follows_the_peer_reads(qtbot: QtBot) -> None:
    peers = PeersModel(lag=LagHistory(keep_samples=4))
    model = PeerLagChartModel(peers)
    history = peers.lag
    reads = [
        [peer("in:1", 10, 1000), peer("in:2", 0)],
        [peer("in:1", 30, 5000), peer("in:2", 1)],
        [peer("in:2", 2)],  # in:1 was closed
        [peer("in:2", 3)],
        [peer("in:2", 4)],
        [peer("in:2", 5)],  # in:1's last sample (T0+1000) is now older than the window
    ]
    for i, rows in enumerate(reads):
        with qtbot.waitSignal(model.changed):
            history.record(T0 + i * 1000, rows)
            peers.sampled.emit()
        lines = {line.peer_id: line for line in model.lines()}
        if i == 1:
            assert list(lines["in:1"].values) == [10, 30] and lines["in:1"].connected
            assert list(model.lines("queue_bytes")[0].values) == [1000, 5000]
        if i == 3:
            assert list(lines["in:1"].at_ms) == [T0, T0 + 1000] and not lines["in:1"].connected
        if i == 4:
            assert list(lines["in:1"].at_ms) == [T0 + 1000]  # its oldest sample dropped first
    lines = {line.peer_id: line for line in model.lines()}
    assert set(lines) == {"in:2"}  # aged out
    assert list(lines["in:2"].values) == [2, 3, 4, 5]
    assert list(lines["in:2"].at_ms) == [T0 + i * 1000 for i in range(2, 6)]
    assert model.window() == (T0 + 2000, T0 + 5000)
    with pytest.raises(KeyError):
        model.lines("rtt")


def fill(history: LagHistory, peers: int, samples: int, start: int = 0) -> None:
    rng = np.random.default_rng(7)
    walk = np.abs(np.cumsum(rng.integers(-40, 50, size=(samples, peers)), axis=0))
    for t in range(samples):
        history.record(
            T0 + (start + t) * 1000,
            [
                peer(f"in:{p}:acc_z{p:03d}", int(walk[t, p]), int(walk[t, p]) * 90, f"acc_z{p % 11}")
                for p in range(peers)
            ],
        )


def test_the_lag_chart_redraws_only_when_visible_and_at_most_once_per_interval(qtbot: QtBot) -> None:
    peers = PeersModel()
    chart = PeerLagChart(PeerLagChartModel(peers))
    qtbot.addWidget(chart)
    for i in range(5):
        peers.lag.record(T0 + i, [peer("in:1", i)])
        peers.sampled.emit()
    assert chart.redraws == 0 and not chart.throttle.active  # hidden: nothing drawn
    chart.resize(900, 300)
    chart.show()
    assert chart.redraws == 1  # shown: drawn at once, for all that changed meanwhile
    assert list(chart.curves) == ["in:1"]
    started = time.monotonic()
    for i in range(20):  # a burst of reads
        peers.lag.record(T0 + 10 + i, [peer("in:1", i), peer("in:2", 2 * i)])
        peers.sampled.emit()
    wait_for(qtbot, lambda: chart.redraws >= 2)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert chart.redraws <= 1 + max(1, int(elapsed_ms // REDRAW_INTERVAL_MS) + 1)
    wait_for(qtbot, lambda: not chart.throttle.active)
    assert set(chart.curves) == {"in:1", "in:2"}
    assert chart.curves["in:2"].getData()[1][-1] == 38.0
    assert "in:2" in chart.legend.text() and "no peers to follow" in chart.heading.text()  # no target open
    chart.hide()
    peers.lag.record(T0 + 100, [peer("in:2", 1)])
    peers.sampled.emit()
    redraws = chart.redraws
    qtbot.wait(REDRAW_INTERVAL_MS * 2)
    assert chart.redraws == redraws  # not while hidden


def test_600_samples_by_50_peers_redraw_within_the_loop_budget(qtbot: QtBot) -> None:
    peers = PeersModel()
    fill(peers.lag, peers=50, samples=600)
    chart = PeerLagChart(PeerLagChartModel(peers))
    qtbot.addWidget(chart)
    chart.resize(1200, 360)
    chart.show()
    # new lines are set up a few at a time: no single redraw pays for all fifty
    firsts = []
    while len(chart.curves) < 50:
        before = len(chart.curves)
        chart.redraw()
        assert len(chart.curves) - before <= NEW_LINES_PER_REDRAW
        firsts.append(chart.last_redraw_ms)
    timings = []
    for step in range(7):  # steady state: one new read per redraw, every line moves
        fill(peers.lag, peers=50, samples=1, start=600 + step)
        started = time.perf_counter()
        chart.redraw()
        chart.plot_widget.grab()  # the paint that follows, forced now
        timings.append((time.perf_counter() - started) * 1000)
    median = statistics.median(timings)
    print(f"\nlag chart, 600 samples x 50 peers: redraw + paint median {median:.1f} ms {timings}, first {firsts}")
    assert all(len(curve.getData()[0]) == 600 for curve in chart.curves.values())
    assert median < STALL_BUDGET * 1000, timings


def test_the_charts_take_their_colours_from_a_dark_palette(qtbot: QtBot) -> None:
    peers = PeersModel()
    peers.lag.record(T0, [peer("in:1", 5, account="acc_zA"), peer("in:2", 9, account="acc_zB")])
    chart = PeerLagChart(PeerLagChartModel(peers))
    qtbot.addWidget(chart)
    chart.show()
    chart.redraw()
    dark = QPalette(chart.palette())
    dark.setColor(QPalette.ColorRole.Base, QColor("#1e1e1e"))
    dark.setColor(QPalette.ColorRole.Window, QColor("#2b2b2b"))
    dark.setColor(QPalette.ColorRole.Text, QColor("#e6e6e6"))
    dark.setColor(QPalette.ColorRole.WindowText, QColor("#e6e6e6"))
    chart.setPalette(dark)
    wait_for(qtbot, lambda: chart.plot_widget.backgroundBrush().color() == QColor("#1e1e1e"))
    axis = chart.plot.getAxis("left")
    assert axis.textPen().color() == QColor("#e6e6e6")
    chart.redraw()
    for curve in chart.curves.values():
        assert curve.opts["pen"].color().lightness() >= 110  # readable on the dark background
    assert series_color(0, dark).lightness() > series_color(0, QPalette(QColor("#f0f0f0"))).lightness()
    colors = {curve.opts["pen"].color().name() for curve in chart.curves.values()}
    assert len(colors) == 2  # two accounts, two colours

    cas = CasTimelineChart(CasChartModel(CasTimelineModel()))
    qtbot.addWidget(cas)
    cas.setPalette(dark)
    assert cas.plot_widget.backgroundBrush().color() == QColor("#1e1e1e")
    assert all("e6e6e6" in label.item.toHtml() for _sample, label in cas.legend.items)  # the legend's text too
    assert cas.lost.opts["pen"].color().lightness() >= 110


def test_a_bundle_s_peers_are_a_snapshot_with_no_lag_over_time(
    qtbot: QtBot, inspector: Inspector, demo_store: DemoResult, tmp_path: Path
) -> None:
    src = open_store(demo_store.store, readonly=True)
    try:
        redaction = Redaction(RedactionPolicy(), Tokenizer(bytes(range(32))))
        inputs = BundleInputs("store", src.location, store=src, peers=[peer("in:3:acc_zX", 700, 9000)], peer_log=[])
        result = export_bundle(inputs, tmp_path / "incident.zip", redaction)
    finally:
        src.close()
    assert result is not None
    view = PeersView(inspector.peers, inspector.peer_log)
    qtbot.addWidget(view)
    view.show()
    assert run(qtbot, inspector.open(TargetSpec("bundle", str(result.path))))
    assert inspector.peers.rowCount() == 1 and not inspector.peers.lag_followed
    inspector.peers.refresh()  # read again ...
    assert inspector.peers.lag.version == 0 and view.lag_chart.curves == {}  # ... and never charted as history
    wait_for(qtbot, lambda: "snapshot" in view.lag_chart.heading.text())


# -- on the embedded demo -------------------------------------------------------------------


def test_the_demo_s_contended_slot_and_lagged_peer_in_the_window(  # noqa: PLR0917 - fixtures
    heap_frozen: None,
    qtbot: QtBot,
    inspector: Inspector,
    model_testers: Callable[[Any], None],
    window: MainWindow,
    pool: WorkerPool,
    monitor: LoopLagMonitor,
) -> None:
    target = LiveDemoTarget(TargetSpec("demo"), pool)
    model_testers(inspector.peers)
    with qtbot.waitSignal(inspector.loaded, timeout=ms(60)):
        assert run(qtbot, inspector.open(target.spec, target), units=60)
    demo = target.demo
    assert demo is not None

    # the peers tab: the lagged peer's line, with what it fell behind by, stays once it is closed
    window.tabs.setCurrentWidget(window.peers)
    chart = window.peers.lag_chart
    history = inspector.peers.lag
    log = inspector.peer_log

    def lagged_peer() -> str | None:
        ids = [log.entry(r).peer_id for r in range(log.rowCount()) if log.entry(r).lagged]
        return next((p for p in ids if history.ring(p) is not None), None)

    wait_for(qtbot, lambda: lagged_peer() is not None, units=45)
    stalled = lagged_peer()
    assert stalled is not None
    ring = history.ring(stalled)
    assert ring is not None and max(ring.behind) > 0 and not history.connected(stalled)
    assert inspector.peers.row_of(stalled) < 0  # gone from the table, not from the chart

    def drawn_gone() -> bool:  # drawn faded once the chart redrew after the close
        curve = chart.curves.get(stalled)
        return curve is not None and curve.opts["pen"].color().alpha() < 255

    wait_for(qtbot, drawn_gone)
    assert chart.curves[stalled].getData()[1].max() == max(ring.behind)
    wait_for(qtbot, lambda: " gone" in chart.heading.text())
    # redraws follow the once-a-second read of the peers, and none of them stalls the loop
    monitor.reset()
    redraws = chart.redraws
    wait_for(qtbot, lambda: chart.redraws >= redraws + 3, units=10)
    lag_ms = monitor.max_lag * 1000
    print(
        f"\nlag chart on the demo: last redraw {chart.last_redraw_ms:.1f} ms, max loop lag {lag_ms:.1f} ms "
        f"({monitor.max_busy * 1000:.1f} ms working)"
    )
    assert monitor.max_busy < STALL_BUDGET, monitor.recent(100)
    chart.set_metric("queue_bytes")
    axis = chart.plot.getAxis("left")
    wait_for(qtbot, lambda: axis.labelText == "Queue bytes" and "bytes queued" in chart.heading.text())
    assert chart.curves[stalled].getData()[1].max() == max(ring.queue_bytes) > 0
    check_png(save_screenshot(window, "peers-lag-chart.png"))
    chart.set_metric("behind")

    # the CAS tab: the contended slot's lost races are marked at their times
    window.navigator.tree.setCurrentIndex(inspector.kv_tree.key_index(demo.node.account_id, KEY))
    assert window.tabs.currentWidget() is window.cas
    wait_for(qtbot, lambda: inspector.cas_timeline.rowCount() > 0)
    records = inspector.cas_timeline.records()
    lost = [r for r in records if r.outcome == "conflict"]
    assert lost
    cas = window.cas.chart
    wait_for(qtbot, lambda: len(cas.lost.data) == len(lost))
    assert cas.lost.getData()[0].tolist() == [r.at_ms / 1000 for r in lost]
    assert cas.lost.getData()[1].tolist() == [float(r.generation) for r in lost]
    assert cas.line.getData()[1].max() == max(r.generation for r in records)
    check_png(save_screenshot(window, "cas-chart-demo.png"))
    window.tabs.setCurrentWidget(window.peers)
    run(qtbot, inspector.close(), units=20)
    wait_for(qtbot, lambda: not chart.curves and not chart.throttle.active)  # another target: lines start over
