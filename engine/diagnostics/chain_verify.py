"""Incremental chain verification: a session's hash chain and checkpoints, a chunk at a time.

:meth:`SessionLog.verify_all` checks a whole log at once; a viewer of a million-transaction
session cannot wait for that, nor hold the log in memory. :class:`ChainVerifier` walks a
:class:`~engine.diagnostics.session_rows.SessionSource` in windows: each :meth:`step`
re-derives ``h(i+1) = H(h(i) ‖ u32le(len(tx_i)) ‖ tx_i)`` for the next rows, compares it with
the stored hash, and checks every checkpoint signature it reaches. Its state is two integers
and the first failure, so asking for one row's state is O(1):

- ``verified``: rows ``[0, verified)`` link and are covered by a checkpoint whose signature
  verifies (:attr:`RowState.VERIFIED`);
- rows from ``verified`` on are :attr:`RowState.PENDING` until a step reaches them;
- after the first failure, the failing row is :attr:`RowState.BROKEN` and every row from
  ``verified`` on that is not the break is :attr:`RowState.UNVERIFIABLE`;
- a live writer's rows after its last checkpoint are :attr:`RowState.UNSIGNED` once linked.

Verification is deterministic and does no I/O of its own beyond the source's windows; the
caller decides how many rows a step may take (the inspector sizes steps to a time budget).
A source that grows is followed (call :meth:`step` again); one that is replaced wholesale
(its :meth:`~SessionSource.identity` changes) restarts from the base.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from operator import itemgetter
from typing import Any

from engine.crypto import chain_extend, signed_message, verify_signature
from engine.diagnostics.session_rows import RawRow, SessionSource
from engine.errors import ChainError, KintsugiError
from engine.ids import session_account

__all__ = ["DEFAULT_STEP_ROWS", "ChainBreak", "ChainVerifier", "RowState"]

#: Rows one :meth:`ChainVerifier.step` takes unless told otherwise (about 2 ms of hashing).
DEFAULT_STEP_ROWS = 1000

_TX = itemgetter(1)
_STORED_HASH = itemgetter(2)


class RowState(StrEnum):
    VERIFIED = "verified"
    PENDING = "pending"
    UNSIGNED = "unsigned"
    BROKEN = "broken"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link of a session: row ``index``, a stable ``code`` and why.

    Codes: ``broken_chain`` (stored hash does not re-derive), ``bad_signature`` (the
    checkpoint ending at ``index + 1`` does not verify), ``missing_rows``, ``unreadable``,
    ``unsigned_tail`` (stored rows after the last checkpoint), ``head_mismatch``, and
    whatever code the engine gave a corruption it recorded.
    """

    index: int
    code: str
    reason: str


