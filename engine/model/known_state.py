"""KnownState (DESIGN §4): what a replica holds of a CoValue, with each session's head hash.

``sessions[sid] = (count, h(count))`` at a checkpoint. Carrying the head hash lets either side
see a fork from the known state alone, before any content moves: if the peer's count ``n`` is
within our log, our ``h(n)`` must equal the peer's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.crypto import HASH_SIZE
from engine.errors import InvalidContent, InvalidId
from engine.ids import CoValueID, SessionID, parse_covalue_id, parse_session_id

#: Most sessions one known state may list.
MAX_KNOWN_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class KnownState:
    id: CoValueID
    header: bool
    sessions: Mapping[SessionID, tuple[int, bytes]] = field(default_factory=dict)

    def to_obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "header": self.header,
            "sessions": {sid: [n, h] for sid, (n, h) in self.sessions.items()},
        }

    @classmethod
    def from_obj(cls, obj: object) -> KnownState:
        """Validate a decoded known state. Raises :class:`InvalidContent` or :class:`InvalidId`."""
        if not isinstance(obj, dict) or set(obj) != {"id", "header", "sessions"}:
            raise InvalidContent("a known state is a map of id, header, sessions")
        if not isinstance(obj["header"], bool):
            raise InvalidContent("known state header must be a boolean")
        raw = obj["sessions"]
        if not isinstance(raw, dict) or len(raw) > MAX_KNOWN_SESSIONS:
            raise InvalidContent(f"known state sessions must be a map of at most {MAX_KNOWN_SESSIONS}")
        sessions: dict[SessionID, tuple[int, bytes]] = {}
        for sid, entry in raw.items():
            parse_session_id(sid)
            if (
                not isinstance(entry, list)
                or len(entry) != 2
                or type(entry[0]) is not int
                or entry[0] < 0
                or not isinstance(entry[1], bytes)
                or len(entry[1]) != HASH_SIZE
            ):
                raise InvalidContent(f"known state of {sid} must be [count, 32-byte hash]")
            sessions[SessionID(sid)] = (entry[0], entry[1])
        try:
            covalue = parse_covalue_id(obj["id"])
        except InvalidId:
            raise
        return cls(covalue, obj["header"], sessions)
