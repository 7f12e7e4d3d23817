"""Histories of CAS slots from concurrent network clients, for the linearizability checks of
tests/e2e/test_kv_linearizable.py (one node) and tests/e2e/test_kv_linearizable_cluster.py
(three nodes on one PostgreSQL database).

:func:`run_client` drives one :class:`~engine.net.kv_client.RemoteKV` through random ``get``
and ``cas`` (a few deletes among them) and records each operation as an
:class:`~tests.engine.kv.linearizable.Op`: when it was invoked, when its result came back,
and the result. An operation whose connection went away before the reply has an unknown
outcome: a ``cas`` is recorded with no end and no result (the checker lets it take effect
at any moment after its call, or never), a ``get`` is not recorded (a read nobody saw
constrains nothing). A request refused as ``not_connected`` never left this process: it is
made again once the client has moved to a node.

The operations come from a seeded generator: ``KINTSUGI_KV_SEED`` replays them (the
interleaving is the network's).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from engine.errors import ProtocolError
from engine.kv.envelope import Present, Slot, Tombstone
from engine.kv.store import Stored
from engine.net.kv_client import RemoteKV
from tests.engine.kv.linearizable import Op, normal

#: Operations per client, and the keys they touch.
OPS = 60
KEYS = ("a", "b", "c")


def kv_seed() -> int:
    """The seed of this run (``KINTSUGI_KV_SEED``, or a fresh one), printed for replay."""
    seed = int(os.environ.get("KINTSUGI_KV_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed {seed} (KINTSUGI_KV_SEED={seed} replays the operations)")
    return seed


def slot_value(slot: Slot | None) -> Any:
    """A slot as the register compares it (a tombstone is one, whoever stamped it when)."""
    if slot is None:
        return None
    if isinstance(slot, Tombstone):
        return ("tombstone",)
    return ("present", normal(slot.value))


async def run_client(
    n: int,
    kv: RemoteKV,
    rng: random.Random,
    history: list[Op],
    *,
    ops: int = OPS,
    on_call: Callable[[int], None] | None = None,
    on_op: Callable[[int, Op | None], None] | None = None,
) -> int:
    """``ops`` random operations as client ``n``, mostly CASes from the generation this client
    last saw (so they race), some from a stale or future one, some reads. ``on_call(n)`` is
    called as each request is about to leave; each operation is appended to ``history`` as
    it ends, then ``on_op(n, op)`` is called (``op`` None: a lost ``get``).

    Returns how many operations lost their connection before the reply. Refusals and
    timeouts propagate: the node must answer every request it received.
    """
    seen = dict.fromkeys(KEYS, 0)
    lost = 0
    for i in range(ops):
        key = rng.choice(KEYS)
        roll = rng.random()
        expect = 0
        new: Slot | None = None  # None: a get
        if roll >= 0.3:
            expect = seen[key] if roll < 0.85 else max(0, seen[key] + rng.choice((-1, 1)))
            new = Tombstone(0, kv.account) if rng.random() < 0.1 else Present([n, i])
        op: Op | None
        while True:
            if on_call is not None:
                on_call(n)
            start = time.monotonic()
            try:
                op = await _one(n, kv, key, expect, new, start=start)
            except ProtocolError as exc:
                if exc.code == "not_connected":  # never sent: make it again on the next node
                    await asyncio.wait_for(kv.session.client.connected.wait(), kv.timeout)
                    continue
                if exc.code != "connection_lost":
                    raise
                lost += 1
                op = None if new is None else Op(n, key, "cas", start, None, None, expect, slot_value(new))
            break
        if op is not None:
            history.append(op)
            if op.result is not None:
                seen[key] = op.result[0] if op.kind == "get" else op.result[1]
        if on_op is not None:
            on_op(n, op)
    return lost


async def _one(n: int, kv: RemoteKV, key: str, expect: int, new: Slot | None, *, start: float) -> Op:
    """One operation: a get when ``new`` is None, else a cas of ``new`` at ``expect``."""
    if new is None:
        generation, slot = await kv.get(key)
        return Op(n, key, "get", start, time.monotonic(), (generation, slot_value(slot)))
    result, _stored = await kv.cas_stored(key, expect, new)
    end = time.monotonic()
    if isinstance(result, Stored):
        outcome: tuple[Any, ...] = ("stored", result.generation)
    else:
        outcome = ("conflict", result.generation, slot_value(result.slot))
    return Op(n, key, "cas", start, end, outcome, expect, slot_value(new))


def overlapping(history: list[Op], apart: Callable[[Op, Op], bool]) -> int:
    """Pairs of operations on one key that overlapped in time, of two clients ``apart``
    says are apart (an operation with no end overlaps everything after its call)."""
    return sum(
        1
        for a in history
        for b in history
        if a.client < b.client
        and a.key == b.key
        and apart(a, b)
        and a.start < (b.end or float("inf"))
        and b.start < (a.end or float("inf"))
    )


def assert_raced(history: list[Op]) -> None:
    """The check had something to decide: some CASes won and some lost, and operations of
    different clients on one key overlapped in time."""
    outcomes = Counter(op.result[0] for op in history if op.kind == "cas" and op.result is not None)
    assert outcomes["stored"] and outcomes["conflict"], outcomes
    assert overlapping(history, lambda a, b: True) > 0, "no two operations on one key overlapped in time"


def stored_count(history: list[Op], key: str) -> int:
    """CASes on ``key`` acknowledged as stored."""
    return sum(1 for op in history if op.key == key and op.result is not None and op.result[0] == "stored")
