"""LocalNode (engine/node/facade.py): the facade over CoValues, a real SQLite store and leases.

Forks are made on purpose with an in-memory twin that shares the owner's session through the
``session=`` argument (see tests/engine/_fork.py).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.demo.held import HeldStore
from engine.errors import CoValueDeleted, PermissionDenied, StorageEnvironmentError, UsageError
from engine.ids import CoValueID, SessionID, conflict_session_id
from engine.kv.lease import Lease, LeaseState, lease_key, parse_lease
from engine.kv.store import KVStore
from engine.model.session_log import MAX_BATCH_TRANSACTIONS
from engine.node.facade import ChangeEvent, LocalNode
from engine.node.loading import load_core
from engine.storage import open_store
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import (
    COMMON,
    MINE,
    THEIRS,
    copy_covalue,
    expected_keys,
    key_from_seed,
    make_fork,
    write_keys,
)

KEY = key_from_seed(10)
OTHER = key_from_seed(11)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def node(path: Path) -> Iterator[LocalNode]:
    opened = LocalNode.open(path, KEY)
    try:
        yield opened
    finally:
        opened.close()


def lease_of(kv: KVStore, session: SessionID) -> Lease | None:
    return parse_lease(kv.get(KEY.account_id, lease_key(session))[1])


def stored_count(path: Path, covalue: CoValueID, session: SessionID) -> int | None:
    """The committed count of a session, read through a separate connection."""
    conn = sqlite3.connect(store_file(path))
    try:
        row = conn.execute(
            "SELECT count FROM sessions WHERE covalue = ? AND session = ?", (covalue, session)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else int(row[0])


def session_rows(path: Path, covalue: CoValueID) -> dict[str, int]:
    """Stored sessions of ``covalue`` → their row ids."""
    conn = sqlite3.connect(store_file(path))
    try:
        return dict(conn.execute("SELECT session, sid FROM sessions WHERE covalue = ?", (covalue,)))
    finally:
        conn.close()


def rows_of_sids(path: Path, sids: set[int]) -> dict[str, int]:
    """How many rows of every table keyed by ``sid`` belong to ``sids``."""
    conn = sqlite3.connect(store_file(path))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        found = {}
        for table in tables:
            columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if "sid" in columns:
                marks = ",".join("?" * len(sids))
                (n,) = conn.execute(f"SELECT count(*) FROM {table} WHERE sid IN ({marks})", tuple(sids)).fetchone()
                found[table] = n
        return found
    finally:
        conn.close()


class Locked:
    """Hold the store's write lock from another connection; the node's busy timeout is cut
    to 50 ms so that its writes fail at once instead of after BUSY_TIMEOUT_MS."""

    def __init__(self, node: LocalNode) -> None:
        assert isinstance(node.store, SQLiteStore)
        node.store.conn.execute("PRAGMA busy_timeout = 50")
        self.conn = sqlite3.connect(node.store.path, isolation_level=None)

    def __enter__(self) -> Locked:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


# -- basics -------------------------------------------------------------------------------------


def test_create_set_delete_and_reopen(node: LocalNode, path: Path) -> None:
    """Groups and maps are created, keys set and deleted, and a reopened store has them."""
    group = node.create_group(meta={"name": "team"})
    doc = node.create_map(group.id)
    node.set(doc.id, "title", "buy milk")
    node.set(doc.id, "done", False)
    node.write_changes(doc.id, [["set", "a", 1], ["set", "b", [1, 2]]])
    node.delete_key(doc.id, "done")
    assert node.get_map(doc.id) == {"a": 1, "b": [1, 2], "title": "buy milk"}
    assert node.get(group.id).group().roles == {KEY.account_id: "admin"}
    assert set(node.covalue_ids()) == {group.id, doc.id}
    known = node.known_state(doc.id)
    node.close()

    again = LocalNode.open(path, KEY)
    try:
        assert again.get_map(doc.id) == {"a": 1, "b": [1, 2], "title": "buy milk"}
        assert again.known_state(doc.id) == known
        assert not again.get(doc.id).corrupt
        assert again.get(group.id).header.meta == {"name": "team"}
    finally:
        again.close()


def test_closed_node_refuses_writes(path: Path) -> None:
    """Writing through a closed node raises UsageError (a RuntimeError); close is idempotent."""
    node = LocalNode.open(path, KEY)
    doc = node.create_map(None)
    node.close()
    node.close()
    with pytest.raises(UsageError):
        node.set(doc.id, "k", 1)
    with pytest.raises(RuntimeError):
        node.set(doc.id, "k", 1)


def test_subscribers_get_events_after_commit(node: LocalNode, path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Subscribers get local and deleted events once committed; unsubscribing stops them."""
    group = node.create_group()
    doc = node.create_map(group.id)
    everything: list[ChangeEvent] = []
    on_doc: list[tuple[ChangeEvent, int | None]] = []

    def doc_callback(event: ChangeEvent) -> None:
        on_doc.append((event, stored_count(path, doc.id, node.session)))

    def broken(_event: ChangeEvent) -> None:
        raise RuntimeError("subscriber bug")

    stop_all = node.subscribe(everything.append)
    stop_doc = node.subscribe(doc_callback, doc.id)
    node.subscribe(broken, doc.id)
    with caplog.at_level(logging.ERROR, logger="engine.node.facade"):
        node.set(doc.id, "k", 1)
    assert "subscriber failed" in caplog.text
    node.delete_key(doc.id, "k")
    node.set_role(group.id, OTHER.account_id, "writer")
    local = ChangeEvent(doc.id, "local")
    assert on_doc == [(local, 1), (local, 2)], "each event comes after its commit"
    assert everything == [local, local, ChangeEvent(group.id, "local")]

    stop_doc()
    stop_doc()  # unsubscribing twice is harmless
    node.set(doc.id, "k", 2)
    assert len(on_doc) == 2
    assert everything[-1] == local

    node.delete_covalue(doc.id)
    assert everything[-1] == ChangeEvent(doc.id, "deleted")
    stop_all()
    node.set_role(group.id, OTHER.account_id, "reader")
    assert everything[-1] == ChangeEvent(doc.id, "deleted")
    assert len(everything) == 5


