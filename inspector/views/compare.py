"""The compare view: two targets, a CoValue or two sessions side by side (DESIGN §11).

:class:`ComparePanes` shows one :class:`~inspector.models.compare.CompareModel` in two
synchronized panes aligned by index: the left pane shows the left side's columns, the right
pane the right side's, both tables share the model, the selection and the vertical scroll
position. The common prefix is one fold row (click it to expand, click again to fold), the
fork row is bold and marked ``⋔``, only-left / only-right / different rows take the
palette-friendly colours of :mod:`inspector.style`, and each side has its verification
column. "Next difference" (F8, Alt+Down) and "previous difference" (Shift+F8, Alt+Up) jump
between the runs of differing rows. The header says what is compared and the summary.

:class:`CompareWindow` is a window of its own (the main window keeps its tabs): on top, for
two whole targets, the CoValues that differ (filled in batches while the comparison runs in
short slices on the loop, :data:`SLICE_SECONDS`); for one CoValue, its sessions paired by
id and the content keys whose winner differs (content comes from the targets, the worker
process for stores); below, the panes of the chosen pair of sessions. Verifying the two
sessions runs in the inspector's :class:`~inspector.verification.VerificationRunner`. A
target other than the main window's is opened by the window and closed with it; when the
main window opens another target, a comparison that read the one it closed is let go.

:mod:`inspector.views.compare_pick` holds the entry points that open these windows (the
target picker and the launcher). No step stalls the loop for long: aligning two sessions is
a binary search on chain hashes, rows are read a window at a time, and whole targets are
compared one CoValue per slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableView,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.diagnostics.chain_verify import ChainVerifier
from engine.diagnostics.compare import compare_sessions
from engine.diagnostics.compare_bundle import compare_by_checkpoints, known_points
from engine.diagnostics.compare_scopes import (
    CoValueStatus,
    compare_content,
    compare_covalue,
    iter_compare_targets,
)
from engine.diagnostics.session_rows import SessionSource
from engine.ids import CoValueID, SessionID, SessionKind, session_kind
from inspector.models.compare import CompareModel, CoValuesModel, KeysModel, PairsModel, TargetSide
from inspector.style import COMPARE_COLORS, adapt_views, short_id, short_session
from inspector.targets import Target, TargetSpec, describe_error, make_target

if TYPE_CHECKING:
    from inspector.controller import Inspector

__all__ = [
    "SLICE_SECONDS",
    "ComparePanes",
    "CompareWindow",
]

#: Longest stretch (seconds) a whole-target comparison works before yielding to the loop.
SLICE_SECONDS = 0.01
ROW_HEIGHT = 20
#: Pause (seconds) between the steps of showing two sessions (open, align, show): each may
#: take a good part of a turn, and Qt runs the loop's timers only once no paint is pending,
#: so back-to-back steps would count as one stall.
STEP_PAUSE = 0.02
#: Pause between showing the left pane and the right one (milliseconds).
RIGHT_PANE_DELAY_MS = 50
NEXT_KEYS = ("F8", "Alt+Down")
PREVIOUS_KEYS = ("Shift+F8", "Alt+Up")


def _table(name: str) -> QTableView:
    table = QTableView()
    table.setObjectName(name)
    table.setWordWrap(False)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setShowGrid(False)
    table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
    vertical = table.verticalHeader()
    vertical.hide()
    vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    vertical.setDefaultSectionSize(ROW_HEIGHT)
    return table


class ComparePanes(QWidget):
    """Two panes over one :class:`CompareModel` (None: empty)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model: CompareModel | None = None
        self.summary = QLabel("Nothing compared yet")
        self.summary.setObjectName("compareSummary")
        self.summary.setWordWrap(True)
        self.legend = QLabel(
            f"<span style='background:{COMPARE_COLORS['different']}'>&nbsp;≠ different&nbsp;</span> "
            f"<span style='background:{COMPARE_COLORS['only_left']}'>&nbsp;only left&nbsp;</span> "
            f"<span style='background:{COMPARE_COLORS['only_right']}'>&nbsp;only right&nbsp;</span> "
            "&nbsp;⋔ fork point · ✓ verified · … not yet · ✗ broken · "
            f"next difference {' / '.join(NEXT_KEYS)}, previous {' / '.join(PREVIOUS_KEYS)}"
        )
        self.left_label = QLabel()
        self.right_label = QLabel()
        self.left = _table("compareLeft")
        self.right = _table("compareRight")
        self.previous_button = self._button("▲ previous difference", self.previous_difference)
        self.next_button = self._button("▼ next difference", self.next_difference)
        self.fold_button = self._button("expand common prefix", self.toggle_fold)
        self.next_action = self._shortcut("Next difference", NEXT_KEYS, self.next_difference)
        self.previous_action = self._shortcut("Previous difference", PREVIOUS_KEYS, self.previous_difference)
        for table in (self.left, self.right):
            table.clicked.connect(self._clicked)
        self._syncing = False
        self._generation = 0
        self.left.verticalScrollBar().valueChanged.connect(lambda v: self._sync(self.right, v))
        self.right.verticalScrollBar().valueChanged.connect(lambda v: self._sync(self.left, v))

        buttons = QHBoxLayout()
        for button in (self.previous_button, self.next_button, self.fold_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        left_box, right_box = QVBoxLayout(), QVBoxLayout()
        left_box.addWidget(self.left_label)
        left_box.addWidget(self.left, 1)
        right_box.addWidget(self.right_label)
        right_box.addWidget(self.right, 1)
        panes = QHBoxLayout()
        panes.addLayout(left_box, 1)
        panes.addLayout(right_box, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.legend)
        layout.addLayout(buttons)
        layout.addLayout(panes, 1)

    @staticmethod
    def _button(text: str, slot: Any) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.clicked.connect(slot)
        return button

    def _shortcut(self, text: str, keys: tuple[str, ...], slot: Any) -> QAction:
        action = QAction(text, self)
        action.setShortcuts([QKeySequence(k) for k in keys])
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _sync(self, other: QTableView, value: int) -> None:
        if not self._syncing:
            self._syncing = True
            other.verticalScrollBar().setValue(value)
            self._syncing = False

    def set_model(self, model: CompareModel | None, left: str = "", right: str = "", summary: str = "") -> None:
        """Show ``model`` (the previous one is let go: the caller owns models). The left pane
        shows it at once, the right pane :data:`RIGHT_PANE_DELAY_MS` later: painting both
        panes' first rows in one turn of the shared loop would take most of its budget."""
        previous = {self.left.selectionModel(), self.right.selectionModel()} - {None}
        self._generation += 1
        self.model = model
        self.left.clearSpans()
        self.right.clearSpans()
        self.left.setModel(model)
        self.right.setModel(None)
        # setModel makes a new selection model and leaves the old one to us (the panes
        # share one, so each is let go once).
        for selection in previous:
            selection.deleteLater()
        self.left_label.setText(left)
        self.right_label.setText(right)
        self.summary.setText(summary or "Nothing compared yet")
        if model is None:
            return
        self._lay_out(self.left, model, CompareModel.LEFT_COLUMNS, CompareModel.LEFT_CHANGE)
        self.fold_button.setEnabled(model.has_fold)
        model.foldChanged.connect(self._fold_changed)
        self._fold_changed(model.expanded)
        generation = self._generation
        QTimer.singleShot(RIGHT_PANE_DELAY_MS, self, lambda: self._bind_right(model, generation))

    @property
    def bound(self) -> bool:
        """True once both panes show the model."""
        return self.model is not None and self.right.model() is self.model

    def _bind_right(self, model: CompareModel, generation: int) -> None:
        if generation != self._generation:
            return  # another model since
        self.right.setModel(model)
        own = self.right.selectionModel()
        self.right.setSelectionModel(self.left.selectionModel())
        own.deleteLater()
        self._lay_out(self.right, model, CompareModel.RIGHT_COLUMNS[1:], CompareModel.RIGHT_CHANGE)
        self.right.verticalScrollBar().setValue(self.left.verticalScrollBar().value())

    @staticmethod
    def _lay_out(table: QTableView, model: CompareModel, columns: tuple[int, ...], change: int) -> None:
        for column in range(model.columnCount()):
            table.setColumnHidden(column, column not in columns)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        for column in (CompareModel.INDEX, CompareModel.LEFT_MADE_AT, CompareModel.RIGHT_MADE_AT):
            header.resizeSection(column, 96)
        for column in (CompareModel.LEFT_STATE, CompareModel.RIGHT_STATE):
            header.resizeSection(column, 28)
        header.setSectionResizeMode(change, QHeaderView.ResizeMode.Stretch)
        if model.has_fold:
            table.setSpan(0, change - 1, 1, 2)
        table.doItemsLayout()

    def _fold_changed(self, expanded: bool) -> None:
        self.fold_button.setText("fold common prefix" if expanded else "expand common prefix")

    def _clicked(self, index: QModelIndex) -> None:
        if self.model is not None and self.model.has_fold and index.row() == 0:
            self.toggle_fold()

    def toggle_fold(self) -> None:
        if self.model is not None:
            self.model.toggle_fold()

    @property
    def current_row(self) -> int:
        index = self.left.currentIndex()
        return index.row() if index.isValid() else -1

    def go_to(self, row: int) -> None:
        """Make ``row`` current in both panes and bring it into view."""
        if self.model is None:
            return
        index = self.model.index(row, CompareModel.INDEX)
        selection = self.left.selectionModel()
        flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        selection.setCurrentIndex(index, flags)
        self.left.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)

    def next_difference(self) -> int | None:
        """Go to the next run of differing rows; returns its row (None: there is none)."""
        if self.model is None:
            return None
        row = self.model.next_difference(self.current_row)
        if row is not None:
            self.go_to(row)
        return row

    def previous_difference(self) -> int | None:
        if self.model is None:
            return None
        row = self.model.previous_difference(self.current_row)
        if row is not None:
            self.go_to(row)
        return row


