"""What the sync state machine knows of its host and of each peer (DESIGN §5).

:class:`SyncHost` is what :class:`~engine.sync.manager.SyncManager` needs from the replica it
serves (a LocalNode provides it); :class:`PeerState` is what the manager believes one peer
holds and asked for. Both are plain data and protocols: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from engine.covalue import ApplyReport, CoValueCore, ReplaceOutcome
from engine.ids import AccountID, CoValueID, SessionID
from engine.kv.store import KVStore
from engine.model.header import Header
from engine.model.session_log import Chunk
from engine.protocol.messages import Message
from engine.sync.admin import AdminHost

__all__ = ["Heads", "Outbox", "PeerKind", "PeerState", "SyncHost"]

Heads = dict[SessionID, tuple[int, bytes]]


class PeerKind(StrEnum):
    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"


class SyncHost(AdminHost, Protocol):
    """What the state machine needs from the replica it serves (LocalNode provides it), on
    top of what admin requests read (:class:`~engine.sync.admin.AdminHost`)."""

    @property
    def account_id(self) -> AccountID: ...

    def get_or_none(self, covalue: CoValueID) -> CoValueCore | None: ...

    def add_header(self, header: Header) -> CoValueCore: ...

    def apply_content(self, covalue: CoValueID, new: dict[SessionID, Chunk]) -> ApplyReport: ...

    def replace_session(self, covalue: CoValueID, session: SessionID, chunk: Chunk) -> ReplaceOutcome: ...

    def kv_items(self, namespace: str, prefix: str) -> list[dict[str, Any]]: ...

    @property
    def kv(self) -> KVStore:
        """The replica's CAS slots: read by admin requests, read and written for peers by
        :class:`~engine.sync.kv_service.KvService`."""
        ...

    def covalues_owned_by(self, group: CoValueID) -> list[CoValueID]: ...

    @property
    def clock_ms(self) -> Callable[[], int]:
        """The host's clock (ms since the epoch): what sync events are stamped with."""
        ...

    def batch(self) -> AbstractContextManager[None]: ...

    def subscribe(self, callback: Callable[[Any], None], covalue: CoValueID | None = None) -> Callable[[], None]: ...


@dataclass(slots=True)
class PeerState:
    """What we believe one peer holds, and what it asked for."""

    id: str
    kind: PeerKind
    account: AccountID
    admin: bool = False
    known: dict[CoValueID, Heads] = field(default_factory=dict)
    #: what the peer itself reported holding (load/known), as opposed to ``known``, which also
    #: counts what we sent it optimistically: the difference is its lag
    acked: dict[CoValueID, Heads] = field(default_factory=dict)
    has_header: set[CoValueID] = field(default_factory=set)
    interested: set[CoValueID] = field(default_factory=set)


Outbox = list[tuple[str, Message]]