def test_batch_signs_every_1000_and_commits_once(node: LocalNode, path: Path) -> None:
    """A batch of 2,500 writes has checkpoints at most 1,000 apart and one store commit."""
    doc = node.create_map(None)
    assert isinstance(node.store, SQLiteStore)
    commits: list[str] = []
    node.store.conn.set_trace_callback(
        lambda sql: commits.append(sql) if sql.strip().upper().startswith("COMMIT") else None
    )
    with node.batch():
        for i in range(2500):
            node.set(doc.id, f"k{i}", i)
            if i == 2100:
                assert commits == [] and stored_count(path, doc.id, node.session) is None
    node.store.conn.set_trace_callback(None)
    assert len(commits) == 1
    log = node.get(doc.id).sessions[node.session]
    checkpoints = log.checkpoints()
    assert checkpoints[-1] == 2500 and log.pending == 0
    gaps = [b - a for a, b in zip([0, *checkpoints], checkpoints, strict=False)]
    assert max(gaps) <= MAX_BATCH_TRANSACTIONS, checkpoints
    assert stored_count(path, doc.id, node.session) == 2500
    content = node.get_map(doc.id)
    node.close()

    store = SQLiteStore(path, readonly=True)
    try:
        loaded = load_core(store, doc.id)
    finally:
        store.close()
    assert loaded is not None and not loaded.corrupt
    assert loaded.sessions[node.session].checkpoints() == checkpoints
    assert loaded.comap().items() == content == {f"k{i}": i for i in range(2500)}


def test_nested_batches_commit_at_the_outermost_end(node: LocalNode, path: Path) -> None:
    """Writes in nested batches are committed when the outermost batch ends."""
    doc = node.create_map(None)
    with node.batch():
        node.set(doc.id, "a", 1)
        with node.batch():
            node.set(doc.id, "b", 2)
        assert stored_count(path, doc.id, node.session) is None
    assert stored_count(path, doc.id, node.session) == 2


# -- tombstones ----------------------------------------------------------------------------------


