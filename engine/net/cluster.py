"""A served node's place in its cluster: registering in the store's node registry, a
heartbeat every :data:`DEFAULT_HEARTBEAT_INTERVAL` seconds, and the report the admin op
``cluster`` answers with (:class:`~engine.sync.cluster.ClusterReport`).

:class:`ClusterMonitor` registers the node when it starts serving, then beats: each heartbeat
writes the node's peers (count, and compact rows) and, when the node knows them, its change
cursor and lag behind the database; it then reads every node's row, which the report answers
from. So an admin request never waits for the database: the report is what the last
heartbeat read, its ages advanced by the time since. The registry is reached through its own
connection, on a worker thread, so the event loop never blocks on it. A heartbeat that fails
(the database unreachable for a moment) is logged and tried again at the next interval; the
report then says since when the registry could not be read. On a clean stop the node
unregisters; a node that dies without stopping stays in the registry, and counts as gone once
it missed :data:`~engine.storage.interface.GONE_AFTER_MISSED_BEATS` heartbeats.

A store that is not shared (SQLite, not a
:class:`~engine.storage.interface.ClusterStore`) makes a cluster of one: the report is this
node alone, from its live figures (``shared: false``), and nothing beats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from engine.errors import KintsugiError
from engine.net.shell import SyncShell
from engine.storage.interface import (
    GONE_AFTER_MISSED_BEATS,
    ClusterRegistry,
    ClusterStore,
    NodeBeat,
    NodeRecord,
    NodeRegistration,
)
from engine.sync.cluster import ClusterNode, ClusterReport, compact_peer_row

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "ClusterMonitor", "Position", "node_instance_id"]

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of a node (``node serve --heartbeat``): with
#: :data:`~engine.storage.interface.GONE_AFTER_MISSED_BEATS` at 3, a node that died shows as
#: gone within about 15 s.
DEFAULT_HEARTBEAT_INTERVAL = 5.0

#: Reports the node's change cursor in the database and its lag behind the newest change
#: (``(None, None)``: not known).
Position = Callable[[], tuple[int | None, int | None]]


def node_instance_id() -> str:
    """This process's id in the registry: host name and process id (several nodes of one
    account, on one host or many, each have their own row)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ClusterMonitor:
    """Registers ``shell``'s node at ``url`` in its store's registry and keeps it beating every
    ``interval`` seconds (:meth:`start`, :meth:`stop`); :meth:`report` answers ``cluster``.
    ``position``, when given, is asked at each heartbeat for the cursor and lag to report."""

    def __init__(
        self,
        shell: SyncShell,
        *,
        url: str,
        interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        node_id: str | None = None,
        position: Position | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("a heartbeat interval is more than 0 seconds")
        self.shell = shell
        self.interval = interval
        self.position = position
        self.registration = NodeRegistration(
            node_id or node_instance_id(), str(shell.node.account_id), url, max(1, round(interval * 1000))
        )
        store = shell.node.store
        self._store: ClusterStore | None = store if isinstance(store, ClusterStore) else None
        self.registry: ClusterRegistry | None = None
        self._task: asyncio.Task[None] | None = None
        self._started_ms = _now_ms()
        #: the rows of the last successful read, and when (time.monotonic()) it was made
        self._rows: list[NodeRecord] = []
        self._read_at = 0.0
        #: why the registry could not be read lately, and since when (wall clock, ms)
        self._failure: tuple[str, int] | None = None

    @property
    def shared(self) -> bool:
        """True when the node's store keeps a registry (other nodes may share it)."""
        return self._store is not None

    async def start(self) -> None:
        """Register (raises the storage errors when the registry cannot be reached: a node
        that cannot register should not pretend to be part of the cluster) and start beating."""
        if self._store is None:
            return
        store = self._store
        self.registry = await asyncio.to_thread(store.cluster_registry)
        try:
            await asyncio.to_thread(self.registry.register, self.registration)
            await self._read()
        except BaseException:
            await asyncio.to_thread(self.registry.close)
            self.registry = None
            raise
        self._task = asyncio.get_running_loop().create_task(self._beat_forever(), name="kintsugi-heartbeat")

    async def stop(self) -> None:
        """Stop beating and unregister (a failure to is logged: the row then goes as a gone
        node's would)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        registry, self.registry = self.registry, None
        if registry is None:
            return
        try:
            await asyncio.to_thread(registry.unregister, self.registration.node)
        except KintsugiError as exc:
            logger.warning("could not unregister node %s from the cluster: %s", self.registration.node, exc)
        finally:
            await asyncio.to_thread(registry.close)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()

    async def beat(self) -> None:
        """One heartbeat and a fresh read of the registry; a failure is logged and kept for the
        report, never raised."""
        registry = self.registry
        if registry is None:
            return
        beat = self._beat()
        try:
            await asyncio.to_thread(registry.heartbeat, self.registration, beat)
            await self._read()
        except KintsugiError as exc:
            if self._failure is None:
                self._failure = (str(exc), _now_ms())
            logger.warning("node heartbeat failed; trying again in %.1f s: %s", self.interval, exc)

    async def _read(self) -> None:
        assert self.registry is not None
        rows = await asyncio.to_thread(self.registry.nodes)
        self._rows, self._read_at, self._failure = rows, time.monotonic(), None

    def _beat(self) -> NodeBeat:
        rows = [info.to_json() for info in self.shell.peers()]
        cursor, lag = self.position() if self.position is not None else (None, None)
        return NodeBeat(len(rows), [compact_peer_row(row) for row in rows], cursor, lag)

    def report(self) -> ClusterReport:
        """The cluster as last read, ages advanced to now (a cluster of one without a
        registry)."""
        me = self.registration
        if self._store is None:
            beat = self._beat()
            now = _now_ms()
            alone = ClusterNode(
                me.node,
                me.account,
                me.url,
                True,
                self._started_ms,
                now,
                0,
                me.interval_ms,
                beat.peers,
                tuple(beat.peer_rows),
                beat.cursor,
                beat.lag,
                this=True,
            )
            return ClusterReport(me.node, False, (alone,), "this node's store is not shared: the cluster is this node")
        since = max(0, round((time.monotonic() - self._read_at) * 1000))
        nodes = tuple(_node(row, since, row.node == me.node) for row in self._rows)
        note = ""
        if self._failure is not None:
            why, at = self._failure
            note = f"the node registry could not be read for {(_now_ms() - at) / 1000:.0f} s ({why}); rows as last read"
        return ClusterReport(me.node, True, nodes, note)


def _node(row: NodeRecord, since_ms: int, this: bool) -> ClusterNode:
    age = row.age_ms + since_ms
    return ClusterNode(
        row.node,
        row.account,
        row.url,
        age <= row.interval_ms * GONE_AFTER_MISSED_BEATS,
        row.started_ms,
        row.beat_ms,
        age,
        row.interval_ms,
        row.peers,
        row.peer_rows,
        row.cursor,
        row.lag,
        this=this,
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
