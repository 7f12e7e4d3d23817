"""CAS slots: every slot with generation and state, values hidden until asked, and the
selected key's timeline of CAS outcomes, lost races included: as a chart (generation over
time, lost races marked; :class:`~inspector.views.charts.CasTimelineChart`) above the table
of attempts. Clicking a mark in the chart selects its row in the table.

Emits ``slotSelected(str, str)`` (namespace, key) when the current slot row changes; the
"Show values" box calls :meth:`CasSlotsModel.set_show_values`.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from inspector.models.charts import CasChartModel
from inspector.models.kv import CasSlotsModel, CasTimelineModel
from inspector.models.roles import Role
from inspector.views.charts import CasTimelineChart
from inspector.views.content import make_table

__all__ = ["CasView"]


class CasView(QWidget):
    slotSelected = Signal(str, str)

    def __init__(
        self,
        slots: CasSlotsModel,
        timeline: CasTimelineModel,
        parent: QWidget | None = None,
        *,
        chart: CasChartModel | None = None,
    ) -> None:
        """``chart``: the chart's model (None: one over ``timeline``)."""
        super().__init__(parent)
        self.slots = slots
        self.timeline = timeline
        self.chart_model = chart if chart is not None else CasChartModel(timeline, self)
        heading = QLabel("CAS slots")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.show_values = QCheckBox("Show values")
        self.show_values.setObjectName("showValues")
        self.show_values.setToolTip("Values are hidden by default: size and a salted hash show whether two are equal")
        self.show_values.toggled.connect(slots.set_show_values)
        slots.showValuesChanged.connect(self._sync_checkbox)
        self.table = make_table(
            slots,
            CasSlotsModel.VALUE,
            {
                CasSlotsModel.NAMESPACE: 170,
                CasSlotsModel.KEY: 260,
                CasSlotsModel.GENERATION: 50,
                CasSlotsModel.STATE: 80,
            },
            "slotsTable",
        )
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        slots.modelReset.connect(self._reselect)

        self.timeline_heading = QLabel()
        self.timeline_heading.setObjectName("timelineHeading")
        self.timeline_heading.setStyleSheet("font-weight: bold;")
        self.timeline_table = make_table(
            timeline,
            CasTimelineModel.WRITER,
            {
                CasTimelineModel.TIME: 190,
                CasTimelineModel.EXPECTED: 100,
                CasTimelineModel.OUTCOME: 130,
                CasTimelineModel.GENERATION: 80,
            },
            "timelineTable",
        )
        for signal in (timeline.modelReset, timeline.rowsInserted):
            signal.connect(self._update_timeline_heading)
        self.chart = CasTimelineChart(self.chart_model)
        self.chart.markClicked.connect(self._show_attempt)

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(heading)
        row.addStretch(1)
        row.addWidget(self.show_values)
        top_layout.addLayout(row)
        top_layout.addWidget(self.table, 1)
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.timeline_heading)
        self.timeline_splitter = QSplitter(Qt.Orientation.Vertical)
        self.timeline_splitter.setObjectName("casTimelineSplitter")
        self.timeline_splitter.addWidget(self.chart)
        self.timeline_splitter.addWidget(self.timeline_table)
        self.timeline_splitter.setSizes([220, 200])
        bottom_layout.addWidget(self.timeline_splitter, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setObjectName("casSplitter")
        splitter.addWidget(top)
        splitter.addWidget(bottom)
        splitter.setSizes([300, 400])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        self._update_timeline_heading()

    def _sync_checkbox(self, show: bool) -> None:
        if self.show_values.isChecked() != show:
            self.show_values.setChecked(show)

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.slotSelected.emit(str(current.data(Role.NAMESPACE)), str(current.data(Role.KEY)))

    def select(self, namespace: str, key: str) -> None:
        """Make the slot current (emits ``slotSelected`` if it changed)."""
        row = self.slots.row_of(namespace, key)
        if row >= 0:
            self.table.selectRow(row)

    def _show_attempt(self, row: int) -> None:
        """A mark in the chart was clicked: select its attempt in the table."""
        self.timeline_table.selectRow(row)
        self.timeline_table.scrollTo(self.timeline.index(row, 0))

    def _reselect(self) -> None:
        slot = self.timeline.slot
        if slot is not None:
            self.select(*slot)

    def _update_timeline_heading(self) -> None:
        slot = self.timeline.slot
        if slot is None:
            self.timeline_heading.setText("Select a slot to see its CAS timeline")
            return
        if not self.timeline.available:
            self.timeline_heading.setText(f"Timeline of {slot[1]}: the node does not send CAS histories over the wire")
            return
        counts = self.timeline.counts()
        self.timeline_heading.setText(
            f"Timeline of {slot[1]}: {counts['attempts']} attempts, {counts['stored']} stored, "
            f"{counts['lost']} lost races (highlighted)"
        )
