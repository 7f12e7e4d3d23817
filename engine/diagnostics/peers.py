"""Peers of a node as the inspector and the CLI show them: who is connected, how far behind
each one is (by known state), how much waits in its outgoing queue, and who lagged.

Qt-free; reads the sync manager's beliefs and the shell's connections, changes nothing.

Over the wire, an admin's ``peers`` request gets the :class:`PeerInfo` rows and the shell's
peer log (:func:`peer_log_json`); a remote inspector reads them back with
:func:`peer_info_from_json` and :func:`peer_log_from_json`, which tolerate fields another
node version may add or leave out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from engine.net.shell import PeerLogEntry

if TYPE_CHECKING:
    from engine.net.shell import SyncShell

__all__ = ["PeerInfo", "peer_info_from_json", "peer_log_from_json", "peer_log_json", "peer_report"]


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


def peer_log_json(entries: Iterable[PeerLogEntry]) -> list[dict[str, Any]]:
    """Peer log entries as an admin ``peers`` reply carries them, in the given order:
    ``{at_ms, peer_id, event: up|down, close_code, lagged}``."""
    return [
        {"at_ms": e.at_ms, "peer_id": e.peer_id, "event": e.event, "close_code": e.close_code, "lagged": e.lagged}
        for e in entries
    ]


def peer_log_from_json(rows: object) -> list[PeerLogEntry]:
    """Peer log entries read from a node's ``peers`` reply; rows that are not entries (not a
    map, or without a text ``peer_id`` and ``event``) are skipped, unknown fields ignored."""
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not (isinstance(row, dict) and isinstance(row.get("peer_id"), str) and isinstance(row.get("event"), str)):
            continue
        at_ms, code = row.get("at_ms"), row.get("close_code")
        out.append(
            PeerLogEntry(
                at_ms if type(at_ms) is int else 0,
                row["peer_id"],
                row["event"],
                code if type(code) is int else None,
                row.get("lagged") is True,
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