class ChainVerifier:
    """Verifies one session incrementally. Not thread-safe; drive it from one thread."""

    def __init__(self, source: SessionSource) -> None:
        self.source = source
        self.account = session_account(source.session)
        self.steps = 0
        self._identity: object = source.identity()
        self._reset_state()

    def _reset_state(self) -> None:
        #: rows whose stored hash re-derives from the base
        self.linked = 0
        #: rows covered by a verified checkpoint (``<= linked``)
        self.verified = 0
        #: the first failure, or None
        self.failure: ChainBreak | None = None
        self._head = self.source.base()
        self._finalized_at = -1
        self._checked_checkpoints = -1
        #: the rows the last step linked (what :meth:`step_as_copy` of a copy compares with)
        self._last: list[RawRow] = []

    def restart(self) -> None:
        """Start again from the base (the session was replaced)."""
        self._identity = self.source.identity()
        self._reset_state()

    # -- state -------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True when there is nothing to do until the session grows or is replaced."""
        if self.source.identity() != self._identity:
            return False
        if self.failure is not None:
            return True
        return (
            self.linked >= self.source.count
            and self._finalized_at == self.linked
            and self._checked_checkpoints == len(self.source.checkpoints())
        )

    @property
    def progress(self) -> float:
        """Fraction of the session's rows already examined (1.0 when done)."""
        count = self.source.count
        if self.failure is not None or count == 0:
            return 1.0
        return min(1.0, self.linked / count)

    def state(self, index: int) -> RowState:
        """What is known about row ``index`` right now."""
        if index < self.verified:
            return RowState.VERIFIED
        if self.failure is not None:
            return RowState.BROKEN if index == self.failure.index else RowState.UNVERIFIABLE
        if index < self.linked and self._finalized_at == self.linked and self.source.may_hold_pending:
            return RowState.UNSIGNED
        return RowState.PENDING

    # -- work --------------------------------------------------------------------------------

    def step(self, max_rows: int = DEFAULT_STEP_ROWS) -> int:
        """Examine up to ``max_rows`` more rows; returns how many were examined.

        Never raises for damage in the session (that becomes :attr:`failure`).
        """
        if self.source.identity() != self._identity:
            self.restart()
        if self.failure is not None:
            return 0
        self.steps += 1
        count = self.source.count
        if self.linked >= count:
            if self._check_late_checkpoints():
                self._finalize(count)
            return 0
        rows = self._read(max(1, max_rows))
        if rows is None:
            return 0
        if not rows:
            self._fail(self.linked, "missing_rows", f"rows from {self.linked} are missing from storage")
            return 0
        return self._link(rows)

    def _link(self, rows: list[RawRow]) -> int:
        """Link a window in bulk: re-derive its hashes in one pass (:func:`chain_extend`),
        compare them with the stored ones as a whole, then check the checkpoints it reaches
        in order. The first failure is the same one a row-by-row walk finds: a checkpoint
        before a broken link fails first."""
        start = self.linked
        contiguous = rows[-1][0] - start + 1 == len(rows) and rows[0][0] == start
        if not contiguous:  # indices only grow: cut at the first gap
            cut = next(i for i, row in enumerate(rows) if row[0] != start + i)
            rows = rows[:cut]
        stored = list(map(_STORED_HASH, rows))
        derived = chain_extend(self._head, map(_TX, rows))
        good = len(derived)
        if derived != stored:
            good = next(i for i, (mine, theirs) in enumerate(zip(derived, stored, strict=True)) if mine != theirs)
        checkpoints = self.source.checkpoints()
        for n in checkpoints[bisect_right(checkpoints, start) : bisect_right(checkpoints, start + good)]:
            self.linked, self._head = n, derived[n - start - 1]
            if not self._check_signature(n, self._head):
                self._last = []
                return n - start
        if good:
            self.linked, self._head = start + good, derived[good - 1]
        self._last = rows[:good]
        if good < len(rows):
            self._fail(start + good, "broken_chain", "stored hash does not match the transaction")
            return good + 1
        if not contiguous:
            self._fail(self.linked, "missing_rows", f"row {self.linked} is missing from storage")
            return good
        count = self.source.count
        if self.linked >= count and self._check_late_checkpoints():
            self._finalize(count)
        return good

    def step_as_copy(self, twin: ChainVerifier, max_rows: int = DEFAULT_STEP_ROWS) -> int:
        """Like :meth:`step`, for a copy of the session ``twin`` verifies (same CoValue, same
        session, so the same chain base): the rows ``twin`` has just linked are compared
        with this source's (:meth:`link_copy`) instead of hashed again."""
        same = twin.source.covalue == self.source.covalue and twin.source.session == self.source.session
        if not same or not twin._last:
            return self.step(max_rows)
        return self.link_copy(twin._last, twin.source.signature, twin.verified, max_rows)

    def link_copy(
        self, theirs: list[RawRow], signature_of: Callable[[int], bytes | None], vouched: int, max_rows: int
    ) -> int:
        """Link the next rows by comparison with ``theirs``, rows of another copy of this
        session whose hashes were re-derived from the same base (by another verifier). Where
        this source's rows are byte for byte ``theirs`` (transactions and stored hashes),
        they link without hashing them again: equal bytes re-derive equal hashes. A
        checkpoint ``n <= vouched`` whose signature is the very bytes ``signature_of(n)``
        (verified by the other copy's verifier for the same ``h(n)``) verifies without a
        second Ed25519 check; any other checkpoint is checked here. Rows that differ, or a
        window that does not start here, are verified by :meth:`step` as usual."""
        if self.source.identity() != self._identity:
            self.restart()
        if self.failure is not None or not theirs or theirs[0][0] != self.linked:
            return self.step(max_rows)
        start = self.linked
        rows = self._read(len(theirs))
        if rows is None:
            return 0
        if rows != theirs:
            return self._link(rows) if rows else self.step(max_rows)
        self.steps += 1
        checkpoints = self.source.checkpoints()
        for n in checkpoints[bisect_right(checkpoints, start) : bisect_right(checkpoints, start + len(rows))]:
            self.linked, self._head = n, rows[n - start - 1][2]
            sig = self.source.signature(n)
            if sig is not None and n <= vouched and sig == signature_of(n):
                self.verified = n
            elif not self._check_signature(n, self._head):
                return n - start
        self.linked, self._head = start + len(rows), rows[-1][2]
        self._last = rows
        count = self.source.count
        if self.linked >= count and self._check_late_checkpoints():
            self._finalize(count)
        return len(rows)

    def snapshot(self) -> dict[str, Any]:
        """The verifier's state as plain data (to hand over from another process)."""
        failure = self.failure
        return {
            "linked": self.linked,
            "verified": self.verified,
            "head": self._head,
            "finalized_at": self._finalized_at,
            "checked_checkpoints": self._checked_checkpoints,
            "steps": self.steps,
            "failure": None if failure is None else (failure.index, failure.code, failure.reason),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take the state :meth:`snapshot` gave for a reader of the same stored session."""
        self.linked, self.verified, self._head = state["linked"], state["verified"], state["head"]
        self._finalized_at, self._checked_checkpoints = state["finalized_at"], state["checked_checkpoints"]
        self.steps = state["steps"]
        self.failure = None if state["failure"] is None else ChainBreak(*state["failure"])
        self._last = []

    def _read(self, limit: int) -> list[RawRow] | None:
        """The next window; None after recording a failure. A window that reaches a damaged
        block is cut short before it, so the rows up to the damage still verify."""
        try:
            return self.source.window(self.linked, limit)
        except ChainError as exc:
            if exc.index > self.linked:
                return self._read(exc.index - self.linked)
            self._fail(self.linked, "unreadable", f"stored rows from {self.linked} are unreadable: {exc.reason}")
        except KintsugiError as exc:
            self._fail(self.linked, "unreadable", f"stored rows from {self.linked} are unreadable: {exc.detail}")
        return None

    def _check_late_checkpoints(self) -> bool:
        """Verify checkpoints signed after their rows were linked (a live writer signs its
        pending rows later). Returns False after recording a failure."""
        for n in self.source.checkpoints():
            if self.verified < n <= self.linked:
                if n == self.linked:
                    head = self._head
                else:
                    # Row n-1 is already linked, so its stored hash is the derived h(n).
                    rows = self.source.window(n - 1, 1)
                    if not rows:
                        self._fail(n - 1, "missing_rows", f"row {n - 1} is missing from storage")
                        return False
                    head = rows[0][2]
                if not self._check_signature(n, head):
                    return False
        self._checked_checkpoints = len(self.source.checkpoints())
        return True

    def _check_signature(self, n: int, head: bytes) -> bool:
        sig = self.source.signature(n)
        message = signed_message(self.source.covalue, self.source.session, n, head)
        if sig is None or not verify_signature(self.account, message, sig):
            self._fail(n - 1, "bad_signature", f"signature of checkpoint {n} does not verify")
            return False
        self.verified = n
        return True

    def _finalize(self, count: int) -> None:
        """Checks that need the whole chain: the tail, stray checkpoints, the stored head."""
        checkpoints = self.source.checkpoints()
        last = checkpoints[-1] if checkpoints else 0
        if last > count:
            self._fail(count, "missing_rows", f"checkpoint {last} is beyond the last row ({count})")
            return
        if self.verified < self.linked and not self.source.may_hold_pending:
            self._fail(self.verified, "unsigned_tail", f"stored rows after the last checkpoint ({self.verified})")
            return
        head = self.source.stored_head()
        if head is not None and (head[0] != self.linked or head[1] != self._head):
            self._fail(max(0, self.linked - 1), "head_mismatch", "stored head does not match the rows")
            return
        self._finalized_at = self.linked

    def _fail(self, index: int, code: str, reason: str) -> None:
        self.failure = ChainBreak(index, code, reason)
        self.verified = min(self.verified, index)

    def run(self, step_rows: int = DEFAULT_STEP_ROWS) -> ChainBreak | None:
        """Verify to the end in steps (tests and headless use); returns the first failure."""
        while not self.done:
            self.step(step_rows)
        return self.failure
