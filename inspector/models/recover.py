"""Recovery from one chosen peer (DESIGN §7.2), for the Recover dialog: where it applies, the
peers on offer, the job that fetches, plans and applies, and the plan's tables.

- :func:`recover_block` says why a target cannot be recovered from the window (None: it can).
  A target is recovered *in place*: a node the inspector holds (the embedded demo's) is
  changed on the loop, as its sync layer is; a store opened read-only is reopened for
  writing with the operator's key at the elevation step, by a node private to the job.
- :func:`suggested_peers` lists the peers a target brings along (the embedded demo's origin
  node, with the operator key it saved).
- :class:`RecoveryJob` runs one recovery: :meth:`RecoveryJob.compute_plan` fetches the scope
  (progress per page) and plans it; :meth:`RecoveryJob.apply` elevates and applies it; both
  are coroutines the dialog spawns. :meth:`RecoveryJob.cancel` works until the apply step
  starts: the fetch stops at its next page and nothing is changed. The fetch and the
  verification of what arrives run on a thread with an event loop of their own. For a store,
  loading the scope, planning and applying run in a thread too (the store's node is the
  job's own); for a live node, planning and applying run on the loop, as everything touching
  that node does.
- :class:`PlanTableModel` shows one category of a plan (:class:`PlanCategory`).

Audit (DESIGN §10): the peer connection is recorded (``connect``) when the target is
writable already; the elevation (``elevate``, naming the peer and the plan's counts) and the
recovery (``recover``, by :func:`~engine.node.recovery.apply_recovery`) always are.

Signals of :class:`RecoveryJob`: ``progressed(int, int)`` (pages, transactions fetched),
``planned()``, ``applying()``, ``applied()``, ``failed(str, str)`` (code, message),
``cancelled()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal

from engine.crypto import AccountKey
from engine.errors import KintsugiError, RecoveryAborted, UsageError
from engine.ids import CoValueID, SessionID, new_session_id
from engine.model.audit import AuditAction
from engine.model.header import OwnedByGroup
from engine.net.recover import PAGE_TIMEOUT, Recovery, apply, fetch_scope
from engine.node.facade import LocalNode
from engine.node.recovery import append_audit, plan_recovery, scope_ids
from engine.protocol.messages import RecoveryScope
from engine.recovery.plan import FetchedCoValue, Plan, SessionAction, SessionPlan
from engine.recovery.receipt import SignedReceipt
from engine.storage import open_store
from inspector.models.table import RIGHT, Index, TableModel
from inspector.style import short_id, short_session
from inspector.targets.base import Target, describe_error
from inspector.targets.node import NodeTarget
from inspector.targets.remote import RemoteTarget
from inspector.targets.store import StoreTarget

__all__ = [
    "PeerChoice",
    "PlanCategory",
    "PlanTableModel",
    "RecoveryJob",
    "ScopeKind",
    "recover_block",
    "suggested_peers",
]

#: Why Recover… is disabled, by situation.
NO_TARGET = "Open a store or the embedded demo first"
BUNDLE_TARGET = "A bundle is a read-only record: recover the store or node it came from"
REMOTE_TARGET = "A connected node recovers itself: kintsugi recover apply ws://NODE --key ADMINKEY --from URL --yes"
#: Instance id of the writable node the job opens on a store at the elevation step.
ELEVATED_INSTANCE = "inspector-recovery"


def recover_block(target: Target | None) -> str | None:
    """Why ``target`` cannot be recovered from the window, or None when it can."""
    if target is None:
        return NO_TARGET
    if isinstance(target, RemoteTarget):
        return REMOTE_TARGET  # what it shows is an in-memory replica of the node's CoValues
    if isinstance(target, StoreTarget):
        return None
    if isinstance(target, NodeTarget) and target.node is not None and target.node.store is not None:
        return None
    if target.spec.kind == "bundle":
        return BUNDLE_TARGET
    return REMOTE_TARGET


@dataclass(frozen=True, slots=True)
class PeerChoice:
    """A peer to recover from: its ``url`` and the operator's ``key_file``."""

    label: str
    url: str
    key_file: str


