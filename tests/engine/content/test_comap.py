"""engine.content.comap: last-writer-wins content, validity and convergence (DESIGN §4)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import codec
from engine.content.comap import MAX_KEY_LENGTH, CoMapState, change_problem
from engine.covalue import CoValueCore
from engine.errors import PermissionDenied
from engine.ids import SessionID, conflict_session_id, session_account
from engine.model.session_log import Chunk
from engine.model.transaction import decode_transaction
from tests.engine.factories import (
    T0,
    account,
    deliver,
    make_comap,
    make_group,
    replica_of,
    session,
    set_role,
    snapshot,
    tx,
    wire,
)

ALICE, BOB, CAROL, DAVE, EVE = account(1), account(2), account(3), account(4), account(5)


def setup_doc() -> tuple[CoValueCore, CoValueCore]:
    """A group (ALICE admin; BOB, CAROL, DAVE writers; EVE reader, all from T0) and its CoMap."""
    group = make_group(ALICE)
    for member, role in ((BOB, "writer"), (CAROL, "writer"), (DAVE, "writer"), (EVE, "reader")):
        set_role(group, ALICE, member, role, made_at=T0)
    doc = make_comap(group)
    wire(group, doc)
    return group, doc


def invalid_keys(core: CoValueCore) -> set[tuple[str, int]]:
    return {(i.session, i.index) for i in core.invalid_transactions()}


# -- last writer wins ------------------------------------------------------------------------


def test_later_made_at_wins_whatever_the_arrival() -> None:
    """The greater madeAt wins a key even when it arrived first and its session sorts lower."""
    _, doc = setup_doc()
    keys = {session(BOB): BOB, session(CAROL): CAROL}
    low, high = sorted(keys)
    deliver(doc, keys[low], [tx(T0 + 9, ["set", "k", "late"])], sid=low)
    deliver(doc, keys[high], [tx(T0 + 5, ["set", "k", "early"])], sid=high)
    assert doc.comap().get("k") == "late"
    entry = doc.comap().entries["k"]
    assert (entry.made_at, entry.session, entry.index) == (T0 + 9, low, 0)


def test_same_made_at_greater_session_wins() -> None:
    """On equal madeAt the greater sessionID wins."""
    _, doc = setup_doc()
    sessions = {session(BOB): BOB, session(CAROL): CAROL, session(DAVE): DAVE}
    for sid, key in sessions.items():
        deliver(doc, key, [tx(T0 + 1, ["set", "k", sid])], sid=sid)
    assert doc.comap().get("k") == max(sessions)


def test_same_made_at_and_session_greater_index_wins() -> None:
    """On equal madeAt and session, the later transaction of the session wins."""
    _, doc = setup_doc()
    deliver(doc, BOB, [tx(T0 + 1, ["set", "k", "first"]), tx(T0 + 1, ["set", "k", "second"])])
    assert doc.comap().get("k") == "second"
    assert doc.comap().entries["k"].index == 1


def test_later_change_in_one_transaction_wins() -> None:
    """Within one transaction, the later change to a key wins."""
    _, doc = setup_doc()
    deliver(doc, BOB, [tx(T0 + 1, ["set", "k", 1], ["del", "k"], ["set", "j", 1], ["set", "j", 2])])
    assert doc.comap().items() == {"j": 2}


def test_delete_and_set_again() -> None:
    """del hides a key (get gives the default); a later set brings it back."""
    _, doc = setup_doc()
    deliver(doc, BOB, [tx(T0 + 1, ["set", "k", 1]), tx(T0 + 2, ["del", "k"])])
    assert doc.comap().items() == {}
    assert doc.comap().get("k", "absent") == "absent"
    assert doc.comap().entries["k"].deleted
    deliver(doc, CAROL, [tx(T0 + 3, ["set", "k", 3])])
    assert doc.comap().items() == {"k": 3}


def test_items_sorted_and_encoding_canonical() -> None:
    """items() is sorted by key and encode() is the canonical CBOR of it."""
    _, doc = setup_doc()
    deliver(doc, BOB, [tx(T0 + 1, ["set", "b", [1, {"y": 1, "x": 2}]], ["set", "a", b"\x00"], ["set", "c", None])])
    items = doc.comap().items()
    assert list(items) == ["a", "b", "c"]
    assert doc.comap().encode() == codec.encode({"a": b"\x00", "b": [1, {"x": 2, "y": 1}], "c": None})


def test_conflict_sessions_count_in_content() -> None:
    """Edits in a conflict session (sid!, sid!2) take part in LWW like any other session."""
    _, doc = setup_doc()
    base = session(BOB)
    deliver(doc, BOB, [tx(T0 + 1, ["set", "a", "base"])], sid=base)
    conflict_txs = [tx(T0 + 2, ["set", "a", "conflict"]), tx(T0 + 1, ["set", "b", 1])]
    deliver(doc, BOB, conflict_txs, sid=conflict_session_id(base, 1))
    deliver(doc, BOB, [tx(T0 + 1, ["set", "c", 2])], sid=conflict_session_id(base, 2))
    assert doc.comap().items() == {"a": "conflict", "b": 1, "c": 2}
    assert doc.comap().entries["a"].session == conflict_session_id(base, 1)


# -- invalid transactions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (["set", "k"], "accepts ['set'"),
        (["set", "k", 1, 2], "accepts ['set'"),
        (["del"], "accepts ['set'"),
        (["push", "k", 1], "not 'push'"),
        (["set", 5, 1], "keys are strings"),
        (["set", "", 1], "keys are strings"),
        (["set", "k" * (MAX_KEY_LENGTH + 1), 1], "keys are strings"),
        (["role", BOB.account_id, "writer"], "accepts ['set'"),
    ],
)
def test_malformed_change_is_invalid_with_reason(change: list[Any], why: str) -> None:
    """A received transaction with a malformed change stays in the log, out of content."""
    assert change_problem(change) is not None
    _, doc = setup_doc()
    deliver(doc, BOB, [tx(T0 + 1, ["set", "ok", 1], change), tx(T0 + 2, ["set", "after", 1])])
    assert doc.comap().items() == {"after": 1}  # the whole bad transaction is excluded
    (invalid,) = doc.invalid_transactions()
    assert (invalid.session, invalid.index) == (session(BOB), 0)
    assert why in invalid.reason
    assert doc.sessions[session(BOB)].count == 2


def test_longest_key_is_accepted() -> None:
    """A key of exactly MAX_KEY_LENGTH characters is valid."""
    assert change_problem(["set", "k" * MAX_KEY_LENGTH, 1]) is None
    assert change_problem(["del", "k"]) is None


@pytest.mark.parametrize("change", [["set", "k"], ["set", 5, 1], ["push", "k", 1]])
def test_add_local_refuses_malformed_change(change: list[Any]) -> None:
    """A local write with a malformed change raises PermissionDenied and stores nothing."""
    _, doc = setup_doc()
    before = snapshot(doc)
    with pytest.raises(PermissionDenied):
        doc.add_local(session(BOB), [change], T0 + 1)
    assert snapshot(doc) == before


def test_undecodable_transaction_is_invalid() -> None:
    """A signed transaction that does not decode is kept and reported, not merged."""
    _, doc = setup_doc()
    garbage = b"\xa1\x61c\x80"  # {"c": []}: CBOR, but not a transaction
    deliver(doc, BOB, [tx(T0 + 1, ["set", "k", 1]), garbage])
    assert doc.comap().items() == {"k": 1}
    (invalid,) = doc.invalid_transactions()
    assert invalid.index == 1
    assert invalid.reason.startswith("undecodable")


def test_missing_owner_group_makes_everything_invalid() -> None:
    """Without its owner group a CoMap holds transactions but shows no content, with reasons."""
    group, doc = setup_doc()
    deliver(doc, BOB, [tx(T0 + 1, ["set", "k", 1])])
    orphan = replica_of(doc)  # resolves nothing
    assert orphan.comap().items() == {}
    assert "not available" in orphan.invalid_transactions()[0].reason
    assert replica_of(doc, group).comap().items() == {"k": 1}


def test_unsafe_allow_all_accepts_anyone() -> None:
    """An unsafeAllowAll CoMap takes writes from any account."""
    doc = make_comap(None)
    deliver(doc, EVE, [tx(T0, ["set", "k", "eve"])])
    assert doc.comap().items() == {"k": "eve"}


def test_content_follows_later_group_changes() -> None:
    """Content is recomputed when the owner group changes (a write becomes valid)."""
    group, doc = setup_doc()
    newcomer = account(9)
    deliver(doc, newcomer, [tx(T0 + 5, ["set", "k", 1])])
    assert doc.comap().items() == {}
    set_role(group, ALICE, newcomer, "writer", made_at=T0 + 5)
    assert doc.comap().items() == {"k": 1}
    assert doc.invalid_transactions() == []


# -- CoMapState.merge ------------------------------------------------------------------------

MERGES = st.lists(
    st.tuples(
        st.integers(0, 4),
        st.sampled_from(["s1", "s2", "s3"]),
        st.integers(0, 3),
        st.lists(
            st.one_of(
                st.tuples(st.just("set"), st.sampled_from("abc"), st.integers(0, 9)).map(list),
                st.tuples(st.just("del"), st.sampled_from("abc")).map(list),
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    max_size=12,
    unique_by=lambda m: (m[1], m[2]),
)


@given(MERGES, st.randoms(use_true_random=False))
def test_merge_order_does_not_matter(merges: list[Any], rnd: Any) -> None:
    """Merging the same transactions in any order gives the same entries (a max, per key)."""
    a, b = CoMapState(), CoMapState()
    for m in merges:
        a.merge(*m)
    shuffled = list(merges)
    rnd.shuffle(shuffled)
    for m in shuffled:
        b.merge(*m)
    assert a.entries == b.entries
    assert a.encode() == b.encode()


# -- convergence -----------------------------------------------------------------------------

KEYS = ["k0", "k1", "k2", "k3"]
EDIT = st.tuples(
    st.integers(1, 4),  # madeAt offset: small, so ties across sessions are common
    st.lists(
        st.one_of(
            st.tuples(st.just("set"), st.sampled_from(KEYS), st.one_of(st.integers(0, 9), st.text(max_size=3))),
            st.tuples(st.just("del"), st.sampled_from(KEYS)),
        ).map(list),
        min_size=1,
        max_size=3,
    ),
)


def lww_model(sessions: dict[SessionID, list[bytes]], writers: set[str]) -> bytes:
    """Reference LWW, independent of the engine: max (madeAt, sid, index, change) per key."""
    best: dict[str, tuple[tuple[int, str, int, int], list[Any]]] = {}
    for sid, txs in sessions.items():
        if session_account(sid) not in writers:
            continue
        for i, data in enumerate(txs):
            decoded = decode_transaction(data)
            for ci, change in enumerate(decoded.changes):
                order = (decoded.made_at, sid, i, ci)
                if change[1] not in best or best[change[1]][0] < order:
                    best[change[1]] = (order, change)
    return codec.encode({k: c[2] for k, (_, c) in sorted(best.items()) if c[0] == "set"})


@st.composite
def delivery_plan(draw: st.DrawFn, logs: dict[SessionID, list[int]]) -> list[dict[SessionID, tuple[int, int]]]:
    """Messages of chunks: per session ranges ending at checkpoints, in order, with overlaps and
    duplicates, interleaved across sessions and grouped into messages of random size."""
    queues: dict[SessionID, list[tuple[int, int]]] = {}
    for sid, checkpoints in logs.items():
        ranges, previous = [], 0
        for end in checkpoints:
            if draw(st.booleans()) and end != checkpoints[-1]:
                continue  # skip this checkpoint: a later chunk covers it
            ranges.append((draw(st.integers(0, previous)), end))
            if draw(st.integers(0, 4)) == 0:
                ranges.append(ranges[-1])  # duplicate delivery
            previous = end
        queues[sid] = ranges
    flat: list[tuple[SessionID, tuple[int, int]]] = []
    while any(queues.values()):
        sid = draw(st.sampled_from(sorted(s for s, q in queues.items() if q)))
        flat.append((sid, queues[sid].pop(0)))
    messages: list[dict[SessionID, tuple[int, int]]] = []
    for sid, rng in flat:
        if not messages or sid in messages[-1] or draw(st.integers(0, 2)) == 0:
            messages.append({})
        messages[-1][sid] = rng
    return messages


@settings(max_examples=100)  # expensive: builds a group and four replicas per example
@given(st.data())
def test_replicas_converge_in_any_delivery_order(data: st.DataObject) -> None:
    """Any delivery order and chunking of the same sessions gives byte-identical content.

    ≥3 writer sessions (plus a conflict session and a reader's invalid session) are written
    on a source replica with local writes, then delivered to three replicas in independently
    drawn orders and groupings; content bytes, known states and invalid sets all agree with
    the source and with an independent LWW model.
    """
    group, src = setup_doc()
    writers = {
        session(ALICE): ALICE,
        session(BOB): BOB,
        session(CAROL): CAROL,
        session(DAVE, 1): DAVE,
        conflict_session_id(session(BOB), 1): BOB,
    }
    order = data.draw(st.permutations(sorted(writers)))
    for sid in order:
        key = writers[sid]
        edits = data.draw(st.lists(EDIT, min_size=1 if "!" not in sid else 0, max_size=5))
        for i, (offset, changes) in enumerate(edits):
            src.add_local(sid, changes, T0 + offset)
            if data.draw(st.booleans()) or i == len(edits) - 1:
                src.sign_pending(key)
            if data.draw(st.booleans()):
                src.comap()  # keep the incremental view warm between writes
    reader_edits = data.draw(st.lists(EDIT, max_size=3))
    if reader_edits:
        deliver(src, EVE, [tx(T0 + o, *c) for o, c in reader_edits])

    logs = {sid: log.checkpoints() for sid, log in src.sessions.items()}
    expected = src.comap().encode()
    all_txs = {sid: list(log.txs) for sid, log in src.sessions.items()}
    assert expected == lww_model(all_txs, {ALICE.account_id, BOB.account_id, CAROL.account_id, DAVE.account_id})

    for _ in range(3):
        replica = CoValueCore(src.header, src.id)
        replica.resolve = {group.id: replica_of(group)}.get
        for message in data.draw(delivery_plan(logs)):
            chunks = {sid: src.sessions[sid].chunk(a, e) for sid, (a, e) in message.items()}
            report = replica.apply_content(chunks)
            assert {o.status for o in report.outcomes} <= {"applied", "duplicate"}
            if data.draw(st.booleans()):
                replica.comap()
        assert replica.comap().encode() == expected
        assert replica.known_state() == src.known_state()
        assert invalid_keys(replica) == invalid_keys(src)


def test_chunk_without_new_transactions_changes_no_content() -> None:
    """A duplicate chunk reports 'duplicate' and leaves content as it was."""
    _, doc = setup_doc()
    deliver(doc, BOB, [tx(T0 + 1, ["set", "k", 1])])
    before = doc.comap().encode()
    log = doc.sessions[session(BOB)]
    report = doc.apply_content({session(BOB): Chunk(0, list(log.txs), dict(log.sigs))})
    assert [o.status for o in report.outcomes] == ["duplicate"]
    assert not report.changed
    assert doc.comap().encode() == before