def test_delete_covalue_persists_a_tombstone(path: Path) -> None:
    """A deleted CoMap reopens deleted, holding only its delete session; other rows are gone."""
    node = LocalNode.open(path, KEY)
    group = node.create_group()
    doc = node.create_map(group.id)
    write_keys(node, doc.id, "k", 30)
    helper = LocalNode.open(path, KEY)  # a second session of the same account
    write_keys(helper, doc.id, "h", 5)
    helper.close()
    before = session_rows(path, doc.id)
    assert len(before) == 2
    node.delete_covalue(doc.id)
    node.delete_covalue(doc.id)  # deleting twice is a no-op
    with pytest.raises(CoValueDeleted):
        node.set(doc.id, "k/0", "again")
    node.close()

    after = session_rows(path, doc.id)
    assert len(after) == 1 and next(iter(after)).endswith("$")
    assert set(rows_of_sids(path, set(before.values()) - set(after.values())).values()) == {0}
    store = SQLiteStore(path, readonly=True)
    try:
        assert (doc.id, "comap", True) in store.covalue_ids()
        core = load_core(store, doc.id)
    finally:
        store.close()
    assert core is not None and core.deleted and not core.corrupt
    assert list(core.sessions) == list(after)
    assert core.sessions[next(iter(after))].count == 1

    again = LocalNode.open(path, KEY)
    try:
        assert again.get(doc.id).deleted
        assert list(again.known_state(doc.id).sessions) == list(after)
        with pytest.raises(CoValueDeleted):
            again.set(doc.id, "k", 1)
        assert again.get(group.id).group().roles == {KEY.account_id: "admin"}
    finally:
        again.close()


@pytest.mark.parametrize("wrote_before", [True, False], ids=["appending", "first-write"])
def test_write_of_a_second_node_after_a_tombstone_stays_purged(path: Path, wrote_before: bool) -> None:
    """A second node that still writes a CoMap another node deleted brings no rows back."""
    first = LocalNode.open(path, KEY)
    second = LocalNode.open(path, KEY)
    try:
        doc = first.create_map(None)
        first.set(doc.id, "a", 1)
        if wrote_before:
            second.set(doc.id, "b", 2)
        else:
            second.get(doc.id)
        first.delete_covalue(doc.id)
        with contextlib.suppress(CoValueDeleted):  # refusing the write is fine too
            second.set(doc.id, "c", 3)  # it has not heard of the tombstone yet
    finally:
        first.close()
        second.close()
    rows = session_rows(path, doc.id)
    store = SQLiteStore(path)
    try:
        core = load_core(store, doc.id)
        corrupt = store.corrupt_sessions()
    finally:
        store.close()
    assert core is not None and core.deleted
    assert not core.corrupt and corrupt == [], f"a tombstoned CoMap reports corruption: {corrupt}"
    assert all(sid.endswith("$") for sid in rows), f"purged sessions are back: {sorted(rows)}"
    assert all(sid.endswith("$") for sid in core.known_state().sessions)
    assert core.comap().items() == {}


# -- permissions ---------------------------------------------------------------------------------


def test_set_role_needs_admin() -> None:
    """set_role by a writer or an outsider raises PermissionDenied and writes nothing."""
    admin = LocalNode(KEY)
    group = admin.create_group()
    admin.set_role(group.id, OTHER.account_id, "writer")
    doc = admin.create_map(group.id)
    writer = LocalNode(OTHER)
    copy_covalue(admin, writer, doc.id)
    outsider_key = key_from_seed(12)
    outsider = LocalNode(outsider_key)
    copy_covalue(admin, outsider, group.id)

    with pytest.raises(PermissionDenied):
        writer.set_role(group.id, OTHER.account_id, "admin")
    with pytest.raises(PermissionDenied):
        outsider.set_role(group.id, outsider_key.account_id, "writer")
    assert writer.session not in writer.get(group.id).sessions
    assert writer.get(group.id).group().roles[OTHER.account_id] == "writer"
    writer.set(doc.id, "by", "writer")  # writing data is what a writer may do
    with pytest.raises(PermissionDenied):
        outsider.set_role(group.id, KEY.account_id, "revoked")
    admin.set_role(group.id, OTHER.account_id, "reader")
    assert admin.get(group.id).group().roles[OTHER.account_id] == "reader"


