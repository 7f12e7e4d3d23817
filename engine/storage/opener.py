"""Opening a store by its location: the one place that chooses an implementation.

Callers above engine/storage open stores only through :func:`open_store` and hold them as
:class:`~engine.storage.interface.Store`: a SQLite store for a path, a PostgreSQL store (the
shared store of a cluster of nodes) for a ``postgresql://`` or ``postgres://`` URL. Nothing
above storage names either.

A PostgreSQL URL may carry a password: :func:`public_location` is what may be shown of a
location (a store's ``location`` is already that), and the password stays in this process
(:mod:`engine.storage.postgres.location`).
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.storage.interface import Store
from engine.storage.postgres.location import POSTGRES_SCHEMES, child_environment, is_postgres_location
from engine.storage.postgres.location import public_location as _public_pg_location
from engine.storage.sqlite.connection import DEFAULT_SYNCHRONOUS, create_store_directory
from engine.storage.sqlite.store import SQLiteStore, store_file

__all__ = [
    "POSTGRES_SCHEMES",
    "child_environment",
    "is_postgres_location",
    "make_store_directory",
    "open_store",
    "public_location",
    "store_directory",
]


def open_store(
    location: str | os.PathLike[str],
    *,
    readonly: bool = False,
    writer: str | None = None,
    synchronous: str = DEFAULT_SYNCHRONOUS,
) -> Store:
    """Open the store at ``location``: a SQLite store directory or file (created if missing
    unless ``readonly``), or a PostgreSQL database named by a ``postgresql://`` URL (which
    must exist; its schema is created unless ``readonly``).

    ``writer`` names this instance in the CAS-slot history; ``synchronous`` is the durability
    setting (``FULL`` unless a caller trades durability for speed, as benchmarks and test
    fixtures may: SQLite's ``PRAGMA synchronous``, PostgreSQL's ``synchronous_commit``).
    Raises :class:`~engine.errors.StoreNotFound` (read-only and nothing there, or no such
    database), :class:`~engine.errors.SchemaVersionError`, the other
    :class:`~engine.errors.StorageError` types, and :class:`~engine.errors.UsageError` for a
    URL that is not one. A password in the URL is kept in this process, out of the store's
    ``location``, which then reopens the store here.
    """
    if is_postgres_location(location):
        # Imported here: asyncpg takes ~70 ms to import, which a program on SQLite stores
        # (the inspector, every CLI command) need not pay.
        from engine.storage.postgres.store import PostgresStore

        return PostgresStore(str(location), readonly=readonly, writer=writer, synchronous=synchronous)
    return SQLiteStore(location, readonly=readonly, writer=writer, synchronous=synchronous)


def store_directory(location: str | os.PathLike[str]) -> Path | None:
    """The directory a store's own files live in (a node keeps its key file there), whether
    or not the store exists yet; None for a store on a database server."""
    if is_postgres_location(location):
        return None
    return store_file(location).parent


def make_store_directory(location: str | os.PathLike[str]) -> Path | None:
    """Create the directory a store's files will live in, as a store creates it (0700 when it
    is the store's own directory), before the store itself exists — for files kept beside it,
    such as a node's key. Returns it (None for a store on a database server). Raises
    :class:`~engine.errors.StorageEnvironmentError` when it cannot be created."""
    if is_postgres_location(location):
        return None
    return create_store_directory(location)


def public_location(location: str | os.PathLike[str]) -> str:
    """What may be shown of ``location`` (in messages, logs, audit records, bundles): a path
    as it is, a PostgreSQL URL without its password or other secret."""
    return _public_pg_location(str(location)) if is_postgres_location(location) else str(location)
