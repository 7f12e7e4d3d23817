"""Schema version of SQLite stores (DESIGN §9): major.minor in PRAGMA user_version."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine.errors import SchemaVersionError, StorageError
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.storage.sqlite.queue import AsyncStore
from engine.storage.sqlite.schema import SCHEMA_MAJOR, SCHEMA_MINOR, decode_version, encode_version
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import key_from_seed
from tests.engine.storage import file_state

CURRENT = encode_version(SCHEMA_MAJOR, SCHEMA_MINOR)


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (value,) = conn.execute("PRAGMA user_version").fetchone()
        return int(value)
    finally:
        conn.close()


def set_user_version(path: Path, value: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA user_version = {value}")
    finally:
        conn.close()


def make_store(tmp_path: Path) -> Path:
    """A store holding one CoMap; returns its database file."""
    store = SQLiteStore(tmp_path / "store")
    try:
        node = LocalNode(key_from_seed(1), store)
        doc = node.create_map(None)
        node.set(doc.id, "k", "v")
        node.close()
    finally:
        store.close()
    return store_file(tmp_path / "store")


def test_version_encoding() -> None:
    """major.minor is stored as major * 65536 + minor and decodes back."""
    assert encode_version(1, 0) == 65536
    assert encode_version(3, 7) == 3 * 65536 + 7
    assert decode_version(encode_version(2, 65535)) == (2, 65535)


def test_fresh_store_gets_the_current_version(tmp_path: Path) -> None:
    """A new store is created at the current major.minor, with every table in place."""
    store = SQLiteStore(tmp_path / "fresh")
    try:
        assert store.version == (SCHEMA_MAJOR, SCHEMA_MINOR)
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        store.close()
    assert user_version(store.path) == CURRENT
    assert {"covalues", "sessions", "signatures", "corrupt", "checkpoints", "kv", "kv_log"} <= tables


def test_reopening_keeps_version_and_data(tmp_path: Path) -> None:
    """Opening an existing current store changes neither its version nor its rows."""
    path = make_store(tmp_path)
    store = SQLiteStore(path)
    try:
        assert store.version == (SCHEMA_MAJOR, SCHEMA_MINOR)
        assert len(store.covalue_ids()) == 1
    finally:
        store.close()
    assert user_version(path) == CURRENT


@pytest.mark.parametrize("readonly", [False, True])
def test_newer_major_refuses_to_open(tmp_path: Path, readonly: bool) -> None:
    """A store of a newer major version raises SchemaVersionError naming both versions."""
    path = make_store(tmp_path)
    set_user_version(path, encode_version(SCHEMA_MAJOR + 1, 3))
    with pytest.raises(SchemaVersionError) as info:
        SQLiteStore(path, readonly=readonly)
    err = info.value
    assert err.code == "schema_too_new"
    assert isinstance(err, StorageError)
    assert f"{SCHEMA_MAJOR + 1}.3" in str(err)
    assert f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}" in str(err)
    assert err.to_dict()["code"] == "schema_too_new"
    assert user_version(path) == encode_version(SCHEMA_MAJOR + 1, 3)


def test_refusing_a_newer_major_leaves_the_file_untouched(tmp_path: Path) -> None:
    """Refusing a too-new store writes nothing to it, not even the journal mode."""
    # A store as a future Kintsugi might write it: rollback journal, version (major+1).0.
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("CREATE TABLE future_things (x)")
        conn.execute(f"PRAGMA user_version = {encode_version(SCHEMA_MAJOR + 1, 0)}")
    finally:
        conn.close()
    before = file_state(path)
    with pytest.raises(SchemaVersionError):
        SQLiteStore(path)
    assert file_state(path) == before, "the refused store was modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["future.db"]


def test_newer_minor_opens(tmp_path: Path) -> None:
    """A newer minor version (only additions) opens, reads, writes and keeps its version."""
    path = make_store(tmp_path)
    newer = encode_version(SCHEMA_MAJOR, SCHEMA_MINOR + 5)
    set_user_version(path, newer)
    store = SQLiteStore(path)
    try:
        assert store.version == (SCHEMA_MAJOR, SCHEMA_MINOR + 5)
        ((cid, _type, _deleted),) = store.covalue_ids()
        core = load_core(store, cid)
        assert core is not None and core.comap().items() == {"k": "v"}
        assert not core.corrupt
    finally:
        store.close()
    readonly = SQLiteStore(path, readonly=True)
    try:
        assert readonly.version == (SCHEMA_MAJOR, SCHEMA_MINOR + 5)
    finally:
        readonly.close()
    assert user_version(path) == newer, "a newer minor must not be rewritten to ours"


def test_async_store_reports_a_newer_major(tmp_path: Path) -> None:
    """AsyncStore.start raises the worker's SchemaVersionError instead of hanging."""
    path = make_store(tmp_path)
    set_user_version(path, encode_version(SCHEMA_MAJOR + 1, 0))

    async def main() -> None:
        astore = AsyncStore(path)
        with pytest.raises(SchemaVersionError):
            astore.start()

    asyncio.run(main())
