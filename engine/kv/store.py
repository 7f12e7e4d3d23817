"""Per-account CAS slots (DESIGN §8): the store protocol, two stores and the account view.

Every ``(namespace, key)`` has a generation: 0 while never written, then 1, 2, ... A
:meth:`KVStore.cas` succeeds only if the caller names the current generation, and stores the
slot at the next one. Generations only grow; deleting is a CAS with a :class:`Tombstone`, so
a generation is never reused and a stale writer can never succeed by accident (no ABA).

Every CAS attempt, won or lost, is also appended to a per-key log (at most
:data:`KV_LOG_KEEP_PER_KEY` records per key, oldest dropped) so the inspector can show a
generation timeline including the races that were lost.

:class:`MemoryKV` keeps everything in memory; :class:`SQLiteKV` uses the tables in
:data:`KV_SCHEMA` and is atomic across processes. :class:`AccountKV` is what a client gets:
its own namespace only.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from engine.errors import (
    InvalidEnvelope,
    KVAccessDenied,
    KVError,
    StorageBugError,
    StorageEnvironmentError,
    UsageError,
)
from engine.ids import AccountID, parse_account_id
from engine.kv.envelope import Slot, decode_envelope, encode_envelope

__all__ = [
    "KV_LOG_KEEP_PER_KEY",
    "KV_SCHEMA",
    "MAX_KEY_LENGTH",
    "AccountKV",
    "CASRecord",
    "CASResult",
    "Conflict",
    "KVStore",
    "MemoryKV",
    "SQLiteKV",
    "Stored",
    "cas_in_transaction",
    "create_schema",
    "sqlite_errors",
    "wall_clock_ms",
]

#: CAS outcomes kept per key in the history log; older records are dropped.
KV_LOG_KEEP_PER_KEY = 256
#: Longest namespace or key accepted, in characters.
MAX_KEY_LENGTH = 1024

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


@dataclass(frozen=True, slots=True)
class Stored:
    """The CAS won; the slot now has ``generation``."""

    generation: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """The CAS lost: the key is at ``generation`` holding ``slot`` (None: never written)."""

    generation: int
    slot: Slot | None


CASResult: TypeAlias = Stored | Conflict
Outcome: TypeAlias = Literal["stored", "conflict"]


@dataclass(frozen=True, slots=True)
class CASRecord:
    """One CAS attempt on a key: ``generation`` is the new one if stored, the current one if not.

    ``writer`` is the instance id given to the store that made the attempt, or None.
    """

    namespace: str
    key: str
    at_ms: int
    expected_gen: int
    outcome: Outcome
    generation: int
    writer: str | None


#: What ``list`` returns: ``(key, generation, slot)`` sorted by key.
Listing: TypeAlias = list[tuple[str, int, Slot]]
#: What ``history`` returns, oldest first. (Aliases because a method named ``list`` hides
#: the builtin inside class bodies.)
Timeline: TypeAlias = list[CASRecord]


class KVStore(Protocol):
    """What every CAS-slot store offers. All methods may raise :class:`KVError` for a bad
    namespace or key, and storage-backed ones :class:`engine.errors.StorageError`."""

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        """``(generation, slot)``; ``(0, None)`` for a key never written."""
        ...

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        """Store ``slot`` at ``expected_gen + 1`` if the key is at ``expected_gen``."""
        ...

    def list(self, namespace: str, prefix: str = "") -> Listing:
        """Every written key (tombstones included) starting with ``prefix``, sorted by key."""
        ...

    def history(self, namespace: str, key: str) -> Timeline:
        """The kept CAS attempts on the key, oldest first."""
        ...


def wall_clock_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def _check_address(namespace: str, key: str) -> None:
    """Raise UsageError for non-str, KVError for empty namespace, too long or unencodable."""
    for what, text in (("namespace", namespace), ("key", key)):
        if not isinstance(text, str):
            raise UsageError(f"KV {what} must be a str, got {type(text).__name__}")
        if len(text) > MAX_KEY_LENGTH or "\x00" in text:
            raise KVError(f"KV {what} longer than {MAX_KEY_LENGTH} characters or holding NUL")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise KVError(f"KV {what} {text!r} is not valid Unicode text") from exc
    if not namespace:
        raise KVError("KV namespace must not be empty")


def _prepare(namespace: str, key: str, expected_gen: int, slot: Slot) -> bytes:
    """Validate a CAS request; return the envelope bytes to store if it wins."""
    _check_address(namespace, key)
    if type(expected_gen) is not int or expected_gen < 0:
        raise UsageError(f"expected generation must be an int >= 0, got {expected_gen!r}")
    return encode_envelope(expected_gen + 1, slot)


def _decide(current: tuple[int, Slot | None], expected_gen: int) -> CASResult:
    generation, slot = current
    return Stored(generation + 1) if generation == expected_gen else Conflict(generation, slot)


def _outcome(result: CASResult) -> Outcome:
    return "stored" if isinstance(result, Stored) else "conflict"


# -- memory ------------------------------------------------------------------------------


class MemoryKV:
    """A :class:`KVStore` in memory, for tests and for nodes that persist nothing.

    Slots are kept as envelope bytes, so a stored value is a copy: mutating an object after
    storing it or after reading it changes nothing in the store.
    """

    def __init__(
        self,
        *,
        writer: str | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        log_keep: int = KV_LOG_KEEP_PER_KEY,
    ) -> None:
        self._writer = writer
        self._clock_ms = clock_ms
        self._log_keep = log_keep
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], bytes] = {}
        self._log: dict[tuple[str, str], deque[CASRecord]] = {}

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        _check_address(namespace, key)
        with self._lock:
            data = self._slots.get((namespace, key))
        return (0, None) if data is None else decode_envelope(data)

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        data = _prepare(namespace, key, expected_gen, slot)
        with self._lock:
            current = self._slots.get((namespace, key))
            result = _decide((0, None) if current is None else decode_envelope(current), expected_gen)
            if isinstance(result, Stored):
                self._slots[(namespace, key)] = data
            log = self._log.setdefault((namespace, key), deque(maxlen=self._log_keep))
            log.append(
                CASRecord(
                    namespace,
                    key,
                    self._clock_ms(),
                    expected_gen,
                    _outcome(result),
                    result.generation,
                    self._writer,
                )
            )
        return result

    def list(self, namespace: str, prefix: str = "") -> Listing:
        _check_address(namespace, prefix)
        with self._lock:
            found = sorted(
                (key, data) for (ns, key), data in self._slots.items() if ns == namespace and key.startswith(prefix)
            )
        return [(key, *decode_envelope(data)) for key, data in found]

    def history(self, namespace: str, key: str) -> Timeline:
        _check_address(namespace, key)
        with self._lock:
            return list(self._log.get((namespace, key), ()))


# -- SQLite ------------------------------------------------------------------------------

# Primary result codes meaning the environment failed, not our SQL: BUSY, LOCKED, NOMEM,
# READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
_ENVIRONMENT_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


@contextmanager
def sqlite_errors(what: str) -> Iterator[None]:
    """Translate :mod:`sqlite3` errors raised inside the block.

    "database is locked", disk full, I/O and similar failures become
    :class:`StorageEnvironmentError` (may pass on retry); everything else (missing tables,
    constraint violations, misuse) becomes :class:`StorageBugError`.
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
        kind = StorageEnvironmentError if environment else StorageBugError
        raise kind(f"{what}: {message}") from exc


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
            conn.execute("ROLLBACK")
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
    data = _prepare(namespace, key, expected_gen, slot)
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
        result = _decide(_read_row(conn, namespace, key), expected_gen)
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
            (namespace, key, at_ms, expected_gen, _outcome(result), result.generation, writer),
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
        _check_address(namespace, key)
        with sqlite_errors(f"KV get {namespace}/{key}"):
            return _read_row(self._conn, namespace, key)

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        """See :meth:`KVStore.cas`. Raises :class:`UsageError` if ``conn`` is already in a
        transaction (use :func:`cas_in_transaction` there)."""
        if self._conn.in_transaction:
            raise UsageError("connection already in a transaction: use cas_in_transaction")
        data = _prepare(namespace, key, expected_gen, slot)  # before locking the database
        with sqlite_errors(f"KV cas {namespace}/{key}"):
            self._conn.execute("BEGIN IMMEDIATE")
        try:
            at_ms = self._clock_ms()
            result = _cas_locked(self._conn, namespace, key, expected_gen, data, self._writer, at_ms, self._log_keep)
            with sqlite_errors(f"KV cas {namespace}/{key}"):
                self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                with sqlite_errors(f"KV cas {namespace}/{key}: rollback"):
                    self._conn.execute("ROLLBACK")
            raise
        return result

    def list(self, namespace: str, prefix: str = "") -> Listing:
        _check_address(namespace, prefix)
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
        _check_address(namespace, key)
        with sqlite_errors(f"KV history {namespace}/{key}"):
            rows = self._conn.execute(
                "SELECT at_ms, expected_gen, outcome, generation, writer FROM kv_log "
                "WHERE namespace = ? AND key = ? ORDER BY seq",
                (namespace, key),
            ).fetchall()
        return [CASRecord(namespace, key, *row) for row in rows]


# -- the account view --------------------------------------------------------------------


class AccountKV:
    """The slots a client of ``account`` may reach: its own namespace (= its AccountID).

    Any access to another namespace raises :class:`KVAccessDenied`, except that an ``admin``
    may read (get, list, history) every namespace; even an admin writes only its own.
    Raises :class:`engine.errors.InvalidId` if ``account`` is not an AccountID.
    """

    def __init__(self, store: KVStore, account: AccountID, *, admin: bool = False) -> None:
        self._store = store
        self.account = parse_account_id(account)
        self.admin = admin

    def _check(self, namespace: str, *, write: bool) -> None:
        if namespace == self.account or (self.admin and not write):
            return
        verb = "write" if write else "read"
        raise KVAccessDenied(f"{self.account} may not {verb} namespace {namespace!r}")

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        self._check(namespace, write=False)
        return self._store.get(namespace, key)

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        self._check(namespace, write=True)
        return self._store.cas(namespace, key, expected_gen, slot)

    def list(self, namespace: str, prefix: str = "") -> Listing:
        self._check(namespace, write=False)
        return self._store.list(namespace, prefix)

    def history(self, namespace: str, key: str) -> Timeline:
        self._check(namespace, write=False)
        return self._store.history(namespace, key)
