"""A node that shares its store with other nodes (PostgreSQL, DESIGN §9): bringing into
memory what the others wrote, and checking what peers send against the store.

The rule for forks across nodes: **the first acknowledged copy is the one the database holds.**
A node acknowledges only what it committed, and a commit appends a session only on top of the
chain the database holds (the session row is locked ``FOR UPDATE`` and its head compared,
:mod:`engine.storage.postgres.rows`); so whichever node commits first decides the session's
history, and every node must judge what it is sent against that history, not against its own
memory, which may be behind. Hence:

- Before content from a peer is verified, the sessions it names are brought up to what the
  store holds (:func:`tail_request`, then :func:`absorb_tails`; the network shell reads the
  store off its event loop, for a whole frame at once, and :func:`refresh_sessions` is the
  same read made while waiting, for a node used without that shell). The store sends rows only
  for the sessions it holds more of, from where memory ends. A chunk that forks from the
  store's copy is then a fork for the ordinary check (``ForkError`` → ``correction``
  downstream), exactly as on one node.
- When the store holds another history of a session than memory (memory holds what another
  node's commit beat: it was never acknowledged), memory takes the store's copy, verified.
- What is absorbed from the store is verified like content from a peer (nothing is trusted for
  being in the database) and is not written back (the store holds it): only the node's
  record of what the store holds moves. Subscribers hear of it as ``remote`` content, so the
  sync manager passes it on to the peers exactly as if it had arrived from one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from engine.covalue import CoValueCore, OutcomeStatus
from engine.ids import CoValueID, SessionID
from engine.model.session_log import Chunk, sigs_between
from engine.node.changes import ChangeEvent, ChangeKind
from engine.storage.interface import ChangeLogStore, Store, StoredCounts, StoredTail, TailRequest

__all__ = ["SharedStoreNode", "absorb_stored", "absorb_tails", "refresh_sessions", "tail_request"]

logger = logging.getLogger(__name__)
security_log = logging.getLogger("kintsugi.security")


#: Called with the change once memory took what the store holds (the node's subscribers).
Notify = Callable[[ChangeEvent], None]


def tail_request(core: CoValueCore, sessions: Iterable[SessionID] | None, *, own: SessionID) -> TailRequest | None:
    """What to ask the store about ``core``: ``sessions`` (None: every session it holds), each
    with the count memory holds of it; None when there is nothing to ask. ``own`` (the node's
    session, which only it writes) is left out."""
    if sessions is None:
        return TailRequest({sid: log.signed_count for sid, log in core.sessions.items() if sid != own}, every=True)
    held = {sid: _held(core, sid) for sid in sessions if sid != own}
    return TailRequest(held) if held else None


def refresh_sessions(
    store: Store | None,
    core: CoValueCore,
    sessions: Iterable[SessionID],
    *,
    own: SessionID,
    stored_counts: StoredCounts,
    notify: Notify,
) -> bool:
    """Bring ``sessions`` of ``core`` up to what the shared store holds, waiting for the read;
    True when memory changed. Nothing for a store nobody else writes. ``stored_counts`` is
    the node's record of what the store holds."""
    if not isinstance(store, ChangeLogStore):
        return False
    request = tail_request(core, sessions, own=own)
    if request is None:
        return False
    tails = store.read_tails({core.id: request}, exclude=own).get(core.id, [])
    return absorb_tails(store, core, tails, stored_counts=stored_counts, notify=notify)


def absorb_stored(
    store: Store, core: CoValueCore, *, own: SessionID, stored_counts: StoredCounts, notify: Notify
) -> bool:
    """Bring what the store holds of ``core`` (every session but ``own``) into memory; True
    when memory changed (``notify`` was called)."""
    if isinstance(store, ChangeLogStore):
        request = tail_request(core, None, own=own)
        assert request is not None
        tails = store.read_tails({core.id: request}, exclude=own).get(core.id, [])
    else:  # a store of one node: only what was written to it behind the node's back
        tails = []
        for stored in store.stored_sessions(core.id):
            if stored.session != own:
                log = store.load_session(core.id, stored.session)
                tails.append(
                    StoredTail(stored.session, stored.count, stored.head, 0, b"", log.txs, log.hashes, log.sigs)
                )
    return absorb_tails(store, core, tails, stored_counts=stored_counts, notify=notify)


