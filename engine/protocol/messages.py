"""Wire messages (DESIGN §6, normative): frozen dataclasses that validate on decoding.

Each message is a CBOR map with ``"t"`` naming its type. :func:`decode_message` turns a
decoded map into a message or raises :class:`engine.errors.ProtocolError` (code
``unknown_message`` or ``invalid_message``) or an id/header/content error with its own code;
it never returns something half-checked. ``to_obj`` gives the map to encode.

Content on the wire: ``new`` maps a SessionID to ``{"after": n, "txs": [bytes...],
"sigs": {n: sig}}``; a chunk always ends at a checkpoint (``after + len(txs)`` in ``sigs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.crypto import HASH_SIZE, SIGNATURE_SIZE
from engine.errors import InvalidContent, KintsugiError, ProtocolError
from engine.ids import (
    AccountID,
    CoValueID,
    SessionID,
    is_delete_session,
    parse_account_id,
    parse_covalue_id,
    parse_session_id,
)
from engine.model.header import Header
from engine.model.known_state import MAX_KNOWN_SESSIONS, KnownState
from engine.model.session_log import Chunk
from engine.model.transaction import MAX_TRANSACTION_SIZE

#: Longest free-text field (error details, versions).
MAX_TEXT = 2000
#: Most transactions in one session chunk of one content message.
MAX_CHUNK_TRANSACTIONS = 100_000
NONCE_SIZE = 32
HELLO_DOMAIN = b"kintsugi/hello/v1"


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ProtocolError(what, code="invalid_message")


def _text(obj: dict[str, Any], key: str, *, optional: bool = False) -> str:
    value = obj.get(key)
    if value is None and optional:
        return ""
    _need(isinstance(value, str) and len(value) <= MAX_TEXT, f"{key} must be text of at most {MAX_TEXT} characters")
    return str(value)


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if type(value) is not int or not 0 <= value < 2**63:
        raise ProtocolError(f"{key} must be a non-negative integer", code="invalid_message")
    return value


def _keys(obj: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()) -> None:
    keys = set(obj)
    missing = required - keys
    extra = keys - required - optional - {"t"}
    _need(not missing and not extra, f"fields missing {sorted(missing)} or unexpected {sorted(map(str, extra))}")


def _features(obj: dict[str, Any]) -> tuple[str, ...]:
    value = obj.get("features")
    _need(
        isinstance(value, list) and len(value) <= 64 and all(isinstance(f, str) and len(f) <= 64 for f in value),
        "features must be a list of short strings",
    )
    return tuple(value)  # type: ignore[arg-type]


def chunk_to_obj(chunk: Chunk) -> dict[str, Any]:
    return {"after": chunk.after, "txs": list(chunk.txs), "sigs": dict(chunk.sigs)}


def chunk_from_obj(obj: object) -> Chunk:
    _need(isinstance(obj, dict), "a session chunk is a map")
    assert isinstance(obj, dict)
    _keys(obj, {"after", "txs", "sigs"})
    after = _int(obj, "after")
    txs, sigs = obj["txs"], obj["sigs"]
    _need(isinstance(txs, list) and len(txs) <= MAX_CHUNK_TRANSACTIONS, "txs must be a list")
    _need(
        not txs or (set(map(type, txs)) == {bytes} and max(map(len, txs)) <= MAX_TRANSACTION_SIZE),
        "transactions are bytes of at most the transaction size limit",
    )
    _need(isinstance(sigs, dict) and len(sigs) <= len(txs), "sigs must map checkpoints to signatures")
    for n, sig in sigs.items():
        _need(type(n) is int and isinstance(sig, bytes) and len(sig) == SIGNATURE_SIZE, "bad checkpoint signature")
    return Chunk(after, txs, sigs)


def _sessions_map(obj: object, what: str) -> dict[SessionID, Chunk]:
    _need(isinstance(obj, dict) and len(obj) <= MAX_KNOWN_SESSIONS, f"{what} must map sessions to chunks")
    assert isinstance(obj, dict)
    out: dict[SessionID, Chunk] = {}
    for sid, chunk in obj.items():
        parse_session_id(sid)
        out[SessionID(sid)] = chunk_from_obj(chunk)
    return out


@dataclass(frozen=True, slots=True)
class Message:
    T: ClassVar[str] = ""

    def to_obj(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Message:
        raise NotImplementedError


# -- handshake ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge(Message):
    T: ClassVar[str] = "challenge"
    node: str
    nonce: bytes
    proto: int
    version: str
    features: tuple[str, ...] = ()

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "node": self.node,
            "nonce": self.nonce,
            "proto": self.proto,
            "version": self.version,
            "features": list(self.features),
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Challenge:
        _keys(obj, {"node", "nonce", "proto", "version", "features"})
        nonce = obj["nonce"]
        _need(isinstance(nonce, bytes) and len(nonce) == NONCE_SIZE, f"nonce must be {NONCE_SIZE} bytes")
        return cls(_text(obj, "node"), nonce, _int(obj, "proto"), _text(obj, "version"), _features(obj))


def hello_message(nonce: bytes, node: str) -> bytes:
    """What a hello signs: a domain tag, the node's nonce and the node's name.

    The domain tag keeps a hostile node from choosing a nonce that makes the signature valid
    for anything else (a chain checkpoint, say).
    """
    return HELLO_DOMAIN + nonce + node.encode()


@dataclass(frozen=True, slots=True)
class Hello(Message):
    T: ClassVar[str] = "hello"
    account: AccountID
    role: str
    sig: bytes
    version: str
    features: tuple[str, ...] = ()

    ROLES: ClassVar[tuple[str, ...]] = ("client", "node", "inspector")

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "account": self.account,
            "role": self.role,
            "sig": self.sig,
            "version": self.version,
            "features": list(self.features),
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Hello:
        _keys(obj, {"account", "role", "sig", "version", "features"})
        _need(obj["role"] in cls.ROLES, f"role must be one of {cls.ROLES}")
        _need(isinstance(obj["sig"], bytes) and len(obj["sig"]) == SIGNATURE_SIZE, "sig must be 64 bytes")
        return cls(parse_account_id(obj["account"]), obj["role"], obj["sig"], _text(obj, "version"), _features(obj))


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    T: ClassVar[str] = "welcome"
    admin: bool

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "admin": self.admin}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Welcome:
        _keys(obj, {"admin"})
        _need(isinstance(obj["admin"], bool), "admin must be a boolean")
        return cls(obj["admin"])


@dataclass(frozen=True, slots=True)
class Error(Message):
    T: ClassVar[str] = "error"
    code: str
    detail: str = ""
    id: CoValueID | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"t": self.T, "code": self.code, "detail": self.detail[:MAX_TEXT]}
        if self.id is not None:
            obj["id"] = self.id
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Error:
        _keys(obj, {"code", "detail"}, frozenset({"id"}))
        cid = parse_covalue_id(obj["id"]) if "id" in obj else None
        return cls(_text(obj, "code"), _text(obj, "detail"), cid)

    @classmethod
    def of(cls, exc: KintsugiError, covalue: CoValueID | None = None) -> Error:
        return cls(exc.code, exc.detail or exc.code, covalue)


# -- sync ----------------------------------------------------------------------------------------


def _known(obj: dict[str, Any], cid: CoValueID) -> KnownState:
    known = KnownState.from_obj(obj["known"])
    _need(known.id == cid, "known state names another CoValue")
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
        _keys(obj, {"id", "known"})
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
        _keys(obj, {"id", "known"})
        cid = parse_covalue_id(obj["id"])
        return cls(cid, _known(obj, cid))


@dataclass(frozen=True, slots=True)
class Content(Message):
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
        _keys(obj, {"id", "new"}, frozenset({"header"}))
        cid = parse_covalue_id(obj["id"])
        header = None
        if "header" in obj:
            header = Header.from_obj(obj["header"])
            if header.covalue_id() != cid:
                raise InvalidContent(f"header does not hash to {cid}")
        return cls(cid, header, _sessions_map(obj["new"], "new"))

    def size_hint(self) -> int:
        return sum(sum(len(tx) + 2 for tx in c.txs) + 70 * len(c.sigs) + 120 for c in self.new.values()) + 400


@dataclass(frozen=True, slots=True)
class Done(Message):
    T: ClassVar[str] = "done"
    id: CoValueID

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "id": self.id}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Done:
        _keys(obj, {"id"})
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
        _keys(obj, {"id", "tombstone"})
        tombstone = _sessions_map(obj["tombstone"], "tombstone")
        _need(
            bool(tombstone) and all(is_delete_session(s) for s in tombstone), "a tombstone holds delete sessions only"
        )
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
        _keys(obj, {"id", "sid", "fork", "txs", "sigs", "head"})
        parse_session_id(obj["sid"])
        chunk = chunk_from_obj({"after": obj["fork"], "txs": obj["txs"], "sigs": obj["sigs"]})
        head = obj["head"]
        _need(
            isinstance(head, list)
            and len(head) == 2
            and type(head[0]) is int
            and isinstance(head[1], bytes)
            and len(head[1]) == HASH_SIZE,
            "head must be [count, 32-byte hash]",
        )
        _need(head[0] == chunk.end, "head count must be where the corrected history ends")
        return cls(
            parse_covalue_id(obj["id"]),
            SessionID(obj["sid"]),
            chunk.after,
            tuple(chunk.txs),
            dict(chunk.sigs),
            (head[0], head[1]),
        )

    def chunk(self) -> Chunk:
        return Chunk(self.fork, self.txs, self.sigs)


# -- listing (inspect over the network) -------------------------------------------------------

#: Most CAS records one ``admin{kv_slot}`` reply carries, newest kept (a store keeps at most
#: 256 per key, so by default a whole history fits). A request may ask for fewer.
MAX_ADMIN_HISTORY = 256
#: Most sync events one ``admin{events}`` reply carries, oldest first from the cursor; a
#: request may ask for fewer. The rest come with the next request.
MAX_ADMIN_EVENTS = 256


@dataclass(frozen=True, slots=True)
class Admin(Message):
    """An operator request; the answer is an :class:`AdminResult` with the same ``rid``.

    Ops (``args`` in brackets; see :func:`admin_args`):

    - ``list`` (none): CoValue ids and CAS namespaces the caller may see.
    - ``peers`` (none; admins only): connected peers with lag and queue depth, and the peer
      log (connections and disconnections, with close codes and the lagged flag).
    - ``kv_slot`` (``namespace``, ``key``, ``history``?): one CAS slot with its value and
      its newest ``history`` CAS records (at most :data:`MAX_ADMIN_HISTORY`); the caller's own
      namespace, or any for admins.
    - ``events`` (``after``?, ``limit``?; admins only): the node's recent sync events with a
      sequence number above ``after``, at most ``limit`` (:data:`MAX_ADMIN_EVENTS`).

    Decoding checks the op and that ``args`` is a map, nothing more, so a node always knows
    the ``rid`` to answer; the arguments of each op are checked by :func:`admin_args` when
    the request is handled, and bad ones get ``admin_result{ok: false, code}``.
    """

    T: ClassVar[str] = "admin"
    rid: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)

    OPS: ClassVar[tuple[str, ...]] = ("list", "peers", "kv_slot", "events")

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "op": self.op, "args": self.args}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Admin:
        _keys(obj, {"rid", "op", "args"}, frozenset({"intent"}))
        _need(obj["op"] in cls.OPS, f"unknown admin op {obj['op']!r}")
        _need(isinstance(obj["args"], dict), "args must be a map")
        return cls(_int(obj, "rid"), obj["op"], obj["args"])

    @classmethod
    def kv_slot(cls, rid: int, namespace: str, key: str, history: int = MAX_ADMIN_HISTORY) -> Admin:
        return cls(rid, "kv_slot", {"namespace": namespace, "key": key, "history": history})

    @classmethod
    def events(cls, rid: int, after: int = 0, limit: int = MAX_ADMIN_EVENTS) -> Admin:
        return cls(rid, "events", {"after": after, "limit": limit})


@dataclass(frozen=True, slots=True)
class NoArgs:
    """Arguments of ``list`` and ``peers``: none (whatever is sent is ignored, as it always was)."""


@dataclass(frozen=True, slots=True)
class KvSlotArgs:
    """Arguments of ``kv_slot``: which slot, and how many of its newest CAS records to send."""

    namespace: str
    key: str
    history: int = MAX_ADMIN_HISTORY


@dataclass(frozen=True, slots=True)
class EventsArgs:
    """Arguments of ``events``: events with a sequence number above ``after``, at most ``limit``."""

    after: int = 0
    limit: int = MAX_ADMIN_EVENTS


AdminArgs = NoArgs | KvSlotArgs | EventsArgs


def _bounded_int(args: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    if key not in args:
        return default
    value = args[key]
    _need(type(value) is int and low <= value <= high, f"{key} must be an integer in {low}..{high}")
    return int(value)


def admin_args(message: Admin) -> AdminArgs:
    """The checked arguments of an admin request. Raises :class:`ProtocolError`
    (``invalid_message``) for missing, extra or ill-typed arguments of ``kv_slot`` and
    ``events``."""
    args = message.args
    if message.op == "kv_slot":
        _keys(args, {"namespace", "key"}, frozenset({"history"}))
        history = _bounded_int(args, "history", MAX_ADMIN_HISTORY, 0, MAX_ADMIN_HISTORY)
        return KvSlotArgs(_text(args, "namespace"), _text(args, "key"), history)
    if message.op == "events":
        _keys(args, set(), frozenset({"after", "limit"}))
        after = _bounded_int(args, "after", 0, 0, 2**63 - 1)
        return EventsArgs(after, _bounded_int(args, "limit", MAX_ADMIN_EVENTS, 1, MAX_ADMIN_EVENTS))
    return NoArgs()


@dataclass(frozen=True, slots=True)
class AdminResult(Message):
    T: ClassVar[str] = "admin_result"
    rid: int
    ok: bool
    result: Any

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "ok": self.ok, "result": self.result}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> AdminResult:
        _keys(obj, {"rid", "ok", "result"})
        _need(isinstance(obj["ok"], bool), "ok must be a boolean")
        return cls(_int(obj, "rid"), obj["ok"], obj["result"])


@dataclass(frozen=True, slots=True)
class KvList(Message):
    """List CAS slots of a namespace (an account's own; admins any) — values left out."""

    T: ClassVar[str] = "kv_list"
    rid: int
    namespace: str
    prefix: str = ""

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "namespace": self.namespace, "prefix": self.prefix}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvList:
        _keys(obj, {"rid", "namespace", "prefix"})
        return cls(_int(obj, "rid"), _text(obj, "namespace"), _text(obj, "prefix"))


@dataclass(frozen=True, slots=True)
class KvKeys(Message):
    T: ClassVar[str] = "kv_keys"
    rid: int
    namespace: str
    items: list[dict[str, Any]]

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "namespace": self.namespace, "items": self.items}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvKeys:
        _keys(obj, {"rid", "namespace", "items"})
        items = obj["items"]
        _need(isinstance(items, list) and all(isinstance(i, dict) for i in items), "items must be a list of maps")
        return cls(_int(obj, "rid"), _text(obj, "namespace"), items)


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.T: cls
    for cls in (
        Challenge,
        Hello,
        Welcome,
        Error,
        Load,
        Known,
        Content,
        Done,
        Deleted,
        Correction,
        Admin,
        AdminResult,
        KvList,
        KvKeys,
    )
}


def decode_message(obj: object) -> Message:
    """Validate a decoded CBOR map as a message. Raises :class:`KintsugiError` subclasses."""
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ProtocolError("a message is a map with a type t", code="invalid_message")
    cls = MESSAGE_TYPES.get(obj["t"])
    if cls is None:
        raise ProtocolError(f"unknown message type {obj['t'][:40]!r}", code="unknown_message")
    return cls.from_obj(obj)
