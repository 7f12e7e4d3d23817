"""Charts: the selected CAS slot's generation over time, and each peer's lag over time.

Why pyqtgraph: the project depends on PySide6-Essentials only, and QtCharts (like QtGraphs)
ships in PySide6-Addons, another ~450 MB that would also have to follow our PySide6 pin.
pyqtgraph is pure Python over QtWidgets' graphics view (its one extra dependency is numpy),
binds to PySide6 when PySide6 is imported first (as here), draws offscreen like any widget,
and redraws a time series from numpy arrays fast: 50 lines of 600 samples each take about
15-30 ms here, data and paint together, inside the 50 ms the loop may stall (DESIGN §11).
Matplotlib's Qt canvas would have redrawn the whole figure as an image each time, several
times slower. This module is the only one that imports pyqtgraph.

- :class:`CasTimelineChart` (over :class:`~inspector.models.charts.CasChartModel`): the
  generation line stepping at every write, stored attempts as dots, lost races as crosses at
  the generation the loser met; hovering a mark says who and what; clicking one emits
  ``markClicked(int)`` with its timeline row.
- :class:`PeerLagChart` (over :class:`~inspector.models.charts.PeerLagChartModel`): one line per
  peer, transactions behind or queue bytes; a peer that went away keeps its line, faded,
  until it ages out; the legend names the peers highest now (:data:`LEGEND_PEERS`).

Redraws are throttled: a change only schedules one through a named
:class:`~inspector.throttle.Throttle` (at most one per :data:`REDRAW_INTERVAL_MS`), and a chart
that is not visible (another tab) does not redraw until it is shown, then once, before its
first paint. Colours come from the
widget's palette (background, axes, grid) and from colour-blind-safe series colours adjusted
to the background, so a dark theme reads as well as a light one. Each chart keeps what it
last drew only as the items pyqtgraph paints; its model keeps nothing.
"""

from __future__ import annotations

import html
import time
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QColor, QHideEvent, QPalette, QPen, QShowEvent
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from inspector.models.charts import LAG_METRICS, CasChart, CasChartModel, CasMark, LagLine, PeerLagChartModel
from inspector.style import format_ms, short_id
from inspector.throttle import Throttle

__all__ = [
    "LEGEND_PEERS",
    "LOST_COLOR",
    "MIN_SPAN_MS",
    "NEW_LINES_PER_REDRAW",
    "REDRAW_INTERVAL_MS",
    "SERIES_COLORS",
    "CasTimelineChart",
    "PeerLagChart",
    "series_color",
]

#: Least time between two redraws of one chart: changes arriving faster are coalesced.
REDRAW_INTERVAL_MS = 250
#: Peers named in the lag chart's legend (those highest now; the others are drawn unnamed,
#: and hovering is not needed to tell the worst ones apart).
LEGEND_PEERS = 8
#: Series colours: the Okabe–Ito set without black, which stays apart for the common
#: colour-blindnesses. :func:`series_color` lightens or darkens them to the background.
SERIES_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442")
#: Lost races (Okabe–Ito vermillion, as the timeline table's highlight is an orange tint).
LOST_COLOR = "#d55e00"
#: Lines the lag chart adds per redraw: each new line costs about a millisecond to set up, so
#: fifty peers appearing at once are drawn over a few redraws, none of them a stall.
NEW_LINES_PER_REDRAW = 16
#: Least time span the lag chart shows (ms): a history of a few seconds is drawn at the right
#: of a minute, as a monitor fills up, and the time axis reads in clock time, not seconds.
MIN_SPAN_MS = 60_000
#: Width of the lag chart's left axis, in pixels (seven-digit ticks and the axis label).
LEFT_AXIS_WIDTH = 76
#: Opacity of a gone peer's line.
GONE_ALPHA = 110


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Base).lightness() < 128


def readable(color: str | QColor, palette: QPalette) -> QColor:
    """``color`` lightened on a dark background, darkened on a light one, when it would be
    too close to the background to read."""
    c = QColor(color)
    if is_dark(palette):
        return c.lighter(150) if c.lightness() < 110 else c
    return c.darker(150) if c.lightness() > 150 else c


def series_color(index: int, palette: QPalette) -> QColor:
    """The ``index``-th series colour (round the set), readable on the palette's background."""
    return readable(SERIES_COLORS[index % len(SERIES_COLORS)], palette)


