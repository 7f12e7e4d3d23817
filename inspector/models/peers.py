"""Peers of the node a target shows, and its recent peer log.

- :class:`PeersModel`: one row per connected peer (:class:`~engine.diagnostics.peers.PeerInfo`:
  direction, account, kind, admin, CoValues followed, transactions behind, queued frames and
  bytes, backlog). A peer far behind or with a full queue is highlighted.
- :class:`PeerLogModel`: connections and disconnections, newest first, with the close code;
  a peer the node closed as lagged (close code 4412) is highlighted.

Both re-read the target on :meth:`refresh` (the inspector's periodic ``poll`` refresh) and keep
only what they last read as a row cache. :class:`PeersModel` emits ``modelReset`` when the set
of peers changed and ``dataChanged`` when only their numbers did; for a live target it also
hands every read to its :class:`~engine.sync.lag.LagHistory` (``lag``: each peer's lag over
time, which the lag chart adapts) with the time of the read, and emits ``sampled()`` after every
read. :class:`PeerLogModel` emits ``rowsInserted`` at the top for new entries and
``rowsRemoved`` at the bottom for entries the node no longer keeps (see
:class:`~inspector.models.batch.NewestFirstModel`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QFont

from engine.protocol.limits import CloseCode
from engine.sync.events import PeerLogEntry
from engine.sync.lag import LagHistory
from engine.sync.peers import PeerInfo
from inspector.models.batch import NewestFirstModel
from inspector.models.roles import Role
from inspector.models.table import RIGHT, Index, TableModel
from inspector.style import LAGGED_BACKGROUND, LOST_BACKGROUND, MUTED, format_ms_short, short_id
from inspector.targets.base import Target

__all__ = ["BEHIND_WARNING", "PeerLogModel", "PeersModel", "close_text", "wall_clock_ms"]

#: A peer this many transactions behind is highlighted.
BEHIND_WARNING = 1000

#: What the close codes the node uses mean (docs/protocol.md).
CLOSE_NAMES = {
    CloseCode.NORMAL: "normal",
    CloseCode.GOING_AWAY: "going away",
    1006: "dropped",
    CloseCode.TOO_BIG: "frame too big",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.AUTH_FAILED: "auth failed",
    CloseCode.HANDSHAKE_TIMEOUT: "handshake timeout",
    CloseCode.TOO_MANY_CONNECTIONS: "too many connections",
    CloseCode.LAGGED: "lagged",
    CloseCode.RATE_LIMITED: "rate limited",
    CloseCode.UNSUPPORTED_VERSION: "unsupported version",
}


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: when the peers were read (the lag chart's time axis)."""
    return time.time_ns() // 1_000_000


def close_text(code: int | None) -> str:
    """``4412 lagged``; '' for None."""
    if code is None:
        return ""
    name = CLOSE_NAMES.get(code)
    return f"{code} {name}" if name else str(code)