# -- replacing a forked session ---------------------------------------------------------------------


def test_replace_owned_forked_session(path: Path) -> None:
    """An owned fork's replace stores `!`, switches session and lease at once, persists, and is then a no-op."""
    owner = LocalNode.open(path, KEY)
    old = owner.session
    group = owner.create_group()
    doc = owner.create_map(group.id)
    fork = make_fork(owner, doc.id, common=20, mine=7, theirs=5)
    mine_txs = owner.get(doc.id).sessions[old].txs[20:]
    events: list[ChangeEvent] = []
    owner.subscribe(events.append)

    outcome = owner.replace_session(doc.id, old, fork.authoritative())
    conflict = conflict_session_id(old, 1)
    assert (outcome.changed, outcome.diverged_at, outcome.dropped) == (True, 20, 7)
    assert outcome.conflict_session == conflict == old + "!"
    assert events == [ChangeEvent(doc.id, "replaced")]
    new = owner.session
    assert new != old
    core = owner.get(doc.id)
    assert core.sessions[old].txs == fork.twin.get(doc.id).sessions[old].txs
    assert core.sessions[conflict].txs == mine_txs, "the tail keeps its bytes (and madeAt)"
    expected = {**expected_keys(COMMON, 20), **expected_keys(MINE, 7), **expected_keys(THEIRS, 5)}
    assert owner.get_map(doc.id) == expected

    def check_leases(kv: KVStore, holder: LocalNode) -> None:
        retired, held = lease_of(kv, old), lease_of(kv, new)
        assert retired is not None and retired.state is LeaseState.RETIRED
        assert held is not None and held.state is LeaseState.HELD
        assert held.instance == holder.instance_id

    check_leases(owner.kv, owner)
    known = owner.known_state(doc.id)
    peek = SQLiteStore(path, readonly=True)  # another handle while the owner is open
    try:
        stored = load_core(peek, doc.id)
        check_leases(peek.kv, owner)
    finally:
        peek.close()
    assert stored is not None and not stored.corrupt
    assert set(stored.sessions) == {old, conflict}
    assert stored.known_state() == known

    again = owner.replace_session(doc.id, old, fork.authoritative())
    assert not again.changed and again.conflict_session is None
    assert owner.session == new
    assert set(session_rows(path, doc.id)) == {old, conflict}

    owner.set(doc.id, "after", 1)
    assert stored_count(path, doc.id, new) == 1, "writing continues in the new session"
    owner.close()

    reopened = LocalNode.open(path, KEY)
    try:
        assert reopened.session == new, "the released new session is reused, never the old one"
        check_leases(reopened.kv, reopened)
        assert reopened.get_map(doc.id) == {**expected, "after": 1}
        assert not reopened.get(doc.id).corrupt
        assert not reopened.replace_session(doc.id, old, fork.authoritative()).changed
        assert set(session_rows(path, doc.id)) == {old, conflict, new}
    finally:
        reopened.close()


def test_second_and_third_conflicts_get_new_sessions(path: Path) -> None:
    """Conflicts of one session go to !, !2 and !3, none overwritten, all persisted."""
    owner = LocalNode.open(path, KEY)
    session = owner.session
    doc = owner.create_map(None).id
    fork = make_fork(owner, doc, common=3, mine=2, theirs=2)
    first = owner.replace_session(doc, session, fork.authoritative())
    assert first.conflict_session == session + "!"
    owner.close()
    for n in (2, 3):
        # The session is written from elsewhere again (a restored backup, say).
        stale = LocalNode(KEY, SQLiteStore(path), session=session)
        write_keys(stale, doc, f"{MINE}{n}", n)
        write_keys(fork.twin, doc, f"{THEIRS}{n}", 1)
        outcome = stale.replace_session(doc, session, fork.authoritative())
        assert outcome.conflict_session == f"{session}!{n}"
        stale.close()

    store = SQLiteStore(path, readonly=True)
    try:
        core = load_core(store, doc)
    finally:
        store.close()
    assert core is not None and not core.corrupt
    assert set(core.sessions) == {session, session + "!", session + "!2", session + "!3"}
    assert [core.sessions[session + s].count for s in ("!", "!2", "!3")] == [2, 2, 3]
    assert core.sessions[session].txs == fork.twin.get(doc).sessions[session].txs
    expected = {
        **expected_keys(COMMON, 3),
        **expected_keys(MINE, 2),
        **expected_keys(THEIRS, 2),
        **expected_keys(f"{MINE}2", 2),
        **expected_keys(f"{MINE}3", 3),
        **expected_keys(f"{THEIRS}2", 1),
        **expected_keys(f"{THEIRS}3", 1),
    }
    assert core.comap().items() == expected


