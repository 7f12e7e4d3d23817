"""Schema versions of PostgreSQL stores (DESIGN §9): major.minor in ``kintsugi_schema``, the
same numbers as SQLite's; a newer major refuses to open and writes nothing, a newer minor
opens, an older store migrates step by step, and nodes starting together on a fresh database
create the schema once."""

from __future__ import annotations

import threading

import pytest

from engine.crypto import AccountKey
from engine.errors import SchemaVersionError, StorageError
from engine.ids import CoValueID
from engine.model.audit import AuditAction
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.node.recovery import append_audit
from engine.storage import open_store
from engine.storage.postgres.feed import CHANGES_TABLE, COUNTER_TABLE
from engine.storage.postgres.registry import NODES_TABLE
from engine.storage.postgres.schema import BASE_SCHEMA, SCHEMA_1_1, SCHEMA_MAJOR, SCHEMA_MINOR, VERSION_TABLE
from tests.engine._fork import key_from_seed
from tests.engine.storage.backends import PostgresBackend
from tests.util import timeout

T0 = 1_790_000_000_000
TABLES = {"covalues", "sessions", "blocks", "signatures", "corrupt", "checkpoints", "kv", "kv_log", "audit", "receipts"}
#: Created with the schema in any writable database, outside its version: the node registry
#: and the change log (their modules say why).
UNVERSIONED = {NODES_TABLE, CHANGES_TABLE, COUNTER_TABLE}


@pytest.fixture
def db(pg_backend: PostgresBackend) -> PostgresBackend:
    return pg_backend


def tables(db: PostgresBackend) -> set[str]:
    return {t for (t,) in db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}


def version(db: PostgresBackend) -> tuple[int, int]:
    [(major, minor)] = db.fetch(f"SELECT major, minor FROM {VERSION_TABLE}")
    return major, minor


def with_data(db: PostgresBackend) -> tuple[CoValueID, dict[str, object]]:
    """A CoMap written through a node; its id and content."""
    with LocalNode.open(db.location, key_from_seed(1)) as node:
        doc = node.create_map(None)
        for i in range(20):
            node.set(doc.id, f"k{i}", i)
        return doc.id, node.get_map(doc.id)


def test_a_fresh_database_gets_the_current_schema(db: PostgresBackend) -> None:
    assert tables(db) == set()
    with db.opened(readonly=True) as store:
        assert store.version == (0, 0)  # read-only: an empty database is reported as is
    assert tables(db) == set()
    with db.opened() as store:
        assert store.version == (SCHEMA_MAJOR, SCHEMA_MINOR) == (1, 1)
    assert tables(db) == TABLES | {VERSION_TABLE} | UNVERSIONED
    assert version(db) == (1, 1)
    with db.opened() as store:  # reopening changes nothing
        assert store.version == (1, 1)
    assert version(db) == (1, 1)


@pytest.mark.parametrize("readonly", [False, True])
def test_a_newer_major_refuses_to_open_and_writes_nothing(db: PostgresBackend, readonly: bool) -> None:
    with_data(db)
    db.execute(f"UPDATE {VERSION_TABLE} SET major = ?, minor = 3", SCHEMA_MAJOR + 1)
    before = db.state()
    with pytest.raises(SchemaVersionError) as info:
        open_store(db.location, readonly=readonly)
    assert info.value.code == "schema_too_new" and isinstance(info.value, StorageError)
    assert f"{SCHEMA_MAJOR + 1}.3" in str(info.value) and f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}" in str(info.value)
    assert db.state() == before


def test_a_newer_minor_opens_and_keeps_its_version(db: PostgresBackend) -> None:
    doc, expected = with_data(db)
    db.execute(f"UPDATE {VERSION_TABLE} SET minor = ?", SCHEMA_MINOR + 5)
    with db.opened() as store:
        assert store.version == (SCHEMA_MAJOR, SCHEMA_MINOR + 5)
        core = load_core(store, doc)
        assert core is not None and core.comap().items() == expected
        store.put_checkpoint("ns", "k", b"v")
    assert version(db) == (SCHEMA_MAJOR, SCHEMA_MINOR + 5)


def test_a_1_0_store_with_data_migrates_to_1_1(db: PostgresBackend) -> None:
    """A store taken back to 1.0 (the 1.1 tables dropped) opens read-only as 1.0 with an
    empty audit log and unchanged; opened for writing it migrates, its data intact."""
    doc, expected = with_data(db)
    db.execute("DROP TABLE audit")
    db.execute("DROP TABLE receipts")
    db.execute(f"UPDATE {VERSION_TABLE} SET minor = 0")
    before = db.state()
    with db.opened(readonly=True) as store:
        assert store.version == (1, 0)
        assert store.audit_log() == [] and store.receipts() == []
        core = load_core(store, doc)
        assert core is not None and core.comap().items() == expected
    assert db.state() == before
    with db.opened() as store:
        assert store.version == (1, 1)
        core = load_core(store, doc)
        assert core is not None and not core.corrupt and core.comap().items() == expected
        record = append_audit(store, AccountKey.generate(), AuditAction.CONNECT, "here", details={}, at_ms=T0)
        assert store.audit_log() == [record]
    assert version(db) == (1, 1) and tables(db) == TABLES | {VERSION_TABLE} | UNVERSIONED


def test_a_store_made_by_the_1_0_statements_migrates_to_the_fresh_schema(db: PostgresBackend) -> None:
    for statement in BASE_SCHEMA:
        db.execute(statement)
    db.execute(f"INSERT INTO {VERSION_TABLE} (major, minor) VALUES (1, 0)")
    assert "audit" not in tables(db)
    with db.opened() as store:
        assert store.version == (1, 1)
    assert tables(db) == TABLES | {VERSION_TABLE} | UNVERSIONED
    assert len(SCHEMA_1_1) == 2


def test_nodes_starting_together_create_the_schema_once(db: PostgresBackend) -> None:
    """Six stores opened at the same moment on an empty database all open at 1.1."""
    barrier = threading.Barrier(6)
    outcomes: list[object] = []

    def open_one() -> None:
        barrier.wait(timeout(10))
        try:
            store = open_store(db.location)
        except Exception as exc:  # recorded for the assertion below
            outcomes.append(exc)
        else:
            outcomes.append(store.version)
            store.close()

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout(30))
    assert outcomes == [(1, 1)] * 6
    assert version(db) == (1, 1)