class PeersModel(TableModel):
    PEER, DIRECTION, ACCOUNT, KIND, ADMIN, FOLLOWING, BEHIND, FRAMES, BYTES, BACKLOG = range(10)
    HEADERS = (
        "Peer",
        "Dir",
        "Account",
        "Kind",
        "Admin",
        "Following",
        "Behind",
        "Queue frames",
        "Queue bytes",
        "Backlog",
    )
    NUMERIC = frozenset({FOLLOWING, BEHIND, FRAMES, BYTES, BACKLOG})

    sampled = Signal()

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        lag: LagHistory | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """``lag``: where each read's rows are recorded (a new :class:`LagHistory` with the
        default limits if None); ``clock_ms``: the time recorded with them."""
        super().__init__(parent)
        self._target: Target | None = None
        self._rows: list[PeerInfo] = []
        self.lag = lag if lag is not None else LagHistory()
        self._clock_ms = clock_ms

    def set_target(self, target: Target | None) -> None:
        """Show ``target``'s peers; the lag history starts over."""
        self.beginResetModel()
        self._target = target
        self.lag.clear()
        self._rows = self._read()
        self.endResetModel()
        self.sampled.emit()

    def _read(self) -> list[PeerInfo]:
        """The target's peers now, recorded in :attr:`lag` when they change over time (see
        :attr:`lag_followed`)."""
        peers = self._target.peers() if self._target is not None else None
        if peers is None:
            return []
        if self.lag_followed:
            self.lag.record(self._clock_ms(), peers)
        return peers

    @property
    def lag_followed(self) -> bool:
        """True when the target's peers change while it is open (a live target: a node), so
        their lag over time is recorded. A bundle's peers are a snapshot taken at export:
        recorded at the time they are read, they would draw a history that never was."""
        return self._target is not None and self._target.live

    @property
    def available(self) -> bool:
        """False when the target cannot show peers (see :meth:`note`)."""
        return self._target is not None and self._target.peers() is not None

    def note(self) -> str:
        if self._target is None:
            return "No target open."
        return self._target.peers_note()

    def refresh(self) -> None:
        rows = self._read()
        if [r.peer_id for r in rows] != [r.peer_id for r in self._rows]:
            self.beginResetModel()
            self._rows = rows
            self.endResetModel()
        elif rows != self._rows:
            self._rows = rows
            self.all_changed()
        self.sampled.emit()

    def peer(self, row: int) -> PeerInfo | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, peer_id: str) -> int:
        return next((i for i, p in enumerate(self._rows) if p.peer_id == peer_id), -1)

    def row_count(self) -> int:
        return len(self._rows)

    def _raw(self, peer: PeerInfo, column: int) -> Any:
        return (
            peer.peer_id,
            peer.direction,
            peer.account,
            peer.kind,
            peer.admin,
            peer.following,
            peer.behind,
            peer.queue_frames,
            peer.queue_bytes,
            peer.backlog,
        )[column]

    def _strained(self, peer: PeerInfo) -> bool:
        return peer.behind >= BEHIND_WARNING or peer.backlog > 0

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        peer = self.peer(index.row()) if index.isValid() else None
        if peer is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.ACCOUNT:
                return short_id(peer.account, 12, 4)
            if column == self.ADMIN:
                return "admin" if peer.admin else ""
            if column == self.BYTES:
                return f"{peer.queue_bytes:,}"
            value = self._raw(peer, column)
            return f"{value:,}" if isinstance(value, int) else str(value)
        if role == Qt.ItemDataRole.ToolTipRole:
            if column in (self.PEER, self.ACCOUNT):
                return f"{peer.peer_id}\naccount {peer.account}"
            if column == self.BEHIND:
                return "transactions this node holds (of the CoValues the peer follows) it has not acknowledged"
            if column == self.BACKLOG:
                return "messages waiting to be encoded for this peer (frames are encoded as its queue drains)"
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and column in self.NUMERIC:
            return RIGHT
        if role == Qt.ItemDataRole.BackgroundRole and self._strained(peer):
            return QColor(LOST_BACKGROUND)
        if role == Role.ID:
            return peer.peer_id
        if role == Role.RAW:
            return self._raw(peer, column)
        return None


class PeerLogModel(NewestFirstModel):
    TIME, PEER, EVENT, CODE = range(4)
    HEADERS = ("Time", "Peer", "Event", "Close code")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._target: Target | None = None

    def set_target(self, target: Target | None) -> None:
        self._target = target
        self.reset()

    def read(self) -> list[PeerLogEntry]:
        log = self._target.peer_log() if self._target is not None else None
        return log or []

    @property
    def available(self) -> bool:
        return self._target is not None and self._target.peer_log() is not None

    def counts(self) -> dict[str, int]:
        """``up``/``down``/``lagged`` entries among those the node keeps."""
        entries = self.read()
        return {
            "up": sum(1 for e in entries if e.event == "up"),
            "down": sum(1 for e in entries if e.event == "down"),
            "lagged": sum(1 for e in entries if e.lagged),
        }

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        entry: PeerLogEntry | None = self.entry(index.row()) if index.isValid() else None
        if entry is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if column == self.TIME:
                return format_ms_short(entry.at_ms)
            if column == self.PEER:
                return entry.peer_id
            if column == self.EVENT:
                return "down · lagged" if entry.lagged else entry.event
            if column == self.CODE:
                return close_text(entry.close_code)
            return None
        if role == Qt.ItemDataRole.ToolTipRole and entry.lagged:
            return "the node closed this peer for not reading fast enough; it reconnects and catches up"
        if role == Qt.ItemDataRole.BackgroundRole and entry.lagged:
            return QColor(LAGGED_BACKGROUND)
        if role == Qt.ItemDataRole.ForegroundRole and entry.event == "up":
            return QColor(MUTED)
        if role == Qt.ItemDataRole.FontRole and entry.lagged and column == self.EVENT:
            font = QFont()
            font.setBold(True)
            return font
        if role == Role.ID:
            return entry.peer_id
        if role == Role.RAW:
            return {self.TIME: entry.at_ms, self.EVENT: entry.event, self.CODE: entry.close_code}.get(column)
        return None
