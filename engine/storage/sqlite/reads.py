"""The read queries viewers need (diagnostics, the inspector, the CLI): listings, a stored
session's bookkeeping and signatures, corrupt records, KV namespaces, checkpoints.

Functions over an open connection, each one query or a few under one error translation;
:class:`~engine.storage.sqlite.store.SQLiteStore` exposes them as the reading half of
:class:`~engine.storage.interface.Store`. They only read: nothing here writes, so they work
on read-only stores, and a listing reads no transaction (a store with million-transaction
sessions lists at once).
"""

from __future__ import annotations

import sqlite3

from engine.ids import CoValueID, SessionID
from engine.storage.interface import CorruptRecord, ListedCoValue, StoredSessionRows, StoreListing
from engine.storage.sqlite.kv import sqlite_errors

__all__ = ["corrupt_sessions", "get_checkpoint", "kv_namespaces", "listing", "session_rows", "signature"]


def corrupt_sessions(conn: sqlite3.Connection) -> list[CorruptRecord]:
    """Every recorded corrupt session, sorted by CoValue and session."""
    with sqlite_errors("list corrupt sessions"):
        rows = conn.execute(
            "SELECT covalue, session, idx, code, reason FROM corrupt ORDER BY covalue, session"
        ).fetchall()
    return [CorruptRecord(CoValueID(c), SessionID(s), int(i), str(code), str(r)) for c, s, i, code, r in rows]


def listing(conn: sqlite3.Connection, what: str) -> StoreListing:
    """Every CoValue (with its undecoded header), session count and corrupt record."""
    with sqlite_errors(f"list {what}"):
        covalues = conn.execute("SELECT id, type, deleted, header FROM covalues ORDER BY id").fetchall()
        sessions = conn.execute("SELECT covalue, session, count FROM sessions").fetchall()
    return StoreListing(
        [ListedCoValue(CoValueID(i), str(t), bool(d), bytes(h)) for i, t, d, h in covalues],
        [(CoValueID(c), str(s), int(n)) for c, s, n in sessions],
        corrupt_sessions(conn),
    )


def session_rows(conn: sqlite3.Connection, covalue: CoValueID, session: SessionID) -> StoredSessionRows | None:
    """Row id, count, head and checkpoint list of one stored session; None when not stored."""
    with sqlite_errors(f"read {session}"):
        row = conn.execute(
            "SELECT sid, count, head FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)
        ).fetchone()
        if row is None:
            return None
        key = int(row[0])
        checkpoints = tuple(
            int(n) for (n,) in conn.execute("SELECT n FROM signatures WHERE sid = ? ORDER BY n", (key,))
        )
    return StoredSessionRows(key, int(row[1]), bytes(row[2]), checkpoints)


def signature(conn: sqlite3.Connection, key: int, n: int) -> bytes | None:
    """The signature of checkpoint ``n`` of the stored session with row id ``key``."""
    with sqlite_errors(f"read signature {n}"):
        row = conn.execute("SELECT sig FROM signatures WHERE sid = ? AND n = ?", (key, n)).fetchone()
    return None if row is None else bytes(row[0])


def kv_namespaces(conn: sqlite3.Connection) -> list[str]:
    """Every namespace with at least one slot, sorted."""
    with sqlite_errors("list KV namespaces"):
        rows = conn.execute("SELECT DISTINCT namespace FROM kv ORDER BY namespace").fetchall()
    return [str(r[0]) for r in rows]


def get_checkpoint(conn: sqlite3.Connection, namespace: str, key: str) -> bytes | None:
    """The value of one cursor; None when there is none."""
    with sqlite_errors(f"read checkpoint {namespace}/{key}"):
        row = conn.execute("SELECT value FROM checkpoints WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
    return None if row is None else bytes(row[0])
