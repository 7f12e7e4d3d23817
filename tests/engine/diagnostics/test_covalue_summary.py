"""CoValue summaries, badges, tombstones and provenance (engine.diagnostics.covalue_summary)."""

from __future__ import annotations

from pathlib import Path

from engine.covalue import CoValueCore
from engine.demo.scenario import DemoResult
from engine.diagnostics.covalue_summary import (
    Badge,
    SessionSummary,
    content_entries,
    content_snapshot,
    header_name,
    lane_order,
    listing_summaries,
    order_lanes,
    summarize,
)
from engine.ids import CoValueID, SessionID, SessionKind
from engine.model.header import Header, UnsafeAllowAll
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.storage.sqlite.store import SQLiteStore
from tests.engine.diagnostics._build import T0, key, session_of, stored, tamper_tx


def load_all(store: SQLiteStore) -> dict[CoValueID, CoValueCore]:
    cores: dict[CoValueID, CoValueCore] = {}
    for cid, _t, _d in store.covalue_ids():
        core = load_core(store, cid)
        assert core is not None
        cores[cid] = core
    for core in cores.values():
        core.resolve = cores.get
    return cores


def test_demo_badges_conflict_and_tombstone(demo: DemoResult) -> None:
    store = SQLiteStore(demo.store, readonly=True)
    cores = load_all(store)
    summaries = {cid: summarize(core) for cid, core in cores.items()}
    notes = summaries[demo.maps["notes"]]
    assert notes.name == "notes" and notes.type == "comap" and notes.analysed
    assert notes.badges == {Badge.CONFLICT_SESSION} and notes.conflict_sessions == 1
    conflict = next(s for s in notes.sessions if s.kind is SessionKind.CONFLICT)
    ordered = [s.id for s in notes.sessions]
    # the conflict session sits right after the session it came from
    assert ordered[ordered.index(conflict.id) - 1] == conflict.id.rstrip("!")
    scratch = summaries[demo.deleted[0]]
    assert scratch.badges == {Badge.DELETED} and scratch.deleted and scratch.name == "scratch"
    tomb = scratch.tombstone
    assert tomb is not None and tomb.valid and tomb.by == demo.accounts["alice"] and tomb.at
    assert summaries[demo.group].name == "Demo team"
    assert summaries[demo.group].with_badge(Badge.FORKED).badges == {Badge.FORKED}
    store.close()


def test_listing_matches_the_analysis_where_it_can(demo: DemoResult) -> None:
    store = SQLiteStore(demo.store, readonly=True)
    listed = {s.id: s for s in listing_summaries(store)}
    cores = load_all(store)
    for cid, core in cores.items():
        full = summarize(core)
        quick = listed[cid]
        assert not quick.analysed
        assert (quick.name, quick.type, quick.deleted) == (full.name, full.type, full.deleted)
        assert [s.id for s in quick.sessions] == [s.id for s in full.sessions]
        assert quick.badges == full.badges - {Badge.INVALID_TRANSACTIONS}
    store.close()


def test_corrupt_sessions_carry_their_first_broken_link(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 300, every=100)
    tamper_tx(store, log.session, 150, encode_transaction(T0, [["set", "evil", 1]]))
    loaded = load_core(store, core.id)
    assert loaded is not None
    summary = summarize(loaded, stored_counts={log.session: 300})
    assert Badge.CORRUPT in summary.badges and summary.corrupt_sessions == 1
    broken = summary.session(log.session)
    assert broken is not None and broken.count == 300
    assert broken.corrupt is not None and (broken.corrupt.index, broken.corrupt.code) == (150, "broken_chain")
    # load_covalue recorded it (the store is writable here), so a listing shows it too
    (listed,) = listing_summaries(store)
    assert Badge.CORRUPT in listed.badges
    store.close()


def test_invalid_transactions_are_a_badge(tmp_path: Path) -> None:
    alice, bob = key(1), key(2)
    with LocalNode.open(tmp_path / "n", alice) as node:
        group = node.create_group()
        doc = node.create_map(group.id, meta={"name": "doc"})
        node.set(doc.id, "ok", 1)
        # bob is no member: his transaction is signed history but not content
        log = SessionLog(doc.id, session_of(bob))
        log.append_pending(encode_transaction(T0 + 5, [["set", "intruder", 1]]))
        log.sign(bob)
        doc.apply_content({log.session: log.chunk()})
        summary = summarize(node.get(doc.id))
    assert Badge.INVALID_TRANSACTIONS in summary.badges
    (bad,) = summary.invalid
    assert bad.session == session_of(bob) and "not a member" in bad.reason


def test_provenance_of_comap_keys_and_group_roles(tmp_path: Path) -> None:
    alice, bob = key(1), key(2)
    with LocalNode.open(tmp_path / "n", alice) as node:
        group = node.create_group()
        node.set_role(group.id, bob.account_id, "writer")
        doc = node.create_map(group.id)
        node.set(doc.id, "title", "milk")
        node.set(doc.id, "gone", 1)
        node.delete_key(doc.id, "gone")
        entries = content_entries(node.get(doc.id))
        assert entries["title"].value == "milk" and entries["title"].session == node.session
        assert entries["gone"].deleted and entries["gone"].index == 2
        roles = content_entries(node.get(group.id))
        assert roles[alice.account_id].value == "admin" and roles[alice.account_id].index == -1
        assert roles[bob.account_id].value == "writer" and roles[bob.account_id].session == node.session
        node.delete_covalue(doc.id)
        assert content_entries(node.get(doc.id)) == {}


def test_names_and_lane_order() -> None:
    assert header_name(Header("comap", UnsafeAllowAll(), "plain", None, T0)) == "plain"
    assert header_name(Header("comap", UnsafeAllowAll(), {"name": 3}, None, T0)) is None
    s = session_of(key(1))
    assert sorted([f"{s}!2", "zzz", f"{s}!", s], key=lane_order) == [s, f"{s}!", f"{s}!2", "zzz"]


def test_lanes_put_a_forked_session_and_its_conflicts_first() -> None:
    alice, bob = key(1), key(2)
    forked = session_of(bob)
    sids = [f"{alice.account_id}_session_dAAAAAAAAA$", session_of(alice), f"{forked}!2", forked, f"{forked}!"]

    def summary(sid: str) -> SessionSummary:
        kind = SessionKind.DELETE if sid.endswith("$") else SessionKind.CONFLICT if "!" in sid else SessionKind.ACTIVE
        return SessionSummary(SessionID(sid), kind, alice.account_id, 1)

    ordered = [s.id for s in order_lanes(summary(s) for s in sids)]
    assert ordered == [forked, f"{forked}!", f"{forked}!2", session_of(alice), sids[0]]


def test_content_snapshots_are_detached_copies(tmp_path: Path) -> None:
    with LocalNode.open(tmp_path / "n", key(1)) as node:
        doc = node.create_map(None, meta={"name": "doc"})
        node.set(doc.id, "a", 1)
        snap = content_snapshot(node.get(doc.id))
        node.set(doc.id, "b", 2)
    assert (snap.name, snap.type, snap.deleted, snap.transactions, snap.tombstone) == ("doc", "comap", False, 1, None)
    assert set(snap.entries) == {"a"}
