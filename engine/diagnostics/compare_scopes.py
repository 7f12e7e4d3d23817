"""Comparisons wider than one session: one CoValue on two targets, and two whole targets.

- :func:`pair_session`: one session id on both sides, by its chain hashes alone (a couple
  of single-row reads, a binary search when forked): ``same``, ``left_ahead`` /
  ``right_ahead`` (one copy is a prefix of the other), ``forked`` (with the fork point,
  :mod:`engine.model.fork`), ``only_left`` / ``only_right``.
- :func:`compare_covalue`: every session of one CoValue paired by id, and (when asked) the
  content compared key by key: each key whose winning change differs, with the winning
  transaction (session, index, madeAt) on each side. Content is the one expensive part (it
  decodes every transaction); it is optional and may be handed in precomputed.
- :func:`compare_targets` / :func:`iter_compare_targets`: every CoValue of either side,
  classified (:class:`CoValueStatus`): on one side only, the same, forked, or behind on
  one side (or each side ahead in different sessions). The iterator yields one CoValue at a
  time so a caller with a UI can spread the work over loop turns.

Sides are :class:`~engine.diagnostics.compare_sides.CompareSide`; nothing here reads
storage except through them, and nothing holds a whole session.

Imports: model, ids, content and the other diagnostics modules (the diagnostics row).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.content.comap import Entry
from engine.diagnostics.compare import hash_reader, json_safe
from engine.diagnostics.compare_bundle import fork_window, known_points
from engine.diagnostics.compare_sides import CompareSide
from engine.diagnostics.covalue_summary import ContentSnapshot
from engine.diagnostics.session_rows import SessionSource
from engine.ids import CoValueID, SessionID
from engine.model.fork import ForkPoint, find_fork

__all__ = [
    "CoValueComparison",
    "CoValueRow",
    "CoValueStatus",
    "KeyDifference",
    "PairStatus",
    "SessionPair",
    "TargetComparison",
    "compare_content",
    "compare_covalue",
    "compare_targets",
    "covalue_status",
    "iter_compare_targets",
    "pair_session",
]


class PairStatus(StrEnum):
    SAME = "same"
    LEFT_AHEAD = "left_ahead"
    RIGHT_AHEAD = "right_ahead"
    FORKED = "forked"
    ONLY_LEFT = "only_left"
    ONLY_RIGHT = "only_right"


@dataclass(frozen=True, slots=True)
class SessionPair:
    """One session id on both sides: counts (None: that side lacks it) and, when forked,
    the fork point."""

    session: SessionID
    status: PairStatus
    left_count: int | None
    right_count: int | None
    fork: ForkPoint | None = None
    #: set when the fork is known only to lie in ``[fork.index, fork_before)`` (a side
    #: without rows: checkpoint hashes only); None when ``fork`` is exact
    fork_before: int | None = None

    def to_json(self) -> dict[str, Any]:
        fork = None if self.fork is None else self.fork.to_json()
        if fork is not None and self.fork_before is not None:
            fork["before"] = self.fork_before
        return {
            "session": self.session,
            "status": str(self.status),
            "left_count": self.left_count,
            "right_count": self.right_count,
            "fork": fork,
        }


def pair_session(session: SessionID, left: SessionSource | None, right: SessionSource | None) -> SessionPair:
    """How the two copies of ``session`` relate (a source is None when its side lacks it)."""
    if left is None or right is None:
        status = PairStatus.ONLY_RIGHT if left is None else PairStatus.ONLY_LEFT
        return SessionPair(
            session, status, None if left is None else left.count, None if right is None else right.count
        )
    if known_points(left) is not None or known_points(right) is not None:
        return _pair_by_checkpoints(session, left, right)
    fork = find_fork(hash_reader(left), left.count, hash_reader(right), right.count)
    if fork is not None:
        status = PairStatus.FORKED
    elif left.count == right.count:
        status = PairStatus.SAME
    else:
        status = PairStatus.LEFT_AHEAD if left.count > right.count else PairStatus.RIGHT_AHEAD
    return SessionPair(session, status, left.count, right.count, fork)


def _pair_by_checkpoints(session: SessionID, left: SessionSource, right: SessionSource) -> SessionPair:
    """A side without rows (a bundle exported without content): the fork is located to
    within one batch (:func:`~engine.diagnostics.compare_bundle.fork_window`); ``fork`` is
    then the last agreeing point and ``fork_before`` the first differing one."""
    window = fork_window(left, right)
    if not window.same:
        common = known_points(left) or known_points(right) or {}
        base = hash_reader(left if known_points(left) is None else right)(window.after)
        fork = ForkPoint(window.after, common.get(window.after, base))
        return SessionPair(session, PairStatus.FORKED, left.count, right.count, fork, window.before)
    if left.count == right.count:
        status = PairStatus.SAME
    else:
        status = PairStatus.LEFT_AHEAD if left.count > right.count else PairStatus.RIGHT_AHEAD
    return SessionPair(session, status, left.count, right.count)


# -- content --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyDifference:
    """A content key whose winning change differs: each side's winner (None: no winner for
    that key on that side)."""

    key: str
    left: Entry | None
    right: Entry | None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "left": _entry_json(self.left), "right": _entry_json(self.right)}


def _entry_json(entry: Entry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "value": json_safe(entry.value),
        "deleted": entry.deleted,
        "session": entry.session,
        "index": entry.index,
        "made_at": entry.made_at,
    }


def compare_content(left: ContentSnapshot | None, right: ContentSnapshot | None) -> list[KeyDifference]:
    """Keys (sorted) whose winning entry differs — in value, deletion or the transaction
    that won (session, index, madeAt)."""
    lefts: Mapping[str, Entry] = left.entries if left is not None else {}
    rights: Mapping[str, Entry] = right.entries if right is not None else {}
    out = []
    for key in sorted(set(lefts) | set(rights)):
        a, b = lefts.get(key), rights.get(key)
        if a is None or b is None or (a.value, a.deleted, a.order) != (b.value, b.deleted, b.order):
            out.append(KeyDifference(key, a, b))
    return out


# -- one CoValue --------------------------------------------------------------------------------


@dataclass(slots=True)
class CoValueComparison:
    """One CoValue on two sides: whether each side has it, its sessions paired by id, and
    (``keys`` None: not compared) its content differences."""

    covalue: CoValueID
    left_label: str
    right_label: str
    on_left: bool
    on_right: bool
    pairs: list[SessionPair] = field(default_factory=list)
    keys: list[KeyDifference] | None = None

    @property
    def status(self) -> CoValueStatus:
        return covalue_status(self.on_left, self.on_right, self.pairs)

    @property
    def identical(self) -> bool:
        return self.status is CoValueStatus.SAME and not self.keys

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": "covalue",
            "covalue": self.covalue,
            "left": self.left_label,
            "right": self.right_label,
            "identical": self.identical,
            "status": str(self.status),
            "sessions": [pair.to_json() for pair in self.pairs],
            "keys": None if self.keys is None else [k.to_json() for k in self.keys],
        }


def compare_covalue(
    left: CompareSide,
    right: CompareSide,
    covalue: CoValueID,
    *,
    content: bool = True,
    snapshots: tuple[ContentSnapshot | None, ContentSnapshot | None] | None = None,
    present: tuple[bool, bool] | None = None,
) -> CoValueComparison:
    """``covalue`` on both sides: sessions paired by id and, with ``content``, content
    compared key by key (from ``snapshots`` when given, else each side's
    :meth:`~engine.diagnostics.compare_sides.CompareSide.content`). ``present`` says
    whether each side holds the CoValue, when the caller knows (else it is looked up)."""
    left_ids, right_ids = left.session_ids(covalue), right.session_ids(covalue)
    if present is None:
        present = (covalue in left.covalue_ids(), covalue in right.covalue_ids())
    result = CoValueComparison(covalue, left.label, right.label, present[0], present[1])
    for session in sorted(set(left_ids) | set(right_ids)):
        a = left.open_session(covalue, session) if session in left_ids else None
        b = right.open_session(covalue, session) if session in right_ids else None
        result.pairs.append(pair_session(session, a, b))
    if content:
        pair = snapshots if snapshots is not None else (left.content(covalue), right.content(covalue))
        result.keys = compare_content(*pair)
    return result


# -- whole targets ------------------------------------------------------------------------------


class CoValueStatus(StrEnum):
    SAME = "same"
    ONLY_LEFT = "only_left"
    ONLY_RIGHT = "only_right"
    FORKED = "forked"
    #: the right side is behind: the left holds more of some sessions, nothing less
    LEFT_AHEAD = "left_ahead"
    RIGHT_AHEAD = "right_ahead"
    #: each side holds something the other lacks, and nothing is forked
    BOTH_AHEAD = "both_ahead"


_LEFT_MORE = (PairStatus.LEFT_AHEAD, PairStatus.ONLY_LEFT)
_RIGHT_MORE = (PairStatus.RIGHT_AHEAD, PairStatus.ONLY_RIGHT)


def covalue_status(on_left: bool, on_right: bool, pairs: list[SessionPair]) -> CoValueStatus:
    """A CoValue's status from where it is and how its sessions pair."""
    if not on_right:
        return CoValueStatus.ONLY_LEFT if on_left else CoValueStatus.SAME
    if not on_left:
        return CoValueStatus.ONLY_RIGHT
    if any(p.status is PairStatus.FORKED for p in pairs):
        return CoValueStatus.FORKED
    left_more = any(p.status in _LEFT_MORE for p in pairs)
    right_more = any(p.status in _RIGHT_MORE for p in pairs)
    if left_more and right_more:
        return CoValueStatus.BOTH_AHEAD
    if left_more:
        return CoValueStatus.LEFT_AHEAD
    return CoValueStatus.RIGHT_AHEAD if right_more else CoValueStatus.SAME