class _Chart(QWidget):
    """A plot with a throttled, visibility-aware redraw and palette-driven colours.

    Subclasses implement :meth:`_draw` (called by :meth:`redraw`) and :meth:`_apply_palette`.
    Emits ``redrawn()`` after each redraw.
    """

    redrawn = Signal()

    def __init__(self, name: str, y_label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.plot_widget = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        self.plot_widget.setObjectName(f"{name}Plot")
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("left", y_label)
        self.plot.getViewBox().setMouseEnabled(x=True, y=False)
        self.plot_widget.setMinimumHeight(140)
        self.throttle = Throttle(f"chart.{name}", self._flush, REDRAW_INTERVAL_MS, parent=self)
        self.redraws = 0
        #: Milliseconds the last :meth:`redraw` took (handing the data to the plot; the paint
        #: follows in Qt's paint event).
        self.last_redraw_ms = 0.0
        self._dirty = True

    def schedule(self) -> None:
        """Redraw soon (coalesced), or when next shown if hidden now."""
        self._dirty = True
        if self.isVisible():
            self.throttle.push("redraw")

    def _flush(self, _batch: Any) -> None:
        if self.isVisible():
            self.redraw()

    def redraw(self) -> None:
        """Redraw from the model now."""
        started = time.perf_counter()
        self._dirty = False
        self._draw()
        self.redraws += 1
        self.last_redraw_ms = (time.perf_counter() - started) * 1000
        self.redrawn.emit()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._dirty:  # what changed while hidden: drawn before the first paint shows it
            self.redraw()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        if self.throttle.active:  # redraw when shown again rather than while hidden
            self.throttle.stop()
            self._dirty = True

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_base_palette()
            self.schedule()

    def _apply_base_palette(self) -> None:
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.Text)
        self.plot_widget.setBackground(palette.color(QPalette.ColorRole.Base))
        for side in ("left", "bottom"):
            axis = self.plot.getAxis(side)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))
        self._apply_palette(palette)

    def _apply_palette(self, palette: QPalette) -> None:
        raise NotImplementedError

    def _draw(self) -> None:
        raise NotImplementedError


def _mark_tip(x: float, y: float, data: CasMark) -> str:
    what = (
        f"lost race: expected generation {data.expected_gen}, the slot was at {data.generation}"
        if data.lost
        else f"stored: generation {data.expected_gen} → {data.generation}"
    )
    return f"{format_ms(data.at_ms)}\n{what}\nwriter {data.writer or '(unknown)'}"


class CasTimelineChart(_Chart):
    """The selected slot's generation over time. Emits ``markClicked(int)`` (timeline row)."""

    markClicked = Signal(int)

    def __init__(self, model: CasChartModel, parent: QWidget | None = None) -> None:
        super().__init__("casChart", "Generation", parent)
        self.model = model
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.line = pg.PlotDataItem(name="generation")
        self.stored = pg.ScatterPlotItem(symbol="o", size=7, hoverable=True, tip=_mark_tip, name="stored")
        self.lost = pg.ScatterPlotItem(symbol="x", size=13, hoverable=True, tip=_mark_tip, name="lost race")
        self.legend = self.plot.addLegend(offset=(10, 10))
        for item in (self.line, self.stored, self.lost):
            self.plot.addItem(item)
        for scatter in (self.stored, self.lost):
            scatter.sigClicked.connect(self._clicked)
        self.shown = CasChart()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        self._apply_base_palette()
        model.changed.connect(self.schedule)

    def _apply_palette(self, palette: QPalette) -> None:
        line = readable(palette.color(QPalette.ColorRole.Highlight), palette)
        lost = readable(LOST_COLOR, palette)
        self.line.setPen(pg.mkPen(line, width=2))
        self.stored.setPen(pg.mkPen(None))
        self.stored.setBrush(pg.mkBrush(line))
        self.lost.setPen(pg.mkPen(lost, width=2))
        self.lost.setBrush(pg.mkBrush(lost))
        self.legend.setLabelTextColor(palette.color(QPalette.ColorRole.Text))
        for _sample, label in self.legend.items:
            label.setText(label.text)  # a label takes a new colour only when its text is set
        self.legend.setBrush(pg.mkBrush(palette.color(QPalette.ColorRole.Base)))

    def _draw(self) -> None:
        chart = self.model.chart()
        self.shown = chart
        self.line.setData(np.asarray(chart.line_ms, dtype=float) / 1000, np.asarray(chart.line_gen, dtype=float))
        for scatter, marks in ((self.stored, chart.stored), (self.lost, chart.lost)):
            scatter.setData(x=[m.at_ms / 1000 for m in marks], y=[float(m.generation) for m in marks], data=list(marks))
        if chart.line_ms:
            self.plot.setLabel("bottom", f"local time, from {format_ms(chart.line_ms[0])}")
            self.plot.enableAutoRange()
        else:
            self.plot.setLabel("bottom", "local time")

    def _clicked(self, _item: Any, points: Any, _event: Any = None) -> None:
        if len(points):
            self.markClicked.emit(points[0].data().row)