def absorb_tails(
    store: Store, core: CoValueCore, tails: Sequence[StoredTail], *, stored_counts: StoredCounts, notify: Notify
) -> bool:
    """Bring into memory, verified, what ``tails`` (read from the store a moment ago) hold
    beyond memory as it is now; True when memory changed (``notify`` was called). A session
    whose stored history is not memory's is read whole and takes memory's place."""
    chunks: dict[SessionID, Chunk] = {}
    ends: dict[SessionID, int] = {}
    other: list[SessionID] = []  # the store holds another history: read it whole
    for tail in tails:
        sid = tail.session
        if tail.error is not None:
            security_log.warning("stored %s/%s does not verify: %s", core.id, sid, tail.error)
            continue
        log = core.sessions.get(sid)
        held = log.signed_count if log is not None else 0
        if tail.count <= held:
            if log is not None and tail.count and log.hash_at(tail.count) != tail.head:
                other.append(sid)
            elif tail.count:
                stored_counts[(core.id, sid)] = max(stored_counts.get((core.id, sid), 0), tail.count)
            continue
        if held < tail.after or (log is not None and held and _stored_hash(tail, held) != log.hash_at(held)):
            other.append(sid)
            continue
        skip = held - tail.after
        chunks[sid] = Chunk(held, list(tail.txs[skip:]), sigs_between(tail.sigs, held, tail.count))
        ends[sid] = tail.count
    changed = False
    if chunks:
        report = core.apply_content(chunks)
        changed = report.changed
        for outcome in report.outcomes:
            sid = outcome.session
            if outcome.status in (OutcomeStatus.APPLIED, OutcomeStatus.DUPLICATE) and sid in core.sessions:
                key = (core.id, sid)
                stored_counts[key] = max(stored_counts.get(key, 0), ends[sid])
            elif outcome.status is OutcomeStatus.FORK:
                other.append(sid)
            elif outcome.status is OutcomeStatus.REJECTED:
                security_log.warning("stored %s/%s does not verify: %s", core.id, sid, outcome.error)
        for sid in report.purged:
            stored_counts.pop((core.id, sid), None)
    for sid in other:
        changed |= _take_stored(store, core, sid, stored_counts)
    if changed:
        kind = ChangeKind.DELETED if core.deleted else ChangeKind.REMOTE
        notify(ChangeEvent(core.id, kind))
    return changed


def _held(core: CoValueCore, session: SessionID) -> int:
    log = core.sessions.get(session)
    return log.signed_count if log is not None else 0


def _stored_hash(tail: StoredTail, n: int) -> bytes:
    """The stored ``h(n)`` for ``tail.after <= n <= tail.count``."""
    return tail.before if n == tail.after else tail.hashes[n - tail.after - 1]


def _take_stored(store: Store, core: CoValueCore, session: SessionID, stored_counts: StoredCounts) -> bool:
    """Put the store's copy of a session in place of memory's (which the store never held:
    another node's commit beat it); True when it verified and was installed."""
    stored = store.load_session(core.id, session)
    if not stored.signed_count:
        return False
    problem = stored.verify_all()
    if problem is not None:
        security_log.warning("stored %s/%s does not verify: %s", core.id, session, problem)
        return False
    log = core.sessions.get(session)
    if log is not None and log.head() == stored.head():
        return False  # memory already holds it
    logger.info("%s/%s: the store holds another history than memory; taking the store's", core.id, session)
    core.install_sessions([stored])
    stored_counts[(core.id, session)] = stored.signed_count
    return True


class SharedStoreNode:
    """What a node on a store other nodes write offers the network shell and the cluster
    follower (:class:`~engine.node.LocalNode` is one): the functions above, on its memory."""

    covalues: dict[CoValueID, CoValueCore]
    store: Store | None
    session: SessionID
    _stored: dict[tuple[CoValueID, SessionID], int]
    _shared_store: bool
    _store_checked: frozenset[CoValueID]

    def _notify(self, event: ChangeEvent) -> None:
        raise NotImplementedError  # the node's

    def absorb_stored(self, covalue: CoValueID) -> bool:
        """Bring into memory, verified, what the store holds of ``covalue`` beyond this node's
        copy (another node sharing the store wrote it; :mod:`engine.node.cluster`). True
        when memory changed (subscribers were told, as for received content). A CoValue not
        in memory is left alone: it is loaded, current, on first use."""
        core = self.covalues.get(covalue)
        if core is None or self.store is None:
            return False
        return absorb_stored(self.store, core, own=self.session, stored_counts=self._stored, notify=self._notify)

    def stored_request(self, covalue: CoValueID, sessions: Iterable[SessionID] | None) -> TailRequest | None:
        """What to read from a store other nodes write before content for ``sessions`` of
        ``covalue`` is judged (None: every session, to catch up); None when there is nothing
        to read (the CoValue is not in memory, or no other node writes the store). Read it
        with :meth:`ChangeFeed.read_tails <engine.storage.interface.ChangeFeed.read_tails>`
        and hand the answer to :meth:`absorb_tails`."""
        core = self.covalues.get(covalue)
        if core is None or not self._shared_store:
            return None
        return tail_request(core, sessions, own=self.session)

    def absorb_tails(self, covalue: CoValueID, tails: Sequence[StoredTail]) -> bool:
        """Bring into memory, verified, what the store was just read to hold of ``covalue``
        beyond memory (:func:`engine.node.cluster.absorb_tails`); True when memory changed."""
        core = self.covalues.get(covalue)
        if core is None or self.store is None:
            return False
        return absorb_tails(self.store, core, tails, stored_counts=self._stored, notify=self._notify)

    @contextmanager
    def checked_against_store(self, covalues: Iterable[CoValueID]) -> Iterator[None]:
        """Content for ``covalues`` applied inside was just judged against the store by the
        caller (:meth:`absorb_tails` of a fresh read), so :meth:`apply_content` does not read
        it again."""
        before = self._store_checked
        self._store_checked = before | frozenset(covalues)
        try:
            yield
        finally:
            self._store_checked = before