def suggested_peers(target: Target | None) -> list[PeerChoice]:
    """The peers ``target`` brings along: for the embedded demo, its origin node."""
    demo = getattr(target, "demo", None)
    report = getattr(demo, "report", None)
    info = report.get("recovery") if isinstance(report, dict) else None
    if not isinstance(info, dict) or not info.get("origin"):
        return []
    return [PeerChoice(f"the embedded demo's origin node ({info['origin']})", info["origin"], info["operator_key"])]


class ScopeKind(StrEnum):
    SESSION = "session"
    COVALUE = "covalue"
    GROUP = "group"


class PlanCategory(StrEnum):
    """The plan's tables: sessions ``replaced`` (or added, removed), sessions whose local
    transactions are ``dropped``, those with signed transactions ``at_risk``, and where those
    are ``preserved`` (a conflict session, or the receipt's archive)."""

    REPLACED = "replaced"
    DROPPED = "dropped"
    AT_RISK = "at risk"
    PRESERVED = "preserved"


def _in(category: PlanCategory, session: SessionPlan) -> bool:
    if category is PlanCategory.REPLACED:
        return session.action not in (SessionAction.UNCHANGED, SessionAction.KEPT)
    if category is PlanCategory.DROPPED:
        return session.dropped > 0
    if category is PlanCategory.AT_RISK:
        return session.at_risk > 0
    return session.preserved > 0 or session.archived > 0


def _count(head: tuple[int, bytes] | None) -> str:
    return "—" if head is None else f"{head[0]:,}"


