"""The edit oracle (oracle.py) itself: it must fail, and say what was lost where, when a bug
drops an acknowledged transaction that every replica agrees to have lost, duplicates one,
invents one, computes other content or forgets a tombstone. Each bug is planted here, in the
replicas' state after a healed seeded run; nothing in the engine knows about it.
"""

from __future__ import annotations

import pytest

from engine.ids import CoValueID, SessionID, conflict_session_id, new_session_id
from engine.model.known_state import KnownState
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from tests.engine.sync.oracle import Created
from tests.engine.sync.sim import NODE, Faults, Simulation

#: Seeds searched for a run that has what a planted bug needs (the search is deterministic).
SEARCH = range(40)


def healed(seed: int) -> Simulation:
    """A faulty run with tabs, healed; the oracle passes it before anything is planted."""
    sim = Simulation(seed, faults=Faults(drop=0.2, duplicate=0.05, reorder=0.05, partition=0.03))
    for _ in range(200):
        sim.step()
    sim.heal()
    report = sim.check_edits()
    assert report.ok, report.failure()
    return sim


def converged(sim: Simulation) -> bool:
    """The simulator's old check: every replica equal to the node."""
    reference = sim.snapshot(NODE)
    return all(sim.snapshot(name) == reference for name in sim.replicas)


def install_everywhere(sim: Simulation, cid: CoValueID, log_of: SessionLog) -> None:
    """Put a copy of ``log_of`` in place of its session on every replica, as a bug that every
    replica shared would."""
    for replica in sim.replicas.values():
        copy = SessionLog(log_of.covalue, log_of.session)
        copy.txs.extend(log_of.txs)
        copy.hashes.extend(log_of.hashes)
        copy.sigs.update(log_of.sigs)
        replica.get(cid).install_sessions([copy])


def pick(sim: Simulation, want: str) -> Created | None:
    """A created CoMap transaction of a CoValue that is not deleted: ``acked-last`` one the
    node acknowledged that is the last of its session there (and not its first), ``any`` any."""
    for c in sim.oracle.created:
        if c.key.covalue not in sim.maps or c.key.covalue == sim.deleted:
            continue
        if want == "any":
            return c
        log = sim.node.get(c.key.covalue).sessions[c.session]
        if c.acked_at == (c.session, c.index) and c.index == log.count - 1 > 0:
            return c
    return None


def seed_with(want: str) -> tuple[Simulation, Created]:
    for seed in SEARCH:
        sim = healed(seed)
        chosen = pick(sim, want)
        if chosen is not None:
            return sim, chosen
    raise AssertionError(f"no seed in {SEARCH} has a transaction that is {want}")


def test_a_dropped_acknowledged_transaction_is_named() -> None:
    """Every replica drops the same acknowledged transaction: the replicas still agree (the
    old check passes), the oracle fails and names it, the node, each replica and the seed."""
    sim, victim = seed_with("acked-last")
    cid = victim.key.covalue
    owner = next(r for r in sim.replicas.values() if r.account_id == victim.key.author).account
    truncated = SessionLog(cid, victim.session)
    truncated.rebuild_signed(sim.node.get(cid).sessions[victim.session].txs[: victim.index], owner)
    install_everywhere(sim, cid, truncated)

    assert converged(sim), "the planted loss should be one every replica agrees on"
    report = sim.check_edits()
    print(report.summary)
    assert not report.ok
    assert report.lost == 1
    message = report.failure()
    assert message.startswith(f"seed {sim.seed}: ")
    assert f"KINTSUGI_SIM_SEED={sim.seed}" in message
    for name in sim.replicas:
        assert f"{name} lacks {victim}" in report.problems
    assert any(p.startswith(f"{NODE} no longer holds") and str(victim) in p for p in report.problems)
    with pytest.raises(AssertionError, match=f"seed {sim.seed}: .* 1 lost"):
        sim.oracle.verify(sim.replicas, NODE, sim.covalues)


