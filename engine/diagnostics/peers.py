"""Peers of a node as the inspector and the CLI show them: who is connected, how far behind
each one is (by known state), how much waits in its outgoing queue, and who lagged.

Qt-free; reads the sync manager's beliefs and the shell's connections, changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.net.shell import SyncShell


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


def peer_report(shell: SyncShell) -> list[PeerInfo]:
    """Every connected peer of ``shell``'s node, sorted by peer id."""
    node = shell.node
    out = []
    for peer_id, peer in sorted(shell.manager.peers.items()):
        behind = 0
        for cid in peer.interested:
            core = node.covalues.get(cid)
            if core is None:
                continue
            theirs = peer.acked.get(cid, {})
            for sid, log in core.sessions.items():
                behind += max(0, log.signed_count - theirs.get(sid, (0, b""))[0])
        conn = shell.connections.get(peer_id)
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
