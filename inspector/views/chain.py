"""The session chain view: one lane per session of the selected CoValue, side by side.

Each lane has a header — a stripe, the session kind's icon and colour (active ``●`` blue, conflict
``!`` amber, delete ``$`` red, a corrupt session a red ``✗``), its label, row count and
verification state — and a virtual table over its :class:`SessionChainModel`. Tables use a
fixed row height and column widths computed once from font metrics (never from the rows), so
a million-row lane costs what its visible rows cost. Headers repaint on the
:class:`LanesModel`'s ``dataChanged``.

Painting a lane's visible rows costs ~5-15 ms here, so no turn of the shared loop may paint
more than one lane (DESIGN §11: no stall over 50 ms). When the lanes model resets (another
CoValue, or the set of sessions changed), every lane lets go of its chain model and shows no
rows; then the lanes are bound to the new chains one per turn, :data:`LANE_BUILD_DELAY_MS`
apart. Lane widgets are kept and rebound rather than rebuilt, and sit at fixed places in a
strip with no layout, with scroll bars that are always there: binding, showing or hiding one
lane never moves, resizes or repaints another, and each lane is painted once per binding.
While the view is hidden (another tab) no lane is bound; the rest follow, one per turn, once
it is shown again.

A lane's context menu offers comparisons (``compareRequested``, handled by
:class:`~inspector.views.compare.CompareLauncher`): a conflict lane with its origin, a lane
with another lane, or a session with the same session on another target. A row where a
conflict session was split off its origin is marked ``⋔`` (see
:meth:`~inspector.models.chain.SessionChainModel.set_fork_marks`).

:meth:`ChainView.highlight_session` scrolls to a session's lane and frames it in the
palette's highlight colour (a sync event clicked in the events view), once that lane is bound
if it is not yet; ``laneHighlighted(str)`` says which session's lane it framed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPalette, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QScrollArea,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.diagnostics.covalue_summary import Badge
from engine.ids import SessionKind, parse_session_id
from inspector.models.chain import SessionChainModel
from inspector.models.lanes import LanesModel
from inspector.models.roles import Role
from inspector.models.table import Index, TableModel
from inspector.style import BADGE_COLORS, KIND_COLORS, adapt_views, foreground

__all__ = ["ChainView", "LaneWidget"]

#: Width of a lane. Lanes have a fixed width in a strip that scrolls sideways: adding a
#: lane then never resizes (and repaints) the others.
LANE_WIDTH = 480
#: Space between two lanes.
LANE_GAP = 6
LANE_PITCH = LANE_WIDTH + LANE_GAP
ROW_HEIGHT = 20
#: Pause between showing two lanes: long enough for the previous lane's layout and first
#: paint to happen in between (Qt paints on a timer a few ms after an update is asked for,
#: so a zero delay lets the next lane jump ahead of that paint and share its turn).
LANE_BUILD_DELAY_MS = 50
#: Lane widgets kept for reuse beyond those of the CoValue shown.
KEEP_LANES = 16
#: Horizontal padding of a cell (both sides together), added to a column's text width.
CELL_PADDING = 12
#: What the widest cell of each fixed-width column looks like (the change column stretches).
#: Widths come from these and the font, never from the rows: sizing columns to their
#: contents would read every row.
COLUMN_SAMPLES = {
    SessionChainModel.INDEX: "0000000",
    SessionChainModel.MADE_AT: "00:00:00.000",
    SessionChainModel.HASH: "00000000",
    SessionChainModel.CHECKPOINT: "◆",
    SessionChainModel.STATE: "✓",
}


def column_widths(font: QFont) -> dict[int, int]:
    """Pixel widths of the fixed columns for cells in ``font`` (hashes in monospace, as
    :class:`SessionChainModel` shows them); never narrower than the column's header."""
    metrics = QFontMetrics(font)
    mono = QFont(font)
    mono.setFamily("monospace")
    widths = {}
    for column, sample in COLUMN_SAMPLES.items():
        text = QFontMetrics(mono) if column == SessionChainModel.HASH else metrics
        header = metrics.horizontalAdvance(SessionChainModel.HEADERS[column])
        widths[column] = max(text.horizontalAdvance(sample), header) + CELL_PADDING
    return widths


