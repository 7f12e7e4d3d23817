"""Session-conflict recovery, owner side (DESIGN §7.1): verify a correction, compute and
apply the replacement.

A peer that acknowledged another copy of session ``sid`` first sends a correction: our
prefix up to the fork point ``k`` plus its authoritative transactions, ending at a signed
head. Rules kept here:

1. Verify before anything changes (:func:`verify_correction`): our ``h(k)`` is the chain base
   of the correction, its chain from ``k`` reaches its head, and the head's checkpoint
   signature verifies under the key in ``sid``. A correction that would only drop signed
   history (every authoritative transaction is one we hold) is refused too: no genuine
   fork looks like that. Anything else raises, with nothing changed.
2. If this replica owns ``sid``, its divergent tail ``[k, m)`` moves, re-signed by the
   owner with the original ``madeAt``, into a new conflict session ``sid!n`` (``!``, ``!2``,
   … — none ever overwritten); a non-owner simply replaces its copy. When the owner was
   writing in ``sid``, it continues in a brand-new session.
3. The replacement, the conflict session and the session switch are persisted as one
   atomic write (:class:`Replacement` says what to write; the node's ``persist`` callback
   writes it through its store, together with the CAS writes of the lease switch).
   Running the same correction again is a no-op. The outcome carries the fork point
   (:class:`~engine.model.fork.ForkPoint`: the first index that differed and the last common
   hash), which is where the conflict session stands against its origin; a replica with a
   store keeps it as a conflict fork record (:meth:`Replacement.fork_record`), since it
   cannot be recomputed later (see :mod:`engine.model.fork`).
4. A deleted CoValue stays deleted: replacing one of its sessions raises
   :class:`~engine.errors.CoValueDeleted`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.covalue import CoValueCore, ReplaceOutcome
from engine.crypto import AccountKey
from engine.errors import CoValueDeleted, InvalidContent, MissingPrefix
from engine.ids import (
    SessionID,
    SessionKind,
    conflict_session_id,
    is_delete_session,
    owns_session,
    parse_session_id,
    session_account,
)
from engine.model.fork import CONFLICT_FORK_NAMESPACE, ForkPoint, conflict_fork_key, encode_conflict_fork
from engine.model.header import Header
from engine.model.session_log import Chunk, SessionLog

__all__ = [
    "Persist",
    "Replacement",
    "apply_correction",
    "replace_session",
    "verify_correction",
]


@dataclass(frozen=True, slots=True)
class Replacement:
    """What one correction changed and what must be stored in one atomic write.

    ``logs`` are written whole in place of their sessions: the replaced session, then its new
    conflict session if there is one (empty when nothing changed). ``switch_to`` is the
    brand-new session the owner writes in from now on, when it was writing in the corrected
    one (None otherwise).
    """

    outcome: ReplaceOutcome
    header: Header
    logs: tuple[SessionLog, ...]
    switch_to: SessionID | None

    def fork_record(self) -> tuple[str, str, bytes] | None:
        """``(namespace, key, value)`` of the conflict fork record to keep beside the store
        (:meth:`~engine.storage.interface.Store.put_checkpoint`), or None when no conflict
        session was made."""
        outcome = self.outcome
        if outcome.conflict_session is None or outcome.fork is None:
            return None
        key = conflict_fork_key(self.header.covalue_id(), outcome.conflict_session)
        return CONFLICT_FORK_NAMESPACE, key, encode_conflict_fork(outcome.session, outcome.fork)


#: Writes a :class:`Replacement` (and its session switch) atomically, or raises with nothing
#: written.
Persist = Callable[[Replacement], None]


def _free_conflict_session(core: CoValueCore, session: SessionID) -> SessionID:
    """The first conflict session id of ``session`` that ``core`` does not hold (raises
    :class:`~engine.errors.InvalidId` past the highest conflict number)."""
    n = 1
    while conflict_session_id(session, n) in core.sessions:
        n += 1
    return conflict_session_id(session, n)


def verify_correction(core: CoValueCore, session: SessionID, chunk: Chunk) -> SessionLog:
    """The authoritative history of ``session``: our ``[0, chunk.after)`` followed by
    ``chunk``, verified. Changes nothing.

    Raises :class:`CoValueDeleted` (a deleted CoValue's non-delete session),
    :class:`MissingPrefix` (the chunk starts beyond what we hold), the
    :class:`~engine.errors.IntegrityError` subclasses (chain base, chain or signature do not
    verify) and :class:`InvalidContent` (the history does not end at a checkpoint).
    """
    if core.deleted and not is_delete_session(session):
        raise CoValueDeleted(f"{core.id} is deleted; its sessions are not replaced")
    old = core.sessions.get(session)
    held = old.count if old is not None else 0
    if chunk.after > held:
        raise MissingPrefix(session, held, chunk.after)
    fresh = SessionLog(core.id, session)
    if old is not None and chunk.after:
        fresh.txs.extend(old.txs[: chunk.after])
        fresh.hashes.extend(old.hashes[: chunk.after])
        fresh.sigs.update({n: s for n, s in old.sigs.items() if n <= chunk.after})
    if chunk.txs:
        # The chunk's checkpoint signs the chain through our shared prefix, so a fork point
        # inside one of our signed batches is fine: the prefix needs no checkpoint of its own.
        fresh.extend_verified(chunk, fresh.verify_chunk(chunk))
    elif chunk.after not in fresh.sigs and chunk.after:
        raise InvalidContent(f"{session}: authoritative history must end at a checkpoint")
    return fresh


def replace_session(
    core: CoValueCore, session: SessionID, chunk: Chunk, *, owner: AccountKey | None = None
) -> ReplaceOutcome:
    """Install an authoritative history of ``session`` in ``core`` (in memory).

    Verifies first (:func:`verify_correction`; raises what it raises, and
    :class:`InvalidContent` for a correction that would merely truncate the session), with
    nothing changed. When ``owner`` is this session's account key, local transactions not in
    the authoritative history move, re-signed, into a new conflict session (pending local
    writes are signed first, so they move too). Returns ``changed`` False when the history
    was already in place.
    """
    fresh = verify_correction(core, session, chunk)
    old = core.sessions.get(session)
    # Verified: only now may anything change. Pending local writes are signed so that they
    # can move into the conflict session with a checkpoint.
    if old is not None and old.pending and owner is not None and owner.account_id == old.account:
        old.sign(owner)
    old_txs = old.txs if old is not None else []
    diverged = next(
        (i for i, (a, b) in enumerate(zip(old_txs, fresh.txs, strict=False)) if a != b),
        min(len(old_txs), len(fresh.txs)),
    )
    if diverged == len(fresh.txs) < len(old_txs):
        # Every authoritative transaction is one we hold: this "correction" would only drop
        # signed history. No genuine fork looks like that (a node acknowledges only what it
        # stores), so it is refused and nothing changes.
        raise InvalidContent(f"{session}: a correction may not merely truncate the session")
    tail = old_txs[diverged:]
    owned = owner is not None and owner.account_id == session_account(session)
    if old is not None and not tail and old.count == fresh.count and old.sigs == fresh.sigs:
        return ReplaceOutcome(session, False, diverged, 0, None, owned, old)
    installed: list[SessionLog] = []
    conflict_sid = None
    if tail and owned and owner is not None and parse_session_id(session).kind is SessionKind.ACTIVE:
        conflict_sid = _free_conflict_session(core, session)
        conflict = SessionLog(core.id, conflict_sid)
        conflict.rebuild_signed(tail, owner)
        installed.append(conflict)
    installed.append(fresh)
    core.install_sessions(installed)
    fork = ForkPoint(diverged, fresh.hash_at(diverged))
    return ReplaceOutcome(session, True, diverged, len(tail), conflict_sid, owned, old, fork)


def apply_correction(
    core: CoValueCore,
    session: SessionID,
    chunk: Chunk,
    *,
    account: AccountKey,
    writing: SessionID,
    new_session: Callable[[], SessionID],
    persist: Persist | None = None,
) -> Replacement:
    """Apply a correction of ``session`` on the replica of ``account`` that writes in
    ``writing`` (DESIGN §7.1), and persist it.

    The replacement is made in memory (:func:`replace_session`, with ``account`` as the
    owner when it owns ``session``), then handed to ``persist`` (None: a replica without a
    store) as one :class:`Replacement`, with ``switch_to`` from ``new_session()`` when the
    owner was writing in the corrected session. Raises what :func:`replace_session` raises
    (nothing changed) and what ``persist`` raises (memory changed: the caller drops it).
    """
    owner = account if owns_session(account.account_id, session) else None
    outcome = replace_session(core, session, chunk, owner=owner)
    if not outcome.changed:
        return Replacement(outcome, core.header, (), None)
    logs = [core.sessions[session]]
    if outcome.conflict_session is not None:
        logs.append(core.sessions[outcome.conflict_session])
    switch_to = new_session() if outcome.owned and session == writing else None
    replacement = Replacement(outcome, core.header, tuple(logs), switch_to)
    if persist is not None:
        persist(replacement)
    return replacement
