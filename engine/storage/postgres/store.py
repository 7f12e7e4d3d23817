"""PostgreSQL store (DESIGN §9): the shared store of a cluster of nodes, the same semantics as
the SQLite store.

:class:`PostgresStore` implements :class:`~engine.storage.interface.Store` over one asyncpg
connection on a private loop thread (:class:`~engine.storage.postgres.connection.PgLink`; its
module says why and how), and keeps the interface's rules: only checkpointed prefixes are
written; every write method is one transaction and returns only after the server committed it
(``synchronous_commit = on`` by default); loading a CoValue verifies each session, in one
snapshot of the database (REPEATABLE READ), so a node appending meanwhile never makes a
session look broken, and records a broken chain in ``corrupt`` instead of serving it.

The database must exist (:class:`~engine.errors.StoreNotFound` otherwise: ``createdb`` makes
it); a writable open creates or migrates the schema in it (:mod:`.schema`). The location is a
libpq-style URL, ``postgresql://user[:password]@host[:port]/database[?host=/socket/dir]``;
a password is better kept in ``PGPASSWORD`` or a ``.pgpass`` file than in the URL, and one in
the URL is never shown (:mod:`.location`).

Errors: :class:`StorageEnvironmentError` (the server unreachable, the connection lost, a
deadlock or serialization failure, a timeout; :class:`StorageUnavailable` for a full disk),
:class:`StorageBugError`, :class:`SchemaVersionError`, :class:`StoreNotFound`, sorted by
:func:`~engine.storage.postgres.connection.translate`; never an asyncpg exception.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

import asyncpg

from engine.errors import ChainError, IntegrityError, KintsugiError, StorageBugError
from engine.ids import CoValueID, SessionID
from engine.kv.store import KV_LOG_KEEP_PER_KEY, CASResult, Stored, wall_clock_ms
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
    TailRequest,
    Tails,
)
from engine.storage.postgres import audit as audit_rows
from engine.storage.postgres import reads, rows
from engine.storage.postgres.connection import DEFAULT_SYNCHRONOUS, ConnectParams, PgLink
from engine.storage.postgres.feed import PostgresChangeFeed, record_changes, slot_change
from engine.storage.postgres.kv import PostgresKV
from engine.storage.postgres.registry import PostgresRegistry
from engine.storage.postgres.schema import ensure_schema
from engine.storage.postgres.tails import read_tails
from engine.storage.postgres.writer import PostgresWriter

__all__ = ["PostgresStore"]

T = TypeVar("T")


class PostgresStore:
    """Synchronous access to one PostgreSQL database. One instance per thread.

    Raises on opening :class:`StoreNotFound` (no such database), :class:`SchemaVersionError`,
    :class:`~engine.errors.UsageError` (a location that is not a valid URL) and the other
    storage errors.
    """

    def __init__(
        self,
        location: str,
        *,
        readonly: bool = False,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        writer: str | None = None,
    ) -> None:
        self.readonly = readonly
        self._params = ConnectParams(str(location), readonly=readonly, synchronous=synchronous)
        self._link = PgLink(self._params)
        try:
            self.version: tuple[int, int] = self._link.call(
                lambda conn: ensure_schema(conn, readonly=readonly), "open store"
            )
        except BaseException:
            self._link.close()
            raise
        self._writer_name = writer
        #: names this store instance in the change log (:mod:`.feed`): its own feed skips
        #: the changes it made
        self.origin = f"{writer or 'store'}-{uuid.uuid4().hex[:12]}"
        self.kv = PostgresKV(self._link, writer=writer, origin=self.origin)

    @property
    def location(self) -> str:
        """The URL the store was opened with, without its password or other secret (see
        :mod:`engine.storage.postgres.location`); it reopens this store in this process."""
        return self._params.location

    def close(self) -> None:
        self._link.close()

    def kv_view(
        self,
        *,
        writer: str | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        log_keep: int = KV_LOG_KEEP_PER_KEY,
    ) -> PostgresKV:
        """CAS slots on this store's connection with another writer name, clock or history
        length than :attr:`kv` (as :class:`~engine.storage.sqlite.kv.SQLiteKV` takes them)."""
        return PostgresKV(self._link, writer=writer, clock_ms=clock_ms, log_keep=log_keep, origin=self.origin)

    def open_kv(self) -> OwnKV:
        """See :meth:`ChangeLogStore.open_kv <engine.storage.interface.ChangeLogStore.open_kv>`."""
        link = PgLink(self._params, name="kintsugi-postgres-kv")
        return OwnKV(PostgresKV(link, writer=self._writer_name, origin=self.origin), link.close)

    def background_writer(self) -> PostgresWriter:
        """A new, not yet started writer with its own connection to this database."""
        return PostgresWriter(self._params, origin=self.origin)

    def change_feed(self) -> PostgresChangeFeed:
        """See :meth:`ChangeLogStore.change_feed <engine.storage.interface.ChangeLogStore.change_feed>`."""
        return PostgresChangeFeed(self._params, self.origin)

    def read_tails(self, requests: Mapping[CoValueID, TailRequest], *, exclude: SessionID) -> Tails:
        """See :meth:`ChangeLogStore.read_tails <engine.storage.interface.ChangeLogStore.read_tails>`."""
        wanted = dict(requests)
        return self._call(lambda conn: read_tails(conn, wanted, exclude), "read sessions")

    def cluster_registry(self) -> PostgresRegistry:
        """See :meth:`ClusterStore.cluster_registry <engine.storage.interface.ClusterStore.cluster_registry>`."""
        return PostgresRegistry(self._params)

    def _call(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        return self._link.call(fn, what)

    def _write(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        """``fn`` inside one transaction (committed, or rolled back if it raises)."""

        async def run(conn: asyncpg.Connection) -> T:
            async with conn.transaction():
                return await fn(conn)

        return self._link.call(run, what)

    # -- writing -------------------------------------------------------------------------------

    def write(self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()) -> StoredCounts:
        """See :meth:`Store.write <engine.storage.interface.Store.write>`."""
        header_list, session_list = list(headers), list(sessions)

        async def write(conn: asyncpg.Connection) -> StoredCounts:
            changed: set[str] = set()
            counts = await rows.write_rows(conn, header_list, session_list, changed=changed)
            await record_changes(conn, changed, self.origin)
            return counts

        return self._write(write, "write")

    def replace_sessions(
        self,
        header: Header,
        logs: Sequence[SessionLog],
        *,
        cas: Sequence[CASWrite] = (),
        checkpoints: Sequence[Checkpoint] = (),
    ) -> list[CASResult]:
        """See :meth:`Store.replace_sessions <engine.storage.interface.Store.replace_sessions>`."""

        async def replace(conn: asyncpg.Connection) -> list[CASResult]:
            transaction = conn.transaction()
            await transaction.start()
            try:
                results = await rows.replace_rows(conn, header, logs, cas, writer=self._writer_name)
                if all(isinstance(r, Stored) for r in results):
                    await rows.put_checkpoints(conn, checkpoints)
                    slots = [slot_change(w.namespace, w.key) for w in cas]  # every one stored
                    await record_changes(conn, [header.covalue_id(), *slots], self.origin)
                    await transaction.commit()
                    return results
            except BaseException:
                with contextlib.suppress(Exception):  # a lost connection has rolled back already
                    await transaction.rollback()
                raise
            await transaction.rollback()  # a CAS write lost: nothing at all is written
            return results

        return self._call(replace, "replace sessions")

    def mark_deleted(self, header: Header, delete_sessions: Sequence[SessionLog], purged: Iterable[SessionID]) -> None:
        """See :meth:`Store.mark_deleted <engine.storage.interface.Store.mark_deleted>`."""
        purged_list = list(purged)

        async def tombstone(conn: asyncpg.Connection) -> None:
            await rows.tombstone_rows(conn, header, delete_sessions, purged_list)
            await record_changes(conn, [header.covalue_id()], self.origin)

        self._write(tombstone, "mark deleted")

    def apply_recovery(
        self,
        replaces: Sequence[CoValueReplace],
        *,
        receipt: StoredReceipt | None,
        audit: AuditRecord | None,
        checkpoints: Sequence[Checkpoint] = (),
    ) -> None:
        """See :meth:`Store.apply_recovery <engine.storage.interface.Store.apply_recovery>`."""

        async def apply(conn: asyncpg.Connection) -> None:
            await audit_rows.recovery_rows(conn, replaces, receipt, audit)
            await rows.put_checkpoints(conn, checkpoints)
            await record_changes(conn, [r.header.covalue_id() for r in replaces], self.origin)

        self._write(apply, "apply recovery")

    def append_audit(self, record: AuditRecord) -> None:
        """See :meth:`Store.append_audit <engine.storage.interface.Store.append_audit>`."""
        self._write(lambda conn: audit_rows.append_audit_row(conn, record), "append audit record")

    def record_corrupt(self, covalue: str, session: str, error: IntegrityError) -> None:
        """Record (or update) the first broken link of a session; nothing when read-only."""
        if self.readonly:
            return
        record = CorruptRecord(
            CoValueID(covalue), SessionID(session), int(getattr(error, "index", 0)), error.code, str(error)
        )
        self._write(lambda conn: rows.record_corrupt(conn, record), "record corrupt")

    def put_checkpoint(self, namespace: str, key: str, value: bytes) -> None:
        """See :meth:`Store.put_checkpoint <engine.storage.interface.Store.put_checkpoint>`."""
        self._write(lambda conn: rows.put_checkpoints(conn, [(namespace, key, value)]), "put checkpoint")

    # -- reading -------------------------------------------------------------------------------

    def covalue_ids(self) -> list[CoValueRow]:
        """Every CoValue in the store as (id, type, deleted), sorted by id."""

        async def ids(conn: asyncpg.Connection) -> list[CoValueRow]:
            found = await conn.fetch("SELECT id, type, deleted FROM covalues ORDER BY id")
            return [CoValueRow(CoValueID(i), str(t), bool(d)) for i, t, d in found]

        return self._call(ids, "list covalues")

    def covalue_row(self, covalue: CoValueID) -> CoValueRow | None:
        """One CoValue's (id, type, deleted); None when the store does not have it."""

        async def one(conn: asyncpg.Connection) -> CoValueRow | None:
            row = await conn.fetchrow("SELECT type, deleted FROM covalues WHERE id = $1", covalue)
            return None if row is None else CoValueRow(covalue, str(row[0]), bool(row[1]))

        return self._call(one, f"read {covalue}")

    def has(self, covalue: CoValueID) -> bool:
        async def has(conn: asyncpg.Connection) -> bool:
            return await conn.fetchval("SELECT 1 FROM covalues WHERE id = $1", covalue) is not None

        return self._call(has, f"read {covalue}")

    def stored_sessions(self, covalue: CoValueID) -> list[StoredSession]:
        """Count and head of every stored session of ``covalue``, sorted by session id."""
        return self._call(lambda conn: _stored_sessions(conn, covalue), f"read {covalue}")

    def load_session(self, covalue: CoValueID, session: SessionID) -> SessionLog:
        """The stored rows of one session as a log, unverified (see :meth:`load_covalue`).

        Raises :class:`ChainError` when the rows themselves are damaged.
        """
        return self._call(lambda conn: rows.read_session(conn, covalue, session), f"read {session}")

    def session_window(self, covalue: CoValueID, session: SessionID, offset: int, limit: int) -> list[RawRow]:
        """Rows ``(idx, tx, hash)`` of a session from ``offset`` (at most ``limit``), reading
        only the blocks that overlap the window."""

        async def window(conn: asyncpg.Connection) -> list[RawRow]:
            sid = await conn.fetchval("SELECT sid FROM sessions WHERE covalue = $1 AND session = $2", covalue, session)
            return [] if sid is None else await rows.read_window(conn, session, int(sid), offset, limit)

        return self._call(window, f"read {session}")

    def session_hash(self, covalue: CoValueID, session: SessionID, index: int) -> bytes | None:
        """The stored chain hash of row ``index``, read without its block's transactions
        (a binary search's probe); None when the row is not stored."""
        return self._call(lambda conn: rows.read_hash(conn, covalue, session, index), f"read {session}")

    def load_covalue(self, covalue: CoValueID) -> StoredCoValue | None:
        """The CoValue with every session verified; None when the store does not have it.

        A session that fails verification is recorded as corrupt and left out of the
        returned sessions (listed in its ``corrupt``). Raises :class:`StorageBugError` when
        the stored header is damaged or does not hash to ``covalue``.
        """
        found = self._call(lambda conn: _snapshot(conn, covalue), f"read {covalue}")
        if found is None:
            return None
        header_bytes, deleted, stored_sessions, logs = found
        try:
            header = Header.decode(header_bytes)
            derived = header.covalue_id()
        except KintsugiError as exc:
            raise StorageBugError(f"{covalue}: stored header is damaged: {exc}") from exc
        if derived != covalue:
            raise StorageBugError(f"{covalue}: stored header is damaged: header hashes to {derived}, not {covalue}")
        loaded = StoredCoValue(header, covalue, deleted)
        for stored in stored_sessions:
            log = logs[stored.session]
            problem: IntegrityError | None
            if isinstance(log, ChainError):
                problem = log
            else:
                problem = log.verify_all()
                if problem is None and (log.count != stored.count or log.hash_at(log.count) != stored.head):
                    problem = IntegrityError(f"{stored.session}: stored head does not match its rows")
            if problem is not None:
                loaded.corrupt[stored.session] = problem
                self.record_corrupt(covalue, stored.session, problem)
                continue
            assert isinstance(log, SessionLog)
            loaded.sessions[stored.session] = log
        return loaded

    # -- reading for viewers (engine.storage.postgres.reads) ------------------------------------

    def session_rows(self, covalue: CoValueID, session: SessionID) -> StoredSessionRows | None:
        """See :meth:`Store.session_rows <engine.storage.interface.Store.session_rows>`."""
        return self._call(lambda conn: reads.session_rows(conn, covalue, session), f"read {session}")

    def signature(self, key: int, n: int) -> bytes | None:
        """See :meth:`Store.signature <engine.storage.interface.Store.signature>`."""
        return self._call(lambda conn: reads.signature(conn, key, n), f"read signature {n}")

    def corrupt_sessions(self) -> list[CorruptRecord]:
        """Every recorded corrupt session, sorted by CoValue and session."""
        return self._call(reads.corrupt_sessions, "list corrupt sessions")

    def listing(self) -> StoreListing:
        """See :meth:`Store.listing <engine.storage.interface.Store.listing>`."""
        return self._call(reads.listing, "list store")

    def kv_namespaces(self) -> list[str]:
        """Every KV namespace with at least one slot, sorted."""
        return self._call(reads.kv_namespaces, "list KV namespaces")

    def audit_log(self) -> list[AuditRecord]:
        """See :meth:`Store.audit_log <engine.storage.interface.Store.audit_log>`."""
        if self.version < (1, 1):
            return []
        return self._call(audit_rows.read_audit, "read audit log")

    def receipts(self) -> list[StoredReceipt]:
        """See :meth:`Store.receipts <engine.storage.interface.Store.receipts>`."""
        if self.version < (1, 1):
            return []
        return self._call(audit_rows.read_receipts, "read receipts")

    def get_checkpoint(self, namespace: str, key: str) -> bytes | None:
        """See :meth:`Store.get_checkpoint <engine.storage.interface.Store.get_checkpoint>`."""
        return self._call(lambda conn: reads.get_checkpoint(conn, namespace, key), f"read checkpoint {namespace}/{key}")


async def _stored_sessions(conn: asyncpg.Connection, covalue: CoValueID) -> list[StoredSession]:
    found = await conn.fetch("SELECT session, count, head FROM sessions WHERE covalue = $1 ORDER BY session", covalue)
    return [StoredSession(covalue, SessionID(s), int(c), bytes(h)) for s, c, h in found]


Snapshot = tuple[bytes, bool, list[StoredSession], dict[SessionID, SessionLog | ChainError]]


async def _snapshot(conn: asyncpg.Connection, covalue: CoValueID) -> Snapshot | None:
    """A CoValue's header, deleted flag, stored sessions and their rows, read in one snapshot
    (a session whose rows are damaged is its :class:`ChainError`); None when not stored."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow("SELECT header, deleted FROM covalues WHERE id = $1", covalue)
        if row is None:
            return None
        stored = await _stored_sessions(conn, covalue)
        logs: dict[SessionID, SessionLog | ChainError] = {}
        for item in stored:
            try:
                logs[item.session] = await rows.read_session(conn, covalue, item.session)
            except ChainError as exc:
                logs[item.session] = exc
    return bytes(row[0]), bool(row[1]), stored, logs
