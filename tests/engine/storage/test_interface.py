"""The Store interface (engine/storage/interface.py) and its opener: what everything above
storage relies on, checked against the SQLite implementation.

That SQLiteStore satisfies :class:`Store` (and AsyncStore :class:`StoreWriter`) is checked
statically by mypy where ``open_store`` returns one as a ``Store``; here the same is checked
at run time, member by member, so a member added to the protocol and forgotten in an
implementation fails a test too.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from engine.errors import StoreNotFound, UsageError
from engine.ids import CoValueID
from engine.kv.envelope import Present
from engine.kv.lease import LeaseState, lease_slot
from engine.kv.store import Conflict, Stored
from engine.node.facade import LocalNode
from engine.storage import Store, StoreWriter, open_store
from engine.storage.interface import CASWrite, CoValueRow
from engine.storage.sqlite.store import SQLiteStore
from tests.engine._fork import key_from_seed, make_fork

KEY = key_from_seed(40)


def members(protocol: type) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(
        inspect.get_annotations(protocol)
    )


def test_sqlite_store_has_every_member_of_the_interface(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s")
    try:
        assert isinstance(store, SQLiteStore) and isinstance(store, Store)
        missing = {name for name in members(Store) if not hasattr(store, name)}
        assert not missing, f"SQLiteStore lacks {missing}"
        writer = store.background_writer()
        assert isinstance(writer, StoreWriter)
        assert not {name for name in members(StoreWriter) if not hasattr(writer, name)}
        assert not writer.running
        assert store.location == str(tmp_path / "s" / "kintsugi.db")
        assert store.version != (0, 0) and not store.readonly
    finally:
        store.close()


def test_opener_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound):
        open_store(tmp_path / "missing", readonly=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError):
        open_store("postgresql://db.example/kintsugi")


def test_reads_through_the_interface(tmp_path: Path) -> None:
    """covalue_row, listing, checkpoints and namespaces answer from the store's rows."""
    with LocalNode.open(tmp_path, KEY) as node:
        doc = node.create_map(None, meta={"name": "doc"})
        node.set(doc.id, "k", 1)
        session = node.session
    store = open_store(tmp_path)
    try:
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
    finally:
        store.close()


def test_a_replacement_whose_cas_conflicts_writes_nothing(tmp_path: Path) -> None:
    """replace_sessions commits its sessions and CAS writes together: one conflicting CAS
    and nothing at all is written; the results say which one conflicted."""
    owner = LocalNode.open(tmp_path, KEY)
    doc = owner.create_map(None).id
    fork = make_fork(owner, doc, common=3, mine=2, theirs=2)
    theirs = fork.twin.get(doc)
    owner.close()
    store = open_store(tmp_path)
    try:
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
    finally:
        store.close()
