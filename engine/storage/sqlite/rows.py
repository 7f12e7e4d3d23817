"""The rows of CoValues and sessions in a SQLite store: writing them and reading them back.

Functions over an open connection, shared by :class:`~engine.storage.sqlite.store.SQLiteStore`
(on its own connection) and :class:`~engine.storage.sqlite.queue.AsyncStore` (on the writer
thread's). The write functions run inside a transaction the caller holds.

Rules kept here: only checkpointed prefixes are written; an append continues from what the
store actually holds, and only after checking that the stored head lies on the writer's
chain (another process may have written, purged or replaced the session); nothing but delete
sessions is ever appended to a CoValue stored as deleted; a session written whole first
loses every old row, its corrupt record included; damaged rows read back as
:class:`~engine.errors.ChainError`, never as data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import cbor2

from engine.crypto import HASH_SIZE
from engine.errors import ChainError, StorageBugError
from engine.ids import CoValueID, SessionID, is_delete_session
from engine.kv.store import CASResult
from engine.model.header import Header
from engine.model.session_log import SessionLog
from engine.storage.interface import CASWrite, RawRow, SessionWrite, StoredCounts
from engine.storage.sqlite.kv import cas_in_transaction
from engine.storage.sqlite.schema import BLOCK_TRANSACTIONS

__all__ = [
    "append_session",
    "drop_session",
    "put_header",
    "read_session",
    "read_window",
    "replace_rows",
    "tombstone_rows",
    "unpack_block",
    "write_rows",
    "write_session_whole",
]


# -- writing -----------------------------------------------------------------------------------


def put_header(conn: sqlite3.Connection, header: Header) -> None:
    """Insert a CoValue's row unless it is there already."""
    conn.execute(
        "INSERT OR IGNORE INTO covalues (id, header, type, deleted) VALUES (?, ?, ?, 0)",
        (header.covalue_id(), header.encode(), header.type),
    )


