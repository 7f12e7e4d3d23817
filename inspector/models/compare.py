"""Qt models of the compare view: adapters over the engine's comparisons
(:mod:`engine.diagnostics.compare`, :mod:`engine.diagnostics.compare_scopes`).

- :class:`TargetSide`: an inspector :class:`~inspector.targets.base.Target` as one side of a
  comparison (:class:`~engine.diagnostics.compare_sides.CompareSide`): its listing, its
  windowed session readers and, for a target with a store, its conflict fork records.
  Content comes from :meth:`Target.content` (asynchronous), so :meth:`TargetSide.content`
  answers None and the view hands the snapshots in.
- :class:`CompareModel`: two sessions aligned by index as one table whose left columns
  show the left side and right columns the right side (each pane of the view shows its
  half). Row 0 is the folded common prefix — one row with its count, which
  :meth:`CompareModel.toggle_fold` expands into the prefix's rows and folds again — when
  there is a prefix; every other row is one aligned index. Rows are read a window at a time
  (:data:`PAGE_ROWS`, at most :data:`KEEP_PAGES` pages kept), never the whole sessions; each
  side's verification state is asked of its verifier on every paint, and
  :meth:`CompareModel.on_verification_progress` repaints the state columns as verifiers
  advance.
- :class:`PairsModel`, :class:`KeysModel`: one CoValue on two targets (its sessions paired
  by id; its content keys whose winner differs).
- :class:`CoValuesModel`: two whole targets, one row per CoValue that is not the same,
  appended in batches while the comparison runs.

Backgrounds: only-left, only-right and different rows take the palette-friendly colours of
:mod:`inspector.style`; the fork row is bold and marked ``⋔``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from PySide6.QtCore import QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont

from engine.diagnostics.chain_verify import ChainVerifier, RowState
from engine.diagnostics.compare import Alignment, CompareRow, RowKind, SessionComparison
from engine.diagnostics.compare_bundle import BundleSide
from engine.diagnostics.compare_scopes import CoValueComparison, CoValueRow, KeyDifference, SessionPair
from engine.diagnostics.compare_sides import StoreSide
from engine.diagnostics.covalue_summary import ContentSnapshot
from engine.diagnostics.session_rows import SessionSource
from engine.ids import CoValueID, SessionID
from inspector.models.chain import STATE_COLORS, STATE_HELP, STATE_TEXT
from inspector.models.table import Index, TableModel
from inspector.style import (
    COMPARE_COLORS,
    COMPARE_FOLD_BACKGROUND,
    COMPARE_LABELS,
    FORK_MARK,
    format_ms,
    format_ms_short,
    format_value,
    short_session,
)
from inspector.targets.base import Target
from inspector.targets.bundle import BundleTarget
from inspector.targets.node import NodeTarget
from inspector.targets.store import StoreTarget

__all__ = ["KEEP_PAGES", "PAGE_ROWS", "CoValuesModel", "CompareModel", "KeysModel", "PairsModel", "TargetSide"]

#: Aligned rows read and decoded together (both sides).
PAGE_ROWS = 64
#: Pages kept decoded.
KEEP_PAGES = 64
#: Longest interval between two verification repaints (seconds).
PROGRESS_INTERVAL = 0.5

DISPLAY = int(Qt.ItemDataRole.DisplayRole)
BACKGROUND = int(Qt.ItemDataRole.BackgroundRole)
FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
FONT = int(Qt.ItemDataRole.FontRole)
TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_CENTER = int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter)


class TargetSide:
    """An open inspector target as a :class:`CompareSide` (use from the loop's thread)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    @property
    def label(self) -> str:
        return self.target.label

    def covalue_ids(self) -> list[CoValueID]:
        return self.target.ids()

    def session_ids(self, covalue: CoValueID) -> list[SessionID]:
        summary = self.target.summary(covalue)
        return sorted(s.id for s in summary.sessions) if summary is not None else []

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        target = self.target
        if isinstance(target, BundleTarget) and target.bundle is not None:
            # a bundle without rows still knows the hash at every checkpoint
            return BundleSide(target.bundle).open_session(covalue, session)
        return target.open_session(covalue, session)

    def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        return None  # asynchronous here: Target.content, awaited by the view

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        target = self.target
        store = None
        if isinstance(target, BundleTarget):
            return target.conflict_fork_record(covalue, conflict)
        if isinstance(target, StoreTarget):
            store = target.store
        elif isinstance(target, NodeTarget) and target.node is not None:
            store = target.node.store
        return None if store is None else StoreSide(store).conflict_fork_record(covalue, conflict)


class CompareModel(TableModel):
    """Two sessions aligned (see the module docstring). Emits ``foldChanged(bool)``
    (expanded) after the prefix was folded or expanded."""

    INDEX, LEFT_MADE_AT, LEFT_CHANGE, LEFT_STATE, RIGHT_MADE_AT, RIGHT_CHANGE, RIGHT_STATE = range(7)
    HEADERS = ("#", "madeAt", "change", "ok", "madeAt", "change", "ok")
    HEADER_HELP = (
        "aligned index (a conflict session's rows stand at its fork point on the origin)",
        "left: when it was made",
        "left: decoded changes",
        "left: verification",
        "right: when it was made",
        "right: decoded changes",
        "right: verification",
    )
    LEFT_COLUMNS = (INDEX, LEFT_MADE_AT, LEFT_CHANGE, LEFT_STATE)
    RIGHT_COLUMNS = (INDEX, RIGHT_MADE_AT, RIGHT_CHANGE, RIGHT_STATE)

    foldChanged = Signal(bool)

    def __init__(self, comparison: SessionComparison, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.comparison = comparison
        self.expanded = False
        self._pages: OrderedDict[int, list[CompareRow]] = OrderedDict()
        self._made_at_text: dict[int | None, str] = {}
        self._first_difference = comparison.alignment.next_difference(-1)
        self._rows = 0
        self._fork_row: int | None = None
        self._set_expanded(False)
        self._last_progress = time.monotonic()
        self._bold = QFont()
        self._bold.setBold(True)
        self._colors = {kind: QColor(color) for kind, color in COMPARE_COLORS.items()}
        self._fold_color = QColor(COMPARE_FOLD_BACKGROUND)
        self._state_colors = {state: QColor(color) for state, color in STATE_COLORS.items()}

    # -- rows ---------------------------------------------------------------------------

    @property
    def alignment(self) -> Alignment:
        return self.comparison.alignment

    @property
    def has_fold(self) -> bool:
        """True when row 0 is the common prefix's fold row."""
        return self.alignment.common_prefix > 0

    def row_count(self) -> int:
        return self._rows

    def _count_rows(self) -> int:
        a = self.alignment
        if not self.has_fold:
            return a.total
        return 1 + (a.total if self.expanded else a.total - a.common_prefix)

    def aligned(self, row: int) -> int | None:
        """The aligned index shown in ``row`` (None: the fold row)."""
        if not self.has_fold:
            return row
        if row == 0:
            return None
        return row - 1 + (0 if self.expanded else self.alignment.common_prefix)

    def display_row(self, aligned: int) -> int | None:
        """The row showing aligned index ``aligned`` (None: folded away)."""
        if not self.has_fold:
            return aligned
        if self.expanded:
            return aligned + 1
        prefix = self.alignment.common_prefix
        return None if aligned < prefix else aligned - prefix + 1

    @property
    def fork_row(self) -> int | None:
        """The row of the first differing aligned index (None: identical)."""
        return self._fork_row

    def kind(self, row: int) -> RowKind:
        index = self.aligned(row)
        return RowKind.COMMON if index is None else self.alignment.kind(index)

    def toggle_fold(self) -> None:
        """Expand the common prefix into its rows, or fold it back into one row."""
        prefix = self.alignment.common_prefix
        if not prefix:
            return
        if self.expanded:
            self.beginRemoveRows(QModelIndex(), 1, prefix)
            self._set_expanded(False)
            self.endRemoveRows()
        else:
            self.beginInsertRows(QModelIndex(), 1, prefix)
            self._set_expanded(True)
            self.endInsertRows()
        self.foldChanged.emit(self.expanded)

    def _set_expanded(self, expanded: bool) -> None:
        self.expanded = expanded
        # Asked for on every cell of every paint: kept, not recomputed.
        self._rows = self._count_rows()
        first = self._first_difference
        self._fork_row = None if first is None else self.display_row(first)

    def compare_row(self, row: int) -> CompareRow | None:
        """The decoded aligned row of ``row`` (None: the fold row)."""
        index = self.aligned(row)
        if index is None:
            return None
        number, offset = divmod(index, PAGE_ROWS)
        page = self._pages.get(number)
        if page is None:
            page = self.comparison.rows(number * PAGE_ROWS, PAGE_ROWS)
            self._pages[number] = page
            while len(self._pages) > KEEP_PAGES:
                self._pages.popitem(last=False)
            if len(self._made_at_text) > KEEP_PAGES * PAGE_ROWS:
                self._made_at_text.clear()
        else:
            self._pages.move_to_end(number)
        return page[offset] if offset < len(page) else None

    def warm(self, first: int, last: int) -> None:
        """Read and format rows ``[first, last)`` now, so that the paint that shows them
        does not also read them: a first paint of both panes would otherwise take most of a
        loop turn."""
        for row in range(max(0, first), min(self.row_count(), last)):
            item = self.compare_row(row)
            for tx in () if item is None else (item.left, item.right):
                if tx is not None:
                    self._made_at(tx.made_at)

    @property
    def rows_fetched(self) -> int:
        """Rows both sides' readers returned so far."""
        return self.comparison.left.rows_read + self.comparison.right.rows_read

    @property
    def cached_rows(self) -> int:
        return sum(len(page) for page in self._pages.values())

    def state(self, row: int, left: bool) -> RowState | None:
        """A side's verification state of ``row`` now (None: no verifier, or no row there)."""
        index = self.aligned(row)
        if index is None:
            return None
        a = self.alignment
        offset, end = (a.left_offset, a.left_end) if left else (a.right_offset, a.right_end)
        verifier: ChainVerifier | None = self.comparison.left_verifier if left else self.comparison.right_verifier
        if verifier is None or not offset <= index < end:
            return None
        return verifier.state(index - offset)

    def summary_text(self) -> str:
        """One line (rich text) for the view's header: the fork and the counts."""
        a = self.alignment
        if a.identical:
            return f"Identical: {a.common_prefix:,} transactions on both sides."
        if a.conflict is not None:
            where = f"conflict session: {a.conflict.fork.describe()} ({a.conflict.basis})"
        elif a.fork is not None:
            where = a.fork.describe()
        else:
            where = "no fork: one side is ahead"
        return (
            f"<b>{where}</b> · common prefix {a.common_prefix:,} · different {a.count(RowKind.DIFFERENT):,} · "
            f"only left {a.count(RowKind.ONLY_LEFT):,} · only right {a.count(RowKind.ONLY_RIGHT):,}"
        )

    # -- navigation ---------------------------------------------------------------------

    def next_difference(self, row: int) -> int | None:
        """The row of the next run of differing rows after ``row`` (-1: from the top)."""
        index = self.aligned(row) if row >= 0 else -1
        if index is None:  # the fold row
            index = self.alignment.common_prefix - 1
        found = self.alignment.next_difference(index)
        return None if found is None else self.display_row(found)

    def previous_difference(self, row: int) -> int | None:
        index = self.aligned(row) if row >= 0 else None
        if index is None:
            return None
        found = self.alignment.previous_difference(index)
        return None if found is None else self.display_row(found)

    # -- verification ------------------------------------------------------------------

    def on_verification_progress(self) -> bool:
        """Called after a slice of either side's verifier; repaints the state columns at most
        every :data:`PROGRESS_INTERVAL` (and when a verifier is done). True when it did."""
        now = time.monotonic()
        verifiers = [v for v in (self.comparison.left_verifier, self.comparison.right_verifier) if v is not None]
        finished = all(v.done for v in verifiers)
        if not finished and now - self._last_progress < PROGRESS_INTERVAL:
            return False
        self._last_progress = now
        rows = self.row_count()
        if rows:
            self.dataChanged.emit(self.index(0, self.LEFT_STATE), self.index(rows - 1, self.RIGHT_STATE))
        return True

    # -- Qt -------------------------------------------------------------------------------

    def data(self, index: Index, role: int = DISPLAY) -> Any:
        # Called for every visible cell and role on each paint (two panes): roles this model
        # never answers leave first, and the row's kind is worked out once.
        if role not in _ANSWERED or not index.isValid():
            return None
        row, column = index.row(), index.column()
        if not 0 <= row < self.row_count():
            return None
        if row == 0 and self.has_fold:
            return self._fold_data(column, role)
        if role == DISPLAY:
            return self._display(row, column)
        if role == BACKGROUND:
            return self._colors.get(self.kind(row))
        if role == FONT:
            return self._bold if row == self.fork_row else None
        if role == ALIGNMENT:
            return _ALIGNMENTS.get(column)
        if role == FOREGROUND:
            if column not in _STATE_COLUMNS:
                return None
            state = self.state(row, column == self.LEFT_STATE)
            return None if state is None else self._state_colors[state]
        return self._tooltip(row, column, self.kind(row))

    def _fold_data(self, column: int, role: int) -> Any:
        prefix = self.alignment.common_prefix
        if role == DISPLAY and column in (self.LEFT_MADE_AT, self.LEFT_CHANGE, self.RIGHT_MADE_AT, self.RIGHT_CHANGE):
            arrow = "▾" if self.expanded else "▸"
            action = "click to fold" if self.expanded else "click to expand"
            return f"{arrow} {prefix:,} common rows (0–{prefix - 1:,}) · {action}"
        if role == DISPLAY and column == self.INDEX:
            return "⋯"
        if role == BACKGROUND:
            return self._fold_color
        if role == TOOLTIP:
            conflict = self.alignment.conflict
            if conflict is not None:
                return (
                    f"the origin's first {prefix:,} rows: the divergent copy shared them before the fork "
                    f"({conflict.basis} fork point)"
                )
            return f"both sides hold the same {prefix:,} rows (their chain hashes agree up to h({prefix}))"
        return None

    def _display(self, row: int, column: int) -> Any:
        index = self.aligned(row)
        if column == self.INDEX:
            return f"{FORK_MARK} {index}" if row == self.fork_row else str(index)
        left = column in (self.LEFT_MADE_AT, self.LEFT_CHANGE, self.LEFT_STATE)
        if column in (self.LEFT_STATE, self.RIGHT_STATE):
            state = self.state(row, left)
            return "" if state is None else STATE_TEXT[state]
        item = self.compare_row(row)
        tx = None if item is None else (item.left if left else item.right)
        if tx is None:
            return ""
        if column in (self.LEFT_MADE_AT, self.RIGHT_MADE_AT):
            return self._made_at(tx.made_at)
        return tx.summary

    def _made_at(self, made_at: int | None) -> str:
        # formatting a time costs more than the rest of a cell: once per row read
        text = self._made_at_text.get(made_at)
        if text is None:
            text = self._made_at_text[made_at] = format_ms_short(made_at)
        return text

    def _tooltip(self, row: int, column: int, kind: RowKind) -> str | None:
        if column in (self.LEFT_STATE, self.RIGHT_STATE):
            state = self.state(row, column == self.LEFT_STATE)
            return None if state is None else STATE_HELP[state]
        item = self.compare_row(row)
        text = COMPARE_LABELS[kind]
        if row == self.fork_row and self.alignment.fork is not None:
            text = f"{self.alignment.fork.describe()}: the first index whose chain hash differs\n{text}"
        elif row == self.fork_row and self.alignment.conflict is not None:
            conflict = self.alignment.conflict
            text = f"the conflict session starts here ({conflict.basis} {conflict.fork.describe()})\n{text}"
        if item is not None:
            left = column in (self.INDEX, self.LEFT_MADE_AT, self.LEFT_CHANGE)
            tx = item.left if left else item.right
            if tx is not None:
                text += f"\n#{tx.index} {format_ms(tx.made_at)}: {tx.summary}\nhash {tx.hash.hex()}"
        return text


_ANSWERED = frozenset({DISPLAY, BACKGROUND, FONT, ALIGNMENT, FOREGROUND, TOOLTIP})
_STATE_COLUMNS = frozenset({CompareModel.LEFT_STATE, CompareModel.RIGHT_STATE})
_ALIGNMENTS = {CompareModel.INDEX: _RIGHT, CompareModel.LEFT_STATE: _CENTER, CompareModel.RIGHT_STATE: _CENTER}


class PairsModel(TableModel):
    """The sessions of one CoValue on two sides, paired by id (see
    :class:`~engine.diagnostics.compare_scopes.CoValueComparison`)."""

    HEADERS = ("session", "status", "left", "right", "fork point")
    HEADER_HELP = ("session id", "how the two copies relate", "left count", "right count", "first differing index")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.comparison: CoValueComparison | None = None

    def set_comparison(self, comparison: CoValueComparison | None) -> None:
        self.beginResetModel()
        self.comparison = comparison
        self.endResetModel()

    def pair(self, row: int) -> SessionPair:
        assert self.comparison is not None
        return self.comparison.pairs[row]

    def row_count(self) -> int:
        return 0 if self.comparison is None else len(self.comparison.pairs)

    def data(self, index: Index, role: int = DISPLAY) -> Any:
        if not index.isValid() or not 0 <= index.row() < self.row_count():
            return None
        pair = self.pair(index.row())
        if role == DISPLAY:
            values = (
                short_session(pair.session),
                str(pair.status).replace("_", " "),
                "" if pair.left_count is None else f"{pair.left_count:,}",
                "" if pair.right_count is None else f"{pair.right_count:,}",
                "" if pair.fork is None else pair.fork.describe(),
            )
            return values[index.column()]
        if role == TOOLTIP:
            return pair.session
        if role == ALIGNMENT and index.column() in (2, 3):
            return _RIGHT
        return None


class KeysModel(TableModel):
    """Content keys whose winning change differs between the two sides."""

    HEADERS = ("key", "left winner", "right winner")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.keys: list[KeyDifference] = []

    def set_keys(self, keys: list[KeyDifference]) -> None:
        self.beginResetModel()
        self.keys = keys
        self.endResetModel()

    def row_count(self) -> int:
        return len(self.keys)

    def data(self, index: Index, role: int = DISPLAY) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.keys):
            return None
        diff = self.keys[index.row()]
        if role in (DISPLAY, TOOLTIP):
            if index.column() == 0:
                return diff.key
            entry = diff.left if index.column() == 1 else diff.right
            if entry is None:
                return "(no winner)"
            value = "deleted" if entry.deleted else format_value(entry.value, 80)
            where = f"{short_session(entry.session)}#{entry.index} at {format_ms_short(entry.made_at)}"
            return f"{value} · {where}" if role == DISPLAY else f"{value}\n{entry.session} #{entry.index}"
        return None


class CoValuesModel(TableModel):
    """CoValues of two whole targets that are not the same, appended as they are found."""

    HEADERS = ("CoValue", "status", "sessions that differ")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.items: list[CoValueRow] = []
        #: CoValues compared so far (the same ones included)
        self.compared = 0

    def clear(self) -> None:
        self.beginResetModel()
        self.items = []
        self.compared = 0
        self.endResetModel()

    def add(self, rows: list[CoValueRow], compared: int) -> None:
        """Append a batch (only those that differ are listed)."""
        self.compared += compared
        if not rows:
            return
        first = len(self.items)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self.items.extend(rows)
        self.endInsertRows()

    def row_count(self) -> int:
        return len(self.items)

    def data(self, index: Index, role: int = DISPLAY) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.items):
            return None
        row = self.items[index.row()]
        if role == DISPLAY:
            values = (row.covalue, str(row.status).replace("_", " "), str(len(row.sessions)))
            return values[index.column()]
        if role == TOOLTIP:
            return "\n".join(f"{p.status}: {p.session}" for p in row.sessions) or row.covalue
        return None
