"""CAS slots (DESIGN §8) in the tables of a SQLite store: atomic across processes.

:class:`SQLiteKV` implements :class:`~engine.kv.store.KVStore`; :func:`cas_in_transaction`
lets another write (a session switch during recovery) include CAS writes in its own
transaction. :func:`sqlite_errors` is the one place that sorts :mod:`sqlite3` errors into
"the environment failed" and "our bug" for the whole SQLite store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from engine.errors import InvalidEnvelope, StorageBugError, StorageEnvironmentError, StorageUnavailable, UsageError
from engine.kv.envelope import Slot, decode_envelope
from engine.kv.store import (
    KV_LOG_KEEP_PER_KEY,
    CASRecord,
    CASResult,
    Listing,
    Stored,
    Timeline,
    cas_outcome,
    check_address,
    decide_cas,
    prepare_cas,
    wall_clock_ms,
)

__all__ = ["KV_SCHEMA", "SQLiteKV", "cas_in_transaction", "create_schema", "sqlite_errors"]


#: DDL for the SQLite store, one statement per item, in order. ``kv.value`` holds the
#: envelope bytes; ``kv.generation`` repeats the envelope's generation for queries.
KV_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE kv ("
    "namespace TEXT NOT NULL, "
    "key TEXT NOT NULL, "
    "generation INTEGER NOT NULL CHECK (generation >= 1), "
    "value BLOB NOT NULL, "
    "PRIMARY KEY (namespace, key)"
    ") WITHOUT ROWID",
    "CREATE TABLE kv_log ("
    "seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "namespace TEXT NOT NULL, "
    "key TEXT NOT NULL, "
    "at_ms INTEGER NOT NULL, "
    "expected_gen INTEGER NOT NULL, "
    "outcome TEXT NOT NULL CHECK (outcome IN ('stored', 'conflict')), "
    "generation INTEGER NOT NULL, "
    "writer TEXT"
    ")",
    "CREATE INDEX kv_log_by_key ON kv_log (namespace, key, seq)",
)


# -- SQLite ------------------------------------------------------------------------------

# Primary result codes meaning the environment failed, not our SQL: BUSY, LOCKED, NOMEM,
# READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_ENVIRONMENT_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


@contextmanager
def sqlite_errors(what: str) -> Iterator[None]:
    """Translate :mod:`sqlite3` errors raised inside the block.

    "database is locked", disk full, I/O and similar failures become
    :class:`StorageEnvironmentError` (may pass on retry) — a full disk (SQLITE_FULL) its
    :class:`StorageUnavailable`, whose detail says so plainly; everything else (missing
    tables, constraint violations, misuse) becomes :class:`StorageBugError`.
    """
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        message = str(exc)
        environment = (code is not None and code & 0xFF in _ENVIRONMENT_CODES) or (
            isinstance(exc, sqlite3.OperationalError)
            and any(word in message for word in ("locked", "busy", "disk", "I/O"))
        )
        if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
            raise StorageUnavailable(f"{what}: the disk is full (ENOSPC: {message})") from exc
        kind = StorageEnvironmentError if environment else StorageBugError
        raise kind(f"{what}: {message}") from exc


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already (it rolls back by itself
    after some failures, a full disk among them); a failure to roll back never replaces the
    error being handled (the connection's next BEGIN reports lasting trouble)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the :data:`KV_SCHEMA` tables in one transaction (normally done by migrations).

    Raises :class:`StorageBugError` if they already exist.
    """
    with sqlite_errors("create KV schema"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in KV_SCHEMA:
                conn.execute(statement)
        except BaseException:
            rollback(conn)
            raise
        conn.execute("COMMIT")


def _read_row(conn: sqlite3.Connection, namespace: str, key: str) -> tuple[int, Slot | None]:
    row = conn.execute("SELECT generation, value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)).fetchone()
    if row is None:
        return 0, None
    return _decode_row(namespace, key, row[0], row[1])


def _decode_row(namespace: str, key: str, generation: int, value: bytes) -> tuple[int, Slot]:
    try:
        gen, slot = decode_envelope(value)
    except InvalidEnvelope as exc:
        raise InvalidEnvelope(f"KV {namespace}/{key}: {exc.detail}") from exc
    if gen != generation:
        raise StorageBugError(f"KV {namespace}/{key}: row generation {generation} but envelope generation {gen}")
    return gen, slot


def cas_in_transaction(
    conn: sqlite3.Connection,
    namespace: str,
    key: str,
    expected_gen: int,
    slot: Slot,
    *,
    writer: str | None = None,
    at_ms: int | None = None,
    log_keep: int = KV_LOG_KEEP_PER_KEY,
) -> CASResult:
    """:meth:`KVStore.cas` for a caller that already holds a write transaction on ``conn``.

    Issues no BEGIN/COMMIT: the write (or the conflict record in the log) becomes visible
    when the caller commits, and disappears if it rolls back. ``at_ms`` defaults to the wall
    clock. Raises :class:`InvalidEnvelope` for a slot that cannot be stored,
    :class:`UsageError` if ``conn`` is not inside a transaction, and the
    :func:`sqlite_errors` translations.
    """
    data = prepare_cas(namespace, key, expected_gen, slot)
    if not conn.in_transaction:
        raise UsageError("cas_in_transaction needs an open write transaction")
    at_ms = wall_clock_ms() if at_ms is None else at_ms
    return _cas_locked(conn, namespace, key, expected_gen, data, writer, at_ms, log_keep)


def _cas_locked(  # noqa: PLR0917 - private, called from two places with the same names
    conn: sqlite3.Connection,
    namespace: str,
    key: str,
    expected_gen: int,
    data: bytes,
    writer: str | None,
    at_ms: int,
    log_keep: int,
) -> CASResult:
    with sqlite_errors(f"KV cas {namespace}/{key}"):
        result = decide_cas(_read_row(conn, namespace, key), expected_gen)
        if isinstance(result, Stored):
            conn.execute(
                "INSERT INTO kv (namespace, key, generation, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE "
                "SET generation = excluded.generation, value = excluded.value",
                (namespace, key, result.generation, data),
            )
        conn.execute(
            "INSERT INTO kv_log (namespace, key, at_ms, expected_gen, outcome, generation, writer)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (namespace, key, at_ms, expected_gen, cas_outcome(result), result.generation, writer),
        )
        # Drop everything older than the newest ``log_keep`` records of this key.
        conn.execute(
            "DELETE FROM kv_log WHERE namespace = ?1 AND key = ?2 AND seq <= ("
            "SELECT seq FROM kv_log WHERE namespace = ?1 AND key = ?2 "
            "ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
            (namespace, key, log_keep),
        )
    return result


class SQLiteKV:
    """A :class:`KVStore` in the :data:`KV_SCHEMA` tables of an open SQLite database.

    ``conn`` must be in autocommit mode (``isolation_level=None``); journal mode and busy
    timeout are the opener's business. Each :meth:`cas` runs in its own ``BEGIN IMMEDIATE``
    transaction, so it is atomic across connections and processes. This class creates no
    tables (see :func:`create_schema`). ``writer`` identifies this instance in the log.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        writer: str | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        log_keep: int = KV_LOG_KEEP_PER_KEY,
    ) -> None:
        if conn.isolation_level is not None:
            raise UsageError("SQLiteKV needs a connection opened with isolation_level=None")
        self._conn = conn
        self._writer = writer
        self._clock_ms = clock_ms
        self._log_keep = log_keep

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        check_address(namespace, key)
        with sqlite_errors(f"KV get {namespace}/{key}"):
            return _read_row(self._conn, namespace, key)

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        """See :meth:`KVStore.cas`. Raises :class:`UsageError` if ``conn`` is already in a
        transaction (use :func:`cas_in_transaction` there)."""
        if self._conn.in_transaction:
            raise UsageError("connection already in a transaction: use cas_in_transaction")
        data = prepare_cas(namespace, key, expected_gen, slot)  # before locking the database
        with sqlite_errors(f"KV cas {namespace}/{key}"):
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            at_ms = self._clock_ms()
            result = _cas_locked(self._conn, namespace, key, expected_gen, data, self._writer, at_ms, self._log_keep)
            with sqlite_errors(f"KV cas {namespace}/{key}"):
                self._conn.execute("COMMIT")
        except BaseException:
            rollback(self._conn)
            raise
        return result

    def list(self, namespace: str, prefix: str = "") -> Listing:
        check_address(namespace, prefix)
        found: list[tuple[str, int, Slot]] = []
        with sqlite_errors(f"KV list {namespace}/{prefix}*"):
            # TEXT compares as UTF-8 bytes, which orders like Python's code points, so the
            # keys with ``prefix`` form one run starting at ``prefix``.
            rows = self._conn.execute(
                "SELECT key, generation, value FROM kv WHERE namespace = ? AND key >= ? ORDER BY key",
                (namespace, prefix),
            )
            for key, generation, value in rows:
                if not key.startswith(prefix):
                    break
                found.append((key, *_decode_row(namespace, key, generation, value)))
        return found

    def history(self, namespace: str, key: str) -> Timeline:
        check_address(namespace, key)
        with sqlite_errors(f"KV history {namespace}/{key}"):
            rows = self._conn.execute(
                "SELECT at_ms, expected_gen, outcome, generation, writer FROM kv_log "
                "WHERE namespace = ? AND key = ? ORDER BY seq",
                (namespace, key),
            ).fetchall()
        return [CASRecord(namespace, key, *row) for row in rows]
