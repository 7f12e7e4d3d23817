"""Tests of engine/storage: the Store interface and its opener; schema versions, the SQLite
store and the ordered async queue (sqlite/)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_state(path: Path) -> tuple[int, int, str]:
    """(size, mtime in ns, SHA-256) of a file: equal before and after means not written."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()
