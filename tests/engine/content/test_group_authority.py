"""Causal group authority (docs/protocol.md, "Group authority"): stories, no event loop.

The cast: BOB creates the group (its initial admin); EVE is made admin, then revoked; CAROL
and DAVE are other members. ``claim`` builds the ``seen`` meta a transaction carries.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.content.authority import MAX_SEEN_SESSIONS, seen_meta
from engine.covalue import CoValueCore
from engine.ids import AccountID, SessionID
from engine.model.transaction import decode_transaction, encode_transaction
from tests.engine.factories import T0, account, deliver, make_comap, make_group, replica_of, session, set_role, tx, wire

BOB, EVE, CAROL, DAVE = account(2), account(5), account(3), account(4)
T1, T2 = T0 + 100, T0 + 200


def role_tx(made_at: int, *changes: tuple[AccountID, str], seen: dict[SessionID, int] | None = None) -> bytes:
    """A group transaction of role changes claiming ``seen`` (None: no meta at all)."""
    meta = seen_meta(seen) if seen is not None else None
    return encode_transaction(made_at, [["role", acc, role] for acc, role in changes], meta)


def reasons(core: CoValueCore) -> dict[tuple[str, int], str]:
    return {(i.session, i.index): i.reason for i in core.invalid_transactions()}


def bob_makes_eve_admin_then_revokes() -> tuple[CoValueCore, dict[SessionID, int]]:
    """T1: BOB makes EVE admin; T2: BOB revokes EVE. Returns the group and what EVE had seen
    between the two (the group as it was after T1)."""
    group = make_group(BOB)
    set_role(group, BOB, EVE, "admin", made_at=T1)
    seen_at_t1 = dict(group.group().seen)
    set_role(group, BOB, EVE, "revoked", made_at=T2)
    return group, seen_at_t1


# -- the backdating story of issue 12 --------------------------------------------------------


def test_backdated_takeover_by_a_revoked_admin_does_not_count() -> None:
    """EVE, revoked at T2, sends in a new session a transaction made at T2 - 1 that revokes BOB
    and re-makes her admin, claiming to have seen the group only up to T1. It is concurrent with
    her revocation, so it is voided: BOB stays admin, EVE stays revoked, BOB's revocation of EVE
    stays valid."""
    group, seen_at_t1 = bob_makes_eve_admin_then_revokes()
    takeover = role_tx(T2 - 1, (BOB.account_id, "revoked"), (EVE.account_id, "admin"), seen=seen_at_t1)
    report = deliver(group, EVE, [takeover], sid=session(EVE, 7))
    assert [o.status for o in report.outcomes] == ["applied"]  # kept as signed history
    assert group.group().members() == {BOB.account_id: "admin", EVE.account_id: "revoked"}
    why = reasons(group)
    assert set(why) == {(session(EVE, 7), 0)}, "BOB's revocation of EVE must stay valid"
    assert "concurrent with the revocation of its author" in why[(session(EVE, 7), 0)]
    assert replica_of(group).group().members() == group.group().members()


@pytest.mark.parametrize("made_at", [T0 - 10**6, T1 - 1, T1 + 1, T2 - 1, T2, T2 + 10**6])
def test_takeover_that_saw_the_revocation_is_invalid_at_any_made_at(made_at: int) -> None:
    """Claiming to have seen the revocation makes EVE revoked in the causal past; claiming
    to have seen nothing makes her not a member there. Neither works at any madeAt."""
    group, _ = bob_makes_eve_admin_then_revokes()
    saw_all = dict(group.group().seen)
    changes = ((BOB.account_id, "revoked"), (EVE.account_id, "admin"))
    deliver(group, EVE, [role_tx(made_at, *changes, seen=saw_all)], sid=session(EVE, 1))
    deliver(group, EVE, [role_tx(made_at, *changes, seen={})], sid=session(EVE, 2))
    deliver(group, EVE, [role_tx(made_at, *changes)], sid=session(EVE, 3))
    assert group.group().members() == {BOB.account_id: "admin", EVE.account_id: "revoked"}
    why = reasons(group)
    assert "revoked in its causal past" in why[(session(EVE, 1), 0)]
    assert "not a member in its causal past" in why[(session(EVE, 2), 0)]
    assert "not a member in its causal past" in why[(session(EVE, 3), 0)]


def test_data_edits_made_before_the_revocation_stay_valid() -> None:
    """EVE's CoMap edits between her promotion and her revocation stay in content; after the
    revocation they are invalid. Her role changes that BOB's revocation had seen stay valid."""
    group = make_group(BOB)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, BOB, EVE, "admin", made_at=T1)
    set_role(group, EVE, CAROL, "writer", made_at=T1 + 10)  # EVE's own change, seen by BOB next
    deliver(doc, EVE, [tx(T1 + 5, ["set", "before", 1])])
    set_role(group, BOB, EVE, "revoked", made_at=T2, keeping=[doc])
    deliver(doc, EVE, [tx(T2 + 5, ["set", "after", 1])])
    assert doc.comap().items() == {"before": 1}
    assert group.group().members()[CAROL.account_id] == "writer"
    assert group.invalid_transactions() == []


