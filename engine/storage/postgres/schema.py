"""The PostgreSQL schema, its version and its migrations (DESIGN §9).

The tables are the SQLite store's (:mod:`engine.storage.sqlite.schema` describes each), in
PostgreSQL types, and the version numbers mean the same thing in both: schema 1.1 is the
same data in either store. Text keys (ids, namespaces, CAS keys) use the ``"C"`` collation,
so the server sorts them by code point exactly as Python and SQLite do (listings, key ranges).

The version lives in the one-row table ``kintsugi_schema (major, minor)``. A database
without it holds no Kintsugi schema yet (version 0.0). As in SQLite: a newer *major* refuses
to open (:class:`~engine.errors.SchemaVersionError`, nothing written); a newer *minor* opens
(only additions); an older version is migrated forward step by step, each step in one
transaction. Creating or migrating holds the advisory lock :data:`SCHEMA_LOCK`, so nodes
starting together on a fresh database create the schema once. A read-only open reads the
version and changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from engine.errors import SchemaVersionError
from engine.storage.postgres.feed import ensure_change_log
from engine.storage.postgres.registry import ensure_registry

__all__ = [
    "BASE_SCHEMA",
    "MIGRATIONS",
    "SCHEMA_1_1",
    "SCHEMA_LOCK",
    "SCHEMA_MAJOR",
    "SCHEMA_MINOR",
    "VERSION_TABLE",
    "check_version",
    "ensure_schema",
    "read_version",
]

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 1
#: The table holding the schema version.
VERSION_TABLE = "kintsugi_schema"
#: Key of the advisory lock held while creating or migrating the schema (an arbitrary
#: constant: the bytes of "kintsugi").
SCHEMA_LOCK = 0x6B696E7473756769

#: Schema 1.0: CoValues, sessions, their blocks and signatures, corrupt records, cursors,
#: CAS slots and their history.
BASE_SCHEMA: tuple[str, ...] = (
    f"CREATE TABLE {VERSION_TABLE} ("
    "one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "major integer NOT NULL, "
    "minor integer NOT NULL)",
    "CREATE TABLE covalues ("
    'id text COLLATE "C" PRIMARY KEY, '
    "header bytea NOT NULL, "
    "type text NOT NULL, "
    "deleted boolean NOT NULL DEFAULT false)",
    "CREATE TABLE sessions ("
    "sid bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    'covalue text COLLATE "C" NOT NULL, '
    'session text COLLATE "C" NOT NULL, '
    "count bigint NOT NULL, "
    "head bytea NOT NULL, "
    "UNIQUE (covalue, session))",
    "CREATE TABLE blocks ("
    "sid bigint NOT NULL, "
    "start bigint NOT NULL, "
    '"end" bigint NOT NULL, '
    "txs bytea NOT NULL, "
    "hashes bytea NOT NULL, "
    "PRIMARY KEY (sid, start))",
    "CREATE TABLE signatures (sid bigint NOT NULL, n bigint NOT NULL, sig bytea NOT NULL, PRIMARY KEY (sid, n))",
    "CREATE TABLE corrupt ("
    'covalue text COLLATE "C" NOT NULL, '
    'session text COLLATE "C" NOT NULL, '
    "idx bigint NOT NULL, "
    "code text NOT NULL, "
    "reason text NOT NULL, "
    "PRIMARY KEY (covalue, session))",
    "CREATE TABLE checkpoints ("
    'namespace text COLLATE "C" NOT NULL, '
    'key text COLLATE "C" NOT NULL, '
    "value bytea NOT NULL, "
    "PRIMARY KEY (namespace, key))",
    "CREATE TABLE kv ("
    'namespace text COLLATE "C" NOT NULL, '
    'key text COLLATE "C" NOT NULL, '
    "generation bigint NOT NULL CHECK (generation >= 1), "
    "value bytea NOT NULL, "
    "PRIMARY KEY (namespace, key))",
    "CREATE TABLE kv_log ("
    "seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    'namespace text COLLATE "C" NOT NULL, '
    'key text COLLATE "C" NOT NULL, '
    "at_ms bigint NOT NULL, "
    "expected_gen bigint NOT NULL, "
    "outcome text NOT NULL CHECK (outcome IN ('stored', 'conflict')), "
    "generation bigint NOT NULL, "
    "writer text)",
    "CREATE INDEX kv_log_by_key ON kv_log (namespace, key, seq)",
)

#: Added in 1.1: the audit log and recovery receipts.
SCHEMA_1_1: tuple[str, ...] = (
    "CREATE TABLE audit (seq bigint PRIMARY KEY, body bytea NOT NULL, hash bytea NOT NULL, sig bytea NOT NULL)",
    "CREATE TABLE receipts (id bytea PRIMARY KEY, at bigint NOT NULL, body bytea NOT NULL, sig bytea NOT NULL)",
)

Step = Callable[[asyncpg.Connection], Awaitable[None]]


async def _run_all(conn: asyncpg.Connection, statements: tuple[str, ...]) -> None:
    for statement in statements:
        await conn.execute(statement)


async def _to_1_1(conn: asyncpg.Connection) -> None:
    await _run_all(conn, SCHEMA_1_1)


#: Migrations from (major, minor) to the next version, applied in order.
MIGRATIONS: dict[tuple[int, int], tuple[tuple[int, int], Step]] = {
    (1, 0): ((1, 1), _to_1_1),
}


async def read_version(conn: asyncpg.Connection) -> tuple[int, int]:
    """The database's (major, minor); (0, 0) when it holds no Kintsugi schema."""
    if await conn.fetchval("SELECT to_regclass($1)", VERSION_TABLE) is None:
        return 0, 0
    row = await conn.fetchrow(f"SELECT major, minor FROM {VERSION_TABLE}")
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


