"""Causal authority over data writes (docs/protocol.md, "Group authority", data writes).

A CoValue owned by a group is written by the group's members; whether a write counts is
decided against the group's causal authority (:mod:`engine.content.authority`), never against
the ``madeAt`` its author chose:

1. **The write's causal past in the group.** A data transaction may carry in its meta
   ``{"group": {sessionID: count}}``: what its author had seen of the owner group. Its causal
   past in the group is that claim together with the claims of the transactions before it in
   its own session (a writer repeats the claim only when its view of the group moved on). A
   claim naming group transactions this replica does not hold (or holds but cannot place)
   makes the write *waiting*: not applied, and judged again when the group changes.
2. **The author's role there.** With a non-empty causal past, the author must hold a write
   role (``admin`` or ``writer``; ``admin`` for a delete marker) in the roles computed from the
   valid group transactions of that past. A write with no claim at all, or an empty one (what
   protocol 1 writers produced), is judged by the author's role at its ``madeAt``, and rule 3 still
   applies to it, so a claimed time can never grant what the causal rules deny.
3. **Revocation voids what it had not seen.** A valid group transaction that gives the
   author a role without the needed power voids every write of that author that was neither
   in its causal past nor seen by it: the revocation's meta records, under ``"kept"``, how many
   transactions of each of the revoked account's sessions of each CoValue its author held
   (``{CoValueID: {sessionID: count}}``); writes below those counts stay valid.

So a revoked member who backdates a write in a new session, or claims an old view of the
group, writes nothing, while the edits it made before its revocation — the ones the revoking
admin had — stay. Every replica holding the same transactions judges the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from engine.content.authority import MAX_SEEN_SESSIONS, heads_problem
from engine.content.common import DecodedTx, InvalidTx
from engine.content.group import GroupState
from engine.errors import InvalidTransaction
from engine.ids import AccountID, CoValueID, SessionID
from engine.model.session_log import SessionLog
from engine.model.transaction import decode_transaction

#: Key of a data transaction's meta that holds what its author had seen of the owner group.
CLAIM_KEY = "group"

#: A write's causal past in its owner group: sorted ``(sessionID, count)`` pairs, the largest
#: count per session of every claim in its session up to it. ``()``: no claim.
Claim = tuple[tuple[SessionID, int], ...]


class Write(NamedTuple):
    """One data transaction as the rules judge it: who wrote it where, when its author says it
    was made, and its causal past in the owner group."""

    author: AccountID
    session: SessionID
    tx_index: int
    made_at: int
    past: Claim


def claim_problem(meta: Any) -> str | None:
    """Why ``meta`` is not a well-formed data transaction meta, or None when it is.

    No meta, or a map without ``"group"``, claims nothing; other keys are left to the content
    type (a CoMap ignores them).
    """
    if meta is None:
        return None
    if not isinstance(meta, dict):
        return "a data transaction's meta is a map"
    if CLAIM_KEY not in meta:
        return None
    return heads_problem(meta[CLAIM_KEY], "group")


def claim_of(meta: Any) -> Mapping[SessionID, int] | None:
    """The group claim of a well-formed meta (:func:`claim_problem` returned None), or None."""
    if isinstance(meta, dict):
        claim = meta.get(CLAIM_KEY)
        if claim:
            return claim  # type: ignore[no-any-return]
    return None


def extend_claim(past: Claim, claim: Mapping[SessionID, int] | None) -> Claim:
    """The causal past of a write whose session's earlier writes had ``past`` and which itself
    claims ``claim``."""
    if not claim:
        return past
    merged = dict(past)
    for sid, count in claim.items():
        if count > merged.get(sid, 0):
            merged[sid] = count
    return tuple(sorted(merged.items()))


def claim_to_write(past: Claim, frontier: Mapping[SessionID, int]) -> dict[str, Any] | None:
    """The meta a new write carries: the group ``frontier`` its writer sees, unless the
    writer's session already claimed all of it (``past``)."""
    held = dict(past)
    if all(held.get(sid, 0) >= count for sid, count in frontier.items()):
        return None
    if len(frontier) > MAX_SEEN_SESSIONS:  # a frontier names concurrent heads only
        raise ValueError("the owner group has more concurrent heads than a claim may name")
    return {CLAIM_KEY: dict(frontier)}


