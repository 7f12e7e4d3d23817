"""Sync messages (DESIGN §6, normative): ``load``, ``known``, ``content``, ``done``,
``deleted``, ``correction``.

Rules this module keeps:

- Ids are parsed (``invalid_id`` otherwise); a known state inside ``load``/``known`` must name
  the same CoValue as the message.
- A ``content`` header must hash to the message's id (``invalid_content`` otherwise), so a
  peer cannot attach someone else's header to an id.
- ``deleted`` carries a non-empty tombstone of delete sessions only.
- ``correction`` carries one chunk of ``sid`` from ``fork`` on and ``head = [n, h(n)]``,
  where ``n`` is exactly where that chunk ends and ``h`` is 32 bytes.

Only shape is checked here; chains and signatures are verified where content is applied
(``engine.covalue``), and what a peer may ask for is decided by ``engine.sync``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.crypto import HASH_SIZE
from engine.errors import InvalidContent
from engine.ids import CoValueID, SessionID, is_delete_session, parse_covalue_id, parse_session_id
from engine.model.header import Header
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk
from engine.protocol.messages.base import Message, chunk_from_obj, chunk_to_obj, exact_keys, need, sessions_map

__all__ = ["Content", "Correction", "Deleted", "Done", "Known", "Load"]

#: Bytes per transaction, per checkpoint signature, per session and per message that
#: :meth:`Content.size_hint` adds to the transactions' own bytes (CBOR framing, ids).
_TX_OVERHEAD = 2
_SIG_OVERHEAD = 70
_SESSION_OVERHEAD = 120
_MESSAGE_OVERHEAD = 400


def _known(obj: dict[str, Any], cid: CoValueID) -> KnownState:
    known = KnownState.from_obj(obj["known"])
    need(known.id == cid, "known state names another CoValue")
    return known


@dataclass(frozen=True, slots=True)
class Load(Message):
    """Ask for a CoValue, telling what we already hold of it."""

    T: ClassVar[str] = "load"
    id: CoValueID
    known: KnownState

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "id": self.id, "known": self.known.to_obj()}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Load:
        exact_keys(obj, {"id", "known"})
        cid = parse_covalue_id(obj["id"])
        return cls(cid, _known(obj, cid))


@dataclass(frozen=True, slots=True)
class Known(Message):
    """What the sender durably holds of a CoValue (also the acknowledgement of content)."""

    T: ClassVar[str] = "known"
    id: CoValueID
    known: KnownState

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "id": self.id, "known": self.known.to_obj()}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Known:
        exact_keys(obj, {"id", "known"})
        cid = parse_covalue_id(obj["id"])
        return cls(cid, _known(obj, cid))


@dataclass(frozen=True, slots=True)
class Content(Message):
    """New transactions of a CoValue, per session, with the header when the receiver lacks it."""

    T: ClassVar[str] = "content"
    id: CoValueID
    header: Header | None
    new: dict[SessionID, Chunk] = field(default_factory=dict)

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"t": self.T, "id": self.id, "new": {s: chunk_to_obj(c) for s, c in self.new.items()}}
        if self.header is not None:
            obj["header"] = self.header.to_obj()
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Content:
        exact_keys(obj, {"id", "new"}, frozenset({"header"}))
        cid = parse_covalue_id(obj["id"])
        header = None
        if "header" in obj:
            header = Header.from_obj(obj["header"])
            if header.covalue_id() != cid:
                raise InvalidContent(f"header does not hash to {cid}")
        return cls(cid, header, sessions_map(obj["new"], "new"))

    def size_hint(self) -> int:
        """About how many bytes this message encodes to (without encoding it)."""
        return (
            sum(
                sum(len(tx) + _TX_OVERHEAD for tx in c.txs) + _SIG_OVERHEAD * len(c.sigs) + _SESSION_OVERHEAD
                for c in self.new.values()
            )
            + _MESSAGE_OVERHEAD
        )


@dataclass(frozen=True, slots=True)
class Done(Message):
    """The sender has sent everything it had for a CoValue."""

    T: ClassVar[str] = "done"
    id: CoValueID

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "id": self.id}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Done:
        exact_keys(obj, {"id"})
        return cls(parse_covalue_id(obj["id"]))


@dataclass(frozen=True, slots=True)
class Deleted(Message):
    """The CoValue is deleted; ``tombstone`` holds its delete sessions (verifiable)."""

    T: ClassVar[str] = "deleted"
    id: CoValueID
    tombstone: dict[SessionID, Chunk]

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "id": self.id, "tombstone": {s: chunk_to_obj(c) for s, c in self.tombstone.items()}}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Deleted:
        exact_keys(obj, {"id", "tombstone"})
        tombstone = sessions_map(obj["tombstone"], "tombstone")
        need(bool(tombstone) and all(is_delete_session(s) for s in tombstone), "a tombstone holds delete sessions only")
        return cls(parse_covalue_id(obj["id"]), tombstone)


@dataclass(frozen=True, slots=True)
class Correction(Message):
    """The authoritative history of ``sid`` from ``fork`` on, ending at ``head = (n, h(n))``."""

    T: ClassVar[str] = "correction"
    id: CoValueID
    sid: SessionID
    fork: int
    txs: tuple[bytes, ...]
    sigs: dict[int, bytes]
    head: tuple[int, bytes]

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "id": self.id,
            "sid": self.sid,
            "fork": self.fork,
            "txs": list(self.txs),
            "sigs": dict(self.sigs),
            "head": [self.head[0], self.head[1]],
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Correction:
        exact_keys(obj, {"id", "sid", "fork", "txs", "sigs", "head"})
        parse_session_id(obj["sid"])
        chunk = chunk_from_obj({"after": obj["fork"], "txs": obj["txs"], "sigs": obj["sigs"]})
        head = obj["head"]
        need(
            isinstance(head, list)
            and len(head) == 2
            and type(head[0]) is int
            and isinstance(head[1], bytes)
            and len(head[1]) == HASH_SIZE,
            "head must be [count, 32-byte hash]",
        )
        need(head[0] == chunk.end, "head count must be where the corrected history ends")
        return cls(
            parse_covalue_id(obj["id"]),
            SessionID(obj["sid"]),
            chunk.after,
            tuple(chunk.txs),
            dict(chunk.sigs),
            (head[0], head[1]),
        )

    def chunk(self) -> Chunk:
        """The corrected history as a chunk starting at ``fork``."""
        return Chunk(self.fork, self.txs, self.sigs)