@dataclass(frozen=True, slots=True)
class CoValueRow:
    """One CoValue of a whole-target comparison: its status and the sessions that differ."""

    covalue: CoValueID
    status: CoValueStatus
    sessions: tuple[SessionPair, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"covalue": self.covalue, "status": str(self.status), "sessions": [p.to_json() for p in self.sessions]}


@dataclass(slots=True)
class TargetComparison:
    left_label: str
    right_label: str
    rows: list[CoValueRow] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(row.status is CoValueStatus.SAME for row in self.rows)

    def counts(self) -> dict[str, int]:
        """CoValues per status (every status, zeros included)."""
        out = {str(status): 0 for status in CoValueStatus}
        for row in self.rows:
            out[str(row.status)] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": "targets",
            "left": self.left_label,
            "right": self.right_label,
            "identical": self.identical,
            "counts": self.counts(),
            "covalues": [row.to_json() for row in self.rows if row.status is not CoValueStatus.SAME],
        }


def iter_compare_targets(left: CompareSide, right: CompareSide) -> Iterator[CoValueRow]:
    """Every CoValue of either side (sorted), classified one at a time (no content read)."""
    lefts, rights = set(left.covalue_ids()), set(right.covalue_ids())
    for covalue in sorted(lefts | rights):
        on_left, on_right = covalue in lefts, covalue in rights
        result = compare_covalue(
            left if on_left else _Nothing(left.label),
            right if on_right else _Nothing(right.label),
            covalue,
            content=False,
            present=(on_left, on_right),
        )
        differing = tuple(p for p in result.pairs if p.status is not PairStatus.SAME)
        yield CoValueRow(covalue, result.status, differing)


def compare_targets(
    left: CompareSide, right: CompareSide, *, progress: Callable[[int, int], None] | None = None
) -> TargetComparison:
    """:func:`iter_compare_targets` collected; ``progress(done, total)`` after each CoValue."""
    total = len(set(left.covalue_ids()) | set(right.covalue_ids()))
    out = TargetComparison(left.label, right.label)
    for row in iter_compare_targets(left, right):
        out.rows.append(row)
        if progress is not None:
            progress(len(out.rows), total)
    return out


class _Nothing:
    """A side that holds nothing (the side a CoValue is missing from)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def covalue_ids(self) -> list[CoValueID]:
        return []

    def session_ids(self, covalue: CoValueID) -> list[SessionID]:
        return []

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        return None

    def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        return None

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        return None
