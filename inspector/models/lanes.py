"""The lanes of the chain view: one per session of the selected CoValue.

:class:`LanesModel` lists the sessions of one CoValue (from the target's summary, in lane
order: each conflict session right after its origin, delete sessions last) and owns one
:class:`~inspector.models.chain.SessionChainModel` per lane, each with its own windowed
reader and its own verifier registered with the :class:`VerificationRunner`.

Emits ``modelAboutToBeReset``/``modelReset`` when another CoValue is selected or the set of
sessions changed (lane widgets are rebuilt then), and ``dataChanged`` for a lane whose count
or verification changed.

On a session that has conflict sessions, the rows where they were split off are marked in
its chain model (:meth:`SessionChainModel.set_fork_marks`): the conflict session's recorded
fork point, or the inferred one (see :mod:`engine.model.fork`).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, Qt
from PySide6.QtGui import QColor

from engine.diagnostics.chain_verify import ChainVerifier
from engine.diagnostics.compare import align_conflict
from engine.diagnostics.covalue_summary import Badge, CoValueSummary, SessionSummary
from engine.diagnostics.session_rows import LogSessionSource
from engine.errors import KintsugiError
from engine.ids import CoValueID, SessionKind, parse_session_id
from inspector.models.batch import Index
from inspector.models.chain import SessionChainModel
from inspector.models.compare import TargetSide
from inspector.models.roles import Role
from inspector.style import BADGE_COLORS, KIND_COLORS, KIND_LABELS, kind_icon, short_session
from inspector.targets.base import Target
from inspector.verification import VerificationRunner

__all__ = ["LanesModel"]


class LanesModel(QAbstractListModel):
    def __init__(self, runner: VerificationRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner = runner
        self._target: Target | None = None
        self.covalue: CoValueID | None = None
        self._sessions: list[SessionSummary] = []  # cache of the summary's lane order
        self._chains: list[SessionChainModel] = []

    # -- selection -----------------------------------------------------------------------

    def set_covalue(self, target: Target | None, covalue: CoValueID | None) -> None:
        """Show the sessions of ``covalue`` (None: none)."""
        self.beginResetModel()
        self._drop_chains()
        self._target = target
        self.covalue = covalue
        summary = target.summary(covalue) if target is not None and covalue is not None else None
        self._sessions = list(summary.sessions) if summary is not None else []
        if target is not None and summary is not None:
            self._chains = [self._make_chain(target, summary, s, row) for row, s in enumerate(self._sessions)]
            self._mark_forks(target, summary)
        self.endResetModel()

    def _mark_forks(self, target: Target, summary: CoValueSummary) -> None:
        """Mark, on each origin lane, where its conflict sessions were split off (their
        recorded or inferred fork points: a few single-row reads each)."""
        rows = {s.id: row for row, s in enumerate(self._sessions)}
        marks: dict[int, dict[int, str]] = {}
        for session in self._sessions:
            if session.kind is not SessionKind.CONFLICT:
                continue
            origin = parse_session_id(session.id).base
            if origin not in rows:
                continue
            try:
                fork = align_conflict(
                    self._chains[rows[origin]].source,
                    self._chains[rows[session.id]].source,
                    TargetSide(target).conflict_fork_record(summary.id, session.id),
                )
            except KintsugiError:
                continue
            note = f"{fork.fork.describe()}: {short_session(session.id)} was split off here ({fork.basis})"
            marks.setdefault(rows[origin], {})[fork.fork.index] = note
        for row, chain_marks in marks.items():
            self._chains[row].set_fork_marks(chain_marks)

    def clear(self) -> None:
        self.set_covalue(None, None)

    def _make_chain(
        self, target: Target, summary: CoValueSummary, session: SessionSummary, row: int
    ) -> SessionChainModel:
        source = target.open_session(summary.id, session.id)
        if source is None:  # gone since the summary was made: an empty lane
            source = LogSessionSource(summary.id, session.id, lambda: None)
        checker = target.open_session(summary.id, session.id)
        verifier = ChainVerifier(checker) if checker is not None else None
        invalid = {tx.index: tx.reason for tx in summary.invalid if tx.session == session.id}
        chain = SessionChainModel(source, verifier, invalid, parent=self)
        if verifier is not None:
            self._runner.add(verifier, chain.on_verification_progress)
        chain.verificationChanged.connect(lambda: self._lane_changed(row))
        return chain

    def _drop_chains(self) -> None:
        for chain in self._chains:
            if chain.verifier is not None:
                self._runner.remove(chain.verifier)
            chain.verificationChanged.disconnect()
            chain.setParent(None)  # freed once views let go of it
        self._chains = []

    def _lane_changed(self, row: int) -> None:
        if 0 <= row < len(self._chains):
            index = self.index(row)
            self.dataChanged.emit(index, index)

    def refresh(self) -> None:
        """The selected CoValue changed: follow new rows, or rebuild if sessions changed."""
        if self._target is None or self.covalue is None:
            return
        summary = self._target.summary(self.covalue)
        sessions = list(summary.sessions) if summary is not None else []
        if [s.id for s in sessions] != [s.id for s in self._sessions]:
            self.set_covalue(self._target, self.covalue)
            return
        self._sessions = sessions
        for chain in self._chains:
            chain.refresh()
        self._runner.wake()
        if self._chains:
            self.dataChanged.emit(self.index(0), self.index(len(self._chains) - 1))

    # -- access --------------------------------------------------------------------------

    def chain(self, row: int) -> SessionChainModel:
        return self._chains[row]

    def chains(self) -> list[SessionChainModel]:
        return list(self._chains)

    def session(self, row: int) -> SessionSummary:
        return self._sessions[row]

    # -- Qt model API --------------------------------------------------------------------

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self._sessions)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._sessions):
            return None
        session = self._sessions[index.row()]
        chain = self._chains[index.row()] if index.row() < len(self._chains) else None
        label = KIND_LABELS[session.kind]
        if session.conflict_n > 1:
            label += f" !{session.conflict_n}"
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{label}  {short_session(session.id)}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{label} session\n{session.id}\nowner {session.account}"
        if role == Qt.ItemDataRole.DecorationRole:
            return kind_icon(session.kind, corrupt=session.corrupt is not None)
        if role == Qt.ItemDataRole.ForegroundRole:
            return QColor(BADGE_COLORS[Badge.CORRUPT] if session.corrupt is not None else KIND_COLORS[session.kind])
        if role == Role.ID:
            return session.id
        if role == Role.KIND:
            return session.kind
        if role == Role.COUNT:
            return chain.rowCount() if chain is not None else session.count
        if role == Role.VERIFICATION:
            if chain is not None:
                return chain.verification_text()
            return "corrupt" if session.corrupt is not None else ""
        if role == Role.BREAK:
            if chain is not None and chain.break_index() is not None:
                return chain.break_index()
            return session.corrupt.index if session.corrupt is not None else None
        return None
