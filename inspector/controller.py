"""The inspector's controller: the open target, the models over it, and what links them.

:class:`Inspector` opens a target (keeping the previous one if the new one fails), points
every model at it, runs the analysis that fills in the badges, subscribes to live changes
and feeds them through the ``changes`` :class:`~inspector.throttle.Throttle` into batched
model updates, and turns view actions (select a CoValue, select a slot) into engine reads.
Sync events (forks, corrections) go through the ``events`` throttle into the events model
and the ``forked`` badge; what the engine does not notify about (peers, a remote node's new
CoValues and CAS slots) is read by the ``poll`` :class:`~inspector.periodic.Periodic`
refresh, once a second. The anomalies (``anomalies``) are recomputed once the target is
analysed, after live changes, sync events and every poll; the peers × sessions matrix
(``matrix``) follows the selected CoValue and the poll; the audit log (``audit``) is read and
verified when the target opens and after replaced CoValues (a recovery), or on request.

Views never reach the engine: they get models, and call :meth:`Inspector.select_covalue`
and friends. Background work is asyncio tasks owned here; :meth:`Inspector.close` cancels
and awaits them, stops the throttle and closes the target, so nothing outlives it.

Signals: ``connecting(str)`` (label of a target being opened: :attr:`Inspector.opening` is it
until ``opened`` or ``failed``), ``opened(str)`` (target label), ``failed(str, str)`` (code, message for the
window), ``warned(str, str)`` (code, message: the target opened but something deserves
attention, e.g. version skew), ``loaded(dict)`` (the counts of the ``loaded`` event),
``selected(str)`` (CoValue id), ``contentLoaded(str)`` (CoValue id whose content model is
filled), ``changesApplied(int)``, ``eventsApplied(int)`` (CoValues with new sync events),
``forkDetected(str, str)`` (CoValue id, session or ''), ``polled(int)`` (poll refreshes so
far).

``--log-json`` events written here: ``opened`` (with the node's name and version),
``version_skew``, ``loaded`` (counts, ``forked`` included), ``fork`` (one per forked session
of a CoValue, as first seen), ``peers`` (connected, and for a node with a peer log its
disconnections and lagged closes, whenever those counts change), ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Hashable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine import __version__
from engine.diagnostics.bundle_logs import install_log_ring
from engine.diagnostics.covalue_summary import Badge
from engine.ids import CoValueID
from engine.sync.events import FORK_KINDS
from inspector.addressbook import FILE_NAME, AddressBook, AddressBookError
from inspector.eventlog import EventLog
from inspector.lag import LoopLagMonitor
from inspector.models.anomalies import AnomaliesModel
from inspector.models.audit import AuditModel
from inspector.models.cluster import ClusterModel
from inspector.models.content import ContentModel, TombstonesModel
from inspector.models.covalues import CoValueFilterModel, CoValueListModel
from inspector.models.events import SyncEventsModel
from inspector.models.kv import CasSlotsModel, CasTimelineModel, KvTreeModel
from inspector.models.lanes import LanesModel
from inspector.models.matrix import MatrixModel
from inspector.models.peers import PeerLogModel, PeersModel
from inspector.periodic import DEFAULT_PERIOD_MS, Periodic
from inspector.recent import RecentTargets
from inspector.targets import Target, TargetChange, TargetSpec, TimedEvent, describe_error, make_target
from inspector.throttle import DEFAULT_INTERVAL_MS, Throttle
from inspector.verification import VerificationRunner
from inspector.workers import WorkerPool

__all__ = ["Inspector"]

logger = logging.getLogger(__name__)


def _nothing() -> None:
    return None


class Inspector(QObject):
    connecting = Signal(str)
    opened = Signal(str)
    failed = Signal(str, str)
    warned = Signal(str, str)
    loaded = Signal(dict)
    selected = Signal(str)
    contentLoaded = Signal(str)
    changesApplied = Signal(int)
    eventsApplied = Signal(int)
    forkDetected = Signal(str, str)
    polled = Signal(int)

    def __init__(
        self,
        *,
        events: EventLog | None = None,
        recent: RecentTargets | None = None,
        monitor: LoopLagMonitor | None = None,
        pool: WorkerPool | None = None,
        addressbook: AddressBook | None = None,
        throttle_ms: int = DEFAULT_INTERVAL_MS,
        poll_ms: int = DEFAULT_PERIOD_MS,
        parent: QObject | None = None,
    ) -> None:
        """``pool``: the worker process pool to use (not closed here); None: one of its own.
        ``throttle_ms``: coalescing window of changes and events; ``poll_ms``: period of the
        refresh of peers and of what a remote node does not push. ``addressbook``: the
        operator's names for accounts; None: the one beside ``recent``'s settings file (an
        unreadable one is replaced by an empty book, its error in ``addressbook_error``), or
        one in memory without ``recent``."""
        super().__init__(parent)
        self.setObjectName("kintsugi.inspector")
        self.events = events or EventLog()
        self.recent = recent
        self.monitor = monitor
        #: why the address book file could not be read ('' when it could)
        self.addressbook_error = ""
        if addressbook is None and recent is not None:
            path = Path(recent.settings.fileName()).parent / FILE_NAME
            try:
                addressbook = AddressBook.load(path)
            except AddressBookError as exc:
                self.addressbook_error = exc.detail
                addressbook = AddressBook(path)
        self.addressbook = addressbook or AddressBook()
        self.runner = VerificationRunner()
        self.pool = pool or WorkerPool()
        self._owns_pool = pool is None
        self.target: Target | None = None
        #: the target being opened (its ``progress`` says how far), None when not opening
        self.opening: Target | None = None
        self.selected_covalue: CoValueID | None = None
        self.selected_slot: tuple[str, str] | None = None
        self.covalues = CoValueListModel(self)
        self.navigator = CoValueFilterModel(self.covalues, self)
        self.lanes = LanesModel(self.runner, self)
        self.content = ContentModel(self)
        self.tombstones = TombstonesModel(self)
        self.kv_tree = KvTreeModel(self)
        self.cas_slots = CasSlotsModel(self)
        self.cas_timeline = CasTimelineModel(self)
        self.peers = PeersModel(self)
        self.peer_log = PeerLogModel(self)
        self.sync_events = SyncEventsModel(self)
        self.anomalies = AnomaliesModel(self)
        self.matrix = MatrixModel(self)
        self.cluster = ClusterModel(self)
        self.audit = AuditModel(self)
        install_log_ring()  # so a bundle exported later carries the embedded node's log lines
        self.throttle = Throttle("changes", self._apply_changes, throttle_ms, parent=self)
        self.event_throttle = Throttle("events", self._apply_events, throttle_ms, parent=self)
        self.poller = Periodic("poll", self._poll_tick, poll_ms, parent=self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] = _nothing
        self._unsubscribe_events: Callable[[], None] = _nothing
        self._polling: asyncio.Task[Any] | None = None
        self._forks_logged: set[tuple[str, str | None]] = set()
        self._peer_counts: dict[str, int] | None = None
        self._content_request = 0
        self._pending: dict[CoValueID, set[str]] = {}
        self._applying: asyncio.Task[Any] | None = None
        self.is_loaded = False

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start background work; call once the loop runs."""
        self.runner.start()
        self.pool.warm_up()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task this controller owns (cancelled by :meth:`close`)."""
        task = asyncio.get_running_loop().create_task(coro, name=f"kintsugi.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        """Cancel background work, close the target. Idempotent."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.throttle.stop()
        self.event_throttle.stop()
        self.poller.stop()
        await self.runner.stop()
        await self._close_target()
        if self._owns_pool:
            await self.pool.close()

    async def _close_target(self) -> None:
        self._unsubscribe()
        self._unsubscribe = _nothing
        self._unsubscribe_events()
        self._unsubscribe_events = _nothing
        self.throttle.stop()
        self.event_throttle.stop()
        self.poller.stop()
        polling, self._polling = self._polling, None
        if polling is not None and not polling.done():
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
        self._forks_logged.clear()
        self._peer_counts = None
        self._pending.clear()
        self.runner.clear()
        target, self.target = self.target, None
        self.is_loaded = False
        self.selected_covalue = None
        self.selected_slot = None
        for model in self._target_models():
            model.set_target(None)
        self.lanes.clear()
        self.content.set_content(None)
        self.cas_timeline.set_slot(None, None, None)
        if target is not None:
            await target.close()

    # -- opening -------------------------------------------------------------------------

    def open_later(self, spec: TargetSpec) -> asyncio.Task[Any]:
        return self.spawn(self.open(spec), "open")

    async def open(self, spec: TargetSpec, target: Target | None = None) -> bool:
        """Open ``spec`` (or the given unopened ``target``) and analyse it.

        On failure the previous target stays open, ``failed`` is emitted and an ``error``
        event logged; returns False. On success emits ``opened`` and, once every CoValue is
        analysed, ``loaded`` (and logs the ``loaded`` event).
        """
        target = target or make_target(spec, self.pool)
        self.opening = target
        self.connecting.emit(spec.label)
        try:
            await target.open()
        except Exception as exc:
            self.opening = None
            code, message = describe_error(exc)
            if code == "internal":
                logger.error("opening %s failed", spec.label, exc_info=exc)
            with contextlib.suppress(Exception):
                await target.close()
            self.events.emit("error", code=code, detail=message, target=spec.label)
            self.failed.emit(code, message)
            return False
        finally:
            if self.opening is target:
                self.opening = None
        await self._close_target()
        self.target = target
        for model in self._target_models():
            model.set_target(target)
        if target.live:
            self._unsubscribe = target.subscribe(self._on_change)
            self._unsubscribe_events = target.recorder.subscribe(self._on_sync_event)
            self.poller.start()
        if self.recent is not None and spec.kind != "bundle":  # the connect dialog lists no bundles
            self.recent.add(spec)
        info = target.node_info
        self.events.emit("opened", target=spec.label, kind=spec.kind, node=info.to_json() if info else None)
        self.opened.emit(spec.label)
        if info is not None and info.skewed:
            message = (
                f"{info.name} runs Kintsugi {info.version}, this inspector {__version__}: "
                "what it reports may not mean exactly what this inspector shows"
            )
            self.events.emit("version_skew", node=info.name, node_version=info.version, inspector_version=__version__)
            self.warned.emit("version_skew", message)
        self._log_forks()  # forks seen while the target opened (the embedded demo's story)
        try:
            await target.analyse(self._on_analysed)
        except Exception as exc:
            # The target is open and listed; only the badges that need analysis are missing.
            code, message = describe_error(exc)
            logger.error("analysing %s failed", spec.label, exc_info=exc)
            self.events.emit("error", code=code, detail=f"analysis failed: {message}", target=spec.label)
            self.failed.emit(code, f"analysis failed: {message}")
            return False
        self.is_loaded = True
        self.anomalies.refresh()
        self.matrix.refresh()
        stats = target.stats()
        self.events.emit("loaded", **stats)
        self.loaded.emit(stats)
        self._report_peers()
        return True

    def _target_models(self) -> tuple[Any, ...]:
        """The models that follow the open target (``set_target`` each)."""
        return (
            self.covalues,
            self.tombstones,
            self.kv_tree,
            self.cas_slots,
            self.peers,
            self.peer_log,
            self.sync_events,
            self.anomalies,
            self.matrix,
            self.cluster,
            self.audit,
        )

    def _on_analysed(self, covalues: list[CoValueID]) -> None:
        self.covalues.update(covalues)
        self.tombstones.refresh()
        if self.selected_covalue in covalues:
            self.lanes.refresh()

    # -- live changes --------------------------------------------------------------------

    def _on_change(self, change: TargetChange) -> None:
        # Called synchronously by the engine after each commit: only record it here.
        self.throttle.push(change.covalue, change.kind)

    def _apply_changes(self, batch: dict[Hashable, set[str]]) -> None:
        # The throttle fired. Summaries of big CoValues are computed off the loop's thread,
        # so applying is a task; batches that arrive meanwhile are merged and applied next.
        for cid, kinds in batch.items():
            self._pending.setdefault(CoValueID(str(cid)), set()).update(kinds)
        if self._applying is None or self._applying.done():
            self._applying = self.spawn(self._apply_pending(), "apply")

    async def _apply_pending(self) -> None:
        while self._pending and self.target is not None:
            target = self.target
            pending, self._pending = self._pending, {}
            covalues = list(pending)
            try:
                changed = await target.refresh(covalues)
            except Exception as exc:  # keep following later changes
                logger.warning("refreshing %d CoValues failed: %s", len(covalues), exc)
                continue
            if target is not self.target:
                return
            self.covalues.update(changed)
            self.tombstones.refresh()
            selected = self.selected_covalue
            if selected in pending:
                self.lanes.refresh()
                try:
                    content = await target.content(selected)
                except Exception as exc:
                    logger.warning("content of %s could not be computed: %s", selected, exc)
                else:
                    if target is self.target and selected == self.selected_covalue:
                        self.content.update_content(content)
            self.kv_tree.refresh()
            self.cas_slots.refresh()
            self.cas_timeline.refresh()
            if self.is_loaded:
                self.anomalies.refresh()
            if any("replaced" in kinds for kinds in pending.values()):
                self.audit.refresh()  # a recovery replaces CoValues and appends to the log
            self.changesApplied.emit(len(covalues))

    # -- sync events ---------------------------------------------------------------------

    def _on_sync_event(self, timed: TimedEvent) -> None:
        # Called synchronously from the sync manager: only record it here.
        self.event_throttle.push(timed.event.covalue, timed.event.kind)

    def _apply_events(self, batch: dict[Hashable, set[str]]) -> None:
        target = self.target
        if target is None:
            return
        self.sync_events.refresh()
        forked = [
            CoValueID(str(cid))
            for cid, kinds in batch.items()
            if kinds & FORK_KINDS and target.summary(CoValueID(str(cid))) is not None
        ]
        if self.is_loaded:
            self.anomalies.refresh()
        if forked:
            self.covalues.update(forked)
            self._log_forks()
            if self.selected_covalue in forked:
                self.changesApplied.emit(0)  # the chain heading lists the badges
        self.eventsApplied.emit(len(batch))

    def _log_forks(self) -> None:
        """A ``fork`` event (and ``forkDetected``) for each forked session not reported yet."""
        target = self.target
        if target is None:
            return
        for timed in target.recorder.recent():
            event = timed.event
            key = (str(event.covalue), event.session)
            if not timed.is_fork or key in self._forks_logged:
                continue
            self._forks_logged.add(key)
            self.events.emit(
                "fork",
                covalue=event.covalue,
                session=event.session,
                kind=event.kind,
                peer=event.peer,
                detail=event.detail,
            )
            self.forkDetected.emit(event.covalue, event.session or "")

    # -- periodic refresh ------------------------------------------------------------------

    def _poll_tick(self) -> None:
        if self.target is None or (self._polling is not None and not self._polling.done()):
            return  # the previous refresh is still waiting for the node: skip a beat
        self._polling = self.spawn(self._poll(self.target), "poll")

    async def _poll(self, target: Target) -> None:
        await target.poll()
        if target is not self.target:
            return
        self.peers.refresh()
        self.peer_log.refresh()
        self.matrix.refresh()
        self.cluster.refresh()
        # CAS writes do not notify: pick them up here too (only emits when they changed)
        self.kv_tree.refresh()
        self.cas_slots.refresh()
        self.cas_timeline.refresh()  # a lost race changes a history, not a generation
        if self.is_loaded:
            self._report_peers()
            self.anomalies.refresh()  # peers, lost races and sync events change without a notice
        self.polled.emit(self.poller.ticks)

    def _report_peers(self) -> None:
        """Log the ``peers`` counts when they changed since the last report."""
        target = self.target
        peers = target.peers() if target is not None else None
        if peers is None:
            return
        counts = {"connected": len(peers)}
        if self.peer_log.available:
            log = self.peer_log.counts()
            counts.update(down=log["down"], lagged=log["lagged"])
        if counts != self._peer_counts:
            self._peer_counts = counts
            self.events.emit("peers", **counts)

    # -- view actions --------------------------------------------------------------------

    def select_covalue(self, covalue: str | None) -> None:
        """Show ``covalue``'s lanes now and its content once loaded (None: nothing)."""
        cid = CoValueID(covalue) if covalue else None
        if cid == self.selected_covalue:
            return
        self.selected_covalue = cid
        self.lanes.set_covalue(self.target, cid)
        self.matrix.set_covalue(cid)
        self._content_request += 1
        self.content.set_content(None)
        if cid is not None and self.target is not None:
            self.spawn(self._load_content(cid, self._content_request), "content")
        self.selected.emit(cid or "")

    async def _load_content(self, covalue: CoValueID, request: int) -> None:
        target = self.target
        if target is None:
            return
        try:
            content = await target.content(covalue)
        except Exception as exc:  # the worker failed: the lanes still show, the content not
            logger.warning("content of %s could not be computed: %s", covalue, exc)
            content = None
        if request == self._content_request and target is self.target:
            self.content.set_content(content)
            self.contentLoaded.emit(covalue)

    def select_slot(self, namespace: str | None, key: str | None) -> None:
        self.selected_slot = (namespace, key) if namespace is not None and key is not None else None
        self.cas_timeline.set_slot(self.target, namespace, key)

    def first_with(self, badge: Badge) -> CoValueID | None:
        """The first CoValue carrying ``badge`` (for the screenshot and tests)."""
        target = self.target
        if target is None:
            return None
        for cid in target.ids():
            summary = target.summary(cid)
            if summary is not None and badge in summary.badges:
                return cid
        return None

    @property
    def busy(self) -> bool:
        """True while verification, content loading or applying changes is going on (opening
        a target and the periodic refresh do not count)."""
        return not self.runner.idle or self.throttle.active or bool(self._tasks - self._background_tasks())

    def _background_tasks(self) -> set[asyncio.Task[Any]]:
        return {t for t in self._tasks if t.get_name() in ("kintsugi.open", "kintsugi.poll")}
