"""SQLiteStore (DESIGN §9): round trips, corruption found on load, readonly use, errors.

Every test works on a real store file in ``tmp_path``; damage is done with plain SQL on the
file, the way a bad disk or a stray tool would do it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.covalue import CoValueCore
from engine.errors import (
    ChainError,
    SignatureError,
    StorageBugError,
    StorageEnvironmentError,
    StorageError,
    StoreNotFound,
)
from engine.ids import CoValueID, SessionID
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import expected_keys, key_from_seed, write_keys
from tests.engine.storage import file_state
from tests.util import timeout

#: Transactions of the long session "b": more than one storage block.
B_COUNT = 1500


@dataclass
class Sample:
    """A store holding one CoMap written by three accounts, one session each."""

    path: Path
    covalue: CoValueID
    a: SessionID
    b: SessionID
    c: SessionID
    known: dict[SessionID, tuple[int, bytes]]
    items: dict[str, Any]
    logs: dict[SessionID, tuple[list[bytes], dict[int, bytes]]]


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    path = tmp_path / "store"
    first = LocalNode.open(path, key_from_seed(1))
    doc = first.create_map(None).id
    write_keys(first, doc, "a", 10)
    write_keys(first, doc, "a", 5, start=10)
    first.set(doc, "shared", "a")
    a = first.session
    first.close()

    second = LocalNode.open(path, key_from_seed(2))
    write_keys(second, doc, "b", B_COUNT)
    second.set(doc, "shared", "b")
    b = second.session
    second.close()

    third = LocalNode.open(path, key_from_seed(3))
    write_keys(third, doc, "c", 7)
    third.set(doc, "shared", "c")
    core = third.get(doc)
    known = dict(third.known_state(doc).sessions)
    items = third.get_map(doc)
    logs = {sid: (list(log.txs), dict(log.sigs)) for sid, log in core.sessions.items()}
    c = third.session
    third.close()
    assert len({a, b, c}) == 3
    return Sample(store_file(path), doc, a, b, c, known, items, logs)


@pytest.fixture
def store(sample: Sample) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(sample.path)
    try:
        yield opened
    finally:
        opened.close()


def raw(path: Path) -> sqlite3.Connection:
    """A plain autocommit connection (usable from another thread) to damage or lock a store."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def load(store: SQLiteStore, covalue: CoValueID) -> CoValueCore:
    core = load_core(store, covalue)
    assert core is not None
    return core


# -- round trip ------------------------------------------------------------------------------


def test_round_trip_of_several_sessions(sample: Sample, store: SQLiteStore) -> None:
    """A CoMap of three sessions reloads with equal content, known state and logs."""
    core = load(store, sample.covalue)
    assert not core.corrupt
    assert dict(core.known_state().sessions) == sample.known
    assert core.comap().items() == sample.items
    assert sample.items["shared"] == "c"
    assert {k: v for k, v in sample.items.items() if k.startswith("b/")} == expected_keys("b", B_COUNT)
    assert {sid: (log.txs, log.sigs) for sid, log in core.sessions.items()} == sample.logs
    assert store.covalue_ids() == [(sample.covalue, "comap", False)]
    assert store.has(sample.covalue)
    assert store.load_covalue(CoValueID("co_zunknown")) is None


def test_session_window_reads_across_blocks(sample: Sample, store: SQLiteStore) -> None:
    """A window of a long session returns (idx, tx, hash) rows in order across blocks."""
    txs = sample.logs[sample.b][0]
    window = store.session_window(sample.covalue, sample.b, 995, 10)
    assert [i for i, _tx, _h in window] == list(range(995, 1005))
    assert [tx for _i, tx, _h in window] == txs[995:1005]
    core = load(store, sample.covalue)
    assert [h for _i, _tx, h in window] == core.sessions[sample.b].hashes[995:1005]
    assert store.session_window(sample.covalue, sample.b, B_COUNT + 1, 10) == []
    assert store.session_window(sample.covalue, sample.b, 0, 0) == []


# -- corruption --------------------------------------------------------------------------------


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def _block_of(conn: sqlite3.Connection, sid: int, idx: int) -> tuple[int, bytes, bytes]:
    start, txs, hashes = conn.execute(
        "SELECT start, txs, hashes FROM blocks WHERE sid = ? AND start <= ? ORDER BY start DESC LIMIT 1",
        (sid, idx),
    ).fetchone()
    return start, txs, hashes


