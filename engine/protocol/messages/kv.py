"""CAS-slot messages (DESIGN §6, §8; docs/protocol.md "CAS slots"): requests ``kv_get``,
``kv_cas``, ``kv_list`` and ``kv_watch``, and their replies ``kv_value``, ``kv_result``,
``kv_keys``, ``kv_event`` and ``kv_error``.

Rules this module keeps:

- Every request carries a ``rid`` chosen by the requester, and everything the node sends
  about it carries the same ``rid``: its one reply (``kv_value``, ``kv_result``,
  ``kv_keys``), its refusal (``kv_error{rid, code, detail}``), and, for a watch, every
  ``kv_event`` after the first ``kv_keys``.
- Decoding checks shapes only: text fields of at most ``MAX_TEXT`` characters, non-negative
  integers, the slot maps below, a list ``limit`` of 1..:data:`MAX_KV_LIST_PAGE`. What a
  store refuses (a key longer than ``engine.kv.store.MAX_KEY_LENGTH``, a value over
  ``engine.kv.envelope.MAX_SLOT_VALUE_SIZE``) and who may reach which namespace are decided
  by ``engine.sync.kv_service``, which answers with a ``kv_error`` carrying the ``rid``; a
  decoding failure has no ``rid`` to answer with and gets the frame-level ``error``.
- A slot on the wire is the payload of the CAS envelope (DESIGN §8): ``{"present": value}``
  or ``{"tombstone": {"at": ms, "by": AccountID}}``, and ``null`` for a key never written.
  A ``kv_cas`` that deletes sends ``{"tombstone": {}}``: the node stamps the time and the
  requesting account itself, so nobody can write a tombstone in another's name.
- Listings never carry values: a ``kv_keys`` item is ``{key, generation, state}``.

This layer cannot import ``engine.kv``: slots stay wire maps here, and
``engine.sync.kv_service`` converts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from engine.ids import parse_account_id
from engine.protocol.messages.base import MAX_TEXT, Message, exact_keys, need, nonneg_int, text_field

__all__ = [
    "KV_STATUSES",
    "MAX_KV_LIST_PAGE",
    "KvCas",
    "KvError",
    "KvEvent",
    "KvGet",
    "KvKeys",
    "KvList",
    "KvResult",
    "KvValue",
    "KvWatch",
    "cas_slot_field",
    "slot_field",
]

#: Most slots one ``kv_keys`` carries (a ``kv_list`` page, or the first answer to a
#: ``kv_watch``); a ``kv_list`` may ask for fewer with ``limit``. At most 1,024 characters
#: per key, a page stays far below the default frame size; the node also cuts a page to fit
#: its own frame limit, and says ``more`` either way.
MAX_KV_LIST_PAGE = 1000
#: The outcomes of a ``kv_cas`` (``kv_result.status``).
KV_STATUSES = ("stored", "conflict")
#: Largest tombstone time (ms) on the wire: generations and times are SQLite integers.
_MAX_MS = 2**63 - 1


def slot_field(obj: dict[str, Any], key: str, *, nullable: bool) -> dict[str, Any] | None:
    """``obj[key]`` as a stored slot's wire map: ``{"present": value}`` or ``{"tombstone":
    {"at", "by"}}`` (``null`` too when ``nullable``). Raises ``invalid_message`` (or
    ``invalid_id`` for a tombstone's author)."""
    value = obj.get(key)
    if value is None:
        need(nullable and key in obj, f"{key} must be a slot map")
        return None
    need(isinstance(value, dict) and len(value) == 1, f"{key} must be a map with one key")
    ((kind, body),) = value.items()
    if kind == "present":
        return {"present": body}
    need(kind == "tombstone", f'{key} must be {{"present": value}} or {{"tombstone": ...}}')
    need(isinstance(body, dict) and set(body) == {"at", "by"}, 'a tombstone is {"at": ms, "by": AccountID}')
    at = body["at"]
    need(type(at) is int and 0 <= at <= _MAX_MS, "a tombstone's at must be a time in ms")
    return {"tombstone": {"at": at, "by": parse_account_id(body["by"])}}


def cas_slot_field(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj["slot"]`` of a ``kv_cas``: ``{"present": value}`` or ``{"tombstone": {}}`` (the
    node stamps the tombstone). Raises ``invalid_message``."""
    value = obj.get("slot")
    need(isinstance(value, dict) and len(value) == 1, "slot must be a map with one key")
    assert isinstance(value, dict)
    ((kind, body),) = value.items()
    if kind == "present":
        return {"present": body}
    need(kind == "tombstone" and body == {}, 'slot must be {"present": value} or {"tombstone": {}}')
    return {"tombstone": {}}


def _optional_text(obj: dict[str, Any], key: str) -> str | None:
    return text_field(obj, key) if key in obj else None


@dataclass(frozen=True, slots=True)
class KvGet(Message):
    """Read one slot; answered by :class:`KvValue` (or :class:`KvError`) with ``rid``."""

    T: ClassVar[str] = "kv_get"
    rid: int
    namespace: str
    key: str

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "namespace": self.namespace, "key": self.key}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvGet:
        exact_keys(obj, {"rid", "namespace", "key"})
        return cls(nonneg_int(obj, "rid"), text_field(obj, "namespace"), text_field(obj, "key"))


@dataclass(frozen=True, slots=True)
class KvValue(Message):
    """Slot ``key`` of ``namespace`` at generation ``gen`` (0 and ``slot`` None: never written)."""

    T: ClassVar[str] = "kv_value"
    rid: int
    namespace: str
    key: str
    gen: int
    slot: dict[str, Any] | None

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "rid": self.rid,
            "namespace": self.namespace,
            "key": self.key,
            "gen": self.gen,
            "slot": self.slot,
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvValue:
        exact_keys(obj, {"rid", "namespace", "key", "gen", "slot"})
        return cls(
            nonneg_int(obj, "rid"),
            text_field(obj, "namespace"),
            text_field(obj, "key"),
            nonneg_int(obj, "gen"),
            slot_field(obj, "slot", nullable=True),
        )


@dataclass(frozen=True, slots=True)
class KvCas(Message):
    """Store ``slot`` at ``expect + 1`` if the key is at generation ``expect`` (0: never
    written); answered by :class:`KvResult` (or :class:`KvError`). ``slot`` is
    ``{"present": value}``, or ``{"tombstone": {}}`` to delete."""

    T: ClassVar[str] = "kv_cas"
    rid: int
    namespace: str
    key: str
    expect: int
    slot: dict[str, Any]

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "rid": self.rid,
            "namespace": self.namespace,
            "key": self.key,
            "expect": self.expect,
            "slot": self.slot,
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvCas:
        exact_keys(obj, {"rid", "namespace", "key", "expect", "slot"})
        return cls(
            nonneg_int(obj, "rid"),
            text_field(obj, "namespace"),
            text_field(obj, "key"),
            nonneg_int(obj, "expect"),
            cas_slot_field(obj),
        )


@dataclass(frozen=True, slots=True)
class KvResult(Message):
    """The outcome of ``kv_cas`` ``rid``: ``stored`` (``gen`` the new generation, ``slot``
    what was stored, a tombstone as the node stamped it) or ``conflict`` (``gen`` and
    ``slot`` the key's current ones; ``slot`` None when never written)."""

    T: ClassVar[str] = "kv_result"
    rid: int
    status: str
    gen: int
    slot: dict[str, Any] | None

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "status": self.status, "gen": self.gen, "slot": self.slot}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvResult:
        exact_keys(obj, {"rid", "status", "gen", "slot"})
        status = obj["status"]
        need(status in KV_STATUSES, f"status must be one of {KV_STATUSES}")
        slot = slot_field(obj, "slot", nullable=status == "conflict")
        return cls(nonneg_int(obj, "rid"), str(status), nonneg_int(obj, "gen"), slot)


@dataclass(frozen=True, slots=True)
class KvList(Message):
    """List CAS slots of a namespace (an account's own; admins any) — values left out.

    Keys come sorted; a page holds at most ``limit`` (None: :data:`MAX_KV_LIST_PAGE`) keys
    starting with ``prefix`` that sort after ``after`` (None: from the first). The answer is
    :class:`KvKeys`; its ``more`` says to ask again with ``after`` = its last key.
    """

    T: ClassVar[str] = "kv_list"
    rid: int
    namespace: str
    prefix: str = ""
    after: str | None = None
    limit: int | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"t": self.T, "rid": self.rid, "namespace": self.namespace, "prefix": self.prefix}
        if self.after is not None:
            obj["after"] = self.after
        if self.limit is not None:
            obj["limit"] = self.limit
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvList:
        exact_keys(obj, {"rid", "namespace", "prefix"}, frozenset({"after", "limit"}))
        limit = nonneg_int(obj, "limit") if "limit" in obj else None
        need(limit is None or 1 <= limit <= MAX_KV_LIST_PAGE, f"limit must be 1..{MAX_KV_LIST_PAGE}")
        return cls(
            nonneg_int(obj, "rid"),
            text_field(obj, "namespace"),
            text_field(obj, "prefix"),
            _optional_text(obj, "after"),
            limit,
        )


@dataclass(frozen=True, slots=True)
class KvKeys(Message):
    """The slots of ``namespace`` answering ``kv_list`` (or ``kv_watch``) request ``rid``:
    one map per slot, sorted by key. ``more``: the page was cut, more keys follow (sent only
    when true, so a reader older than paging still reads every uncut answer)."""

    T: ClassVar[str] = "kv_keys"
    rid: int
    namespace: str
    items: list[dict[str, Any]]
    more: bool = False

    def to_obj(self) -> dict[str, Any]:
        obj = {"t": self.T, "rid": self.rid, "namespace": self.namespace, "items": self.items}
        if self.more:
            obj["more"] = True
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvKeys:
        exact_keys(obj, {"rid", "namespace", "items"}, frozenset({"more"}))
        items = obj["items"]
        need(isinstance(items, list) and all(isinstance(i, dict) for i in items), "items must be a list of maps")
        more = obj.get("more", False)
        need(type(more) is bool, "more must be a boolean")
        return cls(nonneg_int(obj, "rid"), text_field(obj, "namespace"), items, more)


@dataclass(frozen=True, slots=True)
class KvWatch(Message):
    """Follow the slots of ``namespace`` whose key starts with ``prefix``: answered by
    :class:`KvKeys` (the first page of them as they are when the watch starts), then one
    :class:`KvEvent` with the same ``rid`` for every change stored after it, until the
    connection ends."""

    T: ClassVar[str] = "kv_watch"
    rid: int
    namespace: str
    prefix: str

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "namespace": self.namespace, "prefix": self.prefix}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvWatch:
        exact_keys(obj, {"rid", "namespace", "prefix"})
        return cls(nonneg_int(obj, "rid"), text_field(obj, "namespace"), text_field(obj, "prefix"))


