"""CAS slots as a viewer lists them: namespaces, slots with state, redacted values, timelines.

A store's KV tables hold every account's namespace; :func:`kv_namespaces` lists them (the
:class:`~engine.kv.store.KVStore` protocol has no such call because a client only ever sees
its own). :func:`slot_rows` turns a listing into :class:`SlotRow` values; a :class:`Redactor`
gives the text shown instead of a value until the operator asks to see values: its size and a
salted hash prefix, so equal values look equal without being readable. The salt is per
:class:`Redactor` (one per process), so hashes cannot be matched against a dictionary of
known values from another run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from engine import codec
from engine.errors import InvalidCBOR
from engine.ids import AccountID
from engine.kv.envelope import Present, Slot, Tombstone
from engine.kv.store import CASRecord, sqlite_errors
from engine.storage.sqlite import SQLiteStore

__all__ = ["Redactor", "SlotRow", "kv_namespaces", "slot_rows", "timeline_summary"]


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One CAS slot. ``value`` is None for a tombstone; ``deleted_at``/``deleted_by`` only
    for a tombstone."""

    namespace: str
    key: str
    generation: int
    present: bool
    value: Any = None
    deleted_at: int | None = None
    deleted_by: AccountID | None = None

    @property
    def state(self) -> str:
        return "present" if self.present else "tombstone"


def kv_namespaces(store: SQLiteStore) -> list[str]:
    """Every namespace with at least one slot, sorted. Raises :class:`StorageError`."""
    with sqlite_errors("list KV namespaces"):
        rows = store.conn.execute("SELECT DISTINCT namespace FROM kv ORDER BY namespace").fetchall()
    return [str(r[0]) for r in rows]


def slot_row(namespace: str, key: str, generation: int, slot: Slot) -> SlotRow:
    if isinstance(slot, Tombstone):
        return SlotRow(namespace, key, generation, False, None, slot.at, slot.by)
    assert isinstance(slot, Present)
    return SlotRow(namespace, key, generation, True, slot.value)


def slot_rows(namespace: str, listing: list[tuple[str, int, Slot]]) -> list[SlotRow]:
    """:meth:`KVStore.list` output as rows."""
    return [slot_row(namespace, key, generation, slot) for key, generation, slot in listing]


class Redactor:
    """Stands in for values: ``‹hidden · 42 B · #1a2b3c›``. Equal values give equal text."""

    def __init__(self, salt: bytes | None = None) -> None:
        self._salt = salt if salt is not None else os.urandom(16)

    def __call__(self, value: Any) -> str:
        try:
            data = codec.encode(value)
        except InvalidCBOR:
            data = repr(value).encode()
        digest = hashlib.blake2b(data, digest_size=3, key=self._salt).hexdigest()
        return f"‹hidden · {len(data)} B · #{digest}›"


def timeline_summary(records: list[CASRecord]) -> dict[str, int]:
    """Counts over a slot's CAS history: attempts, stored, lost (conflict) races."""
    lost = sum(1 for r in records if r.outcome == "conflict")
    return {"attempts": len(records), "stored": len(records) - lost, "lost": lost}
