"""The read queries viewers need (diagnostics, the inspector, the CLI) in a PostgreSQL store:
listings, a stored session's bookkeeping and signatures, corrupt records, KV namespaces,
checkpoints.

Coroutine functions over one connection, as :mod:`engine.storage.sqlite.reads` is over SQLite;
:class:`~engine.storage.postgres.store.PostgresStore` runs them on its connection. They only
read, and a listing reads no transaction. The listing reads in one REPEATABLE READ snapshot,
so a node writing meanwhile never shows half a write.
"""

from __future__ import annotations

import asyncpg

from engine.ids import CoValueID, SessionID
from engine.storage.interface import CorruptRecord, ListedCoValue, StoredSessionRows, StoreListing

__all__ = ["corrupt_sessions", "get_checkpoint", "kv_namespaces", "listing", "session_rows", "signature"]


async def corrupt_sessions(conn: asyncpg.Connection) -> list[CorruptRecord]:
    """Every recorded corrupt session, sorted by CoValue and session."""
    rows = await conn.fetch("SELECT covalue, session, idx, code, reason FROM corrupt ORDER BY covalue, session")
    return [CorruptRecord(CoValueID(c), SessionID(s), int(i), str(code), str(r)) for c, s, i, code, r in rows]


async def listing(conn: asyncpg.Connection) -> StoreListing:
    """Every CoValue (with its undecoded header), session count and corrupt record."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        covalues = await conn.fetch("SELECT id, type, deleted, header FROM covalues ORDER BY id")
        sessions = await conn.fetch("SELECT covalue, session, count FROM sessions ORDER BY sid")
        corrupt = await corrupt_sessions(conn)
    return StoreListing(
        [ListedCoValue(CoValueID(i), str(t), bool(d), bytes(h)) for i, t, d, h in covalues],
        [(CoValueID(c), str(s), int(n)) for c, s, n in sessions],
        corrupt,
    )


async def session_rows(conn: asyncpg.Connection, covalue: CoValueID, session: SessionID) -> StoredSessionRows | None:
    """Row id, count, head and checkpoint list of one stored session; None when not stored."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(
            "SELECT sid, count, head FROM sessions WHERE covalue = $1 AND session = $2", covalue, session
        )
        if row is None:
            return None
        key = int(row[0])
        checkpoints = tuple(
            int(r[0]) for r in await conn.fetch("SELECT n FROM signatures WHERE sid = $1 ORDER BY n", key)
        )
    return StoredSessionRows(key, int(row[1]), bytes(row[2]), checkpoints)


async def signature(conn: asyncpg.Connection, key: int, n: int) -> bytes | None:
    """The signature of checkpoint ``n`` of the stored session with row id ``key``."""
    sig = await conn.fetchval("SELECT sig FROM signatures WHERE sid = $1 AND n = $2", key, n)
    return None if sig is None else bytes(sig)


async def kv_namespaces(conn: asyncpg.Connection) -> list[str]:
    """Every namespace with at least one slot, sorted."""
    return [str(r[0]) for r in await conn.fetch("SELECT DISTINCT namespace FROM kv ORDER BY namespace")]


async def get_checkpoint(conn: asyncpg.Connection, namespace: str, key: str) -> bytes | None:
    """The value of one cursor; None when there is none."""
    value = await conn.fetchval("SELECT value FROM checkpoints WHERE namespace = $1 AND key = $2", namespace, key)
    return None if value is None else bytes(value)
