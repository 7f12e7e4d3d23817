"""engine.recovery.correction: verifying a correction and replacing a forked session with the
authoritative history (DESIGN §7.1), in memory.

The node-level story (persisting the replacement with the session switch, crashes around
it) is in tests/engine/node/test_facade.py and tests/engine/test_crash.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.covalue import CoValueCore
from engine.crypto import AccountKey, signed_message, verify_signature
from engine.errors import CoValueDeleted, MissingPrefix, SignatureError
from engine.ids import SessionID, conflict_session_id
from engine.model.session_log import SessionLog
from engine.model.transaction import decode_transaction
from engine.recovery.correction import Replacement, apply_correction, replace_session, verify_correction
from tests.engine.factories import (
    ALICE,
    BOB,
    BOB_SESSION,
    CAROL,
    T0,
    bob_log,
    bob_tx,
    deleted_doc,
    forged,
    replica_of,
    setup_doc,
    snapshot,
    write,
)

S = BOB_SESSION


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

    out = replace_session(doc, S, auth.chunk(3, 5), owner=BOB)

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
        out = replace_session(doc, S, auth.chunk(held, held + 1), owner=BOB)
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
    assert replace_session(doc, S, auth.chunk(3, 5), owner=BOB).changed
    before, content = snapshot(doc), doc.comap().encode()
    again = replace_session(doc, S, auth.chunk(3, 5), owner=BOB)
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
    out = replace_session(node, S, auth.chunk(3, 5), owner=owner)
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
    out = replace_session(doc, S, auth.chunk(3, 4), owner=BOB)
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
            replace_session(doc, S, chunk, owner=owner)
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
        replace_session(doc, S, chunk, owner=BOB)
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
        replace_session(doc, S, auth.chunk(3, 4), owner=BOB)
    assert snapshot(doc) == before


def test_replace_from_a_fork_inside_a_write_batch() -> None:
    """A correction whose fork point is not one of our checkpoints still replaces (DESIGN §7.1).

    The fork index k is the first differing transaction, which may fall inside a signed
    batch; the authoritative chunk [k, n) ends at its own checkpoint n.
    """
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)  # checkpoints 3 and 6
    auth = diverged_copy(doc, 4, 2, "auth")  # same first 4, fork at 4 (not a checkpoint)
    out = replace_session(doc, S, auth.chunk(4, 6), owner=BOB)
    assert (out.changed, out.diverged_at, out.dropped) == (True, 4, 2)
    assert doc.sessions[S].txs == auth.txs
    assert doc.sessions[S].verify_all() is None
    assert doc.sessions[out.conflict_session or ""].count == 2




def test_replace_on_deleted_raises_and_changes_nothing() -> None:
    """replace_session never resurrects a deleted CoValue: CoValueDeleted, no change."""
    _, doc, old = deleted_doc()
    before = snapshot(doc)
    for owner in (BOB, None):
        with pytest.raises(CoValueDeleted) as info:
            replace_session(doc, S, old[S], owner=owner)
        assert info.value.code == "deleted"
    assert snapshot(doc) == before




# -- apply_correction: what the node persists ------------------------------------------------


def test_verify_correction_returns_the_authoritative_log_and_changes_nothing() -> None:
    """verify_correction builds our prefix + the chunk, verified, and leaves the CoValue as it was."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    before = snapshot(doc)
    auth = diverged_copy(doc, 3, 2, "auth")
    fresh = verify_correction(doc, S, auth.chunk(3, 5))
    assert (fresh.txs, fresh.sigs) == (auth.txs, auth.sigs)
    assert fresh.verify_all() is None
    assert snapshot(doc) == before


def test_owner_writing_in_the_session_switches_and_persists_once() -> None:
    """The owner writing in the corrected session gets a new one; persist sees the replaced
    session and its conflict session together, once; a rerun persists nothing."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    auth = diverged_copy(doc, 3, 2, "auth")
    persisted: list[Replacement] = []
    fresh_session = SessionID(S + "-next")

    def run() -> Replacement:
        return apply_correction(
            doc,
            S,
            auth.chunk(3, 5),
            account=BOB,
            writing=S,
            new_session=lambda: fresh_session,
            persist=persisted.append,
        )

    first = run()
    conflict = conflict_session_id(S, 1)
    assert first.outcome.changed and first.outcome.conflict_session == conflict
    assert first.switch_to == fresh_session
    assert first.header == doc.header
    assert [log.session for log in first.logs] == [S, conflict]
    assert first.logs[0] is doc.sessions[S] and first.logs[1] is doc.sessions[conflict]
    assert persisted == [first]
    again = run()
    assert not again.outcome.changed and again.logs == () and again.switch_to is None
    assert persisted == [first]


def test_a_non_owner_or_another_session_does_not_switch() -> None:
    """A replica of another account replaces without a conflict session or a switch; so does
    the owner when it writes in another session."""
    group, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    auth = diverged_copy(doc, 3, 2, "auth")
    other = replica_of(doc, group)

    def never() -> SessionID:
        raise AssertionError("no new session wanted")

    theirs = apply_correction(other, S, auth.chunk(3, 5), account=ALICE, writing=S, new_session=never)
    assert theirs.outcome.changed and not theirs.outcome.owned
    assert [log.session for log in theirs.logs] == [S] and theirs.switch_to is None
    mine = apply_correction(doc, S, auth.chunk(3, 5), account=BOB, writing=SessionID(S + "x"), new_session=never)
    assert mine.outcome.conflict_session is not None and mine.switch_to is None


def test_a_failing_persist_propagates_after_the_memory_change() -> None:
    """persist raising reaches the caller (who drops the changed CoValue); a refused
    correction never calls persist."""
    _, doc = setup_doc()
    write(doc, BOB, 6, made_at=T0 + 1, batch=3)
    calls: list[Replacement] = []

    def failing(replacement: Replacement) -> None:
        calls.append(replacement)
        raise OSError("disk gone")

    chunk = forged(doc, S, [bob_tx(3, "evil")], CAROL, after=3)
    with pytest.raises(SignatureError):
        apply_correction(doc, S, chunk, account=BOB, writing=S, new_session=lambda: S, persist=failing)
    assert calls == []
    auth = diverged_copy(doc, 3, 2, "auth")
    with pytest.raises(OSError, match="disk gone"):
        apply_correction(
            doc, S, auth.chunk(3, 5), account=BOB, writing=S, new_session=lambda: SessionID(S + "n"), persist=failing
        )
    assert len(calls) == 1 and doc.sessions[S].txs == auth.txs
