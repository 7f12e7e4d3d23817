"""The peers view: the node's connected peers (known-state lag, queue depth, backlog), each
peer's lag over the last minutes as a chart (:class:`~inspector.views.charts.PeerLagChart`:
transactions behind or queue bytes; a peer that went away keeps its line until it ages out),
and its recent peer log (connections, disconnections with their close code, lagged closes
highlighted). Read-only; the tables and the chart follow their models, which the inspector's
periodic ``poll`` refresh updates. Emits nothing.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from inspector.models.charts import PeerLagChartModel
from inspector.models.peers import PeerLogModel, PeersModel
from inspector.views.charts import PeerLagChart
from inspector.views.content import make_table

__all__ = ["PeersView"]


class PeersView(QWidget):
    def __init__(
        self,
        peers: PeersModel,
        log: PeerLogModel,
        parent: QWidget | None = None,
        *,
        lag: PeerLagChartModel | None = None,
    ) -> None:
        """``lag``: the lag chart's model (None: one over ``peers``' lag history)."""
        super().__init__(parent)
        self.peers = peers
        self.log = log
        self.lag_model = lag if lag is not None else PeerLagChartModel(peers, self)
        self.lag_chart = PeerLagChart(self.lag_model)
        heading = QLabel("Peers")
        heading.setStyleSheet("font-size: 13pt; font-weight: bold;")
        self.summary = QLabel()
        self.summary.setObjectName("peersSummary")
        self.summary.setWordWrap(True)
        self.table = make_table(
            peers,
            PeersModel.ACCOUNT,
            {
                PeersModel.PEER: 190,
                PeersModel.DIRECTION: 36,
                PeersModel.KIND: 100,
                PeersModel.ADMIN: 50,
                PeersModel.FOLLOWING: 70,
                PeersModel.BEHIND: 70,
                PeersModel.FRAMES: 90,
                PeersModel.BYTES: 90,
                PeersModel.BACKLOG: 60,
            },
            "peersTable",
        )
        self.log_heading = QLabel()
        self.log_heading.setObjectName("peerLogHeading")
        self.log_heading.setStyleSheet("font-weight: bold;")
        self.log_heading.setWordWrap(True)
        self.log_table = make_table(
            log, PeerLogModel.CODE, {PeerLogModel.TIME: 100, PeerLogModel.PEER: 240, PeerLogModel.EVENT: 120}, "peerLog"
        )

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(heading)
        top_layout.addWidget(self.summary)
        top_layout.addWidget(self.table, 1)
        bottom = QWidget()
        bottom_layout = QVBoxLayout(bottom)
        bottom_layout.setContentsMargins(0, 0, 0, 0)
        bottom_layout.addWidget(self.log_heading)
        bottom_layout.addWidget(self.log_table, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setObjectName("peersSplitter")
        splitter.addWidget(top)
        splitter.addWidget(self.lag_chart)
        splitter.addWidget(bottom)
        splitter.setSizes([260, 240, 250])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        for model in (peers, log):
            for signal in (model.modelReset, model.rowsInserted, model.rowsRemoved, model.dataChanged):
                signal.connect(self._update_text)
        self._update_text()

    def _update_text(self) -> None:
        if self.peers.available:
            rows = [self.peers.peer(r) for r in range(self.peers.rowCount())]
            behind = sum(p.behind for p in rows if p is not None)
            self.summary.setText(
                f"{len(rows)} connected · {behind:,} transactions not yet acknowledged · refreshed every second"
            )
        else:
            self.summary.setText(self.peers.note())
        if self.log.available:
            counts = self.log.counts()
            self.log_heading.setText(
                f"Peer log (newest first): {counts['up']} connections, {counts['down']} disconnections, "
                f"{counts['lagged']} closed as lagged (highlighted)"
            )
        else:
            # the note says why the log is missing only when the peers are there
            self.log_heading.setText("Peer log" + (f": {self.peers.note()}" if self.peers.available else ""))
