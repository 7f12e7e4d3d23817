"""Where the ``kintsugi`` command's log lines go, and in which shape.

Logs go to stderr, never stdout (stdout carries results, and with ``--json`` exactly one
JSON document). Two formats:

- ``text``: ``TIME LEVEL LOGGER: MESSAGE``, for people;
- ``json``: one JSON object per line, for log collectors: ``{"time": ISO-8601 UTC with
  milliseconds, "level", "logger", "message"}``, plus ``"exception"`` (the formatted
  traceback) when a record carries one.

Levels (:data:`LEVELS`): a command logs at WARNING unless ``-v`` (INFO) or ``--log-level``
says otherwise; ``node serve`` logs at INFO by default, so its listening URL is seen.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["FORMATS", "LEVELS", "JsonFormatter", "configure_logging"]

#: Names ``--log-level`` takes, lowest first.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Names ``--log-format`` takes.
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send log records of ``level`` and above to stderr in format ``fmt`` (replacing any
    handler a previous call installed)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
