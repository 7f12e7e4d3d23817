"""The soak's schedule of kills and faults: a pure function of the seed, the length and the
number of clients, so ``KINTSUGI_SOAK_SEED`` replays it (what each event hits — which
connection is open, which batch a client is writing — still depends on the machine's timing).

Events arrive at random (exponential gaps around the mean intervals below):

- ``kill_client`` (SIGKILL) of a client that is up, and its ``restart_client`` on its own
  store after a down time;
- ``kill_node`` (SIGKILL) and its ``restart_node`` on its store, never overlapping;
- proxy faults: ``cut`` one connection or all, ``stall`` one or all (then resume, or cut),
  ``delay`` everything by a latency for a while, ``refuse`` new connections for a while.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Mean seconds between client kills, node kills and proxy faults.
CLIENT_KILL_EVERY = 5.0
NODE_KILL_EVERY = 25.0
FAULT_EVERY = 2.5
#: A killed client, or node, stays down for a uniform time in these bounds (seconds).
CLIENT_DOWN = (0.1, 2.0)
NODE_DOWN = (0.1, 3.0)
#: No kill in the first seconds (the clients and the node are just up).
QUIET_START = 2.0
#: Bounds of the faults' parameters (seconds).
STALL_FOR = (0.3, 4.0)
DELAY_LATENCY = (0.01, 0.3)
DELAY_FOR = (1.0, 6.0)
REFUSE_FOR = (0.2, 3.0)
#: Target meaning "every connection".
ALL = -1


@dataclass(frozen=True, slots=True)
class Event:
    """At ``at`` seconds from the start: ``kind`` on ``target`` (a client's index, a
    connection's number or :data:`ALL`), for ``seconds``; ``latency`` for a delay, ``then_cut``
    for a stall."""

    at: float
    kind: str
    target: int = 0
    seconds: float = 0.0
    latency: float = 0.0
    then_cut: bool = False

    @property
    def is_kill(self) -> bool:
        return self.kind in ("kill_client", "kill_node")

    @property
    def is_fault(self) -> bool:
        return self.kind in ("cut", "stall", "delay", "refuse")


def arrivals(rng: random.Random, every: float, duration: float) -> list[float]:
    """Moments in ``[QUIET_START, duration)`` with exponential gaps of mean ``every``."""
    out: list[float] = []
    t = QUIET_START
    while True:
        t += rng.expovariate(1 / every)
        if t >= duration:
            return out
        out.append(t)


def make_schedule(seed: int, duration: float, clients: int) -> list[Event]:
    """Every event of a soak of ``duration`` seconds over ``clients`` clients, in time order."""
    events: list[Event] = []
    rng = random.Random(f"clients/{seed}")
    up_again = [0.0] * clients
    for t in arrivals(rng, CLIENT_KILL_EVERY, duration):
        up = [i for i in range(clients) if up_again[i] <= t]
        if not up:
            continue
        target = rng.choice(up)
        down = rng.uniform(*CLIENT_DOWN)
        up_again[target] = t + down
        events.append(Event(t, "kill_client", target))
        if t + down < duration:
            events.append(Event(t + down, "restart_client", target))
    rng = random.Random(f"node/{seed}")
    node_up = 0.0
    for t in arrivals(rng, NODE_KILL_EVERY, duration):
        if t < node_up:
            continue
        down = rng.uniform(*NODE_DOWN)
        node_up = t + down
        events.append(Event(t, "kill_node"))
        if t + down < duration:
            events.append(Event(t + down, "restart_node"))
    rng = random.Random(f"faults/{seed}")
    for t in arrivals(rng, FAULT_EVERY, duration):
        roll = rng.random()
        target = ALL if rng.random() < 0.35 else rng.randrange(1_000)
        if roll < 0.40:
            events.append(Event(t, "cut", target))
        elif roll < 0.65:
            events.append(Event(t, "stall", target, rng.uniform(*STALL_FOR), then_cut=rng.random() < 0.4))
        elif roll < 0.85:
            events.append(Event(t, "delay", ALL, rng.uniform(*DELAY_FOR), latency=rng.uniform(*DELAY_LATENCY)))
        else:
            events.append(Event(t, "refuse", ALL, rng.uniform(*REFUSE_FOR)))
    # Restarts go before anything else at the same moment; the order is total either way.
    order = {"restart_node": 0, "restart_client": 1}
    events.sort(key=lambda e: (e.at, order.get(e.kind, 2), e.kind, e.target))
    return events
