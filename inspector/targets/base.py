"""What the inspector looks at: a *target*, and the one interface every kind offers.

A target is a store file opened read-only (:mod:`inspector.targets.store`), a diagnostic
bundle opened offline (:mod:`inspector.targets.bundle`), an in-process
:class:`~engine.node.LocalNode` (:mod:`inspector.targets.node`), the embedded live demo
(:mod:`inspector.targets.demo`), or a remote node over ``ws://`` seen through an in-memory
replica (:mod:`inspector.targets.remote`). Models and views only ever talk to
:class:`Target`, so a new kind slots in without touching them.

The split between calls:

- cheap reads the UI makes synchronously: :meth:`Target.ids`, :meth:`Target.summary`,
  :meth:`Target.open_session` (a windowed reader), the KV listing and history;
- work that may take long is ``async`` and runs in the worker process
  (:class:`~inspector.workers.WorkerPool`) or in short slices: :meth:`Target.open`,
  :meth:`Target.analyse` (badges that need every chain verified and all content computed),
  :meth:`Target.content` (content with provenance for the content view);
- live targets (``live`` True) call subscribers with :class:`TargetChange` as the engine
  changes; the inspector coalesces those through a throttle and then calls
  :meth:`Target.refresh`;
- targets with a sync layer record its events (:attr:`Target.recorder`, which also decides
  the ``forked`` badge), describe the node (:attr:`Target.node_info`) and its peers
  (:meth:`Target.peers`, :meth:`Target.peer_log`); what must be fetched for those is fetched
  by :meth:`Target.poll`, which the inspector calls periodically.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine import __version__
from engine.diagnostics.anomalies import Anomaly
from engine.diagnostics.covalue_summary import Badge, ContentSnapshot, CoValueSummary
from engine.diagnostics.matrix import PeersSessionsMatrix
from engine.diagnostics.session_rows import SessionSource
from engine.errors import KintsugiError, UsageError
from engine.ids import CoValueID, SessionID
from engine.kv.detail import SlotRow
from engine.kv.store import CASRecord
from engine.storage.postgres.location import is_postgres_location, remember
from engine.sync.cluster import ClusterReport
from engine.sync.events import PeerLogEntry
from engine.sync.peers import PeerInfo
from inspector.targets.events import SyncEventRecorder, TimedEvent
from inspector.workers import WorkerPool

__all__ = [
    "ConnectionState",
    "NodeInfo",
    "Target",
    "TargetChange",
    "TargetSpec",
    "TargetUnavailable",
    "describe_error",
]

KINDS = ("demo", "store", "node", "bundle")


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Which target to open: ``demo`` (embedded), ``store`` (``location`` is a path or a
    ``postgresql://`` URL), ``node`` (``location`` is a ``ws://`` URL, ``key_file`` the
    operator's account key) or ``bundle`` (``location`` is a diagnostic bundle, a ``.zip``
    file).

    A spec is shown, saved among the recent targets and handed to worker processes, so it
    holds a PostgreSQL URL by its public location: a password in the URL is kept in this
    process (:func:`engine.storage.postgres.location.remember`). Raises
    :class:`~engine.errors.UsageError` (naming no part of the URL) for a malformed one."""

    kind: str
    location: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}")
        if self.kind == "store" and is_postgres_location(self.location):
            object.__setattr__(self, "location", remember(self.location))

    @classmethod
    def parse(cls, target: str | None, key_file: str | None = None) -> TargetSpec:
        """The target named on the command line (None: the embedded demo)."""
        if not target or target == "demo":
            return cls("demo")
        if target.startswith(("ws://", "wss://")):
            return cls("node", target, key_file or "")
        if is_postgres_location(target):
            return cls("store", target)
        if target.lower().endswith(".zip"):
            return cls("bundle", str(Path(target).expanduser()))
        return cls("store", str(Path(target).expanduser()))

    @property
    def label(self) -> str:
        if self.kind == "demo":
            return "embedded demo"
        return self.location

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TargetSpec | None:
        """The spec saved by :meth:`to_json`, or None when ``text`` is not one."""
        try:
            data = json.loads(text)
            return cls(str(data["kind"]), str(data.get("location", "")), str(data.get("key_file", "")))
        except (ValueError, KeyError, TypeError, UsageError):
            return None


