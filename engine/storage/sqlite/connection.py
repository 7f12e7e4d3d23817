"""Opening a SQLite store file (DESIGN §9): where the file is, the pragmas, the schema check,
and the one way a write transaction is held.

Rules kept here: a read-only open never creates or writes a file (a URI with ``mode=ro``),
the schema version is checked before anything is written (a store from a newer Kintsugi is
left exactly as it was), writable stores use WAL and ``synchronous=FULL`` unless told
otherwise, and every :mod:`sqlite3` error leaves as a typed storage error
(:func:`~engine.storage.sqlite.kv.sqlite_errors`).

File modes: a store holds every user's data in clear, so a writable open creates the store
directory :data:`STORE_DIR_MODE` (0700) and the database file :data:`STORE_FILE_MODE` (0600)
before SQLite touches it; SQLite gives the ``-wal`` and ``-shm`` files it creates the mode of
the database file. An existing store whose directory or files are readable or writable by
group or others is opened as it is, with one warning naming the paths and their modes (they
are not changed: the operator may share them on purpose).

Read-only media: a WAL store opened ``mode=ro`` still needs its ``-shm`` file, which SQLite
cannot create in a read-only directory ("unable to open database file"). When a read-only
open fails so, it is retried with ``immutable=1``: SQLite then reads the database file alone,
without locks or shared memory, which is right for media nothing can write. A non-empty
``-wal`` beside it holds commits that such a read does not see; that is logged as a warning.

Wrapping: :func:`connect` hands the connection it has set up to an optional
:data:`ConnectionWrapper`, and the store uses whatever that returns in its place (for every
connection a store opens: its own and its background writer's). A wrapper must behave as a
:class:`sqlite3.Connection` for the calls a store makes (``execute``, ``executemany``,
``in_transaction``, ``isolation_level``, ``close``) and raise :mod:`sqlite3` errors as SQLite
does: it is there to observe or change the database calls of an unchanged store — tracing,
timing, or the fault injection that tests the store's error handling against disks that fail.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from engine.errors import StorageEnvironmentError, StorageUnavailable, StoreNotFound
from engine.storage.sqlite.kv import rollback, sqlite_errors
from engine.storage.sqlite.schema import check_version, ensure_schema

__all__ = [
    "BUSY_TIMEOUT_MS",
    "ConnectionWrapper",
    "DEFAULT_SYNCHRONOUS",
    "STORE_DIR_MODE",
    "STORE_FILE",
    "STORE_FILE_MODE",
    "connect",
    "create_store_directory",
    "loose_modes",
    "rollback",
    "store_file",
    "transaction",
]

logger = logging.getLogger(__name__)

#: Milliseconds a writer waits for another process's lock before StorageEnvironmentError.
BUSY_TIMEOUT_MS = 10_000
#: ``PRAGMA synchronous`` for stores: FULL makes every commit durable against power loss.
DEFAULT_SYNCHRONOUS = "FULL"
#: Name of the database file inside a store directory.
STORE_FILE = "kintsugi.db"
#: Mode of a store directory a writable open creates (owner only).
STORE_DIR_MODE = 0o700
#: Mode of a database file a writable open creates; SQLite gives its -wal and -shm the same.
STORE_FILE_MODE = 0o600
#: Suffixes of the files SQLite keeps beside a database in WAL mode.
WAL_SUFFIXES = ("-wal", "-shm")

#: Receives a connection :func:`connect` has set up and returns the one the store uses
#: instead (see the module docstring).
ConnectionWrapper = Callable[[sqlite3.Connection], sqlite3.Connection]


def store_file(path: str | os.PathLike[str]) -> Path:
    """The database file of a store given as a directory or as the file itself."""
    p = Path(path)
    return p / STORE_FILE if p.is_dir() or not p.suffix else p


def connect(
    path: str | os.PathLike[str],
    *,
    readonly: bool = False,
    synchronous: str = DEFAULT_SYNCHRONOUS,
    wrap: ConnectionWrapper | None = None,
) -> tuple[sqlite3.Connection, Path, tuple[int, int]]:
    """Open the store at ``path`` (a directory or the file): ``(connection, file, version)``.

    A writable open creates the directory, the file and the schema as needed (migrating an
    older schema); a read-only one raises :class:`StoreNotFound` for a missing file and
    reports an empty or older store's version as is. Raises
    :class:`~engine.errors.SchemaVersionError` for a newer major version and the
    :func:`sqlite_errors` translations. The connection is in autocommit mode and may be used
    from another thread than the one that opened it (one thread at a time). ``wrap``, when
    given, receives it once it is set up (pragmas set, schema checked) and what it returns is
    returned instead.
    """
    file = store_file(path)
    own_dir = file.parent == Path(path)
    if not readonly:
        _create_private(file, own_dir)
    elif not file.exists():
        raise StoreNotFound(f"no store at {file}")
    _warn_loose(file, own_dir)
    with sqlite_errors(f"open {file}"):
        conn = _open(file, readonly)
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
    return (conn if wrap is None else wrap(conn)), file, version


def _open(file: Path, readonly: bool) -> sqlite3.Connection:
    """The connection (see the module docstring for the read-only fallback)."""
    # A URI, so read-only opens never create a file; the path is percent-quoted so names
    # with '#', '?' or '%' mean what they say.
    uri = f"file:{quote(str(file))}"
    if not readonly:
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
            raise
        wal = file.with_name(file.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            logger.warning(
                "store %s is on read-only media and has %d bytes of unmerged commits in %s; reading without them",
                file,
                wal.stat().st_size,
                wal.name,
            )
        return sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
    return conn


def create_store_directory(path: str | os.PathLike[str]) -> Path:
    """Create the directory of the store at ``path`` (a directory, or the file itself) as a
    writable open does, and return it: 0700 when it is the store's own directory, while the
    directories above it and the directory of a store named by its file get the usual mode.
    An existing directory is left as it is. Raises :class:`StorageEnvironmentError`."""
    file = store_file(path)
    try:
        if file.parent == Path(path) and not file.parent.exists():
            file.parent.parent.mkdir(parents=True, exist_ok=True)
            file.parent.mkdir(mode=STORE_DIR_MODE, exist_ok=True)
        else:
            file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _environment(f"create store directory {file.parent}", exc) from exc
    return file.parent


def _environment(what: str, exc: OSError) -> StorageEnvironmentError:
    """The typed error for a failed file operation: a full disk is :class:`StorageUnavailable`."""
    detail = f"{what}: {exc.strerror or exc}"
    return StorageUnavailable(detail) if exc.errno == errno.ENOSPC else StorageEnvironmentError(detail)


def _create_private(file: Path, own_dir: bool) -> None:
    """Create the store's directory (see :func:`create_store_directory`) and its database
    file (0600), as the module docstring says; existing ones are left as they are."""
    create_store_directory(file.parent if own_dir else file)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, STORE_FILE_MODE)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _environment(f"create store {file}", exc) from exc


def loose_modes(file: Path, own_dir: bool = True) -> list[tuple[Path, int]]:
    """The store's paths that group or others may read or write, with their modes: the
    directory (when it is the store's own), the database file and its ``-wal``/``-shm``."""
    paths = [file.parent] if own_dir else []
    paths += [file] + [file.with_name(file.name + suffix) for suffix in WAL_SUFFIXES]
    found: list[tuple[Path, int]] = []
    for p in paths:
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            found.append((p, mode))
    return found


def _warn_loose(file: Path, own_dir: bool) -> None:
    loose = loose_modes(file, own_dir)
    if loose:
        listed = ", ".join(f"{p} ({mode:04o})" for p, mode in loose)
        logger.warning(
            "store %s can be read by other local users: %s; a store should be 0700 (directory) and 0600 (files)",
            file,
            listed,
        )


@contextmanager
def transaction(conn: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
    """One atomic write transaction (BEGIN IMMEDIATE … COMMIT, rolled back on error);
    ``what`` names it in error messages.

    The error that stopped the transaction is the one raised: SQLite rolls a transaction back
    by itself after some failures (a full disk among them), and the ROLLBACK issued then would
    fail with "cannot rollback - no transaction is active", hiding the real cause.
    """
    with sqlite_errors(what):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
