"""A seeded fault layer under a SQLite store: its database calls fail the way real disks fail.

:class:`FaultPlan` is handed to :class:`~engine.storage.sqlite.store.SQLiteStore` as its
connection wrapper (``SQLiteStore(path, wrap=plan.wrap)``), so every connection the store
opens — its own and its background writer's — goes through a :class:`FaultyConnection`. The
store above it is unchanged: its own error mapping (``sqlite_errors``), rollback, savepoints
and the node's retries meet the faults exactly as they would meet a failing disk.

Each write transaction (``BEGIN`` … ``COMMIT``) draws at its ``BEGIN``, from the connection's
own seeded generator, whether it meets a fault and which:

``full``
    SQLITE_FULL ("database or disk is full") at one of its writes or at its COMMIT; SQLite
    has rolled the whole transaction back (always at COMMIT, by a draw at a write — it may
    also keep the transaction open with only the statement undone).
``ioerr``
    SQLITE_IOERR_WRITE ("disk I/O error"), at a write or at COMMIT, rolled back the same way.
``busy``
    SQLITE_BUSY ("database is locked") at BEGIN (no transaction starts) or at COMMIT (the
    transaction stays open, as SQLite leaves it, and may be committed or rolled back).
``fsync``
    SQLITE_IOERR_FSYNC at COMMIT. Either nothing of the transaction is durable, or — the
    ambiguity of a real failed fsync — it did reach the file although COMMIT reported the
    failure. The store must cope with both: a retry finds its rows already there.
``lost``
    The connection is lost after ``k`` statements of the transaction: the real connection is
    closed (SQLite discards the uncommitted transaction) and every call raises SQLITE_IOERR.
    By a draw, ``in_transaction`` either stays true (the connection never learnt that the
    transaction is gone: the store's own ROLLBACK fails too) or turns false (SQLite reports
    it rolled back). Once the store has met the loss — it tried to end or begin a
    transaction, or, when no transaction is reported, made any further call — the layer
    reconnects: the next call runs on a new connection to the same file, same pragmas.

Faults are drawn only while :attr:`FaultPlan.active`, on the connections :attr:`FaultPlan.only`
names (default: all); reads outside a write transaction are never faulted (a lost
connection fails them until it reconnects). :attr:`FaultPlan.counts`
says how many of each fault fired. Decisions are made per connection (its generator is
seeded from the plan's seed and the order it was opened in), so a single-threaded writer
replays exactly from its seed; a serving node replays the same sequence of decisions per
transaction, while which writes share a transaction depends on timing.

A planted bug, for tests that must show their checks can fail: with
:attr:`FaultPlan.drop_commits` on, COMMIT rolls back and reports success — a layer that
silently drops committed batches.

:class:`RecordingStore` wraps a store so that every outcome of its background writer's
commits is recorded (to check that a writer only ever meets typed errors), and
:func:`check_acked` reopens a store without faults and counts the acknowledged transactions
it lost.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

from engine.errors import KintsugiError, StorageEnvironmentError
from engine.ids import CoValueID, SessionID
from engine.model.header import Header
from engine.storage.interface import SessionWrite, Store, StoredCounts, StoreWriter
from engine.storage.sqlite.store import SQLiteStore

FULL, IOERR, BUSY, FSYNC, LOST = "full", "ioerr", "busy", "fsync", "lost"
#: Every fault kind, in the order figures are printed.
KINDS = (FULL, IOERR, BUSY, FSYNC, LOST)
#: How a fault is named in a run's figures.
KIND_LABELS = {FULL: "full", IOERR: "ioerr", BUSY: "busy", FSYNC: "fsync", LOST: "lost connection"}

#: The typed error code a writer must get for each fault (docs/protocol.md, engine/errors.py):
#: a full disk is ``storage_unavailable``, every other failure ``storage_environment``.
EXPECTED_CODE = {
    FULL: "storage_unavailable",
    IOERR: "storage_environment",
    BUSY: "storage_environment",
    FSYNC: "storage_environment",
    LOST: "storage_environment",
}

# SQLite result codes (https://sqlite.org/rescode.html).
SQLITE_BUSY = 5
SQLITE_IOERR = 10
SQLITE_FULL = 13
SQLITE_IOERR_WRITE = SQLITE_IOERR | (3 << 8)
SQLITE_IOERR_FSYNC = SQLITE_IOERR | (4 << 8)

#: Statements that write rows: where a full disk or an I/O error can strike inside a transaction.
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
#: Highest statement of a transaction a fault inside it is drawn for (later: at COMMIT).
MAX_FAULT_STATEMENT = 8


def sqlite_error(code: int, name: str, message: str) -> sqlite3.OperationalError:
    """The error SQLite raises for ``code``, with the attributes :mod:`sqlite3` sets."""
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    exc.sqlite_errorname = name
    return exc


def _full() -> sqlite3.OperationalError:
    return sqlite_error(SQLITE_FULL, "SQLITE_FULL", "database or disk is full")


def _ioerr(code: int = SQLITE_IOERR_WRITE, name: str = "SQLITE_IOERR_WRITE") -> sqlite3.OperationalError:
    return sqlite_error(code, name, "disk I/O error")


def _busy() -> sqlite3.OperationalError:
    return sqlite_error(SQLITE_BUSY, "SQLITE_BUSY", "database is locked")


def _verb(sql: str) -> str:
    """The statement's first word, upper case (``ROLLBACK TO`` is told apart by the caller)."""
    parts = sql.lstrip().split(None, 2)
    if not parts:
        return ""
    verb = parts[0].upper()
    if verb == "ROLLBACK" and len(parts) > 1 and parts[1].upper() == "TO":
        return "ROLLBACK TO"
    return verb