def test_a_duplicated_transaction_is_named() -> None:
    """The same created transaction present twice (copied into a conflict session of its own
    session on every replica) is a duplicate, even though the replicas agree."""
    sim, victim = seed_with("any")
    cid = victim.key.covalue
    core = sim.node.get(cid)
    n = 1
    while conflict_session_id(victim.session, n) in core.sessions:
        n += 1
    copy = SessionLog(cid, conflict_session_id(victim.session, n))
    owner = next(r for r in sim.replicas.values() if r.account_id == victim.key.author).account
    copy.rebuild_signed([core.sessions[victim.session].txs[victim.index]], owner)
    install_everywhere(sim, cid, copy)

    assert converged(sim)
    report = sim.check_edits()
    assert not report.ok
    assert report.duplicated == len(sim.replicas) and report.lost == 0
    for name in sim.replicas:
        assert any(p.startswith(f"{name} holds a duplicate at ") and str(victim) in p for p in report.problems)


def test_a_transaction_nobody_created_is_named() -> None:
    """A signed transaction in a session no writer wrote in is not in the books: reported."""
    sim, victim = seed_with("any")
    cid = victim.key.covalue
    writer = sim.replicas["c1"]
    stranger = SessionLog(cid, new_session_id(writer.account_id, sim.rng.randbytes))
    stranger.rebuild_signed([encode_transaction(sim.clock, [["set", "k0", "nobody"]])], writer.account)
    install_everywhere(sim, cid, stranger)

    report = sim.check_edits()
    assert not report.ok
    assert [p for p in report.problems if "a transaction nobody created" in p], report.problems


def test_content_other_than_the_model_is_named() -> None:
    """A replica whose computed CoMap differs from the model over the oracle's transactions
    (here its cached content is tampered with) is named, with the key and both values."""
    sim, victim = seed_with("any")
    cid = victim.key.covalue
    state = sim.replicas["c2"].get(cid).comap()
    key, entry = next(iter(state.entries.items()))
    state.entries[key] = type(entry)("tampered", False, entry.order)

    report = sim.check_edits()
    assert not report.ok
    assert any(p.startswith(f"c2 computes other content for {cid}") and "'tampered'" in p for p in report.problems)


def test_a_forgotten_tombstone_is_named() -> None:
    """A deleted CoValue that one replica holds alive again fails the tombstone check."""
    for seed in SEARCH:
        sim = healed(seed)
        if sim.deleted is not None:
            break
    else:
        raise AssertionError(f"no seed in {SEARCH} deletes a CoValue")
    sim.replicas["c2"].get(sim.deleted).deleted = False

    report = sim.check_edits()
    assert report.tombstones == 1
    assert report.problems == [
        f"c2 holds it alive, but {sim.deleted} was deleted by {sim.oracle.tombstones[sim.deleted]}"
    ]


def test_only_a_matching_known_state_acknowledges() -> None:
    """A write is acknowledged only by a known state whose head is on the writer's own chain
    and covers it; then by the node's real answer, at the place where it was made."""
    sim = Simulation(3, faults=Faults(), tabs=False)
    sim.settle()
    replica, cid = sim.replicas["c1"], sim.maps[0]
    with sim.oracle.writing("c1", replica, cid, [["set", "a", 1]]):
        replica.set(cid, "a", 1)
    written = sim.oracle.created[-1]
    log = replica.get(cid).sessions[written.session]
    sid = SessionID(written.session)

    sim.oracle.acknowledged("c1", replica, KnownState(cid, True, {sid: (log.count, b"\0" * 32)}))
    assert written.acked_at is None, "a head that is not on the writer's chain acknowledges nothing"
    sim.oracle.acknowledged("c1", replica, KnownState(cid, True, {sid: (written.index, log.hash_at(written.index))}))
    assert written.acked_at is None, "a prefix that stops before the write does not cover it"
    sim.oracle.acknowledged("c2", sim.replicas["c2"], KnownState(cid, True, {sid: log.head()}))
    assert written.acked_at is None, "another writer's acknowledgement is not this writer's"

    sim.settle()  # nothing sent yet: the write was not pumped onto the link
    assert written.acked_at is None
    sim.write("c1", cid, "b", 2)
    sim.settle()
    assert written.acked_at == (written.session, written.index)
    assert sim.check_edits().ok