class CompareWindow(QWidget):
    """A comparison, in a window of its own. Emits ``closed`` from :meth:`closeEvent` (its
    launcher then releases what the window opened) and ``compared(str)`` (the scope) when a
    comparison is shown."""

    closed = Signal()
    compared = Signal(str)

    def __init__(self, inspector: Inspector, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("compareWindow")
        self.setWindowTitle("Compare — Kintsugi inspector")
        self.inspector = inspector
        self.left_target: Target | None = None
        self.right_target: Target | None = None
        self._owned: list[Target] = []
        self.session_model: CompareModel | None = None
        self._verifiers: list[ChainVerifier] = []
        self._dropped = 0  # sessions let go so far: a show that paused sees whether it still stands
        self.covalue: CoValueID | None = None
        self.heading = QLabel()
        self.heading.setObjectName("compareHeading")
        self.heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.status = QLabel()
        self.status.setObjectName("compareStatus")
        self.status.setWordWrap(True)
        self.covalues = CoValuesModel(self)
        self.pairs = PairsModel(self)
        self.keys = KeysModel(self)
        self.covalues_table = self._list_table("compareCoValues", self.covalues, self._covalue_chosen)
        self.pairs_table = self._list_table("comparePairs", self.pairs, self._pair_chosen)
        self.keys_table = self._list_table("compareKeys", self.keys, None)
        self.panes = ComparePanes()
        top = QSplitter(Qt.Orientation.Horizontal)
        for table in (self.covalues_table, self.pairs_table, self.keys_table):
            top.addWidget(table)
            table.hide()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(self.panes)
        split.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)
        self.resize(1280, 800)
        inspector.opened.connect(self._main_target_changed)
        adapt_views(self)  # its own window: readable on a dark palette too

    def _main_target_changed(self) -> None:
        """The main window opened another target: a comparison that read the one it closed
        can read nothing more, so it is let go."""
        shown = [t for t in (self.left_target, self.right_target) if t is not None]
        if any(t not in self._owned and t is not self.inspector.target for t in shown):
            self._drop_session()
            self.covalues.clear()
            self.pairs.set_comparison(None)
            self.keys.set_keys([])
            self.left_target = self.right_target = None
            self.covalue = None
            self.status.setText("The main window opened another target: this comparison was closed.")

    def _list_table(self, name: str, model: Any, chosen: Any) -> QTableView:
        table = _table(name)
        table.setModel(model)
        table.horizontalHeader().setStretchLastSection(True)
        if chosen is not None:
            table.activated.connect(chosen)
            table.clicked.connect(chosen)
        return table

    # -- targets ------------------------------------------------------------------------

    async def _open(self, spec_or_target: TargetSpec | Target) -> Target:
        """The target to compare: a given one, the main window's when it is the same spec,
        one this window opened already, or a new one (owned: closed with the window)."""
        if isinstance(spec_or_target, Target):
            return spec_or_target
        current = self.inspector.target
        if current is not None and current.spec == spec_or_target:
            return current
        for owned in self._owned:
            if owned.spec == spec_or_target:
                return owned
        self.status.setText(f"opening {spec_or_target.label}…")
        target = make_target(spec_or_target, self.inspector.pool)
        await target.open()
        self._owned.append(target)
        return target

    async def release(self) -> None:
        """Stop verifying and close every target this window opened (idempotent)."""
        self._drop_session()
        owned, self._owned = self._owned, []
        for target in owned:
            with contextlib.suppress(Exception):
                await target.close()

    # -- scopes -------------------------------------------------------------------------

    async def compare_sessions(
        self,
        left: TargetSpec | Target,
        right: TargetSpec | Target,
        covalue: CoValueID,
        left_session: SessionID,
        right_session: SessionID,
    ) -> bool:
        """Show two sessions aligned; False (the status line says why) when they cannot be."""
        try:
            self.left_target, self.right_target = await self._open(left), await self._open(right)
        except Exception as exc:
            self._failed(exc)
            return False
        self.heading.setText(f"{self.left_target.label}  ⇄  {self.right_target.label}")
        return await self.show_sessions(covalue, left_session, right_session)

    async def show_sessions(self, covalue: CoValueID, left_session: SessionID, right_session: SessionID) -> bool:
        """Align ``left_session`` of the left target with ``right_session`` of the right one
        (a binary search: a few dozen single-row reads) and, in the next loop turn, show them;
        verification starts in the runner."""
        assert self.left_target is not None and self.right_target is not None
        await asyncio.sleep(STEP_PAUSE)  # opening the targets may just have taken a turn
        sides = TargetSide(self.left_target), TargetSide(self.right_target)
        a, b = sides[0].open_session(covalue, left_session), sides[1].open_session(covalue, right_session)
        if a is None or b is None:
            self.status.setText(f"{covalue}: a session is missing on one side")
            return False
        if known_points(a) is not None or known_points(b) is not None:
            return self._show_checkpoint_fork(covalue, a, b)
        record = None
        for sid in (right_session, left_session):
            if session_kind(sid) is SessionKind.CONFLICT:
                record = record or sides[0].conflict_fork_record(covalue, sid)
                record = record or sides[1].conflict_fork_record(covalue, sid)
        try:
            comparison = compare_sessions(
                a, b, left_label=sides[0].label, right_label=sides[1].label, conflict_record=record
            )
        except Exception as exc:
            self._failed(exc)
            return False
        await asyncio.sleep(STEP_PAUSE)  # aligning took a turn; showing (and painting) takes another
        self._drop_session()
        dropped = self._dropped
        for attr, side, sid in (("left_verifier", sides[0], left_session), ("right_verifier", sides[1], right_session)):
            checker = side.open_session(covalue, sid)
            if checker is not None:
                verifier = ChainVerifier(checker)
                setattr(comparison, attr, verifier)
                self._verifiers.append(verifier)
        model = CompareModel(comparison, self)
        # the rows the first paint shows (centred on the fork row) are read in a turn of their own
        shown = self.panes.left.viewport().height() // ROW_HEIGHT + 1
        focus = model.fork_row or 0
        model.warm(focus - shown, focus + shown)
        await asyncio.sleep(STEP_PAUSE)
        if dropped != self._dropped:  # closed, or another comparison shown meanwhile
            model.setParent(None)
            return False
        self.session_model = model
        for verifier in self._verifiers:
            self.inspector.runner.add(verifier, model.on_verification_progress)
        self.panes.set_model(
            model,
            f"<b>left</b> {short_session(left_session)} · {a.count:,} transactions",
            f"<b>right</b> {short_session(right_session)} · {b.count:,} transactions",
            model.summary_text(),
        )
        self.status.setText(f"{short_id(covalue)}: {short_session(left_session)} ⇄ {short_session(right_session)}")
        if model.fork_row is not None:
            self.panes.go_to(model.fork_row)
        self.compared.emit("session")
        return True

    def _show_checkpoint_fork(self, covalue: CoValueID, a: SessionSource, b: SessionSource) -> bool:
        """A bundle without rows on a side: no rows to align, but the fork located within
        one batch from the checkpoint hashes, in the summary and the status line."""
        self._drop_session()
        try:
            sparse = compare_by_checkpoints(
                a,
                b,
                left_label=self.left_target.label if self.left_target else "left",
                right_label=self.right_target.label if self.right_target else "right",
            )
        except Exception as exc:
            self._failed(exc)
            return False
        summary = sparse.text().splitlines()[-1]
        self.panes.set_model(
            None, f"<b>left</b> {a.count:,} transactions", f"<b>right</b> {b.count:,} transactions", summary
        )
        self.status.setText(f"{short_id(covalue)}: {summary}")
        self.compared.emit("checkpoints")
        return True

    def _drop_session(self) -> None:
        for verifier in self._verifiers:
            self.inspector.runner.remove(verifier)
        self._verifiers = []
        self._dropped += 1
        model, self.session_model = self.session_model, None
        self.panes.set_model(None)
        if model is not None:
            model.setParent(None)

    async def compare_targets(self, left: TargetSpec | Target, right: TargetSpec | Target) -> bool:
        """Every CoValue of both targets, classified; listed as the comparison goes, one
        CoValue per slice of at most :data:`SLICE_SECONDS`."""
        try:
            self.left_target, self.right_target = await self._open(left), await self._open(right)
        except Exception as exc:
            self._failed(exc)
            return False
        self.heading.setText(f"{self.left_target.label}  ⇄  {self.right_target.label}")
        self.covalues.clear()
        self.covalues_table.show()
        rows = iter_compare_targets(TargetSide(self.left_target), TargetSide(self.right_target))
        batch, compared, started, total = [], 0, time.perf_counter(), 0
        counts: dict[str, int] = {}
        for row in rows:
            compared += 1
            total += 1
            counts[str(row.status)] = counts.get(str(row.status), 0) + 1
            if row.status is not CoValueStatus.SAME:
                batch.append(row)
            if time.perf_counter() - started > SLICE_SECONDS:
                self.covalues.add(batch, compared)
                batch, compared = [], 0
                self.status.setText(f"comparing… {total:,} CoValues so far")
                await asyncio.sleep(0)
                started = time.perf_counter()
        self.covalues.add(batch, compared)
        listed = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(counts.items()))
        self.status.setText(f"{total:,} CoValues: {listed or 'none'}. Pick one to see its sessions.")
        self.compared.emit("targets")
        return True

    def _covalue_chosen(self, index: QModelIndex) -> None:
        if 0 <= index.row() < len(self.covalues.items):
            covalue = self.covalues.items[index.row()].covalue
            if covalue != self.covalue:
                self.inspector.spawn(self.compare_covalue(covalue), "compare-covalue")

    async def compare_covalue(self, covalue: CoValueID) -> bool:
        """``covalue``'s sessions paired by id (at once), then its content (from the targets,
        awaited) key by key."""
        left, right = self.left_target, self.right_target
        if left is None or right is None:
            return False
        self.covalue = covalue
        result = compare_covalue(TargetSide(left), TargetSide(right), covalue, content=False)
        self.pairs.set_comparison(result)
        self.pairs_table.show()
        self.status.setText(f"{short_id(covalue)}: {result.status}; comparing content…")
        try:
            snapshots = await asyncio.gather(left.content(covalue), right.content(covalue))
        except Exception as exc:
            self._failed(exc)
            return False
        if covalue != self.covalue:
            return False
        result.keys = compare_content(*snapshots)
        self.keys.set_keys(result.keys)
        self.keys_table.setVisible(bool(result.keys))
        self.status.setText(f"{short_id(covalue)}: {result.status}; {len(result.keys)} content key(s) differ")
        self.compared.emit("covalue")
        return True

    def _pair_chosen(self, index: QModelIndex) -> None:
        if self.covalue is not None and 0 <= index.row() < self.pairs.row_count():
            pair = self.pairs.pair(index.row())
            if pair.left_count is not None and pair.right_count is not None:
                task = self.show_sessions(self.covalue, pair.session, pair.session)
                self.inspector.spawn(task, "compare-sessions")

    def _failed(self, exc: BaseException) -> None:
        code, message = describe_error(exc)
        self.status.setText(f"<b>Could not compare</b> ({code}): {message}")

    def closeEvent(self, event: QCloseEvent) -> None:
        self.closed.emit()
        event.accept()
