"""A diagnostic bundle opened offline: ``kintsugi-inspector FILE.zip`` or File → Open bundle.

A bundle (:mod:`engine.diagnostics.bundle`) is a target like a store, read-only and not
live, showing every view its data allows:

- the navigator, badges, tombstones and session lanes from the CoValue records (each
  session's count, verification state and first broken link as found at export time);
- session rows and chain verification only when the bundle includes raw content (its row
  files are read by window, like a store's blocks); without content the lanes are empty and
  :meth:`BundleTarget.checkpoints` still gives the hash at every checkpoint, which is enough
  to locate a fork between two bundles within one batch
  (:func:`engine.diagnostics.bundle_read.locate_fork`);
- content with provenance for the CoValues the export analysed (keys and values as tokens
  when redacted);
- CAS slots with their histories (keys and values as tokens), the peers and peer log, the
  sync events (recorded as the node's, so forks badge their CoValues), the peers × sessions
  matrix and the anomalies found at export time.

The bundle is read on the loop's thread: members are small except row files, which are read
by window. Opening reads the manifest and the CoValue records only.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.diagnostics.anomalies import Anomaly
from engine.diagnostics.bundle_read import Bundle
from engine.diagnostics.covalue_summary import ContentSnapshot
from engine.diagnostics.matrix import PeersSessionsMatrix
from engine.diagnostics.session_rows import SessionSource
from engine.ids import CoValueID, SessionID
from engine.kv.detail import SlotRow
from engine.kv.store import CASRecord
from engine.sync.events import PeerLogEntry
from engine.sync.peers import PeerInfo
from inspector.targets.base import NodeInfo, Target

__all__ = ["BundleTarget"]


class BundleTarget(Target):
    bundle: Bundle | None = None

    async def open(self) -> None:
        bundle = Bundle(self.spec.location)
        try:
            summaries = bundle.summaries()
            slots = bundle.slots()
            peers, peer_log = bundle.peers()
            events = bundle.events()
            anomalies = bundle.anomalies()
            matrix = bundle.matrix()
            contents = {c.covalue: c for c in bundle.contents()}
        except BaseException:
            bundle.close()
            raise
        self.bundle = bundle
        self._slots: dict[str, list[tuple[SlotRow, list[CASRecord]]]] = {}
        for row, history, _dropped in slots:
            self._slots.setdefault(row.namespace, []).append((row, history))
        self._peers = peers
        self._peer_log = peer_log
        self._anomalies = anomalies
        self._matrix = matrix
        self._contents = contents
        for summary in summaries:
            self._put(summary)
        for event in events:  # the node's events: forks badge their CoValues as when live
            self.recorder.record(event, origin="node")
        node = bundle.target.get("node")
        if isinstance(node, dict):
            self.node_info = NodeInfo(
                str(node.get("name", "")),
                str(node.get("version", "")),
                int(node.get("proto", 0)),
                tuple(node.get("features", ())),
                str(node.get("url", "")),
                True,
            )

    async def close(self) -> None:
        bundle, self.bundle = self.bundle, None
        if bundle is not None:
            bundle.close()

    @property
    def manifest(self) -> dict[str, object]:
        return dict(self.bundle.manifest) if self.bundle is not None else {}

    async def analyse(self, on_batch: Callable[[list[CoValueID]], None]) -> None:
        return None  # the records are complete: the export verified and analysed them

    async def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        return self._contents.get(covalue) if self.bundle is not None else None

    def open_session(self, covalue: CoValueID, session: SessionID) -> SessionSource | None:
        return self.bundle.session_source(covalue, session) if self.bundle is not None else None

    def checkpoints(self, covalue: CoValueID, session: SessionID) -> list[tuple[int, bytes]]:
        """``(n, h(n))`` at every checkpoint the bundle recorded for a session."""
        return self.bundle.checkpoints(covalue, session) if self.bundle is not None else []

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        """The fork record the exported store kept for a conflict session (None: none)."""
        return self.bundle.conflict_fork_record(covalue, conflict) if self.bundle is not None else None

    def kv_namespaces(self) -> list[str]:
        return sorted(self._slots) if self.bundle is not None else []

    def kv_slots(self, namespace: str) -> list[SlotRow]:
        return [row for row, _history in self._slots.get(namespace, [])] if self.bundle is not None else []

    def kv_history(self, namespace: str, key: str) -> list[CASRecord]:
        for row, history in self._slots.get(namespace, []) if self.bundle is not None else []:
            if row.key == key:
                return list(history)
        return []

    def peers(self) -> list[PeerInfo] | None:
        return self._peers if self.bundle is not None else None

    def peer_log(self) -> list[PeerLogEntry] | None:
        return self._peer_log if self.bundle is not None else None

    def peers_note(self) -> str:
        return "This bundle was made from a store: a store file has no peers."

    def anomalies(self) -> list[Anomaly] | None:
        return list(self._anomalies) if self.bundle is not None else None

    def matrix(self) -> PeersSessionsMatrix | None:
        return self._matrix if self.bundle is not None else None

    def matrix_note(self) -> str:
        return self.bundle.matrix_note() if self.bundle is not None else ""
