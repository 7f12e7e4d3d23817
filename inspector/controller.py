"""The inspector's controller: the open target, the models over it, and what links them.

:class:`Inspector` opens a target (keeping the previous one if the new one fails), points
every model at it, runs the analysis that fills in the badges, subscribes to live changes
and feeds them through the ``changes`` :class:`~inspector.throttle.Throttle` into batched
model updates, and turns view actions (select a CoValue, select a slot) into engine reads.

Views never reach the engine: they get models, and call :meth:`Inspector.select_covalue`
and friends. Background work is asyncio tasks owned here; :meth:`Inspector.close` cancels
and awaits them, stops the throttle and closes the target, so nothing outlives it.

Signals: ``opened(str)`` (target label), ``failed(str, str)`` (code, message for the
window), ``loaded(dict)`` (the counts of the ``loaded`` event), ``selected(str)`` (CoValue
id), ``contentLoaded(str)`` (CoValue id whose content model is filled), ``changesApplied(int)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.diagnostics.covalue_summary import Badge
from engine.ids import CoValueID
from inspector.eventlog import EventLog
from inspector.lag import LoopLagMonitor
from inspector.models.content import ContentModel, TombstonesModel
from inspector.models.covalues import CoValueFilterModel, CoValueListModel
from inspector.models.kv import CasSlotsModel, CasTimelineModel, KvTreeModel
from inspector.models.lanes import LanesModel
from inspector.recent import RecentTargets
from inspector.targets import Target, TargetChange, TargetSpec, describe_error, make_target
from inspector.throttle import DEFAULT_INTERVAL_MS, Throttle
from inspector.verification import VerificationRunner
from inspector.workers import WorkerPool

__all__ = ["Inspector"]

logger = logging.getLogger(__name__)


def _nothing() -> None:
    return None


class Inspector(QObject):
    opened = Signal(str)
    failed = Signal(str, str)
    loaded = Signal(dict)
    selected = Signal(str)
    contentLoaded = Signal(str)
    changesApplied = Signal(int)

    def __init__(
        self,
        *,
        events: EventLog | None = None,
        recent: RecentTargets | None = None,
        monitor: LoopLagMonitor | None = None,
        pool: WorkerPool | None = None,
        throttle_ms: int = DEFAULT_INTERVAL_MS,
        parent: QObject | None = None,
    ) -> None:
        """``pool``: the worker process pool to use (not closed here); None: one of its own."""
        super().__init__(parent)
        self.setObjectName("kintsugi.inspector")
        self.events = events or EventLog()
        self.recent = recent
        self.monitor = monitor
        self.runner = VerificationRunner()
        self.pool = pool or WorkerPool()
        self._owns_pool = pool is None
        self.target: Target | None = None
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
        self.throttle = Throttle("changes", self._apply_changes, throttle_ms, parent=self)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] = _nothing
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
        await self.runner.stop()
        await self._close_target()
        if self._owns_pool:
            await self.pool.close()

    async def _close_target(self) -> None:
        self._unsubscribe()
        self._unsubscribe = _nothing
        self.throttle.stop()
        self._pending.clear()
        self.runner.clear()
        target, self.target = self.target, None
        self.is_loaded = False
        self.selected_covalue = None
        self.selected_slot = None
        for model in (self.covalues, self.tombstones, self.kv_tree, self.cas_slots):
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
        try:
            await target.open()
        except Exception as exc:
            code, message = describe_error(exc)
            if code == "internal":
                logger.error("opening %s failed", spec.label, exc_info=exc)
            with contextlib.suppress(Exception):
                await target.close()
            self.events.emit("error", code=code, detail=message, target=spec.label)
            self.failed.emit(code, message)
            return False
        await self._close_target()
        self.target = target
        for model in (self.covalues, self.tombstones, self.kv_tree, self.cas_slots):
            model.set_target(target)
        if target.live:
            self._unsubscribe = target.subscribe(self._on_change)
        if self.recent is not None:
            self.recent.add(spec)
        self.events.emit("opened", target=spec.label, kind=spec.kind)
        self.opened.emit(spec.label)
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
        stats = target.stats()
        self.events.emit("loaded", **stats)
        self.loaded.emit(stats)
        return True

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
            self.changesApplied.emit(len(covalues))

    # -- view actions --------------------------------------------------------------------

    def select_covalue(self, covalue: str | None) -> None:
        """Show ``covalue``'s lanes now and its content once loaded (None: nothing)."""
        cid = CoValueID(covalue) if covalue else None
        if cid == self.selected_covalue:
            return
        self.selected_covalue = cid
        self.lanes.set_covalue(self.target, cid)
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
        """True while verification, content loading or applying changes is going on."""
        return not self.runner.idle or self.throttle.active or bool(self._tasks - self._open_tasks())

    def _open_tasks(self) -> set[asyncio.Task[Any]]:
        return {t for t in self._tasks if t.get_name() == "kintsugi.open"}
