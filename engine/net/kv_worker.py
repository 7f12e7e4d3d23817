"""Answering peers' CAS-slot requests off the event loop (DESIGN §8, §9).

On PostgreSQL every ``kv_get``, ``kv_cas``, ``kv_list`` and ``kv_watch`` is a round trip to
the database, and a ``kv_cas`` waits while another node's transaction holds the slot's row.
On SQLite a ``kv_cas`` is a write transaction ending in an fsync, and waits while another
connection (the node's own writer, another process) holds the file's write lock. Made on the
node's event loop, each would hold up every connection of the node for that long.
:class:`KvWorker` gives the sync manager's CAS service (:mod:`engine.sync.kv_service`) a
connection of its own (:meth:`OwnKVStore.open_kv
<engine.storage.interface.OwnKVStore.open_kv>`) and makes the service's store calls on one
thread of its own:

- A request is checked on the loop (address, access, value size, room for a watch); a
  refusal leaves at once.
- Its one store call is made on the worker's thread, calls strictly one after the other in
  the order the requests came: a slot changes in that order, and a ``kv_watch``'s first page
  and the ``kv_event`` s after it see the changes in that order.
- Its reply and events are built back on the loop, in the same order
  (:meth:`SyncManager.kv_finished <engine.sync.manager.SyncManager.kv_finished>`); a reply to
  a connection that went meanwhile is dropped.

A request that would find :data:`MAX_KV_WAITING` others waiting is refused with
``kv_error{kv_busy}``: a peer that floods the node with requests while the database is slow
does not grow its memory. Requests of CoValue sync never wait on this thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from typing import Any

from engine.errors import KVBusy
from engine.kv.store import KVStore
from engine.net.shell import SyncShell
from engine.storage.interface import OwnKV, OwnKVStore
from engine.sync.kv_service import KvWork

__all__ = ["MAX_KV_WAITING", "KvWorker"]

logger = logging.getLogger(__name__)

#: CAS-slot requests a node keeps waiting for its store at once; one more is refused with
#: ``kv_error{kv_busy}``.
MAX_KV_WAITING = 1_000


class KvWorker:
    """Makes the CAS service's store calls of one node on a thread and connection of their
    own (see the module). :meth:`start` on the node's loop, :meth:`stop` before the store
    closes."""

    def __init__(self, shell: SyncShell, store: OwnKVStore) -> None:
        self.shell = shell
        self.store = store
        #: store calls handed to the thread and not finished on the loop yet
        self.waiting = 0
        self._own: OwnKV | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: KVStore | None = None
        self._stopped = False

    async def start(self) -> None:
        """Open the connection and take over the service's store calls; raises the store's
        typed errors when it cannot connect."""
        self._own = await asyncio.to_thread(self.store.open_kv)
        self._loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kintsugi-kv")
        service = self.shell.manager.kv
        self._previous, service.kv = service.kv, self._own.kv
        self.shell.manager.kv_offload = self._offload

    async def stop(self) -> None:
        """Hand the store calls back to the loop, finish the call under way, close the
        connection. Calls still waiting are dropped: their connections are closing."""
        if self._stopped:
            return
        self._stopped = True
        if self.shell.manager.kv_offload == self._offload and self._previous is not None:
            self.shell.manager.kv_offload = None
            self.shell.manager.kv.kv = self._previous
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._own is not None:
            await asyncio.to_thread(self._own.close)

    def _offload(self, work: KvWork) -> None:
        """On the loop: queue ``work``'s store call (the manager hands requests over in order)."""
        assert self._executor is not None  # installed by start(), taken back by stop()
        if self.waiting >= MAX_KV_WAITING:
            self._finish(work, (False, KVBusy(f"{MAX_KV_WAITING} requests are waiting for the store")))
            return
        self.waiting += 1
        future = self._executor.submit(work.run)
        future.add_done_callback(functools.partial(self._ran, work))

    def _ran(self, work: KvWork, future: concurrent.futures.Future[tuple[bool, Any]]) -> None:
        """On the worker's thread, as each call ends (so in the order they were made)."""
        if future.cancelled() or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            self._loop.call_soon_threadsafe(self._done, work, future.result())

    def _done(self, work: KvWork, outcome: tuple[bool, Any]) -> None:
        self.waiting -= 1
        if not self._stopped:
            self._finish(work, outcome)

    def _finish(self, work: KvWork, outcome: tuple[bool, Any]) -> None:
        self.shell.manager.kv_finished(work, outcome)
        self.shell.schedule_dispatch()
