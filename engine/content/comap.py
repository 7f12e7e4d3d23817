"""CoMap content: last-writer-wins per key (DESIGN §4).

Over all valid transactions of all active and conflict sessions, the change with the greatest
order key ``(madeAt, sessionID, index, change index)`` wins its key. Because that is a maximum,
new transactions can be merged in any order and grouping with the same result, which lets a
local write update the view incrementally. Each entry remembers which session and transaction
won (provenance for the inspector).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine import codec
from engine.content.common import InvalidTx, OrderKey
from engine.ids import SessionID

#: Longest key a CoMap accepts.
MAX_KEY_LENGTH = 256

#: Why the author of a transaction may not write it (None: allowed), given (author, madeAt).
WriteRule = Callable[[str, int], str | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """The winning change of one key. ``deleted`` means the winner was a ``del``."""

    value: Any
    deleted: bool
    order: OrderKey

    @property
    def session(self) -> SessionID:
        return SessionID(self.order[1])

    @property
    def index(self) -> int:
        return self.order[2]

    @property
    def made_at(self) -> int:
        return self.order[0]


def change_problem(change: list[Any]) -> str | None:
    """Why ``change`` is not a well-formed CoMap change, or None when it is."""
    op = change[0]
    if (op == "set" and len(change) == 3) or (op == "del" and len(change) == 2):
        key = change[1]
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_LENGTH:
            return f"keys are strings of 1 to {MAX_KEY_LENGTH} characters"
        return None
    return f"a CoMap accepts ['set', key, value] and ['del', key], not {op!r}"


@dataclass(slots=True)
class CoMapState:
    entries: dict[str, Entry] = field(default_factory=dict)
    invalid: list[InvalidTx] = field(default_factory=list)
    #: per session: its causal past in the owner group after its last transaction, as
    #: ``(sessionID, count)`` pairs (:mod:`engine.content.writes`)
    claims: dict[SessionID, tuple[tuple[SessionID, int], ...]] = field(default_factory=dict)

    def merge(self, made_at: int, session: str, index: int, changes: Iterable[list[Any]]) -> None:
        """Merge one valid transaction's changes (any order of calls gives the same state)."""
        entries = self.entries
        for ci, change in enumerate(changes):
            order = (made_at, session, index, ci)
            key = change[1]
            current = entries.get(key)
            if current is None or current.order < order:
                if change[0] == "set":
                    entries[key] = Entry(change[2], False, order)
                else:
                    entries[key] = Entry(None, True, order)

    def items(self) -> dict[str, Any]:
        """Present keys and their values, sorted by key."""
        return {k: e.value for k, e in sorted(self.entries.items()) if not e.deleted}

    def get(self, key: str, default: Any = None) -> Any:
        entry = self.entries.get(key)
        return default if entry is None or entry.deleted else entry.value

    def encode(self) -> bytes:
        """Canonical CBOR of the present content: byte-identical on every replica."""
        return codec.encode(self.items())
