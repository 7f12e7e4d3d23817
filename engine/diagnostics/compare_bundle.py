"""A diagnostic bundle as one side of a comparison, with or without its raw rows.

:class:`BundleSide` is a :class:`~engine.diagnostics.compare_sides.CompareSide` over an open
:class:`~engine.diagnostics.bundle_read.Bundle`: CoValues and sessions from its records,
content from its snapshots (tokens in place of keys and values when redacted), conflict
fork records as the exported store kept them. A session whose rows the bundle includes
(``--include-content``) is read by window like a store's; one without rows is a
:class:`CheckpointSessionSource`, which knows the chain hash only at the session's
checkpoints and its head.

Two such copies cannot be aligned row by row, but hash chains make agreement at ``n`` mean
agreement on every row before ``n``: :func:`fork_window` puts the fork after the last
known point where both copies agree and before the first where they differ, so two
content-less bundles (or a bundle and a live target, whose hash is known at every index)
locate a fork to within one write batch. :func:`compare_by_checkpoints` is that comparison
for ``kintsugi compare A.zip B --covalue C --session S``, with each side's recorded
checkpoint signatures checked against their recorded hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.crypto import chain_base, signed_message, verify_signature
from engine.diagnostics.bundle_read import Bundle
from engine.diagnostics.bundle_verify import ForkWindow, locate_fork
from engine.diagnostics.compare import hash_reader
from engine.diagnostics.covalue_summary import ContentSnapshot
from engine.diagnostics.session_rows import RawRow, SessionSource
from engine.ids import CoValueID, SessionID, session_account

__all__ = [
    "BundleSide",
    "CheckpointComparison",
    "CheckpointSessionSource",
    "compare_by_checkpoints",
    "fork_window",
    "known_points",
]


class CheckpointSessionSource:
    """A session of a bundle without raw rows: its count, and ``h(n)`` at every recorded
    checkpoint and at its head (:attr:`points`). :meth:`window` returns no rows."""

    may_hold_pending = False

    def __init__(self, covalue: CoValueID, session: dict[str, Any]) -> None:
        self.covalue = covalue
        self.session = SessionID(session["id"])
        self.rows_read = 0
        self._count = int(session["count"])
        self._sigs = {int(n): bytes.fromhex(sig) for n, _h, sig in session["checkpoints"]}
        self.points: dict[int, bytes] = {int(n): bytes.fromhex(h) for n, h, _sig in session["checkpoints"]}
        self._head = bytes.fromhex(session["head"]) if session.get("head") else None
        if self._head is not None:
            self.points[self._count] = self._head
        self.points[0] = chain_base(covalue, self.session)

    @property
    def count(self) -> int:
        return self._count

    def window(self, offset: int, limit: int) -> list[RawRow]:
        return []

    def row_hash(self, index: int) -> bytes | None:
        return None  # only the points are known (see known_points)

    def checkpoints(self) -> Sequence[int]:
        return sorted(self._sigs)

    def signature(self, n: int) -> bytes | None:
        return self._sigs.get(n)

    def base(self) -> bytes:
        return self.points[0]

    def stored_head(self) -> tuple[int, bytes] | None:
        return None if self._head is None else (self._count, self._head)

    def identity(self) -> object:
        return (self.covalue, self.session)

    def reload(self) -> None:
        return None

    def bad_signature(self) -> int | None:
        """The first checkpoint whose recorded signature does not verify over its recorded
        hash (None: all do)."""
        account = session_account(self.session)
        for n in self.checkpoints():
            message = signed_message(self.covalue, self.session, n, self.points[n])
            if not verify_signature(account, message, self._sigs[n]):
                return n
        return None


def known_points(source: SessionSource) -> dict[int, bytes] | None:
    """``{n: h(n)}`` for a source that knows hashes only at some counts (None: every
    count's hash can be read)."""
    return source.points if isinstance(source, CheckpointSessionSource) else None


def fork_window(left: SessionSource, right: SessionSource) -> ForkWindow:
    """Where two copies of one session part, from the hashes both can give: at the sparse
    side's points (both sparse: the counts both know), read from a full side by window.
    ``before`` None: no known point after ``after`` differs (identical, or one ahead as far
    as the known points tell)."""
    sparse = [p for p in (known_points(left), known_points(right)) if p is not None]
    if len(sparse) == 2:
        counts = sorted(set(sparse[0]) & set(sparse[1]))
    else:
        limit = min(left.count, right.count)
        counts = sorted(n for n in (sparse[0] if sparse else {}) if n <= limit)

    def at(source: SessionSource) -> list[tuple[int, bytes]]:
        points = known_points(source)
        read = hash_reader(source)
        return [(n, points[n] if points is not None else read(n)) for n in counts]

    return locate_fork(at(left), at(right))


@dataclass(frozen=True, slots=True)
class CheckpointComparison:
    """Two copies of one session compared at the hashes known on both sides."""

    left: SessionSource
    right: SessionSource
    window: ForkWindow
    left_label: str
    right_label: str

    @property
    def identical(self) -> bool:
        return self.window.same and self.left.count == self.right.count

    def to_json(self) -> dict[str, Any]:
        w = self.window
        fork = None if w.same else {"after": w.after, "before": w.before}
        return {
            "scope": "session",
            "basis": "checkpoints",
            "identical": self.identical,
            "fork": fork,
            "common_prefix": {"at_least": w.after, "at_most": None if w.before is None else w.before - 1},
            "left": _side_json(self.left, self.left_label),
            "right": _side_json(self.right, self.right_label),
        }

    def text(self) -> str:
        """Each side (target, session, count, verification), then where the fork lies."""
        report = self.to_json()
        lines = [
            f"{name:<5}: {side['target']}  {side['session']}  ({side['count']:,} transactions, {side['verification']})"
            for name, side in (("left", report["left"]), ("right", report["right"]))
        ]
        w = self.window
        if self.identical:
            lines.append(f"identical at every known checkpoint: {self.left.count:,} transactions")
        elif w.same:
            lines.append(f"no known checkpoint differs; rows [0, {w.after:,}) are common, one side holds more")
        else:
            lines.append(
                f"forked: the first differing row is in [{w.after:,}, {w.before:,}) "
                "(from checkpoint hashes: a bundle without raw rows cannot say more)"
            )
        return "\n".join(lines)


def _side_json(source: SessionSource, label: str) -> dict[str, Any]:
    if isinstance(source, CheckpointSessionSource):
        bad = source.bad_signature()
        verification = "checkpoints verified" if bad is None else f"signature of checkpoint {bad} does not verify"
    else:
        verification = "not verified (compared by hashes only)"
    return {
        "target": label,
        "session": source.session,
        "count": source.count,
        "rows": known_points(source) is None,
        "verification": verification,
    }


def compare_by_checkpoints(
    left: SessionSource, right: SessionSource, *, left_label: str = "left", right_label: str = "right"
) -> CheckpointComparison:
    """Compare two copies of one session when at least one knows its hashes only at its
    checkpoints (:func:`fork_window`)."""
    return CheckpointComparison(left, right, fork_window(left, right), left_label, right_label)


class BundleSide:
    """An open :class:`~engine.diagnostics.bundle_read.Bundle` as a comparison side (the
    caller closes the bundle). ``label`` defaults to the bundle's path."""

    def __init__(self, bundle: Bundle, label: str = "") -> None:
        self.bundle = bundle
        self._label = label or str(bundle.path)

    @property
    def label(self) -> str:
        return self._label

    def covalue_ids(self) -> list[CoValueID]:
        return sorted(self.bundle.records())

    def session_ids(self, covalue: CoValueID) -> list[SessionID]:
        record = self.bundle.record(covalue)
        return sorted(SessionID(s["id"]) for s in record["sessions"]) if record is not None else []

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        rows = self.bundle.session_source(covalue, session)
        if rows is not None:
            return rows
        record = self.bundle.record(covalue)
        found = next((s for s in record["sessions"] if s["id"] == session), None) if record is not None else None
        return None if found is None else CheckpointSessionSource(covalue, found)

    def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        return self.bundle.content(covalue)

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        return self.bundle.conflict_fork_record(covalue, conflict)
