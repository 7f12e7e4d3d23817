"""The Store interface (engine/storage/interface.py) and its opener: what everything above
storage relies on, checked against every implementation (``store_factory``: SQLite and
PostgreSQL).

That each store satisfies :class:`Store` (and its writer :class:`StoreWriter`) is checked
statically by mypy where ``open_store`` returns one as a ``Store``; here the same is checked
at run time, member by member, so a member added to the protocol and forgotten in an
implementation fails a test too.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from engine.errors import StorageEnvironmentError, StoreNotFound, UsageError
from engine.ids import CoValueID
from engine.kv.envelope import Present
from engine.kv.lease import LeaseState, lease_slot
from engine.kv.store import Conflict, Stored
from engine.node.facade import LocalNode
from engine.storage import Store, StoreWriter, open_store
from engine.storage.interface import CASWrite, CoValueRow
from engine.storage.postgres.store import PostgresStore
from engine.storage.sqlite.store import SQLiteStore
from tests.engine._fork import key_from_seed, make_fork
from tests.engine.storage.backends import Backend
from tests.pg import PostgresServer

KEY = key_from_seed(40)


def members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(inspect.get_annotations(protocol))


def test_each_store_has_every_member_of_the_interface(store_factory: Backend) -> None:
    store = store_factory.open()
    assert isinstance(store, Store)
    assert isinstance(store, SQLiteStore if store_factory.kind == "sqlite" else PostgresStore)
    missing = {name for name in members(Store) if not hasattr(store, name)}
    assert not missing, f"{type(store).__name__} lacks {missing}"
    writer = store.background_writer()
    assert isinstance(writer, StoreWriter)
    assert not {name for name in members(StoreWriter) if not hasattr(writer, name)}
    assert not writer.running
    if store_factory.kind == "sqlite":
        assert store.location == str(Path(store_factory.location) / "kintsugi.db")
    else:
        assert store.location == store_factory.location
    assert store.version != (0, 0) and not store.readonly
    # The location opens the same store again.
    store.put_checkpoint("test", "here", b"1")
    again = open_store(store.location, readonly=True)
    try:
        assert again.get_checkpoint("test", "here") == b"1"
    finally:
        again.close()


def test_opener_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        open_store(tmp_path / "missing", readonly=True)
    assert list(tmp_path.iterdir()) == []


def test_opener_refuses_a_database_that_is_not_there(postgres: PostgresServer, tmp_path: Path) -> None:
    """A PostgreSQL store lives in a database the operator made: none there is
    StoreNotFound (writable or not); no server there is StorageEnvironmentError; a URL that
    is not one is UsageError."""
    for readonly in (False, True):
        with pytest.raises(StoreNotFound) as info:
            open_store(postgres.url("no_such_database"), readonly=readonly)
        assert "no_such_database" in str(info.value)
    nowhere = tmp_path / "no-server"
    nowhere.mkdir()
    with pytest.raises(StorageEnvironmentError):
        open_store(f"postgresql://postgres@/kintsugi?host={nowhere}")
    with pytest.raises(UsageError):
        open_store("postgresql://postgres@/kintsugi?sslmode=sometimes")


def test_reads_through_the_interface(store_factory: Backend) -> None:
    """covalue_row, listing, checkpoints and namespaces answer from the store's rows."""
    with LocalNode.open(store_factory.location, KEY) as node:
        doc = node.create_map(None, meta={"name": "doc"})
        node.set(doc.id, "k", 1)
        session = node.session
    with store_factory.opened() as store:
        assert store.covalue_row(doc.id) == CoValueRow(doc.id, "comap", False) == (doc.id, "comap", False)
        assert store.covalue_row(CoValueID("co_zNotThere1111111111111111")) is None
        listing = store.listing()
        assert [c.id for c in listing.covalues] == [doc.id]
        assert listing.sessions == [(doc.id, session, 1)] and listing.corrupt == []
        rows = store.session_rows(doc.id, session)
        assert rows is not None and (rows.count, rows.checkpoints) == (1, (1,))
        assert store.signature(rows.key, 1) == doc.sessions[session].sigs[1]
        assert store.kv_namespaces() == [KEY.account_id]
        assert store.get_checkpoint("test", "marker") is None
        store.put_checkpoint("test", "marker", b"1")
        store.put_checkpoint("test", "marker", b"2")
        assert store.get_checkpoint("test", "marker") == b"2"


def test_a_replacement_whose_cas_conflicts_writes_nothing(store_factory: Backend) -> None:
    """replace_sessions commits its sessions and CAS writes together: one conflicting CAS
    and nothing at all is written; the results say which one conflicted."""
    owner = LocalNode.open(store_factory.location, KEY)
    doc = owner.create_map(None).id
    fork = make_fork(owner, doc, common=3, mine=2, theirs=2)
    theirs = fork.twin.get(doc)
    owner.close()
    with store_factory.opened() as store:
        before = store.stored_sessions(doc)
        ns = KEY.account_id
        gen, _slot = store.kv.get(ns, "probe")
        cas = [
            CASWrite(ns, "probe", gen, Present("written")),
            CASWrite(ns, "lease/stale", 5, lease_slot("x", 0, LeaseState.RETIRED)),
        ]
        results = store.replace_sessions(theirs.header, [theirs.sessions[fork.session]], cas=cas)
        assert isinstance(results[0], Stored) and isinstance(results[1], Conflict)
        assert store.stored_sessions(doc) == before
        assert store.kv.get(ns, "probe") == (0, None)
        results = store.replace_sessions(theirs.header, [theirs.sessions[fork.session]], cas=cas[:1])
        assert [type(r) for r in results] == [Stored]
        assert store.stored_sessions(doc) != before
        assert store.kv.get(ns, "probe")[0] == 1
