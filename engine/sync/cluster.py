"""The cluster as an admin's ``cluster`` request shows it: the nodes that share this node's
store, each with its advertised URL, whether it is alive, its last heartbeat, its peers and
its lag behind the database.

Pure and Qt-free. The network shell builds the report from the store's node registry
(:mod:`engine.net.cluster`); a node whose store is not shared (SQLite) reports a cluster of
one, itself (``shared: false``). A remote reader (the CLI, the inspector) reads it back with
:meth:`ClusterReport.from_json`, which tolerates fields another version may add or leave out
and refuses a reply that is not a report (:class:`~engine.errors.InvalidInput`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import InvalidInput

__all__ = ["ClusterNode", "ClusterReport", "PEER_ROW_FIELDS", "compact_peer_row"]

#: The fields of a peer row a heartbeat carries (of :class:`engine.sync.peers.PeerInfo`):
#: enough to see who is connected where and how far behind, small enough to beat often.
PEER_ROW_FIELDS = ("peer_id", "account", "kind", "behind")


def compact_peer_row(row: dict[str, Any]) -> dict[str, Any]:
    """The :data:`PEER_ROW_FIELDS` of a ``peers`` row."""
    return {name: row[name] for name in PEER_ROW_FIELDS if name in row}


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One node of the cluster. Times are milliseconds by the database's clock (the one all
    nodes share): ``started_ms``, ``beat_ms`` (its last heartbeat) and ``age_ms`` (how long
    ago that was when the report was made). ``alive`` is False once the node missed the
    registry's number of heartbeats. ``this`` marks the node that answered. ``cursor`` and
    ``lag`` (changes of the database this node has not caught up with) are None when the node
    does not report them."""

    node: str
    account: str
    url: str
    alive: bool
    started_ms: int
    beat_ms: int
    age_ms: int
    interval_ms: int
    peers: int
    peer_rows: tuple[dict[str, Any], ...] = ()
    cursor: int | None = None
    lag: int | None = None
    this: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "account": self.account,
            "url": self.url,
            "alive": self.alive,
            "started_ms": self.started_ms,
            "beat_ms": self.beat_ms,
            "age_ms": self.age_ms,
            "interval_ms": self.interval_ms,
            "peers": self.peers,
            "peer_rows": [dict(row) for row in self.peer_rows],
            "cursor": self.cursor,
            "lag": self.lag,
            "this": self.this,
        }

    @classmethod
    def from_json(cls, row: Any) -> ClusterNode:
        """Raises :class:`InvalidInput` for a row without a node id and URL."""
        if not isinstance(row, dict) or not isinstance(row.get("node"), str) or not isinstance(row.get("url"), str):
            raise InvalidInput(f"a cluster row needs a node id and a url: {str(row)[:200]}")
        rows = row.get("peer_rows")
        return cls(
            node=row["node"],
            account=str(row.get("account", "")),
            url=row["url"],
            alive=row.get("alive") is True,
            started_ms=_int(row.get("started_ms")) or 0,
            beat_ms=_int(row.get("beat_ms")) or 0,
            age_ms=_int(row.get("age_ms")) or 0,
            interval_ms=_int(row.get("interval_ms")) or 0,
            peers=_int(row.get("peers")) or 0,
            peer_rows=tuple(r for r in rows if isinstance(r, dict)) if isinstance(rows, list) else (),
            cursor=_int(row.get("cursor")),
            lag=_int(row.get("lag")),
            this=row.get("this") is True,
        )


@dataclass(frozen=True, slots=True)
class ClusterReport:
    """The answer to ``cluster``: ``node`` is the answering node's id; ``shared`` False when
    its store is not shared (the cluster is that node alone); ``note`` says anything a reader
    should know (a registry that could not be read lately); ``nodes_dropped`` counts rows cut
    to fit one frame."""

    node: str
    shared: bool
    nodes: tuple[ClusterNode, ...] = field(default_factory=tuple)
    note: str = ""
    nodes_dropped: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "shared": self.shared,
            "note": self.note,
            "nodes": [n.to_json() for n in self.nodes],
        }
        if self.nodes_dropped:
            out["nodes_dropped"] = self.nodes_dropped
        return out

    @classmethod
    def from_json(cls, data: Any) -> ClusterReport:
        """Raises :class:`InvalidInput` for a reply that is not a map with a list of nodes."""
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise InvalidInput("a cluster reply is a map with a list of nodes")
        return cls(
            node=str(data.get("node", "")),
            shared=data.get("shared") is True,
            nodes=tuple(ClusterNode.from_json(row) for row in data["nodes"]),
            note=str(data.get("note", "")),
            nodes_dropped=_int(data.get("nodes_dropped")) or 0,
        )


def _int(value: Any) -> int | None:
    return value if type(value) is int else None
