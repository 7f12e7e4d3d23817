"""A named throttle: coalesce bursts of notifications into one call per interval.

High-frequency engine notifications (a writer flushes many times a second, a sync peer
delivers content in bursts) must not each touch the Qt models: every model change repaints,
and one ``beginInsertRows`` per row caps a table at a few hundred rows a second. Instead they
go through a :class:`Throttle`: the first push after a quiet period starts one single-shot
timer; when it fires, the callback gets everything pushed in the meantime, merged per key.
So the callback runs at most once per ``interval_ms`` and no later than ``interval_ms`` after
the first push of a burst.

Throttles are named (``Throttle("changes", ...)``) so logs and leak checks can say which one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

from PySide6.QtCore import QObject, QTimer, Signal

__all__ = ["DEFAULT_INTERVAL_MS", "Throttle"]

logger = logging.getLogger(__name__)

#: Default coalescing window for engine changes into the models.
DEFAULT_INTERVAL_MS = 50

Batch = dict[Hashable, set[str]]


class Throttle(QObject):
    """Collects ``push(key, tag)`` calls and delivers them in batches.

    The callback receives ``{key: {tags...}}``. Emits ``flushed(int)`` with the number of keys
    after each delivery. Exceptions from the callback are logged, not raised into Qt.
    """

    flushed = Signal(int)

    def __init__(
        self,
        name: str,
        callback: Callable[[Batch], None],
        interval_ms: int = DEFAULT_INTERVAL_MS,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.name = name
        self.setObjectName(f"kintsugi.throttle.{name}")
        self.interval_ms = interval_ms
        self._callback = callback
        self._pending: Batch = {}
        self.deliveries = 0
        self.pushes = 0
        self._timer = QTimer(self)
        self._timer.setObjectName(f"kintsugi.throttle.{name}.timer")
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> bool:
        """True while a delivery is scheduled."""
        return self._timer.isActive()

    def push(self, key: Hashable, tag: str = "") -> None:
        self.pushes += 1
        tags = self._pending.setdefault(key, set())
        if tag:
            tags.add(tag)
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Deliver what is pending now (the timer calls this; so may a caller)."""
        self._timer.stop()
        batch, self._pending = self._pending, {}
        if not batch:
            return
        self.deliveries += 1
        try:
            self._callback(batch)
        except Exception:
            logger.exception("throttle %s: callback failed", self.name)
        self.flushed.emit(len(batch))

    def stop(self) -> None:
        """Drop what is pending and stop the timer (at shutdown)."""
        self._timer.stop()
        self._pending = {}
