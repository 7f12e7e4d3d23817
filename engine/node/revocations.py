"""What a revocation records of the revoked account's writes (docs/protocol.md, "Group
authority"; :mod:`engine.content.writes`).

A revocation voids every write of the revoked account that it had not seen. What it had seen
is what this replica holds when the admin revokes: for each CoValue the group owns (and the
group itself), how many transactions of each of the account's sessions. Those writes stay
valid on every replica; anything the account wrote that this replica did not hold, or writes
later with an older view of the group, counts for nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.content.authority import MAX_KEPT_SESSIONS
from engine.covalue import CoValueCore
from engine.ids import AccountID, CoValueID, SessionID, session_account
from engine.model.header import OwnedByGroup
from engine.storage.interface import Store


def held_writes(
    covalues: Iterable[CoValueCore], store: Store | None, group: CoValueID, account: AccountID
) -> dict[str, dict[SessionID, int]]:
    """``{CoValueID: {sessionID: count}}`` of ``account``'s sessions in the CoValues ``group``
    owns (and ``group`` itself), at most :data:`MAX_KEPT_SESSIONS` in (CoValueID, sessionID)
    order.

    ``covalues`` are the CoValues in memory (their counts include writes not yet stored).
    CoValues only in ``store`` are read from its session lists without loading their headers,
    so a CoValue of another owner may be named too; that is harmless, since only the owner
    group's revocations are looked up for a CoValue.
    """
    kept: dict[str, dict[SessionID, int]] = {}
    loaded: set[CoValueID] = set()
    for core in covalues:
        loaded.add(core.id)
        ruleset = core.header.ruleset
        if core.id == group or (isinstance(ruleset, OwnedByGroup) and ruleset.group == group):
            heads = {sid: log.count for sid, log in core.sessions.items() if log.count and log.account == account}
            if heads:
                kept[core.id] = heads
    if store is not None:
        for row in store.covalue_ids():
            if row.id in loaded or row.type == "group" or row.deleted:
                continue
            heads = {
                s.session: s.count
                for s in store.stored_sessions(row.id)
                if s.count and session_account(s.session) == account
            }
            if heads:
                kept[row.id] = heads
    entries = sorted((cid, sid, n) for cid, heads in kept.items() for sid, n in heads.items())
    limited: dict[str, dict[SessionID, int]] = {}
    for cid, sid, n in entries[:MAX_KEPT_SESSIONS]:
        limited.setdefault(cid, {})[sid] = n
    return limited
