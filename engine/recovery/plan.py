"""The REPLACE plan (DESIGN §7.2): what recovering a scope from one peer would change.

Pure: it compares the local state of each CoValue in scope with the authoritative state
fetched from the chosen peer (both already verified) and says, per CoValue and per session,
what applying would do. Nothing is changed here; the plan is what the operator sees before
elevating, what the receipt names by its hash, and what the apply step follows.

Rules, in the order they are decided:

1. A CoValue the peer does not hold (or will not show: the two are the same answer) is left
   alone: REPLACE never deletes a CoValue because one peer lacks it.
2. A CoValue deleted locally stays deleted: only the peer's delete sessions may be added; its
   content never comes back.
3. A CoValue deleted on the peer becomes deleted here: only the delete sessions are kept.
4. Otherwise every session of the CoValue is replaced by the peer's copy (REPLACE, never
   union): the same chain is ``unchanged``, a missing one ``added``, one the peer lacks is
   ``removed``, any other ``replaced`` — except that a session the operator owns and the peer
   lacks is ``kept`` as it is: those are the operator's own edits that have not reached the
   peer yet (moving them elsewhere would change nothing but their name), and keeping them
   makes a second run of an applied recovery a no-op.
5. Local transactions the peer's copy does not hold (a forked or longer tail, a session the
   peer lacks) are *at risk*. A divergent tail of a session the operator owns (it holds the
   session's key) is *preserved* as a new conflict session ``sid!n`` (re-signed by the owner,
   original ``madeAt`` kept); everything else at risk is *archived* with the receipt. A
   signed transaction is never dropped without a copy.
6. Local transactions beyond a broken link of a corrupt session cannot be verified: they are
   dropped as ``unverifiable`` and not counted at risk (they are not signed history).

The plan serializes to JSON (:meth:`Plan.to_json`) with a stable hash (:meth:`Plan.digest`):
canonical CBOR of that JSON, BLAKE2b-256.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine import codec
from engine.crypto import hash_bytes
from engine.ids import AccountID, CoValueID, SessionID, conflict_session_id, is_delete_session, owns_session
from engine.model.header import Header
from engine.model.session_log import SessionLog

__all__ = [
    "CoValueAction",
    "CoValuePlan",
    "FetchedCoValue",
    "LocalCoValue",
    "Plan",
    "SessionAction",
    "SessionPlan",
    "compute_plan",
    "next_conflict_session",
]

#: Version of the plan's JSON form; part of what its hash covers.
PLAN_VERSION = 1
#: Highest conflict number tried for a preserved tail (``sid!2`` … ``sid!N``).
MAX_CONFLICT_NUMBER = 10_000


class CoValueAction(StrEnum):
    """What applying does to one CoValue."""

    #: every session already equals the peer's: nothing to do
    UNCHANGED = "unchanged"
    #: its sessions are replaced by the peer's (REPLACE)
    REPLACE = "replace"
    #: it is deleted on the peer: only delete sessions are kept here
    BECOME_DELETED = "become_deleted"
    #: it is deleted here and stays deleted (only new delete sessions may arrive)
    KEEP_DELETED = "keep_deleted"
    #: the peer does not hold it (or may not show it): left alone
    NOT_ON_PEER = "not_on_peer"
    #: only the peer holds it: it is added
    ADD = "add"


class SessionAction(StrEnum):
    UNCHANGED = "unchanged"
    REPLACED = "replaced"
    ADDED = "added"
    REMOVED = "removed"
    #: the operator's own session, which the peer lacks: left as it is
    KEPT = "kept"


#: Session actions that change nothing.
_NO_CHANGE = frozenset({SessionAction.UNCHANGED, SessionAction.KEPT})


@dataclass(frozen=True, slots=True)
class LocalCoValue:
    """What this replica holds of one CoValue. ``sessions`` are verified logs (a corrupt
    session holds its verified prefix); ``corrupt`` maps a corrupt session to the index of
    its first broken link and the number of transactions stored for it."""

    id: CoValueID
    header: Header | None
    deleted: bool
    sessions: Mapping[SessionID, SessionLog]
    corrupt: Mapping[SessionID, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FetchedCoValue:
    """What the peer sent of one CoValue, every session verified from its chain base.
    ``header`` None: the peer does not hold it (or may not show it)."""

    id: CoValueID
    header: Header | None
    deleted: bool
    sessions: Mapping[SessionID, SessionLog]


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """One session. ``local``/``remote`` are ``(count, head hash)`` or None when absent;
    ``common`` is the length of the prefix both hold. ``dropped`` counts local transactions
    the result will not hold in this session; of those, ``at_risk`` are verified signed
    history (``preserved`` of them go to ``preserved_as``, ``archived`` to the receipt) and
    ``unverifiable`` ones lie beyond a broken link."""

    session: SessionID
    action: SessionAction
    local: tuple[int, bytes] | None
    remote: tuple[int, bytes] | None
    common: int
    dropped: int = 0
    at_risk: int = 0
    preserved: int = 0
    archived: int = 0
    unverifiable: int = 0
    preserved_as: SessionID | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "action": str(self.action),
            "local": None if self.local is None else [self.local[0], self.local[1].hex()],
            "remote": None if self.remote is None else [self.remote[0], self.remote[1].hex()],
            "common": self.common,
            "dropped": self.dropped,
            "at_risk": self.at_risk,
            "preserved": self.preserved,
            "archived": self.archived,
            "unverifiable": self.unverifiable,
            "preserved_as": self.preserved_as,
        }


@dataclass(frozen=True, slots=True)
class CoValuePlan:
    id: CoValueID
    action: CoValueAction
    sessions: tuple[SessionPlan, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "action": str(self.action), "sessions": [s.to_json() for s in self.sessions]}

    @property
    def changes(self) -> bool:
        return self.action not in (CoValueAction.UNCHANGED, CoValueAction.NOT_ON_PEER)


@dataclass(frozen=True, slots=True)
class Plan:
    """The whole plan: one :class:`CoValuePlan` per CoValue in scope, sorted by id."""

    peer: str
    operator: AccountID
    covalues: tuple[CoValuePlan, ...]

    def summary(self) -> dict[str, int]:
        """Counts over the whole scope: ``replaced`` sessions (replaced, added or removed),
        ``dropped``, ``at_risk``, ``preserved``, ``archived`` and ``unverifiable``
        transactions, and ``covalues`` that change."""
        sessions = [s for c in self.covalues if c.changes for s in c.sessions]
        return {
            "covalues": sum(1 for c in self.covalues if c.changes),
            "replaced": sum(1 for s in sessions if s.action not in _NO_CHANGE),
            "dropped": sum(s.dropped for s in sessions),
            "at_risk": sum(s.at_risk for s in sessions),
            "preserved": sum(s.preserved for s in sessions),
            "archived": sum(s.archived for s in sessions),
            "unverifiable": sum(s.unverifiable for s in sessions),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "peer": self.peer,
            "operator": self.operator,
            "plan": [c.to_json() for c in self.covalues],
            "summary": self.summary(),
        }

    def digest(self) -> bytes:
        """BLAKE2b-256 of the canonical CBOR of :meth:`to_json`: the same plan always has
        the same hash, on any machine."""
        return hash_bytes(codec.encode(self.to_json()))

    @property
    def changes(self) -> bool:
        return any(c.changes for c in self.covalues)


def common_prefix(a: SessionLog, b: SessionLog) -> int:
    """Length of the longest prefix ``a`` and ``b`` share, found from their hash chains
    (binary search: chain hashes agree at ``n`` exactly when the first ``n`` transactions
    do)."""
    lo, hi = 0, min(a.count, b.count)
    if a.hash_at(hi) == b.hash_at(hi):
        return hi
    while lo < hi - 1:  # invariant: agree at lo, differ at hi
        mid = (lo + hi) // 2
        if a.hash_at(mid) == b.hash_at(mid):
            lo = mid
        else:
            hi = mid
    return lo


def next_conflict_session(origin: SessionID, taken: Iterable[str]) -> SessionID:
    """The first conflict session id of ``origin`` (``origin!``, ``origin!2``, …) not in
    ``taken``. Conflict sessions are never overwritten."""
    used = set(taken)
    for n in range(1, MAX_CONFLICT_NUMBER + 1):
        sid = conflict_session_id(origin, n)
        if sid not in used:
            return sid
    raise ValueError(f"{origin} has {MAX_CONFLICT_NUMBER} conflict sessions already")


def _session_plan(
    sid: SessionID,
    local: SessionLog | None,
    remote: SessionLog | None,
    *,
    corrupt: tuple[int, int] | None,
    operator: AccountID,
    taken: set[str],
    may_preserve: bool,
) -> SessionPlan:
    local_head = None if local is None else local.head()
    remote_head = None if remote is None else remote.head()
    unverifiable = 0 if corrupt is None else max(0, corrupt[1] - (local.count if local is not None else 0))
    if local is None and corrupt is None:
        return SessionPlan(sid, SessionAction.ADDED, None, remote_head, 0)
    held = local.signed_count if local is not None else 0
    owned = not is_delete_session(sid) and owns_session(operator, sid)
    if remote is None and owned and may_preserve and corrupt is None:
        return SessionPlan(sid, SessionAction.KEPT, local_head, None, 0)
    if remote is None:
        common = 0
        action = SessionAction.REMOVED
    else:
        common = common_prefix(local, remote) if local is not None else 0
        same = corrupt is None and local is not None and local_head == remote_head
        action = SessionAction.UNCHANGED if same else SessionAction.REPLACED
    at_risk = max(0, held - common)
    preserved = archived = 0
    preserved_as = None
    if at_risk and may_preserve and owned:
        preserved = at_risk
        preserved_as = next_conflict_session(sid, taken)
        taken.add(preserved_as)
    else:
        archived = at_risk
    return SessionPlan(
        sid,
        action,
        local_head,
        remote_head,
        common,
        dropped=at_risk + unverifiable,
        at_risk=at_risk,
        preserved=preserved,
        archived=archived,
        unverifiable=unverifiable,
        preserved_as=preserved_as,
    )


def plan_covalue(
    local: LocalCoValue | None,
    fetched: FetchedCoValue,
    operator: AccountID,
    *,
    only: frozenset[SessionID] | None = None,
) -> CoValuePlan:
    """The plan for one CoValue (see the module's rules). ``local`` None: not held here.
    ``only``: recover just these sessions; every other session is left as it is."""
    cid = fetched.id
    if fetched.header is None:
        return CoValuePlan(cid, CoValueAction.NOT_ON_PEER)
    local_sessions: Mapping[SessionID, SessionLog] = {} if local is None else local.sessions
    corrupt: Mapping[SessionID, tuple[int, int]] = {} if local is None else local.corrupt
    remote_sessions = dict(fetched.sessions)
    if local is not None and local.deleted:
        action = CoValueAction.KEEP_DELETED
        remote_sessions = {s: log for s, log in remote_sessions.items() if is_delete_session(s)}
        local_sessions = {s: log for s, log in local_sessions.items() if is_delete_session(s)}
        corrupt = {s: c for s, c in corrupt.items() if is_delete_session(s)}
    elif fetched.deleted:
        action = CoValueAction.BECOME_DELETED
        remote_sessions = {s: log for s, log in remote_sessions.items() if is_delete_session(s)}
    elif local is None:
        action = CoValueAction.ADD
    else:
        action = CoValueAction.REPLACE
    taken: set[str] = set(local_sessions) | set(remote_sessions) | set(corrupt)
    sessions = []
    for sid in sorted(set(local_sessions) | set(remote_sessions) | set(corrupt)):
        if only is not None and sid not in only:
            continue
        if action is CoValueAction.KEEP_DELETED and sid not in remote_sessions:
            continue  # a delete session only we hold stays as it is
        # A CoValue that becomes deleted keeps no content session, so nothing of it can be
        # preserved as a conflict session: its local-only transactions go to the archive.
        may_preserve = action is not CoValueAction.BECOME_DELETED
        sessions.append(
            _session_plan(
                sid,
                local_sessions.get(sid),
                remote_sessions.get(sid),
                corrupt=corrupt.get(sid),
                operator=operator,
                taken=taken,
                may_preserve=may_preserve,
            )
        )
    if action in (CoValueAction.REPLACE, CoValueAction.KEEP_DELETED) and all(s.action in _NO_CHANGE for s in sessions):
        action = CoValueAction.UNCHANGED
    return CoValuePlan(cid, action, tuple(sessions))


def compute_plan(
    local: Mapping[CoValueID, LocalCoValue],
    fetched: Iterable[FetchedCoValue],
    *,
    peer: str,
    operator: AccountID,
    only: frozenset[SessionID] | None = None,
) -> Plan:
    """The plan for a scope: one entry per fetched CoValue (the scope as the peer answered
    it, including the ones it does not hold), plus a ``not_on_peer`` entry for each local
    CoValue in scope that the peer's answer does not name. ``only`` limits the plan to
    those sessions (session recovery on command)."""
    seen: dict[CoValueID, CoValuePlan] = {}
    for item in fetched:
        seen[item.id] = plan_covalue(local.get(item.id), item, operator, only=only)
    for cid in local:
        if cid not in seen:
            seen[cid] = CoValuePlan(cid, CoValueAction.NOT_ON_PEER)
    return Plan(peer, operator, tuple(seen[c] for c in sorted(seen)))
