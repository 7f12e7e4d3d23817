"""Admin messages (DESIGN §6): an operator's ``admin{rid, op, args}`` and its
``admin_result{rid, ok, result}``.

Rules this module keeps:

- Decoding an ``admin`` checks only its ``rid``, that ``op`` is one of :attr:`Admin.OPS` and
  that ``args`` is a map, so a node always knows which ``rid`` to answer; each op's
  arguments are checked by :func:`admin_args` when the request is handled, and bad ones get
  ``admin_result{ok: false, code}`` instead of a dropped request.
- A reply never carries more than :data:`MAX_ADMIN_HISTORY` CAS records or
  :data:`MAX_ADMIN_EVENTS` sync events; a request may ask for fewer.
- Who may use which op is decided by ``engine.sync.admin``, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine import codec
from engine.crypto import SIGNATURE_SIZE
from engine.errors import InvalidId
from engine.ids import parse_covalue_id
from engine.protocol.messages.base import Message, exact_keys, need, nonneg_int, text_field
from engine.protocol.messages.recovery import RecoveryScope

__all__ = [
    "MAX_ADMIN_EVENTS",
    "MAX_ADMIN_HISTORY",
    "Admin",
    "AdminArgs",
    "AdminResult",
    "EventsArgs",
    "ExportArgs",
    "KvSlotArgs",
    "MatrixArgs",
    "NoArgs",
    "RecoverArgs",
    "admin_args",
    "intent_message",
]

#: Most CAS records one ``admin{kv_slot}`` reply carries, newest kept (a store keeps at most
#: 256 per key, so by default a whole history fits). A request may ask for fewer.
MAX_ADMIN_HISTORY = 256
#: Most sync events one ``admin{events}`` reply carries, oldest first from the cursor; a
#: request may ask for fewer. The rest come with the next request.
MAX_ADMIN_EVENTS = 256
#: Largest ``after`` cursor an ``events`` request may give.
_MAX_CURSOR = 2**63 - 1


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
    - ``matrix`` (``covalue``?; admins only): the peers × sessions matrix, what each
      connected peer acknowledged of each session of the CoValues it follows (only
      ``covalue``'s sessions and those of the CoValues it owns, when given).
    - ``cluster`` (none; admins only): the nodes sharing the node's store, from its node
      registry: URL, alive or gone, last heartbeat, peers, lag (a node whose store is not
      shared: itself alone).
    - ``recover`` (``from``, ``scope``; admins only; changes the node): the node pulls the
      scope from the node at ``from`` and applies it (REPLACE, DESIGN §7.2); the result is
      the plan's summary and the signed receipt. ``intent`` is the operator's signature of
      the request (:func:`intent_message`), kept in the node's audit log.
    - ``export`` (:class:`ExportArgs`; admins only; changes the node): the caller has just
      written a diagnostic bundle of this node; the node appends an ``export`` record to its
      audit log (signed by the node's key, naming the admin as ``requested_by``, with the
      ``intent`` if given) and answers with the record's ``seq`` and ``head``.

    Decoding checks the op and that ``args`` is a map, nothing more, so a node always knows
    the ``rid`` to answer; the arguments of each op are checked by :func:`admin_args` when
    the request is handled, and bad ones get ``admin_result{ok: false, code}``.
    """

    T: ClassVar[str] = "admin"
    rid: int
    op: str
    args: dict[str, Any] = field(default_factory=dict)
    intent: bytes | None = None

    OPS: ClassVar[tuple[str, ...]] = ("list", "peers", "kv_slot", "events", "matrix", "cluster", "recover", "export")

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"t": self.T, "rid": self.rid, "op": self.op, "args": self.args}
        if self.intent is not None:
            obj["intent"] = self.intent
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Admin:
        exact_keys(obj, {"rid", "op", "args"}, frozenset({"intent"}))
        need(obj["op"] in cls.OPS, f"unknown admin op {obj['op']!r}")
        need(isinstance(obj["args"], dict), "args must be a map")
        intent = obj.get("intent")
        need(intent is None or (isinstance(intent, bytes) and len(intent) == SIGNATURE_SIZE), "intent is a signature")
        return cls(nonneg_int(obj, "rid"), obj["op"], obj["args"], intent)

    @classmethod
    def kv_slot(cls, rid: int, namespace: str, key: str, history: int = MAX_ADMIN_HISTORY) -> Admin:
        """A ``kv_slot`` request for one slot and its newest ``history`` CAS records."""
        return cls(rid, "kv_slot", {"namespace": namespace, "key": key, "history": history})

    @classmethod
    def events(cls, rid: int, after: int = 0, limit: int = MAX_ADMIN_EVENTS) -> Admin:
        """An ``events`` request for at most ``limit`` events after the cursor ``after``."""
        return cls(rid, "events", {"after": after, "limit": limit})


@dataclass(frozen=True, slots=True)
class NoArgs:
    """Arguments of ``list``, ``peers`` and ``cluster``: none (whatever is sent is ignored, as it always was)."""


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


