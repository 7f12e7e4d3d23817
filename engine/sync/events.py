"""What a node tells its operator about sync: sync events, the event ring and the peer log.

Sans-I/O and Qt-free. :class:`SyncEvent` is decided by the sync manager (a fork, a
correction, a rejection); :class:`EventRing` keeps the last :data:`EVENT_RING_SIZE` of them
with gap-free sequence numbers for admins to read with a cursor (``admin{events, after}``).
:class:`PeerLogEntry` records a peer coming or going; the network shell appends them, admins
read them with ``admin{peers}``.

Wire forms (``to_json`` / ``from_json``, :func:`peer_log_json` / :func:`peer_log_from_json`)
tolerate what another node version may add: unknown event kinds are kept as text, unknown
fields are ignored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.errors import ProtocolError
from engine.ids import CoValueID, SessionID, parse_covalue_id, parse_session_id
from engine.protocol.messages import MAX_TEXT

__all__ = [
    "EVENT_RING_SIZE",
    "PEER_LOG_SIZE",
    "FORK_KINDS",
    "EventRing",
    "PeerEvent",
    "PeerLogEntry",
    "SyncEvent",
    "SyncEventKind",
    "peer_log_from_json",
    "peer_log_json",
]

#: Sync events kept for admins to read (``admin{events}``); older ones are dropped first.
EVENT_RING_SIZE = 1000
#: Peer connections and disconnections remembered for the inspector.
PEER_LOG_SIZE = 200


class SyncEventKind(StrEnum):
    """What a sync decision was. The values are the wire text of ``event.kind``."""

    #: the peer's copy of a session disagrees with ours (known state or content)
    FORK_DETECTED = "fork_detected"
    #: content that does not extend our chain, whose signature could not be checked yet
    FORK_SUSPECTED = "fork_suspected"
    #: we sent a downstream peer our authoritative history of a session
    CORRECTION_SENT = "correction_sent"
    #: an upstream's correction verified and replaced our copy
    CORRECTION_APPLIED = "correction_applied"
    #: an upstream's correction did not verify; nothing changed
    CORRECTION_REJECTED = "correction_rejected"
    #: content from a peer was refused (bad signature, broken chain, ...)
    REJECTED = "rejected"


#: Event kinds that put the ``forked`` badge on their CoValue: a fork seen by this replica
#: (``fork_detected``, ``fork_suspected``) or a correction it had to apply because its own
#: copy of a session had forked (``correction_applied``).
FORK_KINDS: frozenset[str] = frozenset(
    {SyncEventKind.FORK_DETECTED, SyncEventKind.FORK_SUSPECTED, SyncEventKind.CORRECTION_APPLIED}
)


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """Something an operator wants to see (the inspector's event stream, the demo report).

    ``kind`` is a :class:`SyncEventKind` (text for a kind another node version made up).
    ``peer`` is the peer id as the deciding replica names it. ``at_ms`` is when it was
    decided, by the host's clock (ms since the epoch; 0 for an event made without a clock).
    """

    kind: SyncEventKind | str
    peer: str
    covalue: CoValueID
    session: SessionID | None = None
    detail: str = ""
    at_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        """The event as admins read it (``admin{events}``)."""
        return {
            "kind": str(self.kind),
            "peer": self.peer,
            "covalue": self.covalue,
            "session": self.session,
            "detail": self.detail[:MAX_TEXT],
            "at_ms": self.at_ms,
        }

    @classmethod
    def from_json(cls, obj: object) -> SyncEvent:
        """An event read from a node. Raises :class:`ProtocolError` (``invalid_message``) or
        :class:`InvalidId` for anything but the shape :meth:`to_json` writes."""
        if not isinstance(obj, dict):
            raise ProtocolError("an event is a map", code="invalid_message")
        texts = ("kind", "peer", "detail")
        if not all(isinstance(obj.get(k), str) and len(obj[k]) <= MAX_TEXT for k in texts):
            raise ProtocolError("event kind, peer and detail must be short text", code="invalid_message")
        at_ms = obj.get("at_ms", 0)
        if type(at_ms) is not int or at_ms < 0:
            raise ProtocolError("event at_ms must be a non-negative integer", code="invalid_message")
        session = None
        if obj.get("session") is not None:
            parse_session_id(obj["session"])
            session = SessionID(obj["session"])
        kind: SyncEventKind | str = obj["kind"]
        if kind in SyncEventKind._value2member_map_:
            kind = SyncEventKind(kind)
        return cls(kind, obj["peer"], parse_covalue_id(obj.get("covalue")), session, obj["detail"], at_ms)


class EventRing:
    """The last ``size`` sync events, oldest first, numbered without gaps.

    The newest event has sequence number :attr:`seq` (numbers start at 1). :attr:`epoch`
    names this numbering: a reader whose cursor came from another epoch (the node restarted)
    starts over.
    """

    def __init__(self, epoch: int, size: int = EVENT_RING_SIZE) -> None:
        self.events: deque[SyncEvent] = deque(maxlen=size)
        self.seq = 0
        self.epoch = epoch

    def append(self, event: SyncEvent) -> None:
        self.events.append(event)
        self.seq += 1


class PeerEvent(StrEnum):
    """A peer came (``up``) or went (``down``)."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class PeerLogEntry:
    """A peer came or went. ``close_code`` is the WebSocket close code when it went;
    ``lagged`` says the node closed it for not reading fast enough. ``event`` is a
    :class:`PeerEvent` (text for one another node version made up)."""

    at_ms: int
    peer_id: str
    event: PeerEvent | str
    close_code: int | None = None
    lagged: bool = False


def peer_log_json(entries: Iterable[PeerLogEntry]) -> list[dict[str, Any]]:
    """Peer log entries as an admin ``peers`` reply carries them, in the given order:
    ``{at_ms, peer_id, event: up|down, close_code, lagged}``."""
    return [
        {"at_ms": e.at_ms, "peer_id": e.peer_id, "event": str(e.event), "close_code": e.close_code, "lagged": e.lagged}
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
        event: PeerEvent | str = row["event"]
        if event in PeerEvent._value2member_map_:
            event = PeerEvent(event)
        out.append(
            PeerLogEntry(
                at_ms if type(at_ms) is int else 0,
                row["peer_id"],
                event,
                code if type(code) is int else None,
                row.get("lagged") is True,
            )
        )
    return out
