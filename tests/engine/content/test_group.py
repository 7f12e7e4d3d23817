"""engine.content.group: roles over time and which transactions they make valid (DESIGN §4)."""

from __future__ import annotations

import pytest

from engine.content.authority import seen_meta
from engine.content.group import ROLES, role_change_problem
from engine.covalue import CoValueCore
from engine.ids import AccountID
from engine.model.transaction import encode_transaction
from tests.engine.factories import (
    T0,
    account,
    deliver,
    make_comap,
    make_group,
    replica_of,
    session,
    set_role,
    tx,
    wire,
)

ALICE, BOB, CAROL, DAVE = account(1), account(2), account(3), account(4)


def role_tx(made_at: int, member: AccountID, role: str, seen: CoValueCore | None = None) -> bytes:
    """A role change; ``seen``: the group whose current state its author had seen (else nothing)."""
    meta = seen_meta(seen.group().seen) if seen is not None else None
    return encode_transaction(made_at, [["role", member, role]], meta)


def reasons(core: CoValueCore) -> dict[tuple[str, int], str]:
    return {(i.session, i.index): i.reason for i in core.invalid_transactions()}


# -- roles over time -------------------------------------------------------------------------


def test_initial_admin_is_admin_from_the_start() -> None:
    """The header's initialAdmin is admin at any time; nobody else is a member."""
    group = make_group(ALICE)
    state = group.group()
    assert state.members() == {ALICE.account_id: "admin"}
    assert state.role_at(ALICE.account_id, 0) == "admin"
    assert state.role_at(ALICE.account_id, T0) == "admin"
    assert state.role_at(BOB.account_id, T0) is None
    assert group.invalid_transactions() == []


def test_roles_over_time() -> None:
    """role_at answers the role in force at a time: none, then writer, then revoked."""
    group = make_group(ALICE)
    set_role(group, ALICE, BOB, "writer", made_at=T0 + 10)
    set_role(group, ALICE, BOB, "revoked", made_at=T0 + 20)
    state = group.group()
    assert state.role_at(BOB.account_id, T0 + 9) is None
    assert state.role_at(BOB.account_id, T0 + 10) == "writer"  # from its madeAt on
    assert state.role_at(BOB.account_id, T0 + 19) == "writer"
    assert state.role_at(BOB.account_id, T0 + 20) == "revoked"
    assert state.role_at(BOB.account_id, T0 + 10**6) == "revoked"
    assert state.members()[BOB.account_id] == "revoked"


def test_roles_follow_made_at_not_arrival() -> None:
    """Role changes apply in madeAt order even when the later one arrived first."""
    group = make_group(ALICE)
    deliver(group, ALICE, [role_tx(T0 + 20, BOB.account_id, "reader")], sid=session(ALICE, 1))
    deliver(group, ALICE, [role_tx(T0 + 10, BOB.account_id, "writer")], sid=session(ALICE, 2))
    state = group.group()
    assert state.role_at(BOB.account_id, T0 + 15) == "writer"
    assert state.members()[BOB.account_id] == "reader"


def test_writer_writes_valid_only_while_writer() -> None:
    """A writer's CoMap edits (with no claim of the group, as protocol 1 wrote them) are valid
    from being added at their madeAt until revoked, if the revocation had them; others get a
    reason."""
    group = make_group(ALICE)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, ALICE, BOB, "writer", made_at=T0 + 10)
    report = deliver(
        doc,
        BOB,
        [
            tx(T0 + 5, ["set", "early", 1]),
            tx(T0 + 10, ["set", "at_add", 1]),
            tx(T0 + 15, ["set", "during", 1]),
        ],
    )
    assert [o.status for o in report.outcomes] == ["applied"]
    set_role(group, ALICE, BOB, "revoked", made_at=T0 + 20, keeping=[doc])
    deliver(doc, BOB, [tx(T0 + 25, ["set", "late", 1])])
    assert doc.comap().items() == {"at_add": 1, "during": 1}
    sid = session(BOB)
    why = reasons(doc)
    assert set(why) == {(sid, 0), (sid, 3)}
    assert "not a member" in why[(sid, 0)]
    assert "revoked" in why[(sid, 3)]
    assert doc.sessions[sid].count == 4  # invalid ones stay in the signed log


def test_reader_cannot_write() -> None:
    """A reader's edits are invalid with a reason naming the role."""
    group = make_group(ALICE)
    doc = make_comap(group)
    wire(group, doc)
    set_role(group, ALICE, CAROL, "reader", made_at=T0)
    deliver(doc, CAROL, [tx(T0 + 1, ["set", "k", 1])])
    assert doc.comap().items() == {}
    assert "reader" in reasons(doc)[(session(CAROL), 0)]