class WriteJudge:
    """Judges the writes of one CoValue against its owner group's causal authority.

    Built once per content computation; caches the bitset of each distinct causal past.
    """

    def __init__(self, group: GroupState, covalue: CoValueID) -> None:
        self.group = group
        self.covalue = covalue
        self._outcome = group.authority
        self._frontier: Claim = tuple(sorted(group.seen.items()))
        self._pasts: dict[Claim, int | str] = {}
        self._roles: dict[tuple[AccountID, Claim], str | None] = {}
        #: per needed roles, per author: positions of valid changes giving it another role
        self._demotions: dict[frozenset[str], dict[AccountID, list[int]]] = {}

    def claim_for(self, past: Claim) -> dict[str, Any] | None:
        """The meta a new write in a session whose causal past is ``past`` carries."""
        if past == self._frontier:
            return None
        return claim_to_write(past, self.group.seen)

    def problem(self, write: Write, roles: frozenset[str]) -> str | None:
        """Why ``write`` does not count (None: it does); ``roles`` are the roles that may make it."""
        author, session, tx_index, made_at, past = write
        bits = 0
        if past:
            placed = self._bits(past)
            if isinstance(placed, str):
                return placed
            bits = placed
            key = (author, past)
            if key not in self._roles:
                self._roles[key] = self._outcome.role_in_past(self.group.initial_admin, author, bits)[0]
            role = self._roles[key]
        else:
            role = self.group.role_at(author, made_at)
        if role not in roles:
            where = "in its causal past" if past else f"at {made_at}"
            return f"author is {role or 'not a member'} in the owner group {where}"
        demotions = self._demotions.get(roles)
        if demotions is None:
            demotions = self._demotions[roles] = {}
        positions = demotions.get(author)
        if positions is None:
            positions = demotions[author] = [
                p for p, given in self._outcome.assigned.get(author, ()) if given not in roles
            ]
        for p in positions:
            if bits >> p & 1:
                continue
            revocation = self._outcome.order[p]
            if tx_index < revocation.kept.get(self.covalue, {}).get(session, 0):
                continue
            sid, at = revocation.ref
            new_role = dict(revocation.changes)[author]
            return f"voided: its author's role became {new_role} in {sid} #{at}, which had not seen it"
        return None

    def _bits(self, past: Claim) -> int | str:
        """The causal past named by ``past`` as a bitset over the group's order, or why it
        cannot be placed."""
        cached = self._pasts.get(past)
        if cached is not None:
            return cached
        outcome = self._outcome
        bits = 0
        result: int | str | None = None
        for sid, count in past:
            p = outcome.position.get((sid, count - 1))
            if p is None:
                result = f"waits for the owner group's causal past: {sid} up to {count}"
                break
            bits |= outcome.past[p] | (1 << p)
        self._pasts[past] = bits if result is None else result
        return self._pasts[past]


def ordered_writes(
    logs: Iterable[SessionLog], invalid: list[InvalidTx], claims: dict[SessionID, Claim]
) -> list[tuple[DecodedTx, Claim]]:
    """Every transaction of ``logs`` decoded, with its causal past in the owner group, in
    ``(madeAt, sessionID, index)`` order.

    Undecodable transactions and ill-formed claims go to ``invalid`` (an ill-formed claim's
    transaction is listed and skipped; it adds nothing to its session's past). ``claims``
    receives each session's past after its last transaction.
    """
    decoded: list[tuple[int, str, int, DecodedTx, Claim]] = []
    for log in logs:
        past: Claim = ()
        for i in range(log.count):
            try:
                tx = decode_transaction(log.txs[i])
            except InvalidTransaction as exc:
                invalid.append(InvalidTx(log.session, i, f"undecodable: {exc.detail}"))
                continue
            if tx.meta is not None:
                problem = claim_problem(tx.meta)
                if problem is not None:
                    invalid.append(InvalidTx(log.session, i, problem))
                    continue
                past = extend_claim(past, claim_of(tx.meta))
            decoded.append((tx.made_at, log.session, i, DecodedTx(log.session, i, tx), past))
        claims[log.session] = past
    decoded.sort(key=lambda item: item[:3])
    return [(item[3], item[4]) for item in decoded]
