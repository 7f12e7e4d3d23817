"""Detached copies of CoValues, for reading on another thread.

A :class:`CoValueCore` belongs to the thread of its node; computing a big CoValue's content
(decoding every transaction) takes long enough to stall a UI. :func:`snapshot` copies what
content and summaries need — header, the session logs' transaction, hash and signature
lists (references to the same immutable bytes, so a million-row log copies in milliseconds),
corruption, deletion, and the owner group likewise — into a new core that no one else
touches. The copy can then be summarized or have its content computed on a worker thread
while the original keeps changing.
"""

from __future__ import annotations

from engine.covalue import CoValueCore
from engine.model.session_log import SessionLog

__all__ = ["snapshot"]


def _copy_log(log: SessionLog) -> SessionLog:
    copy = SessionLog(log.covalue, log.session)
    copy.txs.extend(log.txs)
    copy.hashes.extend(log.hashes)
    copy.sigs.update(log.sigs)
    return copy


def snapshot(core: CoValueCore, *, with_owner: bool = True) -> CoValueCore:
    """A copy of ``core`` that shares no mutable state with it (or with its owner group,
    which is copied too when ``with_owner`` and resolvable). Call it on ``core``'s thread."""
    copy = CoValueCore(core.header)
    copy.deleted = core.deleted
    copy.corrupt = dict(core.corrupt)
    copy.version = core.version
    copy.sessions = {sid: _copy_log(log) for sid, log in core.sessions.items()}
    owner = core.owner_group() if with_owner else None
    if owner is not None:
        owner_copy = snapshot(owner, with_owner=False)
        owners = {owner_copy.id: owner_copy}
        copy.resolve = owners.get
    return copy