def test_admin_can_write_data() -> None:
    """Admins may write data owned by the group."""
    group = make_group(ALICE)
    doc = make_comap(group)
    wire(group, doc)
    deliver(doc, ALICE, [tx(T0, ["set", "k", "v"])])
    assert doc.comap().items() == {"k": "v"}


# -- who may change roles --------------------------------------------------------------------


@pytest.mark.parametrize("role", ["writer", "reader", "revoked", None])
def test_non_admin_role_changes_are_invalid(role: str | None) -> None:
    """Role changes by a writer, reader, revoked member or stranger are invalid and ignored."""
    group = make_group(ALICE)
    if role is not None:
        set_role(group, ALICE, BOB, role, made_at=T0)
    deliver(group, BOB, [role_tx(T0 + 5, CAROL.account_id, "admin", seen=group)])
    state = group.group()
    assert state.role_at(CAROL.account_id, T0 + 10) is None
    assert CAROL.account_id not in state.members()
    why = reasons(group)[(session(BOB), 0)]
    assert "need admin" in why
    assert (role or "not a member") in why


def test_promoted_admin_may_change_roles_only_once_it_has_seen_the_promotion() -> None:
    """A member made admin may change roles in transactions whose causal past holds the
    promotion, whatever their madeAt; one that had not seen it is invalid."""
    group = make_group(ALICE)
    set_role(group, ALICE, BOB, "admin", made_at=T0 + 10)
    deliver(
        group,
        BOB,
        [role_tx(T0 + 15, CAROL.account_id, "writer"), role_tx(T0 + 5, DAVE.account_id, "writer", seen=group)],
    )
    state = group.group()
    assert CAROL.account_id not in state.members()
    assert state.members()[DAVE.account_id] == "writer"
    assert set(reasons(group)) == {(session(BOB), 0)}
    assert "not a member in its causal past" in reasons(group)[(session(BOB), 0)]


def test_revoked_admin_loses_admin_powers() -> None:
    """An admin demoted by another admin can no longer change roles."""
    group = make_group(ALICE)
    set_role(group, ALICE, BOB, "admin", made_at=T0 + 1)
    set_role(group, ALICE, BOB, "revoked", made_at=T0 + 2)
    deliver(group, BOB, [role_tx(T0 + 3, CAROL.account_id, "admin", seen=group)])
    assert CAROL.account_id not in group.group().members()
    assert "revoked" in reasons(group)[(session(BOB), 0)]


# -- malformed role changes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (["role", "acc_zNOPE", "writer"], "invalid AccountID"),
        (["role", BOB.account_id, "owner"], "unknown role"),
        (["role", BOB.account_id], "only ['role'"),
        (["role", BOB.account_id, "writer", 1], "only ['role'"),
        (["set", "k", 1], "only ['role'"),
        (["delete"], "only ['role'"),
    ],
)
def test_malformed_role_change_is_invalid(change: list[object], why: str) -> None:
    """An admin's malformed group change is invalid with a reason and assigns nothing."""
    assert role_change_problem(change) is not None
    group = make_group(ALICE)
    deliver(group, ALICE, [tx(T0, change)])
    assert group.group().members() == {ALICE.account_id: "admin"}
    assert why in reasons(group)[(session(ALICE), 0)]


def test_one_bad_change_invalidates_the_whole_transaction() -> None:
    """A transaction with one malformed change applies none of its changes."""
    group = make_group(ALICE)
    deliver(group, ALICE, [tx(T0, ["role", BOB.account_id, "writer"], ["role", CAROL.account_id, "emperor"])])
    assert BOB.account_id not in group.group().members()


def test_all_roles_are_accepted() -> None:
    """Every role in ROLES is a well-formed role change."""
    for role in ROLES:
        assert role_change_problem(["role", BOB.account_id, role]) is None


def test_undecodable_group_transaction_is_invalid() -> None:
    """A signed but undecodable transaction stays in the log and is reported invalid."""
    group = make_group(ALICE)
    bad = role_tx(T0, BOB.account_id, "writer") + b"\x00"
    deliver(group, ALICE, [bad])
    assert BOB.account_id not in group.group().members()
    assert "undecodable" in reasons(group)[(session(ALICE), 0)]
    assert group.sessions[session(ALICE)].txs == [bad]


def test_group_replicas_agree() -> None:
    """A replica that received the group's sessions computes the same roles and invalid set."""
    group = make_group(ALICE)
    set_role(group, ALICE, BOB, "admin", made_at=T0 + 1)
    deliver(group, BOB, [role_tx(T0 + 2, CAROL.account_id, "writer", seen=group)])
    deliver(group, CAROL, [role_tx(T0 + 3, DAVE.account_id, "admin", seen=group)])
    copy = replica_of(group)
    assert copy.group().members() == group.group().members()
    assert copy.group().times == group.group().times
    assert reasons(copy) == reasons(group)