# -- failed commits ------------------------------------------------------------------------------


def test_failed_flush_is_retried(node: LocalNode, path: Path) -> None:
    """A write whose commit failed (store locked) is committed by the next flush."""
    doc = node.create_map(None)
    with Locked(node), pytest.raises(StorageEnvironmentError):
        node.set(doc.id, "k", 1)
    assert stored_count(path, doc.id, node.session) is None
    node.flush()
    assert stored_count(path, doc.id, node.session) == 1
    node.set(doc.id, "k2", 2)
    assert stored_count(path, doc.id, node.session) == 2


def test_replace_session_retried_after_a_failed_commit(path: Path) -> None:
    """After replace_session failed to commit, running it again stores the replacement."""
    owner = LocalNode.open(path, KEY)
    old = owner.session
    doc = owner.create_map(None).id
    fork = make_fork(owner, doc, common=5, mine=3, theirs=4)
    try:
        with Locked(owner), pytest.raises(StorageEnvironmentError):
            owner.replace_session(doc, old, fork.authoritative())
        owner.replace_session(doc, old, fork.authoritative())
        owner.set(doc, "after", 1)
    finally:
        owner.close()
    store = SQLiteStore(path)
    try:
        core = load_core(store, doc)
        lease = lease_of(store.kv, old)
    finally:
        store.close()
    assert core is not None
    assert not core.corrupt, f"sessions corrupt after the retry: {core.corrupt}"
    assert core.sessions[old].txs == fork.twin.get(doc).sessions[old].txs
    assert core.sessions[old + "!"].count == 3
    assert lease is not None and lease.state is LeaseState.RETIRED
    assert owner.session != old


def test_delete_covalue_retried_after_a_failed_commit(node: LocalNode, path: Path) -> None:
    """After delete_covalue failed to commit, running it again stores the tombstone."""
    doc = node.create_map(None).id
    node.set(doc, "k", 1)
    with Locked(node), pytest.raises(StorageEnvironmentError):
        node.delete_covalue(doc)
    node.delete_covalue(doc)
    store = SQLiteStore(path, readonly=True)
    try:
        assert (doc, "comap", True) in store.covalue_ids(), "the tombstone was never stored"
    finally:
        store.close()


# -- a node on another Store ---------------------------------------------------------------------


def test_a_node_on_a_held_store_announces_what_the_disk_lacks(path: Path) -> None:
    """LocalNode works through the Store interface only: on the demo's HeldStore, a held write
    is announced to subscribers (and so sent by the sync layer) before the file has it;
    release() stores it, and a tombstone writes out what is held before itself."""
    held = HeldStore(open_store(path))
    node = LocalNode.open(held, KEY)
    try:
        doc = node.create_map(None).id
        events: list[ChangeEvent] = []
        node.subscribe(events.append, doc)
        held.hold()
        node.set(doc, "k", 1)
        assert events == [ChangeEvent(doc, "local")] and held.held_writes == 1
        assert stored_count(path, doc, node.session) is None
        held.release()
        assert stored_count(path, doc, node.session) == 1
        held.hold()
        node.set(doc, "k", 2)
        node.delete_covalue(doc)
        assert held.held_writes == 0
        with pytest.raises(UsageError):
            held.background_writer()
    finally:
        node.close()
    store = SQLiteStore(path, readonly=True)
    try:
        assert (doc, "comap", True) in store.covalue_ids()
    finally:
        store.close()
