"""The ordered background writer of a PostgreSQL store: its
:class:`~engine.storage.interface.StoreWriter`.

The same contract as the SQLite store's :class:`~engine.storage.sqlite.queue.AsyncStore`: one
connection of its own, writes committed strictly in submission order, the writes waiting
together committed as one group (one transaction, so one WAL flush for many), a write that
fails failing alone (the group is run again with each write in its own savepoint), and a
future resolved on the caller's loop only after the group's COMMIT returned — an
acknowledgement sent from it is durable. At most :data:`MAX_QUEUED_OPERATIONS` writes wait;
beyond that :meth:`write` refuses, so callers apply backpressure instead of growing memory.

How: the writer owns a :class:`~engine.storage.postgres.connection.LoopThread`, and the worker
is a coroutine on that private loop that takes writes from an :class:`asyncio.Queue` there.
:meth:`PostgresWriter.write` (called on the node's loop, in another thread) hands each write
over with ``call_soon_threadsafe``; results go back with the caller loop's
``call_soon_threadsafe``. A group that fails as a whole — the connection lost, the server's
disk full, the COMMIT refused — fails every write of it with the typed error; the next group
opens a new connection.

With an ``origin`` (the store's), each group also records, last in its transaction, the
CoValues its writes changed in the cluster's change log and notifies the other nodes
(:mod:`engine.storage.postgres.feed`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from engine.errors import KintsugiError, StorageBugError, StorageUnavailable, UsageError
from engine.model.header import Header
from engine.storage.interface import SessionWrite, StoredCounts
from engine.storage.postgres.connection import ConnectParams, LoopThread, pg_errors, translate
from engine.storage.postgres.feed import record_changes
from engine.storage.postgres.rows import write_rows

__all__ = ["MAX_GROUP_OPERATIONS", "MAX_QUEUED_OPERATIONS", "PostgresWriter"]

#: Most writes committed in one group (one transaction).
MAX_GROUP_OPERATIONS = 256
#: Most writes waiting; write() beyond it raises (callers apply backpressure).
MAX_QUEUED_OPERATIONS = 10_000

Operation = Callable[[asyncpg.Connection], Awaitable[Any]]
#: An operation, its caller's loop and future, and the CoValue ids it changed (filled as it runs).
_Item = tuple[Operation, asyncio.AbstractEventLoop, "asyncio.Future[Any]", set[str]]
_STOP = object()


class PostgresWriter:
    """Writes to a PostgreSQL store from an asyncio loop, committed in order in groups."""

    def __init__(self, params: ConnectParams, *, origin: str | None = None) -> None:
        self._params = params
        #: names this store instance in the change log (None: changes are not recorded)
        self.origin = origin
        self._loop: LoopThread | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._conn: asyncpg.Connection | None = None
        self._worker: concurrent.futures.Future[None] | None = None
        self._closing = False
        #: CoValues whose header row a committed group wrote or found: no write needs to
        #: insert it again (the store never deletes a CoValue's row)
        self._headers_stored: set[str] = set()
        self._count = threading.Condition()
        self._submitted = 0
        self._finished = 0
        self.groups_committed = 0

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closing

    def start(self) -> None:
        """Open the writer's connection; raises what opening the store raises."""
        if self._loop is not None:
            raise UsageError("PostgresWriter already started")
        loop = LoopThread("kintsugi-postgres-writer")
        try:
            loop.run(self._open())
        except BaseException:
            loop.stop()
            raise
        self._loop = loop
        self._worker = asyncio.run_coroutine_threadsafe(self._work(), loop.loop)

    async def _open(self) -> None:
        self._queue = asyncio.Queue()
        self._conn = await self._params.connect()

    def write(
        self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()
    ) -> asyncio.Future[StoredCounts]:
        """Queue :meth:`Store.write <engine.storage.interface.Store.write>`; the future
        resolves on the calling loop once committed. Raises :class:`UsageError` when not
        running or when :data:`MAX_QUEUED_OPERATIONS` writes wait already."""
        header_list = [h for h in headers if h.covalue_id() not in self._headers_stored]
        session_list = list(sessions)
        changed: set[str] = set()

        async def op(conn: asyncpg.Connection) -> StoredCounts:
            return await write_rows(conn, header_list, session_list, changed=changed)

        future = self.submit(op, changed)
        if header_list:
            ids = [h.covalue_id() for h in header_list]

            def remember(done: asyncio.Future[StoredCounts]) -> None:
                # after the commit, on the caller's loop: a rolled-back insert is not remembered
                if not done.cancelled() and done.exception() is None:
                    self._headers_stored.update(ids)

            future.add_done_callback(remember)
        return future

    def submit(self, op: Operation, changed: set[str] | None = None) -> asyncio.Future[Any]:
        """Queue any operation ``await op(connection)``, run inside the group's transaction
        (its own savepoint); see :meth:`write`. ``changed`` is filled by ``op`` with the ids
        of the CoValues it changed: the group records them in the change log (:mod:`.feed`)
        in its transaction, for the other nodes."""
        if self._loop is None or self._closing:
            raise UsageError("PostgresWriter is not running")
        caller = asyncio.get_running_loop()
        future: asyncio.Future[Any] = caller.create_future()
        with self._count:
            if self._submitted - self._finished >= MAX_QUEUED_OPERATIONS:
                raise UsageError(f"store queue full ({MAX_QUEUED_OPERATIONS} operations)")
            self._submitted += 1
        self._enqueue((op, caller, future, set() if changed is None else changed))
        return future

    def _enqueue(self, item: object) -> None:
        assert self._loop is not None and self._queue is not None
        self._loop.call_soon(self._queue.put_nowait, item)

    def drain_blocking(self) -> None:
        """Block until every write submitted so far has committed (or failed)."""
        with self._count:
            target = self._submitted
            self._count.wait_for(lambda: self._finished >= target or self._worker_gone())

    def _worker_gone(self) -> bool:
        return self._worker is None or self._worker.done()

    async def close(self) -> None:
        """Finish every queued write, then stop."""
        if self._loop is None or self._closing:
            return
        await asyncio.get_running_loop().run_in_executor(None, self.close_blocking)

    def close_blocking(self) -> None:
        """:meth:`close` for callers outside a running loop."""
        loop = self._loop
        if loop is None or self._closing:
            return
        self._closing = True
        self._enqueue(_STOP)
        if self._worker is not None:
            with contextlib.suppress(Exception):  # the worker settles its own failures
                self._worker.result()
        loop.stop()
        self._loop = None

    # -- the worker, on the private loop ---------------------------------------------------

    async def _work(self) -> None:
        assert self._queue is not None
        try:
            stop = False
            while not stop:
                group = [await self._queue.get()]
                while len(group) < MAX_GROUP_OPERATIONS and not self._queue.empty():
                    group.append(self._queue.get_nowait())
                stop = _STOP in group
                items: list[_Item] = [g for g in group if g is not _STOP]
                try:
                    if items:
                        await self._commit_group(items)
                finally:
                    self._finish(len(items))
            # Writes that slipped in behind the stop marker fail instead of hanging.
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not _STOP:
                    _settle(item, False, UsageError("PostgresWriter closed"))
                    self._finish(1)
        finally:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._conn.close(), 5)
                self._conn = None
            self._finish(0)  # wake drain_blocking() even if the worker itself failed

    def _finish(self, n: int) -> None:
        with self._count:
            self._finished += n
            self._count.notify_all()

    async def _commit_group(self, group: list[_Item]) -> None:
        what = f"write {self._params.display}"
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._params.connect()
            conn = self._conn
            with pg_errors(what):
                try:
                    results = await self._attempt(conn, group, what, savepoints=False)
                except _Refused as refused:
                    # Nothing committed. A write alone fails alone; a group runs again with
                    # each write in a savepoint, so the one that fails fails alone.
                    if len(group) == 1:
                        results = [refused.outcome]
                    else:
                        results = await self._attempt(conn, group, what, savepoints=True)
        except Exception as exc:
            error = translate(exc, what)
            results = [(False, error)] * len(group)
        self.groups_committed += 1
        for item, (ok, value) in zip(group, results, strict=True):
            _settle(item, ok, value)

    async def _attempt(
        self, conn: asyncpg.Connection, group: list[_Item], what: str, *, savepoints: bool
    ) -> list[tuple[bool, Any]]:
        """Run the group's writes in one transaction and commit it; their outcomes. Without
        ``savepoints``, the first write that fails raises :class:`_Refused` (nothing is
        committed)."""
        results: list[tuple[bool, Any]] = []
        async with conn.transaction():
            for op, _loop, _future, _changed in group:
                results.append(await self._run_one(conn, op, what, savepoint=savepoints))
            if self.origin is not None:
                ids = set().union(*(item[3] for item, (ok, _v) in zip(group, results, strict=True) if ok))
                await record_changes(conn, ids, self.origin)
        return results

    @staticmethod
    async def _run_one(conn: asyncpg.Connection, op: Operation, what: str, *, savepoint: bool) -> tuple[bool, Any]:
        """Run ``op``: ``(True, result)``, or, in its own ``savepoint``, ``(False, error)``
        with only its own changes rolled back. Without a savepoint its failure raises
        :class:`_Refused` (the caller rolls the transaction back). A full disk, or a failure
        the savepoint cannot be rolled back from (a lost connection), is raised: it fails the
        whole group. Savepoints are not released: the group's commit ends them all, one round
        trip less per write. Writes rarely fail, so a group first runs without savepoints,
        one round trip less per write again."""
        if savepoint:
            await conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            with pg_errors(what):
                value = await op(conn)
        except StorageUnavailable:
            raise
        except KintsugiError as exc:
            outcome: tuple[bool, Any] = (False, exc)
        except Exception as exc:
            outcome = (False, StorageBugError(f"queued write failed: {exc!r}"))
        else:
            return True, value
        if not savepoint:
            raise _Refused(outcome)
        await conn.execute(
            f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}"
        )  # raises (failing the group) when the connection is gone
        return outcome


#: The name of each write's savepoint (a newer one of the same name hides the older).
_SAVEPOINT = "kintsugi_write"


class _Refused(Exception):
    """A write run without a savepoint failed with ``outcome``: the group's transaction rolls
    back."""

    def __init__(self, outcome: tuple[bool, Any]) -> None:
        super().__init__("write refused")
        self.outcome = outcome


def _settle(item: _Item, ok: bool, value: Any) -> None:
    _op, loop, future, _changed = item

    def settle() -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
        loop.call_soon_threadsafe(settle)