def test_revocation_voids_only_the_changes_it_had_not_seen() -> None:
    """EVE grants CAROL writer (BOB sees it), then, concurrently with BOB's revocation of her,
    grants DAVE admin: the first stays, the second is voided, and so is everything DAVE did
    on the strength of it."""
    group = make_group(BOB)
    set_role(group, BOB, EVE, "admin", made_at=T1)
    set_role(group, EVE, CAROL, "writer", made_at=T1 + 1, sid=session(EVE))
    eve_view = dict(group.group().seen)
    set_role(group, BOB, EVE, "revoked", made_at=T2)
    # EVE, offline, had not seen her revocation
    deliver(group, EVE, [role_tx(T2 + 1, (DAVE.account_id, "admin"), seen=eve_view)], sid=session(EVE, 1))
    dave_view = {**eve_view, session(EVE, 1): 1}
    deliver(group, DAVE, [role_tx(T2 + 2, (CAROL.account_id, "revoked"), seen=dave_view)])
    members = group.group().members()
    assert members == {BOB.account_id: "admin", EVE.account_id: "revoked", CAROL.account_id: "writer"}
    why = reasons(group)
    assert "concurrent with the revocation" in why[(session(EVE, 1), 0)]
    assert "not a member in its causal past" in why[(session(DAVE), 0)]


# -- concurrent mutual revocations -----------------------------------------------------------


def test_initial_admin_wins_a_mutual_revocation_whatever_the_made_at() -> None:
    """BOB (initial admin) and EVE (made admin by BOB) revoke each other concurrently: BOB's
    revocation wins even when EVE's claims the earlier madeAt."""
    group = make_group(BOB)
    set_role(group, BOB, EVE, "admin", made_at=T1)
    both_saw = dict(group.group().seen)
    deliver(group, EVE, [role_tx(T1 + 1, (BOB.account_id, "revoked"), seen=both_saw)])
    deliver(group, BOB, [role_tx(T1 + 50, (EVE.account_id, "revoked"), seen=both_saw)], sid=session(BOB, 1))
    assert group.group().members() == {BOB.account_id: "admin", EVE.account_id: "revoked"}
    assert set(reasons(group)) == {(session(EVE), 0)}


def test_earlier_made_admin_wins_a_mutual_revocation() -> None:
    """CAROL was made admin before EVE (in the causal order): when they revoke each other
    concurrently, CAROL's revocation counts and EVE's is voided."""
    group = make_group(BOB)
    set_role(group, BOB, CAROL, "admin", made_at=T1)
    set_role(group, BOB, EVE, "admin", made_at=T1 + 1)
    seen = dict(group.group().seen)
    deliver(group, EVE, [role_tx(T1 + 2, (CAROL.account_id, "revoked"), seen=seen)])
    deliver(group, CAROL, [role_tx(T1 + 3, (EVE.account_id, "revoked"), seen=seen)])
    members = group.group().members()
    assert (members[CAROL.account_id], members[EVE.account_id]) == ("admin", "revoked")
    assert set(reasons(group)) == {(session(EVE), 0)}