class PeerLagChart(_Chart):
    """Each peer's transactions behind (or queue bytes) over the last minutes; the metric
    box switches. A heading line counts the peers and names the one furthest behind."""

    def __init__(self, model: PeerLagChartModel, parent: QWidget | None = None) -> None:
        super().__init__("lagChart", LAG_METRICS["behind"][0], parent)
        self.model = model
        self.shown_metric = "behind"
        self.curves: dict[str, pg.PlotCurveItem] = {}
        self.dots = pg.ScatterPlotItem(symbol="o", size=6, pen=None)
        self.plot.addItem(self.dots)
        # (metric, account, connected, samples, first and last time) each curve was drawn
        # with: an unchanged line is not handed to the plot again
        self._drawn: dict[str, tuple[str, str, bool, int, int, int]] = {}
        self._colors: dict[str, int] = {}  # account -> series colour index
        self._axis = (LAG_METRICS["behind"][0], "")
        self.plot.setLabel("bottom", "local time")
        self.plot.getViewBox().setMouseEnabled(x=False, y=False)  # a live monitor: it follows the window
        # No grid here: pyqtgraph draws grid lines into the axes' cached pictures, whose
        # replay doubles the paint of 50 lines (10 ms more); the ticks and the legend's
        # values carry the numbers.
        self.plot.enableAutoRange(x=False, y=True)
        # Room for seven-digit ticks beside the axis label, fixed: an axis that widens as the
        # numbers grow overlaps its label for a paint, then re-lays out the plot.
        self.plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        self.heading = QLabel()
        self.heading.setObjectName("lagChartHeading")
        # The legend is a label, not pyqtgraph's legend item: re-ranking that one costs about
        # a millisecond per entry, a label's rich text far less. Neither label may resize
        # the view when its text changes (a re-layout of the tab costs more than the chart).
        self.legend = QLabel()
        self.legend.setObjectName("lagLegend")
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        for text in (self.heading, self.legend):
            text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.metric_box = QComboBox()
        self.metric_box.setObjectName("lagMetric")
        for key, (label, _unit, _noun) in LAG_METRICS.items():
            self.metric_box.addItem(label, key)
        self.metric_box.currentIndexChanged.connect(self._metric_changed)
        row = QHBoxLayout()
        row.addWidget(self.heading, 1)
        row.addWidget(self.metric_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.legend)
        layout.addWidget(self.plot_widget, 1)
        self._apply_base_palette()
        model.changed.connect(self.schedule)

    def set_metric(self, metric: str) -> None:
        """Show ``metric`` (a key of :data:`LAG_METRICS`)."""
        self.metric_box.setCurrentIndex(self.metric_box.findData(metric))

    def _metric_changed(self, index: int) -> None:
        self.shown_metric = str(self.metric_box.itemData(index))
        self.schedule()  # the axis label changes with the lines, in the redraw

    def _apply_palette(self, palette: QPalette) -> None:
        self._drawn.clear()  # every line gets its pen again on the next draw

    def _color(self, account: str) -> QColor:
        """An account's colour: the next series colour when first drawn, kept while it has a
        line (a peer that reconnects under a new id keeps its colour)."""
        index = self._colors.get(account)
        if index is None:
            used = set(self._colors.values())
            index = self._colors[account] = next(i for i in range(len(used) + 1) if i not in used)
        return series_color(index, self.palette())

    def _pen(self, account: str, connected: bool) -> QPen:
        color = self._color(account)
        if not connected:
            color.setAlpha(GONE_ALPHA)
        pen = QPen(color)
        pen.setCosmetic(True)
        pen.setWidth(1)  # a wider pen triples the paint time
        return pen

    def _draw(self) -> None:
        label, unit, _noun = LAG_METRICS[self.shown_metric]
        if self._axis != (label, unit):
            self._axis = (label, unit)
            self.plot.setLabel("left", label, units=unit or None)
        lines = self.model.lines(self.shown_metric)
        present = {line.peer_id for line in lines}
        accounts = {line.account for line in lines}
        for account in [a for a in self._colors if a not in accounts]:
            del self._colors[account]  # its colour is free again; the others keep theirs
        for peer_id in [p for p in self.curves if p not in present]:
            self.plot.removeItem(self.curves.pop(peer_id))
            self._drawn.pop(peer_id, None)
        created = 0
        dots: list[dict[str, Any]] = []
        for line in lines:
            curve = self.curves.get(line.peer_id)
            if curve is None:
                if created == NEW_LINES_PER_REDRAW:
                    self.schedule()  # the rest in the next redraw
                    continue
                created += 1
                # PlotCurveItem, not PlotDataItem: a tenth of the cost per setData, and a ring
                # is short enough (keep_samples) to need no downsampling or clipping
                curve = self.curves[line.peer_id] = pg.PlotCurveItem(skipFiniteCheck=True)
                self.plot.addItem(curve)
            n = len(line.at_ms)
            if n == 1:  # a single sample draws no line: show it as a dot
                dots.append({"pos": (line.at_ms[0] / 1000, float(line.values[0])), "brush": self._color(line.account)})
            state = (self.shown_metric, line.account, line.connected, n, line.at_ms[0], line.at_ms[-1])
            drawn = self._drawn.get(line.peer_id)
            if drawn == state:
                continue  # a gone peer's line does not change until it starts to age out
            if drawn is None or drawn[1:3] != state[1:3]:
                curve.setPen(self._pen(line.account, line.connected))
            curve.setData(
                np.fromiter(line.at_ms, dtype=np.int64, count=n) / 1000,
                np.fromiter(line.values, dtype=np.int64, count=n).astype(float),
            )
            self._drawn[line.peer_id] = state
        self.dots.setData(dots)
        self.heading.setText(self._heading(lines))
        self.legend.setText(self._legend_html(lines))
        window = self.model.window()
        end = window[1] if window is not None else time.time_ns() // 1_000_000  # empty: the last minute
        start = min(window[0], end - MIN_SPAN_MS) if window is not None else end - MIN_SPAN_MS
        self.plot.setXRange(start / 1000, end / 1000, padding=0)

    def _legend_html(self, lines: list[LagLine]) -> str:
        """The :data:`LEGEND_PEERS` connected peers highest now, then the gone ones, each with
        its colour and latest value."""
        ranked = sorted(
            (line for line in lines if line.peer_id in self.curves),
            key=lambda line: (not line.connected, -line.values[-1]),
        )[:LEGEND_PEERS]
        entries = []
        for line in ranked:
            color = self._color(line.account).name()
            gone = "" if line.connected else " (gone)"
            name = html.escape(short_id(line.peer_id, 16, 4))
            entries.append(f'<span style="color:{color}">■</span>&nbsp;{name}{gone}&nbsp;{line.values[-1]:,}')
        return " &nbsp; ".join(entries)

    def _heading(self, lines: list[LagLine]) -> str:
        if not self.model.available:
            return "Lag over time: this target has no peers to follow."
        if not self.model.followed:
            return "Lag over time: these peers are a snapshot, so they have no lag over time; the table shows them."
        history = self.model.history
        window = history.window
        if window is None or not lines:
            return "Lag over time: no peer connected since the inspector opened this target."
        connected = sum(1 for line in lines if line.connected)
        span = (window[1] - window[0]) / 1000
        last = f"{span / 60:.1f} min" if span >= 120 else f"{span:.0f} s"
        text = f"Lag over the last {last}: {connected} connected, {len(lines) - connected} gone"
        if history.untracked:
            text += f", {history.untracked} more not charted (limit {history.max_peers})"
        worst = max((line for line in lines if line.connected), key=lambda line: line.values[-1], default=None)
        if worst is not None and worst.values[-1] > 0:
            noun = LAG_METRICS[self.shown_metric][2]
            text += f" · highest now: {short_id(worst.peer_id, 16, 4)} ({worst.values[-1]:,} {noun})"
        return text