def damage(path: Path, covalue: CoValueID, session: SessionID, part: str, tx: bytes) -> None:
    """Damage session ``session`` on disk at index 1200 (``tx`` is its transaction)."""
    conn = raw(path)
    try:
        (sid,) = conn.execute(
            "SELECT sid FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)
        ).fetchone()
        start, txs, hashes = _block_of(conn, sid, 1200)
        if part == "tx":
            # The transaction's bytes sit verbatim inside the block's CBOR array.
            at = txs.index(tx) + len(tx) - 1
            conn.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", (_flip(txs, at), sid, start))
        elif part == "hash":
            at = (1200 - start) * 32 + 7
            conn.execute("UPDATE blocks SET hashes = ? WHERE sid = ? AND start = ?", (_flip(hashes, at), sid, start))
        elif part == "sig":
            (sig,) = conn.execute("SELECT sig FROM signatures WHERE sid = ? AND n = 1000", (sid,)).fetchone()
            conn.execute("UPDATE signatures SET sig = ? WHERE sid = ? AND n = 1000", (_flip(sig, 10), sid))
        elif part == "block":
            conn.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", (_flip(txs, 0), sid, start))
        elif part == "gap":
            conn.execute("DELETE FROM blocks WHERE sid = ? AND start = ?", (sid, start))
        else:  # pragma: no cover
            raise AssertionError(part)
    finally:
        conn.close()


#: part damaged → (error type, first broken index)
DAMAGE = {
    "tx": (ChainError, 1200),
    "hash": (ChainError, 1200),
    "sig": (SignatureError, 1000),
    "block": (ChainError, 1000),
    "gap": (ChainError, 1000),
}


@pytest.mark.parametrize("part", sorted(DAMAGE))
def test_damaged_session_is_left_out_and_recorded(sample: Sample, part: str) -> None:
    """A damaged session is left out, listed in core.corrupt and the corrupt table; the rest loads."""
    error_type, index = DAMAGE[part]
    damage(sample.path, sample.covalue, sample.b, part, sample.logs[sample.b][0][1200])
    store = SQLiteStore(sample.path)
    try:
        core = load(store, sample.covalue)
        assert set(core.corrupt) == {sample.b}
        error = core.corrupt[sample.b]
        assert isinstance(error, error_type), repr(error)
        assert error.index == index
        assert set(core.sessions) == {sample.a, sample.c}
        assert sample.b not in core.known_state().sessions
        for sid in (sample.a, sample.c):
            assert (core.sessions[sid].txs, core.sessions[sid].sigs) == sample.logs[sid]
        expected = {k: v for k, v in sample.items.items() if not k.startswith("b/")}
        assert core.comap().items() == expected
        assert store.corrupt_sessions() == [(sample.covalue, sample.b, index, error.code, str(error))]
        # Loading again finds the same and records it once.
        again = load(store, sample.covalue)
        assert set(again.corrupt) == {sample.b}
        assert len(store.corrupt_sessions()) == 1
    finally:
        store.close()


def test_corrupt_record_survives_reopening(sample: Sample) -> None:
    """The corrupt table is durable: a later readonly open still lists the broken session."""
    damage(sample.path, sample.covalue, sample.b, "hash", b"")
    store = SQLiteStore(sample.path)
    try:
        load(store, sample.covalue)
    finally:
        store.close()
    readonly = SQLiteStore(sample.path, readonly=True)
    try:
        [(covalue, session, idx, code, _reason)] = readonly.corrupt_sessions()
    finally:
        readonly.close()
    assert (covalue, session, idx, code) == (sample.covalue, sample.b, 1200, "broken_chain")


# -- readonly -----------------------------------------------------------------------------------


def test_readonly_store_never_writes(sample: Sample) -> None:
    """A readonly store opens, loads (even a damaged session) and never changes the file."""
    damage(sample.path, sample.covalue, sample.b, "sig", b"")
    before = file_state(sample.path)
    store = SQLiteStore(sample.path, readonly=True)
    try:
        core = load(store, sample.covalue)
        assert set(core.corrupt) == {sample.b}
        assert set(core.sessions) == {sample.a, sample.c}
        assert store.covalue_ids() == [(sample.covalue, "comap", False)]
        assert store.session_window(sample.covalue, sample.a, 0, 3)
        assert store.corrupt_sessions() == []
        with pytest.raises(StorageError):
            store.write([core.header])
    finally:
        store.close()
    assert file_state(sample.path) == before
    wal = sample.path.with_name(sample.path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "a readonly open wrote to the WAL"


def test_readonly_store_must_exist(tmp_path: Path) -> None:
    """Opening a missing store readonly raises StoreNotFound and creates nothing."""
    with pytest.raises(StoreNotFound) as info:
        SQLiteStore(tmp_path / "missing", readonly=True)
    assert isinstance(info.value, StorageError)
    assert list(tmp_path.iterdir()) == []


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