def _session_rowid(conn: sqlite3.Connection, covalue: str, session: str) -> int:
    row = conn.execute("SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)).fetchone()
    if row is not None:
        return int(row[0])
    cur = conn.execute(
        "INSERT INTO sessions (covalue, session, count, head) VALUES (?, ?, 0, ?)", (covalue, session, b"")
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def append_session(conn: sqlite3.Connection, write: SessionWrite) -> int:
    """Append ``[stored count, end)`` of a session; returns the new stored count.

    Appends continue from what the store actually holds (``write.start`` is the caller's
    belief), after checking that the stored head is on ``log``'s chain: another process may
    have written, purged or replaced this session. Appending non-delete sessions of a CoValue
    the store holds as deleted is refused (returns 0): nothing comes back. Raises
    :class:`StorageBugError` when the stored history is not ours.
    """
    log, end = write.log, write.end
    deleted = conn.execute("SELECT deleted FROM covalues WHERE id = ?", (log.covalue,)).fetchone()
    if deleted is not None and deleted[0] and not is_delete_session(log.session):
        return 0
    row = conn.execute(
        "SELECT sid, count, head FROM sessions WHERE covalue = ? AND session = ?", (log.covalue, log.session)
    ).fetchone()
    start = row[1] if row is not None else 0
    if start and (start > log.count or log.hash_at(start) != row[2]):
        raise StorageBugError(f"{log.session}: the store holds another history of this session")
    if end <= start:
        return int(start)
    sid = row[0] if row is not None else _session_rowid(conn, log.covalue, log.session)
    conn.executemany(
        "INSERT INTO blocks (sid, start, end, txs, hashes) VALUES (?, ?, ?, ?, ?)",
        [
            (sid, a, b, cbor2.dumps(log.txs[a:b]), b"".join(log.hashes[a:b]))
            for a in range(start, end, BLOCK_TRANSACTIONS)
            for b in (min(a + BLOCK_TRANSACTIONS, end),)
        ],
    )
    # A copy first (one C call, atomic under the GIL): a queued write runs on the store's
    # thread while the loop thread may sign more of this log.
    sigs = log.sigs.copy()
    conn.executemany(
        "INSERT OR IGNORE INTO signatures (sid, n, sig) VALUES (?, ?, ?)",
        [(sid, n, s) for n, s in sigs.items() if start < n <= end],
    )
    conn.execute("UPDATE sessions SET count = ?, head = ? WHERE sid = ?", (end, log.hash_at(end), sid))
    return end


def drop_session(conn: sqlite3.Connection, covalue: str, session: str) -> None:
    """Delete every row of a session, its corrupt record included."""
    row = conn.execute("SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)).fetchone()
    if row is not None:
        conn.execute("DELETE FROM blocks WHERE sid = ?", row)
        conn.execute("DELETE FROM signatures WHERE sid = ?", row)
        conn.execute("DELETE FROM sessions WHERE sid = ?", row)
    conn.execute("DELETE FROM corrupt WHERE covalue = ? AND session = ?", (covalue, session))


def write_session_whole(conn: sqlite3.Connection, log: SessionLog) -> None:
    """Replace every stored row of a session with ``log``'s checkpointed prefix."""
    drop_session(conn, log.covalue, log.session)
    append_session(conn, SessionWrite.pending_of(log, 0))


def write_rows(
    conn: sqlite3.Connection, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()
) -> StoredCounts:
    """Headers and session appends (see :meth:`Store.write <engine.storage.interface.Store.write>`)."""
    counts: StoredCounts = {}
    for header in headers:
        put_header(conn, header)
    for item in sessions:
        counts[(item.log.covalue, item.log.session)] = append_session(conn, item)
    return counts


def replace_rows(
    conn: sqlite3.Connection, header: Header, logs: Sequence[SessionLog], cas: Sequence[CASWrite] = ()
) -> list[CASResult]:
    """Sessions written whole, then the CAS writes; returns their results. The caller rolls
    the transaction back when one is a conflict."""
    put_header(conn, header)
    for log in logs:
        write_session_whole(conn, log)
    return [cas_in_transaction(conn, w.namespace, w.key, w.expected_gen, w.slot) for w in cas]


def tombstone_rows(
    conn: sqlite3.Connection, header: Header, delete_sessions: Sequence[SessionLog], purged: Iterable[SessionID]
) -> None:
    """A tombstone: the delete sessions written whole, every other session dropped (the
    ``purged`` ones and whatever else the store holds), the CoValue marked deleted."""
    covalue = header.covalue_id()
    put_header(conn, header)
    for log in delete_sessions:
        write_session_whole(conn, log)
    stored = [r[0] for r in conn.execute("SELECT session FROM sessions WHERE covalue = ?", (covalue,))]
    for sid in set(purged) | {s for s in stored if not is_delete_session(s)}:
        drop_session(conn, covalue, sid)
    conn.execute("UPDATE covalues SET deleted = 1 WHERE id = ?", (covalue,))


# -- reading -----------------------------------------------------------------------------------


def unpack_block(session: str, start: int, end: int, txs: bytes, hashes: bytes) -> tuple[list[bytes], list[bytes]]:
    """The transactions and chain hashes of one ``blocks`` row.

    Raises :class:`ChainError` (at ``start``) when the row is damaged.
    """
    items = _block_txs(session, start, end, txs, hashes)
    return items, [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]


def _block_txs(session: str, start: int, end: int, txs: bytes, hashes: bytes) -> list[bytes]:
    """The transactions of one ``blocks`` row, checked against its hash column's length."""
    try:
        items = cbor2.loads(txs)
    except Exception as exc:  # any decoder failure means a damaged row
        raise ChainError(session, start, "stored block is unreadable") from exc
    n = end - start
    if (
        not isinstance(items, list)
        or len(items) != n
        or len(hashes) != n * HASH_SIZE
        or not all(isinstance(tx, bytes) for tx in items)
    ):
        raise ChainError(session, start, f"stored block does not hold {n} transactions")
    return items


def read_session(conn: sqlite3.Connection, covalue: CoValueID, session: SessionID) -> SessionLog:
    """The stored rows of one session as a log, unverified (empty when not stored).

    Raises :class:`ChainError` when the rows themselves are damaged (unreadable block, gap
    between blocks).
    """
    log = SessionLog(covalue, session)
    row = conn.execute("SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)).fetchone()
    if row is None:
        return log
    for start, end, txs, hashes in conn.execute(
        "SELECT start, end, txs, hashes FROM blocks WHERE sid = ? ORDER BY start", row
    ):
        if start != log.count:
            raise ChainError(session, log.count, f"stored blocks skip from {log.count} to {start}")
        block_txs, block_hashes = unpack_block(session, start, end, txs, hashes)
        log.txs.extend(block_txs)
        log.hashes.extend(block_hashes)
    log.sigs.update(conn.execute("SELECT n, sig FROM signatures WHERE sid = ?", row).fetchall())
    return log


def read_hash(conn: sqlite3.Connection, covalue: CoValueID, session: SessionID, index: int) -> bytes | None:
    """The stored chain hash of row ``index`` (``h(index + 1)``), cut out of its block's
    hash column without reading the block's transactions; None when the row is not stored."""
    if index < 0:
        return None
    row = conn.execute(
        "SELECT end, substr(hashes, (? - start) * ? + 1, ?) FROM blocks "
        "WHERE sid = (SELECT sid FROM sessions WHERE covalue = ? AND session = ?) AND start <= ? "
        "ORDER BY start DESC LIMIT 1",
        (index, HASH_SIZE, HASH_SIZE, covalue, session, index),
    ).fetchone()
    if row is None or index >= row[0] or len(row[1]) != HASH_SIZE:
        return None
    return bytes(row[1])


def read_window(conn: sqlite3.Connection, session: SessionID, sid: int, offset: int, limit: int) -> list[RawRow]:
    """Rows ``(idx, tx, hash)`` of the stored session ``sid`` from ``offset`` (at most
    ``limit``), reading only the blocks that overlap the window."""
    out: list[RawRow] = []
    if limit <= 0:
        return out
    first = conn.execute("SELECT max(start) FROM blocks WHERE sid = ? AND start <= ?", (sid, offset)).fetchone()[0]
    cursor = conn.execute(
        "SELECT start, end, txs, hashes FROM blocks WHERE sid = ? AND start >= ? ORDER BY start", (sid, first or 0)
    )
    for start, end, txs, hashes in cursor:
        block_txs = _block_txs(session, start, end, txs, hashes)
        # only the window's hashes are cut out: a one-row read of a 1,000-row block is a
        # binary search's probe, done dozens of times in a row
        for i in range(max(offset, start), end):
            at = (i - start) * HASH_SIZE
            out.append((i, block_txs[i - start], hashes[at : at + HASH_SIZE]))
            if len(out) == limit:
                return out
    return out


def put_checkpoints(conn: sqlite3.Connection, checkpoints: Iterable[tuple[str, str, bytes]]) -> None:
    """Set cursors and markers ``(namespace, key, value)``, inside the caller's transaction."""
    conn.executemany(
        "INSERT INTO checkpoints (namespace, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
        list(checkpoints),
    )
