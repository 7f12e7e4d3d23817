"""Group content: roles over time (DESIGN §4, docs/protocol.md "Group authority").

A group's ``initialAdmin`` is admin from the start. Its transactions are role changes,
``["role", AccountID, role]`` with role in :data:`ROLES`, and carry in their meta what their
author had seen of the group (:mod:`engine.content.authority`): a change counts only if its
author was ``admin`` in that causal past, and a revocation voids the revoked member's changes
that did not see it. ``madeAt`` orders the valid changes into a timeline
(:meth:`GroupState.role_at`); the data writes of CoValues the group owns are judged against
the same causal decision (:mod:`engine.content.writes`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.content.authority import KEPT_KEY, SEEN_KEY, Node, Outcome, TxRef, decide, seen_problem
from engine.content.common import InvalidTx, sessions_for_content
from engine.errors import InvalidId, InvalidTransaction
from engine.ids import AccountID, SessionID, parse_account_id
from engine.model.session_log import SessionLog
from engine.model.transaction import decode_transaction

ROLES = ("admin", "writer", "reader", "revoked")
#: Roles that may write data owned by a group.
WRITE_ROLES = frozenset({"admin", "writer"})
#: Roles that may read data owned by a group.
READ_ROLES = frozenset({"admin", "writer", "reader"})


def role_change_problem(change: list[Any]) -> str | None:
    """Why ``change`` is not a well-formed role change, or None when it is."""
    if change[0] != "role" or len(change) != 3:
        return "a group accepts only ['role', account, role] changes"
    try:
        parse_account_id(change[1])
    except InvalidId:
        return "role change names an invalid AccountID"
    if change[2] not in ROLES:
        return f"unknown role {change[2]!r}"
    return None


@dataclass(slots=True)
class GroupState:
    """Roles of a group, current and over time, and the transactions that were invalid."""

    initial_admin: AccountID
    roles: dict[AccountID, str] = field(default_factory=dict)
    #: per account: parallel lists of madeAt and the role from then on
    times: dict[AccountID, list[int]] = field(default_factory=dict)
    history: dict[AccountID, list[str]] = field(default_factory=dict)
    invalid: list[InvalidTx] = field(default_factory=list)
    #: what a group transaction written now claims to have seen ({sessionID: count})
    seen: dict[SessionID, int] = field(default_factory=dict)
    #: the authority rules' decision (causal pasts, valid role assignments) that data writes
    #: are judged against (:mod:`engine.content.writes`)
    authority: Outcome = field(default_factory=Outcome)

    def role_at(self, account: AccountID, made_at: int) -> str | None:
        """``account``'s role at ``made_at`` (None: never a member by then)."""
        times = self.times.get(account)
        if times is None:
            return None
        i = bisect_right(times, made_at)
        return self.history[account][i - 1] if i else None

    def _assign(self, account: AccountID, made_at: int, role: str) -> None:
        self.roles[account] = role
        self.times.setdefault(account, []).append(made_at)
        self.history.setdefault(account, []).append(role)

    def members(self) -> dict[AccountID, str]:
        return dict(self.roles)


def compute_group(initial_admin: AccountID, sessions: Mapping[SessionID, SessionLog]) -> GroupState:
    """Roles from every held transaction of a group (any arrival order gives the same state)."""
    state = GroupState(initial_admin)
    state._assign(initial_admin, -1, "admin")
    nodes = [_node(log, i) for log in sessions_for_content(sessions) for i in range(log.count)]
    outcome = decide(initial_admin, nodes)
    for node in outcome.order:
        reason = outcome.verdict[node.ref]
        if reason is not None:
            state.invalid.append(InvalidTx(node.ref[0], node.ref[1], reason))
            continue
        for account, role in node.changes:
            # The timeline follows the causal order; a madeAt earlier than the account's
            # previous change is moved up to it, so role_at and roles agree at the end.
            times = state.times.get(account)
            state._assign(account, max(node.made_at, times[-1]) if times else node.made_at, role)
    for (sid, index), reason in sorted(outcome.waiting.items()):
        state.invalid.append(InvalidTx(sid, index, reason))
    state.seen = outcome.frontier
    state.authority = outcome
    return state


def _node(log: SessionLog, index: int) -> Node:
    """One held transaction as the authority rules see it (its problem, if it has one)."""
    ref = (log.session, index)
    deps: list[TxRef] = [(log.session, index - 1)] if index else []
    try:
        tx = decode_transaction(log.txs[index])
    except InvalidTransaction as exc:
        return Node(ref, log.account, -1, [], deps, f"undecodable: {exc.detail}")
    problem = seen_problem(tx.meta)
    if problem is None:
        problem = next((p for p in map(role_change_problem, tx.changes) if p), None)
    if problem is not None:
        return Node(ref, log.account, tx.made_at, [], deps, problem)
    meta = tx.meta or {}
    deps.extend((SessionID(sid), count - 1) for sid, count in meta.get(SEEN_KEY, {}).items())
    changes = [(AccountID(account), role) for _, account, role in tx.changes]
    return Node(ref, log.account, tx.made_at, changes, deps, kept=meta.get(KEPT_KEY, {}))
