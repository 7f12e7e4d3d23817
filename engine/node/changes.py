"""What a node tells its subscribers: which CoValue changed and how (DESIGN §2, §11).

Rules kept here: an event is delivered only after the change is applied and, with a store,
committed — a subscriber that reads the store on an event finds the change there; its kind
says where the change came from, so a viewer can tell local edits, received content,
replacements by recovery and tombstones apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from engine.ids import CoValueID

__all__ = ["ChangeEvent", "ChangeKind", "Subscriber"]


class ChangeKind(StrEnum):
    """What changed a CoValue."""

    #: this node wrote
    LOCAL = "local"
    #: content received from a peer
    REMOTE = "remote"
    #: a session was replaced by an authoritative history
    REPLACED = "replaced"
    #: tombstoned
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """Delivered to subscribers after a change is applied (and, with a store, committed)."""

    covalue: CoValueID
    kind: ChangeKind


#: A subscriber callback (see :meth:`engine.node.LocalNode.subscribe`).
Subscriber = Callable[[ChangeEvent], None]
