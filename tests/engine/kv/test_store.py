from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    InvalidEnvelope,
    InvalidId,
    KVAccessDenied,
    KVError,
    StorageBugError,
    StorageEnvironmentError,
    UsageError,
)
from engine.ids import AccountID
from engine.kv.envelope import MAX_SLOT_VALUE_SIZE, Present, Tombstone, encode_envelope
from engine.kv.store import KV_LOG_KEEP_PER_KEY, AccountKV, CASRecord, Conflict, KVStore, MemoryKV, Stored
from engine.storage.postgres.store import PostgresStore
from engine.storage.sqlite.kv import KV_SCHEMA, SQLiteKV, cas_in_transaction, create_schema
from tests.engine.kv._util import new_db, open_db, random_account

MakeStore = Callable[..., KVStore]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
def connections(tmp_path: Path) -> Iterator[Callable[[], sqlite3.Connection]]:
    """Connections to one fresh database holding the KV schema, all closed afterwards."""
    path = new_db(tmp_path / "kv.db")
    opened: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        opened.append(open_db(path))
        return opened[-1]

    yield connect
    for conn in opened:
        conn.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, connections: Callable[[], sqlite3.Connection]) -> Iterator[MakeStore]:
    """Builds stores of one kind; SQLite ones share one database file, PostgreSQL ones one
    database, like processes and nodes do."""
    if request.param == "postgres":
        pg_url = request.getfixturevalue("pg_url")
        opened: list[PostgresStore] = []

        def postgres(**kwargs: Any) -> KVStore:
            opened.append(PostgresStore(pg_url))
            return opened[-1].kv_view(**kwargs)

        yield postgres
        for store in opened:
            store.close()
        return
    if request.param == "memory":
        shared = MemoryKV()

        def memory(**kwargs: Any) -> KVStore:
            return MemoryKV(**kwargs) if kwargs else shared

        yield memory
        return

    def sqlite(**kwargs: Any) -> KVStore:
        return SQLiteKV(connections(), **kwargs)

    yield sqlite


@pytest.fixture
def store(make_store: MakeStore) -> KVStore:
    return make_store()


ACCOUNT = random_account()


def test_never_written(store: KVStore) -> None:
    assert store.get("ns", "k") == (0, None)
    assert store.list("ns") == []
    assert store.history("ns", "k") == []


def test_generations_start_at_one_and_grow(store: KVStore) -> None:
    for generation in range(1, 6):
        assert store.cas("ns", "k", generation - 1, Present(generation)) == Stored(generation)
        assert store.get("ns", "k") == (generation, Present(generation))


def test_stale_expected_generation_conflicts_with_current(store: KVStore) -> None:
    store.cas("ns", "k", 0, Present("first"))
    store.cas("ns", "k", 1, Present("second"))
    for stale in (0, 1, 3, 99):
        assert store.cas("ns", "k", stale, Present("lost")) == Conflict(2, Present("second"))
    assert store.get("ns", "k") == (2, Present("second"))


def test_conflict_on_never_written_key(store: KVStore) -> None:
    assert store.cas("ns", "k", 4, Present(1)) == Conflict(0, None)
    assert store.get("ns", "k") == (0, None)


def test_tombstone_then_recreate_continues_generation(store: KVStore) -> None:
    tomb = Tombstone(1_700_000_000_000, ACCOUNT)
    store.cas("ns", "k", 0, Present("a"))
    assert store.cas("ns", "k", 1, tomb) == Stored(2)
    assert store.get("ns", "k") == (2, tomb)
    # A writer that read before the delete cannot resurrect the key by accident (no ABA).
    assert store.cas("ns", "k", 1, Present("stale")) == Conflict(2, tomb)
    assert store.cas("ns", "k", 0, Present("fresh")) == Conflict(2, tomb)
    assert store.cas("ns", "k", 2, Present("b")) == Stored(3)
    assert store.get("ns", "k") == (3, Present("b"))


def test_list_by_prefix_sorted(store: KVStore) -> None:
    keys = ["a/\U0001f600", "a/z", "a/é", "a/", "a", "a0", "b/x", "a/b/c"]
    for key in keys:
        store.cas("ns", key, 0, Present(key))
    store.cas("other", "a/q", 0, Present("elsewhere"))
    store.cas("ns", "a/z", 1, Tombstone(5, ACCOUNT))
    listed = store.list("ns", "a/")
    assert [key for key, _, _ in listed] == ["a/", "a/b/c", "a/z", "a/é", "a/\U0001f600"]
    assert ("a/z", 2, Tombstone(5, ACCOUNT)) in listed
    assert ("a/é", 1, Present("a/é")) in listed
    assert [key for key, _, _ in store.list("ns")] == sorted(keys)
    assert store.list("ns", "zz") == []


