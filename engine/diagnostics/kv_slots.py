"""CAS slots as a viewer lists them: namespaces, slots with state, redacted values, timelines.

A store's KV tables hold every account's namespace; :func:`kv_namespaces` lists them through
the :class:`~engine.storage.interface.Store` (the :class:`~engine.kv.store.KVStore` protocol
has no such call because a client only ever sees its own). A :class:`Redactor` gives the
text shown instead of a value until the operator asks to see values: its size and a salted
hash prefix, so equal values look equal without being readable. The salt is per
:class:`Redactor` (one per process), so hashes cannot be matched against a dictionary of
known values from another run. :func:`timeline_summary` counts a slot's won and lost races.

Rows and their wire form (:class:`~engine.kv.detail.SlotRow`,
:class:`~engine.kv.detail.SlotDetail`) live in :mod:`engine.kv.detail`, which every layer may
read.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from engine import codec
from engine.errors import InvalidCBOR
from engine.kv.store import CASRecord
from engine.storage.interface import Store

__all__ = [
    "Redactor",
    "kv_namespaces",
    "timeline_summary",
]


def kv_namespaces(store: Store) -> list[str]:
    """Every namespace with at least one slot, sorted. Raises :class:`StorageError`."""
    return store.kv_namespaces()


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


# -- one slot over the wire -------------------------------------------------------------------
