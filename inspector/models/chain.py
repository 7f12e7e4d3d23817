"""One session's transactions as a virtual table: rows are read from storage by window.

:class:`SessionChainModel` announces the session's full row count but materialises only the
pages the view asks for: :data:`PAGE_ROWS` rows per page read with one
:meth:`SessionSource.window` call and decoded, at most :data:`KEEP_PAGES` pages kept (least
recently used dropped). Opening a million-row session or jumping to its end therefore reads a
page or two, not the session.

Verification comes from a :class:`ChainVerifier` run in slices by the
:class:`~inspector.verification.VerificationRunner`; the model only asks it for each row's
state. After a slice it emits ``dataChanged`` for the state column of the rows whose state
changed (at most every :data:`PROGRESS_INTERVAL` seconds, and once more when done) and
``verificationChanged``.

Fork marks: on a session that has conflict sessions, the rows where they were split off
(:meth:`SessionChainModel.set_fork_marks`, set by the lanes model) show ``⋔`` in the index
column and the fork colour.

Live sessions: :meth:`refresh` (after the change throttle) emits one ``rowsInserted`` for all
rows appended since, or ``modelReset`` when the session was replaced.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from PySide6.QtCore import QModelIndex, QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont

from engine.diagnostics.chain_verify import ChainVerifier, RowState
from engine.diagnostics.session_rows import SessionSource, TxRow, decode_rows, is_checkpoint
from engine.errors import KintsugiError
from inspector.models.roles import Role
from inspector.models.table import Index, TableModel
from inspector.style import (
    BROKEN_BACKGROUND,
    FORK_BACKGROUND,
    FORK_MARK,
    INVALID_BACKGROUND,
    MUTED,
    OK_GREEN,
    UNVERIFIABLE_BACKGROUND,
    format_ms,
    format_ms_short,
)

__all__ = ["KEEP_PAGES", "PAGE_ROWS", "SessionChainModel"]


#: Rows read and decoded together (about two screens: decoding costs ~20 µs a row).
PAGE_ROWS = 64
#: Pages kept decoded (about 8,000 rows: many screens in each direction).
KEEP_PAGES = 128
#: Longest interval between two verification repaints (seconds).
PROGRESS_INTERVAL = 0.5

HEADER_HELP = (
    "transaction index",
    "when it was made (local time)",
    "decoded changes",
    "chain hash h(i+1), first bytes",
    "◆: a signed checkpoint ends here",
    "verification state",
)
STATE_TEXT = {
    RowState.VERIFIED: "✓",
    RowState.PENDING: "…",
    RowState.UNSIGNED: "○",
    RowState.BROKEN: "✗",
    RowState.UNVERIFIABLE: "–",
}
STATE_HELP = {
    RowState.VERIFIED: "verified: the chain links and a checkpoint signature covers it",
    RowState.PENDING: "not verified yet",
    RowState.UNSIGNED: "linked, not signed yet (a live writer's pending batch)",
    RowState.BROKEN: "first broken link",
    RowState.UNVERIFIABLE: "cannot be verified: the chain is broken before a checkpoint covers it",
}
STATE_COLORS = {
    RowState.VERIFIED: OK_GREEN,
    RowState.PENDING: MUTED,
    RowState.UNSIGNED: "#2f6fb3",
    RowState.BROKEN: "#c0392b",
    RowState.UNVERIFIABLE: MUTED,
}


DISPLAY = int(Qt.ItemDataRole.DisplayRole)
FOREGROUND = int(Qt.ItemDataRole.ForegroundRole)
BACKGROUND = int(Qt.ItemDataRole.BackgroundRole)
FONT = int(Qt.ItemDataRole.FontRole)
ALIGNMENT = int(Qt.ItemDataRole.TextAlignmentRole)
TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_UNUSED_ROLES = frozenset(
    int(r)
    for r in (
        Qt.ItemDataRole.DecorationRole,
        Qt.ItemDataRole.CheckStateRole,
        Qt.ItemDataRole.SizeHintRole,
        Qt.ItemDataRole.EditRole,
        Qt.ItemDataRole.StatusTipRole,
        Qt.ItemDataRole.WhatsThisRole,
        Qt.ItemDataRole.AccessibleTextRole,
        Qt.ItemDataRole.AccessibleDescriptionRole,
    )
)
_STATE_QCOLORS = {state: QColor(color) for state, color in STATE_COLORS.items()}
_MUTED = QColor(MUTED)
_BROKEN = QColor(BROKEN_BACKGROUND)
_INVALID = QColor(INVALID_BACKGROUND)
_UNVERIFIABLE = QColor(UNVERIFIABLE_BACKGROUND)
_FORK = QColor(FORK_BACKGROUND)
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_CENTER = int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter)


class SessionChainModel(TableModel):
    """Rows of one session. ``invalid`` maps a row index to why that transaction is not
    part of content."""

    INDEX, MADE_AT, CHANGE, HASH, CHECKPOINT, STATE = range(6)
    HEADERS = ("#", "madeAt", "change", "hash", "cp", "ok")
    HEADER_HELP = HEADER_HELP

    #: the verifier made progress (or finished, or found a break)
    verificationChanged = Signal()

    def __init__(
        self,
        source: SessionSource,
        verifier: ChainVerifier | None = None,
        invalid: Mapping[int, str] | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.source = source
        self.verifier = verifier
        self._invalid = invalid or {}
        self._rows = source.count  # rows announced to views
        self._identity = source.identity()
        self._pages: OrderedDict[int, list[TxRow | None]] = OrderedDict()
        self._announced = (0, 0)  # (verified, linked) at the last verification repaint
        self._announced_failure = False
        # The first repaint for verification waits a full interval (unless it finishes
        # sooner): right after a lane appears, it is being painted anyway.
        self._last_progress = time.monotonic()
        self._fonts: dict[tuple[bool, bool, bool], QFont] = {}
        self.pages_read = 0
        #: rows where a conflict session of this session was split off, with what to say
        self.fork_marks: dict[int, str] = {}

    # -- reading -------------------------------------------------------------------------

    @property
    def rows_fetched(self) -> int:
        """Rows this model has read from its source so far."""
        return self.source.rows_read

    @property
    def cached_rows(self) -> int:
        return sum(len(p) for p in self._pages.values())

    def row(self, row: int) -> TxRow | None:
        """The decoded row (None: missing from storage or unreadable)."""
        number, offset = divmod(row, PAGE_ROWS)
        page = self._pages.get(number)
        if page is None:
            page = self._read_page(number)
        else:
            self._pages.move_to_end(number)
        return page[offset] if offset < len(page) else None

    def _read_page(self, number: int) -> list[TxRow | None]:
        start = number * PAGE_ROWS
        size = max(0, min(PAGE_ROWS, self._rows - start))
        page: list[TxRow | None] = [None] * size
        try:
            for tx in decode_rows(self.source.window(start, size)):
                if 0 <= tx.index - start < size:
                    page[tx.index - start] = tx
        except KintsugiError:
            pass  # rows stay None: shown as unreadable, and the verifier reports why
        self.pages_read += 1
        self._pages[number] = page
        while len(self._pages) > KEEP_PAGES:
            self._pages.popitem(last=False)
        return page

    def set_fork_marks(self, marks: Mapping[int, str]) -> None:
        """Mark rows where conflict sessions of this session were split off (``⋔`` and the
        fork colour); ``marks`` maps a row to its tooltip. Emits ``dataChanged`` for the
        rows whose mark changed."""
        changed = set(self.fork_marks) ^ set(marks)
        self.fork_marks = dict(marks)
        for row in sorted(r for r in changed if 0 <= r < self._rows):
            self.dataChanged.emit(self.index(row, 0), self.index(row, self.STATE))

    def state(self, row: int) -> RowState:
        return self.verifier.state(row) if self.verifier is not None else RowState.PENDING

    def break_index(self) -> int | None:
        if self.verifier is None or self.verifier.failure is None:
            return None
        return self.verifier.failure.index

    def verification_text(self) -> str:
        """``verified``, ``verifying 4,200 of 10,000``, ``broken at #1234: why``, ``not verified``."""
        v = self.verifier
        if v is None:
            return "not verified"
        if v.failure is not None:
            return f"broken at #{v.failure.index}: {v.failure.reason}"
        if v.done:
            unsigned = self.source.count - v.verified
            return "verified" + (f", {unsigned} unsigned" if unsigned else "")
        return f"verifying {v.linked:,} of {self.source.count:,}"

    # -- updates -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Follow the source: insert appended rows in one batch, or reset if replaced."""
        self.source.reload()
        if self.verifier is not None:
            self.verifier.source.reload()
        count = self.source.count
        if self.source.identity() != self._identity or count < self._rows:
            self.beginResetModel()
            self._identity = self.source.identity()
            self._rows = count
            self._pages.clear()
            self._announced = (0, 0)
            self.endResetModel()
            return
        if count > self._rows:
            # The last page may have been read while partial.
            self._pages.pop((self._rows - 1) // PAGE_ROWS if self._rows else 0, None)
            self.beginInsertRows(QModelIndex(), self._rows, count - 1)
            self._rows = count
            self.endInsertRows()

    def on_verification_progress(self) -> bool:
        """Called by the runner after each slice of this session's verifier. True when it
        emitted ``dataChanged`` (views repaint)."""
        v = self.verifier
        if v is None or self._rows == 0:
            return False
        now = time.monotonic()
        finished = v.done
        if not finished and now - self._last_progress < PROGRESS_INTERVAL:
            return False
        self._last_progress = now
        first = min(self._announced[0], v.verified)
        last = max(v.linked, self._announced[1], v.verified)
        if v.failure is not None and not self._announced_failure:
            # Every row after the break changes to "unverifiable".
            first, last = min(first, v.failure.index), self._rows
            self._announced_failure = True
        last = min(last, self._rows) - 1
        if last >= first:
            self.dataChanged.emit(self.index(first, 0), self.index(last, self.STATE))
        self._announced = (v.verified, v.linked)
        self.verificationChanged.emit()
        return True

    # -- Qt model API --------------------------------------------------------------------

    def row_count(self) -> int:
        return self._rows

    def data(self, index: Index, role: int = DISPLAY) -> Any:
        # Called for every visible cell and role on each paint: the common roles come
        # first, constants are precomputed, and roles this model never answers leave early.
        if role in _UNUSED_ROLES or not index.isValid():
            return None
        i, column = index.row(), index.column()
        if not 0 <= i < self._rows:
            return None
        if role == DISPLAY:
            return self._display(i, column)
        if role == FOREGROUND:
            if column == self.STATE:
                return _STATE_QCOLORS[self.state(i)]
            return _MUTED if column in _MUTED_COLUMNS else None
        if role == BACKGROUND:
            state = self.state(i)
            if state is RowState.BROKEN:
                return _BROKEN
            if i in self._invalid:
                return _INVALID
            if i in self.fork_marks:
                return _FORK
            return _UNVERIFIABLE if state is RowState.UNVERIFIABLE else None
        if role == FONT:
            return self._font(i, column)
        if role == ALIGNMENT:
            return _ALIGNMENTS.get(column)
        if role == TOOLTIP:
            return self._tooltip(i, column)
        if role == Role.STATE:
            return self.state(i)
        if role == Role.CHECKPOINT:
            return is_checkpoint(self.source.checkpoints(), i)
        if role == Role.RAW and column == self.MADE_AT:
            tx = self.row(i)
            return None if tx is None else tx.made_at
        return None

    def _display(self, i: int, column: int) -> Any:
        if column == self.INDEX:
            return f"{FORK_MARK} {i}" if i in self.fork_marks else str(i)
        if column == self.CHECKPOINT:
            return "◆" if is_checkpoint(self.source.checkpoints(), i) else ""
        if column == self.STATE:
            return STATE_TEXT[self.state(i)]
        tx = self.row(i)
        if tx is None:
            return "(missing)" if column == self.CHANGE else ""
        if column == self.MADE_AT:
            return format_ms_short(tx.made_at)
        if column == self.CHANGE:
            return tx.summary
        if column == self.HASH:
            return tx.hash_prefix
        return None

    def _tooltip(self, i: int, column: int) -> str | None:
        if column == self.INDEX and i in self.fork_marks:
            return self.fork_marks[i]
        state = self.state(i)
        if column == self.STATE or state is RowState.BROKEN:
            failure = self.verifier.failure if self.verifier is not None else None
            if state is RowState.BROKEN and failure is not None:
                return f"{STATE_HELP[state]} ({failure.code}): {failure.reason}"
            return STATE_HELP[state]
        tx = self.row(i)
        if column == self.MADE_AT and tx is not None and tx.made_at is not None:
            return f"{format_ms(tx.made_at)} ({tx.made_at} ms)"
        if column == self.CHANGE:
            reason = self._invalid.get(i)
            text = tx.summary if tx is not None else "missing from storage or unreadable"
            return f"{text}\ninvalid: {reason}" if reason else text
        if column == self.HASH and tx is not None:
            return tx.hash.hex()
        if column == self.CHECKPOINT and is_checkpoint(self.source.checkpoints(), i):
            return f"checkpoint {i + 1}: the owner signed h({i + 1})"
        return None

    def _font(self, i: int, column: int) -> QFont | None:
        broken = self.state(i) is RowState.BROKEN
        invalid = column == self.CHANGE and i in self._invalid
        if not (broken or invalid or column == self.HASH):
            return None
        key = (column == self.HASH, broken, invalid)
        font = self._fonts.get(key)
        if font is None:
            font = QFont()
            if column == self.HASH:
                font.setFamily("monospace")
            font.setBold(broken)
            font.setStrikeOut(invalid)
            self._fonts[key] = font
        return font


_MUTED_COLUMNS = frozenset({SessionChainModel.INDEX, SessionChainModel.HASH, SessionChainModel.CHECKPOINT})
_ALIGNMENTS = {SessionChainModel.INDEX: _RIGHT, SessionChainModel.CHECKPOINT: _CENTER, SessionChainModel.STATE: _CENTER}
