"""What one side of a comparison must offer, and the sides the engine has: a store and a
replica in memory (a :class:`~engine.node.LocalNode`: the embedded demo's node, or the
replica a ``ws://`` node is seen through).

:class:`CompareSide` is the seam every kind of target goes through
(:mod:`engine.diagnostics.compare` and :mod:`engine.diagnostics.compare_scopes` know
nothing else): list CoValues and their sessions, open a windowed reader of one session,
compute a CoValue's content with provenance, and read a conflict session's fork record. A
diagnostic bundle becomes a side by implementing the same five calls over the bundle's
files (its per-session counts and heads answer the listings; a bundle without content
answers :meth:`CompareSide.open_session` with None and :meth:`CompareSide.content` with
None, and the comparison then reports what it could not read). The inspector adapts its
own targets the same way (``inspector/models/compare.py``).

Every call is synchronous and cheap except :meth:`CompareSide.content`, which decodes every
transaction of the CoValue (seconds for a huge one): callers that must not block run it in
a worker.

Imports: node, storage interface, model and the other diagnostics modules.
"""

from __future__ import annotations

from typing import Protocol

from engine.diagnostics.analysis import content as analysed_content
from engine.diagnostics.covalue_summary import ContentSnapshot, content_snapshot
from engine.diagnostics.session_rows import LogSessionSource, SessionSource, StoreSessionSource
from engine.errors import StorageError
from engine.ids import CoValueID, SessionID
from engine.model.fork import CONFLICT_FORK_NAMESPACE, conflict_fork_key
from engine.model.session_log import SessionLog
from engine.node.facade import LocalNode
from engine.storage.interface import Store

__all__ = ["CompareSide", "NodeSide", "StoreSide"]


class CompareSide(Protocol):
    """One target of a comparison, read-only."""

    @property
    def label(self) -> str:
        """How reports name this side (a path, a URL, ``embedded demo``)."""
        ...

    def covalue_ids(self) -> list[CoValueID]:
        """Every CoValue this side holds, sorted."""
        ...

    def session_ids(self, covalue: CoValueID) -> list[SessionID]:
        """The sessions this side holds of ``covalue``, sorted (empty: not here)."""
        ...

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        """A new windowed reader of one session (None: not here, or not readable)."""
        ...

    def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        """The CoValue's content with provenance (None: not here). Expensive."""
        ...

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        """The fork record kept for a conflict session (see :mod:`engine.model.fork`), or
        None when this side has none."""
        ...


class StoreSide:
    """A store, read through the :class:`~engine.storage.interface.Store` interface from the
    thread that owns it. ``label`` defaults to the store's location."""

    def __init__(self, store: Store, label: str = "") -> None:
        self.store = store
        self._label = label or store.location

    @property
    def label(self) -> str:
        return self._label

    def covalue_ids(self) -> list[CoValueID]:
        return [row.id for row in self.store.covalue_ids()]

    def session_ids(self, covalue: CoValueID) -> list[SessionID]:
        return sorted(s.session for s in self.store.stored_sessions(covalue))

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        source = StoreSessionSource(self.store, covalue, session)
        return source if source.identity() is not None else None

    def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        # Loaded (and verified) by the analysis code the inspector's worker runs too, on its
        # own read-only connection to the same location.
        return analysed_content(self.store.location, covalue)

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        return _record(self.store, covalue, conflict)


class NodeSide:
    """A :class:`~engine.node.LocalNode` replica, used from its loop's thread. Sessions of
    CoValues it has loaded are read in memory; others from its store (if it has one)."""

    def __init__(self, node: LocalNode, label: str = "") -> None:
        self.node = node
        self._label = label or node.instance_id

    @property
    def label(self) -> str:
        return self._label

    def covalue_ids(self) -> list[CoValueID]:
        return sorted(self.node.covalue_ids())

    def session_ids(self, covalue: CoValueID) -> list[SessionID]:
        core = self.node.covalues.get(covalue)
        if core is not None:
            return sorted(core.sessions)
        store = self.node.store
        return sorted(s.session for s in store.stored_sessions(covalue)) if store is not None else []

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        node = self.node
        core = node.covalues.get(covalue)
        if core is not None and session in core.sessions:

            def current() -> SessionLog | None:
                held = node.covalues.get(covalue)
                return held.sessions.get(session) if held is not None else None

            return LogSessionSource(covalue, session, current)
        if node.store is not None:
            return StoreSide(node.store).open_session(covalue, session)
        return None

    def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        core = self.node.get_or_none(covalue)
        return None if core is None else content_snapshot(core)

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        store = self.node.store
        return None if store is None else _record(store, covalue, conflict)


def _record(store: Store, covalue: CoValueID, conflict: SessionID) -> bytes | None:
    try:
        return store.get_checkpoint(CONFLICT_FORK_NAMESPACE, conflict_fork_key(covalue, conflict))
    except StorageError:  # a record is a hint: an unreadable one means none
        return None