@dataclass(frozen=True, slots=True)
class Fault:
    """The fault one write transaction meets: ``at`` is the statement (counted from BEGIN, 0
    being BEGIN itself) it strikes at, None for COMMIT; ``rollback`` says whether SQLite rolled
    the whole transaction back; ``committed`` (fsync only) whether the commit reached the file."""

    kind: str
    at: int | None
    rollback: bool = True
    committed: bool = False


@dataclass
class FaultPlan:
    """Seeded faults for every connection of one store (see the module docstring).

    ``rate`` is the chance that a write transaction meets a fault while :attr:`active`;
    ``weights`` how the kinds are drawn.
    """

    seed: int
    rate: float = 0.3
    weights: Mapping[str, float] = field(default_factory=lambda: {FULL: 3, IOERR: 2, BUSY: 2, FSYNC: 2, LOST: 2})
    #: faults are drawn only while this is true
    active: bool = False
    #: the planted bug: COMMIT rolls back and reports success
    drop_commits: bool = False
    #: the connections that meet faults, by the order the store opened them (0: the store's
    #: own, 1: its first background writer's); None: every one
    only: frozenset[int] | None = None
    #: faults that fired, by kind
    counts: Counter[str] = field(default_factory=Counter)
    #: errors the connections raised, by the kind of fault behind them (a lost connection
    #: raises on several calls for one fault)
    raised: Counter[str] = field(default_factory=Counter)
    #: commits that went through (the planted bug's dropped ones included)
    commits: int = 0
    #: commits the planted bug dropped
    dropped: int = 0
    #: fsync faults whose transaction was committed anyway
    ambiguous: int = 0
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def wrap(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """The store's connection wrapper: ``conn`` behind a :class:`FaultyConnection`."""
        with self._lock:
            index = self.connections
            self.connections += 1
        if self.only is not None and index not in self.only:
            return conn
        # duck-typed as a sqlite3.Connection, as the seam documents
        return cast(sqlite3.Connection, FaultyConnection(conn, self, random.Random(f"{self.seed}/{index}")))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def figures(self) -> str:
        """``31 faults (12 full, 9 ioerr, …)``."""
        kinds = ", ".join(f"{self.counts[k]} {KIND_LABELS[k]}" for k in KINDS)
        return f"{self.total} faults ({kinds})"

    # -- called by the connections ---------------------------------------------------------

    def draw(self, rng: random.Random) -> Fault | None:
        """The fault of a transaction starting now (None: it meets none)."""
        if not self.active or rng.random() >= self.rate:
            return None
        kinds = list(self.weights)
        kind = rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
        if kind == BUSY:
            return Fault(BUSY, 0 if rng.random() < 0.5 else None, rollback=False)
        if kind == FSYNC:
            return Fault(FSYNC, None, committed=rng.random() < 0.5)
        if kind == LOST:
            return Fault(LOST, rng.randint(1, MAX_FAULT_STATEMENT), rollback=rng.random() < 0.5)
        at = rng.randint(1, MAX_FAULT_STATEMENT) if rng.random() < 0.6 else None
        return Fault(kind, at, rollback=at is None or rng.random() < 0.5)

    def fired(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def raising(self, kind: str) -> None:
        with self._lock:
            self.raised[kind] += 1

    def committed(self, *, dropped: bool = False, ambiguous: bool = False) -> None:
        with self._lock:
            self.commits += 1
            self.dropped += dropped
            self.ambiguous += ambiguous


class FaultyConnection:
    """A :class:`sqlite3.Connection` stand-in that injects its plan's faults (module docstring).

    Used from one thread at a time, like the connection it wraps.
    """

    def __init__(self, conn: sqlite3.Connection, plan: FaultPlan, rng: random.Random) -> None:
        self._conn = conn
        self._plan = plan
        self._rng = rng
        self._file = conn.execute("PRAGMA database_list").fetchone()[2]
        self._pragmas = [
            f"PRAGMA busy_timeout = {conn.execute('PRAGMA busy_timeout').fetchone()[0]}",
            f"PRAGMA synchronous = {conn.execute('PRAGMA synchronous').fetchone()[0]}",
        ]
        #: the fault the current write transaction will meet
        self._fault: Fault | None = None
        #: statements run since the current transaction's BEGIN
        self._statements = 0
        #: the connection is lost: every call raises
        self._lost = False
        #: the lost connection reports no open transaction
        self._lost_gone = False
        #: the store has ended the lost transaction: reconnect before the next call
        self._reconnect = False

    # -- what the store calls --------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        if self._lost:
            return not self._lost_gone
        return self._conn.in_transaction

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        return self._call(sql, lambda: self._conn.execute(sql, parameters))

    def executemany(self, sql: str, parameters: Iterable[Any]) -> sqlite3.Cursor:
        return self._call(sql, lambda: self._conn.executemany(sql, parameters))

    def close(self) -> None:
        self._conn.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    # -- faults ----------------------------------------------------------------------------

    def _raise(self, kind: str, exc: sqlite3.Error) -> NoReturn:
        self._plan.raising(kind)
        raise exc

    def _call(self, sql: str, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        if self._reconnect:
            self._reopen()
        verb = _verb(sql)
        if self._lost:
            if self._lost_gone or verb in ("BEGIN", "COMMIT", "ROLLBACK"):
                self._reconnect = True  # the store has met the loss
            self._raise(LOST, _ioerr(SQLITE_IOERR, "SQLITE_IOERR"))
        if verb == "BEGIN":
            return self._begin(run)
        fault = self._fault if self._conn.in_transaction else None
        if fault is None:
            if verb == "COMMIT":
                return self._commit_cleanly(run)
            return run()
        self._statements += 1
        if verb == "COMMIT":
            return self._commit_with(fault, run)
        if fault.at is not None and self._statements >= fault.at:
            if fault.kind == LOST:
                self._lose(fault)
            if fault.kind in (FULL, IOERR) and verb in _WRITES:
                self._fail_statement(fault)
        return run()

    def _begin(self, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        fault = self._plan.draw(self._rng)
        if fault is not None and fault.kind == BUSY and fault.at == 0:
            self._plan.fired(BUSY)
            self._raise(BUSY, _busy())
        cursor = run()
        self._fault, self._statements = fault, 0
        return cursor

    def _commit_cleanly(self, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        if self._plan.drop_commits:
            cursor = self._conn.execute("ROLLBACK")
            self._plan.committed(dropped=True)
            return cursor
        cursor = run()
        self._plan.committed()
        return cursor

    def _commit_with(self, fault: Fault, run: Callable[[], sqlite3.Cursor]) -> NoReturn:
        self._fault = None
        if fault.kind == LOST:
            self._lose(fault)
        self._plan.fired(fault.kind)
        if fault.kind == BUSY:
            self._raise(BUSY, _busy())  # the transaction stays open
        if fault.kind == FSYNC:
            if fault.committed:
                run()
                self._plan.committed(ambiguous=True)
            else:
                self._conn.execute("ROLLBACK")
            self._raise(FSYNC, _ioerr(SQLITE_IOERR_FSYNC, "SQLITE_IOERR_FSYNC"))
        self._conn.execute("ROLLBACK")
        self._raise(fault.kind, _full() if fault.kind == FULL else _ioerr())

    def _fail_statement(self, fault: Fault) -> NoReturn:
        self._fault = None
        self._plan.fired(fault.kind)
        if fault.rollback:
            self._conn.execute("ROLLBACK")
        self._raise(fault.kind, _full() if fault.kind == FULL else _ioerr())

    def _lose(self, fault: Fault) -> NoReturn:
        """The connection goes away mid-transaction: nothing of it stays, every call fails."""
        self._fault = None
        self._plan.fired(LOST)
        self._conn.close()
        self._lost, self._lost_gone = True, fault.rollback
        self._raise(LOST, _ioerr(SQLITE_IOERR, "SQLITE_IOERR"))

    def _reopen(self) -> None:
        self._conn = sqlite3.connect(self._file, isolation_level=None, check_same_thread=False)
        for pragma in self._pragmas:
            self._conn.execute(pragma)
        self._lost = self._lost_gone = self._reconnect = False


# -- watching a store's background writer ----------------------------------------------------


class RecordingWriter:
    """A :class:`StoreWriter` that records how each of the wrapped writer's commits ended."""

    def __init__(self, inner: StoreWriter, outcomes: list[BaseException | None]) -> None:
        self._inner = inner
        self._outcomes = outcomes

    @property
    def running(self) -> bool:
        return self._inner.running

    def start(self) -> None:
        self._inner.start()

    def write(
        self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()
    ) -> asyncio.Future[StoredCounts]:
        future = self._inner.write(headers, sessions)
        future.add_done_callback(
            lambda f: self._outcomes.append(KintsugiError("cancelled") if f.cancelled() else f.exception())
        )
        return future

    def drain_blocking(self) -> None:
        self._inner.drain_blocking()

    async def close(self) -> None:
        await self._inner.close()

    def close_blocking(self) -> None:
        self._inner.close_blocking()


class RecordingStore:
    """``inner`` as it is, except that its background writer records every commit's outcome
    in :attr:`outcomes` (None for a commit that succeeded, else the error its writer got)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.outcomes: list[BaseException | None] = []

    def background_writer(self) -> StoreWriter:
        return RecordingWriter(self.inner.background_writer(), self.outcomes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def untyped(self) -> list[BaseException]:
        """Failures that were not a typed storage-environment error (each one is a bug)."""
        return [e for e in self.outcomes if e is not None and not isinstance(e, StorageEnvironmentError)]

    def codes(self) -> Counter[str]:
        """How many commits failed with each error code."""
        return Counter(e.code for e in self.outcomes if isinstance(e, KintsugiError))


# -- the check -------------------------------------------------------------------------------

#: Acknowledged transactions by (CoValue, session): each session's acknowledged prefix, as
#: the bytes of its transactions in order.
Acked = dict[tuple[CoValueID, SessionID], Sequence[bytes]]


@dataclass(frozen=True, slots=True)
class Survival:
    """What a store reopened without faults holds of the acknowledged transactions."""

    acked: int
    lost: int
    #: sessions whose stored chain did not verify
    corrupt: list[str]
    #: per (CoValue, session): (acknowledged, stored) counts where something was lost
    missing: dict[tuple[CoValueID, SessionID], tuple[int, int]]


def check_acked(path: str | os.PathLike[str] | Path, acked: Acked) -> Survival:
    """Reopen the store at ``path`` without faults and count the acknowledged transactions it
    does not hold: every CoValue is loaded with the store's verifying load (a session whose
    chain does not verify counts as corrupt and holds nothing), and each acknowledged
    transaction must be there, at its index, byte for byte."""
    store = SQLiteStore(path, readonly=True)
    corrupt: list[str] = []
    missing: dict[tuple[CoValueID, SessionID], tuple[int, int]] = {}
    lost = 0
    try:
        loaded = {}
        for covalue in {c for c, _s in acked}:
            stored = store.load_covalue(covalue)
            loaded[covalue] = stored
            if stored is not None:
                corrupt += [f"{covalue}/{sid}: {err}" for sid, err in stored.corrupt.items()]
        for (covalue, sid), txs in acked.items():
            stored = loaded[covalue]
            log = None if stored is None else stored.sessions.get(sid)
            have = [] if log is None else log.txs
            kept = sum(1 for i, tx in enumerate(txs) if i < len(have) and have[i] == tx)
            if kept < len(txs):
                lost += len(txs) - kept
                missing[(covalue, sid)] = (len(txs), len(have))
    finally:
        store.close()
    return Survival(sum(len(t) for t in acked.values()), lost, corrupt, missing)


# -- seeds -----------------------------------------------------------------------------------


def seeds(default_count: int) -> list[int]:
    """The seeds to run: ``KINTSUGI_FAULT_SEED`` (one seed, to replay a failure), else
    ``KINTSUGI_FAULT_SEEDS`` of them (default ``default_count``), from 0."""
    only = os.environ.get("KINTSUGI_FAULT_SEED")
    if only:
        return [int(only)]
    return list(range(int(os.environ.get("KINTSUGI_FAULT_SEEDS", str(default_count)))))
