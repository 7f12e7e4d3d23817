"""Peers of a node as the inspector and the CLI show them: who is connected, how far behind
each one is (by known state), how much waits in its outgoing queue.

Pure and Qt-free: reads the sync manager's beliefs and each connection's queue figures
(anything with :class:`QueueStats`' attributes), changes nothing.

Over the wire, an admin's ``peers`` request gets the :class:`PeerInfo` rows and the peer log
(:func:`engine.sync.events.peer_log_json`); a remote inspector reads them back with
:func:`peer_info_from_json`, which tolerates fields another node version may add or leave
out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from engine.ids import CoValueID

if TYPE_CHECKING:
    from engine.covalue import CoValueCore
    from engine.sync.manager import SyncManager

__all__ = ["PeerInfo", "QueueStats", "peer_info_from_json", "peer_report"]


class QueueStats(Protocol):
    """What a connection tells about its outgoing queue."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def queued_bytes(self) -> int: ...

    @property
    def backlog_depth(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One connected peer. ``behind`` counts transactions this node holds (of the CoValues the
    peer follows) that the peer has not acknowledged holding (its last load/known)."""

    peer_id: str
    direction: str  # "in" (it connected to us) or "out" (we connected to it)
    account: str
    kind: str
    admin: bool
    following: int
    behind: int
    queue_frames: int
    queue_bytes: int
    backlog: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def peer_report(
    manager: SyncManager, held: Mapping[CoValueID, CoValueCore], queues: Mapping[str, QueueStats]
) -> list[PeerInfo]:
    """Every peer ``manager`` knows, sorted by peer id. ``held`` is what the node holds in
    memory (what a peer follows is loaded); ``queues`` gives each connected peer's queue
    figures (a peer without an entry shows empty queues). A peer id starting with ``out:`` is
    a connection this node opened."""
    out = []
    for peer_id, peer in sorted(manager.peers.items()):
        behind = 0
        for cid in peer.interested:
            core = held.get(cid)
            if core is None:
                continue
            theirs = peer.acked.get(cid, {})
            for sid, log in core.sessions.items():
                behind += max(0, log.signed_count - theirs.get(sid, (0, b""))[0])
        conn = queues.get(peer_id)
        out.append(
            PeerInfo(
                peer_id,
                "out" if peer_id.startswith("out:") else "in",
                peer.account,
                peer.kind.value,
                peer.admin,
                len(peer.interested),
                behind,
                conn.queue_depth if conn is not None else 0,
                conn.queued_bytes if conn is not None else 0,
                conn.backlog_depth if conn is not None else 0,
            )
        )
    return out


_PEER_FIELDS = {f.name: f for f in dataclasses.fields(PeerInfo)}


def peer_info_from_json(row: dict[str, Any]) -> PeerInfo:
    """A ``peers`` row from the wire; fields this build does not know are ignored, missing
    ones take a neutral value (another node version may send other fields)."""
    values: dict[str, Any] = {}
    for name, spec in _PEER_FIELDS.items():
        default: Any = 0 if spec.type in ("int", int) else False if spec.type in ("bool", bool) else ""
        values[name] = row.get(name, default)
    return PeerInfo(**values)
