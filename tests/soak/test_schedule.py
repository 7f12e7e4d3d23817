"""The soak's schedule is a function of its seed: a seed replays it, and it never kills what
is already down."""

from __future__ import annotations

import random

from tests.soak.schedule import CLIENT_DOWN, NODE_DOWN, QUIET_START, make_schedule


def test_a_seed_replays_its_schedule() -> None:
    seed = random.SystemRandom().randrange(2**32)
    print(f"schedule seed {seed}")
    assert make_schedule(seed, 600, 4) == make_schedule(seed, 600, 4)
    assert make_schedule(seed, 600, 4) != make_schedule(seed + 1, 600, 4)


def test_kills_hit_only_what_is_up_and_restarts_follow() -> None:
    for seed in range(50):
        events = make_schedule(seed, 300, 4)
        assert [e.at for e in events] == sorted(e.at for e in events), seed
        assert all(QUIET_START <= e.at < 300 for e in events), seed
        down: dict[str, float] = {}
        for event in events:
            who = "node" if event.kind.endswith("_node") else f"client{event.target}"
            if event.kind.startswith("kill_"):
                assert who not in down, (seed, event)
                down[who] = event.at
            elif event.kind.startswith("restart_"):
                killed = down.pop(who)
                low, high = NODE_DOWN if who == "node" else CLIENT_DOWN
                assert low <= event.at - killed <= high, (seed, event)
        kinds = {e.kind for e in events}
        assert {"kill_client", "restart_client", "kill_node", "cut", "stall", "delay", "refuse"} <= kinds, seed