async def check_version(conn: asyncpg.Connection) -> tuple[int, int]:
    """The database's (major, minor); raises :class:`SchemaVersionError` for a newer major."""
    version = await read_version(conn)
    if version[0] > SCHEMA_MAJOR:
        raise SchemaVersionError(
            f"store schema {version[0]}.{version[1]} is newer than this Kintsugi "
            f"({SCHEMA_MAJOR}.{SCHEMA_MINOR}); upgrade Kintsugi to open it"
        )
    return version


async def _set_version(conn: asyncpg.Connection, version: tuple[int, int]) -> None:
    await conn.execute(
        f"INSERT INTO {VERSION_TABLE} (one, major, minor) VALUES (true, $1, $2) "
        "ON CONFLICT (one) DO UPDATE SET major = excluded.major, minor = excluded.minor",
        *version,
    )


async def ensure_schema(conn: asyncpg.Connection, *, readonly: bool = False) -> tuple[int, int]:
    """Create or migrate the schema; return the database's (major, minor) version.

    Raises :class:`SchemaVersionError` for a newer major version (nothing written). With
    ``readonly`` nothing is written and an empty or older database is reported as is.
    A writable open also creates the node registry's table and the change log's tables if
    they are missing (unversioned: :mod:`engine.storage.postgres.registry` and
    :mod:`engine.storage.postgres.feed` say why).
    """
    version = await _ensure_versioned(conn, readonly=readonly)
    if not readonly:
        await ensure_registry(conn, SCHEMA_LOCK)
        await ensure_change_log(conn, SCHEMA_LOCK)
    return version


async def _ensure_versioned(conn: asyncpg.Connection, *, readonly: bool) -> tuple[int, int]:
    """The versioned part of :func:`ensure_schema`."""
    version = await check_version(conn)
    if readonly or version >= (SCHEMA_MAJOR, SCHEMA_MINOR):
        return version
    # A session lock, taken before the transactions that change the schema: each of them
    # starts after the lock is held, so it sees (in the catalog too) what another node
    # committed while this one waited.
    await conn.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK)
    try:
        version = await check_version(conn)  # another node may have done it meanwhile
        if version == (0, 0):
            async with conn.transaction():
                await _run_all(conn, BASE_SCHEMA + SCHEMA_1_1)
                await _set_version(conn, (SCHEMA_MAJOR, SCHEMA_MINOR))
            return SCHEMA_MAJOR, SCHEMA_MINOR
        while version < (SCHEMA_MAJOR, SCHEMA_MINOR) and version in MIGRATIONS:
            target, step = MIGRATIONS[version]
            async with conn.transaction():
                await step(conn)
                await _set_version(conn, target)
            version = target
        return version
    finally:
        # A lost connection has released the lock already: the error that lost it is the one
        # to report.
        with contextlib.suppress(Exception):
            await conn.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK)
