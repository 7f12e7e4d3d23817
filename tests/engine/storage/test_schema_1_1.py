"""Schema 1.1 (the audit log and recovery receipts) over stores written at 1.0 (DESIGN §9).

A 1.0 store is made two ways: by the statements the 1.0 code ran (``BASE_SCHEMA`` and the KV
tables, version 1.0), and from a store with data by dropping the 1.1 tables and setting the
version back, as a 1.0 build would have left it. Opened for writing it migrates to 1.1 with
its data intact; opened read-only it is left as it is and shows an empty audit log.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.crypto import AccountKey
from engine.model.audit import AuditAction
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.node.recovery import append_audit
from engine.storage.sqlite.kv import KV_SCHEMA
from engine.storage.sqlite.schema import BASE_SCHEMA, encode_version
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import key_from_seed
from tests.engine.storage import file_state
from tests.util import run_cli

V1_0 = encode_version(1, 0)
V1_1 = encode_version(1, 1)
T0 = 1_790_000_000_000


def tables(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    finally:
        conn.close()


def user_version(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def as_written_by_1_0(path: Path) -> Path:
    """An empty store created by the statements of the 1.0 code."""
    path.mkdir()
    db = store_file(path)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in [s for s in BASE_SCHEMA.split(";") if s.strip()] + list(KV_SCHEMA):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {V1_0}")
    finally:
        conn.close()
    return db


def downgraded_with_data(path: Path) -> tuple[Path, str, dict[str, object]]:
    """A store holding a CoMap, taken back to 1.0: the 1.1 tables dropped, version 1.0.
    Returns its database file, the CoMap's id and its content."""
    with LocalNode.open(path, key_from_seed(1)) as node:
        doc = node.create_map(None)
        for i in range(20):
            node.set(doc.id, f"k{i}", i)
        expected = node.get_map(doc.id)
    db = store_file(path)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TABLE audit")
        conn.execute("DROP TABLE receipts")
        conn.execute(f"PRAGMA user_version = {V1_0}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db, doc.id, expected


def test_a_store_written_by_1_0_migrates_to_the_schema_of_a_fresh_store(tmp_path: Path) -> None:
    old = as_written_by_1_0(tmp_path / "old")
    assert "audit" not in tables(old)
    SQLiteStore(old).close()
    assert user_version(old) == V1_1
    fresh = tmp_path / "fresh"
    SQLiteStore(fresh).close()
    assert tables(old) == tables(store_file(fresh))


def test_a_1_0_store_with_data_migrates_to_1_1_with_its_data_intact(tmp_path: Path) -> None:
    db, doc, expected = downgraded_with_data(tmp_path / "store")
    store = SQLiteStore(db)
    try:
        assert store.version == (1, 1)
        assert store.audit_log() == [] and store.receipts() == []
        core = load_core(store, doc)
        assert core is not None and not core.corrupt
        assert core.comap().items() == expected
        record = append_audit(store, AccountKey.generate(), AuditAction.CONNECT, "here", details={}, at_ms=T0)
        assert store.audit_log() == [record]
    finally:
        store.close()
    assert user_version(db) == V1_1
    assert {"audit", "receipts"} <= set(tables(db))


def test_a_1_0_store_opens_read_only_unchanged_with_an_empty_audit_log(tmp_path: Path) -> None:
    db, doc, expected = downgraded_with_data(tmp_path / "store")
    before = file_state(db)
    store = SQLiteStore(db, readonly=True)
    try:
        assert store.version == (1, 0)
        assert store.audit_log() == [] and store.receipts() == []
        core = load_core(store, doc)
        assert core is not None and core.comap().items() == expected
    finally:
        store.close()
    ran = run_cli("audit", "show", str(db), "--json")
    assert '"records": []' in ran.stdout and '"ok": true' in ran.stdout
    assert run_cli("audit", "verify", str(db)).returncode == 0
    assert file_state(db) == before, "a read-only open wrote to the 1.0 store"
    assert user_version(db) == V1_0 and "audit" not in tables(db)
