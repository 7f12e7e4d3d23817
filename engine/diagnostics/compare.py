"""Two session logs side by side, aligned by index: the comparison behind ``kintsugi compare``
and the inspector's compare view.

Pure and windowed: a comparison reads its two sides through
:class:`~engine.diagnostics.session_rows.SessionSource` windows only, and never holds a whole
session. Two million-transaction sessions compare in a few dozen one-row reads
(:func:`~engine.model.fork.find_fork` is a binary search on chain hashes); rows are decoded
a window at a time when someone asks for them (:meth:`SessionComparison.rows`).

Alignment (:class:`Alignment`). Each side sits at an *offset* in one shared index space:

- two copies of one session (two targets, or the same store twice) sit at 0, and the fork
  point (:mod:`engine.model.fork`: the first index whose chain hash differs, with the last
  common hash) ends their common prefix; without one, the shorter copy is a prefix of the
  longer and the common prefix is the shorter copy's length;
- a session and one of its conflict sessions: the conflict session sits at its recorded (or
  inferred) fork point (:func:`align_conflict`), and the origin's rows before it are the
  common prefix the divergent copy shared.

Every aligned index below the common prefix is ``common`` (a viewer folds them into one
range with its count); from there a row held by both sides is ``different`` (their chains
differ from the fork on), one held by a single side is ``only_left`` or ``only_right``.
Those three kinds form at most three runs (:meth:`Alignment.blocks`), which "next
difference" steps through.

Each row carries both sides' decoded change (:class:`~engine.diagnostics.session_rows.TxRow`:
madeAt, a change summary, the stored hash) and, when the comparison was given
:class:`~engine.diagnostics.chain_verify.ChainVerifier` per side, each side's verification
state. Verification stays the verifiers' business: this module only asks them.

Scopes beyond one session (a CoValue on two targets, two whole targets) are in
:mod:`engine.diagnostics.compare_scopes`; what a side of a comparison must offer is
:mod:`engine.diagnostics.compare_sides`.

Imports: model, ids, errors and the other diagnostics modules (the diagnostics row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Any

from engine.diagnostics.chain_verify import ChainBreak, ChainVerifier, RowState
from engine.diagnostics.session_rows import SessionSource, TxRow, decode_row, decode_rows
from engine.errors import KintsugiError, UsageError
from engine.ids import SessionID
from engine.model.fork import (
    ConflictFork,
    ForkPoint,
    HashAt,
    check_conflict_fork,
    decode_conflict_fork,
    find_fork,
    infer_conflict_fork,
    origin_of,
)

__all__ = [
    "DEFAULT_LISTED_ROWS",
    "Alignment",
    "Block",
    "CompareRow",
    "RowKind",
    "SessionComparison",
    "align_conflict",
    "compare_sessions",
    "hash_reader",
    "json_safe",
    "row_json",
]

#: Rows of each kind a JSON report lists (their counts are always complete).
DEFAULT_LISTED_ROWS = 50
#: Rows read per window while listing rows for a report.
LIST_WINDOW = 256


class RowKind(StrEnum):
    COMMON = "common"
    DIFFERENT = "different"
    ONLY_LEFT = "only_left"
    ONLY_RIGHT = "only_right"


@dataclass(frozen=True, slots=True)
class Block:
    """A run ``[start, end)`` of aligned rows of one kind."""

    kind: RowKind
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Alignment:
    """Where two sides stand in one index space: the left side's rows are the aligned
    indices ``[left_offset, left_end)``, the right side's ``[right_offset, right_end)``.
    ``common_prefix`` rows are shared; ``fork`` is the fork point of two copies of one
    session (None: one is a prefix of the other, or the sides are a session and its conflict
    session, which ``conflict`` then describes)."""

    left_offset: int
    left_end: int
    right_offset: int
    right_end: int
    common_prefix: int
    fork: ForkPoint | None = None
    conflict: ConflictFork | None = None

    @property
    def total(self) -> int:
        """Aligned rows in all (the longer side's end)."""
        return max(self.left_end, self.right_end)

    @property
    def identical(self) -> bool:
        """Both sides hold exactly the same rows (only ever two copies of one session)."""
        return self.conflict is None and self.fork is None and self.left_end == self.right_end

    def kind(self, index: int) -> RowKind:
        """The kind of aligned row ``index`` (``0 <= index < total``)."""
        if index < self.common_prefix:
            return RowKind.COMMON
        on_left = self.left_offset <= index < self.left_end
        on_right = self.right_offset <= index < self.right_end
        if on_left and on_right:
            return RowKind.DIFFERENT
        return RowKind.ONLY_LEFT if on_left else RowKind.ONLY_RIGHT

    def blocks(self) -> list[Block]:
        """The runs of rows of one kind, in order (the common prefix first, if any)."""
        cuts = sorted(
            {0, self.total, self.common_prefix}
            | {
                x
                for x in (self.left_offset, self.left_end, self.right_offset, self.right_end)
                if x > self.common_prefix
            }
        )
        out: list[Block] = []
        for start, end in pairwise(cuts):
            if start >= end or end > self.total:
                continue
            kind = self.kind(start)
            if out and out[-1].kind is kind:
                out[-1] = Block(kind, out[-1].start, end)
            else:
                out.append(Block(kind, start, end))
        return out

    def count(self, kind: RowKind) -> int:
        return sum(len(b) for b in self.blocks() if b.kind is kind)

    def next_difference(self, index: int) -> int | None:
        """The first row of the first run of differing rows that starts after ``index``
        (-1: from before the first row), or None when there is none."""
        starts = [b.start for b in self.blocks() if b.kind is not RowKind.COMMON and b.start > index]
        return min(starts, default=None)

    def previous_difference(self, index: int) -> int | None:
        """The first row of the last run of differing rows that starts before ``index``
        (from inside a run: that run's first row), or None when there is none."""
        starts = [b.start for b in self.blocks() if b.kind is not RowKind.COMMON and b.start < index]
        return max(starts, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "fork": None if self.fork is None else self.fork.to_json(),
            "conflict": None if self.conflict is None else self.conflict.to_json(),
            "common_prefix": self.common_prefix,
            "total": self.total,
            "blocks": [{"kind": str(b.kind), "start": b.start, "end": b.end} for b in self.blocks()],
        }


@dataclass(frozen=True, slots=True)
class CompareRow:
    """Aligned row ``index``: its kind, each side's decoded transaction (None: that side has
    no row there, or it is missing from storage) and each side's verification state (None:
    not known, or no row)."""

    index: int
    kind: RowKind
    left: TxRow | None
    right: TxRow | None
    left_state: RowState | None = None
    right_state: RowState | None = None


def hash_reader(source: SessionSource) -> HashAt:
    """``h(n)`` of ``source``, one stored hash at a time (``h(0)`` is the chain base; a row
    missing from storage reads as an empty hash, which matches nothing)."""

    def hash_at(n: int) -> bytes:
        if n <= 0:
            return source.base()
        return source.row_hash(n - 1) or b""

    return hash_at


def _made_at(source: SessionSource, index: int) -> int | None:
    rows = source.window(index, 1)
    return decode_row(rows[0]).made_at if rows and rows[0][0] == index else None


def align_conflict(origin: SessionSource, conflict: SessionSource, record: bytes | None = None) -> ConflictFork:
    """Where ``conflict`` (a conflict session of ``origin``, same CoValue) stands on
    ``origin``: at the recorded fork point when ``record`` (the conflict fork record kept
    beside the store, :func:`~engine.model.fork.encode_conflict_fork`) names this origin and
    the origin still has the recorded hash there; else inferred
    (:func:`~engine.model.fork.infer_conflict_fork`). Reads a few rows.

    Raises :class:`UsageError` when ``conflict`` is not a conflict session of ``origin``.
    """
    if origin.covalue != conflict.covalue or origin_of(conflict.session) != origin.session:
        raise UsageError(f"{conflict.session} is not a conflict session of {origin.session}")
    hash_at = hash_reader(origin)
    decoded = decode_conflict_fork(record) if record is not None else None
    if decoded is not None:
        named, fork = decoded
        if named == origin.session and check_conflict_fork(fork, origin.count, hash_at):
            return ConflictFork(conflict.session, origin.session, fork, True)
    first = _made_at(conflict, 0) if conflict.count else None
    fork = infer_conflict_fork(origin.count, list(origin.checkpoints()), lambda i: _made_at(origin, i), hash_at, first)
    return ConflictFork(conflict.session, origin.session, fork, False)


@dataclass(slots=True)
class SessionComparison:
    """Two sessions aligned (:func:`compare_sessions`). ``left_verifier``/``right_verifier``
    (optional) give each row's verification state; they are read, never stepped, here."""

    left: SessionSource
    right: SessionSource
    alignment: Alignment
    left_label: str = "left"
    right_label: str = "right"
    left_verifier: ChainVerifier | None = None
    right_verifier: ChainVerifier | None = None
    #: rows decoded by :meth:`rows` so far (both sides), for tests and benchmarks
    rows_decoded: int = field(default=0)

    @property
    def identical(self) -> bool:
        return self.alignment.identical

    def rows(self, start: int, limit: int) -> list[CompareRow]:
        """Aligned rows ``[start, start + limit)`` (clipped to the total), reading one window
        of each side."""
        a = self.alignment
        start = max(0, start)
        stop = min(a.total, start + max(0, limit))
        if start >= stop:
            return []
        lefts = self._window(self.left, a.left_offset, start, stop)
        rights = self._window(self.right, a.right_offset, start, stop)
        out = []
        for index in range(start, stop):
            left, right = lefts.get(index), rights.get(index)
            if left is None and a.kind(index) is RowKind.COMMON and a.left_offset > index:
                left = rights.get(index)  # a conflict session on the left: the prefix is the origin's
            if right is None and a.kind(index) is RowKind.COMMON and a.right_offset > index:
                right = lefts.get(index)
            out.append(
                CompareRow(
                    index,
                    a.kind(index),
                    left,
                    right,
                    self._state(self.left_verifier, index - a.left_offset, a.left_offset <= index < a.left_end),
                    self._state(self.right_verifier, index - a.right_offset, a.right_offset <= index < a.right_end),
                )
            )
        return out

    def _window(self, source: SessionSource, offset: int, start: int, stop: int) -> dict[int, TxRow]:
        first = max(0, start - offset)
        last = stop - offset
        if last <= first:
            return {}
        try:
            decoded = decode_rows(source.window(first, last - first))
        except KintsugiError:
            return {}  # unreadable rows show as missing; the verifier says why
        self.rows_decoded += len(decoded)
        return {row.index + offset: row for row in decoded}

    @staticmethod
    def _state(verifier: ChainVerifier | None, own: int, present: bool) -> RowState | None:
        return verifier.state(own) if verifier is not None and present else None

    def iter_rows(self, kind: RowKind, limit: int) -> Iterator[CompareRow]:
        """Up to ``limit`` rows of ``kind``, in order, read a window at a time."""
        listed = 0
        for block in self.alignment.blocks():
            if block.kind is not kind:
                continue
            position = block.start
            while position < block.end and listed < limit:
                window = min(LIST_WINDOW, block.end - position, limit - listed)
                for row in self.rows(position, window):
                    yield row
                    listed += 1
                position += window

    def summary(self) -> dict[str, Any]:
        """Counts, fork and each side's description, without rows."""
        a = self.alignment
        return {
            **a.to_json(),
            "left": _side_json(self.left, self.left_label, self.left_verifier),
            "right": _side_json(self.right, self.right_label, self.right_verifier),
            "only_left": a.count(RowKind.ONLY_LEFT),
            "only_right": a.count(RowKind.ONLY_RIGHT),
            "different": a.count(RowKind.DIFFERENT),
        }

    def to_json(self, listed: int = DEFAULT_LISTED_ROWS) -> dict[str, Any]:
        """The report ``kintsugi compare --json`` prints for two sessions: the summary, and
        for each of ``only_left``, ``only_right`` and ``different`` its count and its first
        ``listed`` rows (each with both sides' decoded change, madeAt and verification)."""
        out = self.summary()
        for kind in (RowKind.ONLY_LEFT, RowKind.ONLY_RIGHT, RowKind.DIFFERENT):
            out[str(kind)] = {
                "count": out[str(kind)],
                "rows": [row_json(row) for row in self.iter_rows(kind, listed)],
            }
        return out


def _side_json(source: SessionSource, label: str, verifier: ChainVerifier | None) -> dict[str, Any]:
    head = hash_reader(source)(source.count)
    out: dict[str, Any] = {
        "target": label,
        "covalue": source.covalue,
        "session": source.session,
        "count": source.count,
        "head": head.hex(),
    }
    if verifier is not None:
        out["verification"] = _verification_json(verifier.failure, verifier.verified, verifier.done)
    return out


def _verification_json(failure: ChainBreak | None, verified: int, done: bool) -> dict[str, Any]:
    if failure is not None:
        return {"state": "broken", "index": failure.index, "code": failure.code, "reason": failure.reason}
    return {"state": "verified" if done else "partial", "verified": verified}


def json_safe(value: Any) -> Any:
    """``value`` with bytes as hex and tuples as lists, for a JSON report."""
    if isinstance(value, bytes | bytearray):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    return value


def _tx_json(tx: TxRow | None, state: RowState | None) -> dict[str, Any] | None:
    if tx is None:
        return None
    out: dict[str, Any] = {
        "index": tx.index,
        "made_at": tx.made_at,
        "change": tx.summary,
        "changes": json_safe(tx.changes) if tx.changes is not None else None,
        "hash": tx.hash.hex(),
    }
    if state is not None:
        out["verification"] = str(state)
    if tx.error is not None:
        out["error"] = tx.error
    return out


def row_json(row: CompareRow) -> dict[str, Any]:
    """One aligned row for a JSON report: its index and each side's transaction (its own
    index, madeAt, change summary, decoded changes, stored hash, verification)."""
    return {
        "index": row.index,
        "kind": str(row.kind),
        "left": _tx_json(row.left, row.left_state),
        "right": _tx_json(row.right, row.right_state),
    }


def compare_sessions(
    left: SessionSource,
    right: SessionSource,
    *,
    left_label: str = "left",
    right_label: str = "right",
    conflict_record: bytes | None = None,
    left_verifier: ChainVerifier | None = None,
    right_verifier: ChainVerifier | None = None,
) -> SessionComparison:
    """Align two sessions of one CoValue.

    Two copies of one session are aligned index for index around their fork point; a
    session and one of its conflict sessions (either way round) at the conflict session's
    fork point (``conflict_record``: its record from the origin's side, if any). Reads
    ``O(log n)`` single rows. Raises :class:`UsageError` for sessions of different CoValues,
    or two different sessions neither of which is a conflict session of the other.
    """
    if left.covalue != right.covalue:
        raise UsageError("the two sessions belong to different CoValues")
    if left.session == right.session:
        alignment = _copies(left, right)
    elif _is_conflict_of(right.session, left.session):
        conflict = align_conflict(left, right, conflict_record)
        k = conflict.fork.index
        alignment = Alignment(0, left.count, k, k + right.count, k, None, conflict)
    elif _is_conflict_of(left.session, right.session):
        conflict = align_conflict(right, left, conflict_record)
        k = conflict.fork.index
        alignment = Alignment(k, k + left.count, 0, right.count, k, None, conflict)
    else:
        raise UsageError(
            f"{left.session} and {right.session} are different sessions: compare copies of one session, "
            "or a session with one of its conflict sessions"
        )
    return SessionComparison(left, right, alignment, left_label, right_label, left_verifier, right_verifier)


def _is_conflict_of(candidate: SessionID, origin: SessionID) -> bool:
    try:
        return origin_of(candidate) == origin
    except KintsugiError:
        return False


def _copies(left: SessionSource, right: SessionSource) -> Alignment:
    fork = find_fork(hash_reader(left), left.count, hash_reader(right), right.count)
    common = fork.index if fork is not None else min(left.count, right.count)
    return Alignment(0, left.count, 0, right.count, common, fork)
