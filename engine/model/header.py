"""CoValue headers and the CoValueID derived from them (DESIGN §3–4).

A header is ``{type, ruleset, meta, uniqueness, createdAt}``; its CoValueID is
``co_z<base58(first 20 bytes of BLAKE2b-256(canonical CBOR(header)))>``, so a header can never
be swapped under an existing id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from engine import codec
from engine.crypto import hash_bytes
from engine.errors import InvalidHeader, InvalidId, KintsugiError
from engine.ids import AccountID, CoValueID, covalue_id_from_digest, parse_account_id, parse_covalue_id

#: CoValue types this version understands.
COVALUE_TYPES = ("comap", "group")
#: Largest encoded header accepted.
MAX_HEADER_SIZE = 16 * 1024


@dataclass(frozen=True, slots=True)
class GroupRuleset:
    """The CoValue is a group; ``initial_admin`` is admin from its creation."""

    initial_admin: AccountID


@dataclass(frozen=True, slots=True)
class OwnedByGroup:
    """Roles in ``group`` decide who may write the CoValue and who may read it."""

    group: CoValueID


@dataclass(frozen=True, slots=True)
class UnsafeAllowAll:
    """Anyone may write; any authenticated peer may read."""


Ruleset = GroupRuleset | OwnedByGroup | UnsafeAllowAll


@dataclass(frozen=True, slots=True)
class Header:
    type: str
    ruleset: Ruleset
    meta: Any = None
    uniqueness: Any = None
    created_at: int = 0
    #: the id, computed once (a header is immutable; its id hashes its whole encoding)
    _id: CoValueID | None = field(default=None, init=False, repr=False, compare=False)

    def to_obj(self) -> dict[str, Any]:
        ruleset: dict[str, Any]
        if isinstance(self.ruleset, GroupRuleset):
            ruleset = {"type": "group", "initialAdmin": self.ruleset.initial_admin}
        elif isinstance(self.ruleset, OwnedByGroup):
            ruleset = {"type": "ownedByGroup", "group": self.ruleset.group}
        else:
            ruleset = {"type": "unsafeAllowAll"}
        return {
            "type": self.type,
            "ruleset": ruleset,
            "meta": self.meta,
            "uniqueness": self.uniqueness,
            "createdAt": self.created_at,
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    def covalue_id(self) -> CoValueID:
        if self._id is None:
            object.__setattr__(self, "_id", covalue_id_from_digest(hash_bytes(self.encode())))
        assert self._id is not None
        return self._id

    @classmethod
    def from_obj(cls, obj: object) -> Header:
        """Validate a decoded header. Raises :class:`InvalidHeader`."""
        if not isinstance(obj, dict):
            raise InvalidHeader("a header is a map")
        if set(obj) != {"type", "ruleset", "meta", "uniqueness", "createdAt"}:
            raise InvalidHeader(
                f"header keys must be type, ruleset, meta, uniqueness, createdAt; got {sorted(map(str, obj))}"
            )
        kind = obj["type"]
        if kind not in COVALUE_TYPES:
            raise InvalidHeader(f"unknown CoValue type {kind!r}")
        created = obj["createdAt"]
        if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 2**63:
            raise InvalidHeader("createdAt must be milliseconds since the epoch")
        header = cls(kind, _parse_ruleset(obj["ruleset"]), obj["meta"], obj["uniqueness"], created)
        if (kind == "group") != isinstance(header.ruleset, GroupRuleset):
            raise InvalidHeader("a group has a group ruleset, and only a group has one")
        return header

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) > MAX_HEADER_SIZE:
            raise InvalidHeader(f"header of {len(data)} bytes exceeds {MAX_HEADER_SIZE}")
        try:
            return cls.from_obj(codec.decode(data, require_canonical=True))
        except InvalidHeader:
            raise
        except KintsugiError as exc:
            raise InvalidHeader(str(exc)) from exc


def _parse_ruleset(obj: object) -> Ruleset:
    if not isinstance(obj, dict) or "type" not in obj:
        raise InvalidHeader("ruleset must be a map with a type")
    kind = obj["type"]
    try:
        if kind == "group" and set(obj) == {"type", "initialAdmin"}:
            return GroupRuleset(parse_account_id(obj["initialAdmin"]))
        if kind == "ownedByGroup" and set(obj) == {"type", "group"}:
            return OwnedByGroup(parse_covalue_id(obj["group"]))
    except InvalidId as exc:
        raise InvalidHeader(f"ruleset: {exc}") from exc
    if kind == "unsafeAllowAll" and set(obj) == {"type"}:
        return UnsafeAllowAll()
    raise InvalidHeader(f"malformed ruleset of type {kind!r}")


def new_header(
    kind: str, ruleset: Ruleset, *, meta: Any = None, created_at: int, uniqueness: bytes | None = None
) -> Header:
    """A header with fresh uniqueness (12 random bytes unless given), so two CoValues made
    alike get different ids."""
    return Header(kind, ruleset, meta, os.urandom(12) if uniqueness is None else uniqueness, created_at)