def test_history_records_losing_attempts(make_store: MakeStore) -> None:
    store = make_store(writer="alice", clock_ms=Clock())
    store.cas("ns", "k", 0, Present(1))
    store.cas("ns", "k", 0, Present(2))  # lost
    store.cas("ns", "k", 1, Present(2))
    store.cas("ns", "k", 5, Tombstone(1, ACCOUNT))  # lost
    store.cas("ns", "other", 0, Present(0))
    assert store.history("ns", "k") == [
        CASRecord("ns", "k", 1001, 0, "stored", 1, "alice"),
        CASRecord("ns", "k", 1002, 0, "conflict", 1, "alice"),
        CASRecord("ns", "k", 1003, 1, "stored", 2, "alice"),
        CASRecord("ns", "k", 1004, 5, "conflict", 2, "alice"),
    ]
    assert store.history("ns", "other") == [CASRecord("ns", "other", 1005, 0, "stored", 1, "alice")]


def test_history_names_each_writer(connections: Callable[[], sqlite3.Connection]) -> None:
    clock = Clock()
    alice = SQLiteKV(connections(), writer="alice", clock_ms=clock)
    bob = SQLiteKV(connections(), writer="bob", clock_ms=clock)
    alice.cas("ns", "k", 0, Present(1))
    bob.cas("ns", "k", 0, Present(2))  # lost
    bob.cas("ns", "k", 1, Present(2))
    alice.cas("ns", "k", 1, Present(3))  # lost
    assert bob.history("ns", "k") == [
        CASRecord("ns", "k", 1001, 0, "stored", 1, "alice"),
        CASRecord("ns", "k", 1002, 0, "conflict", 1, "bob"),
        CASRecord("ns", "k", 1003, 1, "stored", 2, "bob"),
        CASRecord("ns", "k", 1004, 1, "conflict", 2, "alice"),
    ]


def test_history_keeps_newest_per_key(make_store: MakeStore) -> None:
    assert KV_LOG_KEEP_PER_KEY == 256
    store = make_store(log_keep=3)
    for generation in range(6):
        store.cas("ns", "k", generation, Present(generation))
    store.cas("ns", "k", 0, Present("lost"))
    store.cas("ns", "j", 0, Present("j"))
    history = store.history("ns", "k")
    assert [(r.outcome, r.generation) for r in history] == [
        ("stored", 5),
        ("stored", 6),
        ("conflict", 6),
    ]
    assert len(store.history("ns", "j")) == 1


def test_stored_values_are_copies(store: KVStore) -> None:
    value = {"items": [1]}
    store.cas("ns", "k", 0, Present(value))
    value["items"].append(2)
    _, slot = store.get("ns", "k")
    assert slot == Present({"items": [1]})
    assert isinstance(slot, Present)
    slot.value["items"].append(3)
    assert store.get("ns", "k") == (1, Present({"items": [1]}))


def test_unstorable_slot_changes_nothing(store: KVStore) -> None:
    with pytest.raises(InvalidEnvelope):
        store.cas("ns", "k", 0, Present(b"x" * MAX_SLOT_VALUE_SIZE))
    with pytest.raises(InvalidEnvelope):
        store.cas("ns", "k", 0, Present(object()))
    assert store.get("ns", "k") == (0, None)
    assert store.history("ns", "k") == []


@pytest.mark.parametrize(
    ("namespace", "key", "error"),
    [
        ("", "k", KVError),
        ("ns", "k" * 1025, KVError),
        ("ns", "a\x00b", KVError),
        ("ns", "\ud800", KVError),
        (b"ns", "k", UsageError),
        ("ns", 1, UsageError),
    ],
)
def test_bad_address(store: KVStore, namespace: Any, key: Any, error: type[Exception]) -> None:
    for call in (
        lambda: store.get(namespace, key),
        lambda: store.cas(namespace, key, 0, Present(1)),
        lambda: store.list(namespace, key),
        lambda: store.history(namespace, key),
    ):
        with pytest.raises(error):
            call()


@pytest.mark.parametrize("expected", [-1, True, 1.0, None])
def test_bad_expected_generation(store: KVStore, expected: Any) -> None:
    with pytest.raises(UsageError):
        store.cas("ns", "k", expected, Present(1))


# -- the account view --------------------------------------------------------------------


def test_account_kv_isolation(store: KVStore) -> None:
    me, other = random_account(), random_account()
    mine = AccountKV(store, me)
    theirs = AccountKV(store, other)
    assert mine.cas(me, "k", 0, Present("mine")) == Stored(1)
    assert theirs.cas(other, "k", 0, Present("theirs")) == Stored(1)
    assert mine.get(me, "k") == (1, Present("mine"))
    assert [key for key, _, _ in mine.list(me)] == ["k"]
    assert len(mine.history(me, "k")) == 1
    for call in (
        lambda: mine.get(other, "k"),
        lambda: mine.cas(other, "k", 1, Present("stolen")),
        lambda: mine.list(other),
        lambda: mine.history(other, "k"),
        lambda: mine.get("ns", "k"),
    ):
        with pytest.raises(KVAccessDenied):
            call()
    assert store.get(other, "k") == (1, Present("theirs"))