def test_equal_seniority_goes_to_the_smaller_account_id() -> None:
    """Made admin in one transaction, CAROL and EVE revoke each other concurrently: the
    smaller AccountID wins."""
    group = make_group(BOB)
    group.add_local(session(BOB), [["role", CAROL.account_id, "admin"], ["role", EVE.account_id, "admin"]], T1)
    group.sign_pending(BOB)
    seen = dict(group.group().seen)
    deliver(group, EVE, [role_tx(T1 + 2, (CAROL.account_id, "revoked"), seen=seen)])
    deliver(group, CAROL, [role_tx(T1 + 3, (EVE.account_id, "revoked"), seen=seen)])
    winner, loser = sorted([CAROL, EVE], key=lambda k: k.account_id)
    members = group.group().members()
    assert (members[winner.account_id], members[loser.account_id]) == ("admin", "revoked")
    assert set(reasons(group)) == {(session(loser), 0)}


# -- the causal past itself ------------------------------------------------------------------


def test_a_change_waits_until_its_causal_past_arrives() -> None:
    """EVE's grant claims to have seen BOB's promotion of her: on a replica that lacks the
    promotion it waits (not applied), and it counts once the promotion arrives."""
    source = make_group(BOB)
    set_role(source, BOB, EVE, "admin", made_at=T1)
    seen = dict(source.group().seen)
    grant = role_tx(T1 + 1, (CAROL.account_id, "writer"), seen=seen)
    copy = CoValueCore(source.header)
    deliver(copy, EVE, [grant])
    assert CAROL.account_id not in copy.group().members()
    assert "waits for its causal past" in reasons(copy)[(session(EVE), 0)]
    copy.apply_content({session(BOB): source.sessions[session(BOB)].chunk()})
    assert copy.group().members()[CAROL.account_id] == "writer"
    assert copy.invalid_transactions() == []


def test_cyclic_claims_wait_forever() -> None:
    """Two transactions each claiming to have seen the other are never applied."""
    group = make_group(BOB)
    deliver(group, BOB, [role_tx(T1, (CAROL.account_id, "writer"), seen={session(BOB, 2): 1})], sid=session(BOB, 1))
    deliver(group, BOB, [role_tx(T1, (DAVE.account_id, "writer"), seen={session(BOB, 1): 1})], sid=session(BOB, 2))
    assert group.group().members() == {BOB.account_id: "admin"}
    assert all("waits" in why for why in reasons(group).values())


MALFORMED_META: dict[str, Callable[[SessionID], object]] = {
    "seen not a map": lambda sid: {"seen": []},
    "extra key": lambda sid: {"seen": {}, "extra": 1},
    "bad session id": lambda sid: {"seen": {"not-a-session": 1}},
    "zero count": lambda sid: {"seen": {sid: 0}},
    "count too large": lambda sid: {"seen": {sid: 2**32}},
    "count not an integer": lambda sid: {"seen": {sid: True}},
    "too many sessions": lambda sid: {"seen": {session(DAVE, i): 1 for i in range(MAX_SEEN_SESSIONS + 1)}},
    "not a map": lambda sid: "seen",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_META))
def test_malformed_seen_claims_are_invalid(case: str) -> None:
    """A group transaction whose meta is not {'seen': {sessionID: count}} within the limits
    is invalid, even from the initial admin."""
    group = make_group(BOB)
    set_role(group, BOB, DAVE, "writer", made_at=T1)
    data = encode_transaction(T1 + 1, [["role", CAROL.account_id, "writer"]], MALFORMED_META[case](session(BOB)))
    deliver(group, BOB, [data], sid=session(BOB, 1))
    assert group.group().members() == {BOB.account_id: "admin", DAVE.account_id: "writer"}
    assert "seen" in reasons(group)[(session(BOB, 1), 0)]


def test_local_group_writes_claim_the_frontier_they_saw() -> None:
    """add_local on a group writes meta {'seen': frontier}: only sessions no other named one
    had seen, each up to what this replica holds."""
    group = make_group(BOB)
    set_role(group, BOB, EVE, "admin", made_at=T1)
    set_role(group, EVE, CAROL, "writer", made_at=T1 + 1)  # EVE saw BOB's session
    set_role(group, BOB, DAVE, "reader", made_at=T1 + 2)
    meta = decode_transaction(group.sessions[session(BOB)].txs[-1]).meta
    assert meta == {"seen": {session(EVE): 1}}  # EVE's head had seen BOB's first transaction
    assert decode_transaction(group.sessions[session(BOB)].txs[0]).meta == {"seen": {}}
    assert group.group().seen == {session(BOB): 2}
