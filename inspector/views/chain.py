"""The session chain view: one lane per session of the selected CoValue, side by side.

Each lane has a header — a stripe, the session kind's icon and colour (active ``●`` blue, conflict
``!`` amber, delete ``$`` red, a corrupt session a red ``✗``), its label, row count and
verification state — and a virtual table over its :class:`SessionChainModel`. Tables use a
fixed row height and no per-row sizing, so a million-row lane costs what its visible rows
cost. The lanes are rebuilt when the :class:`LanesModel` resets (another CoValue, or the
set of sessions changed), one per event-loop turn so no single turn lays out and paints
them all, and their headers repaint on its ``dataChanged``.
"""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QScrollArea,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.diagnostics.covalue_summary import Badge
from inspector.models.chain import SessionChainModel
from inspector.models.lanes import LanesModel
from inspector.models.roles import Role
from inspector.style import BADGE_COLORS

__all__ = ["ChainView", "LaneWidget"]

#: Width of a lane. Lanes have a fixed width in a strip that scrolls sideways: adding a
#: lane then never resizes (and repaints) the others.
LANE_WIDTH = 480
ROW_HEIGHT = 20
#: Pause between building two lanes: long enough for the previous lane's layout and first
#: paint to happen in between (a zero delay lets the next lane jump ahead of them).
LANE_BUILD_DELAY_MS = 50
COLUMN_WIDTHS = {
    SessionChainModel.INDEX: 58,
    SessionChainModel.MADE_AT: 100,
    SessionChainModel.HASH: 72,
    SessionChainModel.CHECKPOINT: 26,
    SessionChainModel.STATE: 28,
}


class LaneWidget(QFrame):
    """One session: header and rows. ``row`` is its row in ``lanes``."""

    def __init__(self, lanes: LanesModel, row: int, chain: SessionChainModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lanes = lanes
        self.row = row
        self.chain = chain
        self.setObjectName("lane")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedWidth(LANE_WIDTH)
        color = lanes.index(row).data(Qt.ItemDataRole.ForegroundRole)
        # Palettes, not style sheets: a style sheet per lane re-polishes the whole lane,
        # which costs more than everything else in building it.
        self.stripe = QFrame()
        self.stripe.setFixedHeight(4)
        self.stripe.setAutoFillBackground(True)
        stripe_palette = self.stripe.palette()
        stripe_palette.setColor(QPalette.ColorRole.Window, color)
        self.stripe.setPalette(stripe_palette)

        self.icon = QLabel()
        self.icon.setPixmap(lanes.index(row).data(Qt.ItemDataRole.DecorationRole).pixmap(20, 20))
        self.title = QLabel()
        self.title.setObjectName("laneTitle")
        title_palette = self.title.palette()
        title_palette.setColor(QPalette.ColorRole.WindowText, color)
        self.title.setPalette(title_palette)
        bold = self.title.font()
        bold.setBold(True)
        self.title.setFont(bold)
        self.info = QLabel()
        self.info.setObjectName("laneInfo")
        self.top_button = self._button("⤒", "first rows", self.jump_to_top)
        self.end_button = self._button("⤓", "last rows", self.jump_to_end)
        self.break_button = self._button("✗", "first broken link", self.jump_to_break)

        self.table = QTableView()
        self.table.setObjectName("chainTable")
        self.table.setModel(chain)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        vertical = self.table.verticalHeader()
        vertical.hide()
        vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vertical.setDefaultSectionSize(ROW_HEIGHT)
        horizontal = self.table.horizontalHeader()
        horizontal.setHighlightSections(False)
        for column, width in COLUMN_WIDTHS.items():
            horizontal.setSectionResizeMode(column, QHeaderView.ResizeMode.Fixed)
            horizontal.resizeSection(column, width)
        horizontal.setSectionResizeMode(SessionChainModel.CHANGE, QHeaderView.ResizeMode.Stretch)

        head = QHBoxLayout()
        head.addWidget(self.icon)
        head.addWidget(self.title, 1)
        for button in (self.break_button, self.top_button, self.end_button):
            head.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.stripe)
        layout.addLayout(head)
        layout.addWidget(self.info)
        layout.addWidget(self.table, 1)
        self.update_header()

    def _button(self, text: str, tip: str, slot: object) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(f"Jump to the {tip}")
        button.clicked.connect(slot)
        return button

    def update_header(self) -> None:
        index = self.lanes.index(self.row)
        self.title.setText(str(index.data(Qt.ItemDataRole.DisplayRole)))
        self.title.setToolTip(str(index.data(Qt.ItemDataRole.ToolTipRole)))
        count = index.data(Role.COUNT) or 0
        verification = str(index.data(Role.VERIFICATION) or "")
        # One line (the reason of a break goes in the tooltip and the broken row's tooltip).
        self.info.setText(f"{count:,} transactions · {verification.split(':', maxsplit=1)[0]}")
        self.info.setToolTip(verification)
        broken = index.data(Role.BREAK)
        self.break_button.setVisible(broken is not None)
        if broken is not None:
            palette = self.info.palette()
            palette.setColor(QPalette.ColorRole.WindowText, QColor(BADGE_COLORS[Badge.CORRUPT]))
            self.info.setPalette(palette)

    def jump_to_top(self) -> None:
        self.table.scrollToTop()

    def jump_to_end(self) -> None:
        self.table.scrollToBottom()

    def jump_to_break(self) -> None:
        broken = self.lanes.index(self.row).data(Role.BREAK)
        if broken is not None and 0 <= broken < self.chain.rowCount():
            index = self.chain.index(broken, SessionChainModel.CHANGE)
            self.table.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
            # Current, not selected: a selection highlight would hide the row's red mark.
            self.table.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.Clear)

    def detach(self) -> None:
        """Let go of the chain model before the lanes model drops it."""
        self.table.setModel(None)