def test_admin_reads_everything_writes_only_own(store: KVStore) -> None:
    admin, user = random_account(), random_account()
    store.cas(user, "k", 0, Present("user"))
    view = AccountKV(store, admin, admin=True)
    assert view.get(user, "k") == (1, Present("user"))
    assert view.list(user) == [("k", 1, Present("user"))]
    assert [r.outcome for r in view.history(user, "k")] == ["stored"]
    with pytest.raises(KVAccessDenied):
        view.cas(user, "k", 1, Present("admin"))
    assert view.cas(admin, "k", 0, Present("admin")) == Stored(1)
    assert store.get(user, "k") == (1, Present("user"))


def test_account_kv_needs_an_account() -> None:
    with pytest.raises(InvalidId):
        AccountKV(MemoryKV(), AccountID("not-an-account"))


# -- SQLite specifics --------------------------------------------------------------------


def test_schema_is_not_created_by_the_store(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "bare.db")
    try:
        store = SQLiteKV(conn)
        with pytest.raises(StorageBugError):
            store.get("ns", "k")
        with pytest.raises(StorageBugError):
            store.cas("ns", "k", 0, Present(1))
        assert not conn.in_transaction
        create_schema(conn)
        assert store.cas("ns", "k", 0, Present(1)) == Stored(1)
        with pytest.raises(StorageBugError):
            create_schema(conn)
        assert not conn.in_transaction
    finally:
        conn.close()


def test_kv_schema_runs_in_a_callers_transaction(tmp_path: Path) -> None:
    conn = open_db(tmp_path / "migrated.db")
    try:
        conn.execute("BEGIN")
        for statement in KV_SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
        assert {"kv", "kv_log", "kv_log_by_key"} <= tables
    finally:
        conn.close()


def test_sqlite_kv_needs_autocommit(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        with pytest.raises(UsageError):
            SQLiteKV(conn)
    finally:
        conn.close()


def test_cas_in_transaction_commits_and_rolls_back_with_caller(
    connections: Callable[[], sqlite3.Connection],
) -> None:
    conn = connections()
    store = SQLiteKV(conn)
    with pytest.raises(UsageError):
        cas_in_transaction(conn, "ns", "k", 0, Present(1))
    conn.execute("BEGIN IMMEDIATE")
    assert cas_in_transaction(conn, "ns", "k", 0, Present(1), writer="w", at_ms=5) == Stored(1)
    with pytest.raises(UsageError):
        store.cas("ns", "k", 1, Present(2))  # would nest transactions
    conn.execute("ROLLBACK")
    assert store.get("ns", "k") == (0, None)
    assert store.history("ns", "k") == []
    conn.execute("BEGIN IMMEDIATE")
    assert cas_in_transaction(conn, "ns", "k", 0, Present(1), writer="w", at_ms=5) == Stored(1)
    assert cas_in_transaction(conn, "ns", "k", 0, Present(9), at_ms=6) == Conflict(1, Present(1))
    conn.execute("COMMIT")
    assert SQLiteKV(connections()).get("ns", "k") == (1, Present(1))
    assert store.history("ns", "k") == [
        CASRecord("ns", "k", 5, 0, "stored", 1, "w"),
        CASRecord("ns", "k", 6, 0, "conflict", 1, None),
    ]


def test_locked_database_is_an_environment_error(tmp_path: Path) -> None:
    path = new_db(tmp_path / "locked.db")
    holder = open_db(path)
    impatient = open_db(path, busy_units=0)
    try:
        holder.execute("BEGIN IMMEDIATE")
        store = SQLiteKV(impatient)
        with pytest.raises(StorageEnvironmentError, match="locked"):
            store.cas("ns", "k", 0, Present(1))
        assert not impatient.in_transaction
        assert store.get("ns", "k") == (0, None)  # WAL readers are not blocked
        holder.execute("ROLLBACK")
        assert store.cas("ns", "k", 0, Present(1)) == Stored(1)
    finally:
        holder.close()
        impatient.close()


def test_corrupt_rows_are_reported(connections: Callable[[], sqlite3.Connection]) -> None:
    conn = connections()
    store = SQLiteKV(conn)
    conn.execute("INSERT INTO kv VALUES ('ns', 'bad', 1, x'0201')")
    conn.execute("INSERT INTO kv VALUES ('ns', 'skew', 2, ?)", (encode_envelope(1, Present(1)),))
    with pytest.raises(InvalidEnvelope, match="ns/bad"):
        store.get("ns", "bad")
    with pytest.raises(InvalidEnvelope, match="ns/bad"):
        store.cas("ns", "bad", 1, Present(1))
    with pytest.raises(InvalidEnvelope, match="ns/bad"):
        store.list("ns")
    with pytest.raises(StorageBugError, match="generation"):
        store.get("ns", "skew")
    with pytest.raises(StorageBugError, match="generation"):
        store.list("ns", "s")
    assert not conn.in_transaction
