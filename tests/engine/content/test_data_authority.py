"""Causal authority over data writes (docs/protocol.md, "Group authority": data writes): stories.

The cast: BOB creates the group (its initial admin) and a CoMap it owns; EVE is made writer
(or admin), writes, and is revoked; CAROL is another writer. ``claim`` builds the ``group``
meta a data transaction carries.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.content.authority import seen_meta
from engine.content.writes import CLAIM_KEY, claim_to_write, extend_claim
from engine.covalue import CoValueCore
from engine.errors import PermissionDenied
from engine.ids import SessionID
from engine.model.transaction import decode_transaction, encode_transaction
from engine.node.revocations import held_writes
from tests.engine.factories import (
    T0,
    account,
    delete_session,
    deliver,
    make_comap,
    make_group,
    replica_of,
    session,
    set_role,
    wire,
)

BOB, EVE, CAROL = account(2), account(5), account(3)
T1, T2 = T0 + 100, T0 + 200


def claim(seen: dict[SessionID, int] | None) -> dict[str, Any] | None:
    return {CLAIM_KEY: dict(seen)} if seen is not None else None


def data_tx(made_at: int, key: str, seen: dict[SessionID, int] | None = None) -> bytes:
    """A CoMap ``set`` of ``key`` claiming to have seen ``seen`` of the group (None: no meta)."""
    return encode_transaction(made_at, [["set", key, 1]], claim(seen))


def reasons(core: CoValueCore) -> dict[tuple[str, int], str]:
    return {(i.session, i.index): i.reason for i in core.invalid_transactions()}


def story(role: str = "writer") -> tuple[CoValueCore, CoValueCore, dict[SessionID, int]]:
    """T1: BOB gives EVE ``role``; EVE writes ``before`` (claiming the group as she saw it);
    BOB, holding it, revokes EVE at T2. Returns the group, the CoMap and EVE's view of the
    group between T1 and T2."""
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, EVE, role, made_at=T1)
    eve_view = dict(group.group().seen)
    deliver(doc, EVE, [data_tx(T1 + 5, "before", eve_view)])
    set_role(group, BOB, EVE, "revoked", made_at=T2, keeping=[doc])
    return group, doc, eve_view


@pytest.mark.parametrize("claimed", ["nothing", "her view before the revocation", "an empty view"])
@pytest.mark.parametrize("made_at", [T2 - 1, T1 + 1, T2 + 1, 0])
def test_backdated_write_by_a_revoked_member_does_not_count(claimed: str, made_at: int) -> None:
    """EVE, revoked, writes in a new session with any madeAt (the issue's ``T2 - 1`` among
    them) and any claim short of her revocation: the write is voided on every replica; the
    edit BOB held when revoking her stays."""
    group, doc, eve_view = story()
    seen = {"nothing": None, "her view before the revocation": eve_view, "an empty view": {}}[claimed]
    deliver(doc, EVE, [data_tx(made_at, "takeover", seen)], sid=session(EVE, 1))
    for replica in (doc, replica_of(doc, group)):
        assert replica.comap().items() == {"before": 1}
        why = reasons(replica)[(session(EVE, 1), 0)]
        assert any(word in why for word in ("voided", "revoked", "not a member")), why


def test_write_that_saw_its_revocation_is_invalid_at_any_made_at() -> None:
    """A write claiming the group with EVE's revocation in it is judged there: EVE is revoked."""
    group, doc, _ = story()
    deliver(doc, EVE, [data_tx(T1, "late", dict(group.group().seen))], sid=session(EVE, 1))
    assert doc.comap().items() == {"before": 1}
    assert "revoked in the owner group in its causal past" in reasons(doc)[(session(EVE, 1), 0)]


def test_edits_the_revocation_had_not_seen_are_voided() -> None:
    """EVE's honest edit that reached BOB only after he revoked her (made while she was still
    writer, by her clock and her claim) is voided: the revocation had not seen it."""
    _, doc, eve_view = story()
    deliver(doc, EVE, [data_tx(T1 + 6, "offline", eve_view)])  # continues her session: index 1
    assert doc.comap().items() == {"before": 1}
    assert "had not seen it" in reasons(doc)[(session(EVE), 1)]


