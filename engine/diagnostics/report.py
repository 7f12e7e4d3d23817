"""Reports over a store, as the CLI prints them with ``--json`` (shapes are documented there).

- :func:`verify_store` checks every chain and signature of every stored session.
- :func:`inspect_store` lists CoValues with their sessions and flags, and the CAS slots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.covalue import CoValueCore
from engine.errors import KintsugiError
from engine.ids import CoValueID, SessionKind, parse_session_id
from engine.kv.envelope import Present, decode_envelope
from engine.storage.sqlite.store import SQLiteStore

#: Called with (done, total) while a long report runs.
Progress = Callable[[int, int], None]


def _no_progress(_done: int, _total: int) -> None:
    return None


def verify_store(store: SQLiteStore, progress: Progress = _no_progress) -> dict[str, Any]:
    """Re-verify every session of every CoValue.

    Returns ``{"ok", "covalues", "sessions", "transactions", "corrupt": [{"covalue",
    "session", "index", "reason"}]}``; ``ok`` is False when anything is corrupt.
    """
    ids = store.covalue_ids()
    corrupt: list[dict[str, Any]] = []
    sessions = transactions = 0
    for done, (cid, _type, _deleted) in enumerate(ids, 1):
        try:
            core = store.load_covalue(cid)
        except KintsugiError as exc:
            corrupt.append({"covalue": cid, "session": None, "index": None, "reason": str(exc)})
            continue
        assert core is not None
        sessions += len(core.sessions) + len(core.corrupt)
        transactions += core.transaction_count()
        for sid, error in sorted(core.corrupt.items()):
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


def list_kv(store: SQLiteStore) -> list[dict[str, Any]]:
    """Every CAS slot as ``{"namespace", "key", "generation", "state"}`` (values left out)."""
    rows = store.conn.execute("SELECT namespace, key, value FROM kv ORDER BY namespace, key").fetchall()
    out = []
    for namespace, key, value in rows:
        generation, slot = decode_envelope(value)
        out.append(
            {
                "namespace": namespace,
                "key": key,
                "generation": generation,
                "state": "present" if isinstance(slot, Present) else "tombstone",
            }
        )
    return out


def inspect_store(store: SQLiteStore, progress: Progress = _no_progress) -> dict[str, Any]:
    """``{"covalues": [...], "kv": [...]}`` for everything in the store."""
    loaded: dict[CoValueID, CoValueCore] = {}

    def resolve(cid: CoValueID) -> CoValueCore | None:
        if cid not in loaded:
            core = store.load_covalue(cid)
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
