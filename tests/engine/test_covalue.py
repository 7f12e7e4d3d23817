"""engine.covalue: verified sessions, forks and tombstones (DESIGN §4–5, §7).

Replacing a forked session (DESIGN §7.1) is tested with the recovery code that decides it:
tests/engine/recovery/test_correction.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.covalue import CoValueCore
from engine.crypto import AccountKey
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
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk
from engine.model.transaction import decode_transaction
from tests.engine.factories import (
    ALICE,
    BOB,
    BOB_SESSION,
    CAROL,
    DAVE,
    T0,
    account,
    bob_log,
    bob_tx,
    comap_header,
    delete_session,
    deleted_doc,
    forged,
    make_comap,
    make_group,
    replica_of,
    session,
    set_role,
    setup_doc,
    signed_log,
    snapshot,
    tx,
    write,
)

S = BOB_SESSION


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


# -- local writes and permissions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "made_at"),
    [(CAROL, T0 + 1), (account(9), T0 + 1), (CAROL, T0 + 10**9)],
    ids=["reader", "stranger", "reader claiming a late madeAt"],
)
def test_add_local_refused_without_write_role(who: AccountKey, made_at: int) -> None:
    """add_local raises PermissionDenied when the author holds no write role in what this
    replica holds of the group (whatever madeAt it claims); stores nothing."""
    _, doc = setup_doc()
    before = snapshot(doc)
    with pytest.raises(PermissionDenied) as info:
        doc.add_local(session(who), [["set", "k", 1]], made_at)
    assert info.value.code == "permission_denied"
    assert snapshot(doc) == before
    assert doc.comap().items() == {}


def test_add_local_judges_by_the_group_not_by_made_at() -> None:
    """A local write claims what this replica has seen of the owner group, so a writer's
    write counts whatever madeAt its clock gives (even one before its grant's), on this
    replica and on a fresh one."""
    group, doc = setup_doc()
    doc.add_local(session(BOB), [["set", "k", 1]], T0 - 1)
    doc.sign_pending(BOB)
    assert doc.comap().items() == {"k": 1}
    assert replica_of(doc, group).comap().items() == {"k": 1}
    meta = decode_transaction(doc.sessions[session(BOB)].txs[0]).meta
    assert meta == {"group": group.group().seen}


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


def test_group_add_local_judges_the_current_role_not_made_at() -> None:
    """A local role change by an admin since revoked is refused whatever madeAt it claims (its
    causal past is everything the replica holds); an admin's carries the frontier it saw."""
    group = make_group(ALICE)
    set_role(group, ALICE, BOB, "admin", made_at=T0 + 10)
    set_role(group, ALICE, BOB, "revoked", made_at=T0 + 20)
    before = snapshot(group)
    with pytest.raises(PermissionDenied):
        group.add_local(session(BOB), [["role", BOB.account_id, "admin"]], T0 + 15)
    assert snapshot(group) == before
    group.add_local(session(ALICE), [["role", CAROL.account_id, "writer"]], T0 + 1)
    written = decode_transaction(group.sessions[session(ALICE)].txs[-1])
    assert written.meta == {"seen": {session(ALICE): 2}}
    assert group.group().members()[CAROL.account_id] == "writer"


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
