"""CAS-slot messages (DESIGN §6, §8): ``kv_list{rid, namespace, prefix}`` and its answer
``kv_keys{rid, namespace, items}``.

Rules this module keeps:

- A listing names its namespace (an account's own; admins may name any — decided by
  ``engine.sync``) and never carries values, only what each slot is (the items are maps).
- Requests and answers are matched by ``rid``.

``kv_get``, ``kv_cas`` and ``kv_watch`` (DESIGN §6) arrive here when they are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from engine.protocol.messages.base import Message, exact_keys, need, nonneg_int, text_field

__all__ = ["KvKeys", "KvList"]


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
        exact_keys(obj, {"rid", "namespace", "prefix"})
        return cls(nonneg_int(obj, "rid"), text_field(obj, "namespace"), text_field(obj, "prefix"))


@dataclass(frozen=True, slots=True)
class KvKeys(Message):
    """The slots of ``namespace`` answering ``kv_list`` request ``rid``: one map per slot."""

    T: ClassVar[str] = "kv_keys"
    rid: int
    namespace: str
    items: list[dict[str, Any]]

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "rid": self.rid, "namespace": self.namespace, "items": self.items}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> KvKeys:
        exact_keys(obj, {"rid", "namespace", "items"})
        items = obj["items"]
        need(isinstance(items, list) and all(isinstance(i, dict) for i in items), "items must be a list of maps")
        return cls(nonneg_int(obj, "rid"), text_field(obj, "namespace"), items)
