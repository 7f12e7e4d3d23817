"""Causal authority over a group's transactions (docs/protocol.md, "Group authority").

``madeAt`` is chosen by the author, so it may order edits but cannot grant power. Every group
transaction names, in its meta, what its author had seen of the group: ``{"seen": {sessionID:
count}}``, the first ``count`` transactions of each named session. Together with the
transactions before it in its own session, these are its direct dependencies; its *causal
past* is everything reachable through them. The rules, applied here:

1. **Placement.** A transaction whose causal past is not all held (a dependency has not
   arrived) or is cyclic is *waiting*: neither valid nor applied, and re-examined when more
   arrives. The held transactions are put in one deterministic linear order, a topological
   order of the dependencies that takes the ready transaction with the least
   ``(madeAt, sessionID, index)`` first.
2. **Authority in the causal past.** A transaction is valid only if its author is ``admin``
   in the roles computed from the valid transactions of its causal past alone (the group's
   ``initialAdmin`` is admin while no valid transaction of that past assigned it a role).
3. **Revocation voids concurrent changes.** A *revocation* is a valid change giving an
   account any role but ``admin``. It voids every transaction of that account which is
   concurrent with it (neither is in the other's causal past). A transaction the revocation
   had seen stays valid.
4. **Concurrent mutual revocations.** Revocations are applied one at a time, most senior
   first: the revocation whose author was made admin earliest in the linear order wins (the
   ``initialAdmin`` acting on its original role is the most senior; equal seniority goes to
   the smaller AccountID, then the earlier revocation). After each one, validity is
   recomputed, so a revocation voided by a more senior one never voids anything. Voids are
   never undone; the result is a function of the set of held transactions only.

The outcome is computed from scratch from the held transactions, so every replica holding the
same transactions computes the same roles, whatever order they arrived in.

Cost: placement is O(n log n); each transaction's causal past is a bitset over positions
(n²/8 bytes in all: 125 KB for 1,000 transactions); a role check scans the author's role
assignments, a void check the revoked account's transactions. A group holds role changes, not
data, so n stays small: 1,000 transactions compute in about 26 ms, two thirds of it decoding.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidId
from engine.ids import AccountID, SessionID, parse_covalue_id, parse_session_id

#: Key of a group transaction's meta that holds what its author had seen of the group.
SEEN_KEY = "seen"
#: Most sessions one ``seen`` claim may name. A writer names only the frontier of what it
#: holds (sessions whose last transaction no other named one had seen), so this is the
#: number of concurrent heads, not the number of sessions of the group.
MAX_SEEN_SESSIONS = 1000
#: Largest count a ``seen`` claim may give for one session (the session log's u32 bound).
MAX_SEEN_COUNT = 2**32 - 1

#: Key of a revocation's meta that names what it had seen of the revoked accounts' writes
#: elsewhere: ``{CoValueID: {sessionID: count}}`` (docs/protocol.md "Data writes").
KEPT_KEY = "kept"
#: Most sessions one ``kept`` record may name, over all its CoValues. A revoking replica that
#: holds more of the revoked accounts' sessions names the first ones in (CoValueID, sessionID)
#: order; the writes of the others are voided with everything else the revocation had not seen.
MAX_KEPT_SESSIONS = 10_000

#: A transaction of the group: (sessionID, index).
TxRef = tuple[SessionID, int]
#: What a revocation had seen of the revoked accounts' writes: {CoValueID: {sessionID: count}}.
Kept = Mapping[str, Mapping[SessionID, int]]


def heads_problem(heads: Any, what: str) -> str | None:
    """Why ``heads`` is not a well-formed ``{sessionID: count}`` claim, or None when it is."""
    if not isinstance(heads, dict):
        return f"{what} is a map of SessionID to count"
    if len(heads) > MAX_SEEN_SESSIONS:
        return f"{what} names more than {MAX_SEEN_SESSIONS} sessions"
    for sid, count in heads.items():
        try:
            parse_session_id(sid)
        except InvalidId:
            return f"{what} names an invalid SessionID"
        if type(count) is not int or not 1 <= count <= MAX_SEEN_COUNT:
            return f"{what} counts are integers from 1 to {MAX_SEEN_COUNT}"
    return None


def _kept_problem(kept: Any) -> str | None:
    if not isinstance(kept, dict):
        return "kept is a map of CoValueID to {sessionID: count}"
    total = 0
    for covalue, heads in kept.items():
        try:
            parse_covalue_id(covalue)
        except InvalidId:
            return "kept names an invalid CoValueID"
        problem = heads_problem(heads, "kept")
        if problem is not None:
            return problem
        total += len(heads)
    return f"kept names more than {MAX_KEPT_SESSIONS} sessions" if total > MAX_KEPT_SESSIONS else None


def seen_problem(meta: Any) -> str | None:
    """Why ``meta`` is not a well-formed group transaction meta, or None when it is.

    ``None`` (no meta) is allowed and claims an empty causal past besides the author's own
    session: what protocol 1 writers produced.
    """
    if meta is None:
        return None
    if not isinstance(meta, dict) or SEEN_KEY not in meta or not set(meta) <= {SEEN_KEY, KEPT_KEY}:
        return "a group transaction's meta is {'seen': {sessionID: count}} (and 'kept' in a revocation)"
    problem = heads_problem(meta[SEEN_KEY], "seen")
    if problem is None and KEPT_KEY in meta:
        problem = _kept_problem(meta[KEPT_KEY])
    return problem


def seen_meta(seen: Mapping[SessionID, int], kept: Kept | None = None) -> dict[str, Any]:
    """The meta a group transaction carries to claim ``seen`` (and, for a revocation, what it
    had seen of the revoked accounts' writes)."""
    meta: dict[str, Any] = {SEEN_KEY: dict(seen)}
    if kept:
        meta[KEPT_KEY] = {cid: dict(heads) for cid, heads in kept.items()}
    return meta


@dataclass(slots=True)
class Node:
    """One held group transaction, as the authority rules see it."""

    ref: TxRef
    author: AccountID
    made_at: int
    #: role changes ``(account, role)``; empty when ``problem`` is set
    changes: list[tuple[AccountID, str]]
    #: the author's own-session predecessor and the last transaction of each claimed session
    deps: list[TxRef]
    #: why it can never be valid (undecodable, ill-formed), or None
    problem: str | None = None
    #: a revocation's record of the revoked accounts' writes it had seen
    kept: Kept = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """What the rules decided for a group's held transactions."""

    #: placed transactions in the linear order
    order: list[Node] = field(default_factory=list)
    #: placed transaction -> None when valid, else why not
    verdict: dict[TxRef, str | None] = field(default_factory=dict)
    #: unplaced transactions -> why they wait
    waiting: dict[TxRef, str] = field(default_factory=dict)
    #: what a new transaction written now should claim to have seen
    frontier: dict[SessionID, int] = field(default_factory=dict)
    #: causal past of each placed transaction: a bitset over positions in ``order``
    past: list[int] = field(default_factory=list)
    #: placed transaction -> its position in ``order``
    position: dict[TxRef, int] = field(default_factory=dict)
    #: per account: the positions of valid transactions giving it a role, and the role
    assigned: dict[AccountID, list[tuple[int, str]]] = field(default_factory=dict)

    def role_in_past(self, initial_admin: AccountID, account: AccountID, bits: int) -> tuple[str | None, int]:
        """``account``'s role after the valid transactions in ``bits`` (a causal past), and
        the position of the transaction that gave it (-1: none, or the initial admin)."""
        return _role_in_past(initial_admin, account, bits, self.assigned)


def decide(initial_admin: AccountID, nodes: list[Node]) -> Outcome:
    """Apply the authority rules to ``nodes``: every held transaction of the group."""
    out = Outcome()
    order, past = _place(nodes, out)
    out.order = order
    pos = {node.ref: p for p, node in enumerate(order)}
    by_author: dict[AccountID, list[int]] = {}
    for p, node in enumerate(order):
        by_author.setdefault(node.author, []).append(p)
    voided: dict[int, str] = {}
    while True:
        valid, grant, out.assigned = _evaluate(initial_admin, order, past, voided, out)
        newly = _next_voids(order, past, valid, grant, voided, by_author=by_author)
        if not newly:
            break
        voided.update(newly)
    out.frontier = _frontier(order, past, valid, pos)
    out.past = past
    out.position = pos
    return out


def _place(nodes: list[Node], out: Outcome) -> tuple[list[Node], list[int]]:
    """Topological order (least ``(madeAt, sessionID, index)`` first) and causal pasts.

    A past is a bitset over positions in the order. Unplaceable nodes go to ``out.waiting``.
    """
    by_ref = {node.ref: node for node in nodes}
    children: dict[TxRef, list[TxRef]] = {}
    missing: dict[TxRef, int] = {}
    for node in nodes:
        deps = set(node.deps)
        node.deps = sorted(deps)
        missing[node.ref] = len(deps)
        for dep in deps:
            children.setdefault(dep, []).append(node.ref)
    ready = [(node.made_at, node.ref[0], node.ref[1]) for node in nodes if not node.deps]
    heapq.heapify(ready)
    order: list[Node] = []
    past: list[int] = []
    position: dict[TxRef, int] = {}
    while ready:
        _, sid, index = heapq.heappop(ready)
        node = by_ref[(sid, index)]
        bits = 0
        for dep in node.deps:
            p = position[dep]
            bits |= past[p] | (1 << p)
        position[node.ref] = len(order)
        order.append(node)
        past.append(bits)
        for child in children.get(node.ref, ()):
            missing[child] -= 1
            if missing[child] == 0:
                c = by_ref[child]
                heapq.heappush(ready, (c.made_at, c.ref[0], c.ref[1]))
    for node in nodes:
        if node.ref in position:
            continue
        absent = [dep for dep in node.deps if dep not in by_ref]
        if absent:
            sid, index = absent[0]
            out.waiting[node.ref] = f"waits for its causal past: {sid} up to {index + 1}"
        else:
            out.waiting[node.ref] = "waits for its causal past (a dependency waits or is cyclic)"
    return order, past


def _evaluate(
    initial_admin: AccountID, order: list[Node], past: list[int], voided: Mapping[int, str], out: Outcome
) -> tuple[list[bool], list[int], dict[AccountID, list[tuple[int, str]]]]:
    """Validity of every placed node given ``voided``, each valid node's seniority, and the
    valid role assignments per account.

    Seniority (``grant``) is the position of the valid transaction that made the author admin
    in the node's causal past, or -1 for the initial admin acting on its original role.
    """
    valid = [False] * len(order)
    grant = [0] * len(order)
    #: per account: positions of valid transactions assigning it a role, and the role
    assigned: dict[AccountID, list[tuple[int, str]]] = {}
    for p, node in enumerate(order):
        if node.problem is not None:
            out.verdict[node.ref] = node.problem
            continue
        if p in voided:
            out.verdict[node.ref] = voided[p]
            continue
        role, source = _role_in_past(initial_admin, node.author, past[p], assigned)
        if role != "admin":
            out.verdict[node.ref] = f"author is {role or 'not a member'} in its causal past; role changes need admin"
            continue
        valid[p] = True
        grant[p] = source
        out.verdict[node.ref] = None
        for account, new_role in node.changes:
            assigned.setdefault(account, []).append((p, new_role))
    return valid, grant, assigned


def _role_in_past(
    initial_admin: AccountID, account: AccountID, bits: int, assigned: Mapping[AccountID, list[tuple[int, str]]]
) -> tuple[str | None, int]:
    """``account``'s role after the valid transactions in ``bits``, and where it was given."""
    for p, role in reversed(assigned.get(account, ())):
        if bits >> p & 1:
            return role, p
    return ("admin", -1) if account == initial_admin else (None, -1)


def _next_voids(
    order: list[Node],
    past: list[int],
    valid: list[bool],
    grant: list[int],
    voided: Mapping[int, str],
    *,
    by_author: Mapping[AccountID, list[int]],
) -> dict[int, str]:
    """The voids of the most senior valid revocation that still voids something, or {}.

    ``by_author``: the positions of each author's transactions.
    """
    revocations = []
    for p, node in enumerate(order):
        if valid[p]:
            for account, role in node.changes:
                if role != "admin" and account in by_author:  # only authors have anything to void
                    revocations.append((grant[p], node.author, p, account))
    revocations.sort()
    for _, _, r, account in revocations:
        newly = {}
        for t in by_author[account]:
            if valid[t] and t != r and t not in voided and _concurrent(past, r, t):
                sid, index = order[r].ref
                newly[t] = f"voided: concurrent with the revocation of its author in {sid} #{index}"
        if newly:
            return newly
    return {}


def _concurrent(past: list[int], a: int, b: int) -> bool:
    return not (past[a] >> b & 1) and not (past[b] >> a & 1)


def _frontier(order: list[Node], past: list[int], valid: list[bool], pos: Mapping[TxRef, int]) -> dict[SessionID, int]:
    """What a transaction written now claims to have seen: per session holding a valid
    transaction, its placed prefix; minus sessions another named head had already seen."""
    placed: dict[SessionID, int] = {}
    has_valid: set[SessionID] = set()
    for p, node in enumerate(order):
        sid, index = node.ref
        placed[sid] = max(placed.get(sid, 0), index + 1)
        if valid[p]:
            has_valid.add(sid)
    heads = {sid: pos[(sid, placed[sid] - 1)] for sid in has_valid}
    seen_by_others = 0
    for p in heads.values():
        seen_by_others |= past[p]
    return {sid: placed[sid] for sid, p in sorted(heads.items()) if not seen_by_others >> p & 1}
