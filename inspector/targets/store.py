"""A store file opened read-only: what ``kintsugi-inspector PATH`` shows.

Opening only lists the CoValues from the store's tables (:func:`listing_summaries`), so a
store with million-transaction sessions opens at once. Loading a CoValue verifies every
chain and computing its content decodes every transaction, which for a big session takes
seconds: that runs in the worker process (:mod:`engine.diagnostics.analysis`), which opens
the store read-only itself. Windowed session reads for the chain view are fast and stay on
the UI thread's connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from engine.diagnostics import analysis
from engine.diagnostics.covalue_summary import ContentSnapshot, listing_summaries
from engine.diagnostics.kv_slots import kv_namespaces
from engine.diagnostics.session_rows import SessionSource, StoreSessionSource
from engine.errors import KintsugiError, StoreNotFound
from engine.ids import CoValueID, SessionID
from engine.kv.detail import SlotRow, slot_rows
from engine.kv.store import CASRecord
from engine.storage import Store, open_store
from engine.storage.sqlite.store import store_file
from inspector.targets.base import ConnectionState, Target

__all__ = ["BATCH_SECONDS", "StoreTarget", "file_signature"]

logger = logging.getLogger(__name__)

#: Deliver analysis results to the models at most this often (seconds).
BATCH_SECONDS = 0.05


def file_signature(paths: list[str]) -> tuple[tuple[int, int], ...]:
    """Size and modification time of each file (zeros for a missing or empty one: a reader
    creates an empty write-ahead log, which says nothing about the data): a writer that
    commits changes at least one of them."""
    out = []
    for path in paths:
        try:
            st = Path(path).stat()
        except OSError:
            out.append((0, 0))
        else:
            out.append((st.st_size, st.st_mtime_ns) if st.st_size else (0, 0))
    return tuple(out)


class StoreTarget(Target):
    """A read-only snapshot of a store file: :meth:`connection` says when it was read, and
    :meth:`watch_paths` names the files whose change means the snapshot is out of date."""

    store: Store | None = None
    #: When the store was read (wall-clock seconds; None: not open)
    taken_at: float | None = None

    #: :func:`file_signature` of the database and its log just before they were read
    signature: tuple[tuple[int, int], ...] = ()

    async def open(self) -> None:
        self.progress = f"reading {self.spec.location}"
        self.signature = file_signature(self.watch_paths()[:2])
        store = open_store(self.spec.location, readonly=True)
        try:
            if store.version == (0, 0):
                raise StoreNotFound(f"{store.location} is not a Kintsugi store")
            summaries = listing_summaries(store)
        except BaseException:
            store.close()
            raise
        self.store = store
        self.taken_at = time.time()
        self._summaries = {s.id: s for s in summaries}

    def connection(self) -> ConnectionState:
        return ConnectionState("snapshot", taken_at=self.taken_at)

    def watch_paths(self) -> list[str]:
        """The files a writer changes: the database and its write-ahead log (which may not
        exist yet; its folder comes last, so its creation is seen)."""
        db = store_file(self.spec.location)
        return [str(db), f"{db}-wal", str(db.parent)]

    def changed_on_disk(self) -> bool:
        """True when the database or its log changed since this snapshot was read."""
        return file_signature(self.watch_paths()[:2]) != self.signature

    async def close(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            store.close()

    @property
    def path(self) -> str:
        if self.store is None:
            raise RuntimeError("target is not open")
        return self.store.location

    async def analyse(self, on_batch: Callable[[list[CoValueID]], None]) -> None:
        batch: list[CoValueID] = []
        last = time.perf_counter()
        for cid in self.ids():
            if self.store is None:
                return
            try:
                summary = await self.pool.run(analysis.analyse, self.path, cid, location=self.path)
            except (KintsugiError, BrokenProcessPool) as exc:
                # One CoValue that cannot be loaded keeps its listing; the rest go on.
                logger.warning("analysing %s failed: %s", cid, exc)
                continue
            if summary is not None:
                self._put(summary)
                batch.append(cid)
            if batch and time.perf_counter() - last > BATCH_SECONDS:
                on_batch(batch)
                batch, last = [], time.perf_counter()
        if batch:
            on_batch(batch)

    async def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        if self.store is None:
            return None
        return await self.pool.run(analysis.content, self.path, covalue, location=self.path)

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        if self.store is None:
            return None
        source = StoreSessionSource(self.store, covalue, session)
        return source if source.identity() is not None else None

    def kv_namespaces(self) -> list[str]:
        return [] if self.store is None else kv_namespaces(self.store)

    def kv_slots(self, namespace: str) -> list[SlotRow]:
        return [] if self.store is None else slot_rows(namespace, self.store.kv.list(namespace))

    def kv_history(self, namespace: str, key: str) -> list[CASRecord]:
        return [] if self.store is None else self.store.kv.history(namespace, key)