@dataclass(frozen=True, slots=True)
class KvEvent(Message):
    """Watch ``rid`` saw slot ``key`` of ``namespace`` stored at generation ``gen``."""

    T: ClassVar[str] = "kv_event"
    rid: int
    namespace: str
    key: str
    gen: int
    slot: dict[str, Any]

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "rid": self.rid,
            "namespace": self.namespace,
            "key": self.key,
            "gen": self.gen,
            "slot": self.slot,
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvEvent:
        exact_keys(obj, {"rid", "namespace", "key", "gen", "slot"})
        slot = slot_field(obj, "slot", nullable=False)
        assert slot is not None
        return cls(
            nonneg_int(obj, "rid"),
            text_field(obj, "namespace"),
            text_field(obj, "key"),
            nonneg_int(obj, "gen"),
            slot,
        )


@dataclass(frozen=True, slots=True)
class KvError(Message):
    """The node refused request ``rid`` (docs/protocol.md lists the codes); nothing changed."""

    T: ClassVar[str] = "kv_error"
    rid: int
    code: str
    detail: str = ""

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "code": self.code, "detail": self.detail[:MAX_TEXT]}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvError:
        exact_keys(obj, {"rid", "code", "detail"})
        return cls(nonneg_int(obj, "rid"), text_field(obj, "code"), text_field(obj, "detail"))
