"""Reports over a store, as the CLI prints them with ``--json`` (shapes are documented there).

- :func:`verify_store` checks every chain and signature of every stored session.
- :func:`inspect_store` lists CoValues with their sessions and flags, and the CAS slots.

Both read through the :class:`~engine.storage.interface.Store` interface only (any store,
opened read-only or not) and change nothing but the store's own corrupt records; CAS values
never appear in a report, only keys, generations and states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.covalue import CoValueCore
from engine.errors import KintsugiError
from engine.ids import CoValueID, SessionKind, parse_session_id
from engine.kv.envelope import Present
from engine.node.loading import load_core
from engine.storage.interface import Store

#: Called with (done, total) while a long report runs.
Progress = Callable[[int, int], None]


def _no_progress(_done: int, _total: int) -> None:
    return None


def verify_store(store: Store, progress: Progress = _no_progress) -> dict[str, Any]:
    """Re-verify every session of every CoValue.

    Returns ``{"ok", "covalues", "sessions", "transactions", "corrupt": [{"covalue",
    "session", "index", "reason"}]}``; ``ok`` is False when anything is corrupt.
    """
    ids = store.covalue_ids()
    corrupt: list[dict[str, Any]] = []
    sessions = transactions = 0
    for done, (cid, _type, _deleted) in enumerate(ids, 1):
        try:
            stored = store.load_covalue(cid)
        except KintsugiError as exc:
            corrupt.append({"covalue": cid, "session": None, "index": None, "reason": str(exc)})
            continue
        assert stored is not None
        sessions += len(stored.sessions) + len(stored.corrupt)
        transactions += sum(log.count for log in stored.sessions.values())
        for sid, error in sorted(stored.corrupt.items()):
            corrupt.append(
                {"covalue": cid, "session": sid, "index": getattr(error, "index", None), "reason": str(error)}
            )
        progress(done, len(ids))
    return {
        "ok": not corrupt,
        "covalues": len(ids),
        "sessions": sessions,
        "transactions": transactions,
        "corrupt": corrupt,
    }


def covalue_flags(core: CoValueCore) -> list[str]:
    """Badges of a CoValue: deleted, corrupt, conflict_session, invalid_transactions."""
    flags = []
    if core.deleted:
        flags.append("deleted")
    if core.corrupt:
        flags.append("corrupt")
    if any(parse_session_id(sid).kind is SessionKind.CONFLICT for sid in core.sessions):
        flags.append("conflict_session")
    if not core.deleted and core.invalid_transactions():
        flags.append("invalid_transactions")
    return flags


def describe_covalue(core: CoValueCore) -> dict[str, Any]:
    sessions: list[dict[str, Any]] = [
        {
            "id": sid,
            "kind": parse_session_id(sid).kind.value,
            "count": log.signed_count,
            "head": log.head()[1].hex(),
            "verified": True,
        }
        for sid, log in sorted(core.sessions.items())
    ]
    sessions += [
        {"id": sid, "kind": parse_session_id(sid).kind.value, "count": None, "head": None, "verified": False}
        for sid in sorted(core.corrupt)
    ]
    return {
        "id": core.id,
        "type": core.type,
        "deleted": core.deleted,
        "sessions": sessions,
        "flags": covalue_flags(core),
    }


def list_kv(store: Store) -> list[dict[str, Any]]:
    """Every CAS slot as ``{"namespace", "key", "generation", "state"}`` (values left out),
    sorted by namespace and key."""
    return [
        {
            "namespace": namespace,
            "key": key,
            "generation": generation,
            "state": "present" if isinstance(slot, Present) else "tombstone",
        }
        for namespace in store.kv_namespaces()
        for key, generation, slot in store.kv.list(namespace)
    ]


def inspect_store(store: Store, progress: Progress = _no_progress) -> dict[str, Any]:
    """``{"covalues": [...], "kv": [...]}`` for everything in the store."""
    loaded: dict[CoValueID, CoValueCore] = {}

    def resolve(cid: CoValueID) -> CoValueCore | None:
        if cid not in loaded:
            core = load_core(store, cid)
            if core is None:
                return None
            core.resolve = resolve
            loaded[cid] = core
        return loaded[cid]

    ids = store.covalue_ids()
    covalues = []
    for done, (cid, _type, _deleted) in enumerate(ids, 1):
        core = resolve(cid)
        assert core is not None
        covalues.append(describe_covalue(core))
        progress(done, len(ids))
    return {"covalues": covalues, "kv": list_kv(store)}
