"""Sync events of a live target, with the time they arrived, and the CoValues found forked.

A :class:`~engine.net.shell.SyncShell` calls its ``event_listeners`` with each
:class:`~engine.sync.manager.SyncEvent` (fork detected or suspected, correction sent, applied
or rejected, content rejected) as its sync manager decides it, stamped with the deciding
host's clock (``at_ms``). :class:`SyncEventRecorder` — one listener — keeps the recent ones
with that time (or, for an event without one, its arrival), and remembers which sessions of
which CoValue were reported forked, for the ``forked`` badge. Attach it before the shell
starts syncing (the embedded demo forks while it starts) and it misses nothing.

A remote target also feeds it the node's own events, read over the wire
(:meth:`SyncEventRecorder.record` with ``origin="node"``): a fork the node detected between
itself and one of its clients badges the CoValue just like one this replica saw.

The recorder is what a target hands the inspector; it calls its own subscribers synchronously
from inside the engine's callback, so they must only record (the inspector pushes into a
throttle).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from engine.ids import CoValueID, SessionID
from engine.sync.events import FORK_KINDS, SyncEvent

__all__ = ["KEEP_EVENTS", "SyncEventRecorder", "TimedEvent"]

#: Recent events kept per target.
KEEP_EVENTS = 500


@dataclass(frozen=True, slots=True)
class TimedEvent:
    """A sync event and when it happened (ms since the epoch): the event's own ``at_ms`` (the
    deciding host's clock), or when the inspector received it if the event has none.
    ``received_ms`` is when the inspector received it; ``origin`` says whose sync manager
    decided it: ``""`` this process (the target's own replica or node), ``"node"`` the remote
    node the target shows."""

    at_ms: int
    event: SyncEvent
    received_ms: int = 0
    origin: str = ""

    @property
    def is_fork(self) -> bool:
        return self.event.kind in FORK_KINDS


class SyncEventRecorder:
    """Call it with each :class:`SyncEvent` (it is a shell event listener)."""

    def __init__(self, keep: int = KEEP_EVENTS) -> None:
        self.events: deque[TimedEvent] = deque(maxlen=keep)
        #: CoValue → its sessions reported forked (None when the event named no session)
        self.forked: dict[CoValueID, set[SessionID | None]] = {}
        #: events received in all, including those no longer kept
        self.received = 0
        self._subscribers: list[Callable[[TimedEvent], None]] = []

    def __call__(self, event: SyncEvent) -> None:
        self.record(event)

    def record(self, event: SyncEvent, origin: str = "") -> TimedEvent:
        """Keep ``event`` (decided by ``origin``, see :class:`TimedEvent`) and tell the
        subscribers; returns it as kept."""
        now = time.time_ns() // 1_000_000
        timed = TimedEvent(event.at_ms or now, event, now, origin)
        self.events.append(timed)
        self.received += 1
        if timed.is_fork:
            self.forked.setdefault(event.covalue, set()).add(event.session)
        for subscriber in list(self._subscribers):
            subscriber(timed)
        return timed

    def subscribe(self, callback: Callable[[TimedEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with each later event; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def recent(self) -> list[TimedEvent]:
        """The kept events, oldest first (by arrival; a node's events arrive in its order)."""
        return list(self.events)
