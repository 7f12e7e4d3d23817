"""A named periodic refresh, for what the engine does not notify about.

Peers come and go, queues fill and drain, and a remote node pushes nothing about either: the
inspector reads them on a beat instead of on a notification. One :class:`Periodic` per kind
of refresh, owned by the controller and named (``Periodic("poll", ...)``) so logs and leak
checks can say which one — not a timer per widget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

__all__ = ["DEFAULT_PERIOD_MS", "Periodic"]

logger = logging.getLogger(__name__)

#: Default period of a refresh.
DEFAULT_PERIOD_MS = 1000


class Periodic(QObject):
    """Calls ``callback()`` every ``period_ms`` between :meth:`start` and :meth:`stop`.

    Emits ``ticked(int)`` (ticks so far) after each call. Exceptions from the callback are
    logged, not raised into Qt. The callback must return quickly: start long work as a task.
    """

    ticked = Signal(int)

    def __init__(
        self, name: str, callback: Callable[[], None], period_ms: int = DEFAULT_PERIOD_MS, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.name = name
        self.setObjectName(f"kintsugi.periodic.{name}")
        self.period_ms = period_ms
        self.ticks = 0
        self._callback = callback
        self._timer = QTimer(self)
        self._timer.setObjectName(f"kintsugi.periodic.{name}.timer")
        self._timer.setInterval(period_ms)
        self._timer.timeout.connect(self.tick)

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def start(self) -> None:
        """Tick every period from now on (the first tick one period from now)."""
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def tick(self) -> None:
        """Run the callback now (the timer calls this; so may a caller)."""
        self.ticks += 1
        try:
            self._callback()
        except Exception:
            logger.exception("periodic %s: callback failed", self.name)
        self.ticked.emit(self.ticks)