@dataclass(frozen=True, slots=True)
class MatrixArgs:
    """Arguments of ``matrix``: one CoValue (or group) to restrict the columns to; ``""``
    for every CoValue a peer follows."""

    covalue: str = ""


@dataclass(frozen=True, slots=True)
class RecoverArgs:
    """Arguments of ``recover``: the node to pull from (a ``ws://`` URL) and the scope."""

    source: str
    scope: RecoveryScope


#: Domain of the operator's signature over an admin request (``intent``).
INTENT_DOMAIN = b"kintsugi/intent/v1"


def intent_message(node: str, op: str, args: dict[str, Any]) -> bytes:
    """What an operator signs as the ``intent`` of an admin request to the node named
    ``node`` (its name from the challenge): the request itself, so the node's audit log
    shows what exactly the operator asked for."""
    return INTENT_DOMAIN + codec.encode({"node": node, "op": op, "args": args})


@dataclass(frozen=True, slots=True)
class ExportArgs:
    """Arguments of ``export``: the bundle the admin wrote of this node (its file name, size,
    the SHA-256 of its manifest, the redaction salt id, whether content went out, how many
    CoValues and transactions). Nothing secret."""

    bundle: str
    bytes: int
    manifest_sha256: str
    salt_id: str
    content: bool
    covalues: int
    transactions: int

    def details(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "bytes": self.bytes,
            "manifest_sha256": self.manifest_sha256,
            "salt_id": self.salt_id,
            "content": self.content,
            "covalues": self.covalues,
            "transactions": self.transactions,
        }


AdminArgs = NoArgs | KvSlotArgs | EventsArgs | MatrixArgs | RecoverArgs | ExportArgs


def _bounded_int(args: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    if key not in args:
        return default
    value = args[key]
    need(type(value) is int and low <= value <= high, f"{key} must be an integer in {low}..{high}")
    return int(value)


def admin_args(message: Admin) -> AdminArgs:
    """The checked arguments of an admin request. Raises :class:`ProtocolError`
    (``invalid_message``) for missing, extra or ill-typed arguments of ``kv_slot``,
    ``events``, ``matrix``, ``recover`` and ``export``."""
    args = message.args
    if message.op == "kv_slot":
        exact_keys(args, {"namespace", "key"}, frozenset({"history"}))
        history = _bounded_int(args, "history", MAX_ADMIN_HISTORY, 0, MAX_ADMIN_HISTORY)
        return KvSlotArgs(text_field(args, "namespace"), text_field(args, "key"), history)
    if message.op == "events":
        exact_keys(args, set(), frozenset({"after", "limit"}))
        after = _bounded_int(args, "after", 0, 0, _MAX_CURSOR)
        return EventsArgs(after, _bounded_int(args, "limit", MAX_ADMIN_EVENTS, 1, MAX_ADMIN_EVENTS))
    if message.op == "matrix":
        exact_keys(args, set(), frozenset({"covalue"}))
        covalue = text_field(args, "covalue", optional=True)
        if covalue:
            try:
                parse_covalue_id(covalue)
            except InvalidId as exc:
                need(False, f"covalue: {exc.detail}")
        return MatrixArgs(covalue)
    if message.op == "export":
        exact_keys(args, {"bundle", "bytes", "manifest_sha256", "salt_id", "content", "covalues", "transactions"})
        digest = text_field(args, "manifest_sha256")
        need(len(digest) == 64 and all(c in "0123456789abcdef" for c in digest), "manifest_sha256 is 64 hex digits")
        need(isinstance(args["content"], bool), "content must be a boolean")
        return ExportArgs(
            text_field(args, "bundle"),
            _bounded_int(args, "bytes", 0, 0, _MAX_CURSOR),
            digest,
            text_field(args, "salt_id", optional=True),
            bool(args["content"]),
            _bounded_int(args, "covalues", 0, 0, _MAX_CURSOR),
            _bounded_int(args, "transactions", 0, 0, _MAX_CURSOR),
        )
    if message.op == "recover":
        exact_keys(args, {"from", "scope"})
        source = text_field(args, "from")
        need(source.startswith(("ws://", "wss://")), "from must be a ws:// or wss:// URL")
        return RecoverArgs(source, RecoveryScope.from_obj(args["scope"]))
    return NoArgs()


@dataclass(frozen=True, slots=True)
class AdminResult(Message):
    """The answer to ``admin`` request ``rid``: ``ok`` and the op's ``result`` (on refusal, a
    map with ``code`` and ``detail``)."""

    T: ClassVar[str] = "admin_result"
    rid: int
    ok: bool
    result: Any

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "ok": self.ok, "result": self.result}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> AdminResult:
        exact_keys(obj, {"rid", "ok", "result"})
        need(isinstance(obj["ok"], bool), "ok must be a boolean")
        return cls(nonneg_int(obj, "rid"), obj["ok"], obj["result"])
