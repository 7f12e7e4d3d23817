"""Convergence under faults, driven by the seeded simulator (see sim.py), and the edit oracle's
check that nothing written was lost (see oracle.py).

``KINTSUGI_SIM_SEEDS`` sets how many seeds run (default 200; 10,000 for a long run) and
``KINTSUGI_SIM_STEPS`` the steps per seed (default 300). Each run prints its seed and the
figures the oracle checked (``pytest -s`` shows them); a failure names its seed: rerun one with
``KINTSUGI_SIM_SEED=<seed>``.
"""

from __future__ import annotations

import os

import pytest

from engine.ids import SessionKind, parse_session_id
from tests.engine.sync.sim import NODE, Faults, Simulation

SEEDS = int(os.environ.get("KINTSUGI_SIM_SEEDS", "200"))
STEPS = int(os.environ.get("KINTSUGI_SIM_STEPS", "300"))
ONLY = os.environ.get("KINTSUGI_SIM_SEED")
SEED_LIST = [int(ONLY)] if ONLY else list(range(SEEDS))


def run(seed: int, steps: int = STEPS) -> Simulation:
    rng_faults = Faults(
        drop=(seed % 4) * 0.1,  # 0 %, 10 %, 20 %, 30 %
        duplicate=0.05 * (seed % 3),
        reorder=0.05 * (seed % 2),
        partition=0.03,
    )
    sim = Simulation(seed, faults=rng_faults)
    for _ in range(steps):
        sim.step()
    sim.heal()
    return sim


@pytest.mark.parametrize("seed", SEED_LIST)
def test_replicas_converge_byte_for_byte(seed: int) -> None:
    """After faults and a heal, every replica holds identical content and known states, and
    every transaction any writer created is on every replica exactly once (the oracle)."""
    sim = run(seed)
    report = sim.check_edits()
    print(report.summary)
    assert report.ok, report.failure()
    reference = sim.snapshot(NODE)
    for name in sim.replicas:
        assert sim.snapshot(name) == reference, f"{report.summary}: {name} differs from the node"


def test_forked_tab_edits_survive_in_conflict_sessions() -> None:
    """Across seeds, tabs sharing a session fork, and their divergent edits are kept: the
    oracle finds them moved into conflict sessions on the node, none lost."""
    conflicts = moved = 0
    for seed in range(40):
        sim = run(seed, steps=200)
        for cid in sim.maps:
            core = sim.node.get(cid)
            conflicts += sum(parse_session_id(s).kind is SessionKind.CONFLICT for s in core.sessions)
        events = [e.kind for e in sim.managers[NODE].events]
        if "correction_sent" in events:
            assert "fork_detected" in events
        report = sim.check_edits()
        assert report.ok, report.failure()
        moved += report.moved
    print(f"seeds 0-39: {conflicts} conflict sessions, {moved} edits moved into them, 0 lost")
    assert conflicts > 0, "no seed produced a fork: the simulation does not exercise recovery"
    assert moved > 0, "no tab edit was moved into a conflict session: recovery kept nothing aside"


def test_no_faults_converges_quickly() -> None:
    """Without faults, convergence needs no reconnect and every write reaches the node: each
    created transaction was acknowledged to its writer and is on every replica."""
    sim = Simulation(12345, faults=Faults(), tabs=False)
    for _ in range(300):
        sim.step()
    epochs = {name: link.epoch for name, link in sim.links.items()}
    sim.settle()
    assert {name: link.epoch for name, link in sim.links.items()} == epochs, "a link reconnected"
    report = sim.check_edits()
    print(report.summary)
    assert report.ok, report.failure()
    # Writes to the CoValue deleted midway may be refused by a node that deleted it first;
    # its tombstone is what must arrive.
    alive = [c for c in sim.oracle.created if c.key.covalue != sim.deleted]
    unacked = [str(c) for c in alive if c.acked_at is None]
    assert not unacked, f"{report.summary}: never acknowledged: {unacked}"
    assert len(alive) >= 20, report.summary
    assert report.moved == 0 and report.lost == 0, report.summary
    for name in sim.replicas:
        assert sim.snapshot(name) == sim.snapshot(NODE), f"{report.summary}: {name} differs from the node"