class NoRows(TableModel):
    """The chain's columns and no rows: what a lane's table shows while it is not bound."""

    HEADERS = SessionChainModel.HEADERS

    def row_count(self) -> int:
        return 0

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        return None


def _no_name(_account: str) -> str | None:
    return None


def mark(color: str) -> str:
    """``color`` as a legend's text colour readable on the application's palette."""
    return foreground(color).name()


class LaneWidget(QFrame):
    """One session: header and rows. Shows row ``row`` of ``lanes`` and its chain model
    ``chain`` once :meth:`bind` is called; :meth:`detach` lets go of them (the widget can be
    bound to another lane later). ``row`` is -1 and ``chain`` None while detached.

    Its context menu (:meth:`compare_menu`) asks ``on_compare(covalue, left, right)`` for a
    comparison: "Compare with origin" on a conflict lane, "Compare with…" another lane or
    (``right`` empty) the same session on another target; and ``on_recover(covalue,
    session)`` for "Recover this session…"."""

    def __init__(self, lanes: LanesModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lanes = lanes
        self.row = -1
        self.chain: SessionChainModel | None = None
        self.on_compare: Callable[[str, str, str], None] | None = None
        self.on_recover: Callable[[str, str], None] | None = None
        #: the operator's name for an account (None: none), shown in the lane's title
        self.account_name: Callable[[str], str | None] = _no_name
        self.setObjectName("lane")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._lane_palette = QPalette(self.palette())
        self.setFixedWidth(LANE_WIDTH)
        self.stripe = QFrame()
        self.stripe.setFixedHeight(4)
        self.stripe.setAutoFillBackground(True)
        self._plain_palette = self.stripe.palette()
        self.icon = QLabel()
        self.title = QLabel()
        self.title.setObjectName("laneTitle")
        bold = self.title.font()
        bold.setBold(True)
        self.title.setFont(bold)
        self.info = QLabel()
        self.info.setObjectName("laneInfo")
        self._info_palette = self.info.palette()
        self.top_button = self._button("⤒", "first rows", self.jump_to_top)
        self.end_button = self._button("⤓", "last rows", self.jump_to_end)
        self.break_button = self._button("✗", "first broken link", self.jump_to_break)

        self.table = QTableView()
        self.table.setObjectName("chainTable")
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        # Always there: a scroll bar that comes and goes with the row count would change the
        # width of the stretched column after the first paint, and repaint the whole table.
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        vertical = self.table.verticalHeader()
        vertical.hide()
        vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vertical.setDefaultSectionSize(ROW_HEIGHT)
        # Sized once, over a model with the chain's columns and no rows: the header keeps
        # section sizes across setModel while the column count stays the same. (Sizing
        # them after each setModel would repaint the whole table again once Qt applies it.)
        self._no_rows = NoRows(self)
        self.table.setModel(self._no_rows)
        horizontal = self.table.horizontalHeader()
        horizontal.setHighlightSections(False)
        for column, width in column_widths(self.table.font()).items():
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
        for widget in (self, self.table):
            widget.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            widget.customContextMenuRequested.connect(lambda pos, w=widget: self._show_menu(w.mapToGlobal(pos)))

    def compare_menu(self) -> QMenu | None:
        """The lane's context menu (None while detached): compare entries (see the class)."""
        if self.row < 0 or self.lanes.covalue is None:
            return None
        covalue = self.lanes.covalue
        session = self.lanes.session(self.row)
        menu = QMenu(self)
        menu.setObjectName("laneMenu")
        if session.kind is SessionKind.CONFLICT:
            origin = parse_session_id(session.id).base
            if any(self.lanes.session(r).id == origin for r in range(self.lanes.rowCount())):
                action = menu.addAction("Compare with origin")
                action.triggered.connect(lambda: self._compare(covalue, origin, session.id))
        others = menu.addMenu("Compare with…")
        for row in range(self.lanes.rowCount()):
            other = self.lanes.session(row)
            if row != self.row and other.kind is not SessionKind.DELETE:
                text = str(self.lanes.index(row).data(Qt.ItemDataRole.DisplayRole))
                action = others.addAction(text)
                action.triggered.connect(lambda _c=False, o=other.id: self._compare(covalue, session.id, o))
        others.addSeparator()
        action = others.addAction("The same session on another target…")
        action.triggered.connect(lambda: self._compare(covalue, session.id, ""))
        menu.addSeparator()
        recover = menu.addAction("Recover this session…")
        recover.setObjectName("recoverSession")
        recover.triggered.connect(lambda: self._recover(covalue, session.id))
        return menu

    def _recover(self, covalue: str, session: str) -> None:
        if self.on_recover is not None:
            self.on_recover(covalue, session)

    def _compare(self, covalue: str, left: str, right: str) -> None:
        if self.on_compare is not None:
            self.on_compare(covalue, left, right)

    def _show_menu(self, where: QPoint) -> None:
        menu = self.compare_menu()
        if menu is not None:
            menu.aboutToHide.connect(menu.deleteLater)
            menu.popup(where)

    def _button(self, text: str, tip: str, slot: object) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(f"Jump to the {tip}")
        button.clicked.connect(slot)
        return button

    def bind(self, row: int, chain: SessionChainModel) -> None:
        """Show lane ``row`` of the lanes model, whose rows are ``chain``."""
        self.row = row
        self.chain = chain
        index = self.lanes.index(row)
        color = foreground(QColor(index.data(Qt.ItemDataRole.ForegroundRole)).name(), self.palette())
        # Palettes, not style sheets: a style sheet per lane re-polishes the whole lane,
        # which costs more than everything else in showing it.
        stripe_palette = self.stripe.palette()
        stripe_palette.setColor(QPalette.ColorRole.Window, color)
        self.stripe.setPalette(stripe_palette)
        title_palette = self.title.palette()
        title_palette.setColor(QPalette.ColorRole.WindowText, color)
        self.title.setPalette(title_palette)
        self.icon.setPixmap(index.data(Qt.ItemDataRole.DecorationRole).pixmap(20, 20))
        self.info.setPalette(self._info_palette)
        self._set_model(chain)
        self.update_header()

    def detach(self) -> None:
        """Let go of the chain model (before the lanes model drops it) and show no rows and
        an empty header until bound again."""
        self.row = -1
        self.chain = None
        self._set_model(self._no_rows)
        self.stripe.setPalette(self._plain_palette)
        self.icon.clear()
        for label in (self.title, self.info):
            label.clear()
            label.setToolTip("")
        self.break_button.hide()

    def _set_model(self, chain: SessionChainModel | NoRows) -> None:
        previous = self.table.selectionModel()
        self.table.setModel(chain)
        if previous is not None:
            previous.deleteLater()  # setModel makes a new one and leaves the old one to us
        # Lay the rows out now. Left to Qt, the view lays them out when it is painted next
        # and asks for a repaint from there: every new model would cost two full paints.
        self.table.doItemsLayout()

    def update_header(self) -> None:
        if self.row < 0:
            return
        index = self.lanes.index(self.row)
        name = self.account_name(str(self.lanes.session(self.row).account))
        title = str(index.data(Qt.ItemDataRole.DisplayRole))
        tip = str(index.data(Qt.ItemDataRole.ToolTipRole))
        self.title.setText(f"{name} · {title}" if name else title)
        self.title.setToolTip(f"{tip} ({name})" if name else tip)
        count = index.data(Role.COUNT) or 0
        verification = str(index.data(Role.VERIFICATION) or "")
        # One line (the reason of a break goes in the tooltip and the broken row's tooltip).
        self.info.setText(f"{count:,} transactions · {verification.split(':', maxsplit=1)[0]}")
        self.info.setToolTip(verification)
        broken = index.data(Role.BREAK)
        self.break_button.setVisible(broken is not None)
        if broken is not None:
            palette = self.info.palette()
            palette.setColor(QPalette.ColorRole.WindowText, foreground(BADGE_COLORS[Badge.CORRUPT], palette))
            self.info.setPalette(palette)

    def set_highlighted(self, on: bool) -> None:
        """Frame the lane in the palette's highlight colour (or not)."""
        if self.property("highlighted") == on:
            return
        self.setProperty("highlighted", on)
        palette = self.palette()
        if on:
            palette.setColor(QPalette.ColorRole.WindowText, palette.color(QPalette.ColorRole.Highlight))
            self.setFrameShape(QFrame.Shape.Box)
            self.setLineWidth(3)
        else:
            palette = QPalette(self._lane_palette)
            self.setFrameShape(QFrame.Shape.StyledPanel)
            self.setLineWidth(1)
        self.setPalette(palette)

    def jump_to_top(self) -> None:
        self.table.scrollToTop()

    def jump_to_end(self) -> None:
        self.table.scrollToBottom()

    def jump_to_break(self) -> None:
        broken = self.lanes.index(self.row).data(Role.BREAK) if self.row >= 0 else None
        if self.chain is not None and broken is not None and 0 <= broken < self.chain.rowCount():
            index = self.chain.index(broken, SessionChainModel.CHANGE)
            self.table.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
            # Current, not selected: a selection highlight would hide the row's red mark.
            self.table.selectionModel().setCurrentIndex(index, QItemSelectionModel.SelectionFlag.Clear)


class LaneStrip(QWidget):
    """The lanes side by side, lane ``i`` at ``i * LANE_PITCH``, as tall as the strip. No
    layout: a lane shown, hidden or rebound never moves or resizes another one."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lanes: list[LaneWidget] = []

    def set_count(self, count: int) -> None:
        """Make room for ``count`` lanes (the scroll area around follows)."""
        self.setMinimumWidth(max(0, count * LANE_PITCH - LANE_GAP))

    def place(self, position: int) -> None:
        self.lanes[position].setGeometry(position * LANE_PITCH, 0, LANE_WIDTH, self.height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        for position in range(len(self.lanes)):
            self.place(position)


class ChainView(QWidget):
    """Emits ``lanesBuilt(int)`` once every lane of the current CoValue is shown, and
    ``compareRequested(covalue, left session, right session)`` from a lane's context menu
    (``right`` empty: the same session on another target), and ``recoverRequested(covalue,
    session)`` from its "Recover this session…"."""

    lanesBuilt = Signal(int)
    laneHighlighted = Signal(str)
    compareRequested = Signal(str, str, str)
    recoverRequested = Signal(str, str)

    def __init__(self, lanes: LanesModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lanes = lanes
        #: the lanes bound to the current CoValue's chains so far, in lane order (the first
        #: lanes of ``strip.lanes``, which also holds unbound ones kept for reuse)
        self.lane_widgets: list[LaneWidget] = []
        self._generation = 0
        self._paused = False
        #: the operator's names for accounts (see :meth:`set_account_names`)
        self.account_name: Callable[[str], str | None] = _no_name
        #: the session whose lane is to be highlighted ('' none)
        self._highlight = ""
        self.heading = QLabel("Select a CoValue to see its session chains")
        self.heading.setObjectName("chainHeading")
        self.heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.legend = QLabel(
            f"lanes: <b style='color:{mark(KIND_COLORS[SessionKind.ACTIVE])}'>● active</b> · "
            f"<b style='color:{mark(KIND_COLORS[SessionKind.CONFLICT])}'>! conflict</b> · "
            f"<b style='color:{mark(KIND_COLORS[SessionKind.DELETE])}'>$ delete</b> · "
            f"<b style='color:{mark(BADGE_COLORS[Badge.CORRUPT])}'>✗ corrupt</b> &nbsp;&nbsp; "
            "rows: ◆ checkpoint · ✓ verified · … not yet · ○ unsigned · ✗ first broken link · – unverifiable · "
            "⋔ a conflict session was split off here"
        )
        self.legend.setObjectName("chainLegend")
        self.legend.setWordWrap(True)  # or its one long line sets the window's minimum width
        self.strip = LaneStrip()
        self.strip.setObjectName("laneStrip")
        self.lanes_area = QScrollArea()
        self.lanes_area.setWidgetResizable(True)
        self.lanes_area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Always there, so the lanes' height does not depend on how many lanes there are:
        # otherwise going from many lanes to few resizes (and repaints) each shown lane again.
        self.lanes_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        self.lanes_area.setWidget(self.strip)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.legend)
        layout.addWidget(self.lanes_area, 1)
        lanes.modelAboutToBeReset.connect(self._release_lanes)
        lanes.modelReset.connect(self._build_lanes)
        lanes.dataChanged.connect(self._lanes_changed)
        # One lane made now, while the window is built: the first CoValue shown then only
        # binds it (making a lane, polishing it and measuring its glyphs the first time cost
        # more than painting it).
        self._new_lane().hide()
        self._build_lanes()

    def _new_lane(self) -> LaneWidget:
        lane = LaneWidget(self.lanes, self.strip)
        lane.on_compare = self.compareRequested.emit
        lane.on_recover = self.recoverRequested.emit
        lane.account_name = self.account_name
        adapt_views(lane)  # a dark palette only
        lane.ensurePolished()  # now, not in a second paint after the first
        self.strip.lanes.append(lane)
        return lane

    def set_account_names(self, names: Callable[[str], str | None]) -> None:
        """Show ``names(account)`` in the lanes' titles (the address book); re-titles the
        lanes shown (call it again after the book changed)."""
        self.account_name = names
        for lane in self.strip.lanes:
            lane.account_name = names
        for lane in self.lane_widgets:
            lane.update_header()

    def highlight_session(self, session: str) -> bool:
        """Scroll to ``session``'s lane and frame it, unframing the others; a lane not bound
        yet is framed when it is. '' unframes all. True when the lane is framed now."""
        self._highlight = session
        return self._apply_highlight()

    def _lane_row(self, session: str) -> int:
        """The lane of ``session`` (its exact id first, then a conflict session of it), or -1."""
        ids = [str(self.lanes.session(row).id) for row in range(self.lanes.rowCount())]
        if session in ids:
            return ids.index(session)
        return next((row for row, sid in enumerate(ids) if sid.startswith(session)), -1) if session else -1

    def _apply_highlight(self) -> bool:
        row = self._lane_row(self._highlight)
        for lane in self.lane_widgets:
            lane.set_highlighted(lane.row == row)
        if 0 <= row < len(self.lane_widgets):
            self.lanes_area.ensureWidgetVisible(self.lane_widgets[row], 20, 0)
            self.laneHighlighted.emit(self._highlight)
            self._highlight = ""  # done: a later rebuild does not scroll again
            return True
        return False

    def set_heading(self, text: str) -> None:
        self.heading.setText(text)

    @property
    def building(self) -> bool:
        """True until every lane of the current CoValue is shown."""
        return len(self.lane_widgets) < self.lanes.rowCount()

    def _release_lanes(self) -> None:
        # Before the lanes model drops its chain models: no table may keep one. The lanes
        # stay where they are, empty, until rebound or hidden as surplus.
        self._generation += 1  # a build in progress stops
        self._paused = False
        for lane in self.lane_widgets:
            lane.detach()
            lane.set_highlighted(False)
        self.lane_widgets = []

    def _build_lanes(self) -> None:
        self._release_lanes()
        count = self.lanes.rowCount()
        self.strip.set_count(count)
        for lane in self.strip.lanes[count:]:
            lane.hide()
        keep = max(count, KEEP_LANES)
        for lane in self.strip.lanes[keep:]:
            lane.setParent(None)
            lane.deleteLater()
        del self.strip.lanes[keep:]
        generation = self._generation
        # Not in this turn: the selection that reset the lanes is being painted in it.
        QTimer.singleShot(0, self, lambda: self._add_lane(generation))

    def _add_lane(self, generation: int) -> None:
        if generation != self._generation:
            return  # the lanes were reset meanwhile
        if not self.isVisible():
            self._paused = True  # showEvent goes on (bound now, they would all paint at once then)
            return
        row = len(self.lane_widgets)
        if row >= self.lanes.rowCount():
            self.lanesBuilt.emit(row)
            return
        lane = self.strip.lanes[row] if row < len(self.strip.lanes) else self._new_lane()
        lane.bind(row, self.lanes.chain(row))
        self.strip.place(row)
        if lane.isHidden():
            lane.show()
            lane.table.doItemsLayout()  # see _set_model: the sizes it used are only right now
        self.lane_widgets.append(lane)
        if self._highlight:
            self._apply_highlight()
        QTimer.singleShot(LANE_BUILD_DELAY_MS, self, lambda: self._add_lane(generation))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._paused:
            self._paused = False
            generation = self._generation
            QTimer.singleShot(0, self, lambda: self._add_lane(generation))

    def _lanes_changed(self, top: QModelIndex, bottom: QModelIndex) -> None:
        for lane in self.lane_widgets[top.row() : bottom.row() + 1]:
            lane.update_header()
