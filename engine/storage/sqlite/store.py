"""SQLite store (DESIGN §9): one WAL file per store, versioned schema, atomic replace.

Only checkpointed prefixes are written (a session row's ``count`` is always a checkpoint), so
what a store holds always verifies. Writes commit in groups (:meth:`SQLiteStore.write`); a
commit is durable (``synchronous=FULL`` by default) before the caller acknowledges anything.
Loading a CoValue verifies each of its sessions; a broken chain is recorded in ``corrupt`` and
kept out of the loaded CoValue, never served as valid. Chains are verified when a CoValue is
loaded, not when the store opens, so opening a large store is immediate (``verify_store``
checks everything).

Errors: :class:`StorageEnvironmentError` (the environment failed: locked, disk full, I/O, a
file that is not or no longer a database), :class:`StorageBugError` (our own bug: misuse,
constraint violations, rows our code should never have written), :class:`SchemaVersionError`,
:class:`StoreNotFound`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import cbor2

from engine.covalue import CoValueCore, ReplaceOutcome
from engine.crypto import HASH_SIZE
from engine.errors import ChainError, IntegrityError, KintsugiError, StorageBugError, StoreNotFound
from engine.ids import CoValueID, SessionID, is_delete_session
from engine.model.header import Header
from engine.model.session_log import SessionLog
from engine.storage.sqlite.kv import SQLiteKV, sqlite_errors
from engine.storage.sqlite.schema import BLOCK_TRANSACTIONS, check_version, ensure_schema

#: Milliseconds a writer waits for another process's lock before StorageEnvironmentError.
BUSY_TIMEOUT_MS = 10_000
#: ``PRAGMA synchronous`` for stores: FULL makes every commit durable against power loss.
DEFAULT_SYNCHRONOUS = "FULL"
#: Name of the database file inside a store directory.
STORE_FILE = "kintsugi.db"


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """Transactions ``[start, end)`` of ``log`` to append; ``end`` must be a checkpoint.

    ``end`` is fixed when the write is made, so a write queued for later stores exactly the
    prefix that existed then (checkpointed prefixes never change in place).
    """

    log: SessionLog
    start: int
    end: int

    @classmethod
    def pending_of(cls, log: SessionLog, stored: int) -> SessionWrite:
        return cls(log, stored, log.signed_count)


@dataclass(frozen=True, slots=True)
class StoredSession:
    covalue: CoValueID
    session: SessionID
    count: int
    head: bytes


def unpack_block(session: str, start: int, end: int, txs: bytes, hashes: bytes) -> tuple[list[bytes], list[bytes]]:
    """The transactions and chain hashes of one ``blocks`` row.

    Raises :class:`ChainError` (at ``start``) when the row is damaged.
    """
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
    return items, [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]


def store_file(path: str | os.PathLike[str]) -> Path:
    """The database file of a store given as a directory or as the file itself."""
    p = Path(path)
    return p / STORE_FILE if p.is_dir() or not p.suffix else p


class SQLiteStore:
    """Synchronous access to one store file. One instance per thread."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        writer: str | None = None,
    ) -> None:
        self.path = store_file(path)
        self.readonly = readonly
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise StoreNotFound(f"no store at {self.path}")
        with sqlite_errors(f"open {self.path}"):
            # A URI, so read-only opens never create a file; the path is percent-quoted so
            # names with '#', '?' or '%' mean what they say.
            uri = f"file:{quote(str(self.path))}" + ("?mode=ro" if readonly else "")
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            try:
                self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                # The version is checked before anything is written: a store from a newer
                # Kintsugi is left exactly as it was.
                check_version(self.conn)
                if not readonly:
                    self.conn.execute("PRAGMA journal_mode = WAL")
                    self.conn.execute(f"PRAGMA synchronous = {synchronous}")
                self.version = ensure_schema(self.conn, readonly=readonly)
            except BaseException:
                self.conn.close()
                raise
        self.kv = SQLiteKV(self.conn, writer=writer)

    def close(self) -> None:
        self.conn.close()

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error)."""
        with sqlite_errors(f"write {self.path}"):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # -- writing (call inside transaction(), or use write()) ---------------------------------

    def put_header(self, conn: sqlite3.Connection, core: CoValueCore) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO covalues (id, header, type, deleted) VALUES (?, ?, ?, 0)",
            (core.id, core.header.encode(), core.type),
        )

    def _session_rowid(self, conn: sqlite3.Connection, covalue: str, session: str) -> int:
        row = conn.execute("SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)).fetchone()
        if row is not None:
            return int(row[0])
        cur = conn.execute(
            "INSERT INTO sessions (covalue, session, count, head) VALUES (?, ?, 0, ?)",
            (covalue, session, b""),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def append_session(self, conn: sqlite3.Connection, write: SessionWrite) -> int:
        """Append ``[stored count, end)`` of a session; returns the new stored count.

        Appends continue from what the store actually holds (``write.start`` is the caller's
        belief), after checking that the stored head is on ``log``'s chain: another process
        may have written, purged or replaced this session. Appending non-delete sessions of a
        CoValue the store holds as deleted is refused (returns 0): nothing comes back.
        Raises :class:`StorageBugError` when the stored history is not ours.
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
            return start
        sid = row[0] if row is not None else self._session_rowid(conn, log.covalue, log.session)
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

    def write_session_whole(self, conn: sqlite3.Connection, log: SessionLog) -> None:
        """Replace every stored row of a session with ``log``'s checkpointed prefix."""
        self.drop_session(conn, log.covalue, log.session)
        self.append_session(conn, SessionWrite.pending_of(log, 0))

    def drop_session(self, conn: sqlite3.Connection, covalue: str, session: str) -> None:
        row = conn.execute("SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)).fetchone()
        if row is not None:
            conn.execute("DELETE FROM blocks WHERE sid = ?", row)
            conn.execute("DELETE FROM signatures WHERE sid = ?", row)
            conn.execute("DELETE FROM sessions WHERE sid = ?", row)
        conn.execute("DELETE FROM corrupt WHERE covalue = ? AND session = ?", (covalue, session))

    def write(
        self,
        headers: Iterable[CoValueCore] = (),
        sessions: Iterable[SessionWrite] = (),
    ) -> dict[tuple[CoValueID, SessionID], int]:
        """Commit headers and session appends as one transaction; returns new stored counts."""
        with self.transaction() as conn:
            return self.write_rows(conn, headers, sessions)

    def write_rows(
        self,
        conn: sqlite3.Connection,
        headers: Iterable[CoValueCore] = (),
        sessions: Iterable[SessionWrite] = (),
    ) -> dict[tuple[CoValueID, SessionID], int]:
        """The body of :meth:`write`, inside a transaction the caller holds."""
        counts: dict[tuple[CoValueID, SessionID], int] = {}
        for core in headers:
            self.put_header(conn, core)
        for item in sessions:
            counts[(item.log.covalue, item.log.session)] = self.append_session(conn, item)
        return counts

    def replace_session(
        self,
        core: CoValueCore,
        outcome: ReplaceOutcome,
        *,
        extra: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """Persist a :meth:`CoValueCore.replace_session` in one transaction.

        The replaced session, the new conflict session and whatever ``extra`` writes (the
        owner's session switch) commit together or not at all.
        """
        if outcome.changed:
            with self.transaction() as conn:
                self.replace_rows(conn, core, outcome, extra=extra)

    def replace_rows(
        self,
        conn: sqlite3.Connection,
        core: CoValueCore,
        outcome: ReplaceOutcome,
        *,
        extra: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """The body of :meth:`replace_session`, inside a transaction the caller holds."""
        self.put_header(conn, core)
        self.write_session_whole(conn, core.sessions[outcome.session])
        if outcome.conflict_session is not None:
            self.write_session_whole(conn, core.sessions[outcome.conflict_session])
        if extra is not None:
            extra(conn)

    def mark_deleted(self, core: CoValueCore, purged: Iterable[SessionID]) -> None:
        """Persist a tombstone: the delete sessions in, every other session out, atomically."""
        with self.transaction() as conn:
            self.tombstone_rows(conn, core, purged)

    def tombstone_rows(self, conn: sqlite3.Connection, core: CoValueCore, purged: Iterable[SessionID]) -> None:
        """The body of :meth:`mark_deleted`, inside a transaction the caller holds."""
        self.put_header(conn, core)
        for sid in core.delete_sessions():
            self.write_session_whole(conn, core.sessions[sid])
        stored = [r[0] for r in conn.execute("SELECT session FROM sessions WHERE covalue = ?", (core.id,))]
        for sid in set(purged) | {s for s in stored if not is_delete_session(s)}:
            self.drop_session(conn, core.id, sid)
        conn.execute("UPDATE covalues SET deleted = 1 WHERE id = ?", (core.id,))

    def record_corrupt(self, covalue: str, session: str, error: IntegrityError) -> None:
        if self.readonly:
            return
        index = getattr(error, "index", 0)
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO corrupt (covalue, session, idx, code, reason) VALUES (?, ?, ?, ?, ?)",
                (covalue, session, index, error.code, str(error)),
            )

    # -- reading -----------------------------------------------------------------------------

    def covalue_ids(self) -> list[tuple[CoValueID, str, bool]]:
        """Every CoValue in the store as (id, type, deleted), sorted by id."""
        with sqlite_errors("list covalues"):
            rows = self.conn.execute("SELECT id, type, deleted FROM covalues ORDER BY id").fetchall()
        return [(CoValueID(i), t, bool(d)) for i, t, d in rows]

    def has(self, covalue: str) -> bool:
        return self.conn.execute("SELECT 1 FROM covalues WHERE id = ?", (covalue,)).fetchone() is not None

    def stored_sessions(self, covalue: str) -> list[StoredSession]:
        rows = self.conn.execute(
            "SELECT session, count, head FROM sessions WHERE covalue = ? ORDER BY session", (covalue,)
        ).fetchall()
        return [StoredSession(CoValueID(covalue), SessionID(s), c, h) for s, c, h in rows]

    def load_session(self, covalue: CoValueID, session: SessionID) -> SessionLog:
        """The stored rows of one session as a log, unverified (see :meth:`load_covalue`).

        Raises :class:`ChainError` when the rows themselves are damaged (unreadable block,
        gap between blocks).
        """
        log = SessionLog(covalue, session)
        with sqlite_errors(f"read {session}"):
            row = self.conn.execute(
                "SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)
            ).fetchone()
            if row is None:
                return log
            for start, end, txs, hashes in self.conn.execute(
                "SELECT start, end, txs, hashes FROM blocks WHERE sid = ? ORDER BY start", row
            ):
                if start != log.count:
                    raise ChainError(session, log.count, f"stored blocks skip from {log.count} to {start}")
                block_txs, block_hashes = unpack_block(session, start, end, txs, hashes)
                log.txs.extend(block_txs)
                log.hashes.extend(block_hashes)
            log.sigs.update(self.conn.execute("SELECT n, sig FROM signatures WHERE sid = ?", row).fetchall())
        return log

    def session_window(self, covalue: str, session: str, offset: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """Rows ``(idx, tx, hash)`` of a session from ``offset`` (at most ``limit``).

        Reads only the blocks that overlap the window: for views of huge sessions.
        """
        out: list[tuple[int, bytes, bytes]] = []
        with sqlite_errors(f"read {session}"):
            row = self.conn.execute(
                "SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)
            ).fetchone()
            if row is None or limit <= 0:
                return out
            first = self.conn.execute(
                "SELECT max(start) FROM blocks WHERE sid = ? AND start <= ?", (row[0], offset)
            ).fetchone()[0]
            cursor = self.conn.execute(
                "SELECT start, end, txs, hashes FROM blocks WHERE sid = ? AND start >= ? ORDER BY start",
                (row[0], first or 0),
            )
            for start, end, txs, hashes in cursor:
                block_txs, block_hashes = unpack_block(session, start, end, txs, hashes)
                for i in range(max(offset, start), end):
                    out.append((i, block_txs[i - start], block_hashes[i - start]))
                    if len(out) == limit:
                        return out
        return out

    def load_covalue(self, covalue: CoValueID) -> CoValueCore | None:
        """The CoValue with every session verified; None when the store does not have it.

        A session that fails verification is recorded as corrupt and left out of the
        returned CoValue (listed in its ``corrupt``).
        """
        with sqlite_errors(f"read {covalue}"):
            row = self.conn.execute("SELECT header, deleted FROM covalues WHERE id = ?", (covalue,)).fetchone()
        if row is None:
            return None
        try:
            core = CoValueCore(Header.decode(row[0]), covalue)
        except KintsugiError as exc:
            raise StorageBugError(f"{covalue}: stored header is damaged: {exc}") from exc
        core.deleted = bool(row[1])
        for stored in self.stored_sessions(covalue):
            try:
                log = self.load_session(covalue, stored.session)
            except ChainError as exc:
                core.corrupt[stored.session] = exc
                self.record_corrupt(covalue, stored.session, exc)
                continue
            problem: IntegrityError | None = log.verify_all()
            if problem is None and (log.count != stored.count or log.hash_at(log.count) != stored.head):
                problem = IntegrityError(f"{stored.session}: stored head does not match its rows")
            if problem is not None:
                core.corrupt[stored.session] = problem
                self.record_corrupt(covalue, stored.session, problem)
                continue
            core.sessions[stored.session] = log
        return core

    def corrupt_sessions(self) -> list[tuple[str, str, int, str, str]]:
        return self.conn.execute(
            "SELECT covalue, session, idx, code, reason FROM corrupt ORDER BY covalue, session"
        ).fetchall()
