"""engine.recovery.plan: what a REPLACE from one peer would change (DESIGN §7.2), pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.ids import SessionID, conflict_session_id
from engine.model.session_log import SessionLog
from engine.recovery.plan import (
    CoValueAction,
    FetchedCoValue,
    LocalCoValue,
    SessionAction,
    common_prefix,
    compute_plan,
    next_conflict_session,
)
from tests.engine.factories import T0, account, delete_session, make_comap, make_group, session, signed_log, tx

ALICE, BOB, OPERATOR = account(1), account(2), account(3)
H = make_comap(make_group(ALICE)).header
CID = H.covalue_id()


def log(key, txs, sid=None, checkpoints=()):
    return signed_log(CID, key, txs, checkpoints, sid=sid)


def txs(n: int, start: int = 0, tag: str = "a") -> list[bytes]:
    return [tx(T0 + start + i, ["set", tag, start + i]) for i in range(n)]


def local(*logs: SessionLog, deleted: bool = False, corrupt=None) -> LocalCoValue:
    return LocalCoValue(CID, H, deleted, {x.session: x for x in logs}, corrupt or {})


def fetched(*logs: SessionLog, deleted: bool = False) -> FetchedCoValue:
    return FetchedCoValue(CID, H, deleted, {x.session: x for x in logs})


def plan_of(loc: LocalCoValue | None, got: FetchedCoValue, operator=OPERATOR):
    return compute_plan({} if loc is None else {CID: loc}, [got], peer="ws://peer", operator=operator.account_id)


def test_the_same_chains_change_nothing() -> None:
    a = log(ALICE, txs(5))
    plan = plan_of(local(a), fetched(log(ALICE, txs(5))))
    assert plan.covalues[0].action is CoValueAction.UNCHANGED
    assert not plan.changes
    assert plan.summary()["replaced"] == 0


def test_a_stale_copy_is_replaced_and_nothing_is_at_risk() -> None:
    plan = plan_of(local(log(ALICE, txs(3))), fetched(log(ALICE, txs(8))))
    (s,) = plan.covalues[0].sessions
    assert (s.action, s.common, s.dropped, s.at_risk) == (SessionAction.REPLACED, 3, 0, 0)
    assert plan.summary() == {
        "covalues": 1,
        "replaced": 1,
        "dropped": 0,
        "at_risk": 0,
        "preserved": 0,
        "archived": 0,
        "unverifiable": 0,
    }


def test_a_forked_tail_of_someone_elses_session_is_archived() -> None:
    mine = log(ALICE, txs(4) + txs(3, 100, "x"))
    theirs = log(ALICE, txs(4) + txs(5, 200, "y"))
    (s,) = plan_of(local(mine), fetched(theirs)).covalues[0].sessions
    assert (s.common, s.at_risk, s.preserved, s.archived, s.preserved_as) == (4, 3, 0, 3, None)


def test_a_forked_tail_of_the_operators_own_session_is_preserved_as_a_new_conflict_session() -> None:
    sid = session(OPERATOR)
    taken = conflict_session_id(sid, 1)  # an older conflict of the same session exists here
    mine = log(OPERATOR, txs(4) + txs(3, 100, "x"), sid)
    older = log(OPERATOR, txs(1, 50, "old"), taken)
    theirs = log(OPERATOR, txs(4) + txs(5, 200, "y"), sid)
    plan = plan_of(local(mine, older), fetched(theirs, log(OPERATOR, txs(1, 50, "old"), taken)))
    s = next(x for x in plan.covalues[0].sessions if x.session == sid)
    assert (s.at_risk, s.preserved, s.archived) == (3, 3, 0)
    assert s.preserved_as == conflict_session_id(sid, 2)  # never overwrites sid!


def test_a_session_the_peer_lacks_is_removed_and_its_transactions_kept() -> None:
    other = log(BOB, txs(6))
    plan = plan_of(local(log(ALICE, txs(2)), other), fetched(log(ALICE, txs(2))))
    s = next(x for x in plan.covalues[0].sessions if x.session == other.session)
    assert (s.action, s.at_risk, s.archived) == (SessionAction.REMOVED, 6, 6)


def test_a_corrupt_session_drops_only_what_cannot_be_verified() -> None:
    good_prefix = log(ALICE, txs(4))
    plan = plan_of(local(good_prefix, corrupt={good_prefix.session: (4, 9)}), fetched(log(ALICE, txs(9))))
    (s,) = plan.covalues[0].sessions
    assert (s.action, s.common, s.at_risk, s.unverifiable, s.dropped) == (SessionAction.REPLACED, 4, 0, 5, 5)


def test_a_deleted_covalue_stays_deleted() -> None:
    tomb = log(ALICE, [tx(T0, ["delete"])], delete_session(ALICE))
    plan = plan_of(
        local(tomb, deleted=True), fetched(log(ALICE, txs(9)), log(ALICE, [tx(T0, ["delete"])], delete_session(ALICE)))
    )
    cv = plan.covalues[0]
    assert cv.action is CoValueAction.UNCHANGED
    assert [s.session for s in cv.sessions] == [tomb.session]  # the peer's content never comes back


def test_a_covalue_deleted_on_the_peer_archives_local_content_instead_of_preserving_it() -> None:
    sid = session(OPERATOR)
    tomb = log(ALICE, [tx(T0, ["delete"])], delete_session(ALICE))
    plan = plan_of(local(log(OPERATOR, txs(3), sid)), fetched(tomb, deleted=True))
    cv = plan.covalues[0]
    assert cv.action is CoValueAction.BECOME_DELETED
    content = next(s for s in cv.sessions if s.session == sid)
    assert (content.action, content.archived, content.preserved) == (SessionAction.REMOVED, 3, 0)


def test_a_covalue_the_peer_does_not_hold_is_left_alone() -> None:
    plan = compute_plan({CID: local(log(ALICE, txs(2)))}, [], peer="ws://peer", operator=OPERATOR.account_id)
    assert plan.covalues[0].action is CoValueAction.NOT_ON_PEER
    assert not plan.changes
    missing = FetchedCoValue(CID, None, False, {})
    assert plan_of(local(log(ALICE, txs(2))), missing).covalues[0].action is CoValueAction.NOT_ON_PEER


def test_the_plan_hash_is_stable_and_names_what_changes() -> None:
    a = plan_of(local(log(ALICE, txs(3))), fetched(log(ALICE, txs(8))))
    b = plan_of(local(log(ALICE, txs(3))), fetched(log(ALICE, txs(8))))
    c = plan_of(local(log(ALICE, txs(3))), fetched(log(ALICE, txs(9))))
    assert a.digest() == b.digest() != c.digest()
    assert a.to_json()["summary"]["replaced"] == 1


def test_next_conflict_session_skips_taken_numbers() -> None:
    sid = SessionID(session(ALICE))
    assert next_conflict_session(sid, []) == conflict_session_id(sid, 1)
    taken = [conflict_session_id(sid, n) for n in (1, 2, 3)]
    assert next_conflict_session(sid, taken) == conflict_session_id(sid, 4)


@given(st.integers(0, 40), st.integers(0, 20), st.integers(0, 20))
def test_common_prefix_is_exact_for_any_shared_prefix_and_tails(shared: int, left: int, right: int) -> None:
    base = txs(shared)
    a = log(ALICE, base + txs(left, 1000, "l"))
    b = log(ALICE, base + txs(right, 2000, "r"))
    assert common_prefix(a, b) == shared
    assert common_prefix(b, a) == shared
    assert common_prefix(a, a) == a.count
    (s,) = plan_of(local(a), fetched(b)).covalues[0].sessions
    assert s.common == shared
    assert s.at_risk == left  # every local-only transaction is counted, none twice


def test_the_operators_own_session_that_the_peer_lacks_is_kept_as_it_is() -> None:
    own = log(OPERATOR, txs(3, 300, "o"), session(OPERATOR))
    plan = plan_of(local(log(ALICE, txs(2)), own), fetched(log(ALICE, txs(2))))
    s = next(x for x in plan.covalues[0].sessions if x.session == own.session)
    assert (s.action, s.at_risk, s.archived) == (SessionAction.KEPT, 0, 0)
    assert plan.covalues[0].action is CoValueAction.UNCHANGED  # nothing else differs: a no-op


def test_running_the_plan_again_on_its_own_result_is_a_no_op() -> None:
    sid = session(OPERATOR)
    mine = log(OPERATOR, txs(4) + txs(3, 100, "x"), sid)
    theirs = log(OPERATOR, txs(4) + txs(5, 200, "y"), sid)
    first = plan_of(local(mine), fetched(theirs))
    (s,) = first.covalues[0].sessions
    assert s.preserved_as is not None
    # what an apply leaves: the peer's chain, and the tail moved aside in sid!
    kept = log(OPERATOR, txs(3, 100, "x"), s.preserved_as)
    again = plan_of(local(log(OPERATOR, txs(4) + txs(5, 200, "y"), sid), kept), fetched(theirs))
    assert not again.changes


def test_recovering_one_session_leaves_the_others_alone() -> None:
    a, b = log(ALICE, txs(3)), log(BOB, txs(3))
    plan = compute_plan(
        {CID: local(a, b)},
        [fetched(log(ALICE, txs(5)), log(BOB, txs(9)))],
        peer="ws://peer",
        operator=OPERATOR.account_id,
        only=frozenset({a.session}),
    )
    assert [s.session for s in plan.covalues[0].sessions] == [a.session]
