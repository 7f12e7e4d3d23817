"""Store analysis meant to run in a worker process: load, verify, summarize, compute content.

Loading a CoValue verifies every chain and computing its content decodes every transaction:
seconds for a million-transaction session. A viewer must not do that on its UI thread, and
not on a worker *thread* either — CPU-bound Python in a thread takes the GIL from the UI
thread each time it returns to Python (every model callback while painting), which stalls
the UI far more than the work's own duration. So these functions take a store *path* and
return small picklable results (:class:`CoValueSummary`, :class:`ContentSnapshot`), to be
run in a separate process (they also work in-process).

Each process keeps its stores open read-only and a few loaded CoValues, keyed by their
stored state (session counts and heads, deleted flag): a store that a live node keeps
writing is re-read only for the CoValues that changed. Stores are opened by location with
:func:`engine.storage.open_store` and read through the
:class:`~engine.storage.interface.Store` interface only; loaded CoValues are built by
:mod:`engine.node.loading`, as everywhere else.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from engine.covalue import CoValueCore
from engine.diagnostics.covalue_summary import ContentSnapshot, CoValueSummary, content_snapshot, summarize
from engine.errors import StorageBugError
from engine.ids import CoValueID
from engine.model.header import OwnedByGroup
from engine.node.loading import load_core
from engine.storage.interface import Store
from engine.storage.opener import open_store

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["analyse", "portable_errors", "close_stores", "content", "ping"]

#: Loaded CoValues kept per process, and the most transactions kept in all of them.
KEEP_CORES = 16
KEEP_TRANSACTIONS = 1_500_000

_stores: dict[str, Store] = {}
#: (path, covalue) -> (its stamp, its owner group's stamp, the loaded core)
_cores: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], tuple[Any, ...] | None, CoValueCore]] = OrderedDict()


def portable_errors(fn: F) -> F:
    """Errors must cross back to the caller's process: one whose class cannot be rebuilt
    from its pickle (several engine errors take more than a message) becomes a
    :class:`StorageBugError` saying what it was."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            try:
                pickle.loads(pickle.dumps(exc))
            except Exception:
                raise StorageBugError(f"{type(exc).__name__}: {exc}") from None
            raise

    return wrapper  # type: ignore[return-value]


def ping() -> int:
    """Nothing; the process id (to start a worker process ahead of real work)."""
    return os.getpid()


def close_stores() -> None:
    """Close every store this process opened and forget loaded CoValues."""
    _cores.clear()
    for store in _stores.values():
        store.close()
    _stores.clear()


def _store(path: str) -> Store:
    store = _stores.get(path)
    if store is None:
        store = _stores[path] = open_store(path, readonly=True)
    return store


def _stamp(store: Store, covalue: CoValueID) -> tuple[Any, ...] | None:
    """What identifies the stored state of ``covalue`` (None: not in the store)."""
    row = store.covalue_row(covalue)
    if row is None:
        return None
    sessions = store.stored_sessions(covalue)
    # the count and head of a session replaced by a recovery may be what they were (a corrupt
    # copy of the same length): the stored copy's key tells the copies apart
    copies = tuple(r.key if (r := store.session_rows(covalue, s.session)) else None for s in sessions)
    return (row.deleted, tuple(sessions), copies)


def _load(path: str, covalue: CoValueID) -> CoValueCore | None:
    store = _store(path)
    stamp = _stamp(store, covalue)
    if stamp is None:
        return None
    key = (path, covalue)
    cached = _cores.get(key)
    if cached is not None and cached[0] == stamp and _owner_current(path, cached[1], cached[2]):
        _cores.move_to_end(key)
        return cached[2]
    core = load_core(store, covalue)
    if core is None:
        return None
    core.resolve = lambda cid: _load(path, cid)
    ruleset = core.header.ruleset
    if isinstance(ruleset, OwnedByGroup):
        _load(path, ruleset.group)
    # A CoMap's content depends on its owner group's roles: remember which group state it
    # was loaded with, so a role change reloads it too.
    _cores[key] = (stamp, _owner_stamp(path, core), core)
    _evict()
    return core


def _owner_stamp(path: str, core: CoValueCore) -> tuple[Any, ...] | None:
    ruleset = core.header.ruleset
    return _stamp(_store(path), ruleset.group) if isinstance(ruleset, OwnedByGroup) else None


def _owner_current(path: str, owner_stamp: tuple[Any, ...] | None, core: CoValueCore) -> bool:
    return _owner_stamp(path, core) == owner_stamp


def _evict() -> None:
    def total() -> int:
        return sum(entry[2].transaction_count() for entry in _cores.values())

    while len(_cores) > 1 and (len(_cores) > KEEP_CORES or total() > KEEP_TRANSACTIONS):
        _cores.popitem(last=False)


@portable_errors
def analyse(path: str, covalue: CoValueID) -> CoValueSummary | None:
    """The full summary of ``covalue`` in the store at ``path`` (None: not there)."""
    core = _load(path, covalue)
    if core is None:
        return None
    counts = {s.session: s.count for s in _store(path).stored_sessions(covalue)} if core.corrupt else None
    return summarize(core, stored_counts=counts)


@portable_errors
def content(path: str, covalue: CoValueID) -> ContentSnapshot | None:
    """The content of ``covalue`` with provenance (None: not there)."""
    core = _load(path, covalue)
    return None if core is None else content_snapshot(core)