def test_a_demotion_to_reader_voids_concurrent_writes_too() -> None:
    """Any role without write power revokes writing: EVE made reader is like EVE revoked."""
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, EVE, "writer", made_at=T1)
    eve_view = dict(group.group().seen)
    set_role(group, BOB, EVE, "reader", made_at=T2, keeping=[doc])
    deliver(doc, EVE, [data_tx(T2 - 1, "concurrent", eve_view)])
    assert doc.comap().items() == {}
    assert "became reader" in reasons(doc)[(session(EVE), 0)]


def test_a_new_grant_after_the_revocation_lets_her_write_again() -> None:
    """Revoked, then made writer again: writes claiming the new grant count; a write claiming
    only the old view is still voided."""
    group, doc, eve_view = story()
    set_role(group, BOB, EVE, "writer", made_at=T2 + 10)
    deliver(doc, EVE, [data_tx(T2 + 11, "again", dict(group.group().seen))], sid=session(EVE, 1))
    deliver(doc, EVE, [data_tx(T2 + 12, "stale", eve_view)], sid=session(EVE, 2))
    assert doc.comap().items() == {"before": 1, "again": 1}
    assert "had not seen it" in reasons(doc)[(session(EVE, 2), 0)]


def test_grants_count_causally_not_by_made_at() -> None:
    """CAROL's write with a madeAt before her grant counts when it claims the grant; one with
    no claim is judged at its madeAt, where she was not a member yet."""
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, CAROL, "writer", made_at=T1)
    deliver(doc, CAROL, [data_tx(T0, "claimed", dict(group.group().seen))])
    deliver(doc, CAROL, [data_tx(T0, "unclaimed")], sid=session(CAROL, 1))
    assert doc.comap().items() == {"claimed": 1}
    assert "not a member in the owner group at" in reasons(doc)[(session(CAROL, 1), 0)]


def test_a_write_waits_for_the_group_it_claims() -> None:
    """A write claiming group transactions this replica lacks waits (invalid for now, with the
    reason), and counts once the group catches up."""
    group = make_group(BOB)
    set_role(group, BOB, CAROL, "writer", made_at=T1)
    ahead = dict(group.group().seen)
    early_group = make_group(BOB)  # the same group, before BOB's grant arrived
    doc = make_comap(early_group)
    wire(early_group, doc)
    deliver(doc, CAROL, [data_tx(T1 + 1, "k", ahead)])
    assert doc.comap().items() == {}
    assert "waits for the owner group's causal past" in reasons(doc)[(session(CAROL), 0)]
    early_group.apply_content({sid: log.chunk() for sid, log in group.sessions.items()})
    assert doc.comap().items() == {"k": 1}


def test_a_session_claims_once_and_later_writes_inherit_it() -> None:
    """A writer repeats its claim only when its view of the group moved on; the writes in
    between inherit their session's claim, so a replica judges them the same."""
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, CAROL, "writer", made_at=T1)
    for i in range(3):
        doc.add_local(session(CAROL), [["set", f"k{i}", i]], T1 + i)
    set_role(group, BOB, EVE, "writer", made_at=T1 + 5)
    doc.add_local(session(CAROL), [["set", "k3", 3]], T1 + 6)
    doc.sign_pending(CAROL)
    metas = [decode_transaction(t).meta for t in doc.sessions[session(CAROL)].txs]
    assert [meta is not None for meta in metas] == [True, False, False, True]
    assert replica_of(doc, group).comap().items() == doc.comap().items() == {f"k{i}": i for i in range(4)}


def test_local_write_refused_once_revoked_here() -> None:
    """A replica that holds EVE's revocation refuses her local write, whatever her clock says."""
    _, doc, _ = story()
    with pytest.raises(PermissionDenied):
        doc.add_local(session(EVE), [["set", "k", 1]], T1)


