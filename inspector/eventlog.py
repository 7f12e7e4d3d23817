"""Machine-readable events on stderr, one JSON object per line (``--log-json``).

Tests and tools wait for specific lines instead of scraping the window, e.g.::

    {"event": "loaded", "covalues": 4, "conflict_sessions": 1, "deleted": 1, "corrupt": 0}
    {"event": "exit", "code": 0}

Without a stream the log only keeps the last events in memory (in-process tests read them).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, TextIO

__all__ = ["EventLog"]

#: Events kept in memory for in-process readers.
KEEP_EVENTS = 200


class EventLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self.history: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)

    def emit(self, event: str, **fields: Any) -> None:
        """Record ``{"event": event, **fields}``; write it as one line when streaming."""
        record = {"event": event, **fields}
        self.history.append(record)
        if self._stream is not None:
            self._stream.write(json.dumps(record, default=str) + "\n")
            self._stream.flush()

    def last(self, event: str) -> dict[str, Any] | None:
        """The most recent record of ``event``, or None."""
        return next((r for r in reversed(self.history) if r["event"] == event), None)
