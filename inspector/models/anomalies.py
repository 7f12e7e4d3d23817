"""The anomalies of the open target ("expert info"), worst first.

:class:`AnomaliesModel` is a table — severity, kind, subject, explanation — over the
:class:`~engine.diagnostics.anomalies.Anomaly` list of the target: the one it carries (a
bundle's, found at export), or the one :func:`target_anomalies` finds in what the target
shows with the engine's rules (:func:`~engine.diagnostics.anomalies.find_anomalies`):
summaries (verification, conflict sessions, invalid transactions, tombstones), recorded sync
events, peers and peer log, CAS slot histories, the peers × sessions matrix and the node's
version. The newest ``madeAt`` of each session (for clock skew) is read with a one-row
window and kept per session count, so a refresh re-reads only sessions that grew.

:meth:`AnomaliesModel.refresh` recomputes and emits ``modelReset`` only when the list
changed; :meth:`AnomaliesModel.counts` gives the per-severity counts the status bar shows.
The model keeps the last list as its row cache and nothing else of the engine's.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QColor, QFont

from engine import __version__
from engine.diagnostics.anomalies import (
    Anomaly,
    CoValueFacts,
    Facts,
    NodeFacts,
    SessionFacts,
    Severity,
    SlotFacts,
    find_anomalies,
    recovered_forks,
    severity_counts,
)
from engine.errors import KintsugiError
from engine.ids import CoValueID, SessionID
from engine.model.transaction import decode_transaction
from engine.protocol.limits import PROTOCOL_VERSION
from inspector.models.matrix import target_matrix
from inspector.models.roles import Role
from inspector.models.table import Index, TableModel
from inspector.style import MUTED
from inspector.targets.base import Target

__all__ = ["SEVERITY_COLORS", "AnomaliesModel", "target_anomalies"]

#: Background of each severity's rows.
SEVERITY_COLORS = {
    Severity.CRITICAL: "#f9d0cc",
    Severity.HIGH: "#fde3c8",
    Severity.MEDIUM: "#fff4d6",
    Severity.LOW: "",
}
#: Sessions whose newest ``madeAt`` a refresh reads at most (the rest wait for the next one).
MAX_CLOCK_READS = 500

#: (CoValue, session) → (count when read, newest madeAt)
MadeAtCache = dict[tuple[str, str], tuple[int, int | None]]


def _last_made_at(
    target: Target, covalue: CoValueID, session: SessionID, count: int, *, cache: MadeAtCache, budget: list[int]
) -> int | None:
    """The newest ``madeAt`` of a session (a one-row read, kept per count); None: unknown."""
    key = (covalue, session)
    cached = cache.get(key)
    if cached is not None and cached[0] == count:
        return cached[1]
    if count == 0 or budget[0] <= 0:
        return cached[1] if cached is not None else None
    budget[0] -= 1
    made_at: int | None = None
    source = target.open_session(covalue, session)
    if source is not None:
        try:
            rows = source.window(count - 1, 1)
            made_at = decode_transaction(rows[0][1]).made_at if rows else None
        except KintsugiError:
            made_at = None
    cache[key] = (count, made_at)
    return made_at


def target_anomalies(target: Target, cache: MadeAtCache | None = None) -> list[Anomaly]:
    """The anomalies of ``target``: those it carries, else those the rules find in what it
    shows now."""
    carried = target.anomalies()
    if carried is not None:
        return carried
    cache = cache if cache is not None else {}
    budget = [MAX_CLOCK_READS]
    covalues = []
    for cid in target.ids():
        summary = target.summary(cid)
        if summary is None:
            continue
        sessions = tuple(
            SessionFacts(
                s.id,
                s.kind,
                s.count,
                s.corrupt,
                _last_made_at(target, cid, s.id, s.count, cache=cache, budget=budget) if s.corrupt is None else None,
            )
            for s in summary.sessions
        )
        tomb = summary.tombstone
        covalues.append(
            CoValueFacts(cid, summary.type, summary.deleted, sessions, summary.invalid, tomb.session if tomb else None)
        )
    slots = []
    for namespace in target.kv_namespaces():
        for row in target.kv_slots(namespace):
            history = target.kv_history(namespace, row.key)
            lost = sum(1 for r in history if r.outcome == "conflict")
            slots.append(SlotFacts(namespace, row.key, len(history), lost))
    info = target.node_info
    node = NodeFacts(info.name, info.version, info.proto, __version__, PROTOCOL_VERSION) if info is not None else None
    facts = Facts(
        covalues=covalues,
        events=[timed.event for timed in target.recorder.recent()],
        peers=target.peers(),
        peer_log=target.peer_log(),
        slots=slots,
        matrix=target_matrix(target),
        node=node,
        now_ms=time.time_ns() // 1_000_000,
        recovered=recovered_forks(covalues),
    )
    return find_anomalies(facts)


class AnomaliesModel(TableModel):
    SEVERITY, KIND, SUBJECT, EXPLANATION = range(4)
    HEADERS = ("Severity", "Kind", "Subject", "Explanation")
    HEADER_HELP = (
        "critical, high, medium or low",
        "the rule that found it",
        "the entry it concerns: click to go there",
        "what is wrong, in one line",
    )

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None
        self._rows: list[Anomaly] = []
        self._made_at: MadeAtCache = {}

    def set_target(self, target: Target | None) -> None:
        self.beginResetModel()
        self._target = target
        self._made_at = {}
        self._rows = []
        self.endResetModel()

    def refresh(self) -> bool:
        """Recompute; True (and ``modelReset``) when the list changed."""
        rows = target_anomalies(self._target, self._made_at) if self._target is not None else []
        if rows == self._rows:
            return False
        self.beginResetModel()
        self._rows = rows
        self.endResetModel()
        return True

    def anomaly(self, row: int) -> Anomaly | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def anomalies(self) -> list[Anomaly]:
        return list(self._rows)

    def counts(self) -> dict[str, int]:
        """Anomalies per severity, worst first (zeros included)."""
        return severity_counts(self._rows)

    def row_count(self) -> int:
        return len(self._rows)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        anomaly = self.anomaly(index.row()) if index.isValid() else None
        if anomaly is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (str(anomaly.severity), str(anomaly.kind).replace("_", " "), anomaly.subject, anomaly.explanation)[
                column
            ]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{anomaly.subject}\n{anomaly.explanation}"
        if role == Qt.ItemDataRole.BackgroundRole and SEVERITY_COLORS[anomaly.severity]:
            return QColor(SEVERITY_COLORS[anomaly.severity])
        if role == Qt.ItemDataRole.ForegroundRole and anomaly.severity is Severity.LOW and column == self.SEVERITY:
            return QColor(MUTED)
        if role == Qt.ItemDataRole.FontRole and column == self.SEVERITY and anomaly.severity is Severity.CRITICAL:
            font = QFont()
            font.setBold(True)
            return font
        if role == Role.ID:
            return anomaly.covalue
        if role == Role.RAW:
            return anomaly
        return None