class ChainView(QWidget):
    """Emits ``lanesBuilt(int)`` once every lane of the current CoValue has its widget."""

    lanesBuilt = Signal(int)

    def __init__(self, lanes: LanesModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lanes = lanes
        self.lane_widgets: list[LaneWidget] = []
        self._generation = 0
        self.heading = QLabel("Select a CoValue to see its session chains")
        self.heading.setObjectName("chainHeading")
        self.heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.legend = QLabel(
            "lanes: <b style='color:#2f6fb3'>● active</b> · <b style='color:#d9822b'>! conflict</b> · "
            "<b style='color:#a93226'>$ delete</b> · <b style='color:#c0392b'>✗ corrupt</b> &nbsp;&nbsp; "
            "rows: ◆ checkpoint · ✓ verified · … not yet · ○ unsigned · ✗ first broken link · – unverifiable"
        )
        self.legend.setObjectName("chainLegend")
        self.strip = QWidget()
        self.strip.setObjectName("laneStrip")
        self.strip_layout = QHBoxLayout(self.strip)
        self.strip_layout.setContentsMargins(0, 0, 0, 0)
        self.strip_layout.addStretch(1)
        self.lanes_area = QScrollArea()
        self.lanes_area.setWidgetResizable(True)
        self.lanes_area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.lanes_area.setWidget(self.strip)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.legend)
        layout.addWidget(self.lanes_area, 1)
        lanes.modelAboutToBeReset.connect(self._remove_lanes)
        lanes.modelReset.connect(self._build_lanes)
        lanes.dataChanged.connect(self._lanes_changed)
        self._build_lanes()

    def set_heading(self, text: str) -> None:
        self.heading.setText(text)

    def _remove_lanes(self) -> None:
        for lane in self.lane_widgets:
            lane.detach()
            lane.hide()
            lane.setParent(None)
            lane.deleteLater()
        self.lane_widgets = []

    def _build_lanes(self) -> None:
        self._remove_lanes()
        self._generation += 1
        self._add_lane(self._generation)

    def _add_lane(self, generation: int) -> None:
        # One lane per event-loop turn: each lane's first paint then happens on its own,
        # instead of all lanes being laid out and painted in one long stall.
        if generation != self._generation:
            return  # the lanes were reset meanwhile
        row = len(self.lane_widgets)
        if row >= self.lanes.rowCount():
            self.lanesBuilt.emit(row)
            return
        lane = LaneWidget(self.lanes, row, self.lanes.chain(row))
        self.strip_layout.insertWidget(row, lane)
        self.lane_widgets.append(lane)
        QTimer.singleShot(LANE_BUILD_DELAY_MS, self, lambda: self._add_lane(generation))

    @property
    def building(self) -> bool:
        """True until every lane of the current CoValue has its widget."""
        return len(self.lane_widgets) < self.lanes.rowCount()

    def _lanes_changed(self, top: QModelIndex, bottom: QModelIndex) -> None:
        for lane in self.lane_widgets[top.row() : bottom.row() + 1]:
            lane.update_header()