@dataclass(frozen=True, slots=True)
class TargetChange:
    """A CoValue changed. ``kind`` as in :class:`engine.node.ChangeEvent`: ``local``,
    ``remote``, ``replaced``, ``deleted``."""

    covalue: CoValueID
    kind: str


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The node a target shows, as its handshake describes it: ``name``, Kintsugi ``version``,
    protocol version ``proto`` and ``features``; ``admin`` says whether the node treats the
    inspector's account as an admin (and so shows it everything)."""

    name: str
    version: str
    proto: int
    features: tuple[str, ...] = ()
    url: str = ""
    admin: bool = True

    @property
    def skewed(self) -> bool:
        """True when the node runs another Kintsugi version than this inspector."""
        return self.version != __version__

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What the operator is looking at, for the status bar: ``kind`` is

    - ``live``: the target follows its source as it changes;
    - ``reconnecting``: a node whose connection is lost (``lost_at``, wall-clock seconds)
      and is being re-established: ``attempt`` is the number of the next (or current) try and
      ``next_try`` its ``time.monotonic()`` deadline (None: trying now). What shows is stale;
    - ``snapshot``: a store read at ``taken_at`` (wall-clock seconds) and not followed;
    - ``offline``: a diagnostic bundle, fixed when it was exported.
    """

    kind: str
    lost_at: float | None = None
    attempt: int = 0
    next_try: float | None = None
    taken_at: float | None = None

    @property
    def stale(self) -> bool:
        """True when what the views show may be behind the source (a lost connection)."""
        return self.kind == "reconnecting"


class TargetUnavailable(Exception):
    """A target that cannot be opened for a reason that is not an engine error."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def describe_error(exc: BaseException) -> tuple[str, str]:
    """``(code, message)`` to show an operator; never a traceback."""
    if isinstance(exc, KintsugiError | TargetUnavailable):
        code = exc.code
        messages = {
            "store_not_found": "There is no Kintsugi store there",
            "schema_too_new": "The store was written by a newer Kintsugi",
            "key_file": "The key file cannot be used",
            "storage_environment": "The store cannot be read",
            "storage_bug": "The store looks damaged",
            "connection_refused": "Could not connect to the node",
            "not_a_node": "That address does not answer like a Kintsugi node",
            "auth_failed": "The node did not accept this account",
            "unsupported_version": "The node speaks another protocol version",
            "timeout": "The node did not answer in time",
            "admin_refused": "The node refused to list its CoValues",
            "invalid_bundle": "That file is not a Kintsugi diagnostic bundle",
        }
        lead = messages.get(code)
        return code, f"{lead}: {exc.detail}" if lead and exc.detail else (exc.detail or code)
    if isinstance(exc, OSError):
        return "os_error", f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
    return "internal", f"internal error ({type(exc).__name__}): {exc}"


Unsubscribe = Callable[[], None]


