"""Opening a SQLite store file (DESIGN §9): where the file is, the pragmas, the schema check,
and the one way a write transaction is held.

Rules kept here: a read-only open never creates or writes a file (a URI with ``mode=ro``),
the schema version is checked before anything is written (a store from a newer Kintsugi is
left exactly as it was), writable stores use WAL and ``synchronous=FULL`` unless told
otherwise, and every :mod:`sqlite3` error leaves as a typed storage error
(:func:`~engine.storage.sqlite.kv.sqlite_errors`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from engine.errors import StoreNotFound
from engine.storage.sqlite.kv import sqlite_errors
from engine.storage.sqlite.schema import check_version, ensure_schema

__all__ = ["BUSY_TIMEOUT_MS", "DEFAULT_SYNCHRONOUS", "STORE_FILE", "connect", "store_file", "transaction"]

#: Milliseconds a writer waits for another process's lock before StorageEnvironmentError.
BUSY_TIMEOUT_MS = 10_000
#: ``PRAGMA synchronous`` for stores: FULL makes every commit durable against power loss.
DEFAULT_SYNCHRONOUS = "FULL"
#: Name of the database file inside a store directory.
STORE_FILE = "kintsugi.db"


def store_file(path: str | os.PathLike[str]) -> Path:
    """The database file of a store given as a directory or as the file itself."""
    p = Path(path)
    return p / STORE_FILE if p.is_dir() or not p.suffix else p


def connect(
    path: str | os.PathLike[str], *, readonly: bool = False, synchronous: str = DEFAULT_SYNCHRONOUS
) -> tuple[sqlite3.Connection, Path, tuple[int, int]]:
    """Open the store at ``path`` (a directory or the file): ``(connection, file, version)``.

    A writable open creates the directory, the file and the schema as needed (migrating an
    older schema); a read-only one raises :class:`StoreNotFound` for a missing file and
    reports an empty or older store's version as is. Raises
    :class:`~engine.errors.SchemaVersionError` for a newer major version and the
    :func:`sqlite_errors` translations. The connection is in autocommit mode and may be used
    from another thread than the one that opened it (one thread at a time).
    """
    file = store_file(path)
    if not readonly:
        file.parent.mkdir(parents=True, exist_ok=True)
    elif not file.exists():
        raise StoreNotFound(f"no store at {file}")
    with sqlite_errors(f"open {file}"):
        # A URI, so read-only opens never create a file; the path is percent-quoted so
        # names with '#', '?' or '%' mean what they say.
        uri = f"file:{quote(str(file))}" + ("?mode=ro" if readonly else "")
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            check_version(conn)
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {synchronous}")
            version = ensure_schema(conn, readonly=readonly)
        except BaseException:
            conn.close()
            raise
    return conn, file, version


@contextmanager
def transaction(conn: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
    """One atomic write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error);
    ``what`` names it in error messages."""
    with sqlite_errors(what):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
