"""Group content: roles over time (DESIGN §4).

A group's ``initialAdmin`` is admin from the start. A transaction in a group is valid when
its author is ``admin`` at that point of the total order; its changes are
``["role", AccountID, role]`` with role in :data:`ROLES`. Other CoValues ask
:meth:`GroupState.role_at` whether an author could write at a transaction's ``madeAt``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.content.common import InvalidTx, ordered_transactions, sessions_for_content
from engine.errors import InvalidId
from engine.ids import AccountID, SessionID, parse_account_id, session_account
from engine.model.session_log import SessionLog

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
    state = GroupState(initial_admin)
    state._assign(initial_admin, -1, "admin")
    for item in ordered_transactions(sessions_for_content(sessions), state.invalid):
        author = session_account(item.session)
        if state.roles.get(author) != "admin":
            state.invalid.append(
                InvalidTx(
                    item.session,
                    item.index,
                    f"author is {state.roles.get(author, 'not a member')}, role changes need admin",
                )
            )
            continue
        problems = [p for p in map(role_change_problem, item.tx.changes) if p]
        if problems:
            state.invalid.append(InvalidTx(item.session, item.index, problems[0]))
            continue
        for _, account, role in item.tx.changes:
            state._assign(AccountID(account), item.tx.made_at, role)
    return state
