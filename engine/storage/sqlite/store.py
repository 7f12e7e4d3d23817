"""SQLite store (DESIGN §9): one WAL file per store, versioned schema, atomic replace.

:class:`SQLiteStore` implements :class:`~engine.storage.interface.Store` over one connection
and keeps its rules: only checkpointed prefixes are written (a session row's ``count`` is
always a checkpoint), so what a store holds always verifies; every write method is one
transaction, durable (``synchronous=FULL`` by default) before it returns; loading a CoValue
verifies each of its sessions, and a broken chain is recorded in ``corrupt`` and kept out of
what is returned, never served as valid. Chains are verified when a CoValue is loaded, not
when the store opens, so opening a large store is immediate. Reads return model data
(:class:`~engine.storage.interface.StoredCoValue`, :class:`SessionLog`, rows); the node builds
CoValues from them.

The rows themselves are written and read by :mod:`engine.storage.sqlite.rows`, the queries
only viewers need are :mod:`engine.storage.sqlite.reads`, opening is
:mod:`engine.storage.sqlite.connection`, and the background writer
(:meth:`SQLiteStore.background_writer`) is :mod:`engine.storage.sqlite.queue`.

Errors: :class:`StorageEnvironmentError` (the environment failed: locked, disk full, I/O, a
file that is not or no longer a database), :class:`StorageBugError` (our own bug: misuse,
constraint violations, rows our code should never have written), :class:`SchemaVersionError`,
:class:`StoreNotFound` — sorted by :func:`~engine.storage.sqlite.kv.sqlite_errors`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from engine.errors import ChainError, IntegrityError, KintsugiError, StorageBugError
from engine.ids import CoValueID, SessionID
from engine.kv.store import CASResult, Stored
from engine.model.audit import AuditRecord
from engine.model.header import Header
from engine.model.session_log import SessionLog
from engine.storage.interface import (
    CASWrite,
    Checkpoint,
    CorruptRecord,
    CoValueReplace,
    CoValueRow,
    OwnKV,
    RawRow,
    SessionWrite,
    StoredCounts,
    StoredCoValue,
    StoredReceipt,
    StoredSession,
    StoredSessionRows,
    StoreListing,
)
from engine.storage.sqlite import audit as audit_rows
from engine.storage.sqlite import reads, rows
from engine.storage.sqlite.connection import (
    DEFAULT_SYNCHRONOUS,
    STORE_FILE,
    ConnectionWrapper,
    connect,
    store_file,
    transaction,
)
from engine.storage.sqlite.kv import SQLiteKV, sqlite_errors
from engine.storage.sqlite.queue import AsyncStore

__all__ = ["STORE_FILE", "SQLiteStore", "SessionWrite", "StoredSession", "store_file"]


class _Abandon(Exception):
    """Rolls a write transaction back on purpose (a CAS of a replacement lost), carrying the
    CAS results out to the caller."""

    def __init__(self, results: list[CASResult]) -> None:
        super().__init__("a CAS write of the transaction conflicted")
        self.results = results


class SQLiteStore:
    """Synchronous access to one store file (a directory holding :data:`STORE_FILE`, or the
    file itself). One instance per thread.

    ``wrap`` receives each connection the store opens, its background writer's included, and
    the store uses what it returns (:data:`~engine.storage.sqlite.connection.ConnectionWrapper`).
    Raises on opening what :func:`~engine.storage.sqlite.connection.connect` raises.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        writer: str | None = None,
        wrap: ConnectionWrapper | None = None,
    ) -> None:
        self.readonly = readonly
        self._synchronous = synchronous
        self._wrap = wrap
        self._writer = writer
        self.conn, self.path, self.version = connect(path, readonly=readonly, synchronous=synchronous, wrap=wrap)
        self.kv = SQLiteKV(self.conn, writer=writer)

    @property
    def location(self) -> str:
        """The database file's path."""
        return str(self.path)

    def close(self) -> None:
        self.conn.close()

    def open_kv(self) -> OwnKV:
        """See :meth:`OwnKVStore.open_kv <engine.storage.interface.OwnKVStore.open_kv>`: a
        ``kv_cas`` is a write transaction with an fsync, made on the connection's thread."""
        conn, _path, _version = connect(self.path, synchronous=self._synchronous, wrap=self._wrap)
        return OwnKV(SQLiteKV(conn, writer=self._writer), conn.close)

    def background_writer(self) -> AsyncStore:
        """A new, not yet started :class:`AsyncStore` on this store's file."""
        return AsyncStore(self.path, synchronous=self._synchronous, wrap=self._wrap)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error)."""
        with transaction(self.conn, f"write {self.path}") as conn:
            yield conn

    # -- writing -------------------------------------------------------------------------------

    def write(self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()) -> StoredCounts:
        """See :meth:`Store.write <engine.storage.interface.Store.write>`."""
        with self.transaction() as conn:
            return rows.write_rows(conn, headers, sessions)

    def replace_sessions(
        self,
        header: Header,
        logs: Sequence[SessionLog],
        *,
        cas: Sequence[CASWrite] = (),
        checkpoints: Sequence[Checkpoint] = (),
    ) -> list[CASResult]:
        """See :meth:`Store.replace_sessions <engine.storage.interface.Store.replace_sessions>`."""
        try:
            with self.transaction() as conn:
                results = rows.replace_rows(conn, header, logs, cas)
                if not all(isinstance(r, Stored) for r in results):
                    raise _Abandon(results)
                rows.put_checkpoints(conn, checkpoints)
        except _Abandon as abandoned:
            return abandoned.results
        return results

    def mark_deleted(self, header: Header, delete_sessions: Sequence[SessionLog], purged: Iterable[SessionID]) -> None:
        """See :meth:`Store.mark_deleted <engine.storage.interface.Store.mark_deleted>`."""
        with self.transaction() as conn:
            rows.tombstone_rows(conn, header, delete_sessions, purged)

    def apply_recovery(
        self,
        replaces: Sequence[CoValueReplace],
        *,
        receipt: StoredReceipt | None,
        audit: AuditRecord | None,
        checkpoints: Sequence[Checkpoint] = (),
    ) -> None:
        """See :meth:`Store.apply_recovery <engine.storage.interface.Store.apply_recovery>`."""
        with self.transaction() as conn:
            audit_rows.recovery_rows(conn, replaces, receipt, audit)
            rows.put_checkpoints(conn, checkpoints)

    def append_audit(self, record: AuditRecord) -> None:
        """See :meth:`Store.append_audit <engine.storage.interface.Store.append_audit>`."""
        with self.transaction() as conn:
            audit_rows.append_audit_row(conn, record)

    def record_corrupt(self, covalue: str, session: str, error: IntegrityError) -> None:
        """Record (or update) the first broken link of a session; nothing when read-only."""
        if self.readonly:
            return
        index = getattr(error, "index", 0)
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO corrupt (covalue, session, idx, code, reason) VALUES (?, ?, ?, ?, ?)",
                (covalue, session, index, error.code, str(error)),
            )

    def put_checkpoint(self, namespace: str, key: str, value: bytes) -> None:
        """See :meth:`Store.put_checkpoint <engine.storage.interface.Store.put_checkpoint>`."""
        with self.transaction() as conn:
            rows.put_checkpoints(conn, [(namespace, key, value)])

    # -- reading -------------------------------------------------------------------------------

    def covalue_ids(self) -> list[CoValueRow]:
        """Every CoValue in the store as (id, type, deleted), sorted by id."""
        with sqlite_errors("list covalues"):
            found = self.conn.execute("SELECT id, type, deleted FROM covalues ORDER BY id").fetchall()
        return [CoValueRow(CoValueID(i), t, bool(d)) for i, t, d in found]

    def covalue_row(self, covalue: CoValueID) -> CoValueRow | None:
        """One CoValue's (id, type, deleted); None when the store does not have it."""
        with sqlite_errors(f"read {covalue}"):
            row = self.conn.execute("SELECT type, deleted FROM covalues WHERE id = ?", (covalue,)).fetchone()
        return None if row is None else CoValueRow(covalue, row[0], bool(row[1]))

    def has(self, covalue: CoValueID) -> bool:
        with sqlite_errors(f"read {covalue}"):
            return self.conn.execute("SELECT 1 FROM covalues WHERE id = ?", (covalue,)).fetchone() is not None

    def stored_sessions(self, covalue: CoValueID) -> list[StoredSession]:
        """Count and head of every stored session of ``covalue``, sorted by session id."""
        with sqlite_errors(f"read {covalue}"):
            found = self.conn.execute(
                "SELECT session, count, head FROM sessions WHERE covalue = ? ORDER BY session", (covalue,)
            ).fetchall()
        return [StoredSession(CoValueID(covalue), SessionID(s), c, h) for s, c, h in found]

    def load_session(self, covalue: CoValueID, session: SessionID) -> SessionLog:
        """The stored rows of one session as a log, unverified (see :meth:`load_covalue`).

        Raises :class:`ChainError` when the rows themselves are damaged (unreadable block,
        gap between blocks).
        """
        with sqlite_errors(f"read {session}"):
            return rows.read_session(self.conn, covalue, session)

    def session_window(self, covalue: CoValueID, session: SessionID, offset: int, limit: int) -> list[RawRow]:
        """Rows ``(idx, tx, hash)`` of a session from ``offset`` (at most ``limit``).

        Reads only the blocks that overlap the window: for views of huge sessions.
        """
        with sqlite_errors(f"read {session}"):
            row = self.conn.execute(
                "SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)
            ).fetchone()
            if row is None:
                return []
            return rows.read_window(self.conn, session, int(row[0]), offset, limit)

    def session_hash(self, covalue: CoValueID, session: SessionID, index: int) -> bytes | None:
        """The stored chain hash of row ``index``, read without its block's transactions
        (a binary search's probe); None when the row is not stored."""
        with sqlite_errors(f"read {session}"):
            return rows.read_hash(self.conn, covalue, session, index)

    def load_covalue(self, covalue: CoValueID) -> StoredCoValue | None:
        """The CoValue with every session verified; None when the store does not have it.

        A session that fails verification is recorded as corrupt and left out of the
        returned sessions (listed in its ``corrupt``). Raises :class:`StorageBugError` when
        the stored header is damaged or does not hash to ``covalue``.
        """
        with sqlite_errors(f"read {covalue}"):
            row = self.conn.execute("SELECT header, deleted FROM covalues WHERE id = ?", (covalue,)).fetchone()
        if row is None:
            return None
        try:
            header = Header.decode(row[0])
            derived = header.covalue_id()
        except KintsugiError as exc:
            raise StorageBugError(f"{covalue}: stored header is damaged: {exc}") from exc
        if derived != covalue:
            raise StorageBugError(f"{covalue}: stored header is damaged: header hashes to {derived}, not {covalue}")
        loaded = StoredCoValue(header, covalue, bool(row[1]))
        for stored in self.stored_sessions(covalue):
            try:
                log = self.load_session(covalue, stored.session)
            except ChainError as exc:
                loaded.corrupt[stored.session] = exc
                self.record_corrupt(covalue, stored.session, exc)
                continue
            problem: IntegrityError | None = log.verify_all()
            if problem is None and (log.count != stored.count or log.hash_at(log.count) != stored.head):
                problem = IntegrityError(f"{stored.session}: stored head does not match its rows")
            if problem is not None:
                loaded.corrupt[stored.session] = problem
                self.record_corrupt(covalue, stored.session, problem)
                continue
            loaded.sessions[stored.session] = log
        return loaded

    # -- reading for viewers (engine.storage.sqlite.reads) ---------------------------------------

    def session_rows(self, covalue: CoValueID, session: SessionID) -> StoredSessionRows | None:
        """See :meth:`Store.session_rows <engine.storage.interface.Store.session_rows>`."""
        return reads.session_rows(self.conn, covalue, session)

    def signature(self, key: int, n: int) -> bytes | None:
        """See :meth:`Store.signature <engine.storage.interface.Store.signature>`."""
        return reads.signature(self.conn, key, n)

    def corrupt_sessions(self) -> list[CorruptRecord]:
        """Every recorded corrupt session, sorted by CoValue and session."""
        return reads.corrupt_sessions(self.conn)

    def listing(self) -> StoreListing:
        """See :meth:`Store.listing <engine.storage.interface.Store.listing>`."""
        return reads.listing(self.conn, str(self.path))

    def kv_namespaces(self) -> list[str]:
        """Every KV namespace with at least one slot, sorted."""
        return reads.kv_namespaces(self.conn)

    def audit_log(self) -> list[AuditRecord]:
        """See :meth:`Store.audit_log <engine.storage.interface.Store.audit_log>`."""
        if self.version < (1, 1):
            return []
        with sqlite_errors(f"read {self.path}"):
            return audit_rows.read_audit(self.conn)

    def receipts(self) -> list[StoredReceipt]:
        """See :meth:`Store.receipts <engine.storage.interface.Store.receipts>`."""
        if self.version < (1, 1):
            return []
        with sqlite_errors(f"read {self.path}"):
            return audit_rows.read_receipts(self.conn)

    def get_checkpoint(self, namespace: str, key: str) -> bytes | None:
        """See :meth:`Store.get_checkpoint <engine.storage.interface.Store.get_checkpoint>`."""
        return reads.get_checkpoint(self.conn, namespace, key)
