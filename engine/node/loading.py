"""CoValues built from what a store returns (DESIGN §2: storage returns rows, the node builds
CoValues from them).

A store hands back a :class:`~engine.storage.interface.StoredCoValue` — header, deleted flag,
the sessions that verified and the ones that did not. :func:`core_of` makes the
:class:`CoValueCore` the rest of the engine works with; the node, diagnostics and the CLI all
load through here, so a CoValue loaded anywhere is built the same way: corrupt sessions stay
out of its content and are listed in ``corrupt``.
"""

from __future__ import annotations

from engine.covalue import CoValueCore
from engine.ids import CoValueID
from engine.storage.interface import Store, StoredCoValue

__all__ = ["core_of", "load_core"]


def core_of(stored: StoredCoValue) -> CoValueCore:
    """The CoValue of what a store returned (its sessions are taken over, not copied)."""
    core = CoValueCore(stored.header, stored.id)
    core.deleted = stored.deleted
    core.sessions.update(stored.sessions)
    core.corrupt.update(stored.corrupt)
    return core


def load_core(store: Store, covalue: CoValueID) -> CoValueCore | None:
    """``covalue`` loaded (and verified) from ``store``; None when the store lacks it.

    Raises what :meth:`Store.load_covalue <engine.storage.interface.Store.load_covalue>`
    raises. The CoValue resolves no other CoValue (set its ``resolve`` for its owner group).
    """
    stored = store.load_covalue(covalue)
    return None if stored is None else core_of(stored)
