"""SQLiteStore (DESIGN §9): what only a SQLite store has — file locks, files that are not a
store, paths with URI characters. The Store interface's rules (round trips, corruption found
on load, read-only use) are tested against every store in tests/engine/storage/test_store.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.covalue import CoValueCore
from engine.errors import StorageBugError, StorageEnvironmentError, StorageError
from engine.ids import CoValueID
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import key_from_seed
from tests.util import timeout


@dataclass
class Sample:
    """A store file holding one CoMap."""

    path: Path
    covalue: CoValueID


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    with LocalNode.open(tmp_path / "store", key_from_seed(1)) as node:
        doc = node.create_map(None).id
        node.set(doc, "k", "v")
    return Sample(store_file(tmp_path / "store"), doc)


def raw(path: Path) -> sqlite3.Connection:
    """A plain autocommit connection (usable from another thread) to lock a store."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def load(store: SQLiteStore, covalue: CoValueID) -> CoValueCore:
    core = load_core(store, covalue)
    assert core is not None
    return core


# -- errors ------------------------------------------------------------------------------------


def test_locked_database_is_an_environment_error(sample: Sample) -> None:
    """A write that cannot get the lock raises StorageEnvironmentError, then works once freed."""
    store = SQLiteStore(sample.path)
    other = raw(sample.path)
    try:
        core = load(store, sample.covalue)
        # The store waits BUSY_TIMEOUT_MS (10 s) by default; shorten it for this test.
        store.conn.execute("PRAGMA busy_timeout = 50")
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageEnvironmentError) as info:
            store.write([core.header])
        assert "locked" in str(info.value)
        assert info.value.code == "storage_environment"
        other.execute("ROLLBACK")
        store.write([core.header])  # the failed transaction left nothing open behind it
    finally:
        other.close()
        store.close()


def test_writer_waits_for_a_short_lock(sample: Sample) -> None:
    """A lock released within the busy timeout is waited for, not reported."""
    store = SQLiteStore(sample.path)
    other = raw(sample.path)
    try:
        core = load(store, sample.covalue)
        other.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(timeout(0.2), lambda: other.execute("ROLLBACK"))
        started = time.monotonic()
        release.start()
        try:
            store.write([core.header])
        finally:
            release.join()
        assert time.monotonic() - started >= timeout(0.15)
    finally:
        other.close()
        store.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_file_that_is_not_a_store(tmp_path: Path, readonly: bool) -> None:
    """A file that is not SQLite raises a StorageError (never a bare sqlite3 error)."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StorageError) as info:
        SQLiteStore(path, readonly=readonly)
    assert isinstance(info.value, StorageEnvironmentError | StorageBugError)


@pytest.mark.parametrize("name", ["notes #1", "100% done", "what?"])
def test_store_path_with_uri_characters(tmp_path: Path, name: str) -> None:
    """A store directory whose name holds '#', '%' or '?' opens the file inside it."""
    directory = tmp_path / name
    node = LocalNode.open(directory, key_from_seed(1))
    try:
        doc = node.create_map(None).id
        node.set(doc, "k", "v")
    finally:
        node.close()
    assert (directory / "kintsugi.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    store = SQLiteStore(directory, readonly=True)
    try:
        assert load(store, doc).comap().items() == {"k": "v"}
    finally:
        store.close()
