"""The SQLite schema, its version and its migrations (DESIGN §9).

The version lives in ``PRAGMA user_version`` as ``major * 65536 + minor``. A store with a
newer *major* version refuses to open (:class:`engine.errors.SchemaVersionError`): its
meaning changed in ways this program cannot know. A newer *minor* version opens (only
additions); an older one is migrated forward step by step, each step in one transaction.

Tables:

- ``covalues``: one row per CoValue: id, canonical header bytes, type, deleted flag.
- ``sessions``: one row per (CoValue, session) with the stored count and head hash; its
  integer ``sid`` keys the bulky tables below.
- ``blocks``: runs of consecutive transactions of one session, ``[start, end)``, at most
  :data:`BLOCK_TRANSACTIONS` each: ``txs`` is a CBOR array of the transaction bytes and
  ``hashes`` the concatenated chain hashes ``h(start+1) … h(end)``. One row per run instead of
  one per transaction makes a durable write of 100,000 transactions a hundred inserts, and a
  window of a million-transaction session one indexed lookup.
- ``signatures``: (sid, n) → checkpoint signature of ``h(n)``.
- ``corrupt``: sessions whose stored chain failed verification, with the first broken index.
- ``checkpoints``: cursors by namespace (sync progress, recovery exchanges), never mixed.
- ``kv`` and ``kv_log``: CAS slots and their outcome history (engine.kv.store).
- ``audit`` (1.1): the operator's audit log, one signed hash-chained record per row, in
  ``seq`` order (engine.model.audit).
- ``receipts`` (1.1): signed receipts of applied recoveries, with their archives
  (engine.recovery.receipt), by id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from engine.errors import SchemaVersionError
from engine.storage.sqlite.kv import KV_SCHEMA

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 1
#: Most transactions stored in one ``blocks`` row.
BLOCK_TRANSACTIONS = 1000

BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS covalues (
    id TEXT PRIMARY KEY,
    header BLOB NOT NULL,
    type TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    sid INTEGER PRIMARY KEY,
    covalue TEXT NOT NULL,
    session TEXT NOT NULL,
    count INTEGER NOT NULL,
    head BLOB NOT NULL,
    UNIQUE (covalue, session)
);
CREATE TABLE IF NOT EXISTS blocks (
    sid INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    txs BLOB NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (sid, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signatures (
    sid INTEGER NOT NULL,
    n INTEGER NOT NULL,
    sig BLOB NOT NULL,
    PRIMARY KEY (sid, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS corrupt (
    covalue TEXT NOT NULL,
    session TEXT NOT NULL,
    idx INTEGER NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (covalue, session)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""

#: Tables added in 1.1: the audit log and recovery receipts.
SCHEMA_1_1 = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    hash BLOB NOT NULL,
    sig BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    id BLOB PRIMARY KEY,
    at INTEGER NOT NULL,
    body BLOB NOT NULL,
    sig BLOB NOT NULL
) WITHOUT ROWID;
"""


def _statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]


def _to_1_1(conn: sqlite3.Connection) -> None:
    for statement in _statements(SCHEMA_1_1):
        conn.execute(statement)


#: Migrations from (major, minor) to the next version, applied in order.
MIGRATIONS: dict[tuple[int, int], tuple[tuple[int, int], Callable[[sqlite3.Connection], None]]] = {
    (1, 0): ((1, 1), _to_1_1),
}


def encode_version(major: int, minor: int) -> int:
    return major * 65536 + minor


def decode_version(value: int) -> tuple[int, int]:
    return divmod(value, 65536)


def check_version(conn: sqlite3.Connection) -> tuple[int, int]:
    """The store's (major, minor); raises :class:`SchemaVersionError` for a newer major."""
    (raw,) = conn.execute("PRAGMA user_version").fetchone()
    version = decode_version(raw)
    if version[0] > SCHEMA_MAJOR:
        raise SchemaVersionError(
            f"store schema {version[0]}.{version[1]} is newer than this Kintsugi "
            f"({SCHEMA_MAJOR}.{SCHEMA_MINOR}); upgrade Kintsugi to open it"
        )
    return version


def ensure_schema(conn: sqlite3.Connection, *, readonly: bool = False) -> tuple[int, int]:
    """Create or migrate the schema; return the store's (major, minor) version.

    Raises :class:`SchemaVersionError` for a newer major version. With ``readonly`` nothing is
    written and an empty or older store is reported as is.
    """
    version = check_version(conn)
    if readonly:
        return version
    if version == (0, 0):
        conn.execute("BEGIN IMMEDIATE")
        statements = _statements(BASE_SCHEMA) + list(KV_SCHEMA) + _statements(SCHEMA_1_1)
        for statement in statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {encode_version(SCHEMA_MAJOR, SCHEMA_MINOR)}")
        conn.execute("COMMIT")
        return SCHEMA_MAJOR, SCHEMA_MINOR
    while version < (SCHEMA_MAJOR, SCHEMA_MINOR) and version in MIGRATIONS:
        target, step = MIGRATIONS[version]
        conn.execute("BEGIN IMMEDIATE")
        step(conn)
        conn.execute(f"PRAGMA user_version = {encode_version(*target)}")
        conn.execute("COMMIT")
        version = target
    return version
