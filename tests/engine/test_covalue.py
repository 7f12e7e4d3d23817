"""engine.covalue: verified sessions, forks, session replacement and tombstones (DESIGN §4–7)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.covalue import CoValueCore
from engine.crypto import AccountKey, chain_base, chain_extend, signed_message, verify_signature
from engine.errors import (
    CoValueDeleted,
    InvalidHeader,
    InvalidTransaction,
    KintsugiError,
    MissingPrefix,
    PermissionDenied,
    SignatureError,
    UsageError,
)
from engine.ids import SessionID, conflict_session_id
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk, SessionLog
from engine.model.transaction import decode_transaction
from tests.engine.factories import (
    T0,
    account,
    chunks_of,
    comap_header,
    delete_session,
    make_comap,
    make_group,
    replica_of,
    session,
    set_role,
    signed_log,
    snapshot,
    tx,
    wire,
    write,
)

ALICE, BOB, CAROL, DAVE = account(1), account(2), account(3), account(4)
S = session(BOB)


def setup_doc() -> tuple[CoValueCore, CoValueCore]:
    """ALICE admin; BOB and DAVE writers, CAROL reader (all from T0); a CoMap they share."""
    group = make_group(ALICE)
    set_role(group, ALICE, BOB, "writer", made_at=T0)
    set_role(group, ALICE, DAVE, "writer", made_at=T0)
    set_role(group, ALICE, CAROL, "reader", made_at=T0)
    doc = make_comap(group)
    wire(group, doc)
    return group, doc


def bob_tx(i: int, tag: str = "mine") -> bytes:
    return tx(T0 + 1 + i, ["set", f"{tag}{i}", i])


def bob_log(doc: CoValueCore, txs: list[bytes], checkpoints: list[int]) -> SessionLog:
    return signed_log(doc.id, BOB, txs, checkpoints, sid=S)


def forged(doc: CoValueCore, sid: SessionID, txs: list[bytes], signer: AccountKey, after: int = 0) -> Chunk:
    """A chunk for ``sid`` (continuing ``doc``'s copy at ``after``) signed by ``signer``."""
    held = doc.sessions[sid].hash_at(after) if sid in doc.sessions else chain_base(doc.id, sid)
    head = chain_extend(held, txs)[-1]
    end = after + len(txs)
    return Chunk(after, txs, {end: signer.sign(signed_message(doc.id, sid, end, head))})


def test_header_must_hash_to_the_given_id() -> None:
    """A CoValueCore refuses an id its header does not hash to."""
    header = comap_header(None)
    assert CoValueCore(header, header.covalue_id()).id == header.covalue_id()
    with pytest.raises(InvalidHeader):
        CoValueCore(header, comap_header(None, tag="other").covalue_id())


# -- applying content ------------------------------------------------------------------------


BAD_SESSIONS: dict[str, tuple[Callable[[CoValueCore], tuple[Any, Chunk]], str]] = {
    "forged signature": (lambda d: (S, forged(d, S, [bob_tx(0)], CAROL)), "bad_signature"),
    "flipped signature": (
        lambda d: (S, Chunk(0, [bob_tx(0)], {1: bytes(64)})),
        "bad_signature",
    ),
    "replayed from another covalue": (
        lambda d: (S, bob_log(make_comap(None, tag="elsewhere"), [bob_tx(0)], []).chunk()),
        "bad_signature",
    ),
    "no checkpoint at end": (lambda d: (S, Chunk(0, [bob_tx(0)], {})), "invalid_content"),
    "starts past our end": (lambda d: (S, bob_log(d, [bob_tx(0), bob_tx(1)], [1]).chunk(1, 2)), "missing_prefix"),
    "malformed session id": (lambda d: (S + "!1", Chunk(0, [], {})), "invalid_id"),
}


@pytest.mark.parametrize("bad", list(BAD_SESSIONS.values()), ids=list(BAD_SESSIONS))
def test_bad_session_rejected_good_session_applied(bad: tuple[Callable[[CoValueCore], tuple[Any, Chunk]], str]) -> None:
    """In one message, a bad session is rejected with its error code; a good one still applies."""
    make_bad, code = bad
    _, doc = setup_doc()
    bad_sid, bad_chunk = make_bad(doc)
    good = signed_log(doc.id, DAVE, [tx(T0 + 1, ["set", "dave", 1])], []).chunk()
    report = doc.apply_content({bad_sid: bad_chunk, session(DAVE): good})
    outcome = {o.session: o for o in report.outcomes}
    assert outcome[bad_sid].status == "rejected"
    assert outcome[bad_sid].error is not None
    assert outcome[bad_sid].error.code == code
    assert outcome[session(DAVE)].status == "applied"
    assert outcome[session(DAVE)].added == 1
    assert report.changed
    assert bad_sid not in doc.sessions
    assert set(doc.known_state().sessions) == {session(DAVE)}
    assert doc.comap().items() == {"dave": 1}


def test_receiving_into_pending_local_writes_is_rejected() -> None:
    """Content for a session with unsigned local writes is rejected, not interleaved."""
    _, doc = setup_doc()
    doc.add_local(S, [["set", "local", 1]], T0 + 1)
    other = bob_log(doc, [bob_tx(0, "remote")], []).chunk()
    (outcome,) = doc.apply_content({S: other}).outcomes
    assert outcome.status == "rejected"
    assert outcome.error is not None
    assert outcome.error.code == "usage"
    assert doc.sessions[S].count == 1


def test_fork_from_content_merges_nothing() -> None:
    """A correctly signed chunk that diverges from our copy is a fork at the first difference."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    before, content = snapshot(doc), doc.comap().encode()
    ours = doc.sessions[S].txs
    theirs = bob_log(doc, [*ours[:4], bob_tx(4, "theirs"), bob_tx(5, "theirs")], [3])
    (outcome,) = doc.apply_content({S: theirs.chunk(2, 6)}).outcomes
    assert outcome.status == "fork"
    assert outcome.fork_index == 4
    assert outcome.error is not None
    assert outcome.error.code == "fork"
    assert snapshot(doc) == before
    assert doc.comap().encode() == content


def test_fork_from_known_state() -> None:
    """A peer's known state with another head at a count we hold is a fork; the same head is not."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    log = doc.sessions[S]
    same = KnownState(doc.id, True, {S: (3, log.hash_at(3))})
    assert doc.forks_in_known(same) == []
    theirs = bob_log(doc, [*log.txs[:4], bob_tx(4, "theirs")], [])
    forks = doc.forks_in_known(KnownState(doc.id, True, {S: theirs.head()}))
    assert [(f.session, f.index, f.code) for f in forks] == [(S, 5, "fork")]
    ahead = KnownState(doc.id, True, {S: (9, bytes(32)), session(DAVE): (1, bytes(32))})
    assert doc.forks_in_known(ahead) == []  # beyond what we hold or unknown: not decidable


def test_every_bit_flip_of_a_known_head_is_a_fork() -> None:
    """Any single flipped bit in an advertised head hash is detected as a fork."""
    _, doc = setup_doc()
    write(doc, BOB, 4, made_at=T0 + 1, batch=2)
    n, head = doc.sessions[S].head()
    for bit in range(256):
        bad = bytearray(head)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert len(doc.forks_in_known(KnownState(doc.id, True, {S: (n, bytes(bad))}))) == 1


# -- replace_session -------------------------------------------------------------------------


def diverged_copy(doc: CoValueCore, keep: int, new: int, tag: str) -> SessionLog:
    """BOB's S as an authoritative peer has it: our first ``keep`` txs, then ``new`` others."""
    start = keep
    txs = [*doc.sessions[S].txs[:keep], *(bob_tx(i, tag) for i in range(start, start + new))]
    marks = [n for n in doc.sessions[S].checkpoints() if n <= keep]
    return bob_log(doc, txs, marks)


def test_owner_keeps_divergent_tail_in_conflict_session() -> None:
    """The owner's divergent tail moves to sid!, re-signed, madeAt kept, still in content."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3, changes=tagged_edits("mine"))
    old = list(doc.sessions[S].txs)
    auth = diverged_copy(doc, 3, 2, "auth")

    out = doc.replace_session(S, auth.chunk(3, 5), owner=BOB)

    conflict = conflict_session_id(S, 1)
    assert (out.changed, out.diverged_at, out.dropped, out.conflict_session, out.owned) == (
        True, 3, 3, conflict, True,
    )
    assert out.previous is not None
    assert out.previous.txs == old
    assert doc.sessions[S].txs == auth.txs
    assert doc.sessions[S].sigs == auth.sigs
    moved = doc.sessions[conflict]
    assert moved.txs == old[3:]
    assert [decode_transaction(t).made_at for t in moved.txs] == [T0 + 4, T0 + 5, T0 + 6]
    assert moved.verify_all() is None
    n, head = moved.head()
    assert n == 3
    assert verify_signature(BOB.account_id, signed_message(doc.id, conflict, n, head), moved.sigs[n])
    items = doc.comap().items()
    assert {"mine3", "mine4", "mine5", "auth3", "auth4", "mine0"} <= set(items)
    assert conflict in doc.known_state().sessions


def tagged_edits(tag: str) -> Callable[[int], list[list[Any]]]:
    """Edits for write(): the i-th sets key ``<tag><i>`` to i."""
    return lambda i: [["set", f"{tag}{i}", i]]


def test_conflicts_of_one_session_are_numbered_and_never_overwritten() -> None:
    """Second and third conflicts of a session go to sid!2 and sid!3; earlier ones stay intact."""
    _, doc = setup_doc()
    write(doc, BOB, 4, made_at=T0 + 1, batch=2)
    kept: dict[SessionID, tuple[list[bytes], dict[int, bytes]]] = {}
    for round_no in (1, 2, 3):
        held = doc.sessions[S].count
        write(doc, BOB, 2, made_at=T0 + 100 * round_no, batch=2, changes=tagged_edits(f"r{round_no}-"))
        auth = diverged_copy(doc, held, 1, f"auth{round_no}-")
        out = doc.replace_session(S, auth.chunk(held, held + 1), owner=BOB)
        assert out.conflict_session == conflict_session_id(S, round_no)
        assert out.dropped == 2
        for sid, (txs, sigs) in kept.items():
            assert (doc.sessions[sid].txs, doc.sessions[sid].sigs) == (txs, sigs)
        new = doc.sessions[out.conflict_session]
        kept[out.conflict_session] = (list(new.txs), dict(new.sigs))
    assert set(kept) == {S + "!", S + "!2", S + "!3"}
    assert {"r1-0", "r2-1", "r3-0"} <= set(doc.comap().items())


def test_replace_again_is_a_no_op() -> None:
    """Re-running the same replace reports changed=False and changes nothing."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    auth = diverged_copy(doc, 3, 2, "auth")
    assert doc.replace_session(S, auth.chunk(3, 5), owner=BOB).changed
    before, content = snapshot(doc), doc.comap().encode()
    again = doc.replace_session(S, auth.chunk(3, 5), owner=BOB)
    assert not again.changed
    assert again.conflict_session is None
    assert snapshot(doc) == before
    assert doc.comap().encode() == content


@pytest.mark.parametrize("owner", [None, ALICE], ids=["no key", "another account's key"])
def test_non_owner_replace_drops_the_tail(owner: AccountKey | None) -> None:
    """A replica that does not own the session replaces its copy; no conflict session."""
    group, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    node = replica_of(doc, group)
    auth = diverged_copy(doc, 3, 2, "auth")
    out = node.replace_session(S, auth.chunk(3, 5), owner=owner)
    assert (out.changed, out.dropped, out.conflict_session, out.owned) == (True, 3, None, False)
    assert node.sessions[S].txs == auth.txs
    assert [sid for sid in node.sessions if "!" in sid] == []
    assert "auth4" in node.comap().items()
    assert "k5" not in node.comap().items()  # write()'s default edit 5 is gone


def test_replace_with_longer_history_extends() -> None:
    """An authoritative history that extends ours replaces nothing and moves nothing."""
    _, doc = setup_doc()
    write(doc, BOB, 3, made_at=T0 + 1, batch=3)
    auth = bob_log(doc, [*doc.sessions[S].txs, bob_tx(3, "more")], [3])
    out = doc.replace_session(S, auth.chunk(3, 4), owner=BOB)
    assert (out.changed, out.dropped, out.conflict_session) == (True, 0, None)
    assert doc.sessions[S].txs == auth.txs


def test_forged_replace_changes_nothing() -> None:
    """A replacement signed by another key raises SignatureError; state and content unchanged."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    before, content = snapshot(doc), doc.comap().encode()
    chunk = forged(doc, S, [bob_tx(3, "evil"), bob_tx(4, "evil")], CAROL, after=3)
    for owner in (BOB, None):
        with pytest.raises(SignatureError):
            doc.replace_session(S, chunk, owner=owner)
        assert snapshot(doc) == before
        assert doc.comap().encode() == content


def test_forged_replace_with_pending_writes_changes_nothing() -> None:
    """A forged replacement leaves even unsigned local writes as they were (still pending)."""
    _, doc = setup_doc()
    write(doc, BOB, 3, made_at=T0 + 1, batch=3)
    doc.add_local(S, [["set", "pending", 1]], T0 + 50)
    before, content = snapshot(doc), doc.comap().encode()
    chunk = forged(doc, S, [bob_tx(3, "evil")], CAROL, after=3)
    with pytest.raises(SignatureError):
        doc.replace_session(S, chunk, owner=BOB)
    assert snapshot(doc) == before
    assert doc.sessions[S].pending == 1
    assert doc.comap().encode() == content


def test_replace_past_our_end_is_missing_prefix() -> None:
    """A replacement starting after what we hold raises MissingPrefix and changes nothing."""
    _, doc = setup_doc()
    write(doc, BOB, 2, made_at=T0 + 1, batch=2)
    before = snapshot(doc)
    auth = bob_log(doc, [*doc.sessions[S].txs, bob_tx(2), bob_tx(3)], [2])
    with pytest.raises(MissingPrefix):
        doc.replace_session(S, auth.chunk(3, 4), owner=BOB)
    assert snapshot(doc) == before


def test_replace_from_a_fork_inside_a_write_batch() -> None:
    """A correction whose fork point is not one of our checkpoints still replaces (DESIGN §7.1).

    The fork index k is the first differing transaction, which may fall inside a signed
    batch; the authoritative chunk [k, n) ends at its own checkpoint n.
    """
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)  # checkpoints 3 and 6
    auth = diverged_copy(doc, 4, 2, "auth")  # same first 4, fork at 4 (not a checkpoint)
    out = doc.replace_session(S, auth.chunk(4, 6), owner=BOB)
    assert (out.changed, out.diverged_at, out.dropped) == (True, 4, 2)
    assert doc.sessions[S].txs == auth.txs
    assert doc.sessions[S].verify_all() is None
    assert doc.sessions[out.conflict_session or ""].count == 2


# -- local writes and permissions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "made_at"),
    [(CAROL, T0 + 1), (account(9), T0 + 1), (BOB, T0 - 1)],
    ids=["reader", "stranger", "writer before being added"],
)
def test_add_local_refused_without_write_role(who: AccountKey, made_at: int) -> None:
    """add_local raises PermissionDenied when the author may not write at madeAt; stores nothing."""
    _, doc = setup_doc()
    before = snapshot(doc)
    with pytest.raises(PermissionDenied) as info:
        doc.add_local(session(who), [["set", "k", 1]], made_at)
    assert info.value.code == "permission_denied"
    assert snapshot(doc) == before
    assert doc.comap().items() == {}


def test_add_local_updates_content_like_a_recompute() -> None:
    """Local writes update content incrementally to what a fresh replica computes."""
    group, doc = setup_doc()
    doc.comap()
    write(doc, BOB, 7, made_at=T0 + 1, batch=2)
    write(doc, DAVE, 5, made_at=T0 + 2, batch=5)
    assert doc.comap().encode() == replica_of(doc, group).comap().encode()
    assert doc.comap().items() == {"k0": 5, "k1": 6, "k2": 2, "k3": 3, "k4": 4}


def test_sign_pending_signs_only_own_sessions() -> None:
    """sign_pending(key) signs that account's sessions with pending writes, nothing else."""
    _, doc = setup_doc()
    doc.add_local(S, [["set", "b", 1]], T0 + 1)
    doc.add_local(session(DAVE), [["set", "d", 1]], T0 + 1)
    assert doc.sign_pending(BOB) == [(S, 1)]
    assert doc.sessions[session(DAVE)].pending == 1
    assert set(doc.known_state().sessions) == {S}


def test_group_add_local_by_non_admin_is_refused() -> None:
    """A role change written locally by a non-admin raises PermissionDenied (DESIGN §4 validity)."""
    group, _ = setup_doc()
    before = snapshot(group)
    with pytest.raises(PermissionDenied):
        group.add_local(S, [["role", DAVE.account_id, "admin"]], T0 + 5)
    assert snapshot(group) == before


@pytest.mark.parametrize("changes", [[], [[]]], ids=["no changes", "empty change"])
def test_add_local_refuses_ill_formed_transaction(changes: list[Any]) -> None:
    """A local write that would not decode is refused with a typed error; nothing is stored."""
    _, doc = setup_doc()
    before = snapshot(doc)
    with pytest.raises((PermissionDenied, InvalidTransaction)):
        doc.add_local(S, changes, T0 + 1)
    assert snapshot(doc) == before


# -- tombstones ------------------------------------------------------------------------------


def deleted_doc() -> tuple[CoValueCore, CoValueCore, dict[SessionID, Chunk]]:
    """A CoMap with BOB's and DAVE's sessions, then deleted by ALICE (admin) locally."""
    group, doc = setup_doc()
    write(doc, BOB, 3, made_at=T0 + 1)
    write(doc, DAVE, 2, made_at=T0 + 1)
    old = chunks_of(doc)
    doc.delete(ALICE, delete_session(ALICE), T0 + 10)
    return group, doc, old


def test_admin_delete_purges_other_sessions() -> None:
    """A valid delete keeps only the header and delete sessions; content is empty."""
    _, doc, _ = deleted_doc()
    assert doc.deleted
    assert set(doc.sessions) == {delete_session(ALICE)}
    assert set(doc.known_state().sessions) == {delete_session(ALICE)}
    assert doc.comap().items() == {}


def test_content_after_delete_is_answered_deleted() -> None:
    """Content for non-delete sessions of a deleted CoValue gets status deleted and is not stored."""
    _, doc, old = deleted_doc()
    before = snapshot(doc)
    fresh = signed_log(doc.id, DAVE, [tx(T0 + 20, ["set", "late", 1])], [], sid=session(DAVE, 7)).chunk()
    report = doc.apply_content({**old, session(DAVE, 7): fresh})
    assert {o.session: o.status for o in report.outcomes} == {sid: "deleted" for sid in [*old, session(DAVE, 7)]}
    assert all(o.error is not None and o.error.code == "deleted" for o in report.outcomes)
    assert not report.changed
    assert snapshot(doc) == before


def test_replace_on_deleted_raises_and_changes_nothing() -> None:
    """replace_session never resurrects a deleted CoValue: CoValueDeleted, no change."""
    _, doc, old = deleted_doc()
    before = snapshot(doc)
    for owner in (BOB, None):
        with pytest.raises(CoValueDeleted) as info:
            doc.replace_session(S, old[S], owner=owner)
        assert info.value.code == "deleted"
    assert snapshot(doc) == before


def test_writes_after_delete_raise() -> None:
    """add_local on a deleted CoValue raises CoValueDeleted."""
    _, doc, _ = deleted_doc()
    with pytest.raises(CoValueDeleted):
        doc.add_local(S, [["set", "k", 1]], T0 + 20)


@pytest.mark.parametrize("who", [BOB, CAROL, account(9)], ids=["writer", "reader", "stranger"])
def test_delete_by_non_admin_is_refused(who: AccountKey) -> None:
    """Only an admin may delete: others get PermissionDenied and nothing changes."""
    _, doc = setup_doc()
    write(doc, BOB, 2, made_at=T0 + 1)
    before = snapshot(doc)
    with pytest.raises(PermissionDenied):
        doc.delete(who, delete_session(who), T0 + 10)
    assert snapshot(doc) == before
    assert not doc.deleted


def test_delete_needs_a_delete_session() -> None:
    """A delete marker cannot go into an active session."""
    _, doc = setup_doc()
    with pytest.raises(UsageError):
        doc.delete(ALICE, session(ALICE), T0 + 1)
    assert not doc.deleted


def test_received_admin_delete_purges() -> None:
    """A delete marker received from an admin deletes the CoValue and reports what it purged."""
    group, doc = setup_doc()
    write(doc, BOB, 2, made_at=T0 + 1)
    write(doc, DAVE, 1, made_at=T0 + 1)
    marker = signed_log(doc.id, ALICE, [tx(T0 + 10, ["delete"])], [], sid=delete_session(ALICE)).chunk()
    report = doc.apply_content({delete_session(ALICE): marker})
    assert report.became_deleted
    assert set(report.purged) == {S, session(DAVE)}
    assert set(doc.known_state().sessions) == {delete_session(ALICE)}
    assert replica_of(doc, group).deleted  # a replica that gets the marker agrees


def test_received_non_admin_delete_does_not_delete() -> None:
    """A writer's delete marker is stored but does not delete; content stays."""
    _, doc = setup_doc()
    write(doc, BOB, 2, made_at=T0 + 1)
    content = doc.comap().encode()
    marker = signed_log(doc.id, DAVE, [tx(T0 + 10, ["delete"])], [], sid=delete_session(DAVE)).chunk()
    report = doc.apply_content({delete_session(DAVE): marker})
    assert not report.became_deleted
    assert not doc.deleted
    assert doc.comap().encode() == content
    assert doc.delete_problem_for(delete_session(DAVE)) is not None


@pytest.mark.parametrize(
    "txs",
    [
        [tx(T0 + 10, ["set", "k", 1])],
        [tx(T0 + 10, ["delete"]), tx(T0 + 11, ["delete"])],
        [tx(T0 + 10, ["delete"], ["delete"])],
    ],
    ids=["not a marker", "two markers", "marker twice in one tx"],
)
def test_delete_session_holds_only_one_marker(txs: list[bytes]) -> None:
    """A delete session with anything but exactly one delete marker is rejected."""
    _, doc = setup_doc()
    chunk = signed_log(doc.id, ALICE, txs, [], sid=delete_session(ALICE)).chunk()
    (outcome,) = doc.apply_content({delete_session(ALICE): chunk}).outcomes
    assert outcome.status == "rejected"
    assert outcome.error is not None
    assert outcome.error.code == "invalid_content"
    assert not doc.deleted


def test_deleted_stays_deleted_after_more_markers_and_reads() -> None:
    """Re-delivering the marker is a duplicate; the CoValue stays deleted."""
    _, doc, _ = deleted_doc()
    marker = doc.sessions[delete_session(ALICE)].chunk()
    (outcome,) = doc.apply_content({delete_session(ALICE): marker}).outcomes
    assert outcome.status == "duplicate"
    assert doc.deleted
    assert set(doc.known_state().sessions) == {delete_session(ALICE)}


def test_errors_are_typed() -> None:
    """Every failure raised above is a KintsugiError with a stable code."""
    for cls in (CoValueDeleted, PermissionDenied, SignatureError, MissingPrefix, InvalidHeader):
        assert issubclass(cls, KintsugiError)
        assert isinstance(cls.code, str)