class Target(abc.ABC):
    """One thing being inspected. Use from the loop's thread only. ``pool`` runs the heavy
    work; the target does not own it."""

    #: True when the target changes while open and notifies subscribers
    live = False
    #: False when CAS slots are listed without their values and histories (a node older than
    #: the ``kv_slot`` admin read)
    kv_values = True

    def __init__(self, spec: TargetSpec, pool: WorkerPool) -> None:
        self.spec = spec
        self.pool = pool
        self._summaries: dict[CoValueID, CoValueSummary] = {}
        #: sync events seen while open, and the CoValues they found forked (stays empty for a
        #: target without a sync layer)
        self.recorder = SyncEventRecorder()
        self.recorder.subscribe(self._mark_forked)
        #: the node shown, once open (None: not a node, e.g. a store file)
        self.node_info: NodeInfo | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    # -- lifecycle ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Open and list the CoValues (cheaply). Raises :class:`KintsugiError`,
        :class:`TargetUnavailable` or :class:`OSError`; after a failure nothing stays open."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything; idempotent."""

    # -- CoValues ----------------------------------------------------------------------------

    def ids(self) -> list[CoValueID]:
        """Every CoValue, sorted by id."""
        return sorted(self._summaries)

    def summary(self, covalue: CoValueID) -> CoValueSummary | None:
        return self._summaries.get(covalue)

    def _marked(self, summary: CoValueSummary) -> CoValueSummary:
        """``summary`` with the badges that come from sync events (``forked``)."""
        if summary.id in self.recorder.forked and Badge.FORKED not in summary.badges:
            return summary.with_badge(Badge.FORKED)
        return summary

    def _put(self, summary: CoValueSummary) -> bool:
        """Store a fresh summary (marked); True when it differs from the one held."""
        marked = self._marked(summary)
        changed = self._summaries.get(marked.id) != marked
        self._summaries[marked.id] = marked
        return changed

    def _mark_forked(self, timed: TimedEvent) -> None:
        held = self._summaries.get(timed.event.covalue)
        if timed.is_fork and held is not None:
            self._summaries[held.id] = self._marked(held)

    @abc.abstractmethod
    async def analyse(self, on_batch: Callable[[list[CoValueID]], None]) -> None:
        """Compute full summaries of every CoValue, calling ``on_batch`` with the ids whose
        summary changed as it goes. Never blocks the loop for long."""

    async def refresh(self, covalues: Iterable[CoValueID]) -> list[CoValueID]:
        """Re-summarize ``covalues`` after a change; returns those whose summary changed or
        that are new. Only live targets have anything to do."""
        return []

    @abc.abstractmethod
    async def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        """The CoValue's content with provenance, as it is now (None: not here). A snapshot:
        ask again after a change."""

    @abc.abstractmethod
    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        """A new windowed reader of one session (None: no such session). Each call returns an
        independent reader, so a view and a verifier do not share row counters."""

    # -- CAS slots ---------------------------------------------------------------------------

    @abc.abstractmethod
    def kv_namespaces(self) -> list[str]: ...

    @abc.abstractmethod
    def kv_slots(self, namespace: str) -> list[SlotRow]: ...

    @abc.abstractmethod
    def kv_history(self, namespace: str, key: str) -> list[CASRecord]: ...

    # -- live --------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[TargetChange], None]) -> Unsubscribe:
        """Call ``callback`` on every change (never for a target that is not live)."""
        return lambda: None

    # -- the node and its peers ---------------------------------------------------------------

    def peers(self) -> list[PeerInfo] | None:
        """The node's connected peers as last read (None: this target cannot show peers;
        :meth:`peers_note` says why)."""
        return None

    def peer_log(self) -> list[PeerLogEntry] | None:
        """Recent peer connections and disconnections, oldest first (None: not available)."""
        return None

    def peers_note(self) -> str:
        """Why :meth:`peers` or :meth:`peer_log` is None, for the peers view."""
        return "A store file has no peers: connect to a node or open the embedded demo to see them."

    def cluster(self) -> ClusterReport | None:
        """The cluster of nodes sharing the node's store, as the node last reported it
        (None: this target cannot show one; :meth:`cluster_note` says why)."""
        return None

    def cluster_note(self) -> str:
        """Why :meth:`cluster` is None, for the cluster view."""
        return "Only a node shows its cluster: connect to one (ws://) with an admin account's key."

    # -- anomalies and the peers × sessions matrix ----------------------------------------

    def anomalies(self) -> list[Anomaly] | None:
        """Anomalies the target carries as found elsewhere (a bundle's, from its export);
        None: the inspector finds them in what the target shows
        (:mod:`inspector.models.anomalies`)."""
        return None

    def matrix(self) -> PeersSessionsMatrix | None:
        """A peers × sessions matrix the target carries (a bundle's); None: the inspector
        reads it from the target's sync shell, if it has one (:mod:`inspector.models.matrix`)."""
        return None

    async def poll(self) -> None:
        """Fetch what is not pushed (a remote node's peers, new CoValues); the inspector calls
        it periodically while the target is open. Never raises for a lost connection."""
        return None

    # -- what the operator is looking at --------------------------------------------------------

    def connection(self) -> ConnectionState:
        """The target's state for the status bar (see :class:`ConnectionState`); cheap, called
        a few times a second. Live targets are ``live`` unless they say otherwise, others
        ``offline``."""
        return ConnectionState("live" if self.live else "offline")

    #: What opening is doing now, for the progress shown while it opens ('' when not opening
    #: or nothing to say).
    progress = ""

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts over the current summaries, as the ``loaded`` event reports them."""
        summaries = list(self._summaries.values())
        return {
            "covalues": len(summaries),
            "conflict_sessions": sum(s.conflict_sessions for s in summaries),
            "deleted": sum(1 for s in summaries if s.deleted),
            "corrupt": sum(s.corrupt_sessions for s in summaries),
            "forked": sum(1 for s in summaries if Badge.FORKED in s.badges),
        }
