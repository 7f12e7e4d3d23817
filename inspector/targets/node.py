"""An in-process :class:`~engine.node.LocalNode`: a node a test or an app hands in, and the
base of the embedded demo (:mod:`inspector.targets.demo`) and of remote nodes seen through an
in-memory replica (:mod:`inspector.targets.remote`).

The node is live: it notifies after every committed change, and the inspector shows the
change after coalescing (see :mod:`inspector.throttle`). A LocalNode is not thread-safe, so
every call into it runs on the loop's thread, and only cheap ones: CoValues the node has
loaded with up to :data:`SYNC_MAX_TRANSACTIONS` transactions are summarized in place. The
others are analysed by the worker process from the node's store (what the node committed,
which is everything it notified about), and their sessions are read from the store by
window; a node without a store is analysed in place whatever the size.

With a :class:`~engine.net.shell.SyncShell` (``shell``), the target also records the shell's
sync events (the ``forked`` badge, the events view) and shows its peers: the
:meth:`~engine.net.shell.SyncShell.peers` rows and the shell's peer log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool

from engine.covalue import CoValueCore
from engine.diagnostics import analysis
from engine.diagnostics.covalue_summary import (
    ContentSnapshot,
    CoValueSummary,
    content_snapshot,
    listing_summaries,
    summarize,
)
from engine.diagnostics.kv_slots import kv_namespaces
from engine.diagnostics.session_rows import LogSessionSource, SessionSource, StoreSessionSource
from engine.errors import KintsugiError
from engine.ids import CoValueID, SessionID
from engine.kv.detail import SlotRow, slot_rows
from engine.kv.store import CASRecord
from engine.model.session_log import SessionLog
from engine.net.shell import SyncShell
from engine.node.facade import ChangeEvent, LocalNode
from engine.sync.events import PeerLogEntry
from engine.sync.peers import PeerInfo
from inspector.targets.base import Target, TargetChange, TargetSpec, Unsubscribe
from inspector.workers import WorkerPool

__all__ = ["SYNC_MAX_TRANSACTIONS", "NodeTarget"]

logger = logging.getLogger(__name__)

#: Loaded CoValues up to this many transactions are summarized on the loop's thread.
SYNC_MAX_TRANSACTIONS = 500
#: Longest stretch (seconds) :meth:`NodeTarget.analyse` works before yielding to the loop.
SLICE_SECONDS = 0.01


class NodeTarget(Target):
    """Inspects ``node``. ``owns_node``: close it with the target. ``shell``: the node's sync
    shell, whose events and peers to show (None: none)."""

    live = True

    def __init__(
        self,
        spec: TargetSpec,
        pool: WorkerPool,
        node: LocalNode | None = None,
        *,
        owns_node: bool = True,
        shell: SyncShell | None = None,
    ) -> None:
        super().__init__(spec, pool)
        self.node = node
        self.shell = shell
        self._owns_node = owns_node
        self._unsubscribe: list[Unsubscribe] = []
        self._listening: SyncShell | None = None

    def _node(self) -> LocalNode:
        if self.node is None:
            raise RuntimeError("target is not open")
        return self.node

    async def open(self) -> None:
        node = self._node()
        self.listen()
        if node.store is not None:
            for summary in listing_summaries(node.store):
                self._put(summary)
        for cid, core in list(node.covalues.items()):
            if cid not in self._summaries:
                self._put(summarize(core, content=False))

    def listen(self) -> None:
        """Start recording the shell's sync events (idempotent; before it syncs, ideally)."""
        if self.shell is not None and self._listening is None:
            self.shell.event_listeners.append(self.recorder)
            self._listening = self.shell

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        shell, self._listening = self._listening, None
        if shell is not None and self.recorder in shell.event_listeners:
            shell.event_listeners.remove(self.recorder)
        node, self.node = self.node, None
        if node is not None and self._owns_node:
            node.close()

    def _in_place(self, cid: CoValueID) -> CoValueCore | None:
        """The node's CoValue if it is cheap (or the only way) to work on it here."""
        node = self._node()
        core = node.covalues.get(cid)
        if node.store is None:
            return node.get_or_none(cid)
        if core is not None and core.transaction_count() <= SYNC_MAX_TRANSACTIONS:
            return core
        return None

    async def _summarize(self, cid: CoValueID) -> bool:
        """Recompute one summary; True when it changed."""
        node = self.node
        if node is None:
            return False
        core = self._in_place(cid)
        summary: CoValueSummary | None
        if core is not None:
            counts = None
            if node.store is not None and core.corrupt:
                counts = {s.session: s.count for s in node.store.stored_sessions(cid)}
            summary = summarize(core, stored_counts=counts)
        elif node.store is not None:
            try:
                summary = await self.pool.run(analysis.analyse, node.store.location, cid, location=node.store.location)
            except (KintsugiError, BrokenProcessPool) as exc:
                logger.warning("analysing %s failed: %s", cid, exc)
                return False
        else:
            summary = None
        if summary is None or self.node is None:
            return False
        return self._put(summary)

    async def analyse(self, on_batch: Callable[[list[CoValueID]], None]) -> None:
        batch: list[CoValueID] = []
        started = time.perf_counter()
        for cid in self.ids():
            if self.node is None:
                return
            if await self._summarize(cid):
                batch.append(cid)
            if time.perf_counter() - started > SLICE_SECONDS:
                if batch:
                    on_batch(batch)
                    batch = []
                await asyncio.sleep(0)
                started = time.perf_counter()
        if batch:
            on_batch(batch)

    async def refresh(self, covalues: Iterable[CoValueID]) -> list[CoValueID]:
        changed = []
        for n, cid in enumerate(covalues):
            if n:
                await asyncio.sleep(0)  # one CoValue per loop turn: each may take ~10 ms in place
            if self.node is not None and await self._summarize(cid):
                changed.append(cid)
        return changed

    async def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        if self.node is None:
            return None
        core = self._in_place(covalue)
        if core is not None:
            return content_snapshot(core)
        store = self._node().store
        if store is None:
            return None
        return await self.pool.run(analysis.content, store.location, covalue, location=store.location)

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        node = self._node()
        core = node.covalues.get(covalue) if node.store is not None else node.get_or_none(covalue)
        if core is not None and session in core.sessions:

            def current() -> SessionLog | None:
                # Looked up on every read: growth, replacement by recovery and a CoValue the
                # node reloaded are all seen.
                held = node.covalues.get(covalue)
                return held.sessions.get(session) if held is not None else None

            return LogSessionSource(covalue, session, current)
        if node.store is not None:
            # Not loaded by the node (loading verifies every chain: too slow here), or a
            # corrupt session that loading left out: read the stored rows.
            source = StoreSessionSource(node.store, covalue, session)
            return source if source.identity() is not None else None
        return None

    def kv_namespaces(self) -> list[str]:
        node = self._node()
        return kv_namespaces(node.store) if node.store is not None else [node.account_id]

    def kv_slots(self, namespace: str) -> list[SlotRow]:
        return slot_rows(namespace, self._node().kv.list(namespace))

    def kv_history(self, namespace: str, key: str) -> list[CASRecord]:
        return self._node().kv.history(namespace, key)

    def peers(self) -> list[PeerInfo] | None:
        return self.shell.peers() if self.shell is not None and self.node is not None else None

    def peer_log(self) -> list[PeerLogEntry] | None:
        return list(self.shell.peer_log) if self.shell is not None else None

    def peers_note(self) -> str:
        return "This node has no sync shell: it neither serves nor syncs, so it has no peers."

    def subscribe(self, callback: Callable[[TargetChange], None]) -> Unsubscribe:
        def forward(event: ChangeEvent) -> None:
            callback(TargetChange(event.covalue, event.kind))

        unsubscribe = self._node().subscribe(forward)
        self._unsubscribe.append(unsubscribe)
        return unsubscribe
