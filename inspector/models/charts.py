"""What the charts draw, read on demand from the models and engine objects that hold it.

- :class:`CasChartModel` adapts a :class:`~inspector.models.kv.CasTimelineModel` (the
  selected slot's CAS history, oldest first): :meth:`CasChartModel.chart` gives the
  generation line (a step at every write that moved it) and one mark per attempt, the lost
  races (``conflict`` outcomes) apart, each at its time and at the generation the slot had
  then (see :func:`cas_chart`). Emits ``changed()`` when the timeline's rows changed.
- :class:`PeerLagChartModel` adapts the :class:`~engine.sync.lag.LagHistory` a
  :class:`~inspector.models.peers.PeersModel` records each read into: one
  :class:`LagLine` per followed peer, connected or gone (a gone peer keeps its line until it
  ages out of the history). Emits ``changed()`` after every read of the peers.

Neither stores points: each call reads its source again, so a chart never shows other data
than the tables beside it. Times are milliseconds since the epoch, as the engine keeps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from engine.kv.store import CASRecord
from engine.sync.lag import LagHistory
from inspector.models.kv import CasTimelineModel
from inspector.models.peers import PeersModel

__all__ = ["LAG_METRICS", "CasChart", "CasChartModel", "CasMark", "LagLine", "PeerLagChartModel", "cas_chart"]

#: What the lag chart can show, by :class:`~engine.sync.lag.PeerLagRing` column: its axis
#: label, its unit (``""``: a count) and how a value reads in a sentence ("1,200 behind").
LAG_METRICS: dict[str, tuple[str, str, str]] = {
    "behind": ("Transactions behind", "", "behind"),
    "queue_bytes": ("Queue bytes", "B", "bytes queued"),
}


@dataclass(frozen=True, slots=True)
class CasMark:
    """One CAS attempt on the chart: ``row`` in the timeline table, its time, and the slot's
    generation after it (for a lost race: the generation the writer met instead of
    ``expected_gen``)."""

    row: int
    at_ms: int
    generation: int
    expected_gen: int
    writer: str | None
    lost: bool


@dataclass(frozen=True, slots=True)
class CasChart:
    """The generation line as vertices (``line_ms[i]``, ``line_gen[i]``): flat between
    writes, a vertical step at each write that moved the generation, up to the newest
    attempt. ``stored`` and ``lost`` are the attempts' marks, oldest first."""

    line_ms: tuple[int, ...] = ()
    line_gen: tuple[int, ...] = ()
    stored: tuple[CasMark, ...] = ()
    lost: tuple[CasMark, ...] = ()


def cas_chart(records: Sequence[CASRecord]) -> CasChart:
    """The chart of a CAS history given oldest first.

    The slot's generation after an attempt is the record's ``generation`` (the new one if
    stored, the current one if lost); before the first attempt it was that attempt's
    ``expected_gen`` if stored (the line starts there), else its ``generation``.
    """
    if not records:
        return CasChart()
    first = records[0]
    level = first.expected_gen if first.outcome == "stored" else first.generation
    xs, ys = [first.at_ms], [level]
    stored: list[CasMark] = []
    lost: list[CasMark] = []
    for row, record in enumerate(records):
        if record.generation != level:
            if xs[-1] != record.at_ms or ys[-1] != level:
                xs.append(record.at_ms)
                ys.append(level)
            xs.append(record.at_ms)
            ys.append(record.generation)
            level = record.generation
        is_lost = record.outcome == "conflict"
        mark = CasMark(row, record.at_ms, record.generation, record.expected_gen, record.writer, is_lost)
        (lost if is_lost else stored).append(mark)
    last = records[-1].at_ms
    if xs[-1] != last:
        xs.append(last)
        ys.append(level)
    return CasChart(tuple(xs), tuple(ys), tuple(stored), tuple(lost))


class CasChartModel(QObject):
    """The selected slot's generation chart, over ``timeline``."""

    changed = Signal()

    def __init__(self, timeline: CasTimelineModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.timeline = timeline
        for signal in (timeline.modelReset, timeline.rowsInserted, timeline.rowsRemoved):
            signal.connect(self.changed)

    @property
    def slot(self) -> tuple[str, str] | None:
        return self.timeline.slot

    @property
    def available(self) -> bool:
        """False when the target has no CAS histories (see :attr:`CasTimelineModel.available`)."""
        return self.timeline.available

    def chart(self) -> CasChart:
        return cas_chart(self.timeline.records())


@dataclass(frozen=True, slots=True)
class LagLine:
    """One peer's line: its samples' times and the chosen metric's values (the history's own
    columns, read-only: copy them before the next read of the peers). ``connected``: it was
    in the latest read."""

    peer_id: str
    account: str
    connected: bool
    at_ms: Sequence[int]
    values: Sequence[int]


class PeerLagChartModel(QObject):
    """Each peer's lag over time, over ``peers``' :class:`LagHistory`."""

    changed = Signal()

    def __init__(self, peers: PeersModel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.peers = peers
        peers.sampled.connect(self.changed)

    @property
    def history(self) -> LagHistory:
        return self.peers.lag

    @property
    def available(self) -> bool:
        """False when the target has no peers (see :attr:`PeersModel.available`)."""
        return self.peers.available

    @property
    def followed(self) -> bool:
        """False when the target's peers do not change over time (see
        :attr:`PeersModel.lag_followed`)."""
        return self.peers.lag_followed

    def lines(self, metric: str = "behind") -> list[LagLine]:
        """Every followed peer's line for ``metric`` (a key of :data:`LAG_METRICS`), in the
        order first seen. Raises KeyError for another metric."""
        if metric not in LAG_METRICS:
            raise KeyError(metric)
        history = self.history
        return [
            LagLine(ring.peer_id, ring.account, history.connected(ring.peer_id), ring.at_ms, getattr(ring, metric))
            for ring in history.rings()
        ]

    def window(self) -> tuple[int, int] | None:
        """Oldest and newest read kept (see :attr:`LagHistory.window`)."""
        return self.history.window