def test_backdated_delete_by_a_revoked_admin_does_not_delete() -> None:
    """EVE, revoked admin, writes a delete marker made before her revocation: nothing is deleted."""
    _, doc, eve_view = story("admin")
    marker = encode_transaction(T2 - 1, [["delete"]], claim(eve_view))
    deliver(doc, EVE, [marker], sid=delete_session(EVE))
    assert not doc.deleted
    assert doc.comap().items() == {"before": 1}
    assert "deleting needs admin" in doc.delete_problem_for(delete_session(EVE))


def test_an_admin_delete_claims_the_group_and_deletes() -> None:
    """BOB's delete marker carries his view of the group and deletes on every replica."""
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, CAROL, "writer", made_at=T1)
    doc.delete(BOB, delete_session(BOB), T1 + 1)
    assert doc.deleted
    assert replica_of(doc, group).deleted


@pytest.mark.parametrize(
    "meta",
    [
        {CLAIM_KEY: []},
        {CLAIM_KEY: {"not a session": 1}},
        {CLAIM_KEY: {"SESSION": 0}},
        "a string",
    ],
    ids=["claim not a map", "bad session", "zero count", "meta not a map"],
)
def test_ill_formed_claims_make_the_write_invalid(meta: Any) -> None:
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, CAROL, "writer", made_at=T1)
    if isinstance(meta, dict) and "SESSION" in meta[CLAIM_KEY]:
        meta = {CLAIM_KEY: {session(BOB): 0}}
    deliver(doc, CAROL, [encode_transaction(T1 + 1, [["set", "k", 1]], meta)])
    assert doc.comap().items() == {}
    assert (session(CAROL), 0) in reasons(doc)


@pytest.mark.parametrize(
    "kept",
    [{"not a covalue": {}}, "x", {"DOC": {"bad": 1}}],
    ids=["bad CoValueID", "not a map", "bad session"],
)
def test_ill_formed_kept_makes_the_revocation_invalid(kept: Any) -> None:
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, EVE, "writer", made_at=T1)
    if isinstance(kept, dict) and "DOC" in kept:
        kept = {doc.id: {"bad": 1}}
    meta = {**seen_meta(group.group().seen), "kept": kept}
    deliver(group, BOB, [encode_transaction(T2, [["role", EVE.account_id, "revoked"]], meta)], sid=session(BOB, 1))
    assert "kept" in reasons(group)[(session(BOB, 1), 0)]
    assert group.group().roles[EVE.account_id] == "writer"


def test_held_writes_names_only_the_revoked_accounts_sessions_of_the_groups_covalues() -> None:
    group = make_group(BOB)
    doc = make_comap(group)
    other_group = make_group(BOB, tag="other")
    other = make_comap(other_group, tag="other")
    wire(group, doc, other_group, other)
    set_role(group, BOB, EVE, "writer", made_at=T1)
    set_role(other_group, BOB, EVE, "writer", made_at=T1)
    for core in (doc, other):
        deliver(core, EVE, [data_tx(T1 + 1, "a"), data_tx(T1 + 2, "b")])
        deliver(core, CAROL, [data_tx(T1 + 1, "c")])
    assert held_writes([group, doc, other_group, other], None, group.id, EVE.account_id) == {doc.id: {session(EVE): 2}}


def test_claim_to_write_repeats_only_a_moved_view() -> None:
    a, b = session(BOB), session(EVE)
    assert claim_to_write((), {}) is None
    assert claim_to_write((), {a: 1}) == {CLAIM_KEY: {a: 1}}
    past = extend_claim((), {a: 1})
    assert claim_to_write(past, {a: 1}) is None
    assert claim_to_write(past, {a: 2, b: 1}) == {CLAIM_KEY: {a: 2, b: 1}}
    assert extend_claim(past, {a: 1, b: 3}) == tuple(sorted({a: 1, b: 3}.items()))
