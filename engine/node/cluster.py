"""A node that shares its store with other nodes (PostgreSQL, DESIGN §9): bringing into
memory what the others wrote, and checking what peers send against the store.

The rule for forks across nodes: **the first acknowledged copy is the one the database holds.**
A node acknowledges only what it committed, and a commit appends a session only on top of the
chain the database holds (the session row is locked ``FOR UPDATE`` and its head compared,
:mod:`engine.storage.postgres.rows`); so whichever node commits first decides the session's
history, and every node must judge what it is sent against that history, not against its own
memory, which may be behind. Hence:

- Before content from a peer is verified, :func:`refresh_sessions` brings the sessions it
  names up to what the store holds (one query for their heads; rows are read only for the
  sessions the store holds more of). A chunk that forks from the store's copy is then a fork
  for the ordinary check (``ForkError`` → ``correction`` downstream), exactly as on one node.
- When the store holds another history of a session than memory (memory holds what another
  node's commit beat: it was never acknowledged), memory takes the store's copy, verified.
- What is absorbed from the store is verified like content from a peer (nothing is trusted for
  being in the database) and is not written back (the store holds it): only the node's
  record of what the store holds moves. Subscribers hear of it as ``remote`` content, so the
  sync manager passes it on to the peers exactly as if it had arrived from one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from engine.covalue import CoValueCore, OutcomeStatus
from engine.ids import SessionID
from engine.model.session_log import Chunk, SessionLog
from engine.node.changes import ChangeEvent, ChangeKind
from engine.storage.interface import ChangeLogStore, Store, StoredCounts

__all__ = ["absorb_stored", "refresh_sessions"]

logger = logging.getLogger(__name__)
security_log = logging.getLogger("kintsugi.security")


#: Called with the change once memory took what the store holds (the node's subscribers).
Notify = Callable[[ChangeEvent], None]


def refresh_sessions(
    store: Store | None,
    core: CoValueCore,
    sessions: Iterable[SessionID],
    *,
    own: SessionID,
    stored_counts: StoredCounts,
    notify: Notify,
) -> bool:
    """Bring ``sessions`` of ``core`` up to what the shared store holds; True when memory
    changed. Nothing for a store nobody else writes. ``own`` (the node's session, which only
    it writes) is skipped; ``stored_counts`` is the node's record of what the store holds."""
    if not isinstance(store, ChangeLogStore):
        return False
    wanted = [sid for sid in sessions if sid != own]
    if not wanted:
        return False
    heads = store.session_heads(core.id, wanted)
    return _absorb(store, core, heads, stored_counts, notify)


def absorb_stored(
    store: Store, core: CoValueCore, *, own: SessionID, stored_counts: StoredCounts, notify: Notify
) -> bool:
    """Bring what the store holds of ``core`` (every session but ``own``) into memory; True
    when memory changed (``notify`` was called)."""
    heads = {s.session: (s.count, s.head) for s in store.stored_sessions(core.id)}
    heads.pop(own, None)
    return _absorb(store, core, heads, stored_counts, notify)


def _absorb(
    store: Store,
    core: CoValueCore,
    heads: dict[SessionID, tuple[int, bytes]],
    stored_counts: StoredCounts,
    notify: Notify,
) -> bool:
    chunks: dict[SessionID, Chunk] = {}
    stored_logs: dict[SessionID, SessionLog] = {}
    for sid, (count, head) in heads.items():
        log = core.sessions.get(sid)
        held = log.signed_count if log is not None else 0
        if count > held or (log is not None and count and log.hash_at(count) != head):
            stored = store.load_session(core.id, sid)  # what is there now (it may have grown)
            stored_logs[sid] = stored
            # Only what extends memory's chain is applied; a longer store copy that forks
            # from memory's would not verify on it: it is taken whole below instead.
            if stored.signed_count > held and (log is None or stored.hash_at(held) == log.hash_at(held)):
                chunks[sid] = stored.chunk(held)
    if not stored_logs:
        return False
    changed = False
    report = core.apply_content(chunks) if chunks else None
    if report is not None:
        changed = report.changed
        for outcome in report.outcomes:
            sid = outcome.session
            if outcome.status in (OutcomeStatus.APPLIED, OutcomeStatus.DUPLICATE) and sid in core.sessions:
                key = (core.id, sid)
                stored_counts[key] = max(stored_counts.get(key, 0), stored_logs[sid].signed_count)
            elif outcome.status is OutcomeStatus.FORK:
                changed |= _take_stored(core, stored_logs[sid], stored_counts)
            elif outcome.status is OutcomeStatus.REJECTED:
                security_log.warning("stored %s/%s does not verify: %s", core.id, sid, outcome.error)
        for sid in report.purged:
            stored_counts.pop((core.id, sid), None)
    for sid, stored in stored_logs.items():
        if sid not in chunks:  # the store holds another (not longer) history than memory
            changed |= _take_stored(core, stored, stored_counts)
    if changed:
        kind = ChangeKind.DELETED if core.deleted else ChangeKind.REMOTE
        notify(ChangeEvent(core.id, kind))
    return changed


def _take_stored(core: CoValueCore, stored: SessionLog, stored_counts: StoredCounts) -> bool:
    """Put the store's copy of a session in place of memory's (which the store never held:
    another node's commit beat it); True when it verified and was installed."""
    problem = stored.verify_all()
    if problem is not None:
        security_log.warning("stored %s/%s does not verify: %s", core.id, stored.session, problem)
        return False
    logger.info("%s/%s: the store holds another history than memory; taking the store's", core.id, stored.session)
    core.install_sessions([stored])
    stored_counts[(core.id, stored.session)] = stored.signed_count
    return True