class PlanTableModel(TableModel):
    """The sessions of a plan in one :class:`PlanCategory` (every CoValue that changes)."""

    HEADERS = ("CoValue", "Session", "Action", "Here", "Peer", "Transactions", "Detail")
    HEADER_HELP = (
        "The CoValue",
        "The session",
        "What applying does to the session",
        "Transactions this replica holds (signed)",
        "Transactions the peer holds",
        "Transactions of this category",
        "Where they go, or why",
    )
    COVALUE, SESSION, ACTION, HERE, PEER, COUNT, DETAIL = range(7)

    def __init__(self, category: PlanCategory, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.category = category
        self.names: Callable[[CoValueID], str | None] = lambda _cid: None
        self._rows: list[tuple[CoValueID, SessionPlan]] = []

    def set_plan(self, plan: Plan | None) -> None:
        self.beginResetModel()
        self._rows = []
        if plan is not None:
            for covalue in plan.covalues:
                if covalue.changes:
                    self._rows += [(covalue.id, s) for s in covalue.sessions if _in(self.category, s)]
        self.endResetModel()

    def row_count(self) -> int:
        return len(self._rows)

    def row(self, row: int) -> tuple[CoValueID, SessionPlan]:
        return self._rows[row]

    def _number(self, session: SessionPlan) -> int:
        if self.category is PlanCategory.REPLACED:
            return max(session.remote[0] if session.remote else 0, session.local[0] if session.local else 0)
        if self.category is PlanCategory.DROPPED:
            return session.dropped
        if self.category is PlanCategory.AT_RISK:
            return session.at_risk
        return session.preserved + session.archived

    def _detail(self, session: SessionPlan) -> str:
        if self.category is PlanCategory.DROPPED:
            parts = []
            if session.unverifiable:
                parts.append(f"{session.unverifiable:,} past a broken link (unverifiable)")
            if session.at_risk:
                parts.append(f"{session.at_risk:,} signed, kept (see Preserved)")
            return "; ".join(parts)
        if self.category in (PlanCategory.AT_RISK, PlanCategory.PRESERVED):
            if session.preserved_as is not None:
                return f"preserved as conflict session {short_session(session.preserved_as)}"
            return "archived in the receipt"
        return f"common prefix {session.common:,}"

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        covalue, session = self._rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.COVALUE:
                name = self.names(covalue)
                return f"{name} ({short_id(covalue)})" if name else short_id(covalue)
            values = {
                self.SESSION: short_session(session.session),
                self.ACTION: str(session.action),
                self.HERE: _count(session.local),
                self.PEER: _count(session.remote),
                self.COUNT: f"{self._number(session):,}",
                self.DETAIL: self._detail(session),
            }
            return values.get(column)
        if role == Qt.ItemDataRole.ToolTipRole and column in (self.COVALUE, self.SESSION):
            return covalue if column == self.COVALUE else session.session
        if role == Qt.ItemDataRole.TextAlignmentRole and column in (self.HERE, self.PEER, self.COUNT):
            return RIGHT
        return None


def _open_node(location: str, key: AccountKey, *, writable: bool) -> LocalNode:
    if writable:
        return LocalNode.open(location, key, instance_id=ELEVATED_INSTANCE)
    # read-only: a session of its own that is never leased nor written (as ``recover plan``)
    store = open_store(location, readonly=True)
    return LocalNode(key, store, session=new_session_id(key.account_id), instance_id="inspector-plan")


def _scope_for(node: LocalNode, kind: ScopeKind, covalue: CoValueID, session: SessionID | None) -> RecoveryScope:
    if kind is ScopeKind.SESSION:
        if session is None:
            raise UsageError("choose a session to recover just it")
        return RecoveryScope(covalues=(covalue,), sessions=(session,))
    if kind is ScopeKind.COVALUE:
        return RecoveryScope(covalues=(covalue,))
    core = node.get_or_none(covalue)
    if core is None:
        raise UsageError(f"{covalue} is not here: its group is unknown")
    if core.header.type == "group":
        return RecoveryScope(group=covalue)
    if isinstance(core.header.ruleset, OwnedByGroup):
        return RecoveryScope(group=core.header.ruleset.group)
    raise UsageError(f"{covalue} is owned by no group: recover the CoValue instead")


class RecoveryJob(QObject):
    """One recovery of ``target`` from the peer at ``url`` as ``key``'s account, for the
    scope ``kind`` of ``covalue`` (and ``session``). See the module for the steps."""

    progressed = Signal(int, int)
    planned = Signal()
    applying = Signal()
    applied = Signal()
    failed = Signal(str, str)
    cancelled = Signal()

    def __init__(
        self,
        target: Target,
        url: str,
        key: AccountKey,
        kind: ScopeKind,
        covalue: CoValueID,
        *,
        session: SessionID | None = None,
        timeout: float = PAGE_TIMEOUT,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.target = target
        self.url = url
        self.key = key
        self.kind = kind
        self.covalue = covalue
        self.session = session
        self.timeout = timeout
        self.live = isinstance(target, NodeTarget)
        self.recovery: Recovery | None = None
        self.receipt: SignedReceipt | None = None
        self.state = "new"  # new → fetching → planned → applying → applied | failed | cancelled
        self.pages = 0
        self.transactions = 0
        #: seconds the apply step took (on the loop for a live node)
        self.apply_seconds = 0.0

    @property
    def location(self) -> str:
        """The store the recovery writes to."""
        if isinstance(self.target, StoreTarget):
            return self.target.spec.location
        node = getattr(self.target, "node", None)
        store = getattr(node, "store", None)
        return str(store.location) if store is not None else self.target.label

    def _live_node(self) -> LocalNode:
        node = getattr(self.target, "node", None)
        if not isinstance(node, LocalNode):
            raise UsageError("the target was closed")
        return node

    def cancel(self) -> bool:
        """Stop before the apply step; False when it is too late (applying or done)."""
        if self.state in ("new", "fetching", "planned"):
            self.state = "cancelled"
            self.cancelled.emit()
            return True
        return False

    async def _fetch(self, scope: RecoveryScope) -> list[FetchedCoValue]:
        """The scope from the peer, fetched and verified on a thread with its own event loop
        (verifying a large scope would hold this loop up); progress comes back to this one."""
        loop = asyncio.get_running_loop()
        cancelled = False

        def progress(pages: int, transactions: int) -> None:  # on the fetch's thread
            if cancelled or self.state == "cancelled":
                raise RecoveryAborted("cancelled by the operator")
            loop.call_soon_threadsafe(self._progress, pages, transactions)

        def run() -> list[FetchedCoValue]:
            return asyncio.run(fetch_scope(self.url, self.key, scope, timeout=self.timeout, progress=progress))

        try:
            return await asyncio.to_thread(run)
        finally:
            cancelled = True

    def _progress(self, pages: int, transactions: int) -> None:
        if self.state == "cancelled":
            raise RecoveryAborted("cancelled by the operator")
        self.pages, self.transactions = pages, transactions
        self.progressed.emit(pages, transactions)

    def _fail(self, exc: BaseException) -> None:
        if self.state == "cancelled":
            return
        self.state = "failed"
        code, message = describe_error(exc)
        self.failed.emit(code, message)

    async def compute_plan(self) -> None:
        """Fetch the scope from the peer and plan it; emits ``planned`` or ``failed``
        (nothing changed either way) or nothing after a cancel."""
        self.state = "fetching"
        node: LocalNode | None = None
        try:
            if self.live:
                node = self._live_node()
                scope = _scope_for(node, self.kind, self.covalue, self.session)
                local_ids = scope_ids(node, scope.covalues, scope.group)
            else:
                node = await asyncio.to_thread(_open_node, self.location, self.key, writable=False)
                scope = await asyncio.to_thread(_scope_for, node, self.kind, self.covalue, self.session)
                local_ids = await asyncio.to_thread(scope_ids, node, scope.covalues, scope.group)
            fetched = await self._fetch(scope)
            if self.state == "cancelled":
                return
            only = None if scope.sessions is None else frozenset(scope.sessions)
            args = (node, fetched)
            kwargs: dict[str, Any] = {"peer": self.url, "operator": self.key, "scope": local_ids, "only": only}
            if self.live:
                plan = plan_recovery(*args, **kwargs)
                self._audit(node, AuditAction.CONNECT, self.url, {"peer": self.url, "purpose": "recover"})
            else:
                plan = await asyncio.to_thread(plan_recovery, *args, **kwargs)
            if self.state == "cancelled":
                return
            self.recovery = Recovery(self.url, scope, fetched, plan, local_ids)
            self.state = "planned"
            self.planned.emit()
        except (KintsugiError, OSError) as exc:
            self._fail(exc)
        finally:
            if node is not None and not self.live:
                await asyncio.to_thread(node.close)

    def _audit(self, node: LocalNode, action: AuditAction, target: str, details: dict[str, Any]) -> None:
        store = node.store
        assert store is not None
        append_audit(store, self.key, action, target, details=details, at_ms=node.clock_ms())

    def _elevate_and_apply(self, node: LocalNode) -> SignedReceipt:
        recovery = self.recovery
        assert recovery is not None
        summary = recovery.plan.summary()
        details = {"peer": self.url, "plan": recovery.plan.digest().hex(), "summary": summary, "for": "recover"}
        self._audit(node, AuditAction.ELEVATE, self.location, details)
        return apply(node, recovery, self.key)

    async def apply(self) -> None:
        """Elevate (a store is reopened for writing with the operator's key) and apply the
        confirmed plan; emits ``applied`` or ``failed`` (nothing of the recovery applied)."""
        if self.state != "planned" or self.recovery is None:
            return
        self.state = "applying"
        self.applying.emit()
        started = time.perf_counter()
        node: LocalNode | None = None
        try:
            if self.live:
                self.receipt = self._elevate_and_apply(self._live_node())
            else:
                node = await asyncio.to_thread(_open_node, self.location, self.key, writable=True)
                self.receipt = await asyncio.to_thread(self._elevate_and_apply, node)
            self.apply_seconds = time.perf_counter() - started
            self.state = "applied"
            self.applied.emit()
        except (KintsugiError, OSError) as exc:
            self._fail(exc)
        finally:
            if node is not None:
                await asyncio.to_thread(node.close)


def load_key(path: str) -> AccountKey:
    """The operator's key from ``path``; raises :class:`~engine.errors.KeyFileError`."""
    return AccountKey.load(Path(path).expanduser())
