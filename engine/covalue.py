"""CoValueCore: one CoValue's verified sessions, content and tombstone.

Rules kept here:

- Content is applied only after it verifies. Each session of a content message is checked on
  its own: a bad session is rejected whole, the others still apply.
- A chunk that disagrees with a session we hold is a fork; it is never merged.
  :meth:`CoValueCore.forks_in_known` finds forks from a peer's known state alone.
- A valid delete marker makes the CoValue deleted for good: only the header and the delete
  sessions remain, and nothing resurrects the rest.

Replacing a forked session with an authoritative history (DESIGN §7.1) is decided in
:mod:`engine.recovery.correction`, which sits above this module; here are only the
primitive it uses (:meth:`CoValueCore.install_sessions`) and its result,
:class:`ReplaceOutcome`, which the sync layer and the node pass around.

Imports: model, content, ids, crypto, errors (the covalue row of the import table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.content.authority import Kept, seen_meta
from engine.content.comap import CoMapState, change_problem
from engine.content.common import InvalidTx, sessions_for_content
from engine.content.group import WRITE_ROLES, GroupState, compute_group, role_change_problem
from engine.content.writes import (
    Write,
    WriteJudge,
    claim_of,
    claim_problem,
    extend_claim,
    ordered_writes,
)
from engine.crypto import AccountKey
from engine.errors import (
    CoValueDeleted,
    ForkError,
    IntegrityError,
    InvalidContent,
    InvalidHeader,
    KintsugiError,
    PermissionDenied,
    UsageError,
)
from engine.ids import (
    AccountID,
    CoValueID,
    SessionID,
    SessionKind,
    is_delete_session,
    parse_session_id,
    session_account,
)
from engine.model.fork import ForkPoint
from engine.model.header import GroupRuleset, Header, OwnedByGroup
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk, SessionLog
from engine.model.transaction import Transaction, decode_transaction, encode_transaction

#: Finds another CoValue of this replica (the owner group), or None when it is not here.
Resolver = Callable[[CoValueID], "CoValueCore | None"]

DELETE_CHANGE = ["delete"]
#: Roles that may delete a CoValue (or its owner group's CoValues).
DELETE_ROLES = frozenset({"admin"})


class OutcomeStatus(StrEnum):
    """What happened to one session of a content message."""

    #: ``added`` new transactions were applied
    APPLIED = "applied"
    #: nothing new
    DUPLICATE = "duplicate"
    #: diverges at ``fork_index``; nothing merged
    FORK = "fork"
    #: ``error`` says why
    REJECTED = "rejected"
    #: the CoValue is deleted; content for this session is refused
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    """What happened to one session of a content message (see :class:`OutcomeStatus`)."""

    session: SessionID
    status: OutcomeStatus
    added: int = 0
    fork_index: int | None = None
    error: KintsugiError | None = None


@dataclass(slots=True)
class ApplyReport:
    outcomes: list[SessionOutcome] = field(default_factory=list)
    #: True when this message made the CoValue deleted
    became_deleted: bool = False
    #: sessions dropped from the replica because the CoValue is deleted
    purged: list[SessionID] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.became_deleted or any(o.status is OutcomeStatus.APPLIED for o in self.outcomes)

    def by_status(self, status: OutcomeStatus) -> list[SessionOutcome]:
        return [o for o in self.outcomes if o.status == status]


@dataclass(frozen=True, slots=True)
class ReplaceOutcome:
    """Result of replacing a session (:func:`engine.recovery.correction.replace_session`).

    ``changed`` is False when the authoritative history was already in place (a no-op).
    ``diverged_at`` is the first index where the old local copy differed, ``dropped`` how many
    local transactions were not in the authoritative history, and ``conflict_session`` where
    they were kept (None when there were none, or the local account does not own them).
    ``previous`` is the session log as it was, for storage and audit. ``fork`` is the fork
    point (:mod:`engine.model.fork`) at ``diverged_at`` with the last common hash: where the
    conflict session, if any, was split off (None when nothing changed).
    """

    session: SessionID
    changed: bool
    diverged_at: int
    dropped: int
    conflict_session: SessionID | None
    owned: bool
    previous: SessionLog | None
    fork: ForkPoint | None = None


class CoValueCore:
    """A CoValue as this replica holds it. Not thread-safe; one owner (the node) drives it."""

    def __init__(self, header: Header, covalue_id: CoValueID | None = None) -> None:
        derived = header.covalue_id()
        if covalue_id is not None and covalue_id != derived:
            raise InvalidHeader(f"header hashes to {derived}, not {covalue_id}")
        self.header = header
        self.id: CoValueID = derived
        self.sessions: dict[SessionID, SessionLog] = {}
        self.deleted = False
        #: sessions whose stored chain failed verification: never served as valid
        self.corrupt: dict[SessionID, IntegrityError] = {}
        #: bumped on every change; content caches and dependents key on it
        self.version = 0
        self.resolve: Resolver = lambda _cid: None
        self._content: CoMapState | GroupState | None = None
        self._content_key: tuple[int, int] = (-1, -1)
        #: the judge of data writes (and why none can judge), current with ``_content``
        self._writes: tuple[WriteJudge | None, str | None] = (None, None)

    # -- reading -----------------------------------------------------------------------------

    @property
    def type(self) -> str:
        return self.header.type

    def known_state(self) -> KnownState:
        """Heads at the last checkpoint of every session (delete sessions only once deleted)."""
        return KnownState(
            self.id,
            True,
            {sid: log.head() for sid, log in self.sessions.items() if log.signed_count and sid not in self.corrupt},
        )

    def transaction_count(self) -> int:
        return sum(log.count for log in self.sessions.values())

    def delete_sessions(self) -> list[SessionID]:
        return [sid for sid in self.sessions if is_delete_session(sid)]

    def forks_in_known(self, known: KnownState) -> list[ForkError]:
        """Sessions where a peer's known state shows a different history from ours.

        Detectable when the peer's count ``n`` is within our log: our ``h(n)`` must equal the
        peer's head. ``index`` of each error is the peer's count (the fork is at or before it).
        """
        forks = []
        for sid, (n, head) in known.sessions.items():
            log = self.sessions.get(sid)
            if log is not None and n <= log.signed_count and log.hash_at(n) != head:
                forks.append(ForkError(sid, n))
        return forks

    # -- receiving ---------------------------------------------------------------------------

    def apply_content(self, new: Mapping[SessionID, Chunk]) -> ApplyReport:
        """Verify and apply each session's chunk on its own; see :class:`SessionOutcome`."""
        report = ApplyReport()
        for sid in sorted(sid for sid in new if is_delete_session(sid)):
            report.outcomes.append(self._apply_one(sid, new[sid]))
        delete_applied = any(o.status == "applied" for o in report.outcomes)
        if not self.deleted and delete_applied and self._valid_delete_marker() is not None:
            report.became_deleted = True
            report.purged = self._purge()
        # Delete sessions go first, so the other sessions of a message that deletes the
        # CoValue are refused ("deleted") rather than applied and purged.
        for sid in sorted(sid for sid in new if not is_delete_session(sid)):
            report.outcomes.append(self._apply_one(sid, new[sid]))
        if report.changed:
            self._touch()
        return report

    def _apply_one(self, sid: SessionID, chunk: Chunk) -> SessionOutcome:
        try:
            kind = parse_session_id(sid).kind
        except KintsugiError as exc:
            return SessionOutcome(sid, OutcomeStatus.REJECTED, error=exc)
        if self.deleted and kind is not SessionKind.DELETE:
            return SessionOutcome(sid, OutcomeStatus.DELETED, error=CoValueDeleted(self.id))
        if sid in self.corrupt:
            return SessionOutcome(sid, OutcomeStatus.REJECTED, error=self.corrupt[sid])
        log = self.sessions.get(sid) or SessionLog(self.id, sid)
        try:
            if log.pending and chunk.end > log.signed_count:
                raise UsageError(f"{sid} has local pending writes; sign before receiving")
            new_hashes = log.verify_chunk(chunk)
            if kind is SessionKind.DELETE:
                _check_delete_session(log, chunk)
        except ForkError as exc:
            return SessionOutcome(sid, OutcomeStatus.FORK, fork_index=exc.index, error=exc)
        except KintsugiError as exc:
            return SessionOutcome(sid, OutcomeStatus.REJECTED, error=exc)
        added = log.apply_verified(chunk, new_hashes)
        if not added:
            return SessionOutcome(sid, OutcomeStatus.DUPLICATE)
        self.sessions[sid] = log
        self._merge_received(log, log.count - added)
        return SessionOutcome(sid, OutcomeStatus.APPLIED, added=added)

    # -- local writing -----------------------------------------------------------------------

    def add_local(self, session: SessionID, changes: list[list[Any]], made_at: int, kept: Kept | None = None) -> int:
        """Append a transaction made by this replica's account; it stays pending until signed.

        A group change claims what this replica has seen of the group, and a revocation what
        it holds of the revoked accounts' writes (``kept``); a write to a CoValue owned by a
        group claims what this replica has seen of that group, when its session has not
        claimed it yet (:mod:`engine.content.writes`).

        Raises :class:`PermissionDenied` when the rules would make it invalid and
        :class:`CoValueDeleted` once deleted. Returns its index.
        """
        if self.deleted:
            raise CoValueDeleted(f"{self.id} is deleted")
        author = session_account(session)
        log = self.sessions.get(session)
        index = log.count if log is not None else 0
        if isinstance(self.header.ruleset, GroupRuleset):
            tx = encode_transaction(made_at, changes, seen_meta(self.group().seen, kept))
            problem = self._group_write_problem(author, changes)
            if problem is not None:
                raise PermissionDenied(problem)
            self._append_local(session, log, tx)
            self._touch()
            return index
        state = self.comap()  # current, and so is self._writes
        judge, unavailable = self._writes
        past = state.claims.get(session, ())
        meta = None
        if judge is not None:
            meta = judge.claim_for(past)
            past = extend_claim(past, claim_of(meta))
        tx = encode_transaction(made_at, changes, meta)  # envelope rules first: InvalidTransaction
        problem = unavailable or self._write_problem(judge, Write(author, session, index, made_at, past), changes)
        if problem is not None:
            raise PermissionDenied(problem)
        self._append_local(session, log, tx)
        self.version += 1
        state.merge(made_at, session, index, changes)
        state.claims[session] = past
        self._content_key = (self.version, self._content_key[1])
        return index

    def _append_local(self, session: SessionID, log: SessionLog | None, tx: bytes) -> None:
        if log is None:
            log = self.sessions[session] = SessionLog(self.id, session)
        log.append_pending(tx)

    def sign_pending(self, key: AccountKey) -> list[tuple[SessionID, int]]:
        """Sign every session of ``key``'s account that has pending transactions."""
        signed = []
        for sid, log in self.sessions.items():
            if log.pending and log.account == key.account_id:
                n = log.sign(key)
                if n is not None:
                    signed.append((sid, n))
        return signed

    def delete(self, key: AccountKey, session: SessionID, made_at: int) -> None:
        """Write a signed delete marker in ``session`` (a delete session) and purge.

        Raises :class:`PermissionDenied` when ``key``'s account may not delete.
        """
        if parse_session_id(session).kind is not SessionKind.DELETE:
            raise UsageError("delete markers go in a delete session")
        if self.deleted:
            return
        judge, unavailable = self._delete_judge()
        meta = judge.claim_for(()) if judge is not None else None
        tx = decode_transaction(encode_transaction(made_at, [DELETE_CHANGE], meta))
        problem = unavailable or self._delete_problem(tx, session)
        if problem is not None:
            raise PermissionDenied(problem)
        log = SessionLog(self.id, session)
        log.append_pending(encode_transaction(made_at, [DELETE_CHANGE], meta))
        log.sign(key)
        self.sessions[session] = log
        self._purge()
        self._touch()

    # -- replacing (engine.recovery decides; this installs) ---------------------------------

    def install_sessions(self, logs: Iterable[SessionLog]) -> None:
        """Put verified logs in place of the sessions they belong to, in order.

        The primitive under recovery (:mod:`engine.recovery.correction`), which verifies and
        decides what to install: their corrupt records are dropped and the content is
        recomputed on next use.
        """
        for log in logs:
            self.sessions[log.session] = log
            self.corrupt.pop(log.session, None)
        self._touch()

    # -- content -----------------------------------------------------------------------------

    def owner_group(self) -> CoValueCore | None:
        if isinstance(self.header.ruleset, OwnedByGroup):
            return self.resolve(self.header.ruleset.group)
        return None

    def _current_key(self) -> tuple[int, int]:
        group = self.owner_group()
        return self.version, (group.version if group is not None else -1)

    def content(self) -> CoMapState | GroupState:
        """The content view (recomputed only when this CoValue or its owner group changed)."""
        key = self._current_key()
        if self._content is None or self._content_key != key:
            self._content = self._compute_content()
            self._content_key = key
        return self._content

    def comap(self) -> CoMapState:
        state = self.content()
        if not isinstance(state, CoMapState):
            raise UsageError(f"{self.id} is a {self.type}, not a comap")
        return state

    def group(self) -> GroupState:
        state = self.content()
        if not isinstance(state, GroupState):
            raise UsageError(f"{self.id} is a {self.type}, not a group")
        return state

    def invalid_transactions(self) -> list[InvalidTx]:
        return list(self.content().invalid)

    def _compute_content(self) -> CoMapState | GroupState:
        if isinstance(self.header.ruleset, GroupRuleset):
            return compute_group(self.header.ruleset.initial_admin, self.sessions)
        state = CoMapState()
        judge, unavailable = self._writes = self._judge()
        for item, past in ordered_writes(sessions_for_content(self.sessions), state.invalid, state.claims):
            tx = item.tx
            write = Write(session_account(item.session), item.session, item.index, tx.made_at, past)
            problem = self._write_problem(judge, write, tx.changes) or unavailable
            if problem is not None:
                state.invalid.append(InvalidTx(item.session, item.index, problem))
            else:
                state.merge(tx.made_at, item.session, item.index, tx.changes)
        return state

    def _merge_received(self, log: SessionLog, start: int) -> None:
        """Fold newly received transactions into a current CoMap view, else drop the cache."""
        key = self._current_key()
        current = self._content_key == key and isinstance(self._content, CoMapState)
        self.version += 1
        if not current or is_delete_session(log.session):
            self._content = None
            return
        assert isinstance(self._content, CoMapState)
        state = self._content
        judge, unavailable = self._writes
        past = state.claims.get(log.session, ())
        for i in range(start, log.count):
            try:
                tx = decode_transaction(log.txs[i])
            except KintsugiError as exc:
                state.invalid.append(InvalidTx(log.session, i, f"undecodable: {exc.detail}"))
                continue
            problem = claim_problem(tx.meta)
            if problem is None:
                past = extend_claim(past, claim_of(tx.meta))
                write = Write(log.account, log.session, i, tx.made_at, past)
                problem = self._write_problem(judge, write, tx.changes) or unavailable
            if problem is not None:
                state.invalid.append(InvalidTx(log.session, i, problem))
            else:
                state.merge(tx.made_at, log.session, i, tx.changes)
        state.claims[log.session] = past
        self._content_key = (self.version, key[1])

    def _judge(self) -> tuple[WriteJudge | None, str | None]:
        """The judge of this CoValue's data writes (None: anyone may write), or why writes
        cannot be judged yet (the owner group is not here)."""
        ruleset = self.header.ruleset
        if not isinstance(ruleset, OwnedByGroup):
            return None, None
        group = self.owner_group()
        if group is None:
            return None, f"owner group {ruleset.group} is not available"
        return WriteJudge(group.group(), self.id), None

    def _write_problem(self, judge: WriteJudge | None, write: Write, changes: list[list[Any]]) -> str | None:
        """Why ``write`` of ``changes`` does not count, or None (:mod:`engine.content.writes`)."""
        for change in changes:
            problem = change_problem(change)
            if problem is not None:
                return problem
        return None if judge is None else judge.problem(write, WRITE_ROLES)

    def _group_write_problem(self, author: AccountID, changes: list[list[Any]]) -> str | None:
        """Why ``author`` may not make these role changes here now, or None (admins may).

        The new transaction's causal past is everything this replica holds of the group, so
        the author's role there is its current role, whatever ``madeAt`` the write claims.
        """
        role = self.group().roles.get(author)
        if role != "admin":
            return f"author is {role or 'not a member'}; role changes need admin"
        problems = [p for p in map(role_change_problem, changes) if p]
        return problems[0] if problems else None

    def check_group_write(self, author: AccountID) -> None:
        """Raise :class:`PermissionDenied` unless ``author`` is an admin of this group now."""
        if self.group().roles.get(author) != "admin":
            raise PermissionDenied(f"{author} is not an admin of {self.id}")

    def _delete_judge(self) -> tuple[WriteJudge | None, str | None]:
        """The judge of delete markers: the group's own authority for a group, the owner
        group's for a CoValue it owns (None: anyone may delete an unowned CoValue)."""
        if isinstance(self.header.ruleset, GroupRuleset):
            return WriteJudge(self.group(), self.id), None
        return self._judge()

    def _delete_problem(self, tx: Transaction, session: SessionID) -> str | None:
        """Why the delete marker ``tx`` (index 0 of ``session``) does not delete, or None."""
        judge, unavailable = self._delete_judge()
        if unavailable is not None:
            return unavailable
        if judge is None:
            return None
        problem = claim_problem(tx.meta)
        if problem is not None:
            return problem
        problem = judge.problem(
            Write(session_account(session), session, 0, tx.made_at, extend_claim((), claim_of(tx.meta))), DELETE_ROLES
        )
        return None if problem is None else f"deleting needs admin; {problem}"

    def _valid_delete_marker(self) -> tuple[SessionID, int] | None:
        """The first valid delete marker among the delete sessions, or None."""
        for sid in sorted(self.delete_sessions()):
            log = self.sessions[sid]
            for i in range(log.signed_count):
                tx = decode_transaction(log.txs[i])
                if self._delete_problem(tx, sid) is None:
                    return sid, i
        return None

    def delete_problem_for(self, sid: SessionID) -> str | None:
        """Why the delete session ``sid`` does not delete this CoValue (None: it does)."""
        log = self.sessions[sid]
        tx = decode_transaction(log.txs[0])
        return self._delete_problem(tx, sid)

    def _purge(self) -> list[SessionID]:
        self.deleted = True
        purged = [sid for sid in self.sessions if not is_delete_session(sid)]
        for sid in purged:
            del self.sessions[sid]
            self.corrupt.pop(sid, None)
        return purged

    def _touch(self) -> None:
        self.version += 1
        self._content = None

    def recheck_deleted(self) -> list[SessionID]:
        """After the owner group changed or arrived: apply a delete marker that is now valid."""
        if not self.deleted and self.delete_sessions() and self._valid_delete_marker():
            purged = self._purge()
            self._touch()
            return purged
        return []

    def iter_logs(self) -> Iterator[SessionLog]:
        return iter(self.sessions.values())


def _check_delete_session(log: SessionLog, chunk: Chunk) -> None:
    """A delete session holds exactly one transaction: a delete marker."""
    if chunk.end != 1:
        raise InvalidContent(f"{log.session}: a delete session holds exactly one transaction")
    tx = decode_transaction(chunk.txs[-1]) if chunk.txs else None
    if tx is None or tx.changes != [DELETE_CHANGE]:
        raise InvalidContent(f"{log.session}: a delete session holds only a delete marker")
