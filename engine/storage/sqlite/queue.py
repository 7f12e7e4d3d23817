"""The ordered async write queue over a :class:`SQLiteStore` (DESIGN §9).

One worker thread owns its own store connection and runs operations strictly in submission
order, so a replace submitted after some appends is applied after them. Operations waiting
together are committed as one group (one fsync for many writes); each runs in its own
savepoint, so one failing operation rolls back alone and fails only its own future. A future
resolves after the group's COMMIT: an acknowledgement sent from it is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engine.errors import KintsugiError, StorageBugError, UsageError
from engine.storage.sqlite.kv import sqlite_errors
from engine.storage.sqlite.store import SQLiteStore

T = TypeVar("T")

#: Most operations committed in one group.
MAX_GROUP_OPERATIONS = 256
#: Most operations waiting in the queue; submit() beyond it raises (callers apply backpressure).
MAX_QUEUED_OPERATIONS = 10_000

Operation = Callable[[SQLiteStore, Any], Any]
_STOP = object()


class AsyncStore:
    """Submit store operations from an asyncio loop; they run in order on one worker thread.

    ``op(store, conn)`` runs inside the group's write transaction; use the store's ``*_rows``
    methods there, never ones that open their own transaction.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL", writer: str | None = None) -> None:
        self._path = path
        self._synchronous = synchronous
        self._writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUED_OPERATIONS)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._closing = False
        self.groups_committed = 0

    def start(self) -> None:
        if self._thread is not None:
            raise UsageError("AsyncStore already started")
        self._thread = threading.Thread(target=self._run, name="kintsugi-store", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise self._open_error

    def submit(self, op: Callable[[SQLiteStore, Any], T]) -> asyncio.Future[T]:
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
            store = SQLiteStore(self._path, synchronous=self._synchronous, writer=self._writer)
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
                        self._commit_group(store, group)
                finally:
                    for _ in range(len(group) + stop):
                        self._queue.task_done()
        finally:
            store.close()
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

    def _commit_group(self, store: SQLiteStore, group: list[Any]) -> None:
        results: list[tuple[bool, Any]] = []
        try:
            with store.transaction() as conn:
                for op, _loop, _future in group:
                    conn.execute("SAVEPOINT op")
                    try:
                        with sqlite_errors("queued write"):
                            value = op(store, conn)
                    except KintsugiError as exc:
                        conn.execute("ROLLBACK TO op")
                        results.append((False, exc))
                    except Exception as exc:
                        conn.execute("ROLLBACK TO op")
                        results.append((False, StorageBugError(f"queued write failed: {exc!r}")))
                    else:
                        results.append((True, value))
                    conn.execute("RELEASE op")
        except KintsugiError as exc:
            results = [(False, exc)] * len(group)
        self.groups_committed += 1
        for (_op, loop, future), (ok, value) in zip(group, results, strict=True):
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, ok, value)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
