"""The ordered async write queue of a SQLite store (DESIGN §9): its
:class:`~engine.storage.interface.StoreWriter`.

One worker thread owns its own connection to the store file and runs operations strictly in
submission order, so a replace submitted after some appends is applied after them.
Operations waiting together are committed as one group (one fsync for many writes); each runs
in its own savepoint, so one failing operation rolls back alone and fails only its own
future. A future resolves after the group's COMMIT: an acknowledgement sent from it is
durable. At most :data:`MAX_QUEUED_OPERATIONS` wait; beyond that :meth:`AsyncStore.submit`
refuses, so callers apply backpressure instead of growing memory.

A full disk fails the whole group with :class:`~engine.errors.StorageUnavailable` (SQLite may
have rolled the group's transaction back by itself, so no operation of it is kept). The cause
is logged once, clearly, when the store becomes unavailable, and once more when a later group
commits again (space returned); :attr:`AsyncStore.unavailable` says which state holds, so
the layers above can tell writers instead of leaving them waiting. Reads on other
connections go on all along: WAL readers need no new disk space.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from engine.errors import KintsugiError, StorageBugError, StorageUnavailable, UsageError
from engine.model.header import Header
from engine.storage.interface import SessionWrite, StoredCounts
from engine.storage.sqlite.connection import DEFAULT_SYNCHRONOUS, ConnectionWrapper, connect, transaction
from engine.storage.sqlite.kv import sqlite_errors
from engine.storage.sqlite.rows import write_rows

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Most operations committed in one group.
MAX_GROUP_OPERATIONS = 256
#: Most operations waiting in the queue; submit() beyond it raises (callers apply backpressure).
MAX_QUEUED_OPERATIONS = 10_000

#: An operation: called on the worker thread with the connection, inside the group's
#: transaction (and its own savepoint); what it returns resolves its future.
Operation = Callable[[sqlite3.Connection], Any]
_STOP = object()


class AsyncStore:
    """Submit store operations from an asyncio loop; they run in order on one worker thread.

    ``op(conn)`` runs inside the group's write transaction; use the functions of
    :mod:`engine.storage.sqlite.rows` there, never anything that opens its own transaction.
    ``wrap`` receives the worker's connection once opened
    (:data:`~engine.storage.sqlite.connection.ConnectionWrapper`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = DEFAULT_SYNCHRONOUS,
        wrap: ConnectionWrapper | None = None,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._wrap = wrap
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED_OPERATIONS)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._closing = False
        self.groups_committed = 0
        #: the error of the last group when the disk was full; None once a group commits
        self.unavailable: StorageUnavailable | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise UsageError("AsyncStore already started")
        self._thread = threading.Thread(target=self._run, name="kintsugi-store", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise self._open_error

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``op``; the future resolves (on the calling loop) after its group commits.

        Raises :class:`UsageError` before :meth:`start` and once :meth:`close` has begun.
        """
        if self._thread is None or self._closing:
            raise UsageError("AsyncStore is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        try:
            self._queue.put_nowait((op, loop, future))
        except queue.Full as exc:
            raise UsageError(f"store queue full ({MAX_QUEUED_OPERATIONS} operations)") from exc
        return future

    def write(
        self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()
    ) -> asyncio.Future[StoredCounts]:
        """Queue headers and session appends as one operation (see :meth:`submit`)."""
        header_list, session_list = list(headers), list(sessions)
        return self.submit(lambda conn: write_rows(conn, header_list, session_list))

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._closing

    def drain_blocking(self) -> None:
        """Block until every operation submitted so far has committed (or failed).

        Their futures are settled on their loops afterwards, when those loops run again.
        """
        if self._thread is not None:
            self._queue.join()

    async def close(self) -> None:
        """Finish every queued operation, then stop the worker and close its connection."""
        if self._thread is None or self._closing:
            return
        self._closing = True
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def close_blocking(self) -> None:
        """:meth:`close` for callers outside a running loop (or that may block it briefly)."""
        if self._thread is None or self._closing:
            return
        self._closing = True
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    # -- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn, file, _version = connect(self._path, synchronous=self._synchronous, wrap=self._wrap)
        except BaseException as exc:
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            stop = False
            while not stop:
                group = [self._queue.get()]
                while len(group) < MAX_GROUP_OPERATIONS:
                    try:
                        group.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if _STOP in group:
                    stop = True
                    group = [item for item in group if item is not _STOP]
                try:
                    if group:
                        self._commit_group(conn, f"write {file}", group)
                finally:
                    for _ in range(len(group) + stop):
                        self._queue.task_done()
        finally:
            conn.close()
            self._fail_leftovers()

    def _fail_leftovers(self) -> None:
        """Operations that slipped in behind the stop marker fail instead of hanging."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                _op, loop, future = item
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, future, False, UsageError("AsyncStore closed"))
            self._queue.task_done()

    def _commit_group(self, conn: sqlite3.Connection, what: str, group: list[Any]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            with transaction(conn, what):
                for op, _loop, _future in group:
                    results.append(self._run_one(conn, op))
        except KintsugiError as exc:
            results = [(False, exc)] * len(group)
            if isinstance(exc, StorageUnavailable):
                self._became_unavailable(exc)
        else:
            self._became_available()
        self.groups_committed += 1
        for (_op, loop, future), (ok, value) in zip(group, results, strict=True):
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, ok, value)

    @staticmethod
    def _run_one(conn: sqlite3.Connection, op: Operation) -> tuple[bool, Any]:
        """Run ``op`` in its own savepoint: ``(True, result)``, or ``(False, error)`` with only
        its own changes rolled back. A full disk is raised instead: it fails the whole group."""
        conn.execute("SAVEPOINT op")
        try:
            with sqlite_errors("queued write"):
                value = op(conn)
        except StorageUnavailable:
            raise
        except KintsugiError as exc:
            outcome: tuple[bool, Any] = (False, exc)
        except Exception as exc:
            outcome = (False, StorageBugError(f"queued write failed: {exc!r}"))
        else:
            conn.execute("RELEASE op")
            return True, value
        if not conn.in_transaction:  # SQLite rolled the whole group back: it fails as one
            raise outcome[1]
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return outcome

    def _became_unavailable(self, exc: StorageUnavailable) -> None:
        if self.unavailable is None:
            logger.error(
                "store %s: the disk is full; writes are refused until space returns (reads go on): %s",
                self._path,
                exc.detail,
            )
        self.unavailable = exc

    def _became_available(self) -> None:
        if self.unavailable is not None:
            logger.warning("store %s: disk space returned; writes resumed", self._path)
        self.unavailable = None


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
