"""Opening the store a command names, and saying plainly when the path is not one.

A store is a directory holding ``kintsugi.db``, or that database file itself, or a
PostgreSQL database named by a ``postgresql://`` (or ``postgres://``) URL: every command that
takes a store takes either (:func:`store_location` keeps a URL a URL, never a path). By the
time a command runs, a URL has no password left in it (:func:`engine.cli.urls.hide_store_secrets`).
What a command may be given instead, and what it is told (``store_not_found``, exit 1,
unless noted):

- a node's URL where a store is wanted: a usage error (exit 2) saying what the command takes;
- a path where nothing is: "no store at …"; a URL of a database that does not exist: the
  server's "database … does not exist";
- a PostgreSQL URL that cannot be taken apart (a port that is not a number, …): a usage
  error (exit 2) saying why, without repeating the URL;
- a file that is not an SQLite database, an empty file, or an SQLite database without
  Kintsugi's schema (its ``user_version`` is 0): "… is not a Kintsugi store", and why;
- for ``node serve``, an existing file without a suffix (a store directory is wanted there,
  and a database file is named ``NAME.db``): a usage error (exit 2).

Nothing here creates or changes a file: read-only opens use SQLite's ``mode=ro``, and the
checks before a writable open read at most the first bytes of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.cli.urls import is_node_url, looks_like_url
from engine.errors import StorageBugError, StoreNotFound, UsageError
from engine.storage import Store, open_store
from engine.storage.opener import is_postgres_location
from engine.storage.sqlite.connection import store_file

__all__ = ["SQLITE_MAGIC", "check_servable", "open_readonly", "refuse_url", "store_location"]

#: The first bytes of every SQLite 3 database file.
SQLITE_MAGIC = b"SQLite format 3\x00"


def store_location(text: str) -> str | os.PathLike[str]:
    """The store a command argument names, as :func:`~engine.storage.open_store` takes it:
    a PostgreSQL URL as it is, anything else as a path (``~`` expanded)."""
    return text if is_postgres_location(text) else Path(text).expanduser()


def refuse_url(location: str, takes: str) -> None:
    """Raise :class:`UsageError` if ``location`` is a URL other than a store's own; ``takes``
    says what the command takes instead (``"a store directory or database file"``)."""
    if looks_like_url(location) and not is_postgres_location(location):
        kind = "a node's URL" if is_node_url(location) else "a URL"
        raise UsageError(f"{location} is {kind}, not a store: this command takes {takes}")


def _not_a_store(file: Path, why: str) -> StoreNotFound:
    return StoreNotFound(f"{file} is not a Kintsugi store ({why})")


def _check_file_kind(file: Path) -> None:
    """Raise :class:`StoreNotFound` if the existing ``file`` is not an SQLite database."""
    try:
        with file.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError:
        return  # unreadable: the store layer reports that in its own words
    if head and head != SQLITE_MAGIC[: len(head)]:
        raise _not_a_store(file, "not an SQLite database")


def open_readonly(location: str) -> Store:
    """The store at ``location``, opened read-only. Raises :class:`UsageError` for a URL
    (other than a PostgreSQL one, or one of those that is malformed),
    :class:`StoreNotFound` for nothing there or something that is not a Kintsugi store, and
    what :func:`~engine.storage.open_store` raises."""
    refuse_url(location, "a store directory or database file, or a postgresql:// URL")
    if is_postgres_location(location):
        return open_store(location, readonly=True)
    path = Path(location).expanduser()
    file = store_file(path)
    if file.is_file():
        if file.stat().st_size == 0:
            raise _not_a_store(file, "an empty file")
        _check_file_kind(file)
    try:
        store = open_store(path, readonly=True)
    except StorageBugError as exc:
        if "not a database" in exc.detail:
            raise _not_a_store(file, "not an SQLite database") from None
        raise
    if store.version == (0, 0):
        store.close()
        raise _not_a_store(file, "an SQLite database without Kintsugi's schema")
    return store


def check_servable(location: str) -> None:
    """Refuse, before anything is created, a ``--store`` that a node could not keep its data
    in: a URL of a node, an existing file where a store directory is wanted, a file that is
    not a Kintsugi store. A missing path or an existing store passes (the node creates or
    opens it)."""
    refuse_url(location, "a store directory (created if missing) or a store's database file")
    if is_postgres_location(location):
        return
    path = Path(location).expanduser()
    if path.is_file() and not path.suffix:
        raise UsageError(
            f"--store {location} is a file: give a store directory (created if missing), "
            "or a store's database file (NAME.db)"
        )
    file = store_file(path)
    if not file.is_file() or file.stat().st_size == 0:
        return  # nothing there yet (or an empty file SQLite starts a database in)
    store = open_readonly(str(path))
    store.close()
