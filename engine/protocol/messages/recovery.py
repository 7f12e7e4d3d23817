"""Recovery messages (DESIGN §6, §7.2): the REPLACE exchange with one chosen peer.

``recover_open{rid, xid, scope}`` asks a peer for the current state of a scope;
``recover_page{rid, xid, page, items, last}`` carries it, one page at a time;
``recover_next{xid, page}`` asks for the next page once the previous one was taken in.

Rules this module keeps (normative; docs/protocol.md, "Recovery"):

- ``xid`` is 16 random bytes chosen by the requester for every exchange; a peer never
  serves two exchanges with one ``xid`` (a retry is a new exchange).
- A scope is ``{"covalues": [id, ...]}`` (at most :data:`MAX_SCOPE_COVALUES`), optionally
  with ``"sessions": [sid, ...]`` to recover only those sessions of a single CoValue, or
  ``{"group": id}``: the group and every CoValue it owns.
- An item is ``{"id", "header", "deleted", "sessions": {sid: chunk}}``; ``header`` null
  means the peer does not hold that id *or may not show it to the requester*: the two are
  the same bytes. A CoValue's sessions may continue on later pages (each chunk's ``after``
  says where); nothing is applied before ``last``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.errors import InvalidContent
from engine.ids import CoValueID, SessionID, parse_covalue_id, parse_session_id
from engine.model.header import Header
from engine.model.session_log import Chunk
from engine.protocol.messages.base import (
    Message,
    chunk_to_obj,
    exact_keys,
    need,
    nonneg_int,
    sessions_map,
)

__all__ = [
    "MAX_PAGE_ITEMS",
    "MAX_SCOPE_COVALUES",
    "XID_SIZE",
    "RecoverItem",
    "RecoverNext",
    "RecoverOpen",
    "RecoverPage",
    "RecoveryScope",
]

#: Bytes of an exchange id.
XID_SIZE = 16
#: Most CoValues one scope may name.
MAX_SCOPE_COVALUES = 1000
#: Most sessions a session-scoped recovery may name.
MAX_SCOPE_SESSIONS = 256
#: Most items on one page.
MAX_PAGE_ITEMS = 4096


def _xid(obj: dict[str, Any]) -> bytes:
    value = obj.get("xid")
    need(isinstance(value, bytes) and len(value) == XID_SIZE, f"xid must be {XID_SIZE} bytes")
    assert isinstance(value, bytes)
    return value


@dataclass(frozen=True, slots=True)
class RecoveryScope:
    """What to recover: ``covalues`` (with ``sessions``: only those sessions of the one
    CoValue named), or ``group``: the group and every CoValue it owns."""

    covalues: tuple[CoValueID, ...] = ()
    group: CoValueID | None = None
    sessions: tuple[SessionID, ...] | None = None

    def to_obj(self) -> dict[str, Any]:
        if self.group is not None:
            return {"group": self.group}
        obj: dict[str, Any] = {"covalues": list(self.covalues)}
        if self.sessions is not None:
            obj["sessions"] = list(self.sessions)
        return obj

    @classmethod
    def from_obj(cls, obj: object) -> RecoveryScope:
        need(isinstance(obj, dict), "a scope is a map")
        assert isinstance(obj, dict)
        if "group" in obj:
            exact_keys(obj, {"group"})
            return cls(group=parse_covalue_id(obj["group"]))
        exact_keys(obj, {"covalues"}, frozenset({"sessions"}))
        ids = obj["covalues"]
        need(isinstance(ids, list) and 0 < len(ids) <= MAX_SCOPE_COVALUES, "covalues must list 1 to 1000 ids")
        covalues = tuple(parse_covalue_id(c) for c in ids)
        sessions = None
        if "sessions" in obj:
            sids = obj["sessions"]
            need(isinstance(sids, list) and 0 < len(sids) <= MAX_SCOPE_SESSIONS, "sessions must list session ids")
            need(len(covalues) == 1, "sessions go with exactly one CoValue")
            for s in sids:
                parse_session_id(s)
            sessions = tuple(SessionID(s) for s in sids)
        return cls(covalues=covalues, sessions=sessions)


@dataclass(frozen=True, slots=True)
class RecoverItem:
    """One CoValue (or the next part of one) on a page. ``header`` None: unknown to the
    peer, or not shown to the requester (the same answer)."""

    id: CoValueID
    header: Header | None
    deleted: bool = False
    sessions: dict[SessionID, Chunk] = field(default_factory=dict)

    def to_obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "header": None if self.header is None else self.header.to_obj(),
            "deleted": self.deleted,
            "sessions": {s: chunk_to_obj(c) for s, c in self.sessions.items()},
        }

    @classmethod
    def from_obj(cls, obj: object) -> RecoverItem:
        need(isinstance(obj, dict), "a recovery item is a map")
        assert isinstance(obj, dict)
        exact_keys(obj, {"id", "header", "deleted", "sessions"})
        cid = parse_covalue_id(obj["id"])
        header = None
        if obj["header"] is not None:
            header = Header.from_obj(obj["header"])
            if header.covalue_id() != cid:
                raise InvalidContent(f"header does not hash to {cid}")
        need(type(obj["deleted"]) is bool, "deleted must be a boolean")
        sessions = sessions_map(obj["sessions"], "sessions")
        need(header is not None or (not sessions and not obj["deleted"]), "an unknown id carries nothing")
        return cls(cid, header, obj["deleted"], sessions)


@dataclass(frozen=True, slots=True)
class RecoverOpen(Message):
    """Start exchange ``xid`` for ``scope``; ``rid`` pairs the pages with this request."""

    T: ClassVar[str] = "recover_open"
    rid: int
    xid: bytes
    scope: RecoveryScope

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "xid": self.xid, "scope": self.scope.to_obj()}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> RecoverOpen:
        exact_keys(obj, {"rid", "xid", "scope"})
        return cls(nonneg_int(obj, "rid"), _xid(obj), RecoveryScope.from_obj(obj["scope"]))


@dataclass(frozen=True, slots=True)
class RecoverPage(Message):
    """Page ``page`` (from 0) of exchange ``xid``; ``last`` says no page follows."""

    T: ClassVar[str] = "recover_page"
    rid: int
    xid: bytes
    page: int
    items: tuple[RecoverItem, ...]
    last: bool

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "rid": self.rid,
            "xid": self.xid,
            "page": self.page,
            "items": [i.to_obj() for i in self.items],
            "last": self.last,
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> RecoverPage:
        exact_keys(obj, {"rid", "xid", "page", "items", "last"})
        items = obj["items"]
        need(isinstance(items, list) and len(items) <= MAX_PAGE_ITEMS, "items must be a list")
        need(type(obj["last"]) is bool, "last must be a boolean")
        return cls(
            nonneg_int(obj, "rid"),
            _xid(obj),
            nonneg_int(obj, "page"),
            tuple(RecoverItem.from_obj(i) for i in items),
            obj["last"],
        )


@dataclass(frozen=True, slots=True)
class RecoverNext(Message):
    """Send page ``page`` of exchange ``xid`` (the one after the last page taken in)."""

    T: ClassVar[str] = "recover_next"
    xid: bytes
    page: int

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "xid": self.xid, "page": self.page}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> RecoverNext:
        exact_keys(obj, {"xid", "page"})
        return cls(_xid(obj), nonneg_int(obj, "page"))
