"""The recent log lines a bundle carries: a bounded ring of this process's log records.

:func:`install_log_ring` adds one :class:`LogRing` handler to the root logger (once per
process) so a bundle exported later can include the node's recent log lines — those of the
engine running in this process (the embedded demo's node, the CLI's own work). The ring keeps
the last :data:`LOG_RING_SIZE` records as they were made: message template, arguments, level,
logger, time; it formats nothing until a bundle asks. :meth:`LogRing.lines` formats them for
a bundle: redacted, each argument passes :func:`~engine.diagnostics.redact.redact_arg`
(numbers and engine identifiers stay, the rest becomes tokens) and tracebacks are left out.

Records pass the loggers' own levels first: the ring holds what this process logs at all.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from engine.diagnostics.redact import Redaction, redact_arg

__all__ = ["LOG_RING_SIZE", "LogRing", "install_log_ring"]

#: Log records kept for bundles (the oldest are dropped first).
LOG_RING_SIZE = 2000
#: Longest message kept per line once formatted.
MAX_LINE = 2000


@dataclass(frozen=True, slots=True)
class _Kept:
    at_ms: int
    level: str
    logger: str
    template: str
    args: tuple[Any, ...]


class LogRing(logging.Handler):
    """Keeps the last ``size`` records (thread-safe: records arrive from any thread)."""

    def __init__(self, size: int = LOG_RING_SIZE) -> None:
        super().__init__(logging.DEBUG)
        self._records: deque[_Kept] = deque(maxlen=size)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else (record.args,) if record.args else ()
        template = record.msg
        if not isinstance(template, str):  # an object logged as the message is data, not a template
            template, args = "%s", (str(template),)
        kept = _Kept(int(record.created * 1000), record.levelname, record.name, template, args)
        with self._guard:
            self._records.append(kept)

    def lines(self, redaction: Redaction) -> list[dict[str, Any]]:
        """The kept records, oldest first, as ``{at_ms, level, logger, message}``."""
        with self._guard:
            kept = list(self._records)
        out = []
        for k in kept:
            args = tuple(redact_arg(a, redaction.tokenizer) for a in k.args) if redaction.policy.redact else k.args
            try:
                message = k.template % args if args else k.template
            except (TypeError, ValueError):
                message = f"{k.template} {args!r}"
            out.append({"at_ms": k.at_ms, "level": k.level, "logger": k.logger, "message": message[:MAX_LINE]})
        return out


#: The process's ring, once installed (a one-item list: no global statement needed).
_installed: list[LogRing] = []
_install_guard = threading.Lock()


def install_log_ring() -> LogRing:
    """The process's ring, added to the root logger on the first call."""
    with _install_guard:
        if not _installed:
            ring = LogRing()
            logging.getLogger().addHandler(ring)
            _installed.append(ring)
        return _installed[0]
