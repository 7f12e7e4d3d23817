"""Who may read what a node holds, and the listings the sync layer asks a node for.

Rules kept here (DESIGN §4, §7.2, §8):

- Members of a CoValue's owner group with any role but ``revoked`` may read it; anyone may
  read an ``unsafeAllowAll`` CoValue; a group is read by its own members; the node's own
  account reads everything it holds. A CoValue whose owner group is missing or deleted is
  readable by nobody else (the same answer as for a missing id).
- CAS-slot listings for peers carry keys, generations and states, never values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.content.group import READ_ROLES
from engine.covalue import CoValueCore
from engine.errors import KintsugiError
from engine.ids import AccountID, CoValueID
from engine.kv.envelope import Present
from engine.kv.store import KVStore
from engine.model.header import GroupRuleset, Header, OwnedByGroup, UnsafeAllowAll
from engine.storage.interface import Store

__all__ = ["can_read", "kv_items", "owned_by"]


def can_read(account: AccountID, core: CoValueCore | None) -> bool:
    """May ``account`` — another than the node's own, which reads everything — read ``core``
    (None: not held)?"""
    if core is None:
        return False
    ruleset = core.header.ruleset
    if isinstance(ruleset, UnsafeAllowAll):
        return True
    group = core if isinstance(ruleset, GroupRuleset) else core.owner_group()
    if group is None or group.deleted:
        return False
    return group.group().roles.get(account) in READ_ROLES


def kv_items(kv: KVStore, namespace: str, prefix: str = "") -> list[dict[str, Any]]:
    """CAS slots of ``namespace`` as ``{"key", "generation", "state"}`` (values left out)."""
    return [
        {"key": key, "generation": gen, "state": "present" if isinstance(slot, Present) else "tombstone"}
        for key, gen, slot in kv.list(namespace, prefix)
    ]


def owned_by(group: CoValueID, held: Iterable[CoValueCore], store: Store | None) -> list[CoValueID]:
    """Ids of the CoValues owned by ``group`` among ``held`` (in memory) and in ``store``,
    sorted; a stored header that cannot be read is passed over (verification reports it)."""
    out = {c.id for c in held if isinstance(c.header.ruleset, OwnedByGroup) and c.header.ruleset.group == group}
    if store is not None:
        for row in store.listing().covalues:
            try:
                ruleset = Header.decode(row.header).ruleset
            except KintsugiError:
                continue
            if isinstance(ruleset, OwnedByGroup) and ruleset.group == group:
                out.add(row.id)
    return sorted(out)
