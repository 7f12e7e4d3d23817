"""Requests a replica serves beside CoValue sync, as part of
:class:`~engine.sync.manager.SyncManager` (its rules 8 and 9): REPLACE exchanges
(``recover_open``/``recover_next``, DESIGN §7.2) and CAS-slot requests (``kv_get``,
``kv_cas``, ``kv_list``, ``kv_watch``, DESIGN §8).

Neither reads or changes what a peer is believed to hold (``known``/``acked``), so neither
can disturb incremental sync. A CAS request is planned on the loop; its one store call is
made there too, or handed to :attr:`ServedRequests.kv_offload` when the host makes those
calls on a thread of their own (engine/net/kv_worker.py), whose outcomes come back, in order,
through :meth:`ServedRequests.kv_finished`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from engine.protocol.messages import Message, RecoverNext, RecoverOpen
from engine.recovery.exchange import RecoveryResponder
from engine.sync.kv_service import KvRequest, KvService, KvStep, KvWork
from engine.sync.state import Outbox, PeerState, SyncHost

__all__ = ["ServedRequests"]


class ServedRequests:
    """The REPLACE-exchange and CAS-slot part of a sync manager (mixed into
    :class:`~engine.sync.manager.SyncManager`, which sets the attributes below up)."""

    host: SyncHost
    peers: dict[str, PeerState]
    #: serves REPLACE exchanges in their own cursor namespace
    recovery: RecoveryResponder
    #: answers CAS-slot requests and keeps each connection's watches
    kv: KvService
    #: set by a host that makes the CAS store's calls off its loop: takes each call, in
    #: order, and hands its outcome to :meth:`kv_finished` on the loop, in the same order;
    #: None: the calls are made at once
    kv_offload: Callable[[KvWork], None] | None
    _out: Outbox

    def kv_stored_elsewhere(self, slots: Iterable[tuple[str, str]]) -> None:
        """Other nodes sharing the store stored these CAS slots ``(namespace, key)``: tell
        the watches that cover them (:meth:`KvService.stored_elsewhere`)."""
        for namespace, key in slots:
            self._kv_step(self.kv.stored_elsewhere(namespace, key))

    def kv_finished(self, work: KvWork, outcome: tuple[bool, Any]) -> None:
        """A store call handed to :attr:`kv_offload` was made: send what follows from it
        (nothing when its connection went meanwhile)."""
        if work.peer is not None and work.peer.id not in self.peers:
            return
        self._out.extend(self.kv.finish(work, outcome))

    def _kv_step(self, step: KvStep) -> None:
        if isinstance(step, list):
            self._out.extend(step)
        elif self.kv_offload is None:
            self._out.extend(self.kv.finish(step, step.run()))
        else:
            self.kv_offload(step)

    def _on_kv(self, peer: PeerState, msg: KvRequest) -> None:
        self._kv_step(self.kv.plan(peer, msg))

    def _on_recover_open(self, peer: PeerState, msg: RecoverOpen) -> None:
        """Start a REPLACE exchange (:mod:`engine.recovery.exchange`): members of the owner
        group and admins are served, anyone else is answered as for an unknown id."""
        self._send(peer, self.recovery.open(peer.id, peer.account, peer.admin, msg, self.host.clock_ms()))

    def _on_recover_next(self, peer: PeerState, msg: RecoverNext) -> None:
        self._send(peer, self.recovery.next(peer.id, msg, self.host.clock_ms()))

    def _send(self, peer: PeerState, message: Message) -> None:
        self._out.append((peer.id, message))
